//! Docker Swarm services against real engines. Each test builds a lab of
//! its own: one `dockerd` per node, each in a network namespace of its own
//! with a veth to a bridge the test creates, its own data-root, exec-root,
//! socket and pid file; the nodes form a swarm. The machine's shared engine
//! only builds images and pushes them to a registry the nodes pull from.
//! Everything is removed when the lab is dropped, also when a test fails.
//!
//! They need root and take a minute or more; run them alone with
//! `cargo test --test it e2e_swarm`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::support::now;

/// Whether this machine can run a lab (root, `dockerd`, `ip netns`);
/// under CI=true its absence is a failure.
fn lab_ready() -> bool {
    let root = run_quietly("id", &["-u"]) == "0";
    let tools = Command::new("dockerd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !(root && tools) {
        crate::support::skip("the Swarm tests need root and dockerd");
    }
    root && tools
}

/// Runs `ip` with `args`, failing the test if it fails.
fn ip(args: &[&str]) {
    run("ip", args);
}

/// Deletes a network namespace whose node never came to be.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Node {
    ns: String,
    addr: String,
    socket: PathBuf,
    dockerd: Option<Child>,
}

const REGISTRY_USER: &str = "dhlab";
const REGISTRY_PASSWORD: &str = "lab-password-0123456789";

impl Node {
    /// `docker` against this node, with `config` as its client
    /// configuration when given (for `--with-registry-auth`).
    fn docker_with(&self, config: &std::path::Path, args: &[&str]) -> String {
        let host = format!("unix://{}", self.socket.display());
        let config = config.display().to_string();
        let mut all = vec!["--config", config.as_str(), "-H", host.as_str()];
        all.extend_from_slice(args);
        run("docker", &all)
    }

    fn docker(&self, args: &[&str]) -> String {
        let host = format!("unix://{}", self.socket.display());
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        run("docker", &all)
    }

