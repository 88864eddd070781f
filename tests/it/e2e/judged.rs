//! The compose judge as an allowlist, and the judged copy, on the real
//! engine with each compose tool. Two teams share a host: team A deploys,
//! team B's files lie beside A's. Each way out that a review of the
//! previous judge found is refused and runs nothing; the shapes teams use
//! still deploy; and what compose runs is the copy the judge read, whatever
//! changes in the files after the judge's last read.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::support::now;

const B_SECRET: &str = "b-team-secret-0123456789ab";
/// What team B's `.env` holds; it must never reach team A.
const B_VALUE: &str = "team-b-only-7f3a";

/// Team A and team B on one host: their directories, the fixture, A's
/// image in the registry, and a gateway whose policy has both.
struct Host {
    f: Fixture,
    a: PathBuf,
    b: PathBuf,
    image: String,
    container: String,
    project: String,
}

impl Host {
    fn new(tool: Compose) -> Self {
        let f = Fixture::with_registry(tool);
        let root = std::fs::canonicalize(f.dir.path()).unwrap();
        let (a, b) = (root.join("team-a"), root.join("team-b"));
        std::fs::create_dir_all(a.join("data")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join(".env"), format!("B_DATABASE_PASSWORD={B_VALUE}\n")).unwrap();
        std::fs::write(b.join("labels"), "team=b\n").unwrap();
        std::fs::write(
            b.join("compose.yml"),
            format!(
                "services:\n  theirs:\n    image: {}/base:1\n    env_file: .env\n",
                f.id
            ),
        )
        .unwrap();
        let repo = f.web_v1_published();
        let image = f.remote(&repo);
        let container = format!("{}-web", f.id);
        let project = format!("{}a", f.id);
        Self {
            f,
            a,
            b,
            image,
            container,
            project,
        }
    }

    /// A's compose file: its service `web` with `extra` keys, and `top`
    /// top-level sections.
    fn a_file(&self, extra: &str, top: &str) -> String {
        format!(
            "{}{top}",
            compose(&[service(
                "web",
                &self.image,
                &self.container,
                &self.f.id,
                extra
            )])
        )
    }

    /// Writes A's compose file and starts it, as the team does.
    fn up(&self, extra: &str, top: &str) {
        self.f.compose_up(
            &self.project,
            &self.a,
            &[("compose.yml", self.a_file(extra, top))],
            &[],
        );
    }

    /// Writes A's compose file; an `x-` section with anchors goes first,
    /// where the anchors are defined before they are used.
    fn write_a(&self, extra: &str, top: &str) {
        let text = if top.starts_with("x-") {
            format!("{top}{}", self.a_file(extra, ""))
        } else {
            self.a_file(extra, top)
        };
        std::fs::write(self.a.join("compose.yml"), text).unwrap();
    }

    /// A gateway whose policy has team A (the fixture's project, with
    /// `a_keys`), and team B.
    fn gateway(&self, a_keys: &str, env: &[(&str, &str)]) -> GatewayProcess {
        let others = format!(
            "{a_keys}\n[projects.b]\nsecrets = [\"{B_SECRET}\"]\ncontainers = [\"{id}b-*\"]\nactions = [\"pull\"]\n",
            id = self.f.id
        );
        GatewayProcess::start_with_env(&self.f, "", "", &others, env)
    }

    fn id_of_container(&self) -> Value {
        self.f.container(&self.container)["Id"].clone()
    }
}

