//! The tenant boundary inside compose files, on the real engine with each
//! compose tool. Two teams share a host: team A's service runs, team B's
//! files (a `.env` with its secret, a build context, a volume) lie beside
//! it. The gateway's policy has several projects, so what compose would do
//! is judged from compose's own model by default. Team A's own compose file
//! tries each way out of its project; each is refused (403
//! `compose_model_not_allowed`, naming the service, key and path) and runs
//! nothing, while the shapes a team needs still deploy.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::support::now;

const OPS_SECRET: &str = "ops-team-secret-0123456789";
const B_SECRET: &str = "b-team-secret-0123456789ab";

/// Team A's compose file: its service `web` as the fixture's services are,
/// with `extra` keys, and `top` top-level sections.
fn a_file(f: &Fixture, image: &str, container: &str, extra: &str, top: &str) -> String {
    format!(
        "{}{top}",
        compose(&[service("web", image, container, &f.id, extra)])
    )
}

/// Policy sections for team B and an operations team that may bind the
/// Docker socket, beside the fixture's project `e2e` (team A).
fn other_projects(f: &Fixture) -> String {
    format!(
        "\n[projects.b]\nsecrets = [\"{B_SECRET}\"]\ncontainers = [\"{id}b-*\"]\nactions = [\"pull\"]\n\n[projects.ops]\nsecrets = [\"{OPS_SECRET}\"]\ncontainers = [\"{id}ops-*\"]\nactions = [\"pull\"]\nallow = [\"docker_socket\"]\n",
        id = f.id
    )
}

