//! Shared test support: signing, temporary directories, the in-process harness.

pub mod ci;
pub mod fake_engine;
pub mod issuer;
pub mod jwt;
pub mod receivers;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use delivery_hook::auth::signature::SigningKey;
use delivery_hook::clock::Clock;
use delivery_hook::gateway::Gateway;
use delivery_hook::policy::{self, Environment};
use delivery_hook::store::Store;
use poem::EndpointExt;
use poem::endpoint::BoxEndpoint;
use poem::test::{TestClient, TestResponse};
use serde_json::Value;

pub use fake_engine::FakeEngine;

pub const BILLING: &str = "billing-secret-0123456789";
pub const BILLING_NEXT: &str = "billing-next-0123456789";
pub const SHOP: &str = "shop-secret-0123456789ab";

/// Whether the tests run in CI: `CI` set to anything but empty, `false`
/// or `0`. There, a test that cannot run fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A test that cannot run here says why and skips; in CI, it fails.
pub fn skip(why: &str) {
    assert!(!in_ci(), "CI is set, but this test cannot run: {why}");
    eprintln!("skipping: {why}");
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn sign(secret: &str, message: &[u8], timestamp: &str) -> String {
    hex::encode(SigningKey::new(secret.as_bytes()).sign(message, timestamp))
}

/// The seed README's signing pipeline, run by bash and openssl as a pipeline would.
pub fn openssl_signature(secret: &str, payload: &str, timestamp: &str) -> String {
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"MESSAGE="${PAYLOAD}${TIMESTAMP}"; echo -n "$MESSAGE" | openssl dgst -sha256 -hmac "$SECRET_KEY" | cut -d " " -f 2"#)
        .env("PAYLOAD", payload)
        .env("TIMESTAMP", timestamp)
        .env("SECRET_KEY", secret)
        .output()
        .expect("bash and openssl run");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

pub fn body_for(name: &str) -> String {
    format!(r#"{{"container_name": "{name}"}}"#)
}

pub use tempfile::TempDir;

/// A directory removed when dropped, named for the test that made it.
pub fn temp_dir(tag: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("dh-{tag}-"))
        .tempdir()
        .unwrap()
}

/// The test policies' environment: `LATER_SECRET`, and what tests set
/// with [`set_var`] (each test under names of its own).
struct NoEnv;

/// The value of `LATER_SECRET` in the test environment.
pub const LATER_SECRET: &str = "later-secret-0123456789abcd";

fn test_vars() -> &'static std::sync::Mutex<std::collections::HashMap<String, String>> {
    static VARS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        std::sync::OnceLock::new();
    VARS.get_or_init(Default::default)
}

/// Sets a variable of the test policies' environment (not the process's).
pub fn set_var(name: &str, value: &str) {
    test_vars()
        .lock()
        .unwrap()
        .insert(name.to_string(), value.to_string());
}

impl Environment for NoEnv {
    fn var(&self, name: &str) -> Option<String> {
        if name == "LATER_SECRET" {
            return Some(LATER_SECRET.to_string());
        }
        test_vars().lock().unwrap().get(name).cloned()
    }
    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// The web page's viewers' tokens: alice sees billing, bob sees shop.
pub const ALICE: &str = "alice-token-0123456789";
pub const BOB: &str = "bob-token-0123456789abcd";

/// `[server]` lines that turn the web page on for alice and bob; three
/// failed sign-ins throttle.
pub fn ui_server(insecure_cookies: bool) -> String {
    set_var("UI_ALICE", ALICE);
    set_var("UI_BOB", BOB);
    format!(
        r#"public_url = "https://deploy.example.com"
auth_failure_limit = 3
[server.ui]
enabled = true
insecure_cookies = {insecure_cookies}
[[server.ui.viewers]]
name = "alice"
token_env = "UI_ALICE"
projects = ["bill*"]
[[server.ui.viewers]]
name = "bob"
token_env = "UI_BOB"
projects = ["shop"]
"#
    )
}

/// Compose labels for a service whose files live under `dir`.
pub fn compose_labels(project: &str, service: &str, dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("com.docker.compose.project", project.to_string()),
        ("com.docker.compose.service", service.to_string()),
        (
            "com.docker.compose.project.working_dir",
            dir.display().to_string(),
        ),
        (
            "com.docker.compose.project.config_files",
            dir.join("compose.yml").display().to_string(),
        ),
    ]
}

/// The policy every in-process test starts from; `extra_server` goes into [server].
pub fn policy_text(root: &Path, extra_server: &str) -> String {
    format!(
        r#"
[server]
max_body_bytes = 1024
max_wait_secs = 30
request_timeout_secs = 2
state_dir = "{state}"
{extra_server}

[docker]
max_parallel_jobs = 2
job_timeout_secs = 30

[projects.billing]
secrets = ["{BILLING}", "{BILLING_NEXT}"]
containers = ["billing-*", "!billing-db"]
actions = ["pull"]
compose_files = ["{root}/billing/**"]

[projects.shop]
secrets = ["{SHOP}"]
containers = ["shop-*"]
actions = ["pull", "build"]
compose_projects = ["shop"]
images = ["127.0.0.1:5000/shop/*"]
rollback = false
services = ["shop_*"]
"#,
        state = root.join("state").display(),
        root = root.display(),
    )
}

/// The real gateway over a fake engine with the test containers, and the
/// directory holding their compose files and the job store.
pub async fn gateway_over_fake(extra_server: &str) -> (Arc<Gateway>, Arc<FakeEngine>, TempDir) {
    gateway_over_fake_with(extra_server, "").await
}

/// As [`gateway_over_fake`], with `docker` lines replacing the test
/// policy's `job_timeout_secs` when given.
pub async fn gateway_over_fake_with(
    extra_server: &str,
    docker: &str,
) -> (Arc<Gateway>, Arc<FakeEngine>, TempDir) {
    let root = temp_dir("http");
    let (gateway, engine) =
        gateway_in(root.path(), extra_server, docker, "", Clock::system()).await;
    (gateway, engine, root)
}

/// The gateway over a fake engine whose containers' files are under
/// `root`, with `tail` appended to the test policy. Built again over the
/// same `root`, it is the same gateway restarted: same files, same store.
pub async fn gateway_in(
    root: &Path,
    extra_server: &str,
    docker: &str,
    tail: &str,
    clock: Clock,
) -> (Arc<Gateway>, Arc<FakeEngine>) {
    let engine = Arc::new(FakeEngine::new());
    for (name, project, service, dir) in [
        ("billing-web", "billing", "web", "billing"),
        ("billing-worker", "billing", "worker", "billing"),
        ("billing-db", "billing", "db", "billing"),
        ("billing-outside", "elsewhere", "web", "elsewhere"),
        ("shop-web", "shop", "web", "shop"),
    ] {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("compose.yml"), "services: {}\n").unwrap();
        engine.add(name, &compose_labels(project, service, &dir));
    }
    // Compose project "billing", but a shop container name.
    engine.add(
        "shop-foreign",
        &compose_labels("billing", "web", &root.join("billing")),
    );
    // Its image sets a compose label: an env file of another team.
    let elsewhere = root.join("elsewhere");
    engine.add_with_image(
        "billing-imagelabel",
        &compose_labels("billing", "img", &root.join("billing")),
        &[(
            "com.docker.compose.project.environment_file",
            elsewhere.join(".env").display().to_string(),
        )],
    );
    // Its project directory's implicit .env leads into another team's files.
    let leaky = root.join("billing/leaky");
    std::fs::create_dir_all(&leaky).unwrap();
    std::fs::write(leaky.join("compose.yml"), "services: {}\n").unwrap();
    std::fs::write(elsewhere.join(".env"), "TAG=theirs\n").unwrap();
    if !leaky.join(".env").exists() {
        std::os::unix::fs::symlink(elsewhere.join(".env"), leaky.join(".env")).unwrap();
    }
    engine.add("billing-leaky", &compose_labels("billing", "leaky", &leaky));
    engine.add("billing-plain", &[]);
    let hidden = root.join("billing/not-mounted");
    engine.add(
        "billing-hidden",
        &compose_labels("billing", "hidden", &hidden),
    );
    let policy = test_policy(root, extra_server, docker, tail);
    let store = Store::open(&policy.server.state_dir).unwrap();
    let gateway = delivery_hook::serve::build_gateway(policy, engine.clone(), store, clock)
        .await
        .unwrap();
    (gateway, engine)
}

