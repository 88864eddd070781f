//! End-to-end tests: the real gateway binary, the real Docker engine, the
//! real compose tool, a real registry.
//!
//! Every fixture is made here: images `FROM scratch` holding Debian's static
//! busybox, a `docker-registry` process on a free 127.0.0.1 port, compose
//! projects in temporary directories. Everything created carries the label
//! `dh.test=<fixture id>` or a compose project named after it, and is removed
//! when the fixture is dropped, also when a test fails.
//!
//! Without a Docker engine these tests print one line and pass, unless
//! `CI=true`, where they fail: CI must never pass without them.

mod boundary;
mod ci_steps;
mod fleet;
mod image;
mod judged;
mod notify;
mod oidc;
mod operations;
mod releases;
mod safe;
mod scenarios;
mod shapes;
mod swarm;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{TempDir, temp_dir};

/// Whether the engine answers; under CI=true its absence is a failure.
pub fn engine_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    let ready = *READY.get_or_init(|| {
        Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ready {
        crate::support::skip("no Docker engine answers");
    }
    ready
}

/// A compose tool; every end-to-end scenario that runs compose runs once
/// with each, the tool named in the test's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compose {
    V1,
    V2,
}

impl Compose {
    pub const ALL: [Compose; 2] = [Compose::V1, Compose::V2];

