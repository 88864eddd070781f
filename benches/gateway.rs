//! The benchmark program: starts the real gateway binary and prints a table
//! of figures, each beside a ceiling or baseline measured by the same
//! harness in the same run, so the figures hold on a noisy machine.
//!
//!     cargo bench --bench gateway
//!
//! The gateway (and the ceiling server) run pinned to core 0; this program,
//! the load generator, pins itself to core 1 and keeps HTTP/1.1 connections
//! alive. It signs every request itself. It exits non-zero when a target is
//! missed. Rows that need the Docker engine say so when there is none.

/// The ceilings run in this program: they allocate as the gateway does.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use delivery_hook::auth::signature::SigningKey;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// The tests' token signing; the benchmark signs with some of its keys only.
#[allow(dead_code)]
#[path = "../tests/it/support/jwt.rs"]
mod jwt;
use tokio::net::{TcpSocket, TcpStream};

const GATEWAY: &str = env!("CARGO_BIN_EXE_delivery-hook");
const SECRET: &str = "bench-secret-0123456789abcdef";
const WRONG: &str = "wrong-secret-0123456789abcdef";
const CONNECTIONS: usize = 32;

/// Builds the `i`-th request's bytes.
type MakeRequest = Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>;
const RUN: Duration = Duration::from_secs(6);
/// Rounds the gateway and its ceiling alternate in.
const ROUNDS: u32 = 6;

// ---------------------------------------------------------------- plumbing

fn pin_to(core: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn pinned(command: &mut Command, core: usize) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: sched_setaffinity is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            pin_to(core);
            Ok(())
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dh-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_healthy(addr: SocketAddr, child: &mut Child, log: Option<&Path>) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            if let Ok((200, _)) =
                exchange(&mut s, b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n").await
            {
                return started.elapsed();
            }
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || started.elapsed() > Duration::from_secs(30) {
            let text = log
                .and_then(|l| std::fs::read_to_string(l).ok())
                .unwrap_or_default();
            panic!("the server did not start ({exited:?}):\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Another build of the gateway (`BENCH_BASELINE=PATH`), measured beside
/// this one in the same rounds: its size, idle memory and refusals.
fn baseline() -> Option<PathBuf> {
    std::env::var_os("BENCH_BASELINE").map(PathBuf::from)
}

/// Starts the gateway on a policy; returns it and its time to the first 200.
async fn start_gateway(dir: &Path, extra: &str, projects: &str) -> (Server, Duration) {
    start_build(Path::new(GATEWAY), dir, extra, projects).await
}

/// Starts the build at `binary`, as [`start_gateway`] does.
async fn start_build(binary: &Path, dir: &Path, extra: &str, projects: &str) -> (Server, Duration) {
    let port = free_port();
    let policy = dir.join("delivery.toml");
    std::fs::write(
        &policy,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\n{extra}\n{projects}"
        ),
    )
    .unwrap();
    let log = dir.join("gateway.log");
    let mut child = pinned(
        Command::new(binary)
            .args(["serve", "--config"])
            .arg(&policy),
        0,
    )
    .env("BENCH_SECRET", SECRET)
    .env_remove("DELIVERY_LISTEN")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .expect("the gateway starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let took = wait_healthy(addr, &mut child, Some(&log)).await;
    // The gateway looks for its compose tool once at startup (a process or
    // two); measure after that, not during it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("compose tool") || text.contains("no compose tool") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (Server { child, addr }, took)
}

const BENCH_PROJECT: &str = "[projects.bench]\nsecrets = [\"env:BENCH_SECRET\"]\ncontainers = [\"dhbench-*\"]\nactions = [\"pull\", \"build\"]\n";

// ------------------------------------------------------------- HTTP client

async fn exchange(stream: &mut TcpStream, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    stream.write_all(request).await?;
    let mut data = Vec::with_capacity(1024);
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&data[..end]).unwrap_or("");
            let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let l = l.to_ascii_lowercase();
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while data.len() < end + 4 + length {
                let n = stream.read(&mut buffer).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                data.extend_from_slice(&buffer[..n]);
            }
            return Ok((status, data[end + 4..end + 4 + length].to_vec()));
        }
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buffer[..n]);
    }
}

fn signed_post(path: &str, body: &str, key: &SigningKey, project: Option<&str>) -> Vec<u8> {
    let ts = now().to_string();
    let signature = hex::encode(key.sign(body.as_bytes(), &ts));
    let project = project
        .map(|p| format!("X-Project: {p}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Timestamp: {ts}\r\nX-Signature: {signature}\r\n{project}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Latencies in microseconds and the statuses seen.
#[derive(Default)]
struct Load {
    latencies: Vec<u32>,
    statuses: HashMap<u16, u64>,
    elapsed: Duration,
}

impl Load {
    fn absorb(&mut self, other: Load) {
        self.latencies.extend(other.latencies);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.elapsed += other.elapsed;
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&mut self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies[i]) / 1000.0
    }
}

/// Runs `connections` keep-alive connections until `until` or `limit`
/// requests, each request built by `make(i)`.
async fn load(
    addr: SocketAddr,
    source: &str,
    connections: usize,
    until: Duration,
    limit: u64,
    make: MakeRequest,
) -> Load {
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (make, counter, source) = (make.clone(), counter.clone(), source.to_string());
        tasks.push(tokio::spawn(async move {
            let mut out = Load::default();
            let mut stream: Option<TcpStream> = None;
            loop {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if i >= limit || started.elapsed() >= until {
                    return out;
                }
                let request = make(i);
                if stream.is_none() {
                    let socket = TcpSocket::new_v4().unwrap();
                    socket
                        .bind(SocketAddr::new(source.parse().unwrap(), 0))
                        .unwrap();
                    stream = socket.connect(addr).await.ok();
                }
                let Some(s) = stream.as_mut() else { continue };
                let sent = Instant::now();
                match exchange(s, &request).await {
                    Ok((status, _)) => {
                        out.latencies.push(sent.elapsed().as_micros() as u32);
                        *out.statuses.entry(status).or_default() += 1;
                    }
                    Err(_) => stream = None,
                }
            }
        }));
    }
    let mut all = Load::default();
    for task in tasks {
        all.absorb(task.await.unwrap());
    }
    all.elapsed = started.elapsed();
    all
}

/// Warms each target, then alternates short rounds among them, so that
/// whatever else the machine does falls on all alike; each target's load
/// goes into its `Load`.
async fn alternate(targets: &mut [(&str, SocketAddr, MakeRequest, Load)]) {
    for (_, addr, make, _) in targets.iter() {
        load(
            *addr,
            "127.0.0.1",
            CONNECTIONS,
            Duration::from_secs(1),
            u64::MAX,
            make.clone(),
        )
        .await;
    }
    for _ in 0..ROUNDS {
        for (_, addr, make, into) in targets.iter_mut() {
            let round = load(
                *addr,
                "127.0.0.1",
                CONNECTIONS,
                RUN / ROUNDS,
                u64::MAX,
                make.clone(),
            )
            .await;
            into.absorb(round);
        }
    }
}

// ------------------------------------------------------- the ceiling server

/// adnanh/webhook on a free port, with one hook `pull` whose rule is a
/// `payload-hmac-sha256` match on `X-Signature`, answering 401 on a
/// mismatch; pinned to the gateway's core. `None` when it is not installed.
async fn webhook_server(dir: &Path) -> Option<Server> {
    let binary = ["/usr/bin/webhook", "/usr/local/bin/webhook"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let hooks = dir.join("hooks.json");
    std::fs::write(
        &hooks,
        format!(
            r#"[{{"id": "pull", "execute-command": "/bin/true",
                 "trigger-rule-mismatch-http-response-code": 401,
                 "trigger-rule": {{"match": {{"type": "payload-hmac-sha256", "secret": "{SECRET}",
                     "parameter": {{"source": "header", "name": "X-Signature"}}}}}}}}]"#
        ),
    )
    .unwrap();
    let port = free_port();
    let child = pinned(
        Command::new(binary).arg("-hooks").arg(&hooks).args([
            "-ip",
            "127.0.0.1",
            "-port",
            &port.to_string(),
        ]),
        0,
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .ok()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "webhook did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Some(Server { child, addr })
}

