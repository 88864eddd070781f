//! Deploy results reach people, end to end: real deploys through the real
//! engine, told to real receivers (a webhook receiver verifying with the
//! Standard Webhooks reference library, a Slack-shaped receiver, an SMTP
//! server). Notifications do not depend on the compose tool, so these run
//! with v2 only.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::support::receivers::{MailTls, Receiver, new_key, python};

/// Crashes a second after it starts, as a bad release does.
const CRASH: &str = "CMD [\"sh\", \"-c\", \"sleep 1; exit 3\"]\n";

/// A service on v1 from the fixture's registry, restarted by the engine
/// when it exits; its container's name.
fn web_on_v1(f: &Fixture) -> (String, String) {
    let repo = format!("{}/web:latest", f.id);
    let v1 = f.image(&format!("{}/web:v1", f.id), "v1");
    f.publish(&format!("{}/web:v1", f.id), &repo);
    let container = format!("{}-web", f.id);
    let file = compose(&[service(
        "web",
        &f.remote(&repo),
        &container,
        &f.id,
        "    restart: unless-stopped\n",
    )]);
    f.compose_up(
        &f.id,
        &f.dir.path().join("app"),
        &[("compose.yml", file)],
        &[],
    );
    (container, v1)
}

fn webhook_target(url_env: &str, key_env: &str, events: &str) -> String {
    format!(
        "[[projects.e2e.notify]]\nkind = \"webhook\"\nurl_env = \"{url_env}\"\nsecret_env = \"{key_env}\"\n{events}\n"
    )
}

#[tokio::test]
async fn e2e_deploys_that_succeed_fail_and_roll_back_are_told_to_every_target() {
    with_tool(Compose::V2, told).await;
}

