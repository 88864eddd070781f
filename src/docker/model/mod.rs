//! The compose model inside the tenant boundary.
//!
//! What compose will do for a job is judged from compose's own resolved
//! model of exactly the invocation that will run (`config`, every profile
//! active: v2 prints JSON, v1 YAML), by an allowlist: [`table`] gives
//! every key a model can carry one verdict, and [`judge`] refuses what the
//! table does not know. What the model drops (env file paths, `include`,
//! `extends`, `label_file`) is read from the files with compose's own
//! rules ([`reader`]) and judged before `config` runs, so compose never
//! reads a file the project may not read.
//!
//! The model judged is what runs: a job writes it to a copy of its own
//! ([`super::copies`]) and runs every compose command on that copy.

pub mod judge;
pub mod reader;
pub mod table;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::docker::host_path::real_for_judging;
pub use judge::{Finding, Rules, Why, judge_model};
pub use reader::{Reads, Reference};

use super::image_ref::ImagePin;
use super::{ComposeHost, ComposeTarget};

/// Compose's model of one invocation, as `config` printed it.
#[derive(Debug, Clone)]
pub struct ComposeModel {
    pub model: Arc<Value>,
}

/// Why compose's `config` failed, in words that quote no file: the file
/// and line compose names, and its message only where it holds no quoted
/// text (compose quotes the lines of env files it cannot parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFailure {
    pub file: Option<PathBuf>,
    pub line: Option<u64>,
    pub message: Option<String>,
}

/// The most of compose's message that is repeated.
const MESSAGE_CHARS: usize = 300;

impl ConfigFailure {
    /// Reads compose's standard error; `files` are the files the
    /// invocation reads (compose names them absolute, or v1 relative to
    /// `cwd`).
    pub fn from_stderr(stderr: &str, files: &[PathBuf], cwd: &Path) -> Self {
        let said: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| {
                !l.is_empty()
                    && !l.starts_with("$ ")
                    && !l.contains("level=warning")
                    && !l.starts_with("WARNING")
            })
            .collect();
        let text = said.join("; ");
        let file = files
            .iter()
            .filter(|f| {
                let relative = f.strip_prefix(cwd).ok().map(|r| r.display().to_string());
                text.contains(&*f.display().to_string())
                    || relative.is_some_and(|r| text.contains(&format!("./{r}")))
            })
            .max_by_key(|f| f.as_os_str().len())
            .cloned();
        let line = text.find("line ").and_then(|at| {
            let digits: String = text[at + 5..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        });
        let quotes = text.contains(['"', '\'', '`']);
        let message = (!quotes && !text.is_empty()).then(|| {
            let mut message: String = text.chars().take(MESSAGE_CHARS).collect();
            if text.chars().count() > MESSAGE_CHARS {
                message.push('…');
            }
            message
        });
        Self {
            file,
            line,
            message,
        }
    }
}

impl fmt::Display for ConfigFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("compose could not read the project's model")?;
        if let Some(file) = &self.file {
            write!(f, " in {}", file.display())?;
        }
        if let Some(line) = self.line {
            write!(f, " at line {line}")?;
        }
        match &self.message {
            Some(message) => write!(f, ": {message}"),
            None => f.write_str(
                " (compose's message quotes the files, so it is not repeated; run `config` by hand)",
            ),
        }
    }
}

/// Why a model could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// `config` failed.
    #[error("{0}")]
    Config(ConfigFailure),
    /// `config` could not be run or did not print a model.
    #[error("{0}")]
    Compose(String),
    /// A compose file, or a file it names, could not be read or parsed.
    #[error("{0}")]
    File(String),
    /// A file compose reads changed while it was read.
    #[error(
        "a compose file, or a file it names, changed while compose read it; retry when the project's files stay the same"
    )]
    Changed,
}

