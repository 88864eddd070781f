//! In-process HTTP tests: the real application over the fake engine.
//!
//! Every status of the API is reached by a real request, and every
//! refused request is shown to have started no compose command.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use delivery_hook::docker::{HelperEnd, HelperRun};
use delivery_hook::store::Store;

use crate::support::*;

/// Polls a condition that another task makes true; fails after 5 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_seed_pipeline_is_accepted_byte_for_byte() {
    let h = Harness::new().await;
    let payload = r#"{"container_name": "billing-web"}"#;
    let timestamp = now().to_string();
    let signature = openssl_signature(BILLING, payload, &timestamp);
    assert_eq!(signature.len(), 64, "openssl produced {signature:?}");
    let response = h
        .client
        .post("/pull")
        .content_type("application/json")
        .header("X-Timestamp", &timestamp)
        .header("X-Signature", &signature)
        .body(payload)
        .send()
        .await;
    let location = response.0.headers().get("location").cloned();
    let (status, job) = status_json(response).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(location.unwrap().to_str().unwrap(), format!("/jobs/{id}"));
    assert_eq!(job["project"], "billing");
    assert_eq!(job["service"], "web");
    assert_eq!(job["compose_project"], "billing");
    assert_eq!(job["message"], "pulling", "the seed's field");
    assert!(
        job["compose_file"]
            .as_str()
            .unwrap()
            .ends_with("/billing/compose.yml")
    );
    assert_eq!(job["replayed"], false);
    assert_eq!(job["coalesced"], false);
}

#[tokio::test]
async fn a_deploy_runs_pull_then_up_and_is_readable() {
    let h = Harness::new().await;
    let (status, job) = status_json(h.deploy("/pull?wait=10", "billing-web", BILLING).await).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["state"], "succeeded");
    let steps = job["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    let argv: Vec<&str> = steps[0]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(&argv[argv.len() - 3..], ["pull", "--", "web"]);
    assert!(job["finished_at"].as_str().unwrap().ends_with('Z'));
    let (status, again) = status_json(
        h.get_signed(
            &format!("/jobs/{}", job["id"].as_str().unwrap()),
            BILLING,
            "billing",
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], job["id"]);
    assert_eq!(again["state"], "succeeded");
    assert!(again["output"].as_str().unwrap().contains("pull -- web"));
}

/// `up` builds a service with `build:` whose image a pull did not bring:
/// a project that may not build pulls, then runs `up --no-build`; one that
/// may build runs `up` as it is.
#[tokio::test]
async fn a_pull_builds_nothing_for_a_project_that_may_not_build() {
    use delivery_hook::docker::ComposeOp;
    let h = Harness::new().await;
    for (container, secret, up) in [
        ("billing-web", BILLING, ComposeOp::UpNoBuild),
        ("shop-web", SHOP, ComposeOp::Up),
    ] {
        h.engine.commands.lock().unwrap().clear();
        let (status, job) = status_json(h.deploy("/pull?wait=10", container, secret).await).await;
        assert_eq!(
            (status, job["state"].as_str()),
            (200, Some("succeeded")),
            "{job}"
        );
        let ops = h.engine.ops();
        assert_eq!(ops, [ComposeOp::Pull, up], "{container}");
    }
    // The policy in force decides, as the job starts.
    h.reload_edited(|text| {
        text.replacen(r#"actions = ["pull"]"#, r#"actions = ["pull", "build"]"#, 1)
    });
    h.engine.commands.lock().unwrap().clear();
    let body = r#"{"container_name": "billing-web", "n": 2}"#;
    let response = h
        .post_signed("/pull?wait=10", body, BILLING, now(), None)
        .await;
    let (status, job) = status_json(response).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    let ops = h.engine.ops();
    assert_eq!(ops, [ComposeOp::Pull, ComposeOp::Up]);
}

#[tokio::test]
async fn build_runs_up_with_build() {
    let h = Harness::new().await;
    let (status, job) = status_json(h.deploy("/build?wait=10", "shop-web", SHOP).await).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["message"], "building");
    let commands = h.engine.commands.lock().unwrap().clone();
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert_eq!(commands[0].0, "web");
    assert_eq!(
        commands[0].1,
        delivery_hook::docker::ComposeOp::UpBuild,
        "/build runs `up -d --build`, and no pull"
    );
}

#[tokio::test]
async fn a_failing_step_with_wait_is_502_with_the_output() {
    let h = Harness::new().await;
    h.engine.fail_step("pull", 1);
    let (status, job) = status_json(h.deploy("/pull?wait=10", "billing-web", BILLING).await).await;
    assert_eq!(status, 502, "{job}");
    assert_eq!(job["state"], "failed");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("exited with code 1")
    );
    assert!(job["output"].as_str().unwrap().contains("manifest unknown"));
    assert_eq!(
        h.engine.command_count(),
        1,
        "up is not run after a failed pull"
    );
}

#[tokio::test]
async fn an_unhealthy_service_fails_the_job() {
    let h = Harness::new().await;
    *h.engine.state.lock().unwrap() = ("running".into(), Some("unhealthy".into()));
    let (status, job) = status_json(h.deploy("/pull?wait=10", "billing-web", BILLING).await).await;
    assert_eq!(status, 502);
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("unhealthy") && error.contains("connection refused"),
        "{error}"
    );
}

#[tokio::test]
async fn key_rotation_accepts_the_old_and_new_key() {
    let h = Harness::new().await;
    for (index, (secret, container)) in [(BILLING, "billing-web"), (BILLING_NEXT, "billing-worker")]
        .into_iter()
        .enumerate()
    {
        let (status, job) = status_json(h.deploy("/pull", container, secret).await).await;
        assert!(status == 202, "{secret}: {status} {job}");
        // The job says which key asked: its place in `secrets`.
        assert_eq!(job["requested_by"], json!({"key_index": index}), "{job}");
    }
}