per_compose_tool!(e2e_a_teams_compose_file_cannot_reach_beyond_its_project);
async fn e2e_a_teams_compose_file_cannot_reach_beyond_its_project(tool: Compose) {
    let f = Fixture::with_registry(tool);
    let root = std::fs::canonicalize(f.dir.path()).unwrap();
    let a = root.join("team-a");
    let b = root.join("team-b");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join(".env"), "B_DATABASE_PASSWORD=team-b-only\n").unwrap();
    std::fs::write(b.join("Dockerfile"), "FROM scratch\n").unwrap();
    std::fs::write(
        b.join("compose.yml"),
        format!("services:\n  theirs:\n    image: {}/base:1\n", f.id),
    )
    .unwrap();
    let repo = f.web_v1_published();
    let image = f.remote(&repo);
    let container = format!("{}-web", f.id);
    f.compose_up(
        &format!("{}a", f.id),
        &a,
        &[("compose.yml", a_file(&f, &image, &container, "", ""))],
        &[],
    );
    let before = f.container(&container)["Id"].clone();
    let gateway = GatewayProcess::start_with(&f, "", "", &other_projects(&f));
    let client = Client::new(&gateway);

    let b_text = b.display().to_string();
    let mut shapes: Vec<(&str, String, String, String)> = vec![
        (
            "another team's env file",
            format!("    env_file: [{b_text}/.env]\n"),
            String::new(),
            format!("service `web`, `env_file`: {b_text}/.env is outside the project's host paths"),
        ),
        (
            "the Docker socket",
            "    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n".into(),
            String::new(),
            "service `web`, `volumes[0]`: /var/run/docker.sock is the Docker socket, which needs allow = [\"docker_socket\"]".into(),
        ),
        (
            "/run, which holds the socket",
            "    volumes: [\"/run:/hostrun:ro\"]\n".into(),
            String::new(),
            "service `web`, `volumes[0]`: /run holds the Docker socket".into(),
        ),
        (
            "privileged",
            "    privileged: true\n".into(),
            String::new(),
            "service `web`, `privileged`: `privileged: true`, which needs allow = [\"privileged\"]".into(),
        ),
        (
            "another team's build context",
            format!("    build: {b_text}\n"),
            String::new(),
            format!("service `web`, `build.context`: {b_text} is outside the project's host paths"),
        ),
        (
            "another team's volume",
            "    volumes: [\"theirs:/data\"]\n".into(),
            format!("volumes:\n  theirs:\n    external: true\n    name: {}b_data\n", f.id),
            format!("the external volume `{}b_data` lies outside the compose project", f.id),
        ),
    ];
    if tool == Compose::V2 {
        shapes.push((
            "an include of another team's file",
            String::new(),
            format!("include:\n  - {b_text}/compose.yml\n"),
            format!("`include`: {b_text}/compose.yml is outside the project's host paths"),
        ));
    }
    let mut table = vec![format!("| shape | compose {} |", tool.policy_value())];
    for (what, extra, top, expected) in &shapes {
        std::fs::write(
            a.join("compose.yml"),
            a_file(&f, &image, &container, extra, top),
        )
        .unwrap();
        let (status, problem) = client.deploy("/pull?wait=60", &container).await;
        let message = problem["message"].as_str().unwrap_or_default();
        assert_eq!(
            (status, problem["code"].as_str()),
            (403, Some("compose_model_not_allowed")),
            "{what}: {problem}"
        );
        assert!(message.contains(expected.as_str()), "{what}: {message}");
        assert!(
            !message.contains("team-b-only"),
            "no value of B's: {message}"
        );
        assert_eq!(f.container(&container)["Id"], before, "{what}: nothing ran");
        table.push(format!("| {what} | 403 |"));
    }
    // Asked of the store, not the log, whose writer may still hold lines.
    let jobs = client.jobs().await;
    assert!(jobs.is_empty(), "no job was made: {jobs:#?}");

    // What a team needs still deploys: a bind under its own directory, a
    // named volume of its own, an env file beside its compose file.
    std::fs::write(a.join("web.env"), "GREETING=hello\n").unwrap();
    std::fs::create_dir_all(a.join("data")).unwrap();
    std::fs::write(
        a.join("compose.yml"),
        a_file(
            &f,
            &image,
            &container,
            "    env_file: [./web.env]\n    volumes: [\"./data:/data\", \"cache:/cache\"]\n",
            "volumes:\n  cache: {}\n",
        ),
    )
    .unwrap();
    f.push_version(&repo, "v2");
    let (status, job) = client.deploy("/pull?wait=120", &container).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}\n{}",
        gateway.log_text()
    );
    assert_eq!(f.content(&container), "v2");
    table.push("| own bind, named volume, env file beside | 200 |".into());

    // A project whose policy allows the socket binds it.
    let ops = format!("{}ops-web", f.id);
    f.compose_up(
        &format!("{}ops", f.id),
        &root.join("ops"),
        &[(
            "compose.yml",
            a_file(
                &f,
                &image,
                &ops,
                "    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n",
                "",
            ),
        )],
        &[],
    );
    let (status, job) = client
        .deploy_signed("/pull?wait=120", &ops, now(), OPS_SECRET)
        .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job:#}"
    );
    table.push("| the socket, allow = [\"docker_socket\"] | 200 |".into());
    println!("{}", table.join("\n"));

    // What an operator sees before an upgrade: A's file reaching into B's
    // is refused, ops' socket is allowed.
    std::fs::write(
        a.join("compose.yml"),
        a_file(&f, &image, &container, &shapes[0].1, ""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_delivery-hook"))
        .args(["check", "--compose", "--config"])
        .arg(f.dir.path().join("delivery.toml"))
        .env("E2E_SECRET", SECRET)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    println!("{said}");
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("compose project `{}a`:", f.id))
            && said.contains(&format!(
                "  service `web` ({container}) by project `e2e`: refused: compose_model_not_allowed\n    - [outside_host_paths] service `web`, `env_file`: {b_text}/.env is outside"
            )),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "  service `web` ({ops}) by project `ops`: allowed"
        )),
        "{said}"
    );
}

/// Writes a build context whose build takes `seconds` when `stamp` changes.
fn slow_context(f: &Fixture, dir: &Path, seconds: u32, stamp: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("index.html"), "built").unwrap();
    std::fs::write(dir.join("stamp"), stamp).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {id}/base:1\nCOPY stamp /stamp\nRUN [\"/bin/busybox\", \"sleep\", \"{seconds}\"]\nCOPY index.html /www/index.html\nLABEL dh.test={id}\n",
            id = f.id
        ),
    )
    .unwrap();
}

