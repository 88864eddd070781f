//! The CI steps as their runners see them: `action.yml` and the GitLab
//! component read as files and checked with check-jsonschema, the
//! `docker run` each runner makes of them, the outputs read back; and
//! stand-in hosts that count what a fleet deploy sends them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use delivery_hook::api::{Job, JobStatus};
use poem::web::Data;
use poem::{EndpointExt, Request, Response, Route, handler};
use poem_openapi::types::Example;
use serde_yaml::Value as Yaml;

use super::Served;

/// A file of the repository.
pub fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// check-jsonschema (PyPI), from `DELIVERY_TEST_CHECK_JSONSCHEMA`
/// (scripts/test installs it) or the PATH; `None` (the test skips) when
/// there is none outside CI. Under CI=true a missing one is a failure.
pub fn check_jsonschema() -> Option<String> {
    let tool = std::env::var("DELIVERY_TEST_CHECK_JSONSCHEMA")
        .unwrap_or_else(|_| "check-jsonschema".into());
    if !super::runs(&tool, &["--version"]) {
        super::skip(&format!(
            "{tool} does not run (PyPI check-jsonschema; scripts/test sets DELIVERY_TEST_CHECK_JSONSCHEMA)"
        ));
        return None;
    }
    Some(tool)
}

/// `file` against check-jsonschema's built-in schema `schema`; what it
/// said when the file does not validate.
pub fn validate(tool: &str, schema: &str, file: &Path) -> Result<(), String> {
    let out = Command::new(tool)
        .arg(format!("--builtin-schema=vendor.{schema}"))
        .arg("--")
        .arg(file)
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

fn yaml(text: &str) -> Yaml {
    serde_yaml::from_str(text).unwrap()
}

/// `action.yml`, parsed.
pub fn action() -> Yaml {
    yaml(&std::fs::read_to_string(repo_file("action.yml")).unwrap())
}

/// The GitLab component's two documents: the `spec` header and the jobs.
pub struct Component {
    pub spec_text: String,
    pub jobs_text: String,
}

impl Component {
    pub fn read() -> Self {
        let text = std::fs::read_to_string(repo_file("templates/deploy.yml")).unwrap();
        let (spec, jobs) = text
            .split_once("\n---\n")
            .expect("the component is two YAML documents, split by ---");
        Self {
            spec_text: spec.to_owned(),
            jobs_text: jobs.to_owned(),
        }
    }

    pub fn inputs(&self) -> Yaml {
        yaml(&self.spec_text)["spec"]["inputs"].clone()
    }

    /// The one job, its inputs interpolated as GitLab does when it
    /// includes the component: every `$[[ inputs.NAME ]]` in a string
    /// becomes the given value or the default.
    pub fn job(&self, given: &[(&str, &str)]) -> Yaml {
        let inputs = self.inputs();
        for (name, _) in given {
            assert!(
                inputs.get(*name).is_some(),
                "the component has no input {name}"
            );
        }
        let mut values = BTreeMap::new();
        for (name, spec) in inputs.as_mapping().unwrap() {
            let name = name.as_str().unwrap();
            let value = match given.iter().find(|(n, _)| *n == name) {
                Some((_, value)) => value.to_string(),
                None => scalar(spec.get("default").unwrap_or_else(|| {
                    panic!("the component's input {name} is required and was not given")
                })),
            };
            values.insert(format!("$[[ inputs.{name} ]]"), value);
        }
        let jobs = yaml(&self.jobs_text);
        let mut job = jobs.as_mapping().unwrap().values().next().unwrap().clone();
        interpolate(&mut job, &values);
        job
    }
}

fn scalar(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("an input default that is not a scalar: {other:?}"),
    }
}

fn interpolate(value: &mut Yaml, values: &BTreeMap<String, String>) {
    match value {
        Yaml::String(text) => {
            for (reference, replacement) in values {
                *text = text.replace(reference, replacement);
            }
            assert!(!text.contains("$[["), "an unknown input in {text}");
        }
        Yaml::Sequence(items) => items.iter_mut().for_each(|v| interpolate(v, values)),
        Yaml::Mapping(map) => map.values_mut().for_each(|v| interpolate(v, values)),
        _ => {}
    }
}