per_compose_tool!(e2e_each_way_out_the_review_found_is_refused);
/// The findings of the security review of the list-based judge, each as
/// team A's own compose file, under the tool that has the feature: 403
/// `compose_model_not_allowed` naming service, key and reason, and the
/// container is untouched.
async fn e2e_each_way_out_the_review_found_is_refused(tool: Compose) {
    let host = Host::new(tool);
    host.up("", "");
    let before = host.id_of_container();
    let gateway = host.gateway("", &[]);
    let client = Client::new(&gateway);
    let b = host.b.display().to_string();
    let a = host.a.display().to_string();
    let v2 = tool == Compose::V2;
    // (what, service keys, top-level sections, what the refusal says)
    let mut cases: Vec<(&str, String, String, String)> = vec![
        (
            "an overlay volume over the host's /etc",
            "    volumes: [\"etc:/mnt\"]\n".into(),
            "volumes:\n  etc:\n    driver_opts: {type: overlay, device: overlay, o: \"lowerdir=/etc:/usr\"}\n".into(),
            "the mount type `overlay`".into(),
        ),
        (
            "an overlay writing into another team's directory",
            "    volumes: [\"up:/mnt\"]\n".into(),
            format!("volumes:\n  up:\n    driver_opts: {{type: overlay, device: overlay, o: \"lowerdir={a}/data,upperdir={b},workdir={a}/w\"}}\n"),
            "needs allow = [\"volume_options\"]".into(),
        ),
        (
            "the host's block device, by a relative path",
            "    volumes: [\"disk:/mnt\"]\n".into(),
            "volumes:\n  disk:\n    driver_opts: {type: ext4, device: dev/vda}\n".into(),
            "the mount type `ext4`".into(),
        ),
        (
            "a profile hiding the target service",
            "    profiles: [hidden]\n    volumes: [\"/etc:/hostetc:ro\"]\n".into(),
            String::new(),
            "/etc is outside the project's host paths".into(),
        ),
        (
            "a merge key bringing another team's env file",
            "    <<: *b\n".into(),
            format!("x-b: &b\n  env_file: {b}/.env\n"),
            format!("service `web`, `env_file`: {b}/.env is outside the project's host paths"),
        ),
        (
            "a merge key inside a merge key bringing another team's env file",
            "    <<: *outer\n".into(),
            format!("x-b: &b\n  env_file: {b}/.env\nx-outer: &outer\n  <<: *b\n  stop_grace_period: 5s\n"),
            format!("service `web`, `env_file`: {b}/.env is outside the project's host paths"),
        ),
        (
            "an env file under the gateway's home directory",
            // The team's own file, named through HOME, which compose
            // reads from whichever user runs it.
            format!("    env_file: [\"~/..{a}/own.env\"]\n"),
            String::new(),
            "which compose reads from the gateway's home directory".into(),
        ),
        (
            "compose's own label naming an env file",
            // Continues the labels every fixture service has.
            format!("      com.docker.compose.project.environment_file: {b}/.env\n"),
            String::new(),
            "sets compose's own label `com.docker.compose.project.environment_file`".into(),
        ),
        (
            "another team's external network",
            "    networks: [theirs]\n".into(),
            format!("networks:\n  theirs:\n    external: true\n    name: {}b_default\n", host.f.id),
            "the external network".into(),
        ),
        (
            "a seccomp profile file that allows everything",
            format!("    security_opt: [\"seccomp={a}/everything.json\"]\n"),
            String::new(),
            "is not in the project's security_opts".into(),
        ),
        (
            "device cgroup rules",
            "    device_cgroup_rules: [\"b 8:* rwm\"]\n".into(),
            String::new(),
            "needs allow = [\"devices\"]".into(),
        ),
        (
            "a cgroup parent",
            "    cgroup_parent: /system.slice\n".into(),
            String::new(),
            "needs allow = [\"kernel\"]".into(),
        ),
        (
            "another runtime",
            "    runtime: runc\n".into(),
            String::new(),
            "needs allow = [\"kernel\"]".into(),
        ),
        (
            "SELinux labels disabled",
            "    security_opt: [\"label:disable\"]\n".into(),
            String::new(),
            "needs allow = [\"unconfined\"]".into(),
        ),
        (
            "a sysctl outside the network namespace",
            "    sysctls: {kernel.msgmax: \"65536\"}\n".into(),
            String::new(),
            "needs allow = [\"kernel\"]".into(),
        ),
        (
            "a bind under a directory the model binds read-write",
            format!("    volumes: [\"{a}:/team\", \"{a}/data:/data:ro\"]\n"),
            String::new(),
            format!("{a}/data lies under {a}, which the service `web` binds read-write"),
        ),
        (
            "a secret's file under a directory the model binds read-write",
            format!("    volumes: [\"{a}:/team\"]\n    secrets: [s]\n"),
            format!("secrets:\n  s: {{file: {a}/s.txt}}\n"),
            format!("{a}/s.txt lies under {a}, which the service `web` binds read-write"),
        ),
        (
            "a syslog driver sending logs elsewhere",
            "    logging: {driver: syslog, options: {syslog-address: \"udp://10.9.9.9:514\"}}\n".into(),
            String::new(),
            "needs allow = [\"remote_logging\"]".into(),
        ),
    ];
    std::fs::write(host.a.join("own.env"), "OWN=1\n").unwrap();
    std::fs::write(host.a.join("s.txt"), "not a secret\n").unwrap();
    std::fs::write(
        host.a.join("everything.json"),
        "{\"defaultAction\": \"SCMP_ACT_ALLOW\"}",
    )
    .unwrap();
    if v2 {
        cases.extend([
            (
                "uts: host",
                "    uts: host\n".into(),
                String::new(),
                "`uts: host` shares the host's namespace".into(),
            ),
            (
                "cgroup: host",
                "    cgroup: host\n".into(),
                String::new(),
                "`cgroup: host` shares the host's namespace".into(),
            ),
            (
                "an include whose project directory is another team's",
                String::new(),
                format!("include:\n  - path: sub/extra.yml\n    project_directory: {b}\n"),
                format!("`include.project_directory`: {b} is outside"),
            ),
            (
                "another team's label file",
                format!("    label_file: {b}/labels\n"),
                String::new(),
                format!("service `web`, `label_file`: {b}/labels is outside"),
            ),
            (
                "a remote build context with another team's extra context",
                format!("    build:\n      context: https://github.com/example/app.git\n      additional_contexts:\n        theirs: {b}\n"),
                String::new(),
                format!("`build.additional_contexts.theirs`: {b} is outside"),
            ),
        ]);
        std::fs::create_dir_all(host.a.join("sub")).unwrap();
        std::fs::write(
            host.a.join("sub/extra.yml"),
            format!("services:\n  extra:\n    image: {}/base:1\n", host.f.id),
        )
        .unwrap();
    }
    let mut table = vec![format!("| way out | compose {} |", tool.policy_value())];
    // Each request signed with its own second: the same body signed in
    // one second is one request.
    let first = now();
    for (i, (what, extra, top, expected)) in cases.iter().enumerate() {
        host.write_a(extra, top);
        let (status, problem) = client
            .deploy_at("/pull?wait=60", &host.container, first - i as u64)
            .await;
        let message = problem["message"].as_str().unwrap_or_default();
        assert_eq!(
            (status, problem["code"].as_str()),
            (403, Some("compose_model_not_allowed")),
            "{what}: {problem}"
        );
        assert!(message.contains(expected.as_str()), "{what}: {message}");
        assert!(
            !message.contains(B_VALUE),
            "{what}: no value of B's: {message}"
        );
        assert_eq!(host.id_of_container(), before, "{what}: nothing ran");
        table.push(format!("| {what} | 403 |"));
    }
    // A container outside the model (another project of the team's, left
    // created) that binds A's directory read-write.
    let keeper = format!("{}-keeper", host.f.id);
    run(
        "docker",
        &[
            "create",
            "--label",
            &format!("dh.test={}", host.f.id),
            "--name",
            &keeper,
            "-v",
            &format!("{a}:/team"),
            &host.f.base,
        ],
    );
    let what = "a bind under a directory another container binds read-write";
    host.write_a(&format!("    volumes: [\"{a}/data:/data\"]\n"), "");
    let (status, problem) = client
        .deploy_at("/pull?wait=60", &host.container, first - cases.len() as u64)
        .await;
    run("docker", &["rm", "-f", &keeper]);
    let message = problem["message"].as_str().unwrap_or_default();
    assert_eq!(status, 403, "{what}: {problem}");
    assert!(
        message.contains(&format!(
            "{a}/data lies under {a}, which the container `{keeper}` binds read-write"
        )),
        "{what}: {message}"
    );
    assert_eq!(host.id_of_container(), before, "{what}: nothing ran");
    table.push(format!("| {what} | 403 |"));
    println!("{}", table.join("\n"));
    // Asked of the store, not the log, whose writer may still hold lines.
    let jobs = client.jobs().await;
    assert!(jobs.is_empty(), "no job was made: {jobs:#?}");
}

