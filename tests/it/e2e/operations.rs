//! Operations against the real engine: crashes, restarts and SIGTERM lose
//! no accepted job, and the gateway redeploys its own container.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::support::now;

/// Two `build:` services whose builds take `seconds` whenever their stamp changes.
fn slow_builds(f: &Fixture, seconds: u32) -> PathBuf {
    let dir = f.dir.path().join("slow");
    let mut services = Vec::new();
    for name in ["a", "b"] {
        let context = f.write_context(
            &format!("slow/{name}"),
            name,
            &format!("COPY stamp /stamp\nRUN [\"/bin/busybox\", \"sleep\", \"{seconds}\"]\nLABEL dh.test={}\n", f.id),
        );
        std::fs::write(context.join("stamp"), "0").unwrap();
        services.push(service(
            name,
            &format!("{}/{name}:dev", f.id),
            &format!("{}-{name}", f.id),
            &f.id,
            &format!("    build: ./{name}\n"),
        ));
    }
    f.compose_up(
        &f.id,
        &dir,
        &[("compose.yml", compose(&services))],
        &["--build"],
    );
    dir
}

/// Makes the next build of both services do its slow step again.
fn restamp(dir: &Path, value: &str) {
    for service in ["a", "b"] {
        std::fs::write(dir.join(service).join("stamp"), value).unwrap();
    }
}

/// A gateway process on a fixed policy file and state directory.
pub(super) struct Restartable {
    policy: PathBuf,
    log: PathBuf,
    url: String,
}

impl Restartable {
    pub(super) fn new(f: &Fixture, docker: &str) -> Self {
        let docker = &docker_section(f.compose, docker);
        let port = free_port();
        let policy = f.dir.path().join("ops.toml");
        std::fs::write(
            &policy,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"ops-state\"\nmax_wait_secs = 300\n\n[docker]\n{docker}\n\n[projects.e2e]\nsecrets = [\"env:E2E_SECRET\"]\ncontainers = [\"{id}-*\"]\nactions = [\"pull\", \"build\"]\n",
                id = f.id
            ),
        )
        .unwrap();
        Self {
            policy,
            log: f.dir.path().join("ops.log"),
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub(super) fn start(&self) -> Started {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_delivery-hook"))
            .args(["serve", "--config"])
            .arg(&self.policy)
            .env("E2E_SECRET", SECRET)
            .env_remove("DELIVERY_LISTEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for_http("the gateway to listen", &format!("{}/healthz", self.url));
        Started(child)
    }

    pub(super) fn client(&self) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client {
            http: reqwest::Client::new(),
            url: self.url.clone(),
        }
    }
}

/// A started gateway, killed if a failing test drops it still running.
pub(super) struct Started(Child);

impl Started {
    pub(super) fn signal(&self, signal: &str) {
        run("kill", &[&format!("-{signal}"), &self.0.id().to_string()]);
    }