/// A refusal, the code it must carry, and whether it may reach the engine.
async fn refused(
    h: &Harness,
    response: poem::test::TestResponse,
    status: u16,
    code: &str,
) -> Value {
    let body = expect_problem(response, status, code).await;
    assert_eq!(
        h.engine.command_count(),
        0,
        "{code}: no compose command may run"
    );
    let text = body.to_string();
    for secret in [BILLING, BILLING_NEXT, SHOP] {
        assert!(!text.contains(secret), "{code}: a secret leaked");
    }
    body
}

#[tokio::test]
async fn authentication_failures_are_401_and_run_nothing() {
    let h = Harness::with_server("auth_failure_limit = 1000").await;
    let body = body_for("billing-web");
    let ts = now();
    let good = sign(BILLING, body.as_bytes(), &ts.to_string());
    let post = |ts: Option<String>, sig: Option<String>, project: Option<&str>| {
        let mut r = h.client.post("/pull").content_type("application/json");
        if let Some(ts) = ts {
            r = r.header("X-Timestamp", ts);
        }
        if let Some(sig) = sig {
            r = r.header("X-Signature", sig);
        }
        if let Some(p) = project {
            r = r.header("X-Project", p);
        }
        r.body(body.clone()).send()
    };
    refused(
        &h,
        post(None, Some(good.clone()), None).await,
        401,
        "missing_timestamp",
    )
    .await;
    refused(
        &h,
        post(Some("12ab".into()), Some(good.clone()), None).await,
        401,
        "invalid_timestamp",
    )
    .await;
    refused(
        &h,
        post(Some(ts.to_string()), None, None).await,
        401,
        "missing_signature",
    )
    .await;
    refused(
        &h,
        post(Some(ts.to_string()), Some("nothex".into()), None).await,
        401,
        "invalid_signature",
    )
    .await;
    refused(
        &h,
        post(Some(ts.to_string()), Some(good.clone()), Some("bad name")).await,
        401,
        "invalid_project",
    )
    .await;
    // A signature for another body, another time or another project's key.
    let wrong = sign(SHOP, body.as_bytes(), &ts.to_string());
    refused(
        &h,
        post(Some(ts.to_string()), Some(wrong.clone()), None).await,
        401,
        "signature_mismatch",
    )
    .await;
    refused(
        &h,
        post(Some(ts.to_string()), Some(wrong), Some("billing")).await,
        401,
        "signature_mismatch",
    )
    .await;
    refused(
        &h,
        post(Some((ts + 1).to_string()), Some(good.clone()), None).await,
        401,
        "signature_mismatch",
    )
    .await;
    // An unknown project is not told apart from a wrong signature.
    let unknown = refused(
        &h,
        post(Some(ts.to_string()), Some(good), Some("nosuch")).await,
        401,
        "signature_mismatch",
    )
    .await;
    assert!(!unknown.to_string().contains("nosuch"));
    assert_eq!(
        h.engine.lookups.load(Ordering::SeqCst),
        0,
        "no engine lookup before authentication"
    );
}

#[tokio::test]
async fn the_timestamp_window_holds_in_both_directions() {
    let h = Harness::with_server("auth_failure_limit = 1000").await;
    let body = body_for("billing-web");
    for (offset, ok) in [(-295i64, true), (295, true), (-310, false), (310, false)] {
        let ts = (now() as i64 + offset) as u64;
        let response = h.post_signed("/pull", &body, BILLING, ts, None).await;
        if ok {
            let (status, job) = status_json(response).await;
            assert!(matches!(status, 200 | 202), "{offset}: {status} {job}");
        } else {
            let problem = expect_problem(response, 401, "timestamp_out_of_window").await;
            assert!(problem["message"].as_str().unwrap().contains("clock"));
        }
    }
}

#[tokio::test]
async fn policy_refusals_are_403() {
    let h = Harness::new().await;
    refused(
        &h,
        h.deploy("/build", "billing-web", BILLING).await,
        403,
        "action_not_allowed",
    )
    .await;
    let body = body_for("shop-web");
    let named = h
        .post_signed("/pull", &body, BILLING, now(), Some("billing"))
        .await;
    refused(&h, named, 403, "container_not_allowed").await;
    let excluded = h
        .post_signed(
            "/pull",
            &body_for("billing-db"),
            BILLING,
            now(),
            Some("billing"),
        )
        .await;
    refused(&h, excluded, 403, "container_not_allowed").await;
    refused(
        &h,
        h.deploy("/pull", "billing-outside", BILLING).await,
        403,
        "compose_file_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn tenant_boundaries_hold_beyond_container_names() {
    let h = Harness::new().await;
    // A name shop may deploy, in billing's compose project.
    refused(
        &h,
        h.deploy("/pull", "shop-foreign", SHOP).await,
        403,
        "compose_project_not_allowed",
    )
    .await;
    // The files are billing's, but compose would read another team's .env.
    refused(
        &h,
        h.deploy("/pull", "billing-leaky", BILLING).await,
        403,
        "compose_file_not_allowed",
    )
    .await;
    // An image can carry any label; one that compose reads is not believed.
    let problem = refused(
        &h,
        h.deploy("/pull", "billing-imagelabel", BILLING).await,
        422,
        "compose_label_untrusted",
    )
    .await;
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("com.docker.compose.project.environment_file"),
        "{problem}"
    );
}

