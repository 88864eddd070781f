//! Releases and rollbacks in-process over the fake engine: what is kept,
//! who may read it, and what a rollback deploys.

use delivery_hook::docker::ComposeOp;
use serde_json::{Value, json};

use crate::support::fake_engine::REFERENCE;
use crate::support::{BILLING, Harness, SHOP, expect_problem, now, status_json};

const REPOSITORY: &str = "127.0.0.1:5000/billing/web";

/// A timestamp no other request of the test has used: a request signed
/// again with the same body and time is a replay of the first.
fn fresh_timestamp() -> u64 {
    static USED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    now() - USED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 200
}

fn digest_of(image: &str) -> String {
    let hex = format!("{:0>64}", image.trim_start_matches("sha256:"));
    format!("{REPOSITORY}@sha256:{hex}")
}

/// Deploys `billing-web` so that `up` brings `image`, with a repository
/// digest when `pushed`; returns the job.
async fn deploy_image(h: &Harness, image: &str, pushed: bool) -> Value {
    *h.engine.up_image.lock().unwrap() = Some(image.to_owned());
    let digests = if pushed {
        vec![digest_of(image)]
    } else {
        vec![]
    };
    h.engine
        .images
        .lock()
        .unwrap()
        .insert(image.to_owned(), digests);
    let (status, job) = pull(h).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    job
}

async fn pull(h: &Harness) -> (u16, Value) {
    let body = json!({"container_name": "billing-web"}).to_string();
    let response = h
        .post_signed("/pull?wait=10", &body, BILLING, fresh_timestamp(), None)
        .await;
    status_json(response).await
}

async fn releases(h: &Harness, query: &str, secret: &str, project: &str) -> (u16, Value) {
    status_json(
        h.get_signed(&format!("/releases?{query}"), secret, project)
            .await,
    )
    .await
}

async fn rollback(h: &Harness, to: &str) -> (u16, Value) {
    let body = json!({"container_name": "billing-web", "to": to}).to_string();
    status_json(
        h.post_signed("/rollback?wait=10", &body, BILLING, fresh_timestamp(), None)
            .await,
    )
    .await
}

fn jobs_of(list: &Value) -> Vec<&str> {
    list["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn each_deploy_that_succeeded_is_a_release_listed_newest_first() {
    let h = Harness::new().await;
    let first = deploy_image(&h, "sha256:a1", true).await;
    let second = deploy_image(&h, "sha256:b2", false).await;
    // One that does not come up is no release.
    *h.engine.up_image.lock().unwrap() = None;
    *h.engine.state.lock().unwrap() = ("running".into(), Some("unhealthy".into()));
    let (_, failed) = pull(&h).await;
    assert_eq!(failed["state"], "rolled_back");
    let (status, list) = releases(&h, "container_name=billing-web", BILLING, "billing").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        jobs_of(&list),
        [
            second["id"].as_str().unwrap(),
            first["id"].as_str().unwrap()
        ]
    );
    let [newest, oldest] = [&list["releases"][0], &list["releases"][1]];
    assert_eq!(newest["image"], "sha256:b2");
    assert!(newest.get("repository_digest").is_none(), "{newest}");
    assert_eq!(oldest["image"], "sha256:a1");
    assert_eq!(oldest["repository_digest"], digest_of("sha256:a1"));
    assert_eq!(oldest["requested_by"]["key_index"], 0);
    assert!(oldest["released_at"].as_str().unwrap().ends_with('Z'));
    // Another service of the project has none.
    let (status, other) = releases(&h, "container_name=billing-worker", BILLING, "billing").await;
    assert_eq!((status, jobs_of(&other).len()), (200, 0));
}

#[tokio::test]
async fn releases_are_read_only_where_a_deploy_would_be_allowed() {
    let h = Harness::new().await;
    deploy_image(&h, "sha256:a1", true).await;
    let refused = [
        (
            "container_name=billing-web",
            SHOP,
            "shop",
            403,
            "container_not_allowed",
        ),
        (
            "container_name=billing-db",
            BILLING,
            "billing",
            403,
            "container_not_allowed",
        ),
        (
            "container_name=billing-outside",
            BILLING,
            "billing",
            403,
            "compose_file_not_allowed",
        ),
        (
            "container_name=billing-gone",
            BILLING,
            "billing",
            404,
            "container_not_found",
        ),
        (
            "service_name=shop_web",
            BILLING,
            "billing",
            403,
            "service_not_allowed",
        ),
        ("", BILLING, "billing", 404, "service_not_named"),
        (
            "container_name=billing-web&service_name=x",
            BILLING,
            "billing",
            404,
            "service_not_named",
        ),
        (
            "container_name=billing-web",
            SHOP,
            "billing",
            401,
            "signature_mismatch",
        ),
    ];
    for (query, secret, project, status, code) in refused {
        let target = format!("/releases?{query}");
        expect_problem(h.get_signed(&target, secret, project).await, status, code).await;
    }
    // Unsigned, nothing is told.
    let response = h
        .client
        .get("/releases?container_name=billing-web")
        .send()
        .await;
    expect_problem(response, 401, "missing_timestamp").await;
}

