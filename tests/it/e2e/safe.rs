//! Safe deploys against the real engine: a release that does not come up
//! is rolled back, and a caller's pin deploys exactly that digest.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::operations::Restartable;
use super::*;
use crate::support::now;

/// Builds `tag` serving `content`, with `extra` Dockerfile lines; its id.
pub(super) fn build(f: &Fixture, tag: &str, content: &str, extra: &str) -> String {
    let context = f.write_context(
        &format!("ctx-{}", tag.replace([':', '/'], "-")),
        content,
        extra,
    );
    f.docker_build(tag, &context);
    run("docker", &["image", "inspect", "--format", "{{.Id}}", tag])
}

/// Pushes `local` as `remote` (a repository of the fixture's registry with
/// a tag) and returns the digest the registry gave it, `sha256:…`.
pub(super) fn publish_digest(f: &Fixture, local: &str, remote: &str) -> String {
    let remote = f.remote(remote);
    run("docker", &["tag", local, &remote]);
    run("docker", &["push", "-q", &remote]);
    let repository = remote.rsplit_once(':').unwrap().0;
    let digests = run(
        "docker",
        &[
            "image",
            "inspect",
            "--format",
            "{{range .RepoDigests}}{{.}} {{end}}",
            &remote,
        ],
    );
    run("docker", &["rmi", &remote]);
    digests
        .split_whitespace()
        .find_map(|d| d.strip_prefix(&format!("{repository}@")))
        .unwrap_or_else(|| panic!("no digest of {repository} in {digests}"))
        .to_string()
}

/// The tags the gateway set to keep previous images.
fn hold_tags(id: &str) -> String {
    run_quietly(
        "docker",
        &["image", "ls", "-q", &format!("delivery-hook/rollback:{id}")],
    )
}