    fn docker_quietly(&self, args: &[&str]) -> String {
        let host = format!("unix://{}", self.socket.display());
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        run_quietly("docker", &all)
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

/// A swarm of `dockerd` processes, a registry they pull from, and the
/// network between them.
pub struct Lab {
    tag: String,
    dir: PathBuf,
    bridge: String,
    /// The bridge's address, `10.x.y.1`.
    gateway_addr: String,
    nodes: Vec<Node>,
    registries: Vec<Registry>,
    /// Where the shared engine pushes: `127.0.0.1:port`.
    pub push: String,
    /// Where the nodes pull from: `10.x.y.1:port`.
    pub pull: String,
    /// A docker client configuration holding the registries' credentials
    /// (the registries require them).
    pub client_config: PathBuf,
}

impl Lab {
    /// `nodes` dockerd processes, the first a manager, the rest workers.
    fn new(fixture: &Fixture, nodes: usize) -> Self {
        let tag = fixture.id[2..8].to_string();
        // Short: unix socket paths are limited to 108 bytes.
        let dir = PathBuf::from(format!("/tmp/dhs{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let seed = u32::from_str_radix(&tag, 16).unwrap();
        let net = format!("10.{}.{}", 200 + seed % 50, (seed >> 8) % 250);
        let mut lab = Self {
            bridge: format!("dhb{tag}"),
            gateway_addr: format!("{net}.1"),
            tag,
            dir,
            nodes: Vec::new(),
            registries: Vec::new(),
            push: String::new(),
            pull: String::new(),
            client_config: PathBuf::new(),
        };
        ip(&["link", "add", &lab.bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", lab.gateway_addr),
            "dev",
            &lab.bridge,
        ]);
        ip(&["link", "set", &lab.bridge, "up"]);
        // The machine's engine sets the FORWARD policy to DROP, and bridged
        // traffic passes through it: let the nodes reach each other.
        let _ = Command::new("iptables")
            .args(lab.forward_rule("-I"))
            .stderr(Stdio::null())
            .status();
        lab.start_registries();
        std::fs::write(lab.dir.join("daemon.json"), "{}").unwrap();
        for i in 0..nodes {
            let node = lab.start_node(i, &format!("{net}.{}", i + 2));
            // Owned by the lab before anything can fail, so it is cleaned up.
            lab.nodes.push(node);
            let node = &lab.nodes[i];
            wait_until("a lab dockerd to answer", Duration::from_secs(60), || {
                !node
                    .docker_quietly(&["version", "--format", "{{.Server.Version}}"])
                    .is_empty()
            });
        }
        let manager = &lab.nodes[0];
        manager.docker(&[
            "swarm",
            "init",
            "--advertise-addr",
            &manager.addr,
            "--listen-addr",
            &format!("{}:2377", manager.addr),
        ]);
        let token = manager.docker(&["swarm", "join-token", "-q", "worker"]);
        let join = format!("{}:2377", manager.addr);
        for worker in &lab.nodes[1..] {
            worker.docker(&[
                "swarm",
                "join",
                "--token",
                &token,
                "--advertise-addr",
                &worker.addr,
                &join,
            ]);
        }
        if nodes > 1 {
            wait_until("every node to be ready", Duration::from_secs(60), || {
                let states =
                    lab.nodes[0].docker_quietly(&["node", "ls", "--format", "{{.Status}}"]);
                states.lines().filter(|s| *s == "Ready").count() == nodes
            });
        }
        lab
    }

    /// Two registry processes on one store, both requiring a user and
    /// password: the shared engine pushes to the loopback one, the nodes
    /// pull from the one on the bridge. The credentials go into a client
    /// configuration of the lab's own, never the machine's.
    fn start_registries(&mut self) {
        use base64::Engine as _;
        let storage = self.dir.join("registry");
        let htpasswd = self.dir.join("htpasswd");
        let line = run("htpasswd", &["-nbB", REGISTRY_USER, REGISTRY_PASSWORD]);
        std::fs::write(&htpasswd, format!("{line}\n")).unwrap();
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: delivery-hook-lab\n    path: {}\n",
            htpasswd.display()
        );
        let push = Registry::serve(&self.dir, "registry-push", "127.0.0.1", &storage, &auth);
        let pull = Registry::serve(
            &self.dir,
            "registry-pull",
            &self.gateway_addr,
            &storage,
            &auth,
        );
        self.push = push.host.clone();
        self.pull = pull.host.clone();
        self.registries = vec![push, pull];
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}"));
        self.client_config = self.dir.join("client");
        std::fs::create_dir_all(&self.client_config).unwrap();
        let config = serde_json::json!({
            "auths": { &self.push: { "auth": token }, &self.pull: { "auth": token } }
        });
        std::fs::write(self.client_config.join("config.json"), config.to_string()).unwrap();
    }

    /// `docker` with the lab's credentials, against the machine's engine.
    fn docker(&self, args: &[&str]) -> String {
        let config = self.client_config.display().to_string();
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        run("docker", &all)
    }

    fn start_node(&self, i: usize, addr: &str) -> Node {
        let ns = format!("dhn{}{i}", self.tag);
        let veth = format!("dhv{}{i}", self.tag);
        ip(&["netns", "add", &ns]);
        // Removed with the lab even if the rest of the setup fails.
        let guard = NetnsGuard(ns.clone());
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["link", "set", &veth, "master", &self.bridge, "up"]);
        let cidr = format!("{addr}/24");
        for args in [
            ["addr", "add", cidr.as_str(), "dev", "eth0"].as_slice(),
            &["link", "set", "eth0", "up"],
            &["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["netns", "exec", ns.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all);
        }
        let home = self.dir.join(format!("n{i}"));
        std::fs::create_dir_all(&home).unwrap();
        let socket = home.join("docker.sock");
        let log = std::fs::File::create(home.join("dockerd.log")).unwrap();
        // nsenter enters the network namespace only: `ip netns exec` also
        // remounts /sys, which hides the cgroup mounts dockerd needs.
        let dockerd = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{ns}"))
            .arg("dockerd")
            .arg("--config-file")
            .arg(self.dir.join("daemon.json"))
            .arg("--data-root")
            .arg(home.join("data"))
            .arg("--exec-root")
            .arg(home.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--pidfile")
            .arg(home.join("docker.pid"))
            .args(["--iptables=false", "--insecure-registry", &self.pull])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        std::mem::forget(guard);
        Node {
            ns,
            addr: addr.to_string(),
            socket,
            dockerd: Some(dockerd),
        }
    }

    /// The rule that lets traffic through the lab's bridge; `-I` adds it,
    /// `-D` removes it.
    fn forward_rule<'a>(&'a self, verb: &'a str) -> [&'a str; 8] {
        [
            verb,
            "FORWARD",
            "-i",
            &self.bridge,
            "-o",
            &self.bridge,
            "-j",
            "ACCEPT",
        ]
    }

    /// Creates the service `name` on `image` with the lab's registry
    /// credentials and `options` (`--update-monitor`, `--replicas`, …).
    fn create_service(&self, name: &str, image: &str, options: &[&str]) {
        let mut args = vec![
            "service",
            "create",
            "--quiet",
            "--name",
            name,
            "--with-registry-auth",
        ];
        args.extend_from_slice(options);
        args.push(image);
        self.manager().docker_with(&self.client_config, &args);
    }

    fn manager(&self) -> &Node {
        &self.nodes[0]
    }

    /// Pushes a local image as `repo` (with its tag) and returns the name
    /// the nodes pull it by.
    fn publish(&self, local: &str, repo: &str) -> String {
        let pushed = format!("{}/{repo}", self.push);
        self.docker(&["tag", local, &pushed]);
        self.docker(&["push", "-q", &pushed]);
        self.docker(&["rmi", &pushed]);
        format!("{}/{repo}", self.pull)
    }

    /// The digest the registry holds for `repo:tag`, from its own answer.
    fn digest(&self, repo_tag: &str) -> String {
        let (repo, tag) = repo_tag.rsplit_once(':').unwrap();
        let user = format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}");
        let headers = run(
            "curl",
            &[
                "-sf",
                "-u",
                &user,
                "-I",
                "-H",
                "Accept: application/vnd.docker.distribution.manifest.v2+json",
                &format!("http://{}/v2/{repo}/manifests/{tag}", self.push),
            ],
        );
        headers
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("docker-content-digest")
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no digest for {repo_tag}: {headers}"))
    }

    /// The image each running task of `service` runs (as its container
    /// was created, digest included), from the containers on every node.
    fn task_images(&self, service: &str) -> Vec<String> {
        let filter = format!("label=com.docker.swarm.service.name={service}");
        let mut images = Vec::new();
        for node in &self.nodes {
            let ids = node.docker_quietly(&["ps", "-q", "--filter", &filter]);
            for id in ids.lines() {
                images.push(node.docker(&["inspect", "--format", "{{.Config.Image}}", id]));
            }
        }
        images.sort();
        images
    }

    /// What one running task of `service` serves, read inside it; waits
    /// for a task to run (after a rollback the engine may still start it).
    fn content(&self, service: &str) -> String {
        let filter = format!("label=com.docker.swarm.service.name={service}");
        let mut found = None;
        wait_until(
            &format!("a task of {service} to run"),
            Duration::from_secs(60),
            || {
                found = self.nodes.iter().find_map(|node| {
                    let ids = node.docker_quietly(&["ps", "-q", "--filter", &filter]);
                    ids.lines().next().map(|id| (node, id.to_owned()))
                });
                found.is_some()
            },
        );
        let (node, id) = found.unwrap();
        node.docker(&["exec", &id, "/bin/busybox", "cat", "/www/index.html"])
    }

    fn spec_image(&self, service: &str) -> String {
        self.manager().docker(&[
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
            service,
        ])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().rev() {
            node.docker_quietly(&["swarm", "leave", "--force"]);
            if let Some(mut child) = node.dockerd.take() {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let deadline = Instant::now() + Duration::from_secs(30);
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = Command::new("ip").args(["netns", "del", &node.ns]).status();
        }
        self.registries.clear();
        let _ = Command::new("iptables")
            .args(self.forward_rule("-D"))
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds `tag` serving `content` with `extra` Dockerfile lines.
fn build(f: &Fixture, tag: &str, content: &str, extra: &str) {
    let context = f.write_context(
        &format!("ctx-{}", tag.replace([':', '/'], "-")),
        content,
        extra,
    );
    f.docker_build(tag, &context);
}

/// A gateway on the lab's manager, allowed services `<id>_*`, with
/// `docker` settings and the lab's registry credentials.
fn gateway_on(f: &Fixture, lab: &Lab, docker: &str) -> GatewayProcess {
    gateway_with(f, lab, docker, &lab.client_config)
}

/// As [`gateway_on`], with `config` as the gateway's docker client
/// configuration.
fn gateway_with(f: &Fixture, lab: &Lab, docker: &str, config: &std::path::Path) -> GatewayProcess {
    let host = lab.manager().host();
    let config = config.display().to_string();
    let project = format!("services = [\"{}_*\"]\n", f.id);
    GatewayProcess::start_with_env(
        f,
        "",
        docker,
        &project,
        &[
            ("DOCKER_HOST", host.as_str()),
            ("DOCKER_CONFIG", config.as_str()),
        ],
    )
}

fn service_body(name: &str, image: Option<&str>) -> String {
    let mut body = serde_json::json!({ "service_name": name });
    if let Some(image) = image {
        body["image"] = image.into();
    }
    body.to_string()
}

/// On a one-node swarm: a deploy moves the service from v1 to v2; the same
/// request again is up to date and sends nothing; a pin of v1's digest
/// while the tag is on v3 runs v1; a v2 that crashes with
/// `failure_action: rollback` ends `rolled_back` with v1 running.
#[tokio::test]
async fn e2e_swarm_single_node_updates_pins_and_rolls_back() {
    if !engine_ready() || !lab_ready() {
        return;
    }
    let f = Fixture::new(Compose::V2);
    let lab = Lab::new(&f, 1);
    let repo = format!("{}/web", f.id);
    f.image(&format!("{}/web:v1", f.id), "v1");
    let tag = lab.publish(&format!("{}/web:v1", f.id), &format!("{repo}:latest"));
    let v1 = lab.digest(&format!("{repo}:latest"));
    let web = format!("{}_web", f.id);
    lab.create_service(&web, &tag, &["--update-monitor", "1s"]);
    assert_eq!(lab.content(&web), "v1");
    f.image(&format!("{}/web:v2", f.id), "v2");
    lab.publish(&format!("{}/web:v2", f.id), &format!("{repo}:latest"));
    let v2 = lab.digest(&format!("{repo}:latest"));

    // Without the registry's credentials the digest cannot be resolved:
    // the job fails with the registry's words and nothing is updated.
    let no_credentials = f.dir.path().join("no-credentials");
    std::fs::create_dir_all(&no_credentials).unwrap();
    let version = |lab: &Lab| {
        lab.manager()
            .docker(&["service", "inspect", "--format", "{{.Version.Index}}", &web])
    };
    let before = version(&lab);
    {
        let gateway = gateway_with(&f, &lab, "", &no_credentials);
        let body = service_body(&web, None);
        let (status, job) = Client::new(&gateway)
            .post_signed("/pull?wait=60", &body, now() - 30, SECRET)
            .await;
        assert_eq!(
            (status, job["state"].as_str()),
            (502, Some("failed")),
            "{job:#}"
        );
        let error = job["error"].as_str().unwrap().to_lowercase();
        assert!(
            error.contains("no basic auth credentials") || error.contains("unauthorized"),
            "{error}"
        );
        assert_eq!(version(&lab), before, "nothing was sent to the service");
    }

    let gateway = gateway_on(&f, &lab, "");
    let client = Client::new(&gateway);
    let ts = now();
    let started = Instant::now();
    let (code, job, progress) = trigger(&gateway.url, &["--service", &web]);
    let single = started.elapsed();
    assert_eq!(
        (code, job["state"].as_str()),
        (0, Some("succeeded")),
        "{progress}{job:#}\n{}",
        gateway.log_text()
    );
    assert_eq!(job["swarm_service"], web.as_str());
    assert_eq!(job["replicas_updated"], 1);
    assert_eq!(
        lab.spec_image(&web),
        format!("{tag}@{v2}"),
        "the tag kept, the digest pinned"
    );
    assert_eq!(lab.content(&web), "v2");
    eprintln!(
        "swarm single node: deploy v1 -> v2 took {} ms",
        single.as_millis()
    );

    // Unchanged: nothing is sent, so the engine keeps its rollback target.
    let unchanged = version(&lab);
    let (status, again) = client
        .post_signed("/pull?wait=180", &service_body(&web, None), ts - 1, SECRET)
        .await;
    assert_eq!(
        (status, again["message"].as_str()),
        (200, Some("up to date")),
        "{again:#}"
    );
    assert_eq!(version(&lab), unchanged, "the service was not updated");

    // A pin of v1's digest while the tag points at v3.
    f.image(&format!("{}/web:v3", f.id), "v3");
    lab.publish(&format!("{}/web:v3", f.id), &format!("{repo}:latest"));
    let pin = format!("{}/{repo}@{v1}", lab.pull);
    let (status, pinned) = client
        .post_signed(
            "/pull?wait=180",
            &service_body(&web, Some(&pin)),
            ts - 2,
            SECRET,
        )
        .await;
    assert_eq!(
        (status, pinned["state"].as_str()),
        (200, Some("succeeded")),
        "{pinned:#}"
    );
    assert_eq!(pinned["image_digest"], v1.as_str());
    assert_eq!(lab.spec_image(&web), pin);
    assert_eq!(lab.content(&web), "v1");

    // Rolled back to the release before (v2, by its digest), then to a
    // chosen one (the pinned v1's job).
    let rollback_to = |to: &str| trigger(&gateway.url, &["--service", &web, "--rollback-to", to]);
    let (code, back, progress) = rollback_to("previous");
    assert_eq!(
        (code, back["state"].as_str()),
        (0, Some("succeeded")),
        "{progress}{back:#}"
    );
    assert_eq!(back["restored"]["job"], again["id"]);
    assert_eq!(back["image_digest"], v2.as_str());
    assert_eq!(lab.content(&web), "v2");
    let (code, chosen, progress) = rollback_to(pinned["id"].as_str().unwrap());
    assert_eq!(
        (code, chosen["state"].as_str()),
        (0, Some("succeeded")),
        "{progress}{chosen:#}"
    );
    assert_eq!(chosen["restored"]["job"], pinned["id"]);
    assert_eq!(lab.content(&web), "v1");
    // A new client: the rollbacks outlasted the idle connection it kept.
    let client = Client::new(&gateway);

    // A release that crashes, on a service that rolls back on failure.
    let crash = format!("{}_crash", f.id);
    let crash_tag = lab.publish(
        &format!("{}/web:v1", f.id),
        &format!("{}/crash:latest", f.id),
    );
    lab.create_service(
        &crash,
        &crash_tag,
        &[
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "4s",
            "--update-max-failure-ratio",
            "0",
        ],
    );
    let before = lab.spec_image(&crash);
    build(
        &f,
        &format!("{}/crash:v2", f.id),
        "v2",
        "CMD [\"sh\", \"-c\", \"sleep 1; exit 3\"]\n",
    );
    lab.publish(
        &format!("{}/crash:v2", f.id),
        &format!("{}/crash:latest", f.id),
    );
    let (status, rolled) = client
        .post_signed(
            "/pull?wait=180",
            &service_body(&crash, None),
            ts - 3,
            SECRET,
        )
        .await;
    assert_eq!(status, 502, "{rolled:#}");
    assert_eq!(rolled["state"], "rolled_back", "{rolled:#}");
    assert_eq!(
        lab.spec_image(&crash),
        before,
        "the engine's rollback restored the spec"
    );
    assert_eq!(lab.content(&crash), "v1");
    assert!(
        lab.task_images(&crash).iter().all(|i| i == &before),
        "{:?}",
        lab.task_images(&crash)
    );
}

/// Three nodes, a service with three replicas spread over them: a deploy
/// through the gateway on the manager converges on all three. Then one
/// worker is cut off during an update, and the job ends with what the
/// engine reports instead of hanging.
#[tokio::test]
async fn e2e_swarm_three_nodes_converge_and_a_partition_is_reported() {
    if !engine_ready() || !lab_ready() {
        return;
    }
    let f = Fixture::new(Compose::V2);
    let lab = Lab::new(&f, 3);
    let repo = format!("{}/web", f.id);
    f.image(&format!("{}/web:v1", f.id), "v1");
    let tag = lab.publish(&format!("{}/web:v1", f.id), &format!("{repo}:latest"));
    let web = format!("{}_web", f.id);
    lab.create_service(
        &web,
        &tag,
        &[
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "1",
            "--update-monitor",
            "1s",
            "--update-failure-action",
            "pause",
        ],
    );
    f.image(&format!("{}/web:v2", f.id), "v2");
    lab.publish(&format!("{}/web:v2", f.id), &format!("{repo}:latest"));
    let v2 = lab.digest(&format!("{repo}:latest"));

    // A bounded job: a partitioned update must end, not hang.
    let gateway = gateway_on(&f, &lab, "job_timeout_secs = 40");
    let client = Client::new(&gateway);
    let ts = now();
    let started = Instant::now();
    let (status, job) = client
        .post_signed("/pull?wait=300", &service_body(&web, None), ts, SECRET)
        .await;
    let took = started.elapsed();
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}\n{}",
        gateway.log_text()
    );
    assert_eq!(job["replicas_updated"], 3, "{job:#}");
    let pinned = format!("{tag}@{v2}");
    assert_eq!(
        lab.task_images(&web),
        vec![pinned.clone(); 3],
        "one v2 task on each node"
    );
    eprintln!(
        "swarm three nodes: deploy v1 -> v2 on 3 replicas took {} ms",
        took.as_millis()
    );

    // Cut the last worker off, then deploy v3.
    f.image(&format!("{}/web:v3", f.id), "v3");
    lab.publish(&format!("{}/web:v3", f.id), &format!("{repo}:latest"));
    let cut = format!("dhv{}2", lab.tag);
    ip(&["link", "set", &cut, "down"]);
    let started = Instant::now();
    let (status, partitioned) = client
        .post_signed("/pull?wait=300", &service_body(&web, None), ts - 1, SECRET)
        .await;
    let took = started.elapsed();
    eprintln!(
        "swarm partition: a worker cut off during the update; after {} ms the job is {} ({}), status {status}, replicas_updated {}",
        took.as_millis(),
        partitioned["state"],
        partitioned["error"].as_str().unwrap_or("no error"),
        partitioned["replicas_updated"],
    );
    // One replica per node: the cut-off node's cannot be placed elsewhere.
    // The engine then either completes the update on the nodes it reaches,
    // once it has marked the cut-off node down (the job succeeds with two
    // replicas updated), or keeps it updating, and the job ends at its time
    // budget, having asked the engine to roll back. Which one depends on
    // when the manager notices the node is gone.
    match partitioned["state"].as_str() {
        Some("succeeded") => {
            assert_eq!(status, 200, "{partitioned:#}");
            assert_eq!(partitioned["replicas_updated"], 2, "{partitioned:#}");
        }
        Some("timed_out") => {
            assert_eq!(status, 502, "{partitioned:#}");
            assert!(
                took >= Duration::from_secs(40),
                "ended at job_timeout_secs, not before: {took:?}"
            );
            let error = partitioned["error"].as_str().unwrap_or_default();
            assert!(
                error.contains("the engine was asked to roll it back")
                    && error.contains("update was"),
                "it says what the engine reported and what it asked: {error}"
            );
        }
        _ => panic!("neither of the two ends: {partitioned:#}"),
    }
    ip(&["link", "set", &cut, "up"]);
}
