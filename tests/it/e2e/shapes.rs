//! The ways people start compose projects, as a matrix: each row starts a
//! service on v1 of its image the way the row says (working directory,
//! `-f`, `--env-file`, `--project-directory`, symlinks, file names,
//! profiles), v2 is pushed, a signed `POST /pull?wait=` deploys it, and the
//! container must run v2. Then v3 is deployed by a gateway that judges the
//! compose model (compose runs the judged copy), and v4 by it again,
//! through the labels compose wrote for the copy, read back as the row's
//! own files. The matrix runs once per compose tool.
//!
//! The gateways' policy pins `compose_files` to the fixture's directory, so
//! every row also passes the real-path checks a multi-team host uses.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

/// The suffix a row's names get under `tool`, so both tools' rows of one
/// fixture never share a project.
fn suffix(tool: Compose) -> &'static str {
    match tool {
        Compose::V1 => "a",
        Compose::V2 => "b",
    }
}

/// Removes a compose project's containers and networks by their labels,
/// whatever tool made them and whichever profiles were active.
pub(super) struct ProjectGuard(pub(super) String);

impl Drop for ProjectGuard {
    fn drop(&mut self) {
        let filter = format!("label=com.docker.compose.project={}", self.0);
        for id in run_quietly("docker", &["ps", "-aq", "--filter", &filter]).split_whitespace() {
            run_quietly("docker", &["rm", "-f", id]);
        }
        for id in
            run_quietly("docker", &["network", "ls", "-q", "--filter", &filter]).split_whitespace()
        {
            run_quietly("docker", &["network", "rm", id]);
        }
    }
}