#[tokio::test]
async fn releases_outlive_the_job_history_and_are_kept_to_release_history() {
    let h = Harness::with_server("release_history = 2").await;
    let mut made = Vec::new();
    for image in ["sha256:a1", "sha256:b2", "sha256:c3"] {
        made.push(deploy_image(&h, image, true).await["id"].clone());
    }
    let store = h.gateway.jobs().store();
    assert_eq!(store.prune(u64::MAX, 0, 0).await.unwrap(), 3);
    let (_, list) = releases(&h, "container_name=billing-web", BILLING, "billing").await;
    assert_eq!(
        jobs_of(&list),
        [made[2].as_str().unwrap(), made[1].as_str().unwrap()]
    );
}

#[tokio::test]
async fn a_rollback_to_previous_deploys_the_release_before_by_its_digest() {
    let h = Harness::new().await;
    let first = deploy_image(&h, "sha256:a1", true).await;
    deploy_image(&h, "sha256:b2", true).await;
    h.engine.commands.lock().unwrap().clear();
    *h.engine.up_image.lock().unwrap() = Some("sha256:a1".into());
    let (status, job) = rollback(&h, "previous").await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    assert_eq!(job["action"], "pull", "existing clients read it as a pull");
    assert_eq!(
        job["image"],
        digest_of("sha256:a1"),
        "through the pinned path"
    );
    assert_eq!(job["restored"]["job"], first["id"]);
    assert_eq!(job["restored"]["image"], digest_of("sha256:a1"));
    let ops = h.engine.ops();
    // billing may not build: its pulls run `up --no-build`.
    assert_eq!(ops, [ComposeOp::Pull, ComposeOp::UpNoBuild]);
    // The rollback is a release too: `previous` now is the second deploy.
    let (_, list) = releases(&h, "container_name=billing-web", BILLING, "billing").await;
    assert_eq!(list["releases"][0]["job"], job["id"]);
}

#[tokio::test]
async fn a_release_without_a_digest_is_restored_by_its_image_id_while_the_host_has_it() {
    let h = Harness::new().await;
    let built = deploy_image(&h, "sha256:b1", false).await;
    deploy_image(&h, "sha256:c2", true).await;
    h.engine.commands.lock().unwrap().clear();
    h.engine.tag_calls.lock().unwrap().clear();
    let id = built["id"].as_str().unwrap();
    let (status, job) = rollback(&h, id).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    assert_eq!(job["restored"]["image"], "sha256:b1");
    assert!(job.get("image").is_none(), "no pin: {job}");
    let ops = h.engine.ops();
    assert_eq!(ops, [ComposeOp::UpNoBuild], "nothing pulled or built");
    let tags = h.engine.tag_calls.lock().unwrap().clone();
    assert!(
        tags.contains(&format!("tag {REFERENCE} sha256:b1")),
        "the service's reference names the release's image: {tags:?}"
    );
    assert_eq!(*h.engine.image.lock().unwrap(), "sha256:b1");
    // Once the host no longer has it, it cannot be restored.
    deploy_image(&h, "sha256:c3", true).await;
    h.engine.images.lock().unwrap().remove("sha256:b1");
    h.engine.tags.lock().unwrap().clear();
    let (status, problem) = rollback(&h, id).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("release_not_restorable"))
    );
}

#[tokio::test]
async fn a_release_restored_by_its_image_id_moves_only_the_tag_it_ran_under() {
    let h = Harness::new().await;
    let built = deploy_image(&h, "sha256:b1", false).await;
    // The model now names another image, another team's tag say, and the
    // service runs it.
    *h.engine.reference.lock().unwrap() = Some("registry.example/other-team/app:1".into());
    deploy_image(&h, "sha256:c2", true).await;
    h.engine.commands.lock().unwrap().clear();
    h.engine.tag_calls.lock().unwrap().clear();
    let (status, problem) = rollback(&h, built["id"].as_str().unwrap()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("release_not_restorable")),
        "{problem}"
    );
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("did not run under the image reference"),
        "{problem}"
    );
    assert!(
        h.engine.tag_calls.lock().unwrap().is_empty(),
        "no tag moved"
    );
    assert!(h.engine.ops().is_empty(), "nothing ran");
    // Back under the reference it ran under, it is restored.
    *h.engine.reference.lock().unwrap() = None;
    deploy_image(&h, "sha256:c3", true).await;
    let (status, job) = rollback(&h, built["id"].as_str().unwrap()).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    assert!(
        h.engine
            .tag_calls
            .lock()
            .unwrap()
            .contains(&format!("tag {REFERENCE} sha256:b1"))
    );
}