#[tokio::test]
async fn one_project_at_its_replay_bound_is_429_and_others_go_on() {
    let h = Harness::with_server("replay_entries_per_project = 2").await;
    let t = now();
    for offset in 0..2 {
        let response = h
            .post_signed(
                "/pull?wait=30",
                &body_for("billing-web"),
                BILLING,
                t - offset,
                None,
            )
            .await;
        let (status, job) = status_json(response).await;
        assert!(matches!(status, 200 | 202), "{status} {job}");
    }
    let response = h
        .post_signed("/pull", &body_for("billing-web"), BILLING, t - 2, None)
        .await;
    let retry_after: u64 = response
        .0
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    let before = h.engine.command_count();
    expect_problem(response, 429, "project_rate_limited").await;
    assert_eq!(
        h.engine.command_count(),
        before,
        "the refused request ran nothing"
    );
    let (status, job) = status_json(h.deploy("/pull", "shop-web", SHOP).await).await;
    assert_eq!(status, 202, "another project is not affected: {job}");
    // A replay of an admitted request is still answered, not refused.
    let again = h
        .post_signed("/pull", &body_for("billing-web"), BILLING, t, None)
        .await;
    let (status, job) = status_json(again).await;
    assert!(
        matches!(status, 200 | 202) && job["replayed"] == true,
        "{status} {job}"
    );
}

#[tokio::test]
async fn a_request_abandoned_after_its_job_is_recorded_keeps_its_replay_entry() {
    let h = Harness::new().await;
    // Writes queued ahead of the deploy's, so that it waits for the store
    // after its job exists.
    let store = h.gateway.jobs().store().clone();
    let filler =
        delivery_hook::docker::ComposeTarget::from_parts("filler", "web", "/srv", "/srv/c.yml", "")
            .unwrap();
    let record = delivery_hook::record::JobRecord::new(
        "filler",
        delivery_hook::names::Action::Pull,
        &delivery_hook::record::Deployment {
            target: delivery_hook::record::DeployTarget::Compose {
                container: delivery_hook::names::ContainerName::parse("filler-web").unwrap(),
                target: filler.clone(),
            },
            pin: None,
            restore: None,
        },
        false,
        h.clock.unix_ms(),
    );
    let queued: Vec<_> = (0..2000).map(|_| store.put(&record)).collect();
    let t = now();
    let body = body_for("billing-web");
    {
        let request = h.post_signed("/pull", &body, BILLING, t, None);
        tokio::pin!(request);
        loop {
            tokio::select! {
                _ = &mut request => panic!("the deploy finished before its job could be abandoned"),
                _ = tokio::time::sleep(Duration::from_millis(1)) => {
                    if h.gateway.jobs().depth() != (0, 0) {
                        break;
                    }
                }
            }
        }
        // The client goes away here, with the job recorded but not yet durable.
    }
    for write in queued {
        write.await.unwrap();
    }
    let again = h.post_signed("/pull", &body, BILLING, t, None).await;
    let (status, job) = status_json(again).await;
    assert!(matches!(status, 200 | 202), "{status} {job}");
    assert_eq!(job["replayed"], true, "{job}");
    let listed = h.gateway.jobs().list("billing", 10, None).await.unwrap();
    assert_eq!(listed.len(), 1, "one job for one signed request");
    assert_eq!(job["id"], listed[0].id.to_string());
}

#[tokio::test]
async fn without_x_project_only_projects_allowing_the_name_are_tried() {
    let h = Harness::new().await;
    // billing-db is excluded by `!billing-db`: no project may touch it, so
    // billing's own key has no candidate to verify against.
    refused(
        &h,
        h.deploy("/pull", "billing-db", BILLING).await,
        401,
        "signature_mismatch",
    )
    .await;
    // shop's key cannot deploy a billing container, even with a valid MAC.
    refused(
        &h,
        h.deploy("/pull", "billing-web", SHOP).await,
        401,
        "signature_mismatch",
    )
    .await;
}

#[tokio::test]
async fn engine_answers_map_to_404_422_and_503() {
    let h = Harness::new().await;
    refused(
        &h,
        h.deploy("/pull", "billing-missing", BILLING).await,
        404,
        "container_not_found",
    )
    .await;
    refused(
        &h,
        h.deploy("/pull", "billing-plain", BILLING).await,
        422,
        "not_compose_managed",
    )
    .await;
    let hidden = refused(
        &h,
        h.deploy("/pull", "billing-hidden", BILLING).await,
        422,
        "compose_file_not_visible",
    )
    .await;
    assert!(
        hidden["message"]
            .as_str()
            .unwrap()
            .contains("same absolute path")
    );
    h.engine.down.store(true, Ordering::SeqCst);
    let response = h.deploy("/pull", "billing-web", BILLING).await;
    assert!(response.0.headers().contains_key("retry-after"));
    refused(&h, response, 503, "engine_unavailable").await;
    expect_problem(
        h.client.get("/readyz").send().await,
        503,
        "engine_unavailable",
    )
    .await;
}

