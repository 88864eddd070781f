//! The container image, run the two ways users run it: the README's
//! hardened compose file (`examples/docker-compose.yml`, read here, not
//! copied) and the seed tool's own compose example with only the image name
//! changed. Through each, a signed deploy of a sibling compose service
//! succeeds; through the hardened one the gateway also replaces its own
//! container, and the new one serves.
//!
//! The image is the one `scripts/build-image` built, named by
//! `DELIVERY_HOOK_IMAGE` (scripts/test sets it). Without it these tests
//! print why and pass, unless `CI=true`.

use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::support::now;

/// The image under test, or `None` (with the reason printed) outside CI.
pub(super) fn image_under_test() -> Option<String> {
    match std::env::var("DELIVERY_HOOK_IMAGE") {
        Ok(image) if !image.is_empty() => Some(image),
        _ => {
            crate::support::skip(
                "DELIVERY_HOOK_IMAGE is not set (scripts/test builds the image with scripts/build-image)",
            );
            None
        }
    }
}

const WEB_SECRET: &str = "web-image-secret-0123456789";
const BILLING_SECRET: &str = "billing-image-secret-0123456789";
const DELIVERY_SECRET: &str = "delivery-image-secret-0123456789";

/// The image under test, and a fixture with the sibling service `web`
/// started on v1 from `<root>/srv/web` with the host's compose v2, as the
/// container `<id>-web`, its repository already holding v2.
struct Sibling {
    image: String,
    f: Fixture,
    /// The fixture's directory, by real path.
    root: std::path::PathBuf,
    web: String,
    web_repo: String,
}

impl Sibling {
    /// `None` (with the reason printed) where the engine, compose v2 or the
    /// image is missing outside CI.
    fn start() -> Option<Self> {
        if !engine_ready() || !Compose::V2.ready() {
            return None;
        }
        let image = image_under_test()?;
        let f = Fixture::with_registry(Compose::V2);
        let root = std::fs::canonicalize(f.dir.path()).unwrap();
        let web_repo = f.web_v1_published();
        let web = format!("{}-web", f.id);
        f.compose_up(
            &format!("{}web", f.id),
            &root.join("srv/web"),
            &[(
                "compose.yml",
                compose(&[service("web", &f.remote(&web_repo), &web, &f.id, "")]),
            )],
            &[],
        );
        assert_eq!(f.content(&web), "v1");
        f.push_version(&web_repo, "v2");
        Some(Self {
            image,
            f,
            root,
            web,
            web_repo,
        })
    }
}

/// Removes every tag and digest reference of a repository when dropped:
/// the gateway's images share the image under test, which carries no
/// fixture label, so only their names can be removed.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        for format in ["{{.Repository}}:{{.Tag}}", "{{.Repository}}@{{.Digest}}"] {
            let refs = run_quietly(
                "docker",
                &["images", "--digests", "--format", format, &self.0],
            );
            for reference in refs.lines().filter(|r| !r.contains("<none>")) {
                run_quietly("docker", &["rmi", reference]);
            }
        }
    }
}

/// POSTs a signed `/pull?wait=` for `container`, as the seed signs.
async fn deploy(url: &str, container: &str, secret: &str) -> (u16, Value) {
    Client::at(url)
        .deploy_signed("/pull?wait=120", container, now(), secret)
        .await
}

fn socket_group() -> String {
    run("stat", &["-c", "%g", "/var/run/docker.sock"])
}

/// What a container's `docker inspect` says, or `Null` once it is gone.
fn inspect(name: &str) -> Value {
    let out = Command::new("docker")
        .args(["inspect", name])
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&out.stdout).map_or(Value::Null, |v| v[0].clone())
}