    pub(super) fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn state_of(client: &Client, id: &str) -> String {
    let (_, job) = client.job(id, 0).await;
    job["state"].as_str().unwrap_or("").to_string()
}

async fn wait_for_state(client: &Client, id: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if state_of(client, id).await == wanted {
            return;
        }
        assert!(Instant::now() < deadline, "job {id} never became {wanted}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until one of two jobs runs; returns (running, the other).
async fn one_running(client: &Client, a: &str, b: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (sa, sb) = (state_of(client, a).await, state_of(client, b).await);
        match (sa.as_str(), sb.as_str()) {
            ("running", other) => {
                assert_eq!(other, "queued", "max_parallel_jobs = 1");
                return (a.to_string(), b.to_string());
            }
            (other, "running") => {
                assert_eq!(other, "queued", "max_parallel_jobs = 1");
                return (b.to_string(), a.to_string());
            }
            _ => {}
        }
        assert!(Instant::now() < deadline, "neither job started: {sa} {sb}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn id_of(answer: &(u16, Value)) -> String {
    assert_eq!(answer.0, 202, "{answer:?}");
    answer.1["id"].as_str().unwrap().to_string()
}

const FINAL: [&str; 4] = ["succeeded", "failed", "timed_out", "interrupted"];

per_compose_tool!(e2e_kill_9_and_restart_lose_no_accepted_job);
/// kill -9 with one job running and one queued, restart, repeat: every job
/// accepted ends in a final state and stays readable.
async fn e2e_kill_9_and_restart_lose_no_accepted_job(tool: Compose) {
    let f = Fixture::new(tool);
    let dir = slow_builds(&f, 3);
    let gateway = Restartable::new(&f, "max_parallel_jobs = 1");
    let mut accepted = Vec::new();
    const CYCLES: usize = 3;
    // A timestamp of its own for every request: the same signed request
    // again, even after a restart, is a replay of the first.
    let base = now();
    for cycle in 1..=CYCLES {
        let mut child = gateway.start();
        let client = gateway.client();
        restamp(&dir, &cycle.to_string());
        let at = base - cycle as u64;
        let a = id_of(&client.deploy_at("/build", &format!("{}-a", f.id), at).await);
        let b = id_of(&client.deploy_at("/build", &format!("{}-b", f.id), at).await);
        // One permit: either service may get it first; the other waits.
        let (running, queued) = one_running(&client, &a, &b).await;
        // After a restart, a new request may join a recovered job still queued.
        for id in [running, queued] {
            if !accepted.contains(&id) {
                accepted.push(id);
            }
        }
        child.signal("KILL");
        let _ = child.wait();
    }
    let mut child = gateway.start();
    // A new client: the old one's pooled connections died with the gateway.
    let client = gateway.client();
    let mut finals = Vec::new();
    for id in &accepted {
        let (status, job) = client.job(id, 240).await;
        assert_eq!(status, 200, "job {id} is readable after restarts");
        let state = job["state"].as_str().unwrap().to_string();
        assert!(
            FINAL.contains(&state.as_str()),
            "job {id} ended {state}: {job:#}"
        );
        finals.push((state, job["attempt"].as_u64().unwrap()));
    }
    eprintln!(
        "restart loop: {CYCLES} kill -9 cycles, {} jobs accepted, {} with a final state: {finals:?}",
        accepted.len(),
        finals.len()
    );
    assert_eq!(finals.len(), accepted.len());
    let interrupted_twice = finals.iter().filter(|(s, _)| s == "interrupted").count();
    let rerun = finals.iter().filter(|(_, attempt)| *attempt == 2).count();
    assert!(rerun >= 1, "a job interrupted by the crash ran again");
    assert!(
        finals.iter().filter(|(s, _)| s == "succeeded").count() + interrupted_twice
            == accepted.len()
    );
    child.signal("TERM");
    assert!(child.wait().unwrap().success());
}

per_compose_tool!(e2e_sigterm_lets_the_running_deploy_finish);
/// SIGTERM during a deploy: it finishes, the process exits 0, and a job
/// still queued runs at the next start.
async fn e2e_sigterm_lets_the_running_deploy_finish(tool: Compose) {
    let f = Fixture::new(tool);
    let dir = slow_builds(&f, 3);
    let gateway = Restartable::new(&f, "max_parallel_jobs = 1\nshutdown_grace_secs = 60");
    let mut child = gateway.start();
    let client = gateway.client();
    restamp(&dir, "term");
    let a = id_of(&client.deploy("/build", &format!("{}-a", f.id)).await);
    let b = id_of(&client.deploy("/build", &format!("{}-b", f.id)).await);
    let (running, queued) = one_running(&client, &a, &b).await;
    child.signal("TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let mut child = gateway.start();
    let client = gateway.client();
    let (_, first) = client.job(&running, 0).await;
    assert_eq!(
        first["state"], "succeeded",
        "the running deploy finished: {first:#}"
    );
    assert_eq!(first["attempt"], 1);
    let (_, second) = client.job(&queued, 120).await;
    assert_eq!(
        second["state"], "succeeded",
        "the queued one ran after the restart: {second:#}"
    );
    child.signal("TERM");
    assert!(child.wait().unwrap().success());
}

per_compose_tool!(e2e_a_deploy_past_the_grace_period_runs_again_after_restart);
/// SIGTERM with a grace period shorter than the deploy: it is stopped and
/// queued again, and runs to the end at the next start.
async fn e2e_a_deploy_past_the_grace_period_runs_again_after_restart(tool: Compose) {
    let f = Fixture::new(tool);
    let dir = slow_builds(&f, 6);
    let gateway = Restartable::new(&f, "shutdown_grace_secs = 1");
    let mut child = gateway.start();
    let client = gateway.client();
    restamp(&dir, "grace");
    let id = id_of(&client.deploy("/build", &format!("{}-a", f.id)).await);
    wait_for_state(&client, &id, "running").await;
    child.signal("TERM");
    assert!(child.wait().unwrap().success());
    let mut child = gateway.start();
    let client = gateway.client();
    let (_, job) = client.job(&id, 120).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["attempt"], 2, "it ran a second time");
    assert!(
        job["output"]
            .as_str()
            .unwrap()
            .contains("it will run again, attempt 2")
    );
    child.signal("TERM");
    assert!(child.wait().unwrap().success());
}

/// An image `FROM scratch` holding only a version stamp; the gateway binary
/// and the compose tool come from the host through read-only mounts.
fn gateway_image(f: &Fixture, version: &str) -> String {
    let dockerfile = format!(
        "FROM scratch\nLABEL dh.test={}\nCOPY version /version\n",
        f.id
    );
    let context = f.context(
        &format!("gw-image-{version}"),
        &[("version", version), ("Dockerfile", &dockerfile)],
    );
    let tag = format!("{}/gateway:{version}", f.id);
    f.docker_build(&tag, &context);
    tag
}

/// The job's helper containers, running or stopped.
fn helpers_of(job: &str) -> String {
    run(
        "docker",
        &[
            "ps",
            "-aq",
            "--filter",
            &format!("label={}={job}", delivery_hook::docker::LABEL_HELPER),
        ],
    )
}

per_compose_tool!(sync e2e_a_gateway_redeploys_its_own_container);
/// Issue 7, self-update: the gateway runs as a compose service, and a signed
/// deploy of that very service replaces it with a new image. A helper
/// container runs the compose commands, the old gateway stops, the new one
/// follows the helper from the store, and `trigger --wait` rides out the
/// restart and reports success.
fn e2e_a_gateway_redeploys_its_own_container(tool: Compose) {
    let f = Fixture::with_registry(tool);
    let repo = format!("{}-gateway:live", f.id);
    let v1 = gateway_image(&f, "v1");
    let v2 = gateway_image(&f, "v2");
    let v2_id = run("docker", &["image", "inspect", "--format", "{{.Id}}", &v2]);
    f.publish(&v1, &repo);

    let exe = env!("CARGO_BIN_EXE_delivery-hook");
    let dir = f.dir.path().join("gw");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let policy = dir.join("delivery.toml");
    std::fs::write(
        &policy,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"{state}\"\n\n[docker]\ncompose = \"{compose}\"\njob_timeout_secs = 120\n\n[projects.e2e]\nsecrets = [\"env:E2E_SECRET\"]\ncontainers = [\"{id}-*\"]\nactions = [\"pull\"]\n",
            state = dir.join("state").display(),
            id = f.id,
            compose = tool.policy_value(),
        ),
    )
    .unwrap();
    let container = format!("{}-gateway", f.id);
    let root = f.dir.path().display().to_string();
    let file = format!(
        "services:\n  gateway:\n    image: {image}\n    container_name: {container}\n    network_mode: host\n    entrypoint: [\"{exe}\"]\n    command: [\"serve\", \"--config\", \"{policy}\"]\n    environment:\n      E2E_SECRET: \"{SECRET}\"\n    labels:\n      dh.test: \"{id}\"\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n      - /usr:/usr:ro\n      - /lib:/lib:ro\n      - /lib64:/lib64:ro\n      - {exe}:{exe}:ro\n      - {root}:{root}\n",
        image = f.remote(&repo),
        policy = policy.display(),
        id = f.id,
    );
    f.compose_up(&format!("{}gw", f.id), &dir, &[("compose.yml", file)], &[]);
    let url = format!("http://127.0.0.1:{port}");
    wait_for_http(
        "the gateway in its container to listen",
        &format!("{url}/healthz"),
    );
    let before = f.container(&container);
    f.publish(&v2, &repo);

    let trigger = || {
        Command::new(exe)
            .args(["trigger", "--url", &url, "--container", &container])
            .args(["--project", "e2e", "--wait", "120", "--output", "json"])
            .env("DELIVERY_SECRET", SECRET)
            .output()
            .unwrap()
    };
    let out = trigger();
    let progress = String::from_utf8_lossy(&out.stderr);
    // The gateway logs to stderr, which `docker logs` passes on as stderr.
    let logs = || {
        let out = Command::new("docker")
            .args(["logs", &container])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert_eq!(
        out.status.code(),
        Some(0),
        "{progress}\n{}\ngateway:\n{}",
        String::from_utf8_lossy(&out.stdout),
        logs()
    );
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("trigger said:\n{progress}");
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["self_update"], true);
    let argv: Vec<String> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["argv"].to_string())
        .collect();
    assert!(
        argv.len() == 2 && argv[0].contains("\"pull\"") && argv[1].contains("\"up\""),
        "{argv:?}"
    );

    let after = f.container(&container);
    assert_ne!(after["Id"], before["Id"], "a new gateway container");
    assert_eq!(after["Image"].as_str(), Some(v2_id.as_str()), "running v2");
    assert_eq!(after["State"]["Running"], true);
    // The new gateway answers for the job it did not start.
    let client = Client::at(&url);
    let (status, seen) = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(client.job(job["id"].as_str().unwrap(), 0));
    assert_eq!((status, seen["state"].as_str()), (200, Some("succeeded")));
    wait_until("the helper to be removed", Duration::from_secs(30), || {
        helpers_of(job["id"].as_str().unwrap()).is_empty()
    });
    eprintln!("the new gateway's log:\n{}", logs());

    // Nothing new to pull: compose leaves the gateway running, and the same
    // gateway follows its helper to the end.
    let out = trigger();
    let again: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(again["state"], "succeeded", "{again:#}\n{}", logs());
    assert_eq!(again["self_update"], true);
    assert_eq!(f.container(&container)["Id"], after["Id"], "not recreated");
    wait_until(
        "the second helper to be removed",
        Duration::from_secs(30),
        || helpers_of(again["id"].as_str().unwrap()).is_empty(),
    );
}

per_compose_tool!(e2e_a_signed_request_replays_after_a_restart);
/// A signed request accepted before a crash, and before a clean stop, is
/// sent again after each restart: it gets its job back and runs nothing.
async fn e2e_a_signed_request_replays_after_a_restart(tool: Compose) {
    let f = Fixture::new(tool);
    let dir = slow_builds(&f, 1);
    restamp(&dir, "replayed");
    let gateway = Restartable::new(&f, "");
    let a = format!("{}-a", f.id);
    let t = now();
    let mut child = gateway.start();
    let (status, job) = gateway.client().deploy_at("/build?wait=120", &a, t).await;
    assert_eq!(
        (status, &job["state"]),
        (200, &Value::from("succeeded")),
        "{job:#}"
    );
    let image = f.container(&a)["Image"].clone();
    for signal in ["KILL", "TERM"] {
        child.signal(signal);
        let _ = child.wait();
        restamp(&dir, signal);
        child = gateway.start();
        let (status, again) = gateway.client().deploy_at("/build?wait=120", &a, t).await;
        assert_eq!(status, 200, "after {signal}: {again:#}");
        assert_eq!(again["replayed"], true, "after {signal}: {again:#}");
        assert_eq!(again["id"], job["id"], "after {signal}: the first job");
        assert_eq!(
            f.container(&a)["Image"],
            image,
            "after {signal}: nothing was built again"
        );
    }
    let log = std::fs::read_to_string(&gateway.log).unwrap();
    assert!(log.contains("restored replay protection"), "{log}");
}

const OTHER_SECRET: &str = "other-team-secret-0123456789";

per_compose_tool!(e2e_one_project_neither_joins_nor_blocks_another);
/// Two projects that may both deploy one container: a request never joins
/// the other project's queued job, and one project at its replay bound is
/// refused while the other goes on.
async fn e2e_one_project_neither_joins_nor_blocks_another(tool: Compose) {
    let f = Fixture::new(tool);
    let dir = slow_builds(&f, 2);
    restamp(&dir, "1");
    let other = format!(
        "\n[projects.other]\nsecrets = [\"{OTHER_SECRET}\"]\ncontainers = [\"{}-*\"]\nactions = [\"build\"]\n",
        f.id
    );
    let gateway = GatewayProcess::start_with(
        &f,
        "replay_entries_per_project = 4",
        "max_parallel_jobs = 1",
        &other,
    );
    let client = Client::new(&gateway);
    let a = format!("{}-a", f.id);
    let t = now();
    let ours = |offset: u64| client.deploy_signed("/build", &a, t - offset, SECRET);
    let theirs = |offset: u64| client.deploy_signed("/build", &a, t - offset, OTHER_SECRET);

    let first = id_of(&ours(0).await);
    wait_for_state(&client, &first, "running").await;
    let queued = ours(1).await;
    assert_eq!(queued.1["coalesced"], false, "{queued:?}");
    let queued = id_of(&queued);
    let other_job = theirs(2).await;
    assert_eq!(
        (&other_job.1["coalesced"], &other_job.1["project"]),
        (&Value::from(false), &Value::from("other")),
        "{other_job:?}"
    );
    assert_ne!(id_of(&other_job), queued, "not the e2e project's job");
    let joined = ours(3).await;
    assert_eq!(
        (&joined.1["coalesced"], &joined.1["id"]),
        (&Value::from(true), &Value::from(queued.as_str())),
        "within one project a queued job is joined: {joined:?}"
    );
    let fourth = ours(4).await;
    assert!(matches!(fourth.0, 200 | 202), "{fourth:?}");
    let flooded = ours(5).await;
    assert_eq!(flooded.0, 429, "{flooded:?}");
    assert_eq!(flooded.1["code"], "project_rate_limited");
    assert!(flooded.1["retry_after"].as_u64().is_some_and(|s| s >= 1));
    let still = theirs(6).await;
    assert!(
        matches!(still.0, 200 | 202),
        "the other project goes on: {still:?}"
    );
    // Log lines are written in batches: wait for the line, not a moment.
    let audited = || {
        gateway
            .log_text()
            .lines()
            .any(|l| l.contains("deploy accepted") && l.contains("project=other"))
    };
    wait_until(
        "the audit line naming the project that authenticated",
        Duration::from_secs(5),
        audited,
    );
    // Let the builds end before the fixture is removed.
    for answer in [&other_job, &still] {
        let id = answer.1["id"].as_str().unwrap();
        let (_, job) = client.job_as(id, 120, OTHER_SECRET, "other").await;
        assert!(
            FINAL.contains(&job["state"].as_str().unwrap_or("")),
            "{job}"
        );
    }
    for id in [&first, &queued] {
        let (_, job) = client.job(id, 120).await;
        assert!(
            FINAL.contains(&job["state"].as_str().unwrap_or("")),
            "{job}"
        );
    }
}
