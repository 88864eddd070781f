//! The end-to-end scenarios, one test each.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::support::{now, openssl_signature};

fn steps_tool(job: &Value) -> String {
    let argv = job["steps"][0]["argv"].as_array().unwrap();
    let tool: Vec<&str> = argv
        .iter()
        .map(|a| a.as_str().unwrap())
        .take_while(|a| !a.starts_with("--"))
        .collect();
    tool.join(" ")
}

per_compose_tool!(e2e_pull_deploys_the_new_image_signed_as_the_seed_does);
/// Scenario 1: v1 runs from the registry, v2 is pushed, a seed-signed POST
/// /pull makes the container run v2, with the compose tool the policy
/// names, which `/readyz` and `check` report with its version.
async fn e2e_pull_deploys_the_new_image_signed_as_the_seed_does(tool: Compose) {
    let f = Fixture::with_registry(tool);
    let repo = f.web_v1_published();
    let container = f.up_web(&repo);
    let before = f.container(&container);
    assert_eq!(f.content(&container), "v1");
    let v2 = f.push_version(&repo, "v2");

    let gateway = GatewayProcess::start(&f, "");
    // The seed README's pipeline, byte for byte: bash, openssl, curl.
    let payload = format!(r#"{{"container_name": "{container}"}}"#);
    let timestamp = now().to_string();
    let signature = openssl_signature(SECRET, &payload, &timestamp);
    let output = Command::new("curl")
        .args(["-s", "-X", "POST", "-H", "Content-Type: application/json"])
        .args([
            "-H",
            &format!("X-Timestamp: {timestamp}"),
            "-H",
            &format!("X-Signature: {signature}"),
        ])
        .args(["-d", &payload, &format!("{}/pull?wait=120", gateway.url)])
        .output()
        .unwrap();
    let job: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            gateway.log_text()
        )
    });
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let after = f.container(&container);
    assert_ne!(after["Id"], before["Id"], "a new container");
    assert_eq!(
        after["Image"].as_str(),
        Some(v2.as_str()),
        "running the v2 image"
    );
    assert_eq!(
        after["Name"],
        format!("/{container}"),
        "under the same name"
    );
    assert_eq!(f.content(&container), "v2");

    let ran = steps_tool(&job);
    assert_eq!(ran, tool.argv().join(" "));
    assert_eq!(job["containers"], serde_json::json!([container]));

    // `/readyz` and `check` say which tool runs, and its version.
    let version = run(
        tool.argv()[0],
        &[&tool.argv()[1..], &["version", "--short"]].concat(),
    );
    let ready: Value =
        serde_json::from_str(&run("curl", &["-sf", &format!("{}/readyz", gateway.url)])).unwrap();
    assert_eq!(ready["compose"]["tool"], tool.policy_value(), "{ready}");
    assert_eq!(ready["compose"]["command"], ran);
    assert!(
        version.ends_with(ready["compose"]["version"].as_str().unwrap()),
        "{ready} {version}"
    );
    let check = Command::new(env!("CARGO_BIN_EXE_delivery-hook"))
        .args(["check", "--config"])
        .arg(f.dir.path().join("delivery.toml"))
        .env("E2E_SECRET", SECRET)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    eprintln!("check said:\n{said}");
    assert!(
        said.contains(&format!(
            "found: compose {} {} (`{ran}`)",
            tool.policy_value(),
            ready["compose"]["version"].as_str().unwrap()
        )),
        "{said}"
    );
}

