//! The compose model inside the tenant boundary, in-process over the fake
//! engine: what `compose config` would print is set by the test (by
//! default, the target service and its image), the files on disk are real.
//! The gateway judges the model before a job is recorded; the job judges
//! it again, writes it to a copy, runs compose on that copy only, and
//! judges the copy again by the policy in force before each command.

use delivery_hook::docker::ComposeOp;
use delivery_hook::docker::model::{ConfigFailure, ModelError};
use serde_json::{Value, json};

use crate::support::CapturedLogs;
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

fn model_calls(h: &Harness) -> usize {
    h.engine
        .model_calls
        .load(std::sync::atomic::Ordering::SeqCst)
}

async fn job(h: &Harness, id: &str, secret: &str, project: &str) -> Value {
    let (_, job) = status_json(
        h.get_signed(&format!("/jobs/{id}?wait=10"), secret, project)
            .await,
    )
    .await;
    job
}

/// The files each command of a job was given.
fn files_of(job: &Value) -> Vec<Vec<String>> {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            step["argv"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|a| a.as_str()?.strip_prefix("--file="))
                .map(str::to_owned)
                .collect()
        })
        .collect()
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
            "service `web`, `privileged`: `privileged: true`, which needs allow = [\"privileged\"]"
        ),
        "{message}"
    );
    assert!(message.ends_with("(and 1 more)"), "{message}");
    let findings = problem["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{problem}");
    assert_eq!(
        (
            &findings[0]["service"],
            &findings[0]["key"],
            &findings[0]["reason"],
            &findings[0]["allow"]
        ),
        (
            &json!("web"),
            &json!("privileged"),
            &json!("needs_allow"),
            &json!("privileged")
        ),
        "{problem}"
    );
    assert_eq!(findings[1]["key"], "volumes[0]", "{problem}");
    assert_eq!(findings[1]["reason"], "outside_host_paths", "{problem}");
    assert_eq!(h.engine.command_count(), 0, "nothing ran");
    assert!(model_calls(&h) > 0);
}

#[tokio::test]
async fn a_key_compose_may_add_later_is_refused_as_unknown() {
    let h = Harness::new().await;
    set_model(
        &h,
        Ok(json!({"services": {"web": {"image": "busybox", "provider": {"type": "model"}}}})),
    );
    let problem = expect_problem(
        h.deploy("/pull", "billing-web", BILLING).await,
        403,
        "compose_model_not_allowed",
    )
    .await;
    let message = problem["message"].as_str().unwrap();
    assert!(
        message.starts_with("service `web`, `provider`: the key `provider`")
            && message.contains("(reason: unknown)"),
        "{message}"
    );
    assert_eq!(problem["findings"][0]["reason"], "unknown", "{problem}");
    assert_eq!(problem["findings"][0]["key"], "provider", "{problem}");
    assert_eq!(h.engine.command_count(), 0);
}

/// A profile hid the target service from the judged model: refused.
#[tokio::test]
async fn a_target_service_missing_from_the_model_is_refused() {
    let h = Harness::new().await;
    set_model(&h, Ok(json!({"services": {"db": {"image": "postgres"}}})));
    let problem = expect_problem(
        h.deploy("/pull", "billing-web", BILLING).await,
        403,
        "compose_model_not_allowed",
    )
    .await;
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("service `web`, `services`: the service is missing from compose's model"),
        "{problem}"
    );
    assert_eq!(h.engine.command_count(), 0);
}

/// What compose would read for the model is judged before compose runs:
/// an env file of another team is refused and `config` never reads it.
#[tokio::test]
async fn a_file_outside_the_project_is_refused_before_compose_reads_it() {
    let h = Harness::new().await;
    let elsewhere = h.root().join("elsewhere/.env");
    std::fs::write(
        h.root().join("billing/compose.yml"),
        format!(
            "x-b: &b\n  env_file: {}\nservices:\n  web:\n    <<: *b\n    image: busybox\n",
            elsewhere.display()
        ),
    )
    .unwrap();
    let problem = expect_problem(
        h.deploy("/pull", "billing-web", BILLING).await,
        403,
        "compose_model_not_allowed",
    )
    .await;
    let message = problem["message"].as_str().unwrap();
    assert!(
        message.starts_with("service `web`, `env_file`: ")
            && message.contains("elsewhere/.env is outside"),
        "{message}"
    );
    assert_eq!(model_calls(&h), 0, "compose was not asked");
    assert_eq!(h.engine.command_count(), 0);
}

#[tokio::test]
async fn a_model_compose_cannot_print_is_422_naming_file_and_line_only() {
    let h = Harness::new().await;
    set_model(
        &h,
        Err(ModelError::Config(ConfigFailure {
            file: Some("/srv/billing/web.env".into()),
            line: Some(3),
            message: None,
        })),
    );
    let problem = expect_problem(
        h.deploy("/pull", "billing-web", BILLING).await,
        422,
        "compose_config_invalid",
    )
    .await;
    let message = problem["message"].as_str().unwrap();
    assert!(
        message.contains("/srv/billing/web.env at line 3")
            && message.contains("compose's message quotes the files, so it is not repeated"),
        "{message}"
    );
    assert_eq!(h.engine.command_count(), 0);
}