/// Waits until the gateway in `container` answers `/healthz` at `url`;
/// fails with its log.
fn wait_for_gateway(url: &str, container: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !Command::new("curl")
        .args(["-sf", "-o", "/dev/null", &format!("{url}/healthz")])
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway in {container} does not answer at {url}: {}\n{}",
            inspect(container)["State"],
            logs(container)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn logs(name: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The README's compose file, run with the image under test, the fixture's
/// directories in place of `/srv/…`, its own policy and a free port: the
/// gateway runs read-only, without capabilities, as `delivery` with the
/// socket's group; it deploys `web` and then redeploys itself.
#[tokio::test]
async fn e2e_the_image_runs_as_the_readme_tells_and_redeploys_itself() {
    let Some(Sibling {
        image,
        f,
        root,
        web,
        web_repo,
    }) = Sibling::start()
    else {
        return;
    };
    std::fs::create_dir_all(root.join("srv/billing")).unwrap();

    // The gateway's own compose project, kept where it is mounted at its
    // own path so that it can redeploy itself; its image is pushed to the
    // registry so that a pull can bring a new one.
    let gw_dir = root.join("srv/delivery-hook");
    std::fs::create_dir_all(&gw_dir).unwrap();
    let gw_repo = format!("{}/delivery-hook:latest", f.id);
    let gw_local = format!("{}/delivery-hook:v1", f.id);
    let _untag = (
        Untag(f.remote(&format!("{}/delivery-hook", f.id))),
        Untag(format!("{}/delivery-hook", f.id)),
    );
    run("docker", &["tag", &image, &gw_local]);
    f.publish(&gw_local, &gw_repo);
    run("docker", &["rmi", &gw_local]);
    let gateway = format!("{}-gateway", f.id);
    let port = free_port();
    let docker_config = gw_dir.join("docker-config.json");
    std::fs::write(&docker_config, "{}\n").unwrap();

    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/docker-compose.yml"
    ))
    .unwrap();
    let srv = root.join("srv").display().to_string();
    let file = example
        .replace("ghcr.io/OWNER/delivery-hook:latest", &f.remote(&gw_repo))
        .replace(
            "container_name: delivery-hook",
            &format!("container_name: {gateway}"),
        )
        .replace("/srv/", &format!("{srv}/"))
        .replace(
            "${HOME}/.docker/config.json",
            &docker_config.display().to_string(),
        )
        .replace("127.0.0.1:8000:8000", &format!("127.0.0.1:{port}:8000"));
    for (what, expected) in [
        ("read_only", "read_only: true"),
        ("cap_drop", "cap_drop: [ALL]"),
        ("no-new-privileges", "no-new-privileges:true"),
        ("user", "user: delivery"),
        ("group_add", "group_add:"),
        ("the socket", "/var/run/docker.sock:/var/run/docker.sock"),
        (
            "the policy read-only",
            "delivery.toml:/etc/delivery-hook/delivery.toml:ro",
        ),
        ("the state volume", "delivery-state:/var/lib/delivery-hook"),
    ] {
        assert!(
            file.contains(expected),
            "the README's compose file has {what}"
        );
    }
    std::fs::write(
        gw_dir.join("delivery.toml"),
        format!(
            "[server]\nmax_wait_secs = 300\n\n[docker]\ncompose = \"v2\"\nstable_secs = 1\njob_timeout_secs = 120\n\n\
             [projects.web]\nsecrets = [\"env:WEB_DEPLOY_SECRET\"]\ncontainers = [\"{id}-web\"]\nactions = [\"pull\"]\n\
             compose_files = [\"{srv}/web/**\"]\ncompose_projects = [\"{id}web\"]\n\n\
             [projects.billing]\nsecrets = [\"env:BILLING_DEPLOY_SECRET\"]\ncontainers = [\"{id}-billing\"]\nactions = [\"pull\"]\n\
             compose_files = [\"{srv}/billing/**\"]\ncompose_projects = [\"{id}billing\"]\n\n\
             [projects.delivery]\nsecrets = [\"env:DELIVERY_DEPLOY_SECRET\"]\ncontainers = [\"{gateway}\"]\nactions = [\"pull\"]\n\
             compose_files = [\"{srv}/delivery-hook/**\"]\ncompose_projects = [\"{id}gw\"]\n\
             allow = [\"docker_socket\"]\nhost_paths = [\"{srv}/**\"]\n",
            id = f.id
        ),
    )
    .unwrap();
    // What an operator puts in the project's `.env`.
    std::fs::write(
        gw_dir.join(".env"),
        format!(
            "DOCKER_GID={}\nWEB_DEPLOY_SECRET={WEB_SECRET}\nBILLING_DEPLOY_SECRET={BILLING_SECRET}\nDELIVERY_DEPLOY_SECRET={DELIVERY_SECRET}\n",
            socket_group()
        ),
    )
    .unwrap();
    let project = format!("{}gw", f.id);
    f.compose_up(&project, &gw_dir, &[("compose.yml", file)], &[]);
    let url = format!("http://127.0.0.1:{port}");
    wait_for_gateway(&url, &gateway);

    let before = inspect(&gateway);
    assert_eq!(before["Config"]["User"], "delivery");
    assert_eq!(before["HostConfig"]["ReadonlyRootfs"], true);
    assert_eq!(before["HostConfig"]["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(
        before["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "delivery-hook", "healthcheck"])
    );
    let health = Command::new("docker")
        .args(["exec", &gateway, "delivery-hook", "healthcheck"])
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    let ready: Value =
        serde_json::from_str(&run("curl", &["-sf", &format!("{url}/readyz")])).unwrap();
    assert_eq!(ready["compose"]["tool"], "v2", "{ready}");
    eprintln!("/readyz in the image: {ready}");

    let (status, job) = deploy(&url, &web, WEB_SECRET).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}\n{}",
        logs(&gateway)
    );
    assert_eq!(job["project"], "web");
    assert_eq!(f.content(&web), "v2");
    // The other team's key does not reach web.
    let (status, _) = deploy(&url, &web, BILLING_SECRET).await;
    assert_eq!(status, 401);

    // A new gateway image, and a deploy of the gateway's own container.
    let stamp = f.context(
        "gw-v2",
        &[(
            "Dockerfile",
            &format!("FROM {image}\nLABEL dh.test={} dh.gateway=v2\n", f.id),
        )],
    );
    f.docker_build(&gw_local, &stamp);
    f.publish(&gw_local, &gw_repo);
    let v2_id = run(
        "docker",
        &["image", "inspect", "--format", "{{.Id}}", &gw_local],
    );
    let (status, job) = Client::at(&url)
        .deploy_signed("/pull", &gateway, now(), DELIVERY_SECRET)
        .await;
    assert_eq!(status, 202, "{job:#}");
    assert_eq!(job["self_update"], true);
    let id = job["id"].as_str().unwrap().to_string();
    wait_until(
        "the gateway's container to be replaced",
        Duration::from_secs(120),
        || {
            let now = inspect(&gateway);
            now["Id"] != before["Id"] && now["State"]["Running"] == true
        },
    );
    wait_for_gateway(&url, &gateway);
    let after = inspect(&gateway);
    assert_eq!(
        after["Image"].as_str(),
        Some(v2_id.as_str()),
        "runs the new image"
    );
    let client = Client::at(&url);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let seen = loop {
        let (_, seen) = client.job_as(&id, 30, DELIVERY_SECRET, "delivery").await;
        if seen["state"] != "running" && seen["state"] != "queued" {
            break seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{seen:#}\n{}",
            logs(&gateway)
        );
    };
    assert_eq!(seen["state"], "succeeded", "{seen:#}\n{}", logs(&gateway));
    assert_eq!(seen["containers"], serde_json::json!([gateway]));
    // The new gateway deploys too.
    f.push_version(&web_repo, "v3");
    let (status, job) = deploy(&url, &web, WEB_SECRET).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}"
    );
    assert_eq!(f.content(&web), "v3");
}