per_compose_tool!(e2e_the_shapes_teams_use_still_deploy);
/// What teams write keeps deploying under the allowlist: binds, env files
/// and build contexts under the project's own directory, named volumes, a
/// tmpfs volume with a size, a shared proxy network the policy names,
/// `no-new-privileges`, anchors and merge keys, `extra_hosts`, a network
/// sysctl, local logging with options, profiles, and an `allow` class.
async fn e2e_the_shapes_teams_use_still_deploy(tool: Compose) {
    let host = Host::new(tool);
    let proxy = format!("{}-proxy", host.f.id);
    run(
        "docker",
        &[
            "network",
            "create",
            "--label",
            &format!("dh.test={}", host.f.id),
            &proxy,
        ],
    );
    let _network = NetworkGuard(proxy.clone(), host.f.id.clone());
    std::fs::write(host.a.join("web.env"), "GREETING=hello\n").unwrap();
    std::fs::create_dir_all(host.a.join("web")).unwrap();
    std::fs::write(host.a.join("web/index.html"), "built").unwrap();
    std::fs::write(
        host.a.join("web/Dockerfile"),
        format!(
            "FROM {}/base:1\nCOPY index.html /www/index.html\nLABEL dh.test={}\n",
            host.f.id, host.f.id
        ),
    )
    .unwrap();
    let extra = "    <<: *defaults\n    env_file: [./web.env]\n    volumes: [\"./data:/data\", \"cache:/cache\", \"scratch:/scratch\"]\n    networks: [default, proxy]\n    security_opt: [\"no-new-privileges:true\"]\n    extra_hosts: [\"db.internal:10.0.0.5\"]\n    sysctls: {net.core.somaxconn: \"1024\"}\n    logging: {driver: json-file, options: {max-size: 10m, max-file: \"3\"}}\n    cap_add: [NET_BIND_SERVICE]\n";
    let tools = format!(
        "  tools:\n    image: {id}/base:1\n    profiles: [debug]\n    labels:\n      dh.test: \"{id}\"\n",
        id = host.f.id
    );
    let top = format!(
        "{tools}volumes:\n  cache: {{}}\n  scratch:\n    driver_opts: {{type: tmpfs, device: tmpfs, o: \"size=10m,uid=1000\"}}\nnetworks:\n  proxy:\n    external: true\n    name: {proxy}\n"
    );
    // An anchor is defined before it is used.
    let text = format!(
        "x-defaults: &defaults\n  restart: unless-stopped\n  init: true\n{}",
        host.a_file(extra, &top)
    );
    host.f
        .compose_up(&host.project, &host.a, &[("compose.yml", text)], &[]);
    let gateway = host.gateway(
        &format!("networks = [\"{proxy}\"]\nallow = [\"cap_add\"]\n"),
        &[],
    );
    let client = Client::new(&gateway);
    let repo = format!("{}/web:latest", host.f.id);
    host.f.push_version(&repo, "v2");
    let (status, job) = client.deploy("/pull?wait=120", &host.container).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}\n{}",
        gateway.log_text()
    );
    assert_eq!(host.f.content(&host.container), "v2");
    let running = host.f.container(&host.container);
    assert!(
        running["Config"]["Env"]
            .as_array()
            .unwrap()
            .contains(&json!("GREETING=hello")),
        "{}",
        running["Config"]["Env"]
    );
    assert!(running["NetworkSettings"]["Networks"].get(&proxy).is_some());
    assert_eq!(
        running["HostConfig"]["Sysctls"]["net.core.somaxconn"],
        "1024"
    );
    assert_eq!(
        running["HostConfig"]["LogConfig"]["Config"]["max-size"],
        "10m"
    );
    assert_eq!(
        running["HostConfig"]["RestartPolicy"]["Name"],
        "unless-stopped"
    );
    // The copy it ran, and that the next deploy reads back as A's files.
    let labels = &running["Config"]["Labels"];
    let copy = labels["com.docker.compose.project.config_files"]
        .as_str()
        .unwrap();
    assert!(copy.contains("/judged/"), "{labels}");
    host.f.push_version(&repo, "v3");
    let (status, job) = client
        .deploy_at("/pull?wait=120", &host.container, now() + 1)
        .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}"
    );
    assert_eq!(host.f.content(&host.container), "v3");
    assert_eq!(
        job["compose_files"],
        json!([host.a.join("compose.yml").display().to_string()])
    );
    // A build under the project's own directory.
    host.write_a("    build: ./web\n", "");
    let (status, job) = client
        .deploy_at("/build?wait=180", &host.container, now() + 2)
        .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}"
    );
    assert_eq!(host.f.content(&host.container), "built");
}