    pub fn argv(self) -> &'static [&'static str] {
        match self {
            Compose::V1 => &["docker-compose"],
            Compose::V2 => &["docker", "compose"],
        }
    }

    /// The policy's `compose` value that selects this tool.
    pub fn policy_value(self) -> &'static str {
        match self {
            Compose::V1 => "v1",
            Compose::V2 => "v2",
        }
    }

    /// A command running this tool with `args`.
    pub fn command(self, args: &[&str]) -> Command {
        let argv = self.argv();
        let mut command = Command::new(argv[0]);
        command.args(&argv[1..]).args(args);
        command
    }

    /// Whether this machine has the tool. Outside CI a missing tool skips
    /// its tests with a printed reason; under CI=true it is a failure, since
    /// CI installs both.
    pub fn ready(self) -> bool {
        static FOUND: OnceLock<[bool; 2]> = OnceLock::new();
        let found = FOUND.get_or_init(|| {
            Compose::ALL.map(|tool| {
                tool.command(&["version", "--short"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
        })[self as usize];
        if !found {
            crate::support::skip(&format!(
                "compose {} (`{}`) is not installed here (CI installs both tools)",
                self.policy_value(),
                self.argv().join(" ")
            ));
        }
        found
    }
}

/// Runs `scenario` with `tool` when the engine and the tool are there.
pub async fn with_tool<F: std::future::Future<Output = ()>>(
    tool: Compose,
    scenario: impl FnOnce(Compose) -> F,
) {
    if engine_ready() && tool.ready() {
        scenario(tool).await;
    }
}

/// Declares the end-to-end scenario `name(tool: Compose)` as two tests,
/// `name::compose_v1` and `name::compose_v2`. `sync` for a scenario that is
/// a plain function.
macro_rules! per_compose_tool {
    ($name:ident) => {
        mod $name {
            use super::super::{Compose, with_tool};
            #[tokio::test]
            async fn compose_v1() {
                with_tool(Compose::V1, super::$name).await;
            }
            #[tokio::test]
            async fn compose_v2() {
                with_tool(Compose::V2, super::$name).await;
            }
        }
    };
    (sync $name:ident) => {
        mod $name {
            use super::super::{Compose, engine_ready};
            #[test]
            fn compose_v1() {
                if engine_ready() && Compose::V1.ready() {
                    super::$name(Compose::V1);
                }
            }
            #[test]
            fn compose_v2() {
                if engine_ready() && Compose::V2.ready() {
                    super::$name(Compose::V2);
                }
            }
        }
    };
}
pub(crate) use per_compose_tool;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command, returns stdout; fails the test with stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Runs a command whose failure does not matter (cleanup).
fn run_quietly(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Waits for a condition that something else makes true.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits until `url` answers with a success status.
pub fn wait_for_http(what: &str, url: &str) {
    wait_until(what, Duration::from_secs(15), || {
        Command::new("curl")
            .args(["-sf", "-o", "/dev/null", url])
            .status()
            .is_ok_and(|s| s.success())
    });
}

/// A `docker-registry` process on a free loopback port.
pub struct Registry {
    child: Child,
    pub host: String,
}

impl Registry {
    fn start(dir: &Path) -> Self {
        Self::serve(dir, "registry", "127.0.0.1", &dir.join("registry-data"), "")
    }

    /// A registry named `name` (its config file in `dir`) on a free port of
    /// `addr`, storing into `storage` (several may share one store), with
    /// `extra` configuration sections.
    pub fn serve(dir: &Path, name: &str, addr: &str, storage: &Path, extra: &str) -> Self {
        let port = free_port();
        let config = dir.join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}:{port}\n{extra}",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (Debian package docker-registry)");
        let host = format!("{addr}:{port}");
        // With authentication it answers 401, which still means it is up.
        wait_until("the registry to answer", Duration::from_secs(15), || {
            Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &format!("http://{host}/v2/"),
                ])
                .output()
                .is_ok_and(|o| matches!(&o.stdout[..], b"200" | b"401"))
        });
        Self { child, host }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything one test creates, removed on drop.
pub struct Fixture {
    /// Lowercase and short: usable as a compose project and a name prefix.
    pub id: String,
    pub dir: TempDir,
    pub registry: Option<Registry>,
    /// The compose tool this fixture's projects are brought up with, and
    /// its gateways run.
    pub compose: Compose,
    /// Compose projects brought up, with their files and directory.
    projects: Mutex<Vec<(String, Vec<PathBuf>, PathBuf)>>,
    base: String,
}

impl Fixture {
    pub fn new(compose: Compose) -> Self {
        let id = format!(
            "dh{}",
            &delivery_hook::names::JobId::random().to_string()[..10]
        );
        let dir = temp_dir(&id);
        let fixture = Self {
            base: format!("{id}/base:1"),
            id,
            dir,
            registry: None,
            compose,
            projects: Mutex::new(Vec::new()),
        };
        let context = fixture.dir.path().join("base");
        std::fs::create_dir_all(&context).unwrap();
        std::fs::copy("/bin/busybox", context.join("busybox"))
            .expect("/bin/busybox exists (Debian package busybox-static)");
        // The label first: every layer is this fixture's own, so no other
        // fixture's build takes one as cache while this one's cleanup
        // removes it.
        std::fs::write(
            context.join("Dockerfile"),
            format!(
                "FROM scratch\nLABEL dh.test={}\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
                fixture.id
            ),
        )
        .unwrap();
        fixture.docker_build(&fixture.base, &context);
        fixture
    }

    pub fn with_registry(compose: Compose) -> Self {
        let mut fixture = Self::new(compose);
        fixture.registry = Some(Registry::start(fixture.dir.path()));
        fixture
    }

    pub fn registry_host(&self) -> &str {
        &self
            .registry
            .as_ref()
            .expect("a fixture with a registry")
            .host
    }

    fn docker_build(&self, tag: &str, context: &Path) {
        run(
            "docker",
            &["build", "-q", "-t", tag, &context.display().to_string()],
        );
    }

    /// A directory `name` in the fixture holding `files` (name, content).
    pub fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let context = self.dir.path().join(name);
        std::fs::create_dir_all(&context).unwrap();
        for (file, content) in files {
            std::fs::write(context.join(file), content).unwrap();
        }
        context
    }

    /// A build context serving `content` at /www/index.html, FROM the base image.
    pub fn write_context(&self, name: &str, content: &str, extra: &str) -> PathBuf {
        let dockerfile = format!(
            "FROM {}\nCOPY index.html /www/index.html\n{extra}",
            self.base
        );
        self.context(
            name,
            &[("index.html", content), ("Dockerfile", &dockerfile)],
        )
    }

    /// Builds an image serving `content`; returns its id.
    pub fn image(&self, tag: &str, content: &str) -> String {
        let context = self.write_context(
            &format!("ctx-{}", tag.replace([':', '/'], "-")),
            content,
            "",
        );
        self.docker_build(tag, &context);
        run("docker", &["image", "inspect", "--format", "{{.Id}}", tag])
    }

    /// `<id>/web:latest` in the registry, holding an image that serves
    /// "v1"; returns that reference, for [`Self::push_version`] and
    /// [`Self::up_web`].
    pub fn web_v1_published(&self) -> String {
        let repo = format!("{}/web:latest", self.id);
        self.push_version(&repo, "v1");
        repo
    }

    /// `repo` now holds a new image serving `version`; returns its id.
    pub fn push_version(&self, repo: &str, version: &str) -> String {
        let local = format!("{}/web:{version}", self.id);
        let id = self.image(&local, version);
        self.publish(&local, repo);
        id
    }

    /// Brings up one compose service `web` from `repo` in `app/`, as the
    /// container `<id>-web`, and returns that name.
    pub fn up_web(&self, repo: &str) -> String {
        let container = format!("{}-web", self.id);
        self.compose_up(
            &self.id,
            &self.dir.path().join("app"),
            &[(
                "compose.yml",
                compose(&[service("web", &self.remote(repo), &container, &self.id, "")]),
            )],
            &[],
        );
        container
    }

    /// Pushes `local` to the registry as `repo:tag`, then drops the local
    /// registry tag so that only a real pull can bring it back.
    pub fn publish(&self, local: &str, remote: &str) {
        let remote = format!("{}/{remote}", self.registry_host());
        run("docker", &["tag", local, &remote]);
        run("docker", &["push", "-q", &remote]);
        run("docker", &["rmi", &remote]);
    }

    /// The remote name of a repository in the fixture's registry.
    pub fn remote(&self, repo: &str) -> String {
        format!("{}/{repo}", self.registry_host())
    }

    /// Writes compose files into `project_dir` and runs `up -d` with them.
    pub fn compose_up(
        &self,
        project: &str,
        project_dir: &Path,
        files: &[(&str, String)],
        extra_up: &[&str],
    ) {
        std::fs::create_dir_all(project_dir).unwrap();
        let mut paths = Vec::new();
        for (name, text) in files {
            let path = project_dir.join(name);
            std::fs::write(&path, text).unwrap();
            paths.push(path);
        }
        self.projects.lock().unwrap().push((
            project.to_string(),
            paths.clone(),
            project_dir.to_path_buf(),
        ));
        let mut args = compose_args(project, &paths, project_dir);
        args.extend(["up", "-d"].map(String::from));
        args.extend(extra_up.iter().map(|s| s.to_string()));
        let argv = self.compose.argv();
        let all: Vec<&str> = argv[1..]
            .iter()
            .copied()
            .chain(args.iter().map(String::as_str))
            .collect();
        run(argv[0], &all);
    }

    pub fn container(&self, name: &str) -> Value {
        let text = run("docker", &["inspect", name]);
        serde_json::from_str::<Value>(&text).unwrap()[0].clone()
    }

    /// What the container serves, read inside it.
    pub fn content(&self, name: &str) -> String {
        run(
            "docker",
            &["exec", name, "/bin/busybox", "cat", "/www/index.html"],
        )
    }
}

fn compose_args(project: &str, files: &[PathBuf], dir: &Path) -> Vec<String> {
    let mut args = vec![format!("--project-name={project}")];
    args.extend(files.iter().map(|f| format!("--file={}", f.display())));
    args.push(format!("--project-directory={}", dir.display()));
    args
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let argv = self.compose.argv();
        for (project, files, dir) in self.projects.lock().unwrap().iter() {
            let mut args: Vec<String> = argv[1..].iter().map(|s| s.to_string()).collect();
            args.extend(compose_args(project, files, dir));
            args.extend(["down", "--volumes", "--remove-orphans"].map(String::from));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_quietly(argv[0], &args);
            // Volumes a file no longer declares (a test rewrote it) are
            // found by the label compose gave them.
            let label = format!("label=com.docker.compose.project={project}");
            let volumes = run_quietly("docker", &["volume", "ls", "-q", "--filter", &label]);
            for volume in volumes.split_whitespace() {
                run_quietly("docker", &["volume", "rm", volume]);
            }
        }
        let label = format!("label=dh.test={}", self.id);
        let containers = run_quietly("docker", &["ps", "-aq", "--filter", &label]);
        for id in containers.split_whitespace() {
            run_quietly("docker", &["rm", "-f", id]);
        }
        // Newest first, so children go before the images they are built on;
        // a second pass catches what a parent-first order left.
        for _ in 0..3 {
            let images = run_quietly("docker", &["images", "-q", "--filter", &label]);
            if images.is_empty() {
                break;
            }
            for id in images.split_whitespace() {
                run_quietly("docker", &["rmi", "-f", id]);
            }
        }
    }
}