/// The seed tool's compose example with only the image name changed (and,
/// as every user does, its compose file's path and a free port): no
/// `user`, no `group_add`, `SECRET_KEY`. The image starts as root, and the
/// gateway serves as `delivery` with the socket's group.
#[tokio::test]
async fn e2e_the_seed_tools_compose_example_runs_the_image() {
    let Some(Sibling {
        image,
        f,
        root,
        web,
        ..
    }) = Sibling::start()
    else {
        return;
    };
    let web_file = root.join("srv/web/compose.yml").display().to_string();
    let gateway = format!("{}-seed", f.id);
    let port = free_port();
    const SECRET_KEY: &str = "your-very-secret-key";
    let example = format!(
        "services:\n  docker-delivery-hook:\n    image: {image}\n    container_name: {gateway}\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n      - {web_file}:{web_file}\n    ports:\n      - \"127.0.0.1:{port}:8000\"\n    environment:\n      SECRET_KEY: \"{SECRET_KEY}\"\n"
    );
    let dir = root.join("seed");
    f.compose_up(
        &format!("{}seed", f.id),
        &dir,
        &[("docker-compose.yml", example)],
        &[],
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_for_gateway(&url, &gateway);

    let started = inspect(&gateway);
    assert_eq!(
        started["Config"]["User"], "",
        "started as the image's user, root"
    );
    let pid = started["State"]["Pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let groups: Vec<String> = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let delivery_uid = run("docker", &["exec", &gateway, "id", "-u", "delivery"]);
    assert_eq!(field("Uid:"), delivery_uid, "serves as delivery:\n{status}");
    assert_ne!(field("Uid:"), "0");
    assert_eq!(groups, vec![socket_group()], "with the socket's group only");
    eprintln!("the gateway's RSS in the image, idle: {}", field("VmRSS:"));
    assert!(
        logs(&gateway).contains("seed-compatible"),
        "{}",
        logs(&gateway)
    );

    let (status, job) = deploy(&url, &web, SECRET_KEY).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}\n{}",
        logs(&gateway)
    );
    assert_eq!(job["project"], "default");
    assert_eq!(job["compose_file"], web_file.as_str());
    assert_eq!(f.content(&web), "v2");
}