/// Starts a deploy of the gateway's own service; returns the job id and the
/// helper the gateway started for it.
async fn self_update(h: &Harness) -> (String, HelperRun) {
    *h.engine.own.lock().unwrap() = Some(("billing".into(), "web".into()));
    let (status, job) = status_json(h.deploy("/pull", "billing-web", BILLING).await).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["self_update"], true);
    let id = job["id"].as_str().unwrap().to_string();
    let engine = h.engine.clone();
    let helper = tokio::time::timeout(Duration::from_secs(10), async move {
        loop {
            if let Some(run) = engine.helpers.lock().unwrap().first().cloned() {
                return run;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the gateway starts a helper");
    assert_eq!(helper.job.to_string(), id);
    assert_eq!(
        Some(helper.state_dir.as_path()),
        h.gateway.jobs().store().dir(),
        "the helper records into the gateway's store"
    );
    (id, helper)
}

/// A reload that names a new secret variable: the next self-update helper
/// is not given it. (The settings a job runs with are read from the policy
/// in force, not copied at start.)
#[tokio::test]
async fn a_secret_variable_a_reload_names_is_withheld_from_the_next_helper() {
    let h = Harness::new().await;
    h.reload_with_tail(
        "\n[projects.later]\nsecrets = [\"env:LATER_SECRET\"]\ncontainers = [\"later-*\"]\nactions = [\"pull\"]\n",
    );
    let (_, helper) = self_update(&h).await;
    assert!(
        helper.withheld_env.iter().any(|v| v == "LATER_SECRET"),
        "{:?}",
        helper.withheld_env
    );
}

/// A request body that says when the gateway first reads it.
struct WatchedBody {
    inner: tokio::io::DuplexStream,
    first_read: Option<tokio::sync::oneshot::Sender<()>>,
}

impl tokio::io::AsyncRead for WatchedBody {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(first) = self.first_read.take() {
            let _ = first.send(());
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// A request the gateway has begun (it reads the body only once its
/// headers are checked) finishes under the policy it began with when a
/// reload takes its key away; the next request meets the new policy.
#[tokio::test]
async fn a_request_in_flight_at_a_reload_finishes_under_the_policy_it_began_with() {
    let h = Arc::new(Harness::new().await);
    let (mut writer, inner) = tokio::io::duplex(64);
    let (first_read, reading) = tokio::sync::oneshot::channel();
    let body = WatchedBody {
        inner,
        first_read: Some(first_read),
    };
    let ts = now().to_string();
    let signature = sign(BILLING, body_for("billing-web").as_bytes(), &ts);
    let in_flight = {
        let h = h.clone();
        tokio::spawn(async move {
            let response = h
                .client
                .post("/pull")
                .content_type("application/json")
                .header("X-Timestamp", &ts)
                .header("X-Signature", &signature)
                .header("X-Project", "billing")
                .body(poem::Body::from_async_read(body))
                .send()
                .await;
            status_json(response).await
        })
    };
    reading.await.expect("the gateway reads the body");
    h.reload_edited(|text| {
        text.replace(
            &format!(r#"["{BILLING}", "{BILLING_NEXT}"]"#),
            r#"["billing-after-the-reload-0123"]"#,
        )
    });
    tokio::io::AsyncWriteExt::write_all(&mut writer, body_for("billing-web").as_bytes())
        .await
        .unwrap();
    drop(writer);
    let (status, job) = in_flight.await.unwrap();
    assert_eq!(
        (status, job["project"].as_str()),
        (202, Some("billing")),
        "{job}"
    );
    let response = h
        .post_signed(
            "/pull",
            &body_for("billing-web"),
            BILLING,
            now(),
            Some("billing"),
        )
        .await;
    expect_problem(response, 401, "signature_mismatch").await;
}

/// What `delivery-hook helper` does in its container: runs the job from the
/// store, with its own store handle on the same directory.
async fn run_as_the_helper(h: &Harness, helper: &HelperRun) -> delivery_hook::record::JobRecord {
    let store = Store::open(&helper.state_dir).unwrap();
    let engine: &dyn delivery_hook::docker::Engine = &*h.engine;
    delivery_hook::jobs::run_helper(
        engine,
        &store,
        helper.job,
        delivery_hook::jobs::HelperBudget {
            timeout: Duration::from_secs(60),
            stable: Duration::from_secs(5),
        },
        &delivery_hook::docker::StateFiles::new(&helper.state_dir),
        &delivery_hook::clock::Clock::system(),
        Default::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_deploy_of_the_gateways_own_service_runs_in_a_helper() {
    let h = Harness::new().await;
    let (id, helper) = self_update(&h).await;
    let (_, running) = status_json(
        h.get_signed(&format!("/jobs/{id}"), BILLING, "billing")
            .await,
    )
    .await;
    assert_eq!(running["state"], "running");
    assert_eq!(
        h.engine.command_count(),
        0,
        "the gateway itself runs no compose command"
    );

    let done = run_as_the_helper(&h, &helper).await;
    assert_eq!(done.state.as_str(), "succeeded");
    assert_eq!(h.engine.command_count(), 2, "pull and up ran in the helper");
    h.engine.end_helper(&helper.name, HelperEnd::Exited(0));

    let (status, finished) = status_json(
        h.get_signed(&format!("/jobs/{id}?wait=10"), BILLING, "billing")
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(finished["state"], "succeeded", "{finished}");
    assert_eq!(finished["steps"].as_array().unwrap().len(), 2);
    assert!(
        finished["output"].as_str().unwrap().contains(&helper.name),
        "{finished}"
    );
    let (_, other) = status_json(h.deploy("/pull", "billing-worker", BILLING).await).await;
    assert_eq!(
        other["self_update"], false,
        "other services run in the gateway"
    );
}

#[tokio::test]
async fn a_helper_that_records_nothing_fails_the_job() {
    let h = Harness::new().await;
    let (id, helper) = self_update(&h).await;
    h.engine.end_helper(&helper.name, HelperEnd::Exited(3));
    let (_, job) = status_json(
        h.get_signed(&format!("/jobs/{id}?wait=10"), BILLING, "billing")
            .await,
    )
    .await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains(&helper.name)
            && error.contains("code 3")
            && error.contains("without recording"),
        "{error}"
    );
}

#[tokio::test]
async fn a_gateway_started_in_place_of_the_old_one_follows_the_helper() {
    let h = Harness::new().await;
    let (id, helper) = self_update(&h).await;
    // Compose stops the old gateway: it stops following at once and leaves
    // the job to the helper.
    tokio::time::timeout(
        Duration::from_secs(5),
        h.gateway.jobs().shutdown(Duration::from_secs(60)),
    )
    .await
    .expect("a followed helper does not hold the shutdown up");
    let store = Store::open(&helper.state_dir).unwrap();
    let job_id = delivery_hook::names::JobId::parse(&id).unwrap();
    let left = store.get(job_id).await.unwrap().unwrap();
    assert_eq!(
        left.state.as_str(),
        "running",
        "not interrupted, not re-queued"
    );
    assert_eq!(left.helper(), Some(helper.name.as_str()));

    // The new gateway, on the same store.
    let settings = delivery_hook::jobs::JobSettings {
        files: delivery_hook::docker::StateFiles::new(&helper.state_dir),
        policy: h.gateway.policy_cell(),
        outbox: None,
        clock: h.clock.clone(),
    };
    let jobs = delivery_hook::jobs::Jobs::new(h.engine.clone(), store.clone(), settings, None);
    let recovery = jobs.recover().await.unwrap();
    assert_eq!(recovery.followed, 1, "{recovery:?}");
    assert_eq!(recovery.rerun + recovery.requeued, 0, "{recovery:?}");
    run_as_the_helper(&h, &helper).await;
    h.engine.end_helper(&helper.name, HelperEnd::Gone);
    let job = jobs
        .wait(job_id, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state.as_str(), "succeeded");
    assert_eq!(
        h.engine.helpers.lock().unwrap().len(),
        1,
        "no second helper"
    );
    assert_eq!(h.engine.command_count(), 2);
}

#[tokio::test]
async fn bad_bodies_and_parameters_are_400() {
    let h = Harness::new().await;
    let cases = [
        ("{", "invalid_json"),
        ("[]", "invalid_body"),
        (r#"{"name": "billing-web"}"#, "invalid_body"),
        (r#"{"container_name": 7}"#, "invalid_body"),
        (r#"{"container_name": "-f"}"#, "invalid_container_name"),
        (
            r#"{"container_name": "billing-web;id"}"#,
            "invalid_container_name",
        ),
    ];
    for (body, code) in cases {
        let response = h
            .post_signed("/pull", body, BILLING, now(), Some("billing"))
            .await;
        refused(&h, response, 400, code).await;
    }
    let response = h
        .post_signed(
            "/pull?wait=31",
            &body_for("billing-web"),
            BILLING,
            now(),
            None,
        )
        .await;
    refused(&h, response, 400, "invalid_wait").await;
    let response = h
        .post_signed(
            "/pull?wait=soon",
            &body_for("billing-web"),
            BILLING,
            now(),
            None,
        )
        .await;
    refused(&h, response, 400, "invalid_wait").await;
}

/// The bodies' schemas, by the operation that takes them: a union's
/// variants each.
fn request_schemas(doc: &Value) -> Vec<(String, Value)> {
    let schema = |reference: &Value| {
        let name = reference.as_str().unwrap().rsplit('/').next().unwrap();
        doc["components"]["schemas"][name].clone()
    };
    let mut found = Vec::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        let body = &operations["post"]["requestBody"]["content"]["application/json"]["schema"];
        if body.is_null() {
            continue;
        }
        let top = schema(&body["$ref"]);
        match top["oneOf"].as_array() {
            Some(variants) => found.extend(
                variants
                    .iter()
                    .map(|variant| (path.clone(), schema(&variant["$ref"]))),
            ),
            None => found.push((path.clone(), top)),
        }
    }
    found
}

/// The document and the gateway agree on which bodies are valid: each
/// field a body's schema says it must not carry is refused with 400 on an
/// otherwise valid body, and a field the schema does not name is ignored,
/// whatever it holds, as generated clients and fuzzers expect.
#[tokio::test]
async fn the_fields_a_body_must_not_carry_are_refused_and_others_ignored() {
    let h = Harness::new().await;
    let (_, doc) = status_json(h.client.get("/openapi.json").send().await).await;
    let pin = format!("127.0.0.1:5000/billing/web@sha256:{}", "0".repeat(64));
    let mut forbidden = Vec::new();
    for (path, schema) in request_schemas(&doc) {
        let example = schema["example"].as_object().unwrap();
        for absent in schema["not"]["anyOf"].as_array().into_iter().flatten() {
            let field = absent["required"][0].as_str().unwrap();
            let mut body = example.clone();
            let value = match field {
                "image" => pin.clone(),
                "service_name" => "billing_web".to_owned(),
                _ => "billing-web".to_owned(),
            };
            body.insert(field.to_owned(), json!(value));
            let body = Value::Object(body).to_string();
            let response = h
                .post_signed(&path, &body, BILLING, now(), Some("billing"))
                .await;
            refused(&h, response, 400, "invalid_body").await;
            forbidden.push(format!("{path} {field}"));
        }
    }
    forbidden.sort();
    assert_eq!(
        forbidden,
        [
            "/build image",
            "/build service_name",
            "/pull container_name",
            "/pull service_name",
            "/rollback container_name",
            "/rollback image",
            "/rollback image",
            "/rollback service_name",
        ]
    );
    let extra = json!({"to": [{}], "\u{dc}": {"8": [null, true]}, "wait": "x"});
    for (path, body) in [
        ("/pull", json!({"container_name": "billing-web"})),
        (
            "/rollback",
            json!({"container_name": "billing-web", "to": "previous"}),
        ),
    ] {
        let mut body = body.as_object().unwrap().clone();
        for (key, value) in extra.as_object().unwrap() {
            body.entry(key.clone()).or_insert(value.clone());
        }
        let body = Value::Object(body).to_string();
        let response = h
            .post_signed(path, &body, BILLING, now(), Some("billing"))
            .await;
        let status = response.0.status().as_u16();
        let answer = response.0.into_body().into_string().await.unwrap();
        assert!(
            !answer.contains("invalid_body") && status != 400,
            "{path} {body}: {status} {answer}"
        );
    }
}

#[tokio::test]
async fn bodies_are_bounded_while_read() {
    let h = Harness::new().await;
    let big = format!(
        r#"{{"container_name": "billing-web", "pad": "{}"}}"#,
        "x".repeat(2000)
    );
    refused(
        &h,
        h.post_signed("/pull", &big, BILLING, now(), None).await,
        413,
        "body_too_large",
    )
    .await;
    // A Content-Length that lies low does not let more through.
    let ts = now().to_string();
    let lying = h
        .client
        .post("/pull")
        .content_type("application/json")
        .header("Content-Length", "20")
        .header("X-Timestamp", &ts)
        .header("X-Signature", sign(BILLING, big.as_bytes(), &ts))
        .body(big.clone())
        .send()
        .await;
    refused(&h, lying, 413, "body_too_large").await;
    // A declared length over the limit is refused before reading.
    let declared = h
        .client
        .post("/pull")
        .content_type("application/json")
        .header("Content-Length", "999999")
        .header("X-Timestamp", &ts)
        .header("X-Signature", sign(BILLING, b"{}", &ts))
        .body("{}")
        .send()
        .await;
    refused(&h, declared, 413, "body_too_large").await;
}

#[tokio::test]
async fn a_body_that_never_arrives_is_408() {
    let h = Harness::new().await;
    let (_writer, reader) = tokio::io::duplex(64);
    let ts = now().to_string();
    let response = h
        .client
        .post("/pull")
        .content_type("application/json")
        .header("X-Timestamp", &ts)
        .header("X-Signature", sign(BILLING, b"{}", &ts))
        .body(poem::Body::from_async_read(reader))
        .send()
        .await;
    refused(&h, response, 408, "body_timeout").await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let h = Harness::new().await;
    let body = body_for("billing-web");
    let ts = now().to_string();
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let response = h
            .client
            .post("/pull")
            .content_type(content_type)
            .header("X-Timestamp", &ts)
            .header("X-Signature", sign(BILLING, body.as_bytes(), &ts))
            .body(body.clone())
            .send()
            .await;
        refused(&h, response, 415, "unsupported_media_type").await;
    }
}

#[tokio::test]
async fn repeated_auth_failures_are_throttled_with_retry_after() {
    let h = Harness::with_server("auth_failure_limit = 3\nauth_failure_window_secs = 60").await;
    let body = body_for("billing-web");
    for _ in 0..3 {
        let response = h
            .post_signed("/pull", &body, SHOP, now(), Some("billing"))
            .await;
        refused(&h, response, 401, "signature_mismatch").await;
    }
    let response = h.deploy("/pull", "billing-web", BILLING).await;
    let retry: u64 = response.0.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    refused(&h, response, 429, "too_many_failures").await;
}

#[tokio::test]
async fn a_replay_returns_the_first_job_and_runs_nothing_again() {
    let h = Harness::new().await;
    let body = body_for("billing-web");
    let ts = now();
    let (status, first) = status_json(
        h.post_signed("/pull?wait=10", &body, BILLING, ts, None)
            .await,
    )
    .await;
    assert_eq!((status, first["state"].as_str()), (200, Some("succeeded")));
    let commands = h.engine.command_count();
    // The same request, and the same MAC written differently.
    let signature = sign(BILLING, body.as_bytes(), &ts.to_string());
    for variant in [
        signature.clone(),
        signature.to_uppercase(),
        format!("sha256={signature}"),
    ] {
        let response = h
            .client
            .post("/pull")
            .content_type("application/json")
            .header("X-Timestamp", ts.to_string())
            .header("X-Signature", variant)
            .body(body.clone())
            .send()
            .await;
        let (status, again) = status_json(response).await;
        assert_eq!(status, 200, "a replay of a finished job: {again}");
        assert_eq!(again["id"], first["id"]);
        assert_eq!(again["replayed"], true);
    }
    assert_eq!(
        h.engine.command_count(),
        commands,
        "a replay never runs again"
    );
}

#[tokio::test]
async fn fifty_identical_requests_at_once_make_one_job() {
    let h = std::sync::Arc::new(Harness::new().await);
    let gate = h.engine.hold();
    let body = body_for("billing-web");
    let ts = now();
    let requests = (0..50).map(|_| {
        let h = h.clone();
        let body = body.clone();
        tokio::spawn(async move {
            status_json(h.post_signed("/pull", &body, BILLING, ts, None).await).await
        })
    });
    let answers: Vec<(u16, Value)> = futures_join(requests).await;
    let ids: std::collections::HashSet<_> = answers
        .iter()
        .map(|(_, j)| j["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "one job for fifty identical requests");
    assert_eq!(
        answers
            .iter()
            .filter(|(_, j)| j["replayed"] == false)
            .count(),
        1
    );
    assert!(answers.iter().all(|(s, _)| *s == 202));
    gate.add_permits(2);
    eventually("the job to end", || {
        h.engine.command_count() == 2 && h.engine.running() == 0
    })
    .await;
    assert_eq!(h.engine.command_count(), 2, "pull and up, once");
}

async fn futures_join<T>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

/// No project holds every job slot while the policy has others: with two
/// slots, billing's second service waits for its first while shop's job
/// runs beside it; with billing alone in the policy, both of its services
/// run at once.
#[tokio::test]
async fn one_project_holds_all_but_one_slot_while_the_policy_has_others() {
    let h = Harness::new().await;
    let gate = h.engine.hold();
    let (_, web) = status_json(h.deploy("/pull", "billing-web", BILLING).await).await;
    eventually("billing's first job to run", || h.engine.running() == 1).await;
    let (_, worker) = status_json(h.deploy("/pull", "billing-worker", BILLING).await).await;
    let (status, shop) = status_json(h.deploy("/pull", "shop-web", SHOP).await).await;
    assert_eq!(status, 202, "{shop}");
    eventually("shop's job to run beside billing's", || {
        h.engine.running() == 2
    })
    .await;
    for (job, state) in [(&worker, "queued"), (&shop, "running")] {
        let id = job["id"].as_str().unwrap().parse_id();
        let now = h.gateway.jobs().get(id).await.unwrap().unwrap();
        assert_eq!(now.state.as_str(), state, "{job}");
    }
    gate.add_permits(1000);
    for job in [&web, &worker, &shop] {
        let id = job["id"].as_str().unwrap().parse_id();
        let done = h
            .gateway
            .jobs()
            .wait(id, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.state.as_str(), "succeeded");
    }

    // A policy of one project: it may use every slot.
    h.reload_edited(|text| {
        let shop = text.find("[projects.shop]").unwrap();
        text[..shop].to_owned()
    });
    let gate = h.engine.hold();
    let body = |name: &str| format!(r#"{{"container_name": "{name}", "n": 2}}"#);
    for name in ["billing-web", "billing-worker"] {
        let response = h
            .post_signed("/pull", &body(name), BILLING, now(), None)
            .await;
        assert_eq!(response.0.status().as_u16(), 202);
    }
    eventually("both of billing's jobs to run", || h.engine.running() == 2).await;
    gate.add_permits(1000);
}

#[tokio::test]
async fn one_job_per_service_at_a_time_and_queued_requests_coalesce() {
    let h = Harness::new().await;
    let gate = h.engine.hold();
    let (_, first) = status_json(h.deploy("/pull", "billing-web", BILLING).await).await;
    eventually("the first job to run", || h.engine.running() == 1).await;
    // Distinct signed requests for the same service: timestamps well clear
    // of the first one's, so that a clock tick cannot make one a replay.
    let (_, second) = status_json(
        h.post_signed("/pull", &body_for("billing-web"), BILLING, now() - 10, None)
            .await,
    )
    .await;
    let (_, third) = status_json(
        h.post_signed("/pull", &body_for("billing-web"), BILLING, now() - 20, None)
            .await,
    )
    .await;
    assert_ne!(
        second["id"], first["id"],
        "a request during a run queues a new job"
    );
    assert_eq!(second["coalesced"], false);
    assert_eq!(
        third["id"], second["id"],
        "a request while one is queued joins it"
    );
    assert_eq!(third["coalesced"], true);
    assert_eq!(
        h.engine.running(),
        1,
        "the queued job waits for the running one"
    );
    // Another project's service runs in parallel.
    let (status, _) = status_json(h.deploy("/pull", "shop-web", SHOP).await).await;
    assert_eq!(status, 202);
    eventually("two services at once", || h.engine.running() == 2).await;
    gate.add_permits(100);
    let second_id = second["id"].as_str().unwrap();
    let done = h
        .gateway
        .jobs()
        .wait(second_id.parse_id(), Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.state.as_str(), "succeeded");
    eventually("all jobs to end", || {
        h.engine.running() == 0 && h.engine.command_count() == 6
    })
    .await;
    assert_eq!(
        h.engine.max_running.load(Ordering::SeqCst),
        2,
        "max_parallel_jobs = 2"
    );
}

trait ParseId {
    fn parse_id(&self) -> delivery_hook::names::JobId;
}

impl ParseId for str {
    fn parse_id(&self) -> delivery_hook::names::JobId {
        delivery_hook::names::JobId::parse(self).unwrap()
    }
}

#[tokio::test]
async fn jobs_are_visible_only_to_their_project() {
    let h = Harness::new().await;
    let (_, job) = status_json(h.deploy("/pull?wait=10", "billing-web", BILLING).await).await;
    let target = format!("/jobs/{}", job["id"].as_str().unwrap());
    expect_problem(
        h.get_signed(&target, SHOP, "shop").await,
        404,
        "job_not_found",
    )
    .await;
    expect_problem(
        h.get_signed("/jobs/nothex", BILLING, "billing").await,
        400,
        "invalid_parameter",
    )
    .await;
    // X-Project is required on reads.
    let ts = now().to_string();
    let response = h
        .client
        .get(&target)
        .header("X-Timestamp", &ts)
        .header("X-Signature", sign(BILLING, target.as_bytes(), &ts))
        .send()
        .await;
    expect_problem(response, 401, "missing_project").await;
    // The signature covers the query too.
    let response = h
        .client
        .get(format!("{target}?wait=1"))
        .header("X-Timestamp", &ts)
        .header("X-Signature", sign(BILLING, target.as_bytes(), &ts))
        .header("X-Project", "billing")
        .send()
        .await;
    expect_problem(response, 401, "signature_mismatch").await;
    let (status, list) =
        status_json(h.get_signed("/jobs?limit=10", BILLING, "billing").await).await;
    assert_eq!(status, 200);
    assert_eq!(list["jobs"][0]["id"], job["id"]);
    let (_, other) = status_json(h.get_signed("/jobs", SHOP, "shop").await).await;
    assert_eq!(other["jobs"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn job_lists_page_newest_first() {
    let h = Harness::new().await;
    let mut ids = Vec::new();
    for offset in 0..3 {
        let response = h
            .post_signed(
                "/pull?wait=10",
                &body_for("billing-web"),
                BILLING,
                now() - offset,
                None,
            )
            .await;
        ids.push(
            status_json(response).await.1["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (_, page) = status_json(h.get_signed("/jobs?limit=2", BILLING, "billing").await).await;
    let got: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()]);
    let next = page["next_before"].as_str().unwrap();
    let (_, rest) = status_json(
        h.get_signed(&format!("/jobs?limit=2&before={next}"), BILLING, "billing")
            .await,
    )
    .await;
    assert_eq!(rest["jobs"][0]["id"].as_str(), Some(ids[0].as_str()));
    assert!(rest.get("next_before").is_none());
    expect_problem(
        h.get_signed("/jobs?limit=0", BILLING, "billing").await,
        400,
        "invalid_parameter",
    )
    .await;
    expect_problem(
        h.get_signed("/jobs?before=zzz", BILLING, "billing").await,
        400,
        "invalid_parameter",
    )
    .await;
}

#[tokio::test]
async fn health_document_and_unknown_routes() {
    let h = Harness::new().await;
    let (status, body) = status_json(h.client.get("/healthz").send().await).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, _) = status_json(h.client.get("/readyz").send().await).await;
    assert_eq!(status, 200);
    let (status, doc) = status_json(h.client.get("/openapi.json").send().await).await;
    assert_eq!(status, 200);
    assert_eq!(
        doc["paths"]["/pull"]["post"]["operationId"],
        "pullContainer"
    );
    expect_problem(h.client.get("/nothing").send().await, 404, "not_found").await;
    expect_problem(
        h.client.get("/pull").send().await,
        405,
        "method_not_allowed",
    )
    .await;
    let (status, _) = status_json(h.client.get("/docs").send().await).await;
    assert_eq!(status, 404, "Swagger UI is off unless docs = true");
    let docs = Harness::with_server("docs = true").await;
    let response = docs.client.get("/docs").send().await;
    assert_eq!(response.0.status().as_u16(), 200);
}

/// The document lists, under each operation's responses, exactly the codes
/// the refusal catalogue gives that operation, each under its status; and
/// every error response of an operation has codes. That the service
/// answers an operation only with codes the catalogue gives it is asserted
/// on every refusal in debug builds, so every test of this suite that is
/// refused checks it.
#[tokio::test]
async fn every_refusal_is_documented_for_each_operation_that_answers_with_it() {
    use delivery_hook::api::http_status;
    use delivery_hook::gateway::{Code, Operation};
    let h = Harness::new().await;
    let (_, doc) = status_json(h.client.get("/openapi.json").send().await).await;
    let operations: Vec<&Value> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .collect();
    for operation in Operation::ALL {
        let found = operations
            .iter()
            .find(|o| o["operationId"] == operation.id())
            .unwrap_or_else(|| panic!("{} is not in the document", operation.id()));
        let responses = found["responses"].as_object().unwrap();
        for code in Code::ALL {
            let status = http_status(code.kind()).to_string();
            let listed = format!("- `{}`: ", code.as_str());
            let documented = responses
                .get(&status)
                .and_then(|r| r["description"].as_str())
                .is_some_and(|d| d.contains(&listed));
            assert_eq!(
                documented,
                code.operations().contains(operation),
                "{} under {status} of {}",
                code.as_str(),
                operation.id()
            );
            for (other, response) in responses.iter().filter(|(s, _)| **s != status) {
                let text = response["description"].as_str().unwrap_or_default();
                assert!(!text.contains(&listed), "{} under {other}", code.as_str());
            }
        }
        let problems = responses
            .iter()
            .filter(|(_, r)| r["content"].get("application/problem+json").is_some());
        for (status, response) in problems {
            assert!(
                response["description"].as_str().unwrap().contains("Codes:"),
                "{} answers {status} with no code",
                operation.id()
            );
        }
    }
}

/// The README's table of the deploy operations' statuses lists, per status,
/// exactly the codes the catalogue gives `/pull` and `/build`.
#[test]
fn the_readmes_status_table_lists_the_catalogues_codes() {
    use delivery_hook::api::http_status;
    use delivery_hook::gateway::{Code, Operation};
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme
        .split("Statuses of the deploy operations")
        .nth(1)
        .expect("the README has the table");
    let mut statuses = std::collections::BTreeSet::new();
    for row in table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
    {
        let cells: Vec<&str> = row.split(" | ").collect();
        let Ok(status) = cells[0].trim_start_matches("| ").parse::<u16>() else {
            continue;
        };
        statuses.insert(status);
        let listed: std::collections::BTreeSet<&str> = cells
            .last()
            .unwrap()
            .split('`')
            .skip(1)
            .step_by(2)
            .collect();
        let catalogue: std::collections::BTreeSet<&str> = Code::ALL
            .iter()
            .filter(|c| http_status(c.kind()) == status)
            .filter(|c| {
                c.operations().contains(Operation::Pull)
                    || c.operations().contains(Operation::Build)
            })
            .map(|c| c.as_str())
            .collect();
        assert_eq!(listed, catalogue, "the README's row for {status}");
    }
    for code in Code::ALL {
        let deploy = code.operations().contains(Operation::Pull)
            || code.operations().contains(Operation::Build);
        if deploy {
            assert!(
                statuses.contains(&http_status(code.kind())),
                "{}",
                code.as_str()
            );
        }
    }
}

#[tokio::test]
async fn requests_waiting_per_project_are_bounded() {
    let h = std::sync::Arc::new(Harness::with_server("max_waiting_per_project = 1").await);
    let gate = h.engine.hold();
    let waiter = {
        let h = h.clone();
        tokio::spawn(async move {
            status_json(h.deploy("/pull?wait=30", "billing-web", BILLING).await).await
        })
    };
    eventually("the first job to run", || h.engine.running() == 1).await;
    let second = h
        .post_signed(
            "/pull?wait=30",
            &body_for("billing-worker"),
            BILLING,
            now() - 5,
            None,
        )
        .await;
    let commands = h.engine.command_count();
    expect_problem(second, 429, "too_many_waiting").await;
    assert_eq!(
        h.engine.command_count(),
        commands,
        "the refused request ran nothing"
    );
    let (status, _) = status_json(h.deploy("/pull", "billing-worker", BILLING).await).await;
    assert_eq!(status, 202, "without ?wait= the bound does not apply");
    let (status, _) = status_json(h.deploy("/pull?wait=1", "shop-web", SHOP).await).await;
    assert_ne!(status, 429, "another project has its own places");
    gate.add_permits(100);
    let (status, job) = waiter.await.unwrap();
    assert_eq!(
        (status, &job["state"]),
        (200, &Value::from("succeeded")),
        "{job}"
    );
    let again = h
        .post_signed(
            "/pull?wait=30",
            &body_for("billing-worker"),
            BILLING,
            now() - 7,
            None,
        )
        .await;
    let (status, _) = status_json(again).await;
    assert_eq!(status, 200, "the place came back");
}
