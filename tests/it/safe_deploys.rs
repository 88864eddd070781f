//! Rollback and pinned images, in-process over the fake engine: what the
//! job records and which engine calls and commands a deploy makes.

use delivery_hook::docker::ComposeOp;

use crate::support::fake_engine::{NEW_IMAGE, OLD_IMAGE, REFERENCE};
use crate::support::{BILLING, Harness, SHOP, expect_problem, now, status_json};

const HEX: &str = "c0ffee0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

fn pinned_body(container: &str, image: &str) -> String {
    serde_json::json!({ "container_name": container, "image": image }).to_string()
}

#[tokio::test]
async fn a_service_that_does_not_come_up_is_rolled_back() {
    let h = Harness::new().await;
    *h.engine.state.lock().unwrap() = ("running".into(), Some("unhealthy".into()));
    let (status, job) = status_json(h.deploy("/pull?wait=10", "billing-web", BILLING).await).await;
    assert_eq!(status, 502, "a rollback is a failure: {job}");
    assert_eq!(job["state"], "rolled_back", "{job}");
    assert_eq!(job["previous_image"], OLD_IMAGE);
    assert_eq!(job["rollback"]["from_image"], NEW_IMAGE);
    assert_eq!(job["rollback"]["to_image"], OLD_IMAGE);
    assert_eq!(job["rollback"]["state"], "succeeded");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("unhealthy") && error.contains(&format!("rolled back to {OLD_IMAGE}")),
        "{error}"
    );
    assert_eq!(
        h.engine.ops(),
        // billing may not build: its pull's `up` is `--no-build` too.
        [ComposeOp::Pull, ComposeOp::UpNoBuild, ComposeOp::UpNoBuild]
    );
    assert_eq!(job["steps"].as_array().unwrap().len(), 3);
    let id = job["id"].as_str().unwrap();
    assert_eq!(
        *h.engine.tag_calls.lock().unwrap(),
        [
            format!("tag delivery-hook/rollback:{id} {OLD_IMAGE}"),
            format!("tag {REFERENCE} {OLD_IMAGE}"),
            format!("untag delivery-hook/rollback:{id}"),
        ],
        "the previous image is kept while needed, then its reference points back at it"
    );
    assert_eq!(*h.engine.image.lock().unwrap(), OLD_IMAGE);
}

#[tokio::test]
async fn a_deploy_that_passes_the_gate_keeps_nothing_back() {
    let h = Harness::new().await;
    let (status, job) = status_json(h.deploy("/pull?wait=10", "billing-web", BILLING).await).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    assert_eq!(job["previous_image"], OLD_IMAGE);
    assert!(job.get("rollback").is_none(), "{job}");
    let id = job["id"].as_str().unwrap();
    assert_eq!(
        *h.engine.tag_calls.lock().unwrap(),
        [
            format!("tag delivery-hook/rollback:{id} {OLD_IMAGE}"),
            format!("untag delivery-hook/rollback:{id}"),
        ]
    );
}

#[tokio::test]
async fn a_failed_pull_changed_nothing_and_is_not_rolled_back() {
    let h = Harness::new().await;
    h.engine.fail_step("pull", 1);
    let (_, job) = status_json(h.deploy("/pull?wait=10", "billing-web", BILLING).await).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job.get("rollback").is_none());
    assert_eq!(h.engine.ops(), [ComposeOp::Pull]);
}

#[tokio::test]
async fn a_project_without_rollback_ends_failed() {
    let h = Harness::new().await;
    *h.engine.state.lock().unwrap() = ("exited".into(), None);
    let (status, job) = status_json(h.deploy("/build?wait=10", "shop-web", SHOP).await).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (502, Some("failed")),
        "{job}"
    );
    assert!(job.get("rollback").is_none());
    assert_eq!(h.engine.ops(), [ComposeOp::UpBuild]);
    assert!(
        h.engine.tag_calls.lock().unwrap().is_empty(),
        "nothing is kept for a rollback that will not happen"
    );
}

#[tokio::test]
async fn a_pin_of_the_compose_files_repository_deploys_that_digest() {
    let h = Harness::new().await;
    let image = format!("127.0.0.1:5000/billing/web@sha256:{HEX}");
    let body = pinned_body("billing-web", &image);
    let (status, job) = status_json(
        h.post_signed("/pull?wait=10", &body, BILLING, now(), None)
            .await,
    )
    .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    assert_eq!(job["image"], image);
    assert_eq!(job["image_digest"], format!("sha256:{HEX}"));
    // Compose ran the judged copy of the model, the pin merged in.
    let argv: Vec<String> = serde_json::from_value(job["steps"][0]["argv"].clone()).unwrap();
    let files: Vec<&String> = argv.iter().filter(|a| a.starts_with("--file=")).collect();
    assert_eq!(files.len(), 1, "{argv:?}");
    let copy = files[0].strip_prefix("--file=").unwrap();
    assert!(copy.contains("/state/judged/billing/"), "{copy}");
    let text = std::fs::read_to_string(copy).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["services"]["web"]["image"], image);
    assert!(
        argv.iter().any(|a| a.ends_with("/state/judged/empty.env")),
        "no .env of the project's is read: {argv:?}"
    );
}

