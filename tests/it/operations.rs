//! Operations without the engine: policy reload, metrics, the audit log.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::e2e::{free_port, wait_until};
use crate::support::GatewayBinary as Gateway;
use crate::support::*;

fn policy(port: u16, projects: &str, extra: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\n{extra}\n{projects}")
}

const KEY_OLD: &str = "reload-old-0123456789abcdef";
const KEY_NEW: &str = "reload-new-0123456789abcdef";
const KEY_OTHER: &str = "reload-other-0123456789abcd";

fn project(name: &str, secret: &str) -> String {
    format!(
        "[projects.{name}]\nsecrets = [\"{secret}\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n"
    )
}

fn start(dir: &TempDir, text: &str, args: &[&str], port: u16) -> Gateway {
    Gateway::start(dir.path(), text, args, port, &[])
}

/// (status, body) of a request; `signed` = (project, secret, body).
fn status(
    g: &Gateway,
    method: &str,
    path: &str,
    signed: Option<(&str, &str, &str)>,
) -> (u16, String) {
    let mut args = vec![
        "-s".to_string(),
        "-o".into(),
        "-".into(),
        "-w".into(),
        "\n%{http_code}".into(),
        "-X".into(),
        method.into(),
    ];
    if let Some((project, secret, body)) = signed {
        let ts = now().to_string();
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "-H".into(),
            format!("X-Project: {project}"),
            "-H".into(),
            format!("X-Timestamp: {ts}"),
            "-H".into(),
            format!("X-Signature: {}", sign(secret, body.as_bytes(), &ts)),
            "--data-binary".into(),
            body.to_string(),
        ]);
    }
    args.push(format!("http://127.0.0.1:{}{path}", g.port));
    let out = Command::new("curl").args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.to_string())
}

/// Authenticated requests get past 401: 404 (no such container) with an
/// engine, 503 without one. Either proves the key was accepted.
fn accepted(g: &Gateway, project: &str, secret: &str) -> bool {
    let body = body_for("reload-probe-nonexistent");
    !matches!(
        status(g, "POST", "/pull", Some((project, secret, &body))).0,
        401 | 0
    )
}

fn hup(g: &Gateway) {
    Command::new("kill")
        .args(["-HUP", &g.child.id().to_string()])
        .status()
        .unwrap();
}

#[test]
fn sighup_swaps_a_valid_policy_and_keeps_the_old_one_on_errors() {
    let dir = temp_dir("reload");
    let port = free_port();
    let extra = "auth_failure_limit = 1000";
    let g = start(
        &dir,
        &policy(port, &project("alpha", KEY_OLD), extra),
        &[],
        port,
    );
    assert!(accepted(&g, "alpha", KEY_OLD));
    // A new key for alpha (the old one removed) and a new project.
    let next = policy(
        port,
        &format!(
            "{}{}",
            project("alpha", KEY_NEW),
            project("beta", KEY_OTHER)
        ),
        extra,
    );
    std::fs::write(dir.path().join("delivery.toml"), next).unwrap();
    hup(&g);
    wait_until("the new key to work", Duration::from_secs(10), || {
        accepted(&g, "alpha", KEY_NEW)
    });
    assert!(
        accepted(&g, "beta", KEY_OTHER),
        "a new project works at once"
    );
    assert!(
        !accepted(&g, "alpha", KEY_OLD),
        "a removed key stops working"
    );
    // A broken policy is refused; the last good one stays.
    std::fs::write(
        dir.path().join("delivery.toml"),
        "[projects.alpha]\nsecrets = 7\n",
    )
    .unwrap();
    hup(&g);
    wait_until("the refusal to be logged", Duration::from_secs(10), || {
        std::fs::read_to_string(&g.log).is_ok_and(|l| l.contains("the old one stays in force"))
    });
    assert!(accepted(&g, "alpha", KEY_NEW) && accepted(&g, "beta", KEY_OTHER));
    let log = std::fs::read_to_string(&g.log).unwrap();
    assert!(
        log.contains("`secrets` must be an array of strings"),
        "{log}"
    );
    assert_eq!(
        status(&g, "GET", "/healthz", None).0,
        200,
        "connections kept serving"
    );
}

