//! The CI steps as the runners run them, on the real engine: the image
//! under test started as GitHub starts a container action (the `docker
//! run` built from `action.yml`) and as GitLab runs the component's job,
//! each redeploying a real compose service through a live gateway, with a
//! CI token and with a secret.

use serde_json::{Value, json};

use super::image::image_under_test;
use super::*;
use crate::support::ci::{self, StepRun};
use crate::support::issuer::{RUNTIME_TOKEN, Signer, TestIssuer};

const AUD: &str = "https://deploy.ci-steps.e2e";

/// A project that takes GitHub tokens of org/web on main and GitLab
/// tokens of group/web on main, for `container`.
fn keyless_project(issuer: &str, container: &str) -> String {
    format!(
        "\n[projects.keyless]\ncontainers = [\"{container}\"]\nactions = [\"pull\"]\n\n[[projects.keyless.oidc]]\nissuer = \"{issuer}\"\naudience = \"{AUD}\"\nclaims = {{ repository = \"org/web\", ref = \"refs/heads/main\" }}\n\n[[projects.keyless.oidc]]\nissuer = \"{issuer}\"\naudience = \"{AUD}\"\nclaims = {{ project_path = \"group/web\", ref = \"main\", ref_protected = \"true\" }}\n"
    )
}

/// A token shaped as GitLab's `id_tokens` give one, for `project_path`.
fn gitlab_token(issuer: &TestIssuer, project_path: &str) -> String {
    let mut claims = issuer.claims(AUD);
    let claims_map = claims.as_object_mut().unwrap();
    for github_only in ["repository", "repository_owner_id", "run_attempt"] {
        claims_map.remove(github_only);
    }
    for (key, value) in [
        (
            "sub",
            json!(format!(
                "project_path:{project_path}:ref_type:branch:ref:main"
            )),
        ),
        ("project_path", json!(project_path)),
        ("project_id", json!("7")),
        ("namespace_path", json!("group")),
        ("ref", json!("main")),
        ("ref_type", json!("branch")),
        ("ref_protected", json!("true")),
        ("pipeline_source", json!("push")),
    ] {
        claims_map.insert(key.into(), value);
    }
    issuer.token(Signer::Rsa1, &claims)
}

fn said(run: &StepRun) -> String {
    format!("{}{}", run.stdout, run.stderr)
}

#[tokio::test]
async fn e2e_the_action_and_the_component_deploy_as_their_runners_run_them() {
    let Some(image) = image_under_test() else {
        return;
    };
    with_tool(Compose::V2, |tool| async move {
        let issuer = TestIssuer::start(&[Signer::Rsa1]);
        issuer.require_runtime_audience(AUD);
        let f = Fixture::with_registry(tool);
        let repo = f.web_v1_published();
        let container = f.up_web(&repo);
        let keyless = keyless_project(&issuer.url, &container);
        let gateway = GatewayProcess::start_with(&f, "", "", &keyless);
        github_action_deploys(&f, &image, &issuer, &gateway, &repo, &container);
        gitlab_component_deploys(&f, &image, &issuer, &gateway, &repo, &container);
    })
    .await;
}

/// The action with an OIDC token from the runner's endpoint, then with a
/// secret; each time the outputs are read back.
fn github_action_deploys(
    f: &Fixture,
    image: &str,
    issuer: &TestIssuer,
    gateway: &GatewayProcess,
    repo: &str,
    container: &str,
) {
    let v2 = f.push_version(repo, "v2");
    let runtime = issuer.runtime_url();
    let runner = [
        ("ACTIONS_ID_TOKEN_REQUEST_URL", runtime.as_str()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", RUNTIME_TOKEN),
    ];
    let inputs = [
        ("url", gateway.url.as_str()),
        ("container", container),
        ("oidc-audience", AUD),
        ("wait", "120"),
    ];
    let run = ci::run_action(image, &f.id, f.dir.path(), &inputs, &runner);
    assert_eq!(run.code, 0, "{}\n{}", said(&run), gateway.log_text());
    assert_eq!(issuer.runtime_tokens(), 1, "one token, for the audience");
    assert_eq!(run.outputs["state"], "succeeded", "{:?}", run.outputs);
    assert_eq!(run.outputs["image"], v2);
    assert_eq!(f.content(container), "v2");
    let results: Value = serde_json::from_str(&run.outputs["results"]).unwrap();
    assert_eq!(results[0]["outcome"], "deployed");
    assert_eq!(
        results[0]["job"]["id"].as_str(),
        Some(run.outputs["job-id"].as_str())
    );
    assert_eq!(results[0]["job"]["project"], "keyless");
    assert!(
        run.stdout
            .contains(&format!("deployed:    {}", gateway.url)),
        "{}",
        said(&run)
    );

    // A token for another audience is not given: the step fails, saying
    // why, and nothing is deployed.
    let inputs = [
        ("url", gateway.url.as_str()),
        ("container", container),
        ("oidc-audience", "https://elsewhere.e2e"),
    ];
    let run = ci::run_action(image, &f.id, f.dir.path(), &inputs, &runner);
    eprintln!("what the failing GitHub step printed:\n{}", said(&run));
    assert_eq!(run.code, 2, "{}", said(&run));
    assert!(
        run.stdout.contains("::error title=delivery-hook::")
            && run.stdout.contains("token request answered 403"),
        "{}",
        said(&run)
    );
    assert_eq!(issuer.runtime_tokens(), 1);

    // With a secret instead: in the environment, never in an argument or
    // an output.
    let v3 = f.push_version(repo, "v3");
    let inputs = [
        ("url", gateway.url.as_str()),
        ("container", container),
        ("secret", SECRET),
        ("wait", "120"),
    ];
    let run = ci::run_action(image, &f.id, f.dir.path(), &inputs, &[]);
    assert_eq!(run.code, 0, "{}", said(&run));
    assert_eq!(run.outputs["image"], v3);
    assert!(!said(&run).contains(SECRET) && !format!("{:?}", run.outputs).contains(SECRET));
    assert!(!gateway.log_text().contains(SECRET));
}

/// The component's job with a GitLab-shaped token: deployed; then with a
/// token of a project the rule does not allow: the job fails, saying why.
fn gitlab_component_deploys(
    f: &Fixture,
    image: &str,
    issuer: &TestIssuer,
    gateway: &GatewayProcess,
    repo: &str,
    container: &str,
) {
    let v4 = f.push_version(repo, "v4");
    let inputs = [
        ("url", gateway.url.as_str()),
        ("container", container),
        ("oidc-audience", AUD),
        ("wait", "120"),
    ];
    let token = gitlab_token(issuer, "group/web");
    let run = ci::run_component(image, &f.id, &inputs, &[("DELIVERY_ID_TOKEN", &token)]);
    assert_eq!(run.code, 0, "{}\n{}", said(&run), gateway.log_text());
    assert!(run.stdout.contains("succeeded"), "{}", said(&run));
    assert_eq!(f.container(container)["Image"].as_str(), Some(v4.as_str()));

    let other = gitlab_token(issuer, "group/other");
    let run = ci::run_component(image, &f.id, &inputs, &[("DELIVERY_ID_TOKEN", &other)]);
    eprintln!("what the failing GitLab job printed:\n{}", said(&run));
    assert_eq!(run.code, 2, "{}", said(&run));
    assert!(
        run.stderr.contains("refused (403 token_not_allowed)"),
        "{}",
        said(&run)
    );
    assert_eq!(f.container(container)["Image"].as_str(), Some(v4.as_str()));
}