/// A compose service running `image` under `container_name`, killed at once
/// on stop; `extra` adds keys, such as `build:`.
fn service(name: &str, image: &str, container: &str, id: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    image: {image}\n    container_name: {container}\n    stop_signal: SIGKILL\n    labels:\n      dh.test: \"{id}\"\n{extra}"
    )
}

fn compose(services: &[String]) -> String {
    format!("services:\n{}", services.concat())
}

/// `[docker]` keys with `stable_secs = 1` unless they set it (the tests
/// that are not about the gate need not wait five seconds per deploy), and
/// the fixture's compose tool unless they name one.
pub fn docker_section(compose: Compose, docker: &str) -> String {
    let mut section = String::new();
    if !docker.contains("stable_secs") {
        section.push_str("stable_secs = 1\n");
    }
    if !docker.contains("compose =") {
        section.push_str(&format!("compose = \"{}\"\n", compose.policy_value()));
    }
    section + docker
}

/// Runs `delivery-hook trigger --wait 120 --output json` with `args`;
/// returns its exit code, the final job, and its progress lines.
pub fn trigger(url: &str, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_delivery-hook"))
        .args(["trigger", "--url", url, "--wait", "120", "--output", "json"])
        .args(args)
        .env("DELIVERY_SECRET", SECRET)
        .output()
        .unwrap();
    let progress = String::from_utf8_lossy(&out.stderr).to_string();
    let job = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no job on stdout: {progress}"));
    (out.status.code().unwrap_or(-1), job, progress)
}