#[tokio::test]
async fn warn_runs_the_job_on_the_copy_it_judged() {
    // The tail lands in the last project of the test policy: shop.
    let logs = CapturedLogs::start();
    let h = Harness::with_policy("", "compose_model = \"warn\"\n").await;
    let job = shop_deploys_the_escaping_model(&h).await;
    let files = files_of(&job);
    assert!(files[0][0].contains("/state/judged/shop/"), "{files:?}");
    // What enforce would have refused is audited, finding by finding.
    let text = logs.text();
    let audited: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("the compose model would be refused"))
        .collect();
    assert!(!audited.is_empty(), "no audit line:\n{text}");
    for line in &audited {
        assert!(
            line.contains("audit")
                && line.contains("project=\"shop\"")
                && line.contains("code=\"compose_model_not_allowed\""),
            "{line}"
        );
    }
    assert!(
        audited.iter().any(|l| l.contains("privileged")),
        "the privileged finding is audited: {audited:#?}"
    );
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
    let h = Harness::with_policy(
        "",
        "allow = [\"privileged\"]\nhost_paths = [\"/etc\", \"/tmp/**\"]\n",
    )
    .await;
    shop_deploys_the_escaping_model(&h).await;
}

/// Each allow class admits what it names and nothing else: refused
/// without it, deployed with it.
#[tokio::test]
async fn each_allow_class_admits_its_keys() {
    let cases = [
        ("host_namespaces", json!({"pid": "host"})),
        ("cap_add", json!({"cap_add": ["NET_ADMIN"]})),
        (
            "unconfined",
            json!({"security_opt": ["seccomp=unconfined"]}),
        ),
        ("kernel", json!({"cgroup_parent": "/system.slice"})),
        ("remote_logging", json!({"logging": {"driver": "syslog"}})),
        ("gpus", json!({"gpus": "all"})),
        (
            "foreign_resources",
            json!({"volumes_from": ["container:other"]}),
        ),
    ];
    for (class, keys) in cases {
        let mut model = json!({"services": {"web": {"image": "busybox"}}});
        for (key, value) in keys.as_object().unwrap() {
            model["services"]["web"][key] = value.clone();
        }
        let refusing = Harness::new().await;
        set_model(&refusing, Ok(model.clone()));
        let problem = expect_problem(
            refusing.deploy("/pull", "shop-web", SHOP).await,
            403,
            "compose_model_not_allowed",
        )
        .await;
        assert_eq!(refusing.engine.command_count(), 0, "{class}: nothing ran");
        assert!(problem.to_string().contains(class), "{class}: {problem}");
        let allowing = Harness::with_policy("", &format!("allow = [\"{class}\"]\n")).await;
        set_model(&allowing, Ok(model));
        let (status, job) =
            status_json(allowing.deploy("/pull?wait=10", "shop-web", SHOP).await).await;
        assert_eq!(
            (status, job["state"].as_str()),
            (200, Some("succeeded")),
            "{class}: {job}"
        );
    }
}

/// With [`escaping_model`] set, a deploy of `shop-web` succeeds.
async fn shop_deploys_the_escaping_model(h: &Harness) -> Value {
    set_model(h, Ok(escaping_model()));
    let (status, job) = status_json(h.deploy("/pull?wait=10", "shop-web", SHOP).await).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    job
}

/// The model compose would print changes while a job runs: every command
/// runs the copy that was judged, and nothing of the new model.
#[tokio::test]
async fn a_job_runs_the_copy_it_judged_whatever_compose_would_print_later() {
    let h = Harness::new().await;
    let gate = h.engine.hold();
    let (status, accepted) = status_json(h.deploy("/pull", "billing-web", BILLING).await).await;
    assert_eq!(status, 202, "{accepted}");
    wait_running(&h).await;
    set_model(&h, Ok(escaping_model()));
    gate.add_permits(10);
    let id = accepted["id"].as_str().unwrap();
    let ended = job(&h, id, BILLING, "billing").await;
    assert_eq!(ended["state"], "succeeded", "{ended}");
    let files = files_of(&ended);
    assert_eq!(files.len(), 2, "pull and up ran: {ended}");
    assert_eq!(files[0], files[1], "both ran one copy");
    let copy: Value =
        serde_json::from_str(&std::fs::read_to_string(&files[1][0]).unwrap()).unwrap();
    assert!(
        copy["services"]["web"].get("privileged").is_none(),
        "{copy}"
    );
}

