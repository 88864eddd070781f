//! Swarm services, in-process over the fake engine: the refusals, in their
//! order, and what a job sends the engine.

use std::sync::atomic::Ordering;

use delivery_hook::docker::{SwarmService, UpdateState};

use crate::support::{BILLING, Harness, SHOP, expect_problem, now, status_json};

const OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const REPO: &str = "127.0.0.1:5000/shop/web";

fn service_body(name: &str) -> String {
    serde_json::json!({ "service_name": name }).to_string()
}

/// A manager with the service `shop_web` on `OLD`, whose tag the registry
/// now resolves to `NEW`.
fn manager(h: &Harness) {
    h.engine.swarm_manager.store(true, Ordering::SeqCst);
    h.engine.services.lock().unwrap().insert(
        "shop_web".into(),
        SwarmService {
            id: "svc-1".into(),
            name: "shop_web".into(),
            image: format!("{REPO}:1@{OLD}"),
            update: None,
        },
    );
    h.engine
        .registry
        .lock()
        .unwrap()
        .insert(format!("{REPO}:1"), NEW.into());
}

#[tokio::test]
async fn swarm_refusals_come_in_order_and_run_nothing() {
    let h = Harness::new().await;
    let post = async |path: &str, body: String, secret: &str| {
        h.post_signed(path, &body, secret, now(), None).await
    };
    // Not a manager.
    expect_problem(
        post("/pull", service_body("shop_web"), SHOP).await,
        422,
        "not_swarm_manager",
    )
    .await;
    manager(&h);
    for (path, body, secret, status, code) in [
        ("/pull", service_body("-bad"), SHOP, 400, "invalid_service_name"),
        (
            "/pull",
            serde_json::json!({"service_name": "shop_web", "container_name": "shop-web"}).to_string(),
            SHOP,
            400,
            "invalid_body",
        ),
        // Billing's keys cannot sign for a service only shop names.
        ("/pull", service_body("shop_web"), BILLING, 401, "signature_mismatch"),
        ("/pull", service_body("shop_other"), SHOP, 404, "service_not_found"),
        ("/build", service_body("shop_web"), SHOP, 422, "not_buildable"),
        (
            "/pull",
            serde_json::json!({"service_name": "shop_web", "image": format!("127.0.0.1:5000/billing/web@{OLD}")}).to_string(),
            SHOP,
            403,
            "image_not_allowed",
        ),
    ] {
        expect_problem(post(path, body, secret).await, status, code).await;
    }
    // Named with X-Project, a project without `services` is refused as such.
    let body = service_body("shop_web");
    expect_problem(
        h.post_signed("/pull", &body, BILLING, now(), Some("billing"))
            .await,
        403,
        "service_not_allowed",
    )
    .await;
    assert!(h.engine.swarm_updates.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_service_is_pinned_to_the_digest_its_tag_resolves_to_once() {
    let h = Harness::new().await;
    manager(&h);
    // A timestamp of its own for each request: the same body signed at
    // the same second is a replay.
    let base = now();
    let (status, job) = status_json(
        h.post_signed("/pull?wait=10", &service_body("shop_web"), SHOP, base, None)
            .await,
    )
    .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}"
    );
    assert_eq!(job["swarm_service"], "shop_web");
    assert_eq!(job["service"], "shop_web");
    assert_eq!(job["container_name"], "");
    assert_eq!(job["replicas_updated"], 2);
    assert_eq!(job["previous_image"], format!("{REPO}:1@{OLD}"));
    assert_eq!(
        *h.engine.swarm_updates.lock().unwrap(),
        [format!("shop_web {REPO}:1@{NEW}")],
        "the tag kept, the new digest pinned"
    );
    // The same digest again: nothing is sent, so the engine keeps its
    // previous spec for a rollback.
    let (status, again) = status_json(
        h.post_signed(
            "/pull?wait=10",
            &service_body("shop_web"),
            SHOP,
            base - 1,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, again["message"].as_str()),
        (200, Some("up to date")),
        "{again:#}"
    );
    assert_eq!(h.engine.swarm_updates.lock().unwrap().len(), 1);
    // A pin inside shop's `images`.
    let body = serde_json::json!({"service_name": "shop_web", "image": format!("{REPO}@{OLD}")})
        .to_string();
    h.engine
        .registry
        .lock()
        .unwrap()
        .insert(format!("{REPO}@{OLD}"), OLD.into());
    let (_, pinned) = status_json(
        h.post_signed("/pull?wait=10", &body, SHOP, base - 2, None)
            .await,
    )
    .await;
    assert_eq!(pinned["state"], "succeeded", "{pinned:#}");
    assert_eq!(pinned["image_digest"], OLD);
    assert_eq!(
        h.engine.swarm_updates.lock().unwrap().last().unwrap(),
        &format!("shop_web {REPO}@{OLD}")
    );
    // A tag the registry does not know fails with its words.
    h.engine.registry.lock().unwrap().clear();
    let (status, failed) = status_json(
        h.post_signed(
            "/pull?wait=10",
            &service_body("shop_web"),
            SHOP,
            base - 3,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, failed["state"].as_str()),
        (502, Some("failed")),
        "{failed:#}"
    );
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("manifest unknown"),
        "{failed:#}"
    );
}