per_compose_tool!(e2e_build_recreates_from_the_changed_context);
/// Scenario 2: a `build:` service is rebuilt from its changed context.
async fn e2e_build_recreates_from_the_changed_context(tool: Compose) {
    let f = Fixture::new(tool);
    let dir = f.dir.path().join("app");
    let context = f.write_context("app/site", "built-v1", &format!("LABEL dh.test={}\n", f.id));
    let container = format!("{}-site", f.id);
    let image = format!("{}/site:dev", f.id);
    let file = compose(&[service(
        "site",
        &image,
        &container,
        &f.id,
        "    build: ./site\n",
    )]);
    f.compose_up(&f.id, &dir, &[("compose.yml", file)], &["--build"]);
    let before = f.container(&container);
    assert_eq!(f.content(&container), "built-v1");
    std::fs::write(context.join("index.html"), "built-v2").unwrap();

    let gateway = GatewayProcess::start(&f, "");
    let (status, job) = Client::new(&gateway)
        .deploy("/build?wait=120", &container)
        .await;
    assert_eq!(status, 200, "{job:#}\n{}", gateway.log_text());
    assert_eq!(job["message"], "building");
    let after = f.container(&container);
    assert_ne!(after["Id"], before["Id"]);
    assert_eq!(f.content(&container), "built-v2");
}

per_compose_tool!(e2e_labels_carry_service_files_and_env);
/// Scenario 3: the service name is not the container name, the project is
/// two compose files, and an `.env` file sets the image tag.
async fn e2e_labels_carry_service_files_and_env(tool: Compose) {
    let f = Fixture::with_registry(tool);
    let repo = format!("{}/front", f.id);
    f.image(&format!("{}/front:a", f.id), "release-a");
    f.publish(&format!("{}/front:a", f.id), &format!("{repo}:stable"));
    let container = format!("{}-site", f.id);
    let dir = f.dir.path().join("multi");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), "TAG=stable\n").unwrap();
    let base = compose(&[service(
        "frontend",
        &format!("{}:${{TAG}}", f.remote(&repo)),
        &container,
        &f.id,
        "",
    )]);
    let overlay =
        "services:\n  frontend:\n    environment:\n      FROM_OVERLAY: \"yes\"\n".to_string();
    f.compose_up(&f.id, &dir, &[("a.yml", base), ("b.yml", overlay)], &[]);
    assert_eq!(f.content(&container), "release-a");
    let newer = f.image(&format!("{}/front:b", f.id), "release-b");
    f.publish(&format!("{}/front:b", f.id), &format!("{repo}:stable"));

    let gateway = GatewayProcess::start(&f, "");
    let (status, job) = Client::new(&gateway)
        .deploy("/pull?wait=120", &container)
        .await;
    assert_eq!(status, 200, "{job:#}\n{}", gateway.log_text());
    assert_eq!(
        job["service"], "frontend",
        "from the label, not the container name"
    );
    assert_eq!(job["compose_files"].as_array().unwrap().len(), 2);
    let argv: Vec<&str> = job["steps"][0]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        argv.iter().any(|a| a.ends_with("/a.yml")) && argv.iter().any(|a| a.ends_with("/b.yml")),
        "{argv:?}"
    );
    let after = f.container(&container);
    assert_eq!(after["Image"].as_str(), Some(newer.as_str()));
    let env: Vec<&str> = after["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"FROM_OVERLAY=yes"),
        "the second file still applies: {env:?}"
    );
    assert_eq!(f.content(&container), "release-b");
}