/// A reload reaches each new connection's limits and each new job's
/// settings, and names in the log each setting that needs a restart, and
/// only those.
#[test]
fn a_reload_applies_connection_limits_at_once_and_names_what_needs_a_restart() {
    let dir = temp_dir("reload-limits");
    let port = free_port();
    let g = start(
        &dir,
        &policy(port, &project("alpha", KEY_OLD), ""),
        &[],
        port,
    );
    let next = policy(
        port,
        &project("alpha", KEY_OLD),
        concat!(
            "max_connections_per_address = 1\nreplay_cache_entries = 5000\n\n",
            "[docker]\nmax_parallel_jobs = 7\njob_timeout_secs = 77\nstable_secs = 2\n"
        ),
    );
    std::fs::write(dir.path().join("delivery.toml"), next).unwrap();
    hup(&g);
    wait_until("the reload", Duration::from_secs(10), || {
        std::fs::read_to_string(&g.log).is_ok_and(|l| l.contains("policy reloaded"))
    });
    let log = std::fs::read_to_string(&g.log).unwrap();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("takes effect only after a restart"))
        .collect();
    assert_eq!(warned.len(), 2, "{log}");
    assert!(
        warned
            .iter()
            .any(|l| l.contains("docker.max_parallel_jobs")),
        "{log}"
    );
    assert!(
        warned
            .iter()
            .any(|l| l.contains("server.replay_cache_entries")),
        "{log}"
    );
    // One connection held open from this address takes its one place:
    // the next is closed at once, until the first goes.
    let held = std::net::TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    wait_until(
        "a second connection to be closed",
        Duration::from_secs(10),
        || status(&g, "GET", "/healthz", None).0 == 0,
    );
    drop(held);
    wait_until(
        "the place to be given back",
        Duration::from_secs(10),
        || status(&g, "GET", "/healthz", None).0 == 200,
    );
}

/// The gauges: a job running, the replay cache's bound, an address
/// throttled.
#[tokio::test]
async fn gauges_show_running_jobs_the_replay_bound_and_throttled_clients() {
    let h =
        Harness::with_server("metrics = true\nreplay_cache_entries = 5000\nauth_failure_limit = 2")
            .await;
    let gauge = |name: &'static str| crate::support::metric(&h, name, &[]);
    assert_eq!(gauge("delivery_hook_replay_cache_capacity").await, 5000.0);
    assert_eq!(gauge("delivery_hook_jobs_running").await, 0.0);
    let gate = h.engine.hold();
    let (status, job) = status_json(h.deploy("/pull", "billing-web", BILLING).await).await;
    assert_eq!(status, 202, "{job}");
    crate::support::soon("the job's first command", || h.engine.running() > 0).await;
    assert_eq!(gauge("delivery_hook_jobs_running").await, 1.0);
    gate.add_permits(10);
    let id = job["id"].as_str().unwrap();
    let (_, ended) = status_json(
        h.get_signed(&format!("/jobs/{id}?wait=10"), BILLING, "billing")
            .await,
    )
    .await;
    assert_eq!(ended["state"], "succeeded", "{ended}");
    assert_eq!(gauge("delivery_hook_jobs_running").await, 0.0);
    assert_eq!(gauge("delivery_hook_throttled_clients").await, 0.0);
    refused_as_billing(&h, 2).await;
    assert_eq!(gauge("delivery_hook_throttled_clients").await, 1.0);
}