/// Removes a network on drop, and first the fixture's containers (by
/// their `dh.test` label), which may still be attached to it.
struct NetworkGuard(String, String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let label = format!("label=dh.test={}", self.1);
        for id in run_quietly("docker", &["ps", "-aq", "--filter", &label]).split_whitespace() {
            run_quietly("docker", &["rm", "-f", id]);
        }
        run_quietly("docker", &["network", "rm", &self.0]);
    }
}

/// The `MARK` a container runs with, from its environment.
fn mark_of(f: &Fixture, container: &str) -> String {
    let running = f.container(container);
    running["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str()?.strip_prefix("MARK="))
        .map(str::to_owned)
        .next()
        .or_else(|| {
            running["Config"]["Labels"]["mark"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// One kind of file compose reads: how A's files name it with `MARK` set
/// to `mark`.
struct Kind {
    what: &'static str,
    v2_only: bool,
    /// Writes A's files with the mark `judged`.
    write: fn(&Host, &str),
    /// Changes them to the mark `changed` (and more that the judge would
    /// refuse), after the judge's last read.
    change: fn(&Host),
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            what: "a config file reached through a symlink, pointed at another team's",
            v2_only: false,
            write: |host, mark| {
                let release = host.a.join("releases/1");
                std::fs::create_dir_all(&release).unwrap();
                let extra = format!("    environment: {{MARK: {mark}}}\n");
                std::fs::write(release.join("compose.yml"), host.a_file(&extra, "")).unwrap();
                let link = host.a.join("compose.yml");
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(release.join("compose.yml"), &link).unwrap();
                let theirs = host.a_file(
                    &format!("    environment: {{MARK: changed}}\n    env_file: [{}/.env]\n    volumes: [\"/etc:/hostetc\"]\n", host.b.display()),
                    "",
                );
                std::fs::write(host.b.join("current.yml"), theirs).unwrap();
            },
            change: |host| {
                let link = host.a.join("compose.yml");
                std::fs::remove_file(&link).unwrap();
                std::os::unix::fs::symlink(host.b.join("current.yml"), &link).unwrap();
            },
        },
        Kind {
            what: "an extended file",
            v2_only: false,
            write: |host, mark| {
                std::fs::write(
                    host.a.join("base.yml"),
                    format!("services:\n  base:\n    environment: {{MARK: {mark}}}\n"),
                )
                .unwrap();
                host.write_a("    extends: {file: base.yml, service: base}\n", "");
            },
            change: |host| {
                std::fs::write(
                    host.a.join("base.yml"),
                    "services:\n  base:\n    environment: {MARK: changed}\n    privileged: true\n",
                )
                .unwrap();
            },
        },
        Kind {
            what: "an env_file",
            v2_only: false,
            write: |host, mark| {
                std::fs::write(host.a.join("web.env"), format!("MARK={mark}\n")).unwrap();
                host.write_a("    env_file: [web.env]\n", "");
            },
            change: |host| {
                std::fs::write(
                    host.a.join("web.env"),
                    format!("MARK=changed\nLEAK={B_VALUE}\n"),
                )
                .unwrap();
            },
        },
        Kind {
            what: "an included file",
            v2_only: true,
            write: |host, mark| {
                std::fs::create_dir_all(host.a.join("inc")).unwrap();
                let web = compose(&[service(
                    "web",
                    &host.image,
                    &host.container,
                    &host.f.id,
                    &format!("    environment: {{MARK: {mark}}}\n"),
                )]);
                std::fs::write(host.a.join("inc/web.yml"), web).unwrap();
                let _ = std::fs::remove_file(host.a.join("inc/.env"));
                std::fs::write(host.a.join("compose.yml"), "include: [inc/web.yml]\n").unwrap();
            },
            change: |host| {
                let web = compose(&[service(
                    "web",
                    &host.image,
                    &host.container,
                    &host.f.id,
                    "    environment: {MARK: changed}\n    volumes: [\"/:/host\"]\n",
                )]);
                std::fs::write(host.a.join("inc/web.yml"), web).unwrap();
            },
        },
        Kind {
            what: "an included file's own .env",
            v2_only: true,
            write: |host, mark| {
                std::fs::create_dir_all(host.a.join("inc")).unwrap();
                let web = compose(&[service(
                    "web",
                    &host.image,
                    &host.container,
                    &host.f.id,
                    "    environment: {MARK: \"${MARK}\"}\n    privileged: ${PRIV:-false}\n",
                )]);
                std::fs::write(host.a.join("inc/web.yml"), web).unwrap();
                std::fs::write(host.a.join("inc/.env"), format!("MARK={mark}\n")).unwrap();
                std::fs::write(host.a.join("compose.yml"), "include: [inc/web.yml]\n").unwrap();
            },
            change: |host| {
                std::fs::write(host.a.join("inc/.env"), "MARK=changed\nPRIV=true\n").unwrap();
            },
        },
        Kind {
            what: "a label_file",
            v2_only: true,
            write: |host, mark| {
                std::fs::write(host.a.join("web.labels"), format!("mark={mark}\n")).unwrap();
                host.write_a("    label_file: web.labels\n", "");
            },
            change: |host| {
                std::fs::write(
                    host.a.join("web.labels"),
                    "mark=changed\ncom.docker.compose.project.environment_file=/etc/shadow\n",
                )
                .unwrap();
            },
        },
    ]
}

per_compose_tool!(e2e_what_runs_is_what_was_judged);
/// For each kind of file compose reads, the file is changed after the
/// judge's last read and before the first compose command (the gateway
/// built with the `test-seams` feature pauses there): the container runs
/// what was judged (`MARK=judged`), and nothing of the new content.
async fn e2e_what_runs_is_what_was_judged(tool: Compose) {
    if !cfg!(feature = "test-seams") {
        crate::support::skip(
            "the gateway is built without the test-seams feature (scripts/test builds it)",
        );
        return;
    }
    let host = Host::new(tool);
    host.write_a("    environment: {MARK: original}\n", "");
    host.f.compose_up(
        &host.project,
        &host.a,
        &[(
            "compose.yml",
            host.a_file("    environment: {MARK: original}\n", ""),
        )],
        &[],
    );
    let seam = host.f.dir.path().join("seam");
    std::fs::create_dir_all(&seam).unwrap();
    let gateway = host.gateway(
        "",
        &[("DELIVERY_TEST_SEAM_DIR", &seam.display().to_string())],
    );
    let client = Client::new(&gateway);
    let mut table = vec![format!(
        "| file changed after the judge | compose {} | runs |",
        tool.policy_value()
    )];
    let mut ts = now();
    for kind in kinds() {
        if kind.v2_only && tool != Compose::V2 {
            continue;
        }
        (kind.write)(&host, "judged");
        ts += 1;
        let (status, accepted) = client.deploy_at("/pull", &host.container, ts).await;
        assert_eq!(status, 202, "{}: {accepted}", kind.what);
        let id = accepted["id"].as_str().unwrap().to_string();
        let judged = seam.join(format!("{id}.judged"));
        wait_until("the judge's last read", Duration::from_secs(60), || {
            judged.exists()
        });
        (kind.change)(&host);
        std::fs::write(seam.join(format!("{id}.go")), "").unwrap();
        let (_, job) = client.job(&id, 120).await;
        assert_eq!(
            job["state"],
            "succeeded",
            "{}: {job:#}\n{}",
            kind.what,
            gateway.log_text()
        );
        let mark = mark_of(&host.f, &host.container);
        assert_eq!(mark, "judged", "{}: the container runs {mark}", kind.what);
        let running = host.f.container(&host.container);
        assert_eq!(running["HostConfig"]["Privileged"], false, "{}", kind.what);
        let env = running["Config"]["Env"].to_string();
        assert!(!env.contains(B_VALUE), "{}: {env}", kind.what);
        let binds = running["HostConfig"]["Binds"].to_string();
        assert!(
            !binds.contains("/etc") && !binds.contains("\"/:"),
            "{}: {binds}",
            kind.what
        );
        table.push(format!("| {} | | MARK={mark} |", kind.what));
        // Put A's own files back for the next kind.
        let link = host.a.join("compose.yml");
        if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&link).unwrap();
        }
    }
    println!("{}", table.join("\n"));
}

per_compose_tool!(e2e_after_a_rollback_a_pin_deploys_and_the_files_are_judged_again);
/// On a judged copy: a pinned release that crashes is rolled back; a pin
/// right after deploys (the pin is merged into the model, so no override
/// file a rollback removed is needed); and each next request judges the
/// team's current files, not the copy the container names.
async fn e2e_after_a_rollback_a_pin_deploys_and_the_files_are_judged_again(tool: Compose) {
    let host = Host::new(tool);
    host.up("", "");
    let repo = format!("{}/web", host.f.id);
    super::safe::build(
        &host.f,
        &format!("{}/web:crash", host.f.id),
        "crash",
        super::safe::CRASH,
    );
    let crash = super::safe::publish_digest(
        &host.f,
        &format!("{}/web:crash", host.f.id),
        &format!("{repo}:crash"),
    );
    host.f.image(&format!("{}/web:v2", host.f.id), "v2");
    let good = super::safe::publish_digest(
        &host.f,
        &format!("{}/web:v2", host.f.id),
        &format!("{repo}:v2"),
    );
    let images = format!("images = [\"{}\"]\n", host.f.remote(&repo));
    let gateway = host.gateway(&images, &[]);
    let client = Client::new(&gateway);
    let pin = |digest: &str| {
        json!({"container_name": host.container, "image": format!("{}@{digest}", host.f.remote(&repo))})
            .to_string()
    };
    let ts = now();
    let (status, failed) = client
        .post_signed("/pull?wait=180", &pin(&crash), ts, SECRET)
        .await;
    assert_eq!(
        (status, failed["state"].as_str()),
        (502, Some("rolled_back")),
        "{failed:#}"
    );
    assert_eq!(host.f.content(&host.container), "v1");
    let (status, pinned) = client
        .post_signed("/pull?wait=180", &pin(&good), ts + 1, SECRET)
        .await;
    assert_eq!(
        (status, pinned["state"].as_str()),
        (200, Some("succeeded")),
        "a pin right after a rollback: {pinned:#}\n{}",
        gateway.log_text()
    );
    assert_eq!(host.f.content(&host.container), "v2");
    let labels = &host.f.container(&host.container)["Config"]["Labels"];
    assert!(
        labels["com.docker.compose.project.config_files"]
            .as_str()
            .unwrap()
            .contains("/judged/"),
        "{labels}"
    );
    // The team's file now binds the host's /etc: the next request reads
    // the file, not the copy, and refuses it.
    host.write_a("    volumes: [\"/etc:/hostetc:ro\"]\n", "");
    let (status, refused) = client
        .deploy_at("/pull?wait=60", &host.container, ts + 2)
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("compose_model_not_allowed")),
        "{refused}"
    );
    host.write_a("", "");
    let (status, back) = client
        .deploy_at("/pull?wait=120", &host.container, ts + 3)
        .await;
    assert_eq!(
        (status, back["state"].as_str()),
        (200, Some("succeeded")),
        "{back:#}"
    );
    assert_eq!(
        host.f.content(&host.container),
        "v1",
        "the unpinned pull runs the file's tag"
    );
}