/// Parses what `config` printed: JSON from v2, YAML from v1. The result is
/// the copy's form: every `$` of a value escaped as `$$`, as compose reads a
/// file it interpolates again. Both tools print their values so, except
/// three of v1's (short volumes, `volumes_from`, `security_opt`, which it
/// prints as interpolated); those are escaped here, so that compose,
/// reading the copy, does not interpolate them a second time.
pub fn parse_config_output(text: &str, yaml: bool) -> Result<Value, ModelError> {
    let model: Option<Value> = if yaml {
        serde_yaml::from_str(text).ok()
    } else {
        serde_json::from_str(text).ok()
    };
    // Not the parser's words: they would quote the model.
    let model = model.ok_or_else(|| {
        ModelError::Compose(format!(
            "compose printed a model that is not {}",
            if yaml { "YAML" } else { "JSON" }
        ))
    })?;
    if model.get("services").is_some_and(Value::is_object) {
        let mut model = model;
        if yaml {
            escape_v1_verbatim(&mut model);
        } else {
            spell_blkio_as_read(&mut model);
        }
        Ok(model)
    } else {
        Err(ModelError::Compose(
            "compose printed a model without services".into(),
        ))
    }
}

/// Compose v2 prints the fields of `blkio_config`'s entries by their Go
/// names (`Path`, `Rate`, `Weight`), which neither the schema nor compose
/// itself reads back: the model, and so the copy that runs, spells them as
/// the schema does.
fn spell_blkio_as_read(model: &mut Value) {
    let services = model.get_mut("services").and_then(Value::as_object_mut);
    for service in services.into_iter().flat_map(|s| s.values_mut()) {
        let Some(blkio) = service
            .get_mut("blkio_config")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let entries = blkio.values_mut().filter_map(Value::as_array_mut).flatten();
        for entry in entries.filter_map(Value::as_object_mut) {
            for name in ["Path", "Rate", "Weight"] {
                if let Some(value) = entry.remove(name) {
                    entry.insert(name.to_ascii_lowercase(), value);
                }
            }
        }
    }
}

/// The service keys whose values compose v1 prints interpolated but not
/// escaped.
const V1_VERBATIM: [&str; 3] = ["volumes", "volumes_from", "security_opt"];

fn escape_v1_verbatim(model: &mut Value) {
    let services = model.get_mut("services").and_then(Value::as_object_mut);
    for service in services.into_iter().flat_map(|s| s.values_mut()) {
        for key in V1_VERBATIM {
            let items = service.get_mut(key).and_then(Value::as_array_mut);
            for item in items.into_iter().flatten() {
                if let Value::String(text) = item {
                    *text = text.replace('$', "$$");
                }
            }
        }
    }
}