fn labels_files(f: &Fixture, container: &str) -> String {
    f.container(container)["Config"]["Labels"]["com.docker.compose.project.config_files"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Crashes a second after it starts, as a bad release does.
pub(super) const CRASH: &str = "CMD [\"sh\", \"-c\", \"sleep 1; exit 3\"]\n";

/// A compose service on v1 from the registry (with `extra` keys), whose
/// tag now names a v2 that crashes a second after it starts; v1's local
/// tag is gone, so only the pull's image and the gateway's tag remain.
struct CrashingRelease {
    f: Fixture,
    /// `repository:tag` in the fixture's registry.
    repo: String,
    container: String,
    v1: String,
    v2: String,
}

impl CrashingRelease {
    fn new(tool: Compose, extra: &str) -> Self {
        let f = Fixture::with_registry(tool);
        let repo = format!("{}/web:latest", f.id);
        let v1 = f.image(&format!("{}/web:v1", f.id), "v1");
        f.publish(&format!("{}/web:v1", f.id), &repo);
        let container = format!("{}-web", f.id);
        let file = compose(&[service("web", &f.remote(&repo), &container, &f.id, extra)]);
        f.compose_up(
            &f.id,
            &f.dir.path().join("app"),
            &[("compose.yml", file)],
            &[],
        );
        run("docker", &["rmi", &format!("{}/web:v1", f.id)]);
        assert_eq!(f.content(&container), "v1");
        let v2 = build(&f, &format!("{}/web:v2", f.id), "v2", CRASH);
        f.publish(&format!("{}/web:v2", f.id), &repo);
        Self {
            f,
            repo,
            container,
            v1,
            v2,
        }
    }
}

per_compose_tool!(e2e_a_release_that_crashes_after_a_second_is_rolled_back);
/// v2 exits a second after it starts and the engine restarts it: the job
/// ends `rolled_back` and v1 runs and serves again, although the pull had
/// moved v1's only tag to v2.
async fn e2e_a_release_that_crashes_after_a_second_is_rolled_back(tool: Compose) {
    let CrashingRelease {
        f,
        repo,
        container,
        v1,
        v2,
    } = CrashingRelease::new(tool, "    restart: unless-stopped\n");

    let gateway = GatewayProcess::start(&f, "stable_secs = 3");
    let started = Instant::now();
    let (status, job) = Client::new(&gateway)
        .deploy("/pull?wait=120", &container)
        .await;
    let took = started.elapsed();
    assert_eq!(status, 502, "{job:#}\n{}", gateway.log_text());
    assert_eq!(job["state"], "rolled_back", "{job:#}");
    assert_eq!(job["previous_image"], v1);
    assert_eq!(job["rollback"]["from_image"], v2, "{job:#}");
    assert_eq!(job["rollback"]["to_image"], v1);
    assert_eq!(job["rollback"]["state"], "succeeded");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("restart"), "{error}");
    let after = f.container(&container);
    assert_eq!(after["Image"], v1.as_str(), "v1's image runs again");
    assert_eq!(after["State"]["Running"], true);
    assert_eq!(f.content(&container), "v1");
    assert_eq!(
        run(
            "docker",
            &["image", "inspect", "--format", "{{.Id}}", &f.remote(&repo)]
        ),
        v1,
        "the compose file's reference names v1 again"
    );
    assert_eq!(
        hold_tags(job["id"].as_str().unwrap()),
        "",
        "the keeping tag is gone"
    );
    eprintln!(
        "crash rollback: deploy + gate + rollback {} ms, of which the rollback {} ms",
        took.as_millis(),
        job["rollback"]["duration_ms"]
    );
}

per_compose_tool!(e2e_a_build_whose_health_check_never_passes_is_rolled_back);
/// A `build:` service whose new health check never passes is rolled back
/// to the image built before.
async fn e2e_a_build_whose_health_check_never_passes_is_rolled_back(tool: Compose) {
    let f = Fixture::new(tool);
    let check = |command: &str| {
        format!(
            "HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD [\"/bin/busybox\", \"{command}\"]\nLABEL dh.test={}\n",
            f.id
        )
    };
    let context = f.write_context("app/site", "built-v1", &check("true"));
    let container = format!("{}-site", f.id);
    let image = format!("{}/site:dev", f.id);
    let file = compose(&[service(
        "site",
        &image,
        &container,
        &f.id,
        "    build: ./site\n",
    )]);
    f.compose_up(
        &f.id,
        &f.dir.path().join("app"),
        &[("compose.yml", file)],
        &["--build"],
    );
    let v1 = f.container(&container)["Image"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(context.join("index.html"), "built-v2").unwrap();
    let dockerfile = std::fs::read_to_string(context.join("Dockerfile")).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        dockerfile.replace("\"true\"", "\"false\""),
    )
    .unwrap();

    let gateway = GatewayProcess::start(&f, "");
    let (code, job, progress) = trigger(
        &gateway.url,
        &["--container", &container, "--action", "build"],
    );
    assert_eq!(code, 1, "a rollback fails the pipeline: {progress}{job:#}");
    assert!(progress.contains("rolled_back: "), "{progress}");
    assert!(
        progress.contains("rollback from sha256:")
            && progress.contains(&format!("to {v1}: succeeded")),
        "{progress}"
    );
    assert_eq!(job["state"], "rolled_back", "{job:#}");
    assert!(
        job["error"].as_str().unwrap().contains("unhealthy"),
        "{job:#}"
    );
    assert_eq!(job["rollback"]["to_image"], v1.as_str());
    let after = f.container(&container);
    assert_eq!(after["Image"], v1.as_str());
    assert_eq!(f.content(&container), "built-v1");
    let last = job["steps"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["argv"]
            .as_array()
            .unwrap()
            .contains(&Value::from("--no-build")),
        "the rollback built nothing: {last}"
    );
}

per_compose_tool!(e2e_a_pinned_digest_runs_until_an_unpinned_pull);
/// A pin of v1's digest while the tag points at v3 runs v1; a later
/// unpinned pull runs v3 again, and nothing points at the pin's file any
/// more. A pin outside `images` and a digest the registry lacks change
/// nothing.
async fn e2e_a_pinned_digest_runs_until_an_unpinned_pull(tool: Compose) {
    let f = Fixture::with_registry(tool);
    let repo = format!("{}/web", f.id);
    let v1 = f.image(&format!("{}/web:v1", f.id), "v1");
    let d1 = publish_digest(&f, &format!("{}/web:v1", f.id), &format!("{repo}:latest"));
    let v3 = f.image(&format!("{}/web:v3", f.id), "v3");
    publish_digest(&f, &format!("{}/web:v3", f.id), &format!("{repo}:latest"));
    let container = format!("{}-web", f.id);
    let dir = f.dir.path().join("app");
    let file = compose(&[service(
        "web",
        &f.remote(&format!("{repo}:latest")),
        &container,
        &f.id,
        "",
    )]);
    f.compose_up(&f.id, &dir, &[("compose.yml", file.clone())], &[]);
    assert_eq!(f.content(&container), "v3");
    let before = f.container(&container)["Id"].clone();

    let images = format!("images = [\"{}\"]", f.remote(&repo));
    let gateway = GatewayProcess::start_with(&f, "", "", &images);
    let client = Client::new(&gateway);
    let pin = |image: String| {
        serde_json::json!({ "container_name": container, "image": image }).to_string()
    };
    let mut ts = now();
    let mut send = async |body: String| {
        ts -= 1;
        client
            .post_signed("/pull?wait=120", &body, ts, SECRET)
            .await
    };

    let (status, refused) = send(pin(format!(
        "{}@{d1}",
        f.remote(&format!("{}/other", f.id))
    )))
    .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("image_not_allowed")),
        "{refused}"
    );
    let missing = format!("{}@sha256:{}", f.remote(&repo), "0".repeat(64));
    let (status, failed) = send(pin(missing)).await;
    assert_eq!(
        (status, failed["state"].as_str()),
        (502, Some("failed")),
        "{failed:#}"
    );
    assert!(
        failed["error"].as_str().unwrap().contains("compose pull"),
        "{failed:#}"
    );
    let output = failed["output"].as_str().unwrap().to_lowercase();
    assert!(
        output.contains("manifest unknown") || output.contains("not found"),
        "{output}"
    );
    assert_eq!(
        f.container(&container)["Id"],
        before,
        "nothing was recreated"
    );
    assert_eq!(f.container(&container)["State"]["Running"], true);

    let pinned = format!("{}@{d1}", f.remote(&repo));
    let (status, job) = send(pin(pinned.clone())).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}"
    );
    assert_eq!(job["image"], pinned);
    assert_eq!(job["image_digest"], d1.as_str());
    assert_eq!(job["previous_image"], v3.as_str());
    assert_eq!(f.container(&container)["Image"], v1.as_str());
    assert_eq!(f.content(&container), "v1");
    let files = labels_files(&f, &container);
    let hex = d1.strip_prefix("sha256:").unwrap();
    assert!(
        files.contains(&format!("pins/{}/web/{hex}.json", f.id)),
        "{files}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("compose.yml")).unwrap(),
        file,
        "the user's compose file is not edited"
    );

    let (status, back) = client.deploy_at("/pull?wait=120", &container, ts - 1).await;
    assert_eq!(
        (status, back["state"].as_str()),
        (200, Some("succeeded")),
        "{back:#}"
    );
    assert_eq!(f.container(&container)["Image"], v3.as_str());
    assert_eq!(f.content(&container), "v3");
    let files = labels_files(&f, &container);
    assert!(!files.contains("pins/"), "{files}");
    let pins = f
        .dir
        .path()
        .join(format!("delivery-state/pins/{}/web", f.id));
    let left: Vec<_> = std::fs::read_dir(&pins).unwrap().flatten().collect();
    assert!(left.is_empty(), "no pin file is kept: {left:?}");
}