per_compose_tool!(e2e_wait_and_trigger_report_success_and_failure);
/// Scenario 4 and 9: `?wait` gives 200 on success and 502 with compose's
/// error when the pull fails; GET /jobs/{id} agrees; `trigger --wait` exits
/// 0 and 1 with progress lines.
async fn e2e_wait_and_trigger_report_success_and_failure(tool: Compose) {
    let f = Fixture::with_registry(tool);
    let repo = format!("{}/web:latest", f.id);
    f.image(&format!("{}/web:v1", f.id), "v1");
    f.publish(&format!("{}/web:v1", f.id), &repo);
    // `gone` exists locally but was never pushed: its pull fails as a deleted tag would.
    let gone = format!("{}/{}/web:gone", f.registry_host(), f.id);
    f.image(&gone, "orphan");
    let good = format!("{}-good", f.id);
    let bad = format!("{}-bad", f.id);
    let dir = f.dir.path().join("app");
    let file = compose(&[
        service("good", &f.remote(&repo), &good, &f.id, ""),
        service("bad", &gone, &bad, &f.id, ""),
    ]);
    f.compose_up(&f.id, &dir, &[("compose.yml", file)], &[]);
    let gateway = GatewayProcess::start(&f, "");
    let client = Client::new(&gateway);

    let (status, ok) = client.deploy("/pull?wait=120", &good).await;
    assert_eq!(
        (status, ok["state"].as_str()),
        (200, Some("succeeded")),
        "{ok:#}"
    );
    let (status, failed) = client.deploy("/pull?wait=120", &bad).await;
    assert_eq!(status, 502, "{failed:#}");
    assert_eq!(failed["state"], "failed");
    assert!(
        failed["error"].as_str().unwrap().contains("compose pull"),
        "{failed:#}"
    );
    let output = failed["output"].as_str().unwrap().to_lowercase();
    assert!(
        output.contains("manifest") || output.contains("not found"),
        "compose's error is in the output:\n{output}"
    );
    let (status, read) = client.job(failed["id"].as_str().unwrap(), 0).await;
    assert_eq!(status, 200);
    assert_eq!(read["state"], "failed");
    assert_eq!(read["output"], failed["output"]);

    let trigger = |container: &str| {
        Command::new(env!("CARGO_BIN_EXE_delivery-hook"))
            .args([
                "trigger",
                "--url",
                &gateway.url,
                "--container",
                container,
                "--wait",
                "120",
            ])
            .env("DELIVERY_SECRET", SECRET)
            .output()
            .unwrap()
    };
    let out = trigger(&good);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("queued") && text.contains("succeeded"),
        "{text}"
    );
    assert!(
        text.lines().all(|l| l.starts_with('[')),
        "each line carries the elapsed time:\n{text}"
    );
    let out = trigger(&bad);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("failed: `compose pull` exited"), "{text}");
    assert!(
        text.contains("--- last"),
        "the tail of compose's output:\n{text}"
    );
    // A refusal is exit 2, with one line saying why.
    let refused = Command::new(env!("CARGO_BIN_EXE_delivery-hook"))
        .args(["trigger", "--url", &gateway.url, "--container", &good])
        .env("DELIVERY_SECRET", "not-the-right-secret-at-all")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let line = String::from_utf8_lossy(&refused.stderr);
    assert!(line.contains("401 signature_mismatch"), "{line}");
}