/// The gateway binary, serving a policy on a free port.
pub struct GatewayProcess {
    child: Child,
    pub url: String,
    pub log: PathBuf,
    policy: PathBuf,
}

pub const SECRET: &str = "e2e-secret-0123456789abcdef";

impl GatewayProcess {
    /// Starts `delivery-hook serve` with a policy allowing `<fixture id>-*`.
    pub fn start(fixture: &Fixture, docker_extra: &str) -> Self {
        Self::start_with(fixture, "", docker_extra, "")
    }

    /// As [`Self::start`], with more keys for `[server]` and for the `e2e`
    /// project (or, after them, more sections).
    pub fn start_with(
        fixture: &Fixture,
        server_extra: &str,
        docker_extra: &str,
        project_extra: &str,
    ) -> Self {
        Self::start_with_env(fixture, server_extra, docker_extra, project_extra, &[])
    }

    /// As [`Self::start_with`], with more environment variables (such as
    /// `DOCKER_HOST`, for another engine).
    pub fn start_with_env(
        fixture: &Fixture,
        server_extra: &str,
        docker_extra: &str,
        project_extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        // A second gateway of one fixture gets files of its own.
        let first = !fixture.dir.path().join("delivery.toml").exists();
        let named = |name: &str, ext: &str| match first {
            true => fixture.dir.path().join(format!("{name}.{ext}")),
            false => fixture.dir.path().join(format!("{name}-{port}.{ext}")),
        };
        let policy = named("delivery", "toml");
        let docker_extra = &docker_section(fixture.compose, docker_extra);
        std::fs::write(
            &policy,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nmax_wait_secs = 300\n{server_extra}\n\n[docker]\n{docker_extra}\n\n[projects.e2e]\nsecrets = [\"env:E2E_SECRET\"]\ncontainers = [\"{id}-*\"]\nactions = [\"pull\", \"build\"]\n{project_extra}\n",
                id = fixture.id
            ),
        )
        .unwrap();
        let log = named("gateway", "log");
        let child = Command::new(env!("CARGO_BIN_EXE_delivery-hook"))
            .args(["serve", "--config"])
            .arg(&policy)
            .env("E2E_SECRET", SECRET)
            .env_remove("DELIVERY_LISTEN")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the gateway binary starts");
        let url = format!("http://127.0.0.1:{port}");
        wait_for_http("the gateway to listen", &format!("{url}/healthz"));
        Self {
            child,
            url,
            log,
            policy,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Rewrites the policy file with `edit` and reloads it with SIGHUP, as
    /// an operator does; returns once the gateway says it reloaded.
    pub fn reload(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.policy).unwrap();
        std::fs::write(&self.policy, edit(text)).unwrap();
        let reloads = || self.log_text().matches("policy reloaded").count();
        let before = reloads();
        run("kill", &["-HUP", &self.child.id().to_string()]);
        wait_until("the policy to reload", Duration::from_secs(10), || {
            reloads() > before
        });
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client for the gateway, signing as the e2e project.
pub struct Client {
    http: reqwest::Client,
    pub url: String,
}

impl Client {
    pub fn new(gateway: &GatewayProcess) -> Self {
        Self::at(&gateway.url)
    }

    pub fn at(url: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            http: reqwest::Client::new(),
            url: url.to_string(),
        }
    }

    /// POSTs `{"container_name": name}` signed at `timestamp`.
    pub async fn deploy_at(&self, path: &str, name: &str, timestamp: u64) -> (u16, Value) {
        self.deploy_signed(path, name, timestamp, SECRET).await
    }

    /// As [`Self::deploy_at`], signed with `secret`; with the status, the
    /// `Retry-After` header, if any, in the body as `retry_after`.
    pub async fn deploy_signed(
        &self,
        path: &str,
        name: &str,
        timestamp: u64,
        secret: &str,
    ) -> (u16, Value) {
        let body = crate::support::body_for(name);
        self.post_signed(path, &body, timestamp, secret).await
    }

    /// POSTs `body` signed with `secret` at `timestamp`.
    pub async fn post_signed(
        &self,
        path: &str,
        body: &str,
        timestamp: u64,
        secret: &str,
    ) -> (u16, Value) {
        let body = body.to_string();
        let ts = timestamp.to_string();
        let signature = crate::support::sign(secret, body.as_bytes(), &ts);
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("Content-Type", "application/json")
            .header("X-Timestamp", ts)
            .header("X-Signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut value: Value =
            serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null);
        if let (Some(secs), Some(object)) = (retry_after, value.as_object_mut()) {
            object.insert("retry_after".into(), secs.into());
        }
        (status, value)
    }

    pub async fn deploy(&self, path: &str, name: &str) -> (u16, Value) {
        self.deploy_at(path, name, crate::support::now()).await
    }

    /// The e2e project's jobs, newest first (the first page).
    pub async fn jobs(&self) -> Vec<Value> {
        let target = "/jobs";
        let ts = crate::support::now().to_string();
        let response = self
            .http
            .get(format!("{}{target}", self.url))
            .header("X-Timestamp", &ts)
            .header(
                "X-Signature",
                crate::support::sign(SECRET, target.as_bytes(), &ts),
            )
            .header("X-Project", "e2e")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let list: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        list["jobs"].as_array().cloned().unwrap_or_default()
    }

    pub async fn job(&self, id: &str, wait: u64) -> (u16, Value) {
        self.job_as(id, wait, SECRET, "e2e").await
    }

    /// A job read as `project`, signed with `secret`.
    pub async fn job_as(&self, id: &str, wait: u64, secret: &str, project: &str) -> (u16, Value) {
        let target = format!("/jobs/{id}?wait={wait}");
        let ts = crate::support::now().to_string();
        let response = self
            .http
            .get(format!("{}{target}", self.url))
            .header("X-Timestamp", &ts)
            .header(
                "X-Signature",
                crate::support::sign(secret, target.as_bytes(), &ts),
            )
            .header("X-Project", project)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null),
        )
    }
}