per_compose_tool!(e2e_a_symlink_swapped_while_a_job_is_queued_fails_it);
/// Team A's compose file is a symlink, as a release process keeps one.
/// While a slow build of A runs, a pull of A waits behind it; the symlink
/// is pointed at team B's compose file. The running job, whose files
/// changed under it, and the queued one, which would run B's file, both
/// end `failed` with `compose_files_changed`; the queued one runs nothing,
/// and neither the rollback nor anything else runs B's file.
async fn e2e_a_symlink_swapped_while_a_job_is_queued_fails_it(tool: Compose) {
    let f = Fixture::new(tool);
    let root = std::fs::canonicalize(f.dir.path()).unwrap();
    let a = root.join("team-a");
    let b = root.join("team-b");
    let container = format!("{}-web", f.id);
    slow_context(&f, &a.join("web"), 4, "1");
    let image = format!("{}/web:dev", f.id);
    let own = a_file(&f, &image, &container, "    build: ./web\n", "");
    std::fs::create_dir_all(a.join("releases")).unwrap();
    std::fs::write(a.join("releases/compose.yml"), &own).unwrap();
    // B's file names the same service, somewhere A must not deploy from.
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(
        b.join("compose.yml"),
        a_file(
            &f,
            &format!("{}/base:1", f.id),
            &container,
            "    command: [\"sleep\", \"1000\"]\n",
            "",
        ),
    )
    .unwrap();
    let link = a.join("compose.yml");
    std::os::unix::fs::symlink(a.join("releases/compose.yml"), &link).unwrap();
    // Started through the link, as the label will record it.
    let argv = tool.argv();
    let project = format!("{}a", f.id);
    let mut up = Command::new(argv[0]);
    up.args(&argv[1..])
        .args(["-p", &project, "-f"])
        .arg(&link)
        .args(["up", "-d", "--build"])
        .current_dir(&a);
    let _guard = super::shapes::ProjectGuard(project.clone());
    let out = up.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gateway = GatewayProcess::start(&f, "");
    let client = Client::new(&gateway);
    std::fs::write(a.join("web/stamp"), "2").unwrap();
    let (status, building) = client.deploy("/build", &container).await;
    assert_eq!(status, 202, "{building}");
    let building = building["id"].as_str().unwrap().to_string();
    // Until the build's slow step runs: compose has read A's file by then.
    // (A swap before compose reads the file is caught after the command,
    // but compose would have read B's file.)
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, job) = client.job(&building, 0).await;
        if job["output"].as_str().is_some_and(|o| o.contains("sleep")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{job:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another timestamp: the same body signed in the same second is the
    // same request, a replay of the build.
    let (status, queued) = client.deploy_at("/pull", &container, now() - 5).await;
    assert_eq!(
        (status, queued["state"].as_str()),
        (202, Some("queued")),
        "{queued}"
    );
    let queued = queued["id"].as_str().unwrap().to_string();

    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(b.join("compose.yml"), &link).unwrap();

    let (_, first) = client.job(&building, 120).await;
    let (_, second) = client.job(&queued, 120).await;
    for (which, job) in [("the running build", &first), ("the queued pull", &second)] {
        assert_eq!(job["state"], "failed", "{which}: {job:#}");
        assert!(
            job["error"]
                .as_str()
                .is_some_and(|e| e.contains("compose_files_changed")),
            "{which}: {job:#}"
        );
    }
    assert_eq!(
        second["steps"].as_array().map(Vec::len),
        Some(0),
        "the queued job ran nothing: {second:#}"
    );
    let now = f.container(&container);
    assert_ne!(
        now["Config"]["Cmd"],
        serde_json::json!(["sleep", "1000"]),
        "B's file never ran"
    );
    // Put back, so that the fixture's cleanup reads A's file.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(a.join("releases/compose.yml"), &link).unwrap();
}