/// A ceiling behind the same accept loop: `bare`, a poem handler that answers
/// 401 without reading anything; or `fair`, a poem-openapi operation that
/// reads the body, computes one HMAC-SHA256 over it and answers a 401
/// problem document (the least any signed endpoint must do to refuse).
fn ceiling_server(port: u16, fair: bool) -> ExitCode {
    use poem::{EndpointExt, Route, handler, post};
    #[handler]
    fn refuse() -> poem::Response {
        poem::Response::builder()
            .status(poem::http::StatusCode::UNAUTHORIZED)
            .content_type("application/problem+json")
            .body(r#"{"code":"signature_mismatch"}"#)
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let route = Route::new().at("/healthz", poem::get(refuse_ok));
        let app = if fair {
            route
                .nest("/", poem_openapi::OpenApiService::new(FairApi, "fair", "1"))
                .boxed()
        } else {
            route.at("/pull", post(refuse)).boxed()
        };
        use delivery_hook::api::server::{ConnectionLimits, PerConnection, ServerLimits};
        let limits = ServerLimits {
            max_connections: 1024,
            per_connection: PerConnection::Fixed(ConnectionLimits {
                max_connections_per_address: 1024,
                proxies: Vec::new(),
                header_timeout: Duration::from_secs(10),
            }),
            drain: Duration::from_secs(1),
        };
        delivery_hook::api::server::accept_loop(listener, app, limits, std::future::pending())
            .await
            .unwrap();
    });
    ExitCode::SUCCESS
}

struct FairApi;

#[derive(poem_openapi::ApiResponse)]
enum FairResponse {
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(poem_openapi::payload::Binary<Vec<u8>>),
}

#[poem_openapi::OpenApi]
impl FairApi {
    #[oai(path = "/pull", method = "post")]
    async fn pull(
        &self,
        #[oai(name = "X-Timestamp")] timestamp: poem_openapi::param::Header<String>,
        body: poem_openapi::payload::Binary<Vec<u8>>,
    ) -> FairResponse {
        let key = SigningKey::new(SECRET.as_bytes());
        let mac = key.sign(&body.0, &timestamp.0);
        std::hint::black_box(mac);
        let problem = delivery_hook::api::Problem::new(
            delivery_hook::gateway::Code::SignatureMismatch,
            "the signature does not match",
        );
        FairResponse::Unauthorized(poem_openapi::payload::Binary(
            serde_json::to_vec(&problem).unwrap(),
        ))
    }
}

#[poem::handler]
fn refuse_ok() -> &'static str {
    "ok"
}