per_compose_tool!(e2e_a_pull_builds_nothing_for_a_pull_only_team_and_hands_on_no_proxy);
/// Compose interpolates every variable it has into a team's model, and its
/// `up` builds a service with `build:` whose image the pull did not bring.
/// The gateway's proxy variables, credentials and all, reach no container;
/// and once a reload makes the team pull-only, its `/pull` builds nothing.
async fn e2e_a_pull_builds_nothing_for_a_pull_only_team_and_hands_on_no_proxy(tool: Compose) {
    let host = Host::new(tool);
    host.up("", "");
    let proxy = "http://gw:proxy-pa55word@127.0.0.1:9";
    let gateway = host.gateway("", &[("HTTPS_PROXY", proxy), ("https_proxy", proxy)]);
    let client = Client::new(&gateway);
    let first = now();
    host.write_a(
        "    environment: {LEAK: \"${HTTPS_PROXY:-none}\", LEAK_LOWER: \"${https_proxy:-none}\"}\n",
        "",
    );
    let (status, job) = client
        .deploy_at("/pull?wait=120", &host.container, first)
        .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}"
    );
    let env = host.f.container(&host.container)["Config"]["Env"].clone();
    let env: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        env.contains(&"LEAK=none") && env.contains(&"LEAK_LOWER=none"),
        "no proxy variable reached the container: {env:?}"
    );

    gateway.reload(|text| text.replace(r#"actions = ["pull", "build"]"#, r#"actions = ["pull"]"#));
    let context = host.a.join("steal");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {}\nLABEL dh.test={}\n", host.f.base, host.f.id),
    )
    .unwrap();
    // An image no registry has, which compose is told to build rather
    // than pull: only a build brings it.
    let built = format!("{}/a-built:1", host.f.id);
    std::fs::write(
        host.a.join("compose.yml"),
        compose(&[service(
            "web",
            &built,
            &host.container,
            &host.f.id,
            "    build: ./steal\n    pull_policy: build\n",
        )]),
    )
    .unwrap();
    let (_, job) = client
        .deploy_at("/pull?wait=120", &host.container, first - 1)
        .await;
    assert_ne!(job["state"], "succeeded", "{job:#}");
    let exists = std::process::Command::new("docker")
        .args(["image", "inspect", &built])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(!exists, "nothing was built: {job:#}");
    for step in job["steps"].as_array().into_iter().flatten() {
        let argv = step["argv"].to_string();
        assert!(
            !argv.contains("\"up\"") || argv.contains("--no-build"),
            "a pull-only team's `up` builds nothing: {argv}"
        );
    }
}