per_compose_tool!(e2e_health_checks_decide_success);
/// Scenario 5: a health check that fails ends the job `failed` and says
/// so; one that passes ends it `succeeded`.
async fn e2e_health_checks_decide_success(tool: Compose) {
    let f = Fixture::with_registry(tool);
    let repo = format!("{}/web:latest", f.id);
    f.image(&format!("{}/web:v1", f.id), "v1");
    f.publish(&format!("{}/web:v1", f.id), &repo);
    let healthy = format!("{}-healthy", f.id);
    let sick = format!("{}-sick", f.id);
    let check = |test: &str| {
        format!(
            "    healthcheck:\n      test: {test}\n      interval: 1s\n      timeout: 1s\n      retries: 2\n"
        )
    };
    let file = compose(&[
        service(
            "healthy",
            &f.remote(&repo),
            &healthy,
            &f.id,
            &check(
                r#"["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]"#,
            ),
        ),
        service(
            "sick",
            &f.remote(&repo),
            &sick,
            &f.id,
            &check(r#"["CMD", "/bin/busybox", "false"]"#),
        ),
    ]);
    let dir = f.dir.path().join("app");
    f.compose_up(&f.id, &dir, &[("compose.yml", file)], &[]);
    f.image(&format!("{}/web:v2", f.id), "v2");
    f.publish(&format!("{}/web:v2", f.id), &repo);
    let gateway = GatewayProcess::start(&f, "");
    let client = Client::new(&gateway);
    let (status, good) = client.deploy("/pull?wait=120", &healthy).await;
    assert_eq!(
        (status, good["state"].as_str()),
        (200, Some("succeeded")),
        "{good:#}"
    );
    assert_eq!(
        f.container(&healthy)["State"]["Health"]["Status"],
        "healthy"
    );
    let (status, bad) = client.deploy("/pull?wait=120", &sick).await;
    assert_eq!(status, 502, "{bad:#}");
    assert_eq!(bad["state"], "failed");
    assert!(
        bad["error"].as_str().unwrap().contains("unhealthy"),
        "{bad:#}"
    );
}

/// Every process whose command line names this compose project.
fn processes_of(project: &str) -> Vec<String> {
    let marker = format!("--project-name={project}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if text.contains(&marker) && !zombie {
            found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

per_compose_tool!(e2e_a_job_past_its_timeout_is_killed);
/// Scenario 6: past `job_timeout_secs` the job ends `timed_out` and its
/// processes are gone.
async fn e2e_a_job_past_its_timeout_is_killed(tool: Compose) {
    let f = Fixture::new(tool);
    let dir = f.dir.path().join("slow");
    let context = f.write_context("slow/ctx", "fast", &format!("LABEL dh.test={}\n", f.id));
    let container = format!("{}-slow", f.id);
    let image = format!("{}/slow:dev", f.id);
    let file = compose(&[service(
        "slow",
        &image,
        &container,
        &f.id,
        "    build: ./ctx\n",
    )]);
    f.compose_up(&f.id, &dir, &[("compose.yml", file)], &["--build"]);
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {id}/base:1\nLABEL dh.test={id}\nRUN [\"/bin/busybox\", \"sleep\", \"40\"]\nCOPY index.html /www/index.html\n", id = f.id),
    )
    .unwrap();
    let gateway = GatewayProcess::start(&f, "job_timeout_secs = 3");
    let (status, job) = Client::new(&gateway)
        .deploy("/build?wait=60", &container)
        .await;
    assert_eq!(status, 502, "{job:#}");
    assert_eq!(job["state"], "timed_out");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("job_timeout_secs (3 s)"),
        "{job:#}"
    );
    assert!(
        job["steps"][0]["exit_code"].is_null(),
        "the command was killed"
    );
    wait_until(
        "the job's processes to be gone",
        Duration::from_secs(10),
        || processes_of(&f.id).is_empty(),
    );
    assert_eq!(
        f.content(&container),
        "fast",
        "the old container still serves"
    );
}

fn interval(job: &Value) -> (String, String) {
    (
        job["started_at"].as_str().unwrap().to_string(),
        job["finished_at"].as_str().unwrap().to_string(),
    )
}

per_compose_tool!(e2e_concurrent_requests_serialise_and_coalesce);
/// Scenario 7: ten concurrent requests for one service run one job at a
/// time, queued ones coalesce, and the newest image ends up running; two
/// services deploy in parallel.
async fn e2e_concurrent_requests_serialise_and_coalesce(tool: Compose) {
    let f = Fixture::with_registry(tool);
    let repo = format!("{}/web:latest", f.id);
    f.image(&format!("{}/web:v1", f.id), "v1");
    f.publish(&format!("{}/web:v1", f.id), &repo);
    let (a, b) = (format!("{}-a", f.id), format!("{}-b", f.id));
    let file = compose(&[
        service("a", &f.remote(&repo), &a, &f.id, ""),
        service("b", &f.remote(&repo), &b, &f.id, ""),
    ]);
    f.compose_up(
        &f.id,
        &f.dir.path().join("app"),
        &[("compose.yml", file)],
        &[],
    );
    let v2 = f.image(&format!("{}/web:v2", f.id), "v2");
    f.publish(&format!("{}/web:v2", f.id), &repo);
    let gateway = GatewayProcess::start(&f, "");
    let client = std::sync::Arc::new(Client::new(&gateway));

    // Ten distinct signed requests (distinct timestamps) at once.
    let base = now();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let client = client.clone();
            let a = a.clone();
            tokio::spawn(async move { client.deploy_at("/pull", &a, base - i).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");
    let mut ids: Vec<String> = answers
        .iter()
        .map(|(_, j)| j["id"].as_str().unwrap().to_string())
        .collect();
    let coalesced = answers
        .iter()
        .filter(|(_, j)| j["coalesced"] == true)
        .count();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len() + coalesced,
        10,
        "each request made a job or joined one"
    );
    assert!(coalesced >= 1, "queued requests joined a queued job");
    let mut finished = Vec::new();
    for id in &ids {
        let (_, job) = client.job(id, 120).await;
        assert_eq!(job["state"], "succeeded", "{job:#}");
        finished.push(interval(&job));
    }
    finished.sort();
    for pair in finished.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "jobs of one service overlapped: {pair:?}"
        );
    }
    assert_eq!(
        f.container(&a)["Image"].as_str(),
        Some(v2.as_str()),
        "the newest image runs"
    );

    // Two services at once.
    let (one, two) = tokio::join!(
        client.deploy("/pull?wait=120", &a),
        client.deploy("/pull?wait=120", &b)
    );
    assert_eq!((one.0, two.0), (200, 200), "{one:?} {two:?}");
    let (x, y) = (interval(&one.1), interval(&two.1));
    assert!(
        x.0 < y.1 && y.0 < x.1,
        "different services run in parallel: {x:?} {y:?}"
    );
}