/// The test policy over `root`, with `[server]` lines, `[docker]` lines in
/// place of its job timeout, and `tail` appended.
fn test_policy(root: &Path, extra_server: &str, docker: &str, tail: &str) -> policy::Policy {
    parse_test_policy(root, &test_policy_text(root, extra_server, docker, tail))
}

fn test_policy_text(root: &Path, extra_server: &str, docker: &str, tail: &str) -> String {
    let mut text = policy_text(root, extra_server);
    if !docker.is_empty() {
        text = text.replace("job_timeout_secs = 30", docker);
    }
    text.push_str(tail);
    text
}

fn parse_test_policy(root: &Path, text: &str) -> policy::Policy {
    policy::parse(text, &root.join("delivery.toml"), &NoEnv)
        .unwrap_or_else(|e| panic!("test policy: {e}"))
        .policy
}

/// The real application over a fake engine, driven without a socket.
pub struct Harness {
    pub client: TestClient<BoxEndpoint<'static>>,
    pub engine: Arc<FakeEngine>,
    pub gateway: Arc<Gateway>,
    /// The gateway's clock, which a test moves forward instead of waiting.
    pub clock: Clock,
    /// `[server]` lines, `[docker]` lines and the tail it was built with.
    policy: (String, String, String),
    _root: TempDir,
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_server("").await
    }

    pub async fn with_server(extra_server: &str) -> Self {
        Self::build(extra_server, "").await
    }

    /// With `docker` lines in place of the policy's job timeout.
    pub async fn with_docker(docker: &str) -> Self {
        Self::build("", docker).await
    }

    async fn build(extra_server: &str, docker: &str) -> Self {
        Self::in_dir(temp_dir("http"), extra_server, docker, "").await
    }

    /// With `[server]` lines, and `tail` appended to the test policy (more
    /// projects or rules).
    pub async fn with_policy(extra_server: &str, tail: &str) -> Self {
        Self::in_dir(temp_dir("http"), extra_server, "", tail).await
    }

    async fn in_dir(root: TempDir, extra_server: &str, docker: &str, tail: &str) -> Self {
        let clock = Clock::manual();
        let (gateway, engine) =
            gateway_in(root.path(), extra_server, docker, tail, clock.clone()).await;
        let app = delivery_hook::api::app(gateway.clone())
            .map_to_response()
            .boxed();
        Self {
            client: TestClient::new(app),
            engine,
            gateway,
            clock,
            policy: (extra_server.into(), docker.into(), tail.into()),
            _root: root,
        }
    }

    /// The gateway stopped and started again over the same files and
    /// store; the fake engine is a new one, with nothing run yet.
    pub async fn restart(self) -> Self {
        let Self {
            gateway,
            client,
            policy: (extra_server, docker, tail),
            _root: root,
            ..
        } = self;
        drop(client);
        gateway
            .jobs()
            .shutdown(std::time::Duration::from_secs(5))
            .await;
        drop(gateway);
        Self::in_dir(root, &extra_server, &docker, &tail).await
    }

    /// The directory of the test's compose files and store.
    pub fn root(&self) -> &Path {
        self._root.path()
    }

    /// Swaps in the test policy with `tail` appended in place of the one
    /// the harness was built with, as a reload does.
    pub fn reload_with_tail(&self, tail: &str) {
        let (extra_server, docker, _) = &self.policy;
        let policy = test_policy(self._root.path(), extra_server, docker, tail);
        self.gateway.replace_policy(policy);
    }

    /// Swaps in the harness's policy as `edit` rewrites its text, as a
    /// reload does.
    pub fn reload_edited(&self, edit: impl FnOnce(String) -> String) {
        let (extra_server, docker, tail) = &self.policy;
        let root = self._root.path();
        let text = edit(test_policy_text(root, extra_server, docker, tail));
        self.gateway.replace_policy(parse_test_policy(root, &text));
    }

    /// POSTs `body` to `path`, signed with `secret` at `timestamp`.
    pub async fn post_signed(
        &self,
        path: &str,
        body: &str,
        secret: &str,
        timestamp: u64,
        project: Option<&str>,
    ) -> TestResponse {
        let ts = timestamp.to_string();
        let mut request = self
            .client
            .post(path)
            .content_type("application/json")
            .header("X-Timestamp", &ts)
            .header("X-Signature", sign(secret, body.as_bytes(), &ts));
        if let Some(project) = project {
            request = request.header("X-Project", project);
        }
        request.body(body.to_string()).send().await
    }

    pub async fn deploy(&self, path: &str, container: &str, secret: &str) -> TestResponse {
        self.post_signed(path, &body_for(container), secret, now(), None)
            .await
    }

    /// GETs `target` signed for `project`.
    pub async fn get_signed(&self, target: &str, secret: &str, project: &str) -> TestResponse {
        let ts = now().to_string();
        self.client
            .get(target)
            .header("X-Timestamp", &ts)
            .header("X-Signature", sign(secret, target.as_bytes(), &ts))
            .header("X-Project", project)
            .send()
            .await
    }
}