/// What one row starts: where compose runs, with which arguments.
struct Start {
    project: String,
    container: String,
    cwd: PathBuf,
    args: Vec<String>,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

const ROWS: &[(u8, &str)] = &[
    (1, "from the project directory, no -f"),
    (2, "from a directory above, -f sub/compose.yml"),
    (3, "-f base.yml -f override.yml, override sets the tag"),
    (4, "absolute -f, started from /"),
    (5, "--env-file custom.env (relative) names the tag"),
    (6, "--env-file /abs/custom.env, relative -f from above"),
    (7, "--project-directory other than the file's directory"),
    (8, "the project directory reached through a symlink"),
    (9, "compose.yaml and an implicit .env naming the tag"),
    (10, "a service with profiles:, its profile active"),
];

/// Writes row `row`'s files under `root`; the service runs `repo:<tag>`
/// where the row's files say which tag (`live`, or through a variable).
fn prepare(f: &Fixture, root: &Path, row: u8, name: &str, registry_repo: &str) -> Start {
    let container = format!("{name}-web");
    let dir = root.join(name);
    let svc = |image: &str, extra: &str| service("web", image, &container, &f.id, extra);
    let live = format!("{registry_repo}:live");
    let templated = format!("{registry_repo}:${{TAG:-missing}}");
    let (cwd, args): (PathBuf, Vec<String>) = match row {
        1 => {
            write(&dir.join("docker-compose.yml"), &compose(&[svc(&live, "")]));
            (dir.clone(), strings(&["up", "-d"]))
        }
        2 => {
            write(&dir.join("sub/compose.yml"), &compose(&[svc(&live, "")]));
            let file = format!("{name}/sub/compose.yml");
            (
                root.to_path_buf(),
                strings(&["-p", name, "-f", &file, "up", "-d"]),
            )
        }
        3 => {
            let never = format!("{registry_repo}:never-pushed");
            write(&dir.join("base.yml"), &compose(&[svc(&never, "")]));
            write(
                &dir.join("override.yml"),
                &format!("services:\n  web:\n    image: {live}\n"),
            );
            let args = [
                "-p",
                name,
                "-f",
                "base.yml",
                "-f",
                "override.yml",
                "up",
                "-d",
            ];
            (dir.clone(), strings(&args))
        }
        4 => {
            let file = dir.join("compose.yml");
            write(&file, &compose(&[svc(&live, "")]));
            let file = file.display().to_string();
            (
                PathBuf::from("/"),
                strings(&["-p", name, "-f", &file, "up", "-d"]),
            )
        }
        5 => {
            write(&dir.join("compose.yml"), &compose(&[svc(&templated, "")]));
            write(&dir.join("custom.env"), "TAG=live\n");
            let args = [
                "-p",
                name,
                "-f",
                "compose.yml",
                "--env-file",
                "custom.env",
                "up",
                "-d",
            ];
            (dir.clone(), strings(&args))
        }
        6 => {
            write(&dir.join("compose.yml"), &compose(&[svc(&templated, "")]));
            let env = dir.join("custom.env");
            write(&env, "TAG=live\n");
            let file = format!("{name}/compose.yml");
            let env = env.display().to_string();
            let args = ["-p", name, "-f", &file, "--env-file", &env, "up", "-d"];
            (root.to_path_buf(), strings(&args))
        }
        7 => {
            // The project directory holds the .env that names the tag, and
            // is not where the compose file is.
            write(&dir.join("compose.yml"), &compose(&[svc(&templated, "")]));
            write(&dir.join("env/.env"), "TAG=live\n");
            let file = format!("{name}/compose.yml");
            let project_dir = format!("{name}/env");
            let args = [
                "-p",
                name,
                "-f",
                &file,
                "--project-directory",
                &project_dir,
                "up",
                "-d",
            ];
            (root.to_path_buf(), strings(&args))
        }
        8 => {
            let real = root.join(format!("{name}-real"));
            write(&real.join("compose.yml"), &compose(&[svc(&live, "")]));
            std::os::unix::fs::symlink(&real, &dir).unwrap();
            let file = dir.join("compose.yml").display().to_string();
            (dir.clone(), strings(&["-p", name, "-f", &file, "up", "-d"]))
        }
        9 => {
            write(&dir.join("compose.yaml"), &compose(&[svc(&templated, "")]));
            write(&dir.join(".env"), "TAG=live\n");
            (dir.clone(), strings(&["up", "-d"]))
        }
        10 => {
            write(
                &dir.join("docker-compose.yml"),
                &compose(&[svc(&live, "    profiles: [\"extra\"]\n")]),
            );
            (dir.clone(), strings(&["--profile", "extra", "up", "-d"]))
        }
        _ => unreachable!("no row {row}"),
    };
    Start {
        project: name.to_string(),
        container,
        cwd,
        args,
    }
}

fn compose_in(tool: Compose, cwd: &Path, args: &[String]) {
    let output = tool
        .command(&[])
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{:?} {args:?} in {} failed:\n{}",
        tool.argv(),
        cwd.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One row, start to check; returns the deploys' times (on the files, on a
/// judged copy, again through the copy's labels) or what went wrong.
async fn run_row(
    f: &Fixture,
    gateways: (&GatewayProcess, &GatewayProcess),
    root: &Path,
    tool: Compose,
    row: u8,
    images: &[String; 4],
) -> Result<[Duration; 3], String> {
    let name = format!("{}-r{row}{}", f.id, suffix(tool));
    let repo = format!("{}/r{row}{}", f.id, suffix(tool));
    let _guard = ProjectGuard(name.clone());
    f.publish(&images[0], &format!("{repo}:live"));
    let start = prepare(f, root, row, &name, &f.remote(&repo));
    compose_in(tool, &start.cwd, &start.args);
    if f.content(&start.container) != "v1" {
        return Err("did not start on v1".into());
    }
    let mut times = [Duration::ZERO; 3];
    let steps = [
        (gateways.0, "on the files"),
        (gateways.1, "on a judged copy"),
        (gateways.1, "through the copy's labels"),
    ];
    // The three deploys send the same body, so each is signed at a second
    // of its own (the same body and second would be one request, replayed).
    let mut signed_at = u64::MAX;
    for (step, (gateway, how)) in steps.into_iter().enumerate() {
        let version = step + 2;
        f.publish(&images[step + 1], &format!("{repo}:live"));
        let began = Instant::now();
        signed_at = crate::support::now().min(signed_at - 1);
        let (status, job) = Client::new(gateway)
            .deploy_at("/pull?wait=120", &start.container, signed_at)
            .await;
        times[step] = began.elapsed();
        if status != 200 || job["state"] != "succeeded" {
            let output = job["output"].as_str().unwrap_or_default();
            let tail: String = output
                .chars()
                .rev()
                .take(800)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(format!(
                "v{version} {how}: {status} {} {}: {}\n{tail}",
                job["state"], job["code"], job["message"]
            ));
        }
        let running = f.container(&start.container);
        let id = run(
            "docker",
            &["image", "inspect", "--format", "{{.Id}}", &images[step + 1]],
        );
        if running["Image"].as_str() != Some(id.as_str())
            || f.content(&start.container) != format!("v{version}")
        {
            return Err(format!(
                "v{version} {how}: runs {} after the deploy",
                running["Image"]
            ));
        }
        if running["Config"]["Labels"]["com.docker.compose.project"] != start.project {
            return Err(format!(
                "v{version} {how}: recreated under another compose project"
            ));
        }
    }
    Ok(times)
}

per_compose_tool!(e2e_compose_shapes_matrix);
async fn e2e_compose_shapes_matrix(tool: Compose) {
    let f = Fixture::with_registry(tool);
    let root = std::fs::canonicalize(f.dir.path()).unwrap().join("shapes");
    std::fs::create_dir_all(&root).unwrap();
    let images: [String; 4] = std::array::from_fn(|i| format!("{}/page:v{}", f.id, i + 1));
    for (i, image) in images.iter().enumerate() {
        f.image(image, &format!("v{}", i + 1));
    }
    let boundary = format!("compose_files = [\"{}/**\"]\n", root.display());
    let on_files = GatewayProcess::start_with(&f, "", "", &boundary);
    let judging = GatewayProcess::start_with(
        &f,
        "state_dir = \"judging-state\"\n",
        "",
        &format!("{boundary}compose_model = \"enforce\"\n"),
    );

    let mut table = vec![
        "| row | shape | compose | result | on the files | judged copy | through its labels |"
            .to_string(),
    ];
    table.push("|---|---|---|---|---|---|---|".into());
    let mut failures = Vec::new();
    let label = tool.policy_value();
    for (row, shape) in ROWS {
        let outcome = run_row(&f, (&on_files, &judging), &root, tool, *row, &images).await;
        let (result, times) = match outcome {
            Ok(times) => (
                "v2, v3, v4 run".to_string(),
                times.map(|t| format!("{} ms", t.as_millis())).join(" | "),
            ),
            Err(e) => {
                failures.push(format!("row {row} ({shape}) with {label}: {e}"));
                ("FAILED".into(), " | | ".into())
            }
        };
        table.push(format!(
            "| {row} | {shape} | {label} | {result} | {times} |"
        ));
    }
    println!("{}", table.join("\n"));
    // The failures come last, where a shortened CI log still shows them.
    assert!(
        failures.is_empty(),
        "{}\n{}\n\n{}",
        on_files.log_text(),
        judging.log_text(),
        failures.join("\n"),
    );
}
