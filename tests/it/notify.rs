//! Notifications without the engine: `notify-test` against real receivers
//! (a webhook receiver verifying with the Standard Webhooks reference
//! library, a Slack-shaped receiver, an SMTP server with and without
//! STARTTLS).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::receivers::{MailTls, Receiver, certificate, new_key, python};
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
    let mail = Receiver::smtp(&python, dir.path(), "mail", MailTls::Plain, None);
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

/// The `[notify.smtp]` lines for `port` with `tls`, logging in with the
/// variables [`mail_env`] sets.
fn smtp_settings(port: u16, tls: &str) -> String {
    format!(
        "host = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\nfrom = \"dh@example.com\"\nusername_env = \"SMTP_USER\"\npassword_env = \"SMTP_PASSWORD\""
    )
}

fn mail_env(authority: &Path) -> [(&'static str, String); 3] {
    [
        ("SSL_CERT_FILE", authority.display().to_string()),
        ("SMTP_USER", "deliverer".to_string()),
        ("SMTP_PASSWORD", "smtp-pa55word".to_string()),
    ]
}

const MAIL_TARGET: &str = "[[projects.web.notify]]\nkind = \"email\"\nto = [\"ops@example.com\"]\n";

/// Sends the test mail with `tls` to `mail`; a delivery must have come over
/// TLS with the login, and a failure must name the mail.
fn send_test_mail(dir: &Path, mail: &Receiver, tls: &str, authority: &Path, delivered: bool) {
    let before = mail.lines().len();
    let text = policy(&smtp_settings(mail.port, tls), MAIL_TARGET);
    let (code, out) = notify_test(dir, &text, &mail_env(authority));
    assert!(!out.contains("smtp-pa55word"), "{out}");
    if !delivered {
        assert_eq!(code, 1, "{tls}: {out}");
        assert!(
            out.contains("target 1 (email): not delivered: mail:"),
            "{out}"
        );
        assert_eq!(mail.lines().len(), before, "{tls}: nothing arrived");
        return;
    }
    assert_eq!(code, 0, "{tls}: {out}");
    assert!(out.contains("target 1 (email): delivered"), "{out}");
    let lines = mail.wait_for("the mail", Duration::from_secs(10), |l| l.len() > before);
    assert_eq!(lines[before]["tls"], true, "{lines:#?}");
    assert_eq!(lines[before]["login"], true, "{lines:#?}");
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
        MailTls::StartTls(&certificate),
        Some(("deliverer", "smtp-pa55word")),
    );
    let authority = &certificate.authority;
    send_test_mail(dir.path(), &mail, "starttls", authority, true);
    send_test_mail(dir.path(), &mail, "none", authority, false);
    // TLS from the first byte meets a plain greeting.
    send_test_mail(dir.path(), &mail, "tls", authority, false);
}

/// `tls = "tls"` speaks TLS from the first byte (port 465's way), checks
/// the server's certificate against the system's authorities, and logs in
/// inside it.
#[test]
fn mail_over_implicit_tls_is_sent_inside_tls_from_the_first_byte() {
    let Some(python) = python() else { return };
    let dir = temp_dir("notify-smtps");
    let server = certificate(dir.path());
    let mail = Receiver::smtp(
        &python,
        dir.path(),
        "mail",
        MailTls::Implicit(&server),
        Some(("deliverer", "smtp-pa55word")),
    );
    send_test_mail(dir.path(), &mail, "tls", &server.authority, true);
    // An authority that did not sign the server's certificate.
    let stranger = dir.path().join("stranger");
    std::fs::create_dir(&stranger).unwrap();
    let stranger = certificate(&stranger).authority;
    send_test_mail(dir.path(), &mail, "tls", &stranger, false);
}
