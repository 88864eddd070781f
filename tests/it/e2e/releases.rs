//! Releases and rollbacks on the real engine, under each compose tool: to
//! `previous` and to a chosen job by digest, a built release by its image
//! id, and the refusal once that image is gone.

use serde_json::{Value, json};

use super::*;

/// Rolls `container` back to `to` with `trigger --rollback-to`; returns its
/// exit code and the job.
fn roll_back(gateway: &GatewayProcess, container: &str, to: &str) -> (i32, Value) {
    let (code, job, _) = trigger(
        &gateway.url,
        &["--container", container, "--rollback-to", to],
    );
    (code, job)
}

/// Deploys `container` with `path` and waits for it to succeed; the job.
async fn deployed(client: &Client, path: &str, container: &str) -> Value {
    let (status, job) = client.deploy(&format!("{path}?wait=120"), container).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    job
}

per_compose_tool!(e2e_a_service_is_rolled_back_to_previous_and_to_a_chosen_release);
/// Two pulls make two releases with digests; `previous` brings back the
/// first through the pinned path, and naming the second's job brings it.
async fn e2e_a_service_is_rolled_back_to_previous_and_to_a_chosen_release(tool: Compose) {
    let f = Fixture::with_registry(tool);
    let repo = f.web_v1_published();
    let container = f.up_web(&repo);
    let gateway = GatewayProcess::start(&f, "");
    let client = Client::new(&gateway);
    let first = deployed(&client, "/pull", &container).await;
    f.push_version(&repo, "v2");
    let second = deployed(&client, "/pull", &container).await;
    assert_eq!(f.content(&container), "v2");

    let (code, job) = roll_back(&gateway, &container, "previous");
    assert_eq!(
        (code, job["state"].as_str()),
        (0, Some("succeeded")),
        "{job}"
    );
    assert_eq!(job["action"], "pull");
    assert_eq!(job["restored"]["job"], first["id"]);
    let pin = job["restored"]["image"].as_str().unwrap();
    let repository = f.remote(&format!("{}/web", f.id));
    assert!(pin.starts_with(&format!("{repository}@sha256:")), "{pin}");
    assert_eq!(job["image"], pin, "deployed through the pinned path");
    assert_eq!(f.content(&container), "v1");

    let chosen = second["id"].as_str().unwrap();
    let (code, job) = roll_back(&gateway, &container, chosen);
    assert_eq!(
        (code, job["state"].as_str()),
        (0, Some("succeeded")),
        "{job}"
    );
    assert_eq!(job["restored"]["job"], chosen);
    assert_eq!(f.content(&container), "v2");
}

per_compose_tool!(e2e_a_built_release_is_restored_by_its_image_id_while_the_host_has_it);
/// Two builds make two releases without a digest; rolling back to the
/// first points the service's tag at its image id and runs `up` without
/// building. Once that image is gone it cannot be restored: 422.
async fn e2e_a_built_release_is_restored_by_its_image_id_while_the_host_has_it(tool: Compose) {
    let f = Fixture::new(tool);
    let container = format!("{}-web", f.id);
    let image = format!("{}/web:local", f.id);
    let app = f.dir.path().join("app");
    f.write_context("app/web", "b1", "");
    let file = compose(&[service(
        "web",
        &image,
        &container,
        &f.id,
        "    build: ./web\n",
    )]);
    f.compose_up(&f.id, &app, &[("compose.yml", file)], &["--build"]);
    let gateway = GatewayProcess::start(&f, "");
    let client = Client::new(&gateway);
    let first = deployed(&client, "/build", &container).await;
    let b1 = first["running_image"].as_str().unwrap().to_owned();
    f.write_context("app/web", "b2", "");
    deployed(&client, "/build", &container).await;
    assert_eq!(f.content(&container), "b2");

    let (code, job) = roll_back(&gateway, &container, "previous");
    assert_eq!(
        (code, job["state"].as_str()),
        (0, Some("succeeded")),
        "{job}"
    );
    assert_eq!(job["restored"], json!({"job": first["id"], "image": b1}));
    assert!(job.get("image").is_none(), "no pin: {job}");
    let argv: Vec<String> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["argv"].to_string())
        .collect();
    assert_eq!(argv.len(), 1, "{argv:?}");
    assert!(argv[0].contains("--no-build"), "{argv:?}");
    assert_eq!(f.content(&container), "b1");

    // Built again, then b1 removed from the host: nothing to restore.
    f.write_context("app/web", "b3", "");
    deployed(&client, "/build", &container).await;
    run("docker", &["rmi", "-f", &b1]);
    let body = json!({"container_name": container, "to": first["id"]}).to_string();
    let (status, problem) = client
        .post_signed("/rollback", &body, crate::support::now(), SECRET)
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("release_not_restorable")),
        "{problem}"
    );
    assert_eq!(f.content(&container), "b3");
}