/// The job history keeps at most `job_history_max` jobs, none older than
/// `job_history_days` by the gateway's clock.
#[tokio::test]
async fn job_history_is_pruned_to_its_count_and_its_age() {
    let h = Harness::with_server("job_history_max = 2\njob_history_days = 30").await;
    let mut ids = Vec::new();
    for (i, container) in ["billing-web", "billing-worker", "billing-web"]
        .iter()
        .enumerate()
    {
        let body = body_for(container);
        let signed = h.post_signed("/pull?wait=10", &body, BILLING, now() - i as u64, None);
        let (status, job) = status_json(signed.await).await;
        assert_eq!(
            (status, job["state"].as_str()),
            (200, Some("succeeded")),
            "{job}"
        );
        ids.push(job["id"].as_str().unwrap().to_owned());
        // Distinct creation times, so that "the oldest" is one job.
        h.clock.advance(Duration::from_millis(5));
    }
    let kept = |h: &Harness| {
        let ids = ids.clone();
        let jobs = h.gateway.jobs().clone();
        async move {
            let mut kept = Vec::new();
            for id in &ids {
                let id = delivery_hook::names::JobId::parse(id).unwrap();
                kept.push(jobs.get(id).await.unwrap().is_some());
            }
            kept
        }
    };
    let policy = h.gateway.policy();
    let prune = || delivery_hook::serve::prune(h.gateway.jobs(), &policy, h.gateway.clock());
    prune().await;
    assert_eq!(
        kept(&h).await,
        [false, true, true],
        "the oldest goes past job_history_max"
    );
    h.clock.advance(Duration::from_secs(29 * 86_400));
    prune().await;
    assert_eq!(kept(&h).await, [false, true, true], "29 days old: kept");
    h.clock.advance(Duration::from_secs(2 * 86_400));
    prune().await;
    assert_eq!(kept(&h).await, [false, false, false], "31 days old: gone");
}