/// A reload that tightens the policy stops a running job before its next
/// command: the copy is judged again by the policy in force.
#[tokio::test]
async fn a_policy_tightened_while_a_job_runs_stops_it_before_the_next_command() {
    let h = Harness::with_policy(
        "",
        "allow = [\"privileged\"]\nhost_paths = [\"/etc\", \"/tmp/**\"]\n",
    )
    .await;
    set_model(&h, Ok(escaping_model()));
    let gate = h.engine.hold();
    let (status, accepted) = status_json(h.deploy("/pull", "shop-web", SHOP).await).await;
    assert_eq!(status, 202, "{accepted}");
    wait_running(&h).await;
    h.reload_with_tail("host_paths = [\"/etc\", \"/tmp/**\"]\n");
    gate.add_permits(10);
    let id = accepted["id"].as_str().unwrap();
    let ended = job(&h, id, SHOP, "shop").await;
    assert_eq!(ended["state"], "failed", "{ended}");
    let error = ended["error"].as_str().unwrap();
    assert!(
        error.contains("compose_model_not_allowed: service `web`, `privileged`"),
        "{error}"
    );
    assert!(error.contains("compose up -d did not run"), "{error}");
    assert_eq!(files_of(&ended).len(), 1, "only the pull ran");
    assert_eq!(h.engine.command_count(), 1);
}

async fn wait_running(h: &Harness) {
    crate::support::soon("the first command", || h.engine.running() > 0).await;
}

/// After compose ran a copy, the container's labels name the copy (the
/// fake writes them as compose does); the next request reads them as the
/// project's own files, and judges those as they are now.
#[tokio::test]
async fn the_next_request_judges_the_projects_current_files_not_the_copy() {
    let h = Harness::new().await;
    let (status, first) =
        status_json(h.deploy("/pull?wait=10", "billing-web", BILLING).await).await;
    assert_eq!(
        (status, first["state"].as_str()),
        (200, Some("succeeded")),
        "{first}"
    );
    let copy = files_of(&first)[1][0].clone();
    assert!(copy.contains("/state/judged/billing/"), "{copy}");
    assert!(
        std::path::Path::new(&copy).exists(),
        "the container names it"
    );

    let dir = h.root().join("billing");
    let body = crate::support::body_for("billing-web");
    let now = crate::support::now();
    let (status, second) = status_json(
        h.post_signed("/pull?wait=10", &body, BILLING, now + 1, None)
            .await,
    )
    .await;
    assert_eq!(
        (status, second["state"].as_str()),
        (200, Some("succeeded")),
        "{second}"
    );
    assert_eq!(
        second["compose_files"],
        json!([dir.join("compose.yml").display().to_string()]),
        "the job names the project's file, not the copy"
    );
    // Another model is another copy; the one no container names any more
    // is removed once the job ends.
    set_model(&h, Ok(json!({"services": {"web": {"image": "busybox:2"}}})));
    let (status, third) = status_json(
        h.post_signed("/pull?wait=10", &body, BILLING, now + 3, None)
            .await,
    )
    .await;
    assert_eq!(
        (status, third["state"].as_str()),
        (200, Some("succeeded")),
        "{third}"
    );
    let newer = files_of(&third)[1][0].clone();
    assert_ne!(newer, copy);
    assert!(std::path::Path::new(&newer).exists());
    assert!(
        !std::path::Path::new(&copy).exists(),
        "the unused copy is removed"
    );
    // The project's file now names another team's env file: refused.
    std::fs::write(
        dir.join("compose.yml"),
        format!(
            "services:\n  web:\n    env_file: {}\n",
            h.root().join("elsewhere/.env").display()
        ),
    )
    .unwrap();
    let refused = h.post_signed("/pull", &body, BILLING, now + 2, None).await;
    expect_problem(refused, 403, "compose_model_not_allowed").await;
}

/// A pinned deploy whose service fails is rolled back on a copy with the
/// previous image; a pinned deploy right after works (the pin is merged
/// into the model, not read from a file a rollback removed).
#[tokio::test]
async fn a_pin_right_after_a_rollback_deploys() {
    let h = Harness::new().await;
    *h.engine.state.lock().unwrap() = ("exited".into(), None);
    let hex = "c0ffee0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    let image = format!("127.0.0.1:5000/billing/web@sha256:{hex}");
    let body = json!({"container_name": "billing-web", "image": image}).to_string();
    let (status, failed) = status_json(
        h.post_signed("/pull?wait=10", &body, BILLING, crate::support::now(), None)
            .await,
    )
    .await;
    assert_eq!(
        (status, failed["state"].as_str()),
        (502, Some("rolled_back")),
        "{failed}"
    );
    let files = files_of(&failed);
    let rollback: Value = serde_json::from_str(
        &std::fs::read_to_string(files.last().unwrap().first().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rollback["services"]["web"]["image"],
        crate::support::fake_engine::REFERENCE,
        "the rollback's copy names the previous reference"
    );
    let ops = h.engine.ops();
    // billing may not build: its pull's `up` is `--no-build` too.
    assert_eq!(
        ops,
        [ComposeOp::Pull, ComposeOp::UpNoBuild, ComposeOp::UpNoBuild]
    );

    *h.engine.state.lock().unwrap() = ("running".into(), None);
    let again = json!({"container_name": "billing-web", "image": image}).to_string();
    let (status, job) = status_json(
        h.post_signed(
            "/pull?wait=10",
            &again,
            BILLING,
            crate::support::now() + 1,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
}