/// Status and parsed JSON body of a response.
pub async fn status_json(response: TestResponse) -> (u16, Value) {
    let status = response.0.status().as_u16();
    let bytes = response.0.into_body().into_bytes().await.unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

/// Asserts a problem document with this status and code, and returns it.
pub async fn expect_problem(response: TestResponse, status: u16, code: &str) -> Value {
    let content_type = response
        .0
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let (got, body) = status_json(response).await;
    assert_eq!(
        (got, body["code"].as_str()),
        (status, Some(code)),
        "body: {body}"
    );
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(body["status"], status);
    body
}

/// What the code under test logs on this thread while the guard lives, as
/// text lines (an in-process test's gateway runs its tasks on the test's
/// own thread).
pub struct CapturedLogs {
    lines: Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl CapturedLogs {
    pub fn start() -> Self {
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .finish();
        CapturedLogs {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lines.lock().unwrap()).into_owned()
    }
}

struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A poem app serving on a free 127.0.0.1 port from a thread of its own,
/// so a test that blocks on a child process does not stall it; stops when
/// dropped.
pub struct Served {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Serves the endpoint `app` makes for its own URL.
    pub fn start<E: poem::Endpoint + 'static>(
        app: impl FnOnce(&str) -> E + Send + 'static,
    ) -> Self {
        use poem::listener::{Acceptor, Listener, TcpListener};
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, url) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let acceptor = TcpListener::bind("127.0.0.1:0")
                    .into_acceptor()
                    .await
                    .unwrap();
                let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
                let url = format!("http://127.0.0.1:{}", addr.port());
                let endpoint = app(&url);
                ready.send(url).unwrap();
                let _ = poem::Server::new_with_acceptor(acceptor)
                    .run_with_graceful_shutdown(
                        endpoint,
                        async {
                            let _ = stopped.await;
                        },
                        None,
                    )
                    .await;
            });
        });
        Self {
            url: url.recv().unwrap(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The value of the sample `name` with `labels` in a scrape of `/metrics`.
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

pub fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text")
}

/// The value of `name` with `labels` that the harness's `/metrics` shows now.
pub async fn metric(h: &Harness, name: &str, labels: &[(&str, &str)]) -> f64 {
    let response = h.client.get("/metrics").send().await;
    let text = response.0.into_body().into_string().await.unwrap();
    sample(&parse_metrics(&text), name, labels)
}

/// Whether `program` runs with `args` and exits 0, its output discarded:
/// how a test learns that a tool it needs is installed.
pub fn runs(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits (in real time, at most 10 s) until `condition` holds, for what
/// other tasks of the test's runtime do meanwhile.
pub async fn soon(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The gateway binary serving a policy, its stderr in `log`; killed when
/// dropped.
pub struct GatewayBinary {
    pub child: std::process::Child,
    pub port: u16,
    pub log: std::path::PathBuf,
}

impl GatewayBinary {
    /// `delivery-hook serve` with the policy `text` written into `dir`
    /// (listening on `port`), more `args`, and more `env`; returns once
    /// `/healthz` answers.
    pub fn start(dir: &Path, text: &str, args: &[&str], port: u16, env: &[(&str, &str)]) -> Self {
        let file = dir.join("delivery.toml");
        std::fs::write(&file, text).unwrap();
        let log = dir.join("gateway.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_delivery-hook"))
            .args(["serve", "--config"])
            .arg(&file)
            .args(args)
            .env_remove("DELIVERY_LISTEN")
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let g = Self { child, port, log };
        crate::e2e::wait_for_http("the gateway", &format!("http://127.0.0.1:{port}/healthz"));
        g
    }
}

impl Drop for GatewayBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
