//! CI tokens end to end: the real binary, the real engine, `trigger` as a
//! GitHub Actions job and as a GitLab CI job would run it, with no secret.

use std::process::Command;

use serde_json::{Value, json};

use super::*;
use crate::support::issuer::{RUNTIME_TOKEN, Signer, TestIssuer};

const AUD: &str = "https://deploy.e2e";

/// `trigger` with `args` and `env`, with no secret in its environment.
fn trigger_keyless(url: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_delivery-hook"))
        .args(["trigger", "--url", url, "--wait", "120", "--output", "json"])
        .args(args)
        .env_remove("DELIVERY_SECRET")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let progress = String::from_utf8_lossy(&out.stderr).to_string();
    let job = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), job, progress)
}

per_compose_tool!(e2e_ci_tokens_deploy_without_a_secret_and_only_once);
async fn e2e_ci_tokens_deploy_without_a_secret_and_only_once(tool: Compose) {
    let issuer = TestIssuer::start(&[Signer::Rsa1]);
    let f = Fixture::with_registry(tool);
    let repo = f.web_v1_published();
    let container = f.up_web(&repo);
    let v2 = f.push_version(&repo, "v2");

    // A project with no secret at all: only tokens of org/web on main, or
    // on `slow`, whose tokens are good for two seconds.
    let keyless = format!(
        "\n[projects.keyless]\ncontainers = [\"{container}\"]\nactions = [\"pull\"]\n\n[[projects.keyless.oidc]]\nissuer = \"{url}\"\naudience = \"{AUD}\"\nclaims = {{ repository = \"org/web\", ref = \"refs/heads/main\" }}\n\n[[projects.keyless.oidc]]\nissuer = \"{url}\"\naudience = \"{AUD}\"\nclaims = {{ repository = \"org/web\", ref = \"refs/heads/slow\" }}\nmax_token_age_secs = 2\n",
        url = issuer.url
    );
    // Every deploy that recreates the container takes over four seconds.
    let docker = "stable_secs = 4";
    let gateway = GatewayProcess::start_with(&f, "", docker, &keyless);

    // As a GitHub Actions job with `permissions: id-token: write`.
    let runtime_url = issuer.runtime_url();
    let github = [
        ("ACTIONS_ID_TOKEN_REQUEST_URL", runtime_url.as_str()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", RUNTIME_TOKEN),
    ];
    let (code, job, progress) = trigger_keyless(
        &gateway.url,
        &["--container", &container, "--oidc", AUD],
        &github,
    );
    assert_eq!(code, 0, "{progress}\n{}", gateway.log_text());
    assert_eq!(
        (job["state"].as_str(), job["project"].as_str()),
        (Some("succeeded"), Some("keyless"))
    );
    let deployed = f.container(&container);
    assert_eq!(deployed["Image"].as_str(), Some(v2.as_str()));
    assert_eq!(f.content(&container), "v2");
    assert!(
        gateway
            .log_text()
            .contains(r#"token_subject="repo:org/web:ref:refs/heads/main""#),
        "the audit line names the token's subject: {}",
        gateway.log_text()
    );

    // A token for a branch the rule does not allow: refused, exit 2.
    issuer.set_runtime_claims(json!({"ref": "refs/heads/feature"}));
    let (code, _, progress) = trigger_keyless(
        &gateway.url,
        &["--container", &container, "--oidc", AUD],
        &github,
    );
    assert_eq!(code, 2, "{progress}");
    assert!(
        progress.contains("refused (403 token_not_allowed)"),
        "{progress}"
    );
    // A job that outlasts its token: trigger asks the runner for a fresh one
    // to follow it.
    let v3 = f.push_version(&repo, "v3");
    issuer.set_runtime_claims(json!({"ref": "refs/heads/slow"}));
    let given = issuer.runtime_tokens();
    let (code, job, progress) = trigger_keyless(
        &gateway.url,
        &["--container", &container, "--oidc", AUD],
        &github,
    );
    assert_eq!(code, 0, "{progress}");
    assert_eq!(job["state"], "succeeded");
    assert!(
        issuer.runtime_tokens() - given >= 2,
        "a token was renewed: {progress}"
    );
    assert_eq!(f.container(&container)["Image"].as_str(), Some(v3.as_str()));
    let deployed = f.container(&container);

    // Outside GitHub Actions, --oidc says what is missing.
    let (code, _, progress) = trigger_keyless(
        &gateway.url,
        &["--container", &container, "--oidc", AUD],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        progress.contains("permissions: id-token: write"),
        "{progress}"
    );

    // As a GitLab CI job: the token in a variable (`id_tokens`).
    let token = issuer.token(Signer::Rsa1, &issuer.claims(AUD));
    let gitlab = [("DEPLOY_ID_TOKEN", token.as_str())];
    let args = ["--container", &container, "--token-env", "DEPLOY_ID_TOKEN"];
    let (code, first, progress) = trigger_keyless(&gateway.url, &args, &gitlab);
    assert_eq!(code, 0, "{progress}");
    assert_eq!(first["state"], "succeeded");
    // The same token again: the first job, nothing run.
    let (code, again, progress) = trigger_keyless(&gateway.url, &args, &gitlab);
    assert_eq!(code, 0, "{progress}");
    assert_eq!(
        (&again["id"], &again["replayed"]),
        (&first["id"], &json!(true))
    );
    assert!(progress.contains("(replayed)"), "{progress}");

    // And after a restart, still the first job.
    drop(gateway);
    let gateway = GatewayProcess::start_with(&f, "", docker, &keyless);
    let (code, after, progress) = trigger_keyless(&gateway.url, &args, &gitlab);
    assert_eq!(code, 0, "{progress}");
    assert_eq!(
        (&after["id"], &after["replayed"]),
        (&first["id"], &json!(true))
    );
    assert_eq!(
        f.container(&container)["Id"],
        deployed["Id"],
        "neither the GitLab job nor its replays recreated the container"
    );
}