per_compose_tool!(e2e_undeployable_containers_are_422);
/// Scenario 8: an invisible compose file, and a container not made by compose, are 422.
async fn e2e_undeployable_containers_are_422(tool: Compose) {
    let f = Fixture::new(tool);
    let container = format!("{}-web", f.id);
    let dir = f.dir.path().join("app");
    f.compose_up(
        &f.id,
        &dir,
        &[(
            "compose.yml",
            compose(&[service(
                "web",
                &format!("{}/base:1", f.id),
                &container,
                &f.id,
                "",
            )]),
        )],
        &[],
    );
    let plain = format!("{}-plain", f.id);
    run(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            &plain,
            "--label",
            &format!("dh.test={}", f.id),
            &format!("{}/base:1", f.id),
        ],
    );
    let gateway = GatewayProcess::start(&f, "");
    let client = Client::new(&gateway);
    let (status, problem) = client.deploy("/pull", &plain).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("not_compose_managed")),
        "{problem}"
    );
    // The compose directory is not where the labels say (not mounted in a container).
    let moved = f.dir.path().join("app-elsewhere");
    std::fs::rename(&dir, &moved).unwrap();
    let (status, problem) = client.deploy("/pull", &container).await;
    std::fs::rename(&moved, &dir).unwrap();
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("compose_file_not_visible")),
        "{problem}"
    );
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("same absolute path")
    );
    let (status, problem) = client.deploy("/pull", &format!("{}-missing", f.id)).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("container_not_found"))
    );
}

per_compose_tool!(e2e_a_compose_label_set_by_the_image_is_not_trusted);
/// An image that sets a compose label (here, another team's env file) makes
/// its containers undeployable: the label may be the image's, not compose's.
async fn e2e_a_compose_label_set_by_the_image_is_not_trusted(tool: Compose) {
    let f = Fixture::new(tool);
    let other = f.context("other-team", &[(".env", "TAG=theirs\n")]);
    let context = f.write_context(
        "labelled",
        "labelled",
        &format!(
            "LABEL com.docker.compose.project.environment_file={}\nLABEL dh.test={}\n",
            other.join(".env").display(),
            f.id
        ),
    );
    let image = format!("{}/labelled:1", f.id);
    run(
        "docker",
        &["build", "-q", "-t", &image, &context.display().to_string()],
    );
    let container = format!("{}-labelled", f.id);
    let dir = f.dir.path().join("app");
    f.compose_up(
        &f.id,
        &dir,
        &[(
            "compose.yml",
            compose(&[service("web", &image, &container, &f.id, "")]),
        )],
        &[],
    );
    let before = f.container(&container);
    assert!(
        before["Config"]["Labels"]["com.docker.compose.project.environment_file"].is_string(),
        "the engine copied the image's label onto the container"
    );
    let gateway = GatewayProcess::start(&f, "");
    let client = Client::new(&gateway);
    let (status, problem) = client.deploy("/build?wait=60", &container).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("compose_label_untrusted")),
        "{problem}"
    );
    assert_eq!(f.container(&container)["Id"], before["Id"], "nothing ran");
    let jobs = client.jobs().await;
    assert!(jobs.is_empty(), "no job was made: {jobs:#?}");
}