/// Three real deploys end `succeeded`, `failed` (a pin the registry lacks)
/// and `rolled_back` (a release that crashes); each end reaches the
/// webhook (verified by the reference library, with the job's facts), the
/// Slack receiver only for the events it names, and the mailbox.
async fn told(tool: Compose) {
    let Some(python) = python() else { return };
    let f = Fixture::with_registry(tool);
    let (container, v1) = web_on_v1(&f);
    let key = new_key();
    let hook = Receiver::webhook(&python, f.dir.path(), "hook", &key, &[]);
    let slack = Receiver::slack(&python, f.dir.path(), "slack");
    let mail = Receiver::smtp(&python, f.dir.path(), "mail", MailTls::Plain, None);
    let project = format!(
        "{}[[projects.e2e.notify]]\nkind = \"slack\"\nurl_env = \"SLACK_URL\"\nevents = [\"failed\", \"rolled_back\"]\n\n\
         [[projects.e2e.notify]]\nkind = \"email\"\nto = [\"ops@example.com\"]\n\n\
         [notify.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"dh@example.com\"\n",
        webhook_target("HOOK_URL", "HOOK_KEY", ""),
        mail.port
    );
    let gateway = GatewayProcess::start_with_env(
        &f,
        "metrics = true",
        "stable_secs = 3",
        &project,
        &[
            ("HOOK_URL", &hook.url()),
            ("HOOK_KEY", &key),
            ("SLACK_URL", &slack.url()),
        ],
    );
    let client = Client::new(&gateway);

    let (status, succeeded) = client.deploy("/pull?wait=120", &container).await;
    assert_eq!(status, 200, "{succeeded:#}\n{}", gateway.log_text());
    let missing = format!(
        "{}@sha256:{}",
        f.remote(&format!("{}/web", f.id)),
        "a".repeat(64)
    );
    let body = serde_json::json!({"container_name": container, "image": missing}).to_string();
    let (status, failed) = client
        .post_signed("/pull?wait=120", &body, crate::support::now(), SECRET)
        .await;
    assert_eq!(
        (status, &failed["state"]),
        (502, &Value::from("failed")),
        "{failed:#}"
    );
    let context = f.write_context("ctx-crash", "v2", CRASH);
    f.docker_build(&format!("{}/web:v2", f.id), &context);
    f.publish(&format!("{}/web:v2", f.id), &format!("{}/web:latest", f.id));
    let (status, rolled_back) = client.deploy("/pull?wait=120", &container).await;
    assert_eq!(
        (status, &rolled_back["state"]),
        (502, &Value::from("rolled_back")),
        "{rolled_back:#}"
    );

    let delivered = |lines: &[Value]| lines.iter().filter(|l| l["status"] == 204).count();
    let lines = hook.wait_for("three verified messages", Duration::from_secs(60), |l| {
        delivered(l) >= 3
    });
    assert_eq!(delivered(&lines), 3, "one message per job end: {lines:#?}");
    for (job, state) in [
        (&succeeded, "succeeded"),
        (&failed, "failed"),
        (&rolled_back, "rolled_back"),
    ] {
        let id = job["id"].as_str().unwrap();
        let line = lines
            .iter()
            .find(|l| l["payload"]["data"]["id"] == id)
            .unwrap_or_else(|| panic!("no message for {state}: {lines:#?}"));
        assert_eq!(line["verified"], true, "{line:#}");
        assert_eq!(line["id"], format!("msg_{id}_{state}"));
        assert_eq!(line["payload"]["type"], format!("deploy.{state}"));
        let data = &line["payload"]["data"];
        assert_eq!(data["state"], state);
        assert_eq!(data["project"], "e2e");
        assert_eq!(data["container_name"], container.as_str());
        assert_eq!(data["previous_image"], v1.as_str(), "{data:#}");
        assert_eq!(data["requested_by"]["key_index"], 0, "{data:#}");
        assert!(data["duration_ms"].as_u64().is_some(), "{data:#}");
    }
    let data = |job: &Value| {
        lines
            .iter()
            .find(|l| l["payload"]["data"]["id"] == job["id"])
            .unwrap()["payload"]["data"]
            .clone()
    };
    assert_eq!(data(&succeeded)["running_image"], v1.as_str());
    assert_eq!(data(&failed)["image"], missing.as_str());
    let rolled = data(&rolled_back);
    assert_eq!(rolled["running_image"], v1.as_str(), "{rolled:#}");
    assert_eq!(rolled["rollback"]["to_image"], v1.as_str());
    assert_ne!(rolled["rollback"]["from_image"], v1.as_str());

    let messages = slack.wait_for("two Slack messages", Duration::from_secs(30), |l| {
        l.len() >= 2
    });
    let texts: Vec<&str> = messages
        .iter()
        .map(|m| m["message"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 2, "its events only: {texts:?}");
    assert!(
        texts.iter().any(|t| t.starts_with("Deploy failed"))
            && texts.iter().any(|t| t.starts_with("Deploy rolled back")),
        "{texts:?}"
    );
    for m in &messages {
        assert_eq!(m["problems"], Value::Array(vec![]), "{m:#}");
    }
    let mails = mail.wait_for("three mails", Duration::from_secs(30), |l| l.len() >= 3);
    let job_id = rolled_back["id"].as_str().unwrap();
    assert!(
        mails.iter().any(|m| {
            let content = m["content"].as_str().unwrap();
            content.contains(job_id)
                && content.contains("Subject: [delivery-hook] Deploy rolled back")
        }),
        "{mails:#?}"
    );

    let metrics = reqwest::get(format!("{}/metrics", gateway.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "delivery_hook_notifications_total{kind=\"webhook\",outcome=\"delivered\"} 3",
        "delivery_hook_notifications_total{kind=\"slack\",outcome=\"delivered\"} 2",
        "delivery_hook_notifications_total{kind=\"email\",outcome=\"delivered\"} 3",
    ] {
        assert!(metrics.contains(expected), "{expected} in:\n{metrics}");
    }
    let log = gateway.log_text();
    assert!(log.contains("notification delivered"), "{log}");
    for secret in [key.as_str(), &hook.url(), &slack.url()] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[tokio::test]
async fn e2e_a_receiver_down_for_a_while_gets_each_message_once_across_a_crash() {
    with_tool(Compose::V2, down_for_a_while).await;
}

/// A receiver answers 503 twice; the gateway is killed with SIGKILL after
/// the first failure and started again; the message arrives once, with
/// the same `webhook-id` on every attempt. A second target that never
/// answers holds up neither the deploy nor the first target.
async fn down_for_a_while(tool: Compose) {
    let Some(python) = python() else { return };
    let f = Fixture::with_registry(tool);
    let (container, _) = web_on_v1(&f);
    let key = new_key();
    let flaky = Receiver::webhook(&python, f.dir.path(), "flaky", &key, &["--fail-first", "2"]);
    let silent = Receiver::webhook(&python, f.dir.path(), "silent", &key, &["--hang"]);
    let project = format!(
        "{}{}",
        webhook_target("SILENT_URL", "HOOK_KEY", ""),
        webhook_target("FLAKY_URL", "HOOK_KEY", "")
    );
    let env = [
        ("FLAKY_URL", flaky.url()),
        ("SILENT_URL", silent.url()),
        ("HOOK_KEY", key.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gateway = GatewayProcess::start_with_env(&f, "", "", &project, &env);
    let (status, job) = Client::new(&gateway)
        .deploy("/pull?wait=120", &container)
        .await;
    let ended = Instant::now();
    assert_eq!(status, 200, "{job:#}");
    let first = flaky.wait_for("a first attempt", Duration::from_secs(30), |l| {
        !l.is_empty()
    });
    assert!(
        ended.elapsed() < Duration::from_secs(5),
        "the silent target held up the other: {:?}",
        ended.elapsed()
    );
    assert_eq!(first[0]["status"], 503);
    assert!(
        !silent.lines().is_empty(),
        "the silent target was tried too"
    );

    drop(gateway);
    let gateway = GatewayProcess::start_with_env(&f, "", "", &project, &env);
    let lines = flaky.wait_for("the delivery", Duration::from_secs(60), |l| {
        l.iter().any(|x| x["status"] == 204)
    });
    let id = format!("msg_{}_succeeded", job["id"].as_str().unwrap());
    assert!(lines.len() >= 3, "two 503s, then 204: {lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l["id"] == id.as_str() && l["verified"] == true),
        "one id on every attempt: {lines:#?}"
    );
    // Settled: the row is gone, so nothing more can come.
    wait_until(
        "the delivery to be recorded",
        Duration::from_secs(10),
        || gateway.log_text().contains("notification delivered"),
    );
    // Stopped, the gateway can send nothing more, and what it would send
    // at its next start is its outbox: only the silent target's message.
    drop(gateway);
    let store =
        rusqlite::Connection::open(f.dir.path().join("delivery-state/jobs.sqlite3")).unwrap();
    let waiting: Vec<String> = store
        .prepare("SELECT target FROM outbox")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        waiting.len(),
        1,
        "only the silent target's message waits: {waiting:?}"
    );
    let after = flaky.lines();
    assert_eq!(
        after.iter().filter(|l| l["status"] == 204).count(),
        1,
        "delivered once: {after:#?}"
    );
}