/// Where the project's model is not judged, compose gets the user's file,
/// then the gateway's override.
#[tokio::test]
async fn a_pin_without_a_judged_model_is_an_override_file() {
    let h = Harness::with_policy("", "compose_model = \"off\"\n").await;
    let image = format!("127.0.0.1:5000/shop/web@sha256:{HEX}");
    let body = pinned_body("shop-web", &image);
    let (status, job) = status_json(
        h.post_signed("/pull?wait=10", &body, SHOP, now(), None)
            .await,
    )
    .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    let argv: Vec<String> = serde_json::from_value(job["steps"][0]["argv"].clone()).unwrap();
    let files: Vec<&String> = argv.iter().filter(|a| a.starts_with("--file=")).collect();
    assert_eq!(files.len(), 2, "{argv:?}");
    assert!(files[0].ends_with("/shop/compose.yml"), "{argv:?}");
    let pin = files[1].strip_prefix("--file=").unwrap();
    assert!(
        pin.ends_with(&format!("/state/pins/shop/web/{HEX}.json")),
        "{pin}"
    );
    let text = std::fs::read_to_string(pin).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["services"]["web"]["image"], image);
}

#[tokio::test]
async fn pins_are_judged_before_anything_runs() {
    let h = Harness::new().await;
    let cases = [
        // Not a digest, an uppercase digest, a tag beside it.
        (
            "/pull",
            "billing-web",
            "127.0.0.1:5000/billing/web:2",
            BILLING,
            400,
            "invalid_image",
        ),
        (
            "/pull",
            "billing-web",
            &format!("127.0.0.1:5000/billing/web@sha256:{}", HEX.to_uppercase()),
            BILLING,
            400,
            "invalid_image",
        ),
        (
            "/pull",
            "billing-web",
            &format!("127.0.0.1:5000/billing/web:2@sha256:{HEX}"),
            BILLING,
            400,
            "invalid_image",
        ),
        // Another repository than the compose file's, without `images`.
        (
            "/pull",
            "billing-web",
            &format!("127.0.0.1:5000/shop/web@sha256:{HEX}"),
            BILLING,
            403,
            "image_not_allowed",
        ),
        // Outside shop's `images`.
        (
            "/pull",
            "shop-web",
            &format!("127.0.0.1:5000/billing/web@sha256:{HEX}"),
            SHOP,
            403,
            "image_not_allowed",
        ),
        // A pin on /build.
        (
            "/build",
            "shop-web",
            &format!("127.0.0.1:5000/shop/web@sha256:{HEX}"),
            SHOP,
            400,
            "invalid_body",
        ),
    ];
    for (path, container, image, secret, status, code) in cases {
        let body = pinned_body(container, image);
        expect_problem(
            h.post_signed(path, &body, secret, now(), None).await,
            status,
            code,
        )
        .await;
    }
    // Before the signature verifies, only the body's shape and name are
    // read: a malformed pin under a wrong key is a signature mismatch, with
    // or without X-Project.
    let body = pinned_body("billing-web", "127.0.0.1:5000/billing/web:2");
    for project in [None, Some("billing")] {
        expect_problem(
            h.post_signed("/pull", &body, SHOP, now(), project).await,
            401,
            "signature_mismatch",
        )
        .await;
    }
    assert_eq!(h.engine.command_count(), 0, "nothing ran");
    // Inside shop's `images`: accepted.
    let body = pinned_body("shop-web", &format!("127.0.0.1:5000/shop/web@sha256:{HEX}"));
    let (status, job) = status_json(h.post_signed("/pull", &body, SHOP, now(), None).await).await;
    assert_eq!(status, 202, "{job}");
}

#[tokio::test]
async fn a_pinned_and_an_unpinned_request_never_join_one_job() {
    let h = Harness::new().await;
    let hold = h.engine.hold();
    let ts = now();
    let plain = crate::support::body_for("billing-worker");
    let (_, first) = status_json(h.post_signed("/pull", &plain, BILLING, ts, None).await).await;
    // Running, it takes no one; the next identical request queues a job.
    crate::support::soon("the first job to run", || h.engine.running() > 0).await;
    let (_, queued) =
        status_json(h.post_signed("/pull", &plain, BILLING, ts - 1, None).await).await;
    let pinned = pinned_body(
        "billing-worker",
        &format!("127.0.0.1:5000/billing/web@sha256:{HEX}"),
    );
    let (_, other) =
        status_json(h.post_signed("/pull", &pinned, BILLING, ts + 1, None).await).await;
    assert_ne!(first["id"], queued["id"]);
    assert_ne!(queued["id"], other["id"], "a pin is another deploy");
    assert_eq!(other["coalesced"], false);
    hold.add_permits(100);
}