/// A host moved from compose v1 to v2: a service v1 started from its
/// project directory, under v1's default name `<project>_web_1`, is
/// redeployed by a gateway running v2. v2 recreates it as
/// `<project>-web-1`; the job names that container, and the next request,
/// naming it, deploys too.
#[tokio::test]
async fn e2e_a_container_compose_v1_made_is_redeployed_by_v2() {
    if !(engine_ready() && Compose::V1.ready() && Compose::V2.ready()) {
        return;
    }
    let f = Fixture::with_registry(Compose::V2);
    let repo = f.web_v1_published();
    let project = format!("{}-app", f.id);
    let _guard = super::shapes::ProjectGuard(project.clone());
    let dir = f.dir.path().join(&project);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            "services:\n  web:\n    image: {}\n    stop_signal: SIGKILL\n    labels:\n      dh.test: \"{}\"\n",
            f.remote(&repo),
            f.id
        ),
    )
    .unwrap();
    let up = Compose::V1
        .command(&["up", "-d"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let old_name = format!("{project}_web_1");
    assert_eq!(f.content(&old_name), "v1");
    f.push_version(&repo, "v2");

    let gateway = GatewayProcess::start(&f, "");
    let client = Client::new(&gateway);
    let (status, job) = client.deploy("/pull?wait=120", &old_name).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}"
    );
    let new_name = format!("{project}-web-1");
    assert_eq!(job["containers"], serde_json::json!([new_name]), "{job:#}");
    assert_eq!(job["container_name"], old_name);
    assert_eq!(f.content(&new_name), "v2");
    let running = f.container(&new_name);
    let labels = &running["Config"]["Labels"];
    assert_eq!(labels["com.docker.compose.project"], project);
    assert!(
        labels["com.docker.compose.version"]
            .as_str()
            .is_some_and(|v| v.starts_with('2')),
        "{labels}"
    );
    let gone = Command::new("docker")
        .args(["inspect", &old_name])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "v1's container is replaced");

    // The old name is gone: the next request names the new one.
    let (status, problem) = client.deploy("/pull", &old_name).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("container_not_found")),
        "{problem}"
    );
    f.push_version(&repo, "v3");
    let (status, job) = client.deploy("/pull?wait=120", &new_name).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}"
    );
    assert_eq!(job["containers"], serde_json::json!([new_name]));
    assert_eq!(f.content(&new_name), "v3");
}

/// Removes a file when dropped, also when the test fails: a `.env` naming
/// another engine must not outlive the test into the fixture's cleanup.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

per_compose_tool!(e2e_a_projects_env_file_cannot_choose_the_engine);
/// A project's `.env` names another engine (a listener of the test's),
/// another context, TLS verification with another certificate path, and
/// another client configuration. Compose still talks to the gateway's
/// engine: the deploy succeeds and the listener is never contacted.
async fn e2e_a_projects_env_file_cannot_choose_the_engine(tool: Compose) {
    let f = Fixture::with_registry(tool);
    let repo = f.web_v1_published();
    let container = f.up_web(&repo);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let elsewhere = f.context("elsewhere", &[("config.json", "{\"auths\": {}}\n")]);
    let env = f.dir.path().join("app/.env");
    std::fs::write(
        &env,
        format!(
            "DOCKER_HOST=tcp://127.0.0.1:{port}\nDOCKER_CONTEXT=elsewhere\nDOCKER_TLS_VERIFY=1\nDOCKER_CERT_PATH={dir}\nDOCKER_CONFIG={dir}\n",
            dir = elsewhere.display()
        ),
    )
    .unwrap();
    let _env = RemoveOnDrop(env);
    f.push_version(&repo, "v2");

    let gateway = GatewayProcess::start(&f, "");
    let (status, job) = Client::new(&gateway)
        .deploy("/pull?wait=120", &container)
        .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}"
    );
    assert_eq!(f.content(&container), "v2");
    listener.set_nonblocking(true).unwrap();
    let contacted = listener.accept();
    assert!(
        matches!(&contacted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the engine the .env named was contacted: {contacted:?}"
    );
}
