//! The compose model inside the tenant boundary, in-process over the fake
//! engine: what `compose config` would print is set by the test, and the
//! gateway judges it before a job is recorded and again before each
//! compose command of the job.

use std::time::Duration;

use delivery_hook::docker::model::ModelError;
use serde_json::{Value, json};

use crate::support::{BILLING, Harness, SHOP, expect_problem, status_json};

/// A model whose `web` service is privileged and binds the host's `/etc`.
fn escaping_model() -> Value {
    json!({"services": {"web": {
        "image": "busybox",
        "privileged": true,
        "volumes": [{"type": "bind", "source": "/etc", "target": "/hostetc"}]
    }}})
}

fn set_model(h: &Harness, model: Result<Value, ModelError>) {
    *h.engine.model.lock().unwrap() = Some(model);
}

async fn job(h: &Harness, id: &str, secret: &str, project: &str) -> Value {
    let (_, job) = status_json(
        h.get_signed(&format!("/jobs/{id}?wait=10"), secret, project)
            .await,
    )
    .await;
    job
}

#[tokio::test]
async fn a_model_beyond_the_project_is_refused_naming_service_key_and_path() {
    let h = Harness::new().await;
    set_model(&h, Ok(escaping_model()));
    let problem = expect_problem(
        h.deploy("/pull", "billing-web", BILLING).await,
        403,
        "compose_model_not_allowed",
    )
    .await;
    let message = problem["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "service `web`, `privileged`: privileged: true, which needs allow = [\"privileged\"]"
        ),
        "{message}"
    );
    assert!(message.ends_with("(and 1 more)"), "{message}");
    assert_eq!(h.engine.command_count(), 0, "nothing ran");
    assert!(
        h.engine
            .model_calls
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );
}

#[tokio::test]
async fn a_model_compose_cannot_print_is_422_with_composes_words() {
    let h = Harness::new().await;
    set_model(
        &h,
        Err(ModelError::Config(
            "services.web.image must be a string".into(),
        )),
    );
    let problem = expect_problem(
        h.deploy("/pull", "billing-web", BILLING).await,
        422,
        "compose_config_invalid",
    )
    .await;
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("services.web.image must be a string"),
        "{problem}"
    );
    assert_eq!(h.engine.command_count(), 0);
}

#[tokio::test]
async fn warn_runs_the_job_and_audits_what_it_would_refuse() {
    // The tail lands in the last project of the test policy: shop.
    let h = Harness::with_policy("", "compose_model = \"warn\"\n").await;
    shop_deploys_the_escaping_model(&h).await;
    // billing, still enforced, is refused.
    expect_problem(
        h.deploy("/pull", "billing-web", BILLING).await,
        403,
        "compose_model_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn allow_lets_what_it_names_through() {
    let h = Harness::with_policy("", "allow = [\"privileged\"]\nhost_paths = [\"/etc\"]\n").await;
    shop_deploys_the_escaping_model(&h).await;
}

/// With [`escaping_model`] set, a deploy of `shop-web` succeeds.
async fn shop_deploys_the_escaping_model(h: &Harness) {
    set_model(h, Ok(escaping_model()));
    let (status, job) = status_json(h.deploy("/pull?wait=10", "shop-web", SHOP).await).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
}

/// A job admitted with an allowed model whose model changes before its
/// next command: it ends `failed` with the reason, and runs nothing more.
#[tokio::test]
async fn a_model_that_changes_while_a_job_runs_stops_it_before_the_next_command() {
    let h = Harness::new().await;
    let gate = h.engine.hold();
    let (status, accepted) = status_json(h.deploy("/pull", "billing-web", BILLING).await).await;
    assert_eq!(status, 202, "{accepted}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.engine.running() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "pull never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    set_model(&h, Ok(escaping_model()));
    gate.add_permits(10);
    let id = accepted["id"].as_str().unwrap();
    let ended = job(&h, id, BILLING, "billing").await;
    assert_eq!(ended["state"], "failed", "{ended}");
    let error = ended["error"].as_str().unwrap();
    assert!(
        error.contains("compose_model_not_allowed: service `web`, `privileged`"),
        "{error}"
    );
    assert!(error.contains("compose up -d did not run"), "{error}");
    let ran: Vec<String> = ended["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["argv"].to_string())
        .collect();
    assert_eq!(ran.len(), 1, "only the pull ran: {ran:?}");
    assert_eq!(h.engine.command_count(), 1);
}