#[tokio::test]
async fn an_update_to_the_same_digest_still_under_way_is_followed_not_called_up_to_date() {
    let h = Harness::new().await;
    manager(&h);
    {
        let mut services = h.engine.services.lock().unwrap();
        let service = services.get_mut("shop_web").unwrap();
        service.image = format!("{REPO}:1@{NEW}");
        service.update = Some(UpdateState {
            state: "updating".into(),
            started_at: Some("earlier".into()),
            message: Some("update in progress".into()),
        });
    }
    let (status, job) = status_json(
        h.post_signed("/pull", &service_body("shop_web"), SHOP, now(), None)
            .await,
    )
    .await;
    assert_eq!(status, 202, "{job:#}");
    let id = job["id"].as_str().unwrap().to_string();
    let target = format!("/jobs/{id}?wait=1");
    let (_, running) = status_json(h.get_signed(&target, SHOP, "shop").await).await;
    assert_eq!(
        running["state"], "running",
        "it follows the update: {running:#}"
    );
    h.engine
        .services
        .lock()
        .unwrap()
        .get_mut("shop_web")
        .unwrap()
        .update
        .as_mut()
        .unwrap()
        .state = "completed".into();
    let target = format!("/jobs/{id}?wait=10");
    let (_, done) = status_json(h.get_signed(&target, SHOP, "shop").await).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["message"], "pulling", "not up to date: {done:#}");
    assert!(
        h.engine.swarm_updates.lock().unwrap().is_empty(),
        "nothing sent"
    );
}

#[tokio::test]
async fn readiness_says_whether_the_engine_is_a_swarm_manager() {
    let h = Harness::new().await;
    for manager in [false, true] {
        h.engine.swarm_manager.store(manager, Ordering::SeqCst);
        let (status, ready) = status_json(h.client.get("/readyz").send().await).await;
        assert_eq!(
            (status, &ready["swarm_manager"]),
            (200, &serde_json::Value::from(manager))
        );
    }
}

/// What the engine reports ends the job: each `UpdateStatus` state, and a
/// job timeout while it still says `updating`.
#[tokio::test]
async fn the_engines_update_status_decides_the_job() {
    let h = crate::support::Harness::with_docker("job_timeout_secs = 2").await;
    manager(&h);
    let base = now();
    let cases = [
        (
            "paused",
            502,
            "failed",
            "the engine paused the update: update paused",
        ),
        (
            "rollback_paused",
            502,
            "failed",
            "rollback of the update paused",
        ),
        (
            "rollback_completed",
            502,
            "rolled_back",
            "the engine rolled the update back",
        ),
        (
            "updating",
            502,
            "timed_out",
            "the engine was asked to roll it back",
        ),
    ];
    for (i, (outcome, status, state, says)) in cases.into_iter().enumerate() {
        *h.engine.update_outcome.lock().unwrap() = Some(outcome.into());
        // A digest of its own each time, so every case sends an update.
        let digest = format!("sha256:{:064x}", i + 7);
        h.engine
            .registry
            .lock()
            .unwrap()
            .insert(format!("{REPO}:1"), digest);
        let ts = base - i as u64;
        let (got, job) = status_json(
            h.post_signed("/pull?wait=10", &service_body("shop_web"), SHOP, ts, None)
                .await,
        )
        .await;
        assert_eq!(
            (got, job["state"].as_str()),
            (status, Some(state)),
            "{outcome}: {job:#}"
        );
        let error = job["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{outcome}: {error}");
    }
    assert_eq!(
        h.engine.swarm_updates.lock().unwrap().last().unwrap(),
        "shop_web rollback",
        "past the timeout the engine is asked to roll back"
    );
}
