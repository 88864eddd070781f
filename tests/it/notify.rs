//! Notifications without the engine: `notify-test` against real receivers
//! (a webhook receiver verifying with the Standard Webhooks reference
//! library, a Slack-shaped receiver, an SMTP server with and without
//! STARTTLS).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::receivers::{Receiver, certificate, new_key, python};
use crate::support::temp_dir;

const BIN: &str = env!("CARGO_BIN_EXE_delivery-hook");

/// Runs `notify-test` for project `web` of `policy`; its exit code and
/// output.
fn notify_test(dir: &Path, policy: &str, env: &[(&str, String)]) -> (i32, String) {
    let file = dir.join("delivery.toml");
    std::fs::write(&file, policy).unwrap();
    let out = Command::new(BIN)
        .args(["notify-test", "--project", "web", "--config"])
        .arg(&file)
        .env("WEB_SECRET", "notify-secret-0123456789abcdef")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn policy(smtp: &str, targets: &str) -> String {
    format!(
        "[server]\nstate_dir = \"state\"\n\n[notify.smtp]\n{smtp}\n\n[projects.web]\nsecrets = [\"env:WEB_SECRET\"]\ncontainers = [\"web-*\"]\nactions = [\"pull\"]\n{targets}"
    )
}

#[test]
fn notify_test_reaches_each_kind_of_receiver_and_a_wrong_key_is_refused() {
    let Some(python) = python() else { return };
    let dir = temp_dir("notify");
    let key = new_key();
    let hook = Receiver::webhook(&python, dir.path(), "hook", &key, &[]);
    // Expects another key than the one the gateway signs with.
    let other = Receiver::webhook(&python, dir.path(), "other", &new_key(), &[]);
    let slack = Receiver::slack(&python, dir.path(), "slack");
    let mail = Receiver::smtp(&python, dir.path(), "mail", None, None);
    let text = policy(
        &format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"delivery-hook <dh@example.com>\"",
            mail.port
        ),
        "[[projects.web.notify]]\nkind = \"webhook\"\nurl_env = \"HOOK_URL\"\nsecret_env = \"HOOK_KEY\"\n\n\
         [[projects.web.notify]]\nkind = \"webhook\"\nurl_env = \"OTHER_URL\"\nsecret_env = \"HOOK_KEY\"\n\n\
         [[projects.web.notify]]\nkind = \"slack\"\nurl_env = \"SLACK_URL\"\n\n\
         [[projects.web.notify]]\nkind = \"email\"\nto = [\"ops@example.com\", \"dev@example.com\"]\n",
    );
    // A token in the URL, as Slack's have: it must not be printed.
    let slack_url = format!("{}/T000/B000/sl4ck-t0ken", slack.url());
    let (code, out) = notify_test(
        dir.path(),
        &text,
        &[
            ("HOOK_URL", hook.url()),
            ("OTHER_URL", other.url()),
            ("HOOK_KEY", key.clone()),
            ("SLACK_URL", slack_url),
        ],
    );
    assert_eq!(code, 1, "one target refused: {out}");
    for expected in [
        "target 1 (webhook): delivered",
        "target 2 (webhook): not delivered: the receiver answered 400",
        "target 3 (slack): delivered",
        "target 4 (email): delivered",
    ] {
        assert!(out.contains(expected), "{expected:?} in:\n{out}");
    }
    for secret in ["sl4ck-t0ken", &key, "127.0.0.1:"] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }

    let lines = hook.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["verified"], true, "{lines:#?}");
    let payload = &lines[0]["payload"];
    assert_eq!(payload["type"], "deploy.test");
    assert_eq!(payload["data"]["project"], "web");
    assert!(lines[0]["id"].as_str().unwrap().starts_with("msg_test_"));
    let refused = other.lines();
    assert_eq!(refused[0]["verified"], false, "{refused:#?}");

    let message = &slack.lines()[0];
    assert_eq!(message["problems"], Value::Array(vec![]), "{message:#}");
    assert!(
        message["message"]["text"]
            .as_str()
            .unwrap()
            .contains("Test notification"),
        "{message:#}"
    );

    let mail = mail.wait_for("the mail", Duration::from_secs(10), |l| !l.is_empty());
    assert_eq!(mail[0]["from"], "dh@example.com");
    assert_eq!(
        mail[0]["to"],
        serde_json::json!(["ops@example.com", "dev@example.com"])
    );
    assert_eq!(mail[0]["tls"], false);
    let content = mail[0]["content"].as_str().unwrap();
    assert!(
        content.contains("Subject: [delivery-hook] Test notification"),
        "{content}"
    );
    assert!(content.contains("Project: web"), "{content}");
}

#[test]
fn mail_uses_starttls_and_is_refused_by_a_server_that_requires_it_when_sent_plain() {
    let Some(python) = python() else { return };
    let dir = temp_dir("notify-tls");
    let certificate = certificate(dir.path());
    let mail = Receiver::smtp(
        &python,
        dir.path(),
        "mail",
        Some((&certificate.cert, &certificate.key)),
        Some(("deliverer", "smtp-pa55word")),
    );
    let target = "[[projects.web.notify]]\nkind = \"email\"\nto = [\"ops@example.com\"]\n";
    let smtp = |tls: &str| {
        format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"{tls}\"\nfrom = \"dh@example.com\"\nusername_env = \"SMTP_USER\"\npassword_env = \"SMTP_PASSWORD\"",
            mail.port
        )
    };
    let env = [
        ("SSL_CERT_FILE", certificate.authority.display().to_string()),
        ("SMTP_USER", "deliverer".to_string()),
        ("SMTP_PASSWORD", "smtp-pa55word".to_string()),
    ];
    let (code, out) = notify_test(dir.path(), &policy(&smtp("starttls"), target), &env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("target 1 (email): delivered"), "{out}");
    assert!(!out.contains("smtp-pa55word"), "{out}");
    let lines = mail.wait_for("the mail", Duration::from_secs(10), |l| !l.is_empty());
    assert_eq!(lines[0]["tls"], true, "{lines:#?}");
    assert_eq!(lines[0]["login"], true, "{lines:#?}");

    let (code, out) = notify_test(dir.path(), &policy(&smtp("none"), target), &env);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("target 1 (email): not delivered: mail:"),
        "{out}"
    );
    assert_eq!(mail.lines().len(), 1, "nothing more arrived");
}