/// A script line as words: plain words and double-quoted ones, nothing a
/// shell would expand or redirect. A line that needs a shell fails the
/// test, since the component promises a single command.
pub fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    for c in line.chars() {
        assert!(
            !"$`\\".contains(c) && (quoted || !"';|&<>(){}*?~#".contains(c)),
            "the script line needs a shell ({c:?}): {line}"
        );
        match c {
            '"' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            c if c.is_whitespace() && !quoted => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(!quoted, "an unclosed quote: {line}");
    words.extend(word);
    words
}

/// What a container step printed and left behind.
pub struct StepRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The `GITHUB_OUTPUT` file's outputs (GitHub only).
    pub outputs: BTreeMap<String, String>,
}

/// `docker run` with `env` given by name only (the values reach docker
/// through its own environment, so no secret is an argument), on the
/// host's network, labelled, removed when it ends.
fn docker_run(label: &str, env: &[(String, String)], tail: &[String]) -> Command {
    let mut command = Command::new("docker");
    command
        .args(["run", "--rm", "--network=host"])
        .arg(format!("--label=dh.test={label}"));
    for (name, _) in env {
        command.arg("-e").arg(name);
    }
    command.args(tail).envs(env.iter().map(|(n, v)| (n, v)));
    command
}

fn finish(command: &mut Command, outputs: BTreeMap<String, String>) -> StepRun {
    let out = command.output().expect("docker runs");
    StepRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        outputs,
    }
}

/// Runs the action as the GitHub runner runs a container action: its
/// image (`image` in place of the published one), its `args`, every input
/// it declares as `INPUT_<NAME>` (given, or its default, or empty), the
/// file commands directory mounted with `GITHUB_OUTPUT` in it, and `env`.
pub fn run_action(
    image: &str,
    label: &str,
    dir: &Path,
    given: &[(&str, &str)],
    env: &[(&str, &str)],
) -> StepRun {
    let action = action();
    let runs = &action["runs"];
    assert_eq!(runs["using"].as_str(), Some("docker"));
    let published = runs["image"].as_str().unwrap();
    assert!(published.starts_with("docker://"), "{published}");
    let args: Vec<String> = runs["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert!(
        !args.iter().any(|a| a.to_lowercase().contains("secret")),
        "the action's args name the secret: {args:?}"
    );
    let mut vars = action_inputs(&action, given);
    let files = dir.join("file_commands");
    std::fs::create_dir_all(&files).unwrap();
    let output_file = files.join("set_output");
    std::fs::write(&output_file, "").unwrap();
    vars.push((
        "GITHUB_OUTPUT".into(),
        "/github/file_commands/set_output".into(),
    ));
    vars.extend(env.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let mut tail = vec![
        "-v".to_owned(),
        format!("{}:/github/file_commands", files.display()),
        image.to_owned(),
    ];
    tail.extend(args);
    let mut command = docker_run(label, &vars, &tail);
    let mut run = finish(&mut command, BTreeMap::new());
    run.outputs = parse_outputs(&std::fs::read_to_string(output_file).unwrap());
    run
}

/// `INPUT_<NAME>` for each input `action` declares, as the runner sets them.
fn action_inputs(action: &Yaml, given: &[(&str, &str)]) -> Vec<(String, String)> {
    let inputs = action["inputs"].as_mapping().unwrap();
    for (name, _) in given {
        assert!(inputs.contains_key(*name), "the action has no input {name}");
    }
    inputs
        .iter()
        .map(|(name, spec)| {
            let name = name.as_str().unwrap();
            let value = match given.iter().find(|(n, _)| *n == name) {
                Some((_, value)) => value.to_string(),
                None => spec.get("default").map(scalar).unwrap_or_default(),
            };
            (format!("INPUT_{}", name.to_uppercase()), value)
        })
        .collect()
}

/// The outputs in a `GITHUB_OUTPUT` file: `name<<DELIMITER` blocks and
/// `name=value` lines.
pub fn parse_outputs(text: &str) -> BTreeMap<String, String> {
    let mut outputs = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delimiter)) = line.split_once("<<") {
            let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delimiter).collect();
            outputs.insert(name.to_owned(), value.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            outputs.insert(name.to_owned(), value.to_owned());
        }
    }
    outputs
}