// ------------------------------------------------------------ the fixtures

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn compose_tool() -> Vec<String> {
    if run("docker", &["compose", "version"]).is_ok() {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

/// A compose project with one service pulled from a local registry.
struct DockerFixture {
    dir: PathBuf,
    registry: Child,
    /// The service's image reference, in the local registry.
    image: String,
    project: String,
    files: Vec<String>,
    pub container: String,
}

impl DockerFixture {
    fn new() -> Result<Self, String> {
        run("docker", &["version", "--format", "{{.Server.Version}}"])?;
        let dir = temp_dir("docker");
        let port = free_port();
        std::fs::write(
            dir.join("registry.yml"),
            format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n", dir.join("data").display()),
        )
        .unwrap();
        let registry = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("registry.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("docker-registry: {e}"))?;
        let ctx = dir.join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::copy("/bin/busybox", ctx.join("busybox"))
            .map_err(|e| format!("/bin/busybox: {e}"))?;
        std::fs::write(ctx.join("index.html"), "bench").unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY index.html /www/index.html\nLABEL dh.bench=1\nENTRYPOINT [\"/bin/busybox\"]\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        )
        .unwrap();
        let image = format!("127.0.0.1:{port}/dhbench/web:latest");
        run(
            "docker",
            &["build", "-q", "-t", &image, &ctx.display().to_string()],
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while run("docker", &["push", "-q", &image]).is_err() {
            if Instant::now() > deadline {
                return Err("cannot push to the local registry".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let app = dir.join("app");
        std::fs::create_dir_all(&app).unwrap();
        let file = app.join("compose.yml");
        std::fs::write(
            &file,
            format!("services:\n  web:\n    image: {image}\n    container_name: dhbench-web\n    stop_signal: SIGKILL\n    labels:\n      dh.bench: \"1\"\n"),
        )
        .unwrap();
        let fixture = Self {
            dir,
            registry,
            image: image.clone(),
            project: "dhbench".into(),
            files: vec![file.display().to_string()],
            container: "dhbench-web".into(),
        };
        fixture.compose(&["up", "-d", "--", "web"])?;
        Ok(fixture)
    }

    fn compose(&self, args: &[&str]) -> Result<(), String> {
        let tool = compose_tool();
        let mut argv: Vec<String> = tool[1..].to_vec();
        argv.push(format!("--project-name={}", self.project));
        argv.extend(self.files.iter().map(|f| format!("--file={f}")));
        argv.push(format!(
            "--project-directory={}",
            self.dir.join("app").display()
        ));
        argv.extend(args.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        run(&tool[0], &argv).map(drop)
    }
}

impl Drop for DockerFixture {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "--volumes"]);
        if let Ok(images) = run("docker", &["images", "-q", "--filter", "label=dh.bench=1"]) {
            for id in images.split_whitespace() {
                let _ = run("docker", &["rmi", "-f", id]);
            }
        }
        let _ = self.registry.kill();
        let _ = self.registry.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------------ table

struct Row {
    what: String,
    figure: String,
    target: String,
    met: Option<bool>,
}

struct Table(Vec<Row>);

impl Table {
    fn add(&mut self, what: &str, figure: String, target: &str, met: Option<bool>) {
        println!("  {what}: {figure}");
        let _ = std::io::stdout().flush();
        self.0.push(Row {
            what: what.into(),
            figure,
            target: target.into(),
            met,
        });
    }

    fn print(&self) -> bool {
        println!("\n| measure | figure | target | |");
        println!("|---|---|---|---|");
        let mut ok = true;
        for r in &self.0 {
            let mark = match r.met {
                Some(true) => "met",
                Some(false) => {
                    ok = false;
                    "MISSED"
                }
                None => "",
            };
            println!("| {} | {} | {} | {mark} |", r.what, r.figure, r.target);
        }
        ok
    }
}

// ------------------------------------------------------------ the measures

/// 1. Rejected requests against the bare-handler ceiling.
async fn rejected(table: &mut Table) -> u32 {
    let dir = temp_dir("rejected");
    let (gateway, _) = start_gateway(&dir, "auth_failure_limit = 1000000", BENCH_PROJECT).await;
    let ceiling_of = |kind: &str| {
        let port = free_port();
        Server {
            child: pinned(
                Command::new(std::env::current_exe().unwrap()).args([
                    "--ceiling-server",
                    &port.to_string(),
                    kind,
                ]),
                0,
            )
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        }
    };
    let mut ceiling = ceiling_of("bare");
    wait_healthy(ceiling.addr, &mut ceiling.child, None).await;
    let mut fair = ceiling_of("fair");
    wait_healthy(fair.addr, &mut fair.child, None).await;
    let webhook = webhook_server(&dir).await;
    let other_dir = temp_dir("rejected-baseline");
    let mut other = None;
    if let Some(binary) = baseline() {
        let extra = "auth_failure_limit = 1000000";
        other = Some(
            start_build(&binary, &other_dir, extra, BENCH_PROJECT)
                .await
                .0,
        );
    }
    let wrong = SigningKey::new(WRONG.as_bytes());
    let request = move |path: &'static str| -> MakeRequest {
        let wrong = wrong.clone();
        Arc::new(move |i| {
            signed_post(
                path,
                &format!("{{\"container_name\": \"dhbench-web\", \"n\": {i}}}"),
                &wrong,
                None,
            )
        })
    };
    let make = request("/pull");
    // Each server, its requests, and its load so far.
    let mut targets: Vec<(&str, SocketAddr, MakeRequest, Load)> = vec![
        ("bare", ceiling.addr, make.clone(), Load::default()),
        ("fair", fair.addr, make.clone(), Load::default()),
        ("gateway", gateway.addr, make.clone(), Load::default()),
    ];
    if let Some(other) = &other {
        targets.push(("baseline", other.addr, make.clone(), Load::default()));
    }
    if let Some(webhook) = &webhook {
        targets.push((
            "webhook",
            webhook.addr,
            request("/hooks/pull"),
            Load::default(),
        ));
    }
    alternate(&mut targets).await;
    let mut by_name: HashMap<&str, Load> = targets
        .into_iter()
        .map(|(name, _, _, l)| (name, l))
        .collect();
    let mut ours = by_name.remove("gateway").unwrap();
    let mut bare = by_name.remove("bare").unwrap();
    let fair_load = by_name.remove("fair").unwrap();
    for (name, l) in [("gateway", &ours), ("fair", &fair_load)] {
        assert_eq!(
            l.statuses.keys().copied().collect::<Vec<_>>(),
            vec![401],
            "{name}: {:?}",
            l.statuses
        );
    }
    // webhook reports a signature that does not match as an error evaluating
    // its rules: 500, not its configured mismatch status.
    if let Some(hooks) = by_name.get("webhook") {
        assert!(
            hooks.statuses.keys().all(|s| matches!(s, 401 | 500)),
            "webhook: {:?}",
            hooks.statuses
        );
    }
    let share = ours.rate() / bare.rate();
    table.add(
        "rejected requests (bad signature), vs a bare poem 401 handler",
        format!(
            "{:.0} req/s vs {:.0} req/s ({:.0}%)",
            ours.rate(),
            bare.rate(),
            share * 100.0
        ),
        "",
        None,
    );
    let fair_share = ours.rate() / fair_load.rate();
    table.add(
        "rejected requests, vs a fair ceiling (poem-openapi operation: read the body, one HMAC, a 401 problem document)",
        format!(
            "{:.0} req/s vs {:.0} req/s ({:.0}%)",
            ours.rate(),
            fair_load.rate(),
            fair_share * 100.0
        ),
        ">= 85% of the fair ceiling",
        Some(fair_share >= 0.85),
    );
    if let Some(other) = by_name.get("baseline") {
        table.add(
            "rejected requests vs the fair ceiling, this build and the baseline (BENCH_BASELINE), in the same rounds",
            format!(
                "{:.0}% vs {:.0}% ({:.0} vs {:.0} req/s)",
                fair_share * 100.0,
                other.rate() / fair_load.rate() * 100.0,
                ours.rate(),
                other.rate()
            ),
            "",
            None,
        );
    }
    match by_name.get("webhook") {
        Some(hooks) => {
            let times = ours.rate() / hooks.rate();
            table.add(
                "rejected requests, vs adnanh/webhook (payload-hmac-sha256 rule; it answers 500)",
                format!(
                    "{:.0} req/s vs {:.0} req/s ({times:.2}x)",
                    ours.rate(),
                    hooks.rate()
                ),
                ">= 2x webhook",
                Some(times >= 2.0),
            );
        }
        None => table.add(
            "rejected requests, vs adnanh/webhook",
            "not measured: no `webhook` binary (Debian package webhook)".to_string(),
            ">= 2x webhook",
            None,
        ),
    }
    table.add(
        "rejected requests, latency p50 / p99",
        format!(
            "{:.2} / {:.2} ms (bare ceiling {:.2} / {:.2} ms), {CONNECTIONS} connections",
            ours.percentile(0.5),
            ours.percentile(0.99),
            bare.percentile(0.5),
            bare.percentile(0.99)
        ),
        "",
        None,
    );
    drop((ceiling, fair, webhook, other));
    let _ = std::fs::remove_dir_all(&other_dir);
    let requests = ours.latencies.len() + 2 * CONNECTIONS;
    // Memory after at least 100,000 requests.
    let sent = requests as u64;
    if sent < 100_000 {
        load(
            gateway.addr,
            "127.0.0.1",
            CONNECTIONS,
            Duration::from_secs(60),
            100_000 - sent,
            make,
        )
        .await;
    }
    let rss = rss_kib(gateway.child.id());
    table.add(
        "RSS after 100,000 requests",
        format!("{:.1} MB", rss as f64 / 1024.0),
        "",
        None,
    );
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
    rss as u32
}

/// 4 and 6: idle memory, binary size, cold start.
async fn basics(table: &mut Table) {
    let (size, starts, idle) = size_start_idle(Path::new(GATEWAY)).await;
    table.add(
        "binary size (release, stripped)",
        format!("{:.1} MB", size as f64 / 1e6),
        "",
        None,
    );
    table.add(
        "cold start to first 200 from /healthz (median of 5)",
        format!("{:.1} ms", starts.as_secs_f64() * 1000.0),
        "",
        None,
    );
    table.add(
        "RSS idle (median of 5 starts)",
        format!("{:.1} MB", idle as f64 / 1024.0),
        "< 10 MB",
        Some(idle < 10 * 1024),
    );
    if let Some(other) = baseline() {
        let (size, starts, idle) = size_start_idle(&other).await;
        table.add(
            "baseline (BENCH_BASELINE): binary size, cold start, RSS idle",
            format!(
                "{:.1} MB, {:.1} ms, {:.1} MB",
                size as f64 / 1e6,
                starts.as_secs_f64() * 1000.0,
                idle as f64 / 1024.0
            ),
            "",
            None,
        );
    }
}

/// A build's file size, and the medians of five starts' time to the first
/// 200 and idle RSS (KiB).
async fn size_start_idle(binary: &Path) -> (u64, Duration, u64) {
    let size = std::fs::metadata(binary).map(|m| m.len()).unwrap_or(0);
    let dir = temp_dir("basics");
    let mut starts = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..5 {
        let (gateway, took) = start_build(binary, &dir, "", BENCH_PROJECT).await;
        starts.push(took);
        tokio::time::sleep(Duration::from_millis(300)).await;
        idle.push(rss_kib(gateway.child.id()));
    }
    starts.sort();
    idle.sort();
    let _ = std::fs::remove_dir_all(&dir);
    (size, starts[2], idle[2])
}

fn policy_with(projects: usize) -> String {
    let mut text = String::with_capacity(projects * 200);
    for p in 0..projects {
        text.push_str(&format!(
            "[projects.team{p}]\nsecrets = [\"team-{p}-secret-0123456789abcdef\"]\ncontainers = [{}]\nactions = [\"pull\"]\n",
            (0..10).map(|c| format!("\"team{p}-svc{c}-*\"")).collect::<Vec<_>>().join(", ")
        ));
    }
    text
}

struct NoEnv;

impl delivery_hook::policy::Environment for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn read_file(&self, p: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(p)
    }
}

type PolicyRequest = (
    delivery_hook::names::ContainerName,
    Vec<u8>,
    String,
    [u8; 32],
);

/// Requests without X-Project for names of the given projects, signed right.
fn policy_requests(owners: impl Iterator<Item = usize>) -> Vec<PolicyRequest> {
    owners
        .enumerate()
        .map(|(i, p)| {
            let name =
                delivery_hook::names::ContainerName::parse(&format!("team{p}-svc{}-web", i % 10))
                    .unwrap();
            let body = format!("{{\"container_name\": \"{name}\"}}").into_bytes();
            let ts = "1700000000".to_string();
            let key = SigningKey::new(format!("team-{p}-secret-0123456789abcdef").as_bytes());
            let sig = key.sign(&body, &ts);
            (name, body, ts, sig)
        })
        .collect()
}

/// Mean time of candidate selection, MAC verification and authorisation.
fn policy_cost(policy: &delivery_hook::policy::Policy, requests: &[PolicyRequest]) -> Duration {
    use delivery_hook::names::Action;
    let rounds = 20;
    let started = Instant::now();
    let mut ok = 0;
    for _ in 0..rounds {
        for (name, body, ts, sig) in requests {
            let candidates = policy.candidates(name);
            let found = candidates.iter().find(|p| {
                delivery_hook::auth::signature::verify_any(p.keys(), body, ts, sig).is_some()
            });
            if let Some(project) = found {
                if project.allows_action(Action::Pull) && policy.allows_container(project, name) {
                    ok += 1;
                }
            }
        }
    }
    assert_eq!(ok, rounds * requests.len(), "every request authorised");
    started.elapsed() / (rounds * requests.len()) as u32
}

/// 3. Policy load time and per-request auth + authorisation cost.
///
/// Measured twice: with requests for 10 busy projects (what grows is only
/// the policy, the quantity the target is about), and with requests spread
/// over every project (each touching memory no other request did, so
/// caches add their own cost on top).
async fn policy_scale(table: &mut Table) {
    let mut busy = Vec::new();
    let mut spread = Vec::new();
    for projects in [10usize, 1_000, 10_000] {
        let text = policy_with(projects);
        let started = Instant::now();
        let loaded =
            delivery_hook::policy::parse(&text, Path::new("/bench/delivery.toml"), &NoEnv).unwrap();
        let load_time = started.elapsed();
        let busy_projects: Vec<usize> = (0..10).map(|k| k * projects / 10).collect();
        let hot = policy_cost(
            &loaded.policy,
            &policy_requests((0..2000).map(|i| busy_projects[i % 10])),
        );
        let cold = policy_cost(
            &loaded.policy,
            &policy_requests((0..2000).map(|i| (i * 7919) % projects)),
        );
        busy.push(hot);
        spread.push(cold);
        table.add(
            &format!("policy with {projects} projects ({} patterns)", projects * 10),
            format!(
                "load {:.1} ms; auth + authorisation {:.2} µs per request (10 busy projects), {:.2} µs (spread over all)",
                load_time.as_secs_f64() * 1000.0,
                hot.as_secs_f64() * 1e6,
                cold.as_secs_f64() * 1e6
            ),
            "",
            None,
        );
    }
    let ratio = |v: &[Duration]| v[2].as_secs_f64() / v[0].as_secs_f64();
    table.add(
        "per-request cost, 10,000 vs 10 projects (10 busy projects)",
        format!("{:.2}x", ratio(&busy)),
        "within 2x",
        Some(ratio(&busy) <= 2.0),
    );
    table.add(
        "per-request cost, 10,000 vs 10 projects (spread over all)",
        format!(
            "{:.2}x (cache misses: each request touches a project no other did)",
            ratio(&spread)
        ),
        "",
        None,
    );
    // Memory with 10,000 projects, in a running gateway.
    let dir = temp_dir("scale");
    let (gateway, took) = start_gateway(&dir, "", &policy_with(10_000)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    table.add(
        "RSS with 10,000 projects (startup to first 200)",
        format!(
            "{:.1} MB ({:.0} ms)",
            rss_kib(gateway.child.id()) as f64 / 1024.0,
            took.as_secs_f64() * 1000.0
        ),
        "",
        None,
    );
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}

/// 2 and 5: accepted requests on a real container, and the overhead of a deploy.
async fn with_engine(table: &mut Table) {
    let fixture = match DockerFixture::new() {
        Ok(f) => f,
        Err(e) => {
            table.add(
                "accepted requests / deploy overhead",
                format!("not measured: {e}"),
                "needs a Docker engine",
                None,
            );
            return;
        }
    };
    let dir = temp_dir("engine");
    let (gateway, _) =
        start_gateway(&dir, "replay_entries_per_project = 1000000", BENCH_PROJECT).await;
    let rss_started = rss_kib(gateway.child.id());
    let key = Arc::new(SigningKey::new(SECRET.as_bytes()));
    let container = fixture.container.clone();
    let k = key.clone();
    let make: MakeRequest = Arc::new(move |i| {
        signed_post(
            "/pull",
            &format!("{{\"container_name\": \"{container}\", \"n\": {i}}}"),
            &k,
            Some("bench"),
        )
    });
    let warm = load(
        gateway.addr,
        "127.0.0.1",
        4,
        Duration::from_millis(500),
        u64::MAX,
        make.clone(),
    )
    .await;
    let mut accepted = load(
        gateway.addr,
        "127.0.0.1",
        4,
        Duration::from_secs(3),
        u64::MAX,
        make.clone(),
    )
    .await;
    let mut sent = (warm.latencies.len() + accepted.latencies.len()) as u64;
    let p99 = accepted.percentile(0.99);
    table.add(
        "accepted requests (202, real engine lookup, coalescing), p50 / p99",
        format!(
            "{:.2} / {:.2} ms, {:.0} req/s, statuses {:?}",
            accepted.percentile(0.5),
            p99,
            accepted.rate(),
            accepted.statuses
        ),
        "p99 < 5 ms",
        Some(p99 < 5.0 && accepted.statuses.keys().all(|s| *s == 202)),
    );
    // Let the queued deploy finish before timing single deploys.
    let mut s = TcpStream::connect(gateway.addr).await.unwrap();
    let _ = exchange(
        &mut s,
        &signed_post(
            "/pull?wait=120",
            &format!(
                "{{\"container_name\": \"{}\", \"settle\": 1}}",
                fixture.container
            ),
            &key,
            Some("bench"),
        ),
    )
    .await;

    let mut through = Vec::new();
    let mut direct = Vec::new();
    let mut steps = Vec::new();
    for i in 0..7 {
        let started = Instant::now();
        let request = signed_post(
            "/pull?wait=120",
            &format!(
                "{{\"container_name\": \"{}\", \"run\": {i}}}",
                fixture.container
            ),
            &key,
            Some("bench"),
        );
        let (status, body) = exchange(&mut s, &request).await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        through.push(started.elapsed());
        let job: serde_json::Value = serde_json::from_slice(&body).unwrap();
        steps.push(
            job["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["duration_ms"].as_u64().unwrap())
                .sum::<u64>(),
        );
        let started = Instant::now();
        fixture.compose(&["pull", "--", "web"]).unwrap();
        fixture.compose(&["up", "-d", "--", "web"]).unwrap();
        direct.push(started.elapsed());
    }
    // The gateway's own share: each request's time minus the compose
    // commands it ran. Comparing with commands run by hand is reported too,
    // but compose's own start-up varies by more than the target between runs.
    let mut own: Vec<f64> = through
        .iter()
        .zip(&steps)
        .map(|(total, steps)| total.as_secs_f64() * 1000.0 - *steps as f64)
        .collect();
    own.sort_by(f64::total_cmp);
    through.sort();
    direct.sort();
    let (t, d) = (
        through[3].as_secs_f64() * 1000.0,
        direct[3].as_secs_f64() * 1000.0,
    );
    table.add(
        "pull deploy: POST /pull?wait to the finished job, minus its compose commands (median of 7)",
        format!("{:.0} ms", own[3]),
        "< 50 ms",
        Some(own[3] < 50.0),
    );
    table.add(
        "pull deploy: POST /pull?wait vs the same two compose commands by hand (median of 7)",
        format!("{t:.0} ms vs {d:.0} ms (difference {:.0} ms)", t - d),
        "",
        None,
    );
    // Fill the replay cache to its default capacity with accepted requests,
    // each a distinct signed request, and weigh the gateway holding them.
    sent += 7 + 1;
    const FULL: u64 = 100_000;
    let fill = load(
        gateway.addr,
        "127.0.0.1",
        4,
        Duration::from_secs(300),
        FULL.saturating_sub(sent),
        make,
    )
    .await;
    let rss_full = rss_kib(gateway.child.id());
    table.add(
        "RSS holding a full replay cache (100,000 accepted requests)",
        format!(
            "{:.1} MB at start, {:.1} MB full ({} bytes per entry); fill statuses {:?}",
            rss_started as f64 / 1024.0,
            rss_full as f64 / 1024.0,
            rss_full.saturating_sub(rss_started) * 1024 / FULL,
            fill.statuses
        ),
        "",
        None,
    );
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A release that crashes a second after it starts, deployed again and
/// again: each deploy fails the health gate and is rolled back. Reports
/// what the rollback adds to the failed deploy (from the decision to roll
/// back to the old version passing the gate again) and the whole deploy.
async fn rollback(table: &mut Table) {
    const RUNS: usize = 5;
    let fixture = match DockerFixture::new() {
        Ok(f) => f,
        Err(e) => {
            table.add(
                "rollback of a failed deploy",
                format!("not measured: {e}"),
                "needs a Docker engine",
                None,
            );
            return;
        }
    };
    // The same image, but its process exits a second after it starts.
    let ctx = fixture.dir.join("ctx");
    let dockerfile = std::fs::read_to_string(ctx.join("Dockerfile")).unwrap();
    let crash = dockerfile.replace(
        "CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]",
        "CMD [\"sh\", \"-c\", \"sleep 1; exit 3\"]",
    );
    std::fs::write(ctx.join("Dockerfile"), crash).unwrap();
    let pushed = run(
        "docker",
        &[
            "build",
            "-q",
            "-t",
            &fixture.image,
            &ctx.display().to_string(),
        ],
    )
    .and_then(|_| run("docker", &["push", "-q", &fixture.image]));
    if let Err(e) = pushed {
        table.add(
            "rollback of a failed deploy",
            format!("not measured: {e}"),
            "",
            None,
        );
        return;
    }
    let dir = temp_dir("rollback");
    let (gateway, _) = start_gateway(&dir, "", BENCH_PROJECT).await;
    let key = SigningKey::new(SECRET.as_bytes());
    let mut s = TcpStream::connect(gateway.addr).await.unwrap();
    let mut added = Vec::new();
    let mut whole = Vec::new();
    let mut states = BTreeMap::new();
    for i in 0..RUNS {
        let request = signed_post(
            "/pull?wait=300",
            &format!(
                "{{\"container_name\": \"{}\", \"run\": {i}}}",
                fixture.container
            ),
            &key,
            Some("bench"),
        );
        let started = Instant::now();
        let (status, body) = exchange(&mut s, &request).await.unwrap();
        whole.push(started.elapsed());
        let job: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        *states
            .entry(format!("{status} {}", job["state"].as_str().unwrap_or("?")))
            .or_insert(0) += 1;
        if let Some(ms) = job["rollback"]["duration_ms"].as_u64() {
            added.push(Duration::from_millis(ms));
        }
    }
    added.sort();
    whole.sort();
    let median = |d: &[Duration]| {
        d.get(d.len() / 2)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    table.add(
        &format!("rollback of a release that crashes 1 s after start, stable_secs 5 (median of {RUNS})"),
        format!(
            "rollback adds {:.0} ms (min {:.0}, max {:.0}); whole failed deploy {:.0} ms; answers {states:?}",
            median(&added),
            added.first().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
            added.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
            median(&whole)
        ),
        "",
        None,
    );
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue: hostile load. 20,000 hostile requests as fast as one core sends
/// them, while a valid client on another address keeps deploying.
async fn hostile(table: &mut Table) {
    let dir = temp_dir("hostile");
    let (gateway, _) = start_gateway(&dir, "", BENCH_PROJECT).await;
    let before = rss_kib(gateway.child.id());
    let wrong = SigningKey::new(WRONG.as_bytes());
    let variety = ["wrong-key", "stale", "garbage", "big"];
    let make: MakeRequest = Arc::new(move |i| {
        match variety[(i % 4) as usize] {
        "wrong-key" => signed_post("/pull", "{\"container_name\": \"dhbench-web\"}", &wrong, None),
        "stale" => b"POST /pull HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: 2\r\nX-Timestamp: 1\r\nX-Signature: 00\r\n\r\n{}".to_vec(),
        "garbage" => b"POST /pull HTTP/1.1\r\nHost: b\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nxyz".to_vec(),
        _ => {
            let body = "x".repeat(16_000);
            signed_post("/build", &body, &wrong, Some("bench"))
        }
    }
    });
    let valid_ok = Arc::new(AtomicU64::new(0));
    let valid_other = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let key = SigningKey::new(SECRET.as_bytes());
    let prober = {
        let (valid_ok, valid_other, done, addr) = (
            valid_ok.clone(),
            valid_other.clone(),
            done.clone(),
            gateway.addr,
        );
        tokio::spawn(async move {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                let socket = TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                let Ok(mut s) = socket.connect(addr).await else {
                    continue;
                };
                let request = signed_post(
                    "/pull",
                    &format!("{{\"container_name\": \"dhbench-nope\", \"probe\": {n}}}"),
                    &key,
                    Some("bench"),
                );
                // A valid client gets past every check to the engine:
                // 404 (no such container here) or 503 (no engine) both prove it.
                match exchange(&mut s, &request).await {
                    Ok((202 | 404 | 503, _)) => valid_ok.fetch_add(1, Ordering::Relaxed),
                    _ => valid_other.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut attack = load(
        gateway.addr,
        "127.0.0.1",
        CONNECTIONS,
        Duration::from_secs(120),
        20_000,
        make,
    )
    .await;
    done.store(true, Ordering::Relaxed);
    prober.await.unwrap();
    let after = rss_kib(gateway.child.id());
    let mut statuses: Vec<(u16, u64)> = attack.statuses.clone().into_iter().collect();
    statuses.sort();
    table.add(
        "hostile load: 20,000 requests (wrong key, stale, not JSON, 16 KB) from one address",
        format!(
            "{:.0} req/s, p99 {:.2} ms, statuses {statuses:?}",
            attack.rate(),
            attack.percentile(0.99)
        ),
        "",
        None,
    );
    let ok = valid_ok.load(Ordering::Relaxed);
    let other = valid_other.load(Ordering::Relaxed);
    table.add(
        "valid client on another address during the hostile load",
        format!("{ok} of {} requests got through authentication", ok + other),
        "all",
        Some(other == 0 && ok > 0),
    );
    table.add(
        "gateway RSS before / after the hostile load",
        format!(
            "{:.1} / {:.1} MB",
            before as f64 / 1024.0,
            after as f64 / 1024.0
        ),
        "bounded (< +8 MB)",
        Some(after < before + 8 * 1024),
    );
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the durable store costs: a job is written when accepted, when it
/// starts and when it ends, each a committed SQLite transaction on disk.
async fn store_writes(table: &mut Table) {
    use delivery_hook::docker::ComposeTarget;
    use delivery_hook::record::JobRecord;
    use delivery_hook::store::Store;
    let dir = temp_dir("store");
    let store = Store::open(&dir).unwrap();
    let target = ComposeTarget::from_parts("bench", "web", "/srv", "/srv/compose.yml", "").unwrap();
    let writes = 300;
    let mut latencies = Vec::with_capacity(writes);
    for _ in 0..writes / 3 {
        let mut record = JobRecord::new(
            "bench",
            delivery_hook::names::Action::Pull,
            &delivery_hook::record::Deployment {
                target: delivery_hook::record::DeployTarget::Compose {
                    container: delivery_hook::names::ContainerName::parse("bench-web").unwrap(),
                    target: target.clone(),
                },
                pin: None,
                restore: None,
            },
            false,
            delivery_hook::clock::Clock::system().unix_ms(),
        );
        for state in [
            delivery_hook::record::JobState::Queued,
            delivery_hook::record::JobState::Running,
            delivery_hook::record::JobState::Succeeded,
        ] {
            record.state = state;
            let started = Instant::now();
            store.put(&record).await.unwrap();
            latencies.push(started.elapsed());
        }
    }
    let (median, p99) = median_p99(&mut latencies);
    table.add(
        "job store: one durable write (WAL, synchronous = FULL), median / p99",
        format!("{median:.2} / {p99:.2} ms; a job is written 3 times"),
        "",
        None,
    );
    // The accepting write of a job carries its request's replay entry in the
    // same transaction.
    let mut with_replay = Vec::with_capacity(writes);
    let mut plain = Vec::with_capacity(writes);
    for i in 0..writes {
        let record = JobRecord::new(
            "bench",
            delivery_hook::names::Action::Pull,
            &delivery_hook::record::Deployment {
                target: delivery_hook::record::DeployTarget::Compose {
                    container: delivery_hook::names::ContainerName::parse("bench-web").unwrap(),
                    target: target.clone(),
                },
                pin: None,
                restore: None,
            },
            false,
            delivery_hook::clock::Clock::system().unix_ms(),
        );
        let started = Instant::now();
        if i % 2 == 0 {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let row = delivery_hook::store::ReplayRow {
                key,
                project: "bench".into(),
                job: record.id,
                expires_at: 4_000_000_000,
            };
            store.put_with(&record, Some(row)).await.unwrap();
            with_replay.push(started.elapsed());
        } else {
            store.put(&record).await.unwrap();
            plain.push(started.elapsed());
        }
    }
    let (with_median, with_p99) = median_p99(&mut with_replay);
    let (plain_median, _) = median_p99(&mut plain);
    table.add(
        "job store: accepting write with its replay entry, median / p99",
        format!(
            "{with_median:.2} / {with_p99:.2} ms (without the entry, interleaved: {plain_median:.2} ms median)"
        ),
        "",
        None,
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Median and 99th percentile, in milliseconds.
/// 13. What verifying a CI token costs: in process, per token; and over
/// HTTP, requests refused just after verification (a token whose claims
/// match no rule: 403) beside requests refused just after their MAC (a
/// signed request for a container the project may not touch: 403).
async fn oidc_cost(table: &mut Table) {
    use delivery_hook::auth::oidc;
    let keys = jwt::Keys::load();
    let issuer = "http://127.0.0.1:9";
    let claims = |repository: &str, i: u64| {
        let now = now();
        json!({"iss": issuer, "aud": "bench", "repository": repository, "ref": "refs/heads/main",
               "sub": "repo:org/web:ref:refs/heads/main", "jti": format!("bench-{i}"),
               "iat": now, "nbf": now, "exp": now + 600})
    };
    let dir = temp_dir("oidc");
    let jwks =
        json!({"keys": [keys.jwk(jwt::Signer::Rsa1), keys.jwk(jwt::Signer::Ec)]}).to_string();
    std::fs::write(dir.join("jwks.json"), &jwks).unwrap();
    let set = oidc::KeySet::parse(jwks.as_bytes()).unwrap();
    const TOKENS: u64 = 2000;
    for signer in [jwt::Signer::Rsa1, jwt::Signer::Ec] {
        let tokens: Vec<String> = (0..TOKENS)
            .map(|i| keys.token(signer, &claims("org/web", i)))
            .collect();
        let started = Instant::now();
        for token in &tokens {
            let presented = oidc::inspect(token).unwrap();
            let key = set.get(&presented.kid).unwrap();
            oidc::verify(&presented, key, now()).unwrap();
        }
        let each = started.elapsed() / TOKENS as u32;
        table.add(
            &format!(
                "verifying one {} token in process (inspect, key by kid, signature, claims)",
                signer.alg()
            ),
            format!("{:.1} µs", each.as_secs_f64() * 1e6),
            "",
            None,
        );
    }

    let project = format!(
        "{BENCH_PROJECT}\n[[projects.bench.oidc]]\nissuer = \"{issuer}\"\naudience = \"bench\"\njwks_file = \"jwks.json\"\nclaims = {{ repository = \"org/web\" }}\n"
    );
    let (gateway, _) = start_gateway(&dir, "auth_failure_limit = 1000000", &project).await;
    let key = SigningKey::new(SECRET.as_bytes());
    let body = "{\"container_name\": \"other-web\"}";
    let signed: MakeRequest = Arc::new(move |_| signed_post("/pull", body, &key, Some("bench")));
    let bearer = |signer: jwt::Signer| -> MakeRequest {
        let token = keys.token(signer, &claims("org/other", 0));
        Arc::new(move |_| {
            format!(
                "POST /pull HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: {}\r\nAuthorization: Bearer {token}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
    };
    let addr = gateway.addr;
    let mut targets: Vec<(&str, SocketAddr, MakeRequest, Load)> = vec![
        ("HMAC signature", addr, signed, Load::default()),
        (
            "RS256 token",
            addr,
            bearer(jwt::Signer::Rsa1),
            Load::default(),
        ),
        (
            "ES256 token",
            addr,
            bearer(jwt::Signer::Ec),
            Load::default(),
        ),
    ];
    alternate(&mut targets).await;
    for (name, _, _, l) in &targets {
        assert_eq!(
            l.statuses.keys().copied().collect::<Vec<_>>(),
            vec![403],
            "{name}: {:?}",
            l.statuses
        );
    }
    let hmac_rate = targets[0].3.rate();
    for (name, _, _, l) in &mut targets {
        // The gateway has one core: a request's cost is the inverse of the rate.
        let extra = 1e6 / l.rate() - 1e6 / hmac_rate;
        let figure = format!(
            "{:.0} req/s, p50 / p99 {:.2} / {:.2} ms",
            l.rate(),
            l.percentile(0.5),
            l.percentile(0.99)
        );
        let figure = if *name == "HMAC signature" {
            figure
        } else {
            format!(
                "{figure}; {extra:.0} µs of the gateway's core per request more than a signature"
            )
        };
        table.add(
            &format!("requests refused after verifying a {name} (403), one core"),
            figure,
            "",
            None,
        );
    }
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}

fn median_p99(latencies: &mut [Duration]) -> (f64, f64) {
    latencies.sort();
    let at = |q: usize| latencies[latencies.len() * q / 100].as_secs_f64() * 1000.0;
    (at(50), at(99))
}

/// The policy's environment for the notification measures.
struct BenchEnv(HashMap<&'static str, String>);

impl delivery_hook::policy::Environment for BenchEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// Notifications, in this process: how long from a job's end being
/// written to its webhook arriving at a receiver on loopback, and what a
/// notification waiting in the outbox costs while its target is down.
async fn notify_cost(table: &mut Table) {
    use delivery_hook::docker::ComposeTarget;
    use delivery_hook::jobs::Outbox;
    use delivery_hook::notifications::Notifier;
    use delivery_hook::policy::PolicyCell;
    use delivery_hook::record::{JobRecord, JobState};
    use delivery_hook::store::Store;

    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    #[poem::handler]
    fn hook(arrived: poem::web::Data<&tokio::sync::mpsc::UnboundedSender<Instant>>) {
        let _ = arrived.send(Instant::now());
    }
    let port = free_port();
    use poem::EndpointExt as _;
    let receiver = poem::Route::new()
        .at("/hook", poem::post(hook))
        .data(arrived);
    let server = tokio::spawn(
        poem::Server::new(poem::listener::TcpListener::bind(format!(
            "127.0.0.1:{port}"
        )))
        .run(receiver),
    );
    // A port nothing listens on: a target that is down.
    let down = free_port();
    let dir = temp_dir("notify");
    let text = "[server]\nstate_dir = \"state\"\n[projects.up]\nsecrets = [\"bench-up-secret-0123456789\"]\ncontainers = [\"up-*\"]\nactions = [\"pull\"]\n[[projects.up.notify]]\nkind = \"webhook\"\nurl_env = \"UP_URL\"\nsecret_env = \"KEY\"\n[projects.down]\nsecrets = [\"bench-down-secret-012345678\"]\ncontainers = [\"down-*\"]\nactions = [\"pull\"]\n[[projects.down.notify]]\nkind = \"webhook\"\nurl_env = \"DOWN_URL\"\nsecret_env = \"KEY\"\n".to_string();
    let env = BenchEnv(HashMap::from([
        ("UP_URL", format!("http://127.0.0.1:{port}/hook")),
        ("DOWN_URL", format!("http://127.0.0.1:{down}/hook")),
        ("KEY", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()),
    ]));
    let policy = delivery_hook::policy::parse(&text, &dir.join("delivery.toml"), &env)
        .unwrap()
        .policy;
    let store = Store::open(&dir.join("state")).unwrap();
    let notifier = Notifier::new(
        store.clone(),
        Arc::new(PolicyCell::new(policy)),
        Arc::new(delivery_hook::metrics::Metrics::default()),
        |r| {
            serde_json::to_value(delivery_hook::api::Job::from_record(
                r.clone(),
                false,
                false,
            ))
            .unwrap()
        },
        delivery_hook::clock::Clock::system(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(notifier.clone().run(stop.clone()));
    let target = ComposeTarget::from_parts("bench", "web", "/srv", "/srv/compose.yml", "").unwrap();
    let ended = |project: &str| {
        let mut record = JobRecord::new(
            project,
            delivery_hook::names::Action::Pull,
            &delivery_hook::record::Deployment {
                target: delivery_hook::record::DeployTarget::Compose {
                    container: delivery_hook::names::ContainerName::parse("web").unwrap(),
                    target: target.clone(),
                },
                pin: None,
                restore: None,
            },
            false,
            delivery_hook::clock::Clock::system().unix_ms(),
        );
        record.state = JobState::Failed;
        record.started_at_ms = Some(delivery_hook::clock::Clock::system().unix_ms());
        record.finished_at_ms = record.started_at_ms;
        record.output = "x".repeat(2048);
        record
    };
    // The receiver answers before the first measure.
    let mut latencies = Vec::new();
    for i in 0..201 {
        let record = ended("up");
        let rows = notifier.rows(&record);
        let written = Instant::now();
        store.put_final(&record, rows).await.unwrap();
        notifier.written();
        let at = arrivals.recv().await.unwrap();
        if i > 0 {
            latencies.push(at.duration_since(written));
        }
    }
    let (median, p99) = median_p99(&mut latencies);
    table.add(
        "notification: a job's end written to its webhook received (loopback), median / p99",
        format!("{median:.2} / {p99:.2} ms (200 jobs; store write, wake, sign, POST)"),
        "",
        None,
    );
    // Ten thousand notifications to a target that is down.
    let queued = 10_000;
    let before = rss_kib(std::process::id());
    for _ in 0..queued {
        let record = ended("down");
        let rows = notifier.rows(&record);
        store.put_final(&record, rows).await.unwrap();
    }
    notifier.written();
    // Until the notifier has tried (and failed) each one once.
    loop {
        let now = delivery_hook::clock::Clock::system().unix_ms();
        if store.due(now, 1).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (waiting, _) = store
        .waiting(delivery_hook::clock::Clock::system().unix_ms())
        .await
        .unwrap();
    let after = rss_kib(std::process::id());
    let database: u64 = std::fs::read_dir(dir.join("state"))
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    table.add(
        "notifications waiting for a target that is down: memory and disk per notification",
        format!(
            "{waiting} waiting: RSS {:+.0} bytes each (SQLite's page cache is bounded), {:.0} bytes each on disk with their jobs (a 2 KiB output each)",
            (after as f64 - before as f64) * 1024.0 / queued as f64,
            database as f64 / (queued + 200) as f64
        ),
        "",
        None,
    );
    stop.cancel();
    let _ = running.await;
    server.abort();
}

/// Bytes one settled replay-cache entry costs, measured on this process.
fn replay_entry_bytes(table: &mut Table) {
    use delivery_hook::auth::replay::{Admission, ReplayCache};
    let entries = 500_000u32;
    let before = rss_kib(std::process::id());
    let cache: ReplayCache<delivery_hook::names::JobId, ()> = ReplayCache::new(entries as usize);
    for i in 0..entries {
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&i.to_le_bytes());
        let project = format!("project-{}", i % 100);
        let expires_at = 4_000_000_000 + u64::from(i % 600);
        if let Admission::First(ticket) = cache.admit(key, &project, expires_at, 1, usize::MAX) {
            ticket.settle(Ok(delivery_hook::names::JobId::random()));
        }
    }
    let after = rss_kib(std::process::id());
    let per_entry = (after - before) * 1024 / u64::from(entries);
    table.add(
        "replay cache, bytes per settled entry",
        format!(
            "{per_entry} bytes ({} MB for the default 100,000)",
            per_entry * 100_000 / 1_000_000
        ),
        "",
        None,
    );
    drop(cache);
}

/// What the compose model check adds to a deploy, per compose tool found:
/// reading what the files name, `compose config` of a project with an env
/// file, a bind, a named volume and a build (cold: the compose file changes
/// before each, so nothing is cached), then the same with an unchanged
/// project (the cache keyed by the identity and contents of every file
/// compose reads), each with the judgement of the model by the table.
async fn compose_model_cost(table: &mut Table) {
    use delivery_hook::docker::model;
    use delivery_hook::docker::{ComposeTarget, DockerEngine};
    use delivery_hook::policy::{Allowance, ComposeTool};
    let dir = temp_dir("model");
    std::fs::write(dir.join("web.env"), "GREETING=hello\n").unwrap();
    std::fs::create_dir_all(dir.join("web")).unwrap();
    let file = dir.join("compose.yml");
    let write = |n: usize| {
        std::fs::write(
            &file,
            format!(
                "# {n}\nservices:\n  web:\n    image: busybox\n    env_file: [./web.env]\n    volumes: [\"./data:/data\", \"cache:/cache\"]\n    build: ./web\nvolumes:\n  cache: {{}}\n"
            ),
        )
        .unwrap();
    };
    let target = ComposeTarget::from_stored(
        "bench",
        "web",
        &dir.display().to_string(),
        &[file.display().to_string()],
        &[],
    )
    .unwrap();
    let allowed = |p: &Path| p.starts_with(&dir);
    let any = |_: &str| true;
    let allow = std::collections::BTreeSet::<Allowance>::new();
    let taken = std::collections::BTreeSet::new();
    let rules = model::Rules {
        compose_project: "bench",
        allow: &allow,
        host_path: &allowed,
        network: &any,
        image: &any,
        container_name: &any,
        security_opts: &[],
        socket: None,
        taken: &taken,
        writable_binds: &[],
    };
    for (tool, name) in [(ComposeTool::V1, "v1"), (ComposeTool::V2, "v2")] {
        let engine = DockerEngine::new(tool, delivery_hook::clock::Clock::system());
        let Ok(found) = engine.compose_found().await else {
            println!("  compose {name}: not installed, not measured");
            continue;
        };
        let version = found.version.clone();
        let measure = |cold: bool, rounds: usize| {
            let engine = &engine;
            let target = &target;
            let rules = &rules;
            let write = &write;
            async move {
                let mut times = Vec::with_capacity(rounds);
                for n in 0..rounds {
                    if cold {
                        write(n);
                    }
                    let started = Instant::now();
                    let judged = model::judge_invocation(engine, target, None, rules, true)
                        .await
                        .unwrap();
                    let findings = judged.findings;
                    times.push(started.elapsed());
                    assert!(findings.is_empty(), "{findings:?}");
                }
                median_p99(&mut times)
            }
        };
        let (cold, cold_p99) = measure(true, 20).await;
        write(0);
        let (cached, cached_p99) = measure(false, 500).await;
        table.add(
            &format!("compose model check, compose {name} {version}, cold (median, p99)"),
            format!("{cold:.1} ms, {cold_p99:.1} ms"),
            "",
            None,
        );
        table.add(
            &format!("compose model check, compose {name} {version}, cached (median, p99)"),
            format!("{:.0} µs, {:.0} µs", cached * 1000.0, cached_p99 * 1000.0),
            "",
            None,
        );
        // What a job adds: the judged copy it runs, written whole and synced.
        let judged = model::judge_invocation(&engine, &target, None, &rules, true)
            .await
            .unwrap();
        let copies = delivery_hook::docker::JudgedCopies::new(&dir.join("state"));
        let mut times = Vec::with_capacity(200);
        for _ in 0..200 {
            let started = Instant::now();
            let copy = copies
                .write(&target, judged.model.as_ref().unwrap())
                .unwrap();
            times.push(started.elapsed());
            drop(copy);
        }
        let (write, write_p99) = median_p99(&mut times);
        table.add(
            &format!("judged copy written per job, compose {name} (median, p99)"),
            format!("{:.0} µs, {:.0} µs", write * 1000.0, write_p99 * 1000.0),
            "",
            None,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--ceiling-server") {
        let fair = args.get(i + 2).is_some_and(|a| a == "fair");
        return ceiling_server(args[i + 1].parse().unwrap(), fair);
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not, and
    // a debug build under test is no place to measure anything.
    if !args.iter().any(|a| a == "--bench") {
        println!("the benchmark runs with `cargo bench --bench gateway`");
        return ExitCode::SUCCESS;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    pin_to(1);
    println!("delivery-hook benchmark: gateway on core 0, load generator on core 1 ({cpus} cores)");
    println!("gateway binary: {GATEWAY}");
    let mut table = Table(Vec::new());
    // BENCH_ONLY=rejected,scale (for profiling) runs some measures only.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    // First, while this process holds nothing else.
    if wanted("replay") {
        replay_entry_bytes(&mut table);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if wanted("basics") {
            basics(&mut table).await;
        }
        if wanted("store") {
            store_writes(&mut table).await;
        }
        if wanted("rejected") {
            rejected(&mut table).await;
        }
        if wanted("scale") {
            policy_scale(&mut table).await;
        }
        if wanted("hostile") {
            hostile(&mut table).await;
        }
        if wanted("engine") {
            with_engine(&mut table).await;
        }
        if wanted("rollback") {
            rollback(&mut table).await;
        }
        if wanted("oidc") {
            oidc_cost(&mut table).await;
        }
        if wanted("model") {
            compose_model_cost(&mut table).await;
        }
        if wanted("notify") {
            notify_cost(&mut table).await;
        }
    });
    if table.print() {
        ExitCode::SUCCESS
    } else {
        println!("\na target was missed");
        ExitCode::FAILURE
    }
}