#[tokio::test]
async fn a_rollback_is_refused_as_a_pull_is_and_names_a_release_of_its_own() {
    let h = Harness::new().await;
    // No release yet.
    let (status, problem) = rollback(&h, "previous").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("release_not_found"))
    );
    let job = deploy_image(&h, "sha256:a1", true).await;
    let (status, problem) = rollback(&h, "previous").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("release_not_found")),
        "the only release is what runs"
    );
    let id = job["id"].as_str().unwrap();
    let bodies = [
        (
            json!({"container_name": "billing-web"}),
            400,
            "invalid_body",
        ),
        (
            json!({"container_name": "billing-web", "to": "last"}),
            400,
            "invalid_body",
        ),
        (
            json!({"container_name": "billing-web", "to": "previous", "image": digest_of("sha256:a1")}),
            400,
            "invalid_body",
        ),
        (
            json!({"container_name": "billing-db", "to": id}),
            403,
            "container_not_allowed",
        ),
        (
            json!({"container_name": "billing-worker", "to": id}),
            404,
            "release_not_found",
        ),
    ];
    for (body, status, code) in bodies {
        let response = h
            .post_signed(
                "/rollback",
                &body.to_string(),
                BILLING,
                fresh_timestamp(),
                Some("billing"),
            )
            .await;
        expect_problem(response, status, code).await;
    }
    // Another project's signature cannot name billing's release.
    let body = json!({"container_name": "billing-web", "to": id}).to_string();
    let response = h
        .post_signed("/rollback", &body, SHOP, fresh_timestamp(), Some("shop"))
        .await;
    expect_problem(response, 403, "container_not_allowed").await;
    assert_eq!(*h.engine.image.lock().unwrap(), "sha256:a1");
}

#[tokio::test]
async fn a_release_without_a_digest_keeps_its_image_tagged_while_it_is_kept() {
    let h = Harness::with_server("release_history = 2").await;
    let built = deploy_image(&h, "sha256:b1", false).await;
    let tag = format!("delivery-hook/release:{}", built["id"].as_str().unwrap());
    let tagged = |h: &Harness| h.engine.tags.lock().unwrap().get(&tag).cloned();
    assert_eq!(tagged(&h).as_deref(), Some("sha256:b1"));
    deploy_image(&h, "sha256:c2", true).await;
    assert_eq!(tagged(&h).as_deref(), Some("sha256:b1"), "still kept");
    deploy_image(&h, "sha256:d3", true).await;
    assert_eq!(tagged(&h), None, "pushed out of the history, untagged");
    let (_, list) = releases(&h, "container_name=billing-web", BILLING, "billing").await;
    assert_eq!(jobs_of(&list).len(), 2);
}

#[tokio::test]
async fn a_swarm_service_is_rolled_back_to_its_previous_release_by_digest() {
    use delivery_hook::docker::SwarmService;
    const REPO: &str = "127.0.0.1:5000/shop/web";
    let [zero, old, new] = ["0", "1", "2"].map(|d| format!("sha256:{}", d.repeat(64)));
    let h = Harness::new().await;
    h.engine
        .swarm_manager
        .store(true, std::sync::atomic::Ordering::SeqCst);
    h.engine.services.lock().unwrap().insert(
        "shop_web".into(),
        SwarmService {
            id: "svc-1".into(),
            name: "shop_web".into(),
            image: format!("{REPO}:1@{zero}"),
            update: None,
        },
    );
    let registry = |reference: String, digest: &str| {
        h.engine
            .registry
            .lock()
            .unwrap()
            .insert(reference, digest.to_owned())
    };
    let pull = async || {
        let body = json!({"service_name": "shop_web"}).to_string();
        let response = h
            .post_signed("/pull?wait=10", &body, SHOP, fresh_timestamp(), None)
            .await;
        status_json(response).await
    };
    registry(format!("{REPO}:1"), &old);
    let (_, first) = pull().await;
    registry(format!("{REPO}:1"), &new);
    let (_, second) = pull().await;
    assert_eq!(
        [first["state"].as_str(), second["state"].as_str()],
        [Some("succeeded"); 2]
    );
    let (status, list) = releases(&h, "service_name=shop_web", SHOP, "shop").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list["releases"][1]["repository_digest"],
        format!("{REPO}@{old}")
    );

    registry(format!("{REPO}@{old}"), &old);
    let body = json!({"service_name": "shop_web", "to": "previous"}).to_string();
    let response = h
        .post_signed("/rollback?wait=10", &body, SHOP, fresh_timestamp(), None)
        .await;
    let (status, job) = status_json(response).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    assert_eq!(job["restored"]["job"], first["id"]);
    assert_eq!(job["image"], format!("{REPO}@{old}"));
    let image = h.engine.services.lock().unwrap()["shop_web"].image.clone();
    assert!(image.ends_with(&format!("@{old}")), "{image}");
}