/// Runs the component's job as the GitLab runner would: its image with
/// the entrypoint it names, each script line as a command, `env` (the CI
/// variables and the `id_tokens`) in its environment. Stops at the first
/// line that fails, as GitLab does.
pub fn run_component(
    image: &str,
    label: &str,
    given: &[(&str, &str)],
    env: &[(&str, &str)],
) -> StepRun {
    let mut given = given.to_vec();
    given.push(("delivery-hook-image", image));
    let job = Component::read().job(&given);
    assert_eq!(job["image"]["name"].as_str(), Some(image));
    let entrypoint = job["image"]["entrypoint"].as_sequence().unwrap();
    assert_eq!(entrypoint.len(), 1, "entrypoint: [\"\"]");
    for (name, _) in job["id_tokens"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            env.iter().any(|(n, _)| *n == name),
            "the test gives the job its id_tokens variable {name}"
        );
    }
    let vars: Vec<(String, String)> = env
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let mut run = None;
    for line in job["script"].as_sequence().unwrap() {
        let mut tail = vec![
            format!("--entrypoint={}", entrypoint[0].as_str().unwrap()),
            image.to_owned(),
        ];
        tail.extend(words(line.as_str().unwrap()));
        let this = finish(&mut docker_run(label, &vars, &tail), BTreeMap::new());
        let failed = this.code != 0;
        run = Some(this);
        if failed {
            break;
        }
    }
    run.expect("a script")
}

/// How a stand-in host answers a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPlay {
    /// 200 with a job that succeeded.
    Succeed,
    /// 200 with a job that failed.
    Fail,
    /// 403, a refusal.
    Refuse,
    /// 202 with a queued job, which every read then shows running.
    Accept,
    /// 202 with a queued job, then 401 to every read: the token the
    /// deploy was sent with has grown too old to read it.
    AcceptThenRefuseReads,
}

struct HostState {
    play: HostPlay,
    requests: AtomicUsize,
    /// Requests that carried an HMAC signature rather than a token.
    signed: AtomicUsize,
}

/// A stand-in gateway: answers every deploy as `play` says and counts
/// every request it receives.
pub struct StandInHost {
    pub url: String,
    state: Arc<HostState>,
    _served: Served,
}

#[handler]
fn stand_in(state: Data<&Arc<HostState>>, request: &Request) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if request.headers().contains_key("x-signature") {
        state.signed.fetch_add(1, Ordering::SeqCst);
    }
    let mut job = Job::example();
    job.id = format!("{:032x}", request.uri().path().len());
    let (status, body) = match state.play {
        HostPlay::Succeed => (200, serde_json::to_value(&job).unwrap()),
        HostPlay::Fail => {
            job.state = JobStatus::Failed;
            job.error = Some("`compose pull` exited with code 1".into());
            (200, serde_json::to_value(&job).unwrap())
        }
        HostPlay::Accept => {
            let read = request.method() == poem::http::Method::GET;
            job.state = if read {
                JobStatus::Running
            } else {
                JobStatus::Queued
            };
            (
                if read { 200 } else { 202 },
                serde_json::to_value(&job).unwrap(),
            )
        }
        HostPlay::AcceptThenRefuseReads if request.method() == poem::http::Method::GET => (
            401,
            serde_json::json!({
                "type": "urn:delivery-hook:error:invalid_token",
                "title": "Unauthorized", "status": 401, "code": "invalid_token",
                "rule": "too_old",
                "message": "the token was issued longer ago than the rule's max_token_age_secs",
            }),
        ),
        HostPlay::AcceptThenRefuseReads => {
            job.state = JobStatus::Queued;
            (202, serde_json::to_value(&job).unwrap())
        }
        HostPlay::Refuse => (
            403,
            serde_json::json!({
                "type": "urn:delivery-hook:error:container_not_allowed",
                "title": "Forbidden", "status": 403, "code": "container_not_allowed",
                "message": "the container is outside the project's containers",
            }),
        ),
    };
    Response::builder()
        .status(poem::http::StatusCode::from_u16(status).unwrap())
        .content_type("application/json")
        .body(body.to_string())
}

impl StandInHost {
    pub fn start(play: HostPlay) -> Self {
        let state = Arc::new(HostState {
            play,
            requests: AtomicUsize::new(0),
            signed: AtomicUsize::new(0),
        });
        let data = state.clone();
        let served = Served::start(move |_| Route::new().at("/*path", stand_in).data(data));
        Self {
            url: served.url.clone(),
            state,
            _served: served,
        }
    }

    /// How many requests it received.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// How many of them were signed with a secret.
    pub fn signed_requests(&self) -> usize {
        self.state.signed.load(Ordering::SeqCst)
    }
}
