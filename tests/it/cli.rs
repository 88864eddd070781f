//! The command line, run as a user would: `check`, `openapi`, `sign`, and
//! `serve` in the seed-compatible mode, refusing a bad policy, dropping root.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::e2e::{free_port, wait_until};
use crate::support::{sign, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_delivery-hook");

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("DELIVERY_CONFIG")
        .env_remove("SECRET_KEY")
        .env_remove("DELIVERY_LISTEN");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[test]
fn check_accepts_the_shipped_policies_and_never_prints_a_secret() {
    let secret = "web-secret-for-the-check-0123456789";
    for policy in [
        repo("delivery.toml.example"),
        repo("examples/delivery.toml"),
    ] {
        let out = cli(
            &["check", "--config", &policy],
            &[
                ("WEB_DEPLOY_SECRET", secret),
                ("BILLING_DEPLOY_SECRET", "billing-secret-for-the-check-0123"),
                ("DELIVERY_DEPLOY_SECRET", "delivery-secret-for-the-check-01"),
            ],
        );
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{policy}:\n{stdout}{}",
            text(&out.stderr)
        );
        assert!(stdout.contains("web: containers web-*, !web-"), "{stdout}");
        assert!(
            stdout.contains("secrets 1 (env:WEB_DEPLOY_SECRET)"),
            "{stdout}"
        );
        assert!(!stdout.contains(secret) && !text(&out.stderr).contains(secret));
        assert!(
            !text(&out.stderr).contains("warning:"),
            "{policy} is shipped as the safe shape:\n{}",
            text(&out.stderr)
        );
    }
    // The example's gateway project may bind the socket its compose file needs.
    let out = cli(
        &["check", "--config", &repo("examples/delivery.toml")],
        &[
            ("WEB_DEPLOY_SECRET", secret),
            ("BILLING_DEPLOY_SECRET", "billing-secret-for-the-check-0123"),
            ("DELIVERY_DEPLOY_SECRET", "delivery-secret-for-the-check-01"),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("delivery: containers delivery-hook;")
            && stdout.contains("compose model enforce; host paths /srv/**")
            && stdout.contains("allow docker_socket"),
        "{stdout}"
    );
}

#[test]
fn check_reports_every_error_with_its_line_and_exits_1() {
    let dir = temp_dir("check");
    let policy = dir.path().join("delivery.toml");
    std::fs::write(
        &policy,
        "[server]\nlisten = \"x\"\n\n[projects.a]\nsecrets = [\"env:UNSET_FOR_SURE\"]\ncontainers = [\"*\"]\nactions = [\"deploy\"]\n",
    )
    .unwrap();
    let out = cli(&["check", "--config", &policy.display().to_string()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let origin = policy.display().to_string();
    for expected in [
        format!("error: {origin}:2: `listen`"),
        format!("error: {origin}:5: environment variable `UNSET_FOR_SURE` is not set"),
        format!("error: {origin}:7: unknown action `deploy`"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    // `serve` refuses to start on the same file, with the same errors.
    let out = cli(&["serve", "--config", &origin], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(":7: unknown action `deploy`"));
    // A named policy file that does not exist is an error, not the seed mode.
    let out = cli(
        &["check", "--config", "/nonexistent/delivery.toml"],
        &[("SECRET_KEY", "your-very-secret-key")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read the policy file"));
}

#[test]
fn check_prints_the_oidc_rules_and_warns_about_an_open_github_rule() {
    let dir = temp_dir("check-oidc");
    let policy = dir.path().join("delivery.toml");
    std::fs::write(
        &policy,
        "[projects.web]\ncontainers = [\"web-*\"]\nactions = [\"pull\"]\n\n[[projects.web.oidc]]\nissuer = \"https://token.actions.githubusercontent.com\"\naudience = \"https://deploy.example.com\"\nclaims = { ref = \"refs/heads/main\" }\n",
    )
    .unwrap();
    let origin = policy.display().to_string();
    let out = cli(&["check", "--config", &origin], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("oidc: issuer https://token.actions.githubusercontent.com, audience https://deploy.example.com, ref = refs/heads/main, at most 600 s old"),
        "{stdout}"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("warning: {origin}:6: [[projects.web.oidc]] names neither `repository` nor `repository_owner_id`")),
        "{stderr}"
    );
}

#[test]
fn openapi_prints_the_document() {
    let out = cli(&["openapi"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    for id in [
        "pullContainer",
        "buildContainer",
        "getJob",
        "listJobs",
        "getHealth",
        "getReadiness",
    ] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
}

#[test]
fn sign_prints_headers_for_a_body_stdin_or_path() {
    let secret = "your-very-secret-key";
    let body = r#"{"container_name": "my-container-name"}"#;
    let out = cli(
        &["sign", "--timestamp", "1700000000", body],
        &[("DELIVERY_SECRET", secret)],
    );
    assert_eq!(
        text(&out.stdout),
        "X-Timestamp: 1700000000\nX-Signature: 448353b29e590d7fec7943fecb867e3ecd3943790e67d1e5c46d78abd5f6b986\n"
    );
    let mut child = Command::new(BIN)
        .args([
            "sign",
            "--secret-env",
            "OTHER_SECRET",
            "--timestamp",
            "5",
            "-",
        ])
        .env("OTHER_SECRET", secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"raw\nbytes")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(text(&out.stdout).ends_with(&format!("{}\n", sign(secret, b"raw\nbytes", "5"))));
    let out = cli(
        &["sign", "--timestamp", "5", "--path", "/jobs/abc?wait=1"],
        &[("DELIVERY_SECRET", secret)],
    );
    assert!(text(&out.stdout).ends_with(&format!("{}\n", sign(secret, b"/jobs/abc?wait=1", "5"))));
    let out = cli(&["sign", "{}"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("DELIVERY_SECRET, which is not set"));
}

fn get(port: u16, path: &str) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
        .output()
        .ok()?;
    text(&out.stdout).parse().ok().filter(|s| *s != 0)
}

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn without_a_policy_secret_key_runs_the_seed_compatible_mode() {
    let dir = temp_dir("seed");
    let port = free_port();
    let log = dir.path().join("log");
    let _gateway = Running(
        Command::new(BIN)
            .arg("serve")
            .current_dir(dir.path())
            .env_remove("DELIVERY_CONFIG")
            .env_remove("DELIVERY_LISTEN")
            .env("SECRET_KEY", "your-very-secret-key")
            .env("UVICORN_PORT", port.to_string())
            .env("SHOW_DOCS", "1")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until("the seed-mode gateway", Duration::from_secs(15), || {
        get(port, "/healthz") == Some(200)
    });
    assert_eq!(
        get(port, "/docs"),
        Some(200),
        "SHOW_DOCS turns Swagger UI on"
    );
    let listening = std::fs::read_to_string("/proc/net/tcp").unwrap();
    assert!(
        listening
            .lines()
            .any(|l| l.contains(&format!("00000000:{port:04X}"))),
        "listens on 0.0.0.0:{port}"
    );
    // Log lines are written by a background thread: wait for the warning.
    wait_until("the seed-mode warning", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("seed-compatible mode"))
    });
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log.matches("seed-compatible mode").count(),
        1,
        "one warning:\n{log}"
    );
    assert!(!log.contains("your-very-secret-key"));
    assert!(Path::new(&dir.path().join("delivery-state/jobs.sqlite3")).exists());
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

#[test]
fn serve_started_as_root_drops_to_the_named_user_with_the_socket_group() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: dropping root can only be tested as root");
        return;
    }
    let dir = temp_dir("drop");
    let socket = dir.path().join("docker.sock");
    std::fs::write(&socket, "").unwrap();
    std::os::unix::fs::chown(&socket, None, Some(4242)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let port = free_port();
    let policy = dir.path().join("delivery.toml");
    std::fs::write(
        &policy,
        format!("[server]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\n[projects.a]\nsecrets = [\"literal-secret-0123456789\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n"),
    )
    .unwrap();
    let gateway = Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&policy)
            .env("DELIVERY_RUN_AS", "nobody")
            .env("DOCKER_HOST", format!("unix://{}", socket.display()))
            .env_remove("DELIVERY_LISTEN")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the gateway", Duration::from_secs(15), || {
        get(port, "/healthz") == Some(200)
    });
    let pid = gateway.0.id();
    assert!(
        status_field(pid, "Uid:").starts_with("65534"),
        "uid {}",
        status_field(pid, "Uid:")
    );
    assert!(status_field(pid, "Gid:").starts_with("65534"));
    assert_eq!(
        status_field(pid, "Groups:"),
        "4242",
        "only the socket's group"
    );
}

#[test]
fn trigger_refuses_a_malformed_pin_before_sending_anything() {
    // Nothing listens on port 9: a request would fail differently.
    let url = "http://127.0.0.1:9";
    let env = [("DELIVERY_SECRET", "trigger-secret-0123456789")];
    for (image, action, says) in [
        ("app:latest", "pull", "with a digest"),
        ("app@sha256:ABC", "pull", "64 lowercase hex"),
        (
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "build",
            "`build` deploys what it builds",
        ),
    ] {
        let out = cli(
            &[
                "trigger",
                "--url",
                url,
                "--container",
                "web",
                "--action",
                action,
                "--image",
                image,
            ],
            &env,
        );
        assert_eq!(out.status.code(), Some(2), "{image}");
        let line = text(&out.stderr);
        assert!(line.contains(says) && !line.contains("connect"), "{line}");
    }
}

/// `trigger`'s exit codes: 0 when the job is accepted and not waited for,
/// 1 when `--wait` runs out before the job ends, 2 when the gateway cannot
/// be reached.
#[test]
fn trigger_exits_0_accepted_1_when_the_wait_runs_out_2_unreachable() {
    use crate::support::ci::{HostPlay, StandInHost};
    let host = StandInHost::start(HostPlay::Accept);
    let env = [("DELIVERY_SECRET", "trigger-secret-0123456789")];
    let trigger = |url: &str, wait: &[&str]| {
        let mut args = vec!["trigger", "--url", url, "--container", "web"];
        args.extend_from_slice(wait);
        cli(&args, &env)
    };
    let out = trigger(&host.url, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("queued"),
        "{}",
        text(&out.stdout)
    );
    let out = trigger(&host.url, &["--wait", "1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("did not finish within 1 s"),
        "{}",
        text(&out.stdout)
    );
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let out = trigger(&nobody, &["--wait", "5"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// `healthcheck` fails when no gateway answers at the policy's address, and
/// `helper` when its job cannot be had: a container's health check and a
/// self-update see the failure in the exit code.
#[test]
fn healthcheck_and_helper_exit_non_zero_when_they_fail() {
    let dir = temp_dir("cli-fail");
    let policy = dir.path().join("delivery.toml");
    std::fs::write(
        &policy,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n[projects.web]\nsecrets = [\"web-secret-0123456789abcdef\"]\ncontainers = [\"web-*\"]\nactions = [\"pull\"]\n",
            free_port()
        ),
    )
    .unwrap();
    let out = cli(&["healthcheck", "--config", policy.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    for job in ["not-a-job", "0123456789abcdef0123456789abcdef"] {
        let out = cli(
            &[
                "helper",
                "--state-dir",
                state,
                "--job",
                job,
                "--timeout-secs",
                "10",
                "--",
                "docker",
                "compose",
            ],
            &[],
        );
        assert_ne!(out.status.code(), Some(0), "{job}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).is_empty(), "{job}: it says why");
    }
}

/// A token read from a variable cannot be renewed: when the gateway stops
/// taking it for reads, `trigger` says where to follow the job and exits 1.
#[test]
fn trigger_exits_1_when_its_token_can_no_longer_read_the_job() {
    use crate::support::ci::{HostPlay, StandInHost};
    let host = StandInHost::start(HostPlay::AcceptThenRefuseReads);
    let out = cli(
        &[
            "trigger",
            "--url",
            &host.url,
            "--container",
            "web",
            "--token-env",
            "CI_TOKEN",
            "--wait",
            "30",
        ],
        &[("CI_TOKEN", "header.claims.signature")],
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("invalid_token")
            && said.contains(&format!("follow it at {}/jobs/", host.url)),
        "{said}"
    );
}