/// The values compose uses when it reads the copy: each `$$` of a value
/// is one `$` (keys are not interpolated). This is what the judge judges.
pub fn as_run(copy: &Value) -> Value {
    match copy {
        Value::String(text) => Value::String(text.replace("$$", "$")),
        Value::Array(items) => Value::Array(items.iter().map(as_run).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), as_run(value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `model` with `service`'s image set to `image`: a pin, or a rollback's
/// previous reference, merged into the model as an override file would.
pub fn with_image(model: &Value, service: &str, image: &str) -> Value {
    let mut model = model.clone();
    if let Some(entry) = model
        .get_mut("services")
        .and_then(|s| s.get_mut(service))
        .and_then(Value::as_object_mut)
    {
        entry.insert("image".into(), Value::String(image.to_owned()));
    }
    model
}

/// What the judge says of one invocation.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// The model judged, the pin merged in; `None` when what compose would
    /// read was refused, and `config` did not run.
    pub model: Option<Arc<Value>>,
    pub findings: Vec<Finding>,
}

/// Judges the invocation of `target` (the user's files, no pin file):
/// reads what its files name and judges those paths; unless they are
/// refused and `stop_at_reads`, asks compose for the model (cached),
/// merges `pin` in, and judges that. The target service must be in it.
pub async fn judge_invocation<E: ComposeHost + ?Sized>(
    engine: &E,
    target: &ComposeTarget,
    pin: Option<&ImagePin>,
    rules: &Rules<'_>,
    stop_at_reads: bool,
) -> Result<Judgement, ModelError> {
    // The files are read again when one changed while compose read them.
    let mut attempts = 0;
    let (model, mut findings) = loop {
        // A few small regular files, read where the project may read.
        let reads = reader::read(target, rules.host_path)?;
        let findings = judge_reads(&reads, rules);
        if stop_at_reads && !findings.is_empty() {
            return Ok(Judgement {
                model: None,
                findings,
            });
        }
        match engine.compose_model(target, &reads).await {
            Ok(model) => break (model.model, findings),
            Err(ModelError::Changed) if attempts < 2 => attempts += 1,
            Err(e) => return Err(e),
        }
    };
    let service = target.service.as_str();
    let model = match pin {
        Some(pin) => Arc::new(with_image(&model, service, &pin.to_string())),
        None => model,
    };
    // Names of the project's own form that another project already has.
    let taken = engine
        .taken_names(
            rules.compose_project,
            &own_names(&model, rules.compose_project),
        )
        .await
        .map_err(|e| {
            ModelError::Compose(format!(
                "the engine could not be asked about volumes and networks: {e}"
            ))
        })?;
    let writable_binds: Vec<(String, PathBuf)> = engine
        .writable_binds()
        .await
        .map_err(|e| {
            ModelError::Compose(format!(
                "the engine could not be asked what containers bind: {e}"
            ))
        })?
        .into_iter()
        .map(|(container, source)| (container, real_for_judging(&source)))
        .collect();
    findings.extend(judge_model(
        &model,
        &Rules {
            taken: &taken,
            writable_binds: &writable_binds,
            ..*rules
        },
    ));
    let present = model.get("services").and_then(|s| s.get(service)).is_some();
    if !present {
        findings.push(Finding {
            service: Some(service.to_owned()),
            key: "services".into(),
            why: Why::Refused(
                "the service is missing from compose's model of this invocation".into(),
            ),
        });
    }
    Ok(Judgement {
        model: Some(model),
        findings,
    })
}

/// Writes an audit line for each finding that `compose_model = "warn"`
/// lets through.
pub fn audit_warned(project: &str, target: &ComposeTarget, findings: &[Finding]) {
    for finding in findings {
        tracing::warn!(
            target: "audit",
            project,
            compose_project = %target.project,
            service = %target.service,
            code = crate::catalogue::Code::ComposeModelNotAllowed.as_str(),
            reason = finding.why.reason(),
            finding = %finding,
            "the compose model would be refused; compose_model = \"warn\" lets the job run"
        );
    }
}

/// The names the model's own volumes and networks get: `<project>_<key>`.
fn own_names(model: &Value, project: &str) -> Vec<String> {
    ["volumes", "networks"]
        .into_iter()
        .filter_map(|kind| model.get(kind).and_then(Value::as_object))
        .flat_map(|entries| entries.keys())
        .map(|key| format!("{project}_{key}"))
        .collect()
}

/// What compose would read that the rules refuse: every path the model
/// drops, judged as a host path, and what could not be followed.
pub fn judge_reads(reads: &Reads, rules: &Rules<'_>) -> Vec<Finding> {
    let mut findings = reads.problems.clone();
    for reference in &reads.references {
        let real = real_for_judging(&reference.path);
        if !(rules.host_path)(&real) {
            findings.push(Finding {
                service: reference.service.clone(),
                key: reference.key.clone(),
                why: Why::OutsideHostPaths(real),
            });
        }
    }
    findings
}

/// A test of a name or path, as the rules hold it.
type Test<'p, T> = Box<dyn Fn(&T) -> bool + Send + Sync + 'p>;

/// The rules of `project` for a job of the compose project
/// `compose_project` whose user config files really are `real_configs`
/// (their directories are the host paths when the project names none).
pub struct ProjectRules<'p> {
    project: &'p crate::policy::Project,
    compose_project: &'p str,
    host_path: Test<'p, Path>,
    network: Test<'p, str>,
    image: Test<'p, str>,
    container_name: Test<'p, str>,
    socket: Option<PathBuf>,
    none_taken: std::collections::BTreeSet<String>,
}

impl<'p> ProjectRules<'p> {
    pub fn new(
        policy: &'p crate::policy::Policy,
        project: &'p crate::policy::Project,
        compose_project: &'p str,
        real_configs: &[PathBuf],
    ) -> Self {
        let own_dirs: Vec<PathBuf> = real_configs
            .iter()
            .filter_map(|f| f.parent())
            .map(Path::to_path_buf)
            .collect();
        Self {
            project,
            compose_project,
            host_path: Box::new(move |real| project.allows_host_path(real, &own_dirs)),
            network: Box::new(|name| project.allows_network(name)),
            image: Box::new(|repository| project.allows_model_image(repository)),
            container_name: Box::new(|name| {
                crate::names::ContainerName::parse(name)
                    .is_ok_and(|name| policy.allows_container(project, &name))
            }),
            socket: std::fs::canonicalize(crate::privilege::docker_socket()).ok(),
            none_taken: std::collections::BTreeSet::new(),
        }
    }

    pub fn rules(&self) -> Rules<'_> {
        Rules {
            compose_project: self.compose_project,
            allow: &self.project.allow,
            host_path: &*self.host_path,
            network: &*self.network,
            image: &*self.image,
            container_name: &*self.container_name,
            security_opts: &self.project.security_opts,
            socket: self.socket.as_deref(),
            taken: &self.none_taken,
            writable_binds: &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What compose v2 prints for `blkio_config` is kept as the schema
    /// spells it (v2 refuses its own spelling when it reads the copy), so
    /// the judge admits it and the copy runs.
    #[test]
    fn blkio_limits_are_read_as_the_schema_spells_them() {
        let printed = r#"{"services": {"web": {"image": "busybox", "blkio_config": {
            "weight": 300,
            "weight_device": [{"Path": "/dev/sda", "Weight": 400}],
            "device_read_bps": [{"Path": "/dev/sda", "Rate": "12582912"}]}}}}"#;
        let model = parse_config_output(printed, false).unwrap();
        assert_eq!(
            model["services"]["web"]["blkio_config"],
            serde_json::json!({
                "weight": 300,
                "weight_device": [{"path": "/dev/sda", "weight": 400}],
                "device_read_bps": [{"path": "/dev/sda", "rate": "12582912"}]
            })
        );
    }

    #[test]
    fn composes_errors_keep_the_file_and_line_and_never_quote_a_file() {
        let cwd = Path::new("/srv/app");
        let files = [
            PathBuf::from("/srv/app/compose.yml"),
            PathBuf::from("/srv/app/web.env"),
        ];
        // v2 quotes the line of an env file it cannot parse.
        let v2_env = "failed to read /srv/app/web.env: line 2: unexpected character \"$\" in variable name \"root:$6$secrethash:19000\"\n";
        let failure = ConfigFailure::from_stderr(v2_env, &files, cwd);
        assert_eq!(failure.file.as_deref(), Some(Path::new("/srv/app/web.env")));
        assert_eq!(failure.line, Some(2));
        assert_eq!(failure.message, None);
        let text = failure.to_string();
        assert!(!text.contains("secrethash"), "{text}");
        assert!(text.contains("/srv/app/web.env at line 2"), "{text}");
        // v1 names files relative to where it runs.
        let v1_yaml = "yaml.parser.ParserError: while parsing a block mapping\n  in \"./compose.yml\", line 2, column 3\nexpected <block end>, but found '<block mapping start>'\n";
        let failure = ConfigFailure::from_stderr(v1_yaml, &files, cwd);
        assert_eq!(
            failure.file.as_deref(),
            Some(Path::new("/srv/app/compose.yml"))
        );
        assert_eq!((failure.line, failure.message), (Some(2), None));
        // A message that quotes nothing is repeated.
        let v2_schema = "validating /srv/app/compose.yml: services.web Additional property bogus is not allowed\n";
        let failure = ConfigFailure::from_stderr(v2_schema, &files, cwd);
        assert_eq!(
            failure.message.as_deref(),
            Some(
                "validating /srv/app/compose.yml: services.web Additional property bogus is not allowed"
            )
        );
        // Warnings are not the failure.
        let warned = "time=\"x\" level=warning msg=\"The \\\"secret\\\" variable is not set\"\nyaml: line 1: did not find expected key\n";
        let failure = ConfigFailure::from_stderr(warned, &files, cwd);
        assert_eq!(
            failure.message.as_deref(),
            Some("yaml: line 1: did not find expected key")
        );
    }

    #[test]
    fn config_output_must_be_a_model() {
        assert!(parse_config_output("{\"services\": {}}", false).is_ok());
        assert!(parse_config_output("services: {}\n", true).is_ok());
        assert!(parse_config_output("[]", false).is_err());
        let Err(ModelError::Compose(text)) = parse_config_output("secret: [valid", true) else {
            panic!()
        };
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn a_pin_is_merged_into_the_model_as_an_override_would() {
        let model = serde_json::json!({"services": {"web": {"image": "app:1", "build": {"context": "/srv"}}, "db": {"image": "pg"}}});
        let pinned = with_image(&model, "web", "app@sha256:0123");
        assert_eq!(pinned["services"]["web"]["image"], "app@sha256:0123");
        assert_eq!(
            pinned["services"]["web"]["build"],
            model["services"]["web"]["build"]
        );
        assert_eq!(pinned["services"]["db"], model["services"]["db"]);
    }
}