/// Sends `n` deploys for `billing` signed with shop's key: each 401.
async fn refused_as_billing(h: &Harness, n: usize) {
    for _ in 0..n {
        let body = body_for("billing-web");
        let response = h
            .post_signed("/pull", &body, SHOP, now(), Some("billing"))
            .await;
        assert_eq!(response.0.status().as_u16(), 401);
    }
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let h = Harness::with_server("metrics = true").await;
    refused_as_billing(&h, 3).await;
    let (status, job) = status_json(h.deploy("/pull?wait=10", "billing-web", BILLING).await).await;
    assert_eq!((status, job["state"].as_str()), (200, Some("succeeded")));
    let response = h.client.get("/metrics").send().await;
    assert!(
        response.0.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    let text =
        String::from_utf8(response.0.into_body().into_bytes().await.unwrap().to_vec()).unwrap();
    let scrape = crate::support::parse_metrics(&text);
    let requests = "delivery_hook_requests_total";
    assert_eq!(
        crate::support::sample(
            &scrape,
            requests,
            &[("operation", "pullContainer"), ("status", "401")]
        ),
        3.0
    );
    assert_eq!(
        crate::support::sample(
            &scrape,
            requests,
            &[("operation", "pullContainer"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        crate::support::sample(
            &scrape,
            "delivery_hook_auth_failures_total",
            &[("reason", "signature_mismatch")]
        ),
        3.0
    );
    assert_eq!(
        crate::support::sample(
            &scrape,
            "delivery_hook_jobs_total",
            &[("action", "pull"), ("state", "succeeded")]
        ),
        1.0
    );
    assert_eq!(
        crate::support::sample(&scrape, "delivery_hook_jobs_queued", &[]),
        0.0
    );
    assert_eq!(
        crate::support::sample(&scrape, "delivery_hook_replay_cache_entries", &[]),
        1.0
    );
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "delivery_hook_job_duration_seconds")
        .expect("the duration histogram");
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert_eq!(
                buckets.last().unwrap().count,
                1.0,
                "one job in the +Inf bucket"
            );
        }
        other => panic!("not a histogram: {other:?}"),
    }
    // Off unless enabled.
    let plain = Harness::new().await;
    assert_eq!(
        plain
            .client
            .get("/metrics")
            .send()
            .await
            .0
            .status()
            .as_u16(),
        404
    );
}

#[test]
fn metrics_can_have_their_own_address() {
    let dir = temp_dir("metrics");
    let (port, metrics_port) = (free_port(), free_port());
    let extra = format!("metrics = true\nmetrics_listen = \"127.0.0.1:{metrics_port}\"");
    let g = start(
        &dir,
        &policy(port, &project("alpha", KEY_OLD), &extra),
        &[],
        port,
    );
    assert_eq!(
        status(&g, "GET", "/metrics", None).0,
        404,
        "not on the API address"
    );
    let metrics = Gateway {
        child: Command::new("true").spawn().unwrap(),
        port: metrics_port,
        log: g.log.clone(),
    };
    let (code, text) = status(&metrics, "GET", "/metrics", None);
    assert_eq!(code, 200);
    crate::support::parse_metrics(&text);
    assert!(
        // No route answers /metrics there: counted as no operation.
        text.contains("delivery_hook_requests_total{operation=\"other\",status=\"404\"} 1"),
        "{text}"
    );
}

#[test]
fn the_audit_log_has_one_json_line_per_decision() {
    let dir = temp_dir("audit");
    let port = free_port();
    let g = start(
        &dir,
        &policy(port, &project("alpha", KEY_OLD), ""),
        &["--log-format", "json"],
        port,
    );
    let body = body_for("audit-probe-nonexistent");
    status(
        &g,
        "POST",
        "/pull",
        Some(("alpha", "wrong-secret-0123456789", &body)),
    );
    status(&g, "POST", "/pull", Some(("alpha", KEY_OLD, &body)));
    let audit = || -> Vec<Value> {
        std::fs::read_to_string(&g.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("every log line is JSON"))
            .filter(|v| v["target"] == "audit")
            .collect()
    };
    wait_until("two audit lines", Duration::from_secs(10), || {
        audit().len() >= 2
    });
    let lines = audit();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let refused = &lines[0];
    assert_eq!(refused["code"], "signature_mismatch");
    assert_eq!(refused["refusal"], "unauthenticated");
    assert_eq!(refused["client"], "127.0.0.1");
    assert_eq!(refused["action"], "pull");
    assert!(refused["timestamp"].is_string());
    let authenticated = &lines[1];
    assert_eq!(authenticated["project"], "alpha");
    assert_eq!(authenticated["container"], "audit-probe-nonexistent");
    assert!(matches!(
        authenticated["code"].as_str(),
        Some("container_not_found" | "engine_unavailable")
    ));
    let text = std::fs::read_to_string(&g.log).unwrap();
    assert!(
        !text.contains(KEY_OLD) && !text.contains("wrong-secret"),
        "no secret in the log"
    );
}

#[test]
fn a_flood_of_refusals_is_written_in_full_a_few_times_then_counted() {
    use delivery_hook::gateway::REFUSALS_IN_FULL;
    let dir = temp_dir("flood");
    let port = free_port();
    let g = start(
        &dir,
        &policy(
            port,
            &project("alpha", KEY_OLD),
            "auth_failure_limit = 1000",
        ),
        &["--log-format", "json"],
        port,
    );
    let body = body_for("flood-probe");
    let flood = 40;
    for _ in 0..flood {
        let (code, _) = status(
            &g,
            "POST",
            "/pull",
            Some(("alpha", "wrong-secret-0123456789", &body)),
        );
        assert_eq!(code, 401);
    }
    let malformed = 3;
    for _ in 0..malformed {
        assert_eq!(
            status(&g, "POST", "/pull", Some(("alpha", KEY_OLD, "{"))).0,
            400
        );
    }
    // Stopping writes the counts of the interval so far.
    Command::new("kill")
        .args(["-TERM", &g.child.id().to_string()])
        .status()
        .unwrap();
    let mut g = g;
    g.child.wait().unwrap();
    let lines: Vec<Value> = std::fs::read_to_string(&g.log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("every log line is JSON"))
        .filter(|v| v["target"] == "audit")
        .collect();
    let refused = |code: &str| {
        lines
            .iter()
            .filter(|l| l["message"] == "deploy refused" && l["code"] == code)
            .count() as u64
    };
    assert_eq!(refused("signature_mismatch"), u64::from(REFUSALS_IN_FULL));
    assert_eq!(
        refused("invalid_json"),
        malformed,
        "under the bound: all written"
    );
    let summaries: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "refusals summarised")
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:#?}");
    let summary = summaries[0];
    assert_eq!(summary["code"], "signature_mismatch");
    assert_eq!(summary["client"], "127.0.0.1");
    assert_eq!(summary["refused"], flood);
    assert_eq!(summary["not_written"], flood - u64::from(REFUSALS_IN_FULL));
}