per_compose_tool!(e2e_a_gateway_killed_during_a_rollback_reports_it_interrupted);
/// The gateway killed with -9 while a rollback waits for the old version
/// to prove stable: after a restart the job is `interrupted`, is not run
/// again, and says what runs.
async fn e2e_a_gateway_killed_during_a_rollback_reports_it_interrupted(tool: Compose) {
    let CrashingRelease {
        f, container, v1, ..
    } = CrashingRelease::new(tool, "");

    // Long enough a stable time that the rollback's gate is still waiting.
    let gateway = Restartable::new(&f, "stable_secs = 20");
    let mut child = gateway.start();
    let client = gateway.client();
    let (status, job) = client.deploy("/pull", &container).await;
    assert_eq!(status, 202, "{job:#}");
    let id = job["id"].as_str().unwrap().to_string();
    // Three steps: pull, up, and the rollback's `up --no-build`, which
    // runs only after the rollback was recorded.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, job) = client.job(&id, 0).await;
        let steps = job["steps"].as_array().map_or(0, Vec::len);
        if job["rollback"]["state"] == "running" && steps == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "no rollback began: {job:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.signal("KILL");
    let _ = child.wait();

    let _child = gateway.start();
    let (status, ended) = gateway.client().job(&id, 0).await;
    assert_eq!(status, 200);
    assert_eq!(ended["state"], "interrupted", "{ended:#}");
    assert_eq!(ended["rollback"]["state"], "interrupted", "{ended:#}");
    assert_eq!(ended["attempt"], 1, "not run again");
    let error = ended["error"].as_str().unwrap();
    assert!(
        error.contains("the gateway stopped during the rollback"),
        "{error}"
    );
    assert!(
        error.contains(&container) && error.contains(&v1),
        "it says what runs: {error}"
    );
    assert_eq!(f.container(&container)["Image"], v1.as_str());
    assert_eq!(
        hold_tags(&id),
        "",
        "the keeping tag is gone after the restart"
    );
}
