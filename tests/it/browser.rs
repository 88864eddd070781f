//! The web page in a real browser: `tests/ui/browser.py` drives Debian's
//! chromium through selenium against a gateway served here on a socket,
//! over the fake engine and the manual clock, which this test moves when
//! the script asks. `scripts/test` installs chromium, chromium-driver and
//! a venv with selenium and axe-selenium-python.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use delivery_hook::clock::Clock;
use delivery_hook::serve::{self, Controls};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::support::fake_engine::{FakeEngine, OLD_IMAGE};
use crate::support::{ALICE, BILLING, BOB, gateway_in, now, sign, skip, temp_dir, ui_server};

/// The Python with selenium and axe, and chromedriver; `None` (the test
/// skips, or fails under CI=true) without them.
fn python() -> Option<String> {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/ui-venv/bin/python");
    let python = std::env::var("DELIVERY_TEST_BROWSER_PYTHON").unwrap_or_else(|_| venv.into());
    let ready = crate::support::runs(&python, &["-c", "import selenium, axe_selenium_python"]);
    if !ready || !Path::new("/usr/bin/chromedriver").exists() {
        skip(
            "the browser tests need chromium, chromium-driver and a Python with selenium and axe-selenium-python (scripts/test installs them)",
        );
        return None;
    }
    Some(python)
}

/// Signs and sends a deploy of `container`; the job's id.
async fn deploy(url: &str, container: &str, timestamp: u64, wait: bool) -> serde_json::Value {
    let body = crate::support::body_for(container);
    let ts = timestamp.to_string();
    let path = if wait { "/pull?wait=20" } else { "/pull" };
    reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("Content-Type", "application/json")
        .header("X-Timestamp", &ts)
        .header("X-Signature", sign(BILLING, body.as_bytes(), &ts))
        .body(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap()
}

/// Jobs of billing in as many states as the fake engine makes: succeeded,
/// failed, rolled back, running and queued (held until released).
async fn jobs_in_every_state(url: &str, engine: &FakeEngine) -> Arc<tokio::sync::Semaphore> {
    let t = now();
    assert_eq!(
        deploy(url, "billing-web", t, true).await["state"],
        "succeeded"
    );
    engine.fail_step("pull", 1);
    assert_eq!(
        deploy(url, "billing-worker", t - 1, true).await["state"],
        "failed"
    );
    engine.fail_step("pull", 0);
    // From the old image, so the failing one is replaced and rolled back.
    *engine.image.lock().unwrap() = OLD_IMAGE.into();
    *engine.state.lock().unwrap() = ("running".into(), Some("unhealthy".into()));
    assert_eq!(
        deploy(url, "billing-web", t - 2, true).await["state"],
        "rolled_back"
    );
    *engine.state.lock().unwrap() = ("running".into(), None);
    let gate = engine.hold();
    deploy(url, "billing-web", t - 3, false).await;
    deploy(url, "billing-web", t - 4, false).await;
    gate
}

/// What the script asks of the test: a deploy that waits (its job id), the
/// waiting jobs released, the gateway's clock moved.
async fn answer_to(what: &str, url: &str, gate: &tokio::sync::Semaphore, clock: &Clock) -> String {
    match what.split_once(' ').unwrap_or((what, "")) {
        ("deploy", _) => {
            let job = deploy(url, "billing-worker", now() - 10, false).await;
            format!("ok {}", job["id"].as_str().unwrap())
        }
        ("release", _) => {
            gate.add_permits(100);
            "ok".to_owned()
        }
        ("advance", secs) => {
            clock.advance(Duration::from_secs(secs.parse().unwrap()));
            "ok".to_owned()
        }
        _ => "unknown".to_owned(),
    }
}

#[tokio::test]
async fn the_page_in_a_real_browser() {
    let Some(python) = python() else { return };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = temp_dir("browser");
    let clock = Clock::manual();
    let (gateway, engine) = gateway_in(root.path(), &ui_server(true), "", "", clock.clone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let (_reload_tx, reload) = tokio::sync::mpsc::channel(1);
    let controls = Controls {
        shutdown: stop.clone(),
        reload,
    };
    tokio::spawn(serve::run_until_shutdown(gateway, listener, None, controls));
    let gate = jobs_in_every_state(&url, &engine).await;

    let screenshot: PathBuf = concat!(env!("CARGO_MANIFEST_DIR"), "/target/ui-browser.png").into();
    let _ = std::fs::remove_file(&screenshot);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui/browser.py");
    let mut child = tokio::process::Command::new(python)
        .args([script, &url, ALICE, BOB, &screenshot.display().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut passed = false;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .expect("the browser script answers within two minutes")
        .unwrap()
    {
        println!("browser: {line}");
        passed |= line == "PASS";
        let Some(what) = line.strip_prefix("> ") else {
            continue;
        };
        let answer = answer_to(what, &url, &gate, &clock).await;
        stdin
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .unwrap();
    }
    let status = child.wait().await.unwrap();
    stop.cancel();
    assert!(
        status.success() && passed,
        "the browser script failed: {status}"
    );
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 1000),
        "a screenshot at {}",
        screenshot.display()
    );
}
