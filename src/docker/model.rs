//! The compose model inside the tenant boundary.
//!
//! What compose will do for a job is judged from compose's own resolved
//! model of exactly the invocation that will run (`config`: v2 prints JSON,
//! v1 YAML), plus what that model drops, read from the compose files
//! themselves: both tools inline `env_file` contents and drop the paths,
//! and `include` and `extends.file` name further files. Every host path
//! compose would read or mount is judged by its real path (a path that
//! does not exist yet by its nearest existing ancestor); what can reach
//! beyond the project's own paths (the Docker socket, privileges, host
//! namespaces, capabilities, devices, unconfined profiles, another
//! project's containers or volumes) needs the project's `allow`.
//!
//! Reading files and judging are plain functions; running `config` is the
//! engine's (`Engine::compose_model`).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// What a project may let compose do beyond its own host paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Allowance {
    /// A bind of the Docker socket, or of a directory that holds it.
    DockerSocket,
    Privileged,
    /// `pid`, `ipc`, `network_mode` or `userns_mode` set to `host`.
    HostNamespaces,
    CapAdd,
    Devices,
    /// A `security_opt` naming an `unconfined` profile.
    Unconfined,
    /// External volumes, `volumes_from`, and `container:` namespaces: what
    /// lies outside the job's compose project.
    ForeignResources,
}

impl Allowance {
    pub const ALL: [Allowance; 7] = [
        Allowance::DockerSocket,
        Allowance::Privileged,
        Allowance::HostNamespaces,
        Allowance::CapAdd,
        Allowance::Devices,
        Allowance::Unconfined,
        Allowance::ForeignResources,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Allowance::DockerSocket => "docker_socket",
            Allowance::Privileged => "privileged",
            Allowance::HostNamespaces => "host_namespaces",
            Allowance::CapAdd => "cap_add",
            Allowance::Devices => "devices",
            Allowance::Unconfined => "unconfined",
            Allowance::ForeignResources => "foreign_resources",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// How a project's model is judged.
pub struct ModelRules<'a> {
    /// Whether a real host path lies within the project's host paths.
    pub host_path_allowed: &'a dyn Fn(&Path) -> bool,
    pub allow: &'a BTreeSet<Allowance>,
    /// The Docker socket the gateway uses, by real path, when it is a
    /// socket on this host.
    pub socket: Option<&'a Path>,
}

/// What one thing in the model is refused for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// A host path outside the project's host paths.
    OutsideHostPaths(PathBuf),
    /// A path that names a variable the gateway does not resolve.
    Variable(String),
    /// Something that needs this allowance; the text says what.
    Needs(Allowance, String),
}

/// One thing the model would do that the project's rules refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The service, or `None` for a top-level key.
    pub service: Option<String>,
    /// The key, e.g. `volumes`, `env_file`, `secrets.db.file`, `include`.
    pub key: String,
    pub why: Why,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.service {
            Some(service) => write!(f, "service `{service}`, `{}`: ", self.key)?,
            None => write!(f, "`{}`: ", self.key)?,
        }
        match &self.why {
            Why::OutsideHostPaths(path) => {
                write!(f, "{} is outside the project's host paths", path.display())
            }
            Why::Variable(name) => write!(
                f,
                "the path uses the variable `{name}`, which is not judged; write the path out"
            ),
            Why::Needs(allowance, what) => {
                write!(
                    f,
                    "{what}, which needs allow = [\"{}\"]",
                    allowance.as_str()
                )
            }
        }
    }
}

/// What compose will do for a job: its resolved model, and the paths its
/// files name that the model drops.
#[derive(Debug, Clone)]
pub struct ComposeModel {
    pub model: std::sync::Arc<Value>,
    pub raw: RawReferences,
}

/// Why a model could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// `config` failed: compose's own words (paths, not variable values).
    #[error("{0}")]
    Config(String),
    /// A compose file, or a file it names, could not be read or parsed.
    #[error("{0}")]
    File(String),
}

/// The largest compose file read here; compose files are a few KiB.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// How many files `include` and `extends` may chain through.
const MAX_FILES: usize = 64;

/// Parses what `config` printed: JSON from v2, YAML from v1.
pub fn parse_config_output(text: &str, yaml: bool) -> Result<Value, ModelError> {
    let parsed = if yaml {
        serde_yaml::from_str::<Value>(text).map_err(|e| e.to_string())
    } else {
        serde_json::from_str::<Value>(text).map_err(|e| e.to_string())
    };
    let model = parsed.map_err(|e| {
        ModelError::Config(format!(
            "compose printed a model that is not {}: {e}",
            if yaml { "YAML" } else { "JSON" }
        ))
    })?;
    if model.get("services").is_some_and(Value::is_object) {
        Ok(model)
    } else {
        Err(ModelError::Config(
            "compose printed a model without services".into(),
        ))
    }
}

/// What the model drops, read from the compose files: each service's env
/// files, and the files that `include` and `extends` bring in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawReferences {
    /// (service, key, path) for each `env_file`, and each file `include`
    /// or `extends` names, absolute as compose resolves them.
    pub paths: Vec<(Option<String>, String, PathBuf)>,
    /// (service, key, variable) for each such path that uses a variable.
    pub variables: Vec<(Option<String>, String, String)>,
    /// Every file read, the config files included.
    pub files_read: Vec<PathBuf>,
}

/// Reads `config_files` and every file they `include` or `extends`.
pub fn raw_references(config_files: &[PathBuf]) -> Result<RawReferences, ModelError> {
    let mut refs = RawReferences::default();
    let mut pending: Vec<PathBuf> = config_files.to_vec();
    while let Some(file) = pending.pop() {
        if refs.files_read.contains(&file) {
            continue;
        }
        if refs.files_read.len() >= MAX_FILES {
            return Err(ModelError::File(format!(
                "more than {MAX_FILES} compose files are included or extended"
            )));
        }
        let value = read_yaml(&file)?;
        refs.files_read.push(file.clone());
        let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        for (key, path) in references_in(&value) {
            let (service, key) = key;
            match variable_in(&path) {
                Some(name) => refs.variables.push((service, key, name)),
                None => {
                    let absolute = normalise(&dir.join(&path));
                    if key == "include" || key == "extends.file" {
                        pending.push(absolute.clone());
                    }
                    refs.paths.push((service, key, absolute));
                }
            }
        }
    }
    Ok(refs)
}

fn read_yaml(file: &Path) -> Result<Value, ModelError> {
    let unreadable = |e: &dyn fmt::Display| {
        ModelError::File(format!(
            "the compose file {} cannot be read: {e}",
            file.display()
        ))
    };
    let meta = std::fs::metadata(file).map_err(|e| unreadable(&e))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(unreadable(&format!(
            "it is larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    let text = std::fs::read_to_string(file).map_err(|e| unreadable(&e))?;
    serde_yaml::from_str::<Value>(&text).map_err(|e| unreadable(&e))
}

/// ((service, key), path) for each path a compose file names that its
/// model will not show.
fn references_in(file: &Value) -> Vec<((Option<String>, String), String)> {
    let mut found = Vec::new();
    let top = |key: &str| (None, key.to_string());
    // `include: [path | {path: path | [paths], env_file: ..., project_directory}]`
    for item in list(file.get("include")) {
        match item {
            Value::String(path) => found.push((top("include"), path.clone())),
            Value::Object(entry) => {
                for path in list(entry.get("path")) {
                    if let Value::String(path) = path {
                        found.push((top("include"), path.clone()));
                    }
                }
                for path in list(entry.get("env_file")) {
                    if let Value::String(path) = path {
                        found.push((top("include.env_file"), path.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    let services = file.get("services").and_then(Value::as_object);
    for (name, service) in services.into_iter().flatten() {
        let key = |key: &str| (Some(name.clone()), key.to_string());
        // `env_file: path | [path | {path, required}]`
        for item in list(service.get("env_file")) {
            match item {
                Value::String(path) => found.push((key("env_file"), path.clone())),
                Value::Object(entry) => {
                    if let Some(Value::String(path)) = entry.get("path") {
                        found.push((key("env_file"), path.clone()));
                    }
                }
                _ => {}
            }
        }
        if let Some(Value::String(path)) = service.get("extends").and_then(|e| e.get("file")) {
            found.push((key("extends.file"), path.clone()));
        }
    }
    found
}

/// A value that may be one item or a list, as a list.
fn list(value: Option<&Value>) -> Vec<&Value> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one) => vec![one],
    }
}

/// The first variable a path interpolates (`$NAME`, `${NAME…}`), if any;
/// `$$` is a literal `$`.
fn variable_in(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'$') => i += 2,
            Some(b'{') => {
                let name: String = path[i + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                return Some(name);
            }
            _ => {
                let name: String = path[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                return Some(name);
            }
        }
    }
    None
}

/// `path` made absolute and free of `.` and `..`, without touching the
/// filesystem.
pub fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The real path `path` has or will have: the nearest existing ancestor's
/// real path, with the rest (which does not exist, so holds no symlink)
/// appended.
pub fn real_for_judging(path: &Path) -> PathBuf {
    let path = normalise(path);
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(real, |acc, part| acc.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return path,
        }
    }
}

/// Judges a model (what `config` printed, parsed) of the compose project
/// `project`, with the references its files hold, against `rules`.
pub fn judge(
    model: &Value,
    raw: &RawReferences,
    project: &str,
    rules: &ModelRules<'_>,
) -> Vec<Finding> {
    let mut judge = Judge {
        rules,
        findings: Vec::new(),
    };
    for (service, key, path) in &raw.paths {
        judge.host_path(service.as_deref(), key, path);
    }
    for (service, key, name) in &raw.variables {
        judge.refuse(service.as_deref(), key, Why::Variable(name.clone()));
    }
    let volumes = model.get("volumes").and_then(Value::as_object);
    if let Some(services) = model.get("services").and_then(Value::as_object) {
        for (name, service) in services {
            judge.service(name, service, volumes, project);
        }
    }
    for kind in ["secrets", "configs"] {
        let entries = model.get(kind).and_then(Value::as_object);
        for (name, entry) in entries.into_iter().flatten() {
            if let Some(file) = entry.get("file").and_then(Value::as_str) {
                judge.host_path(None, &format!("{kind}.{name}.file"), Path::new(file));
            }
        }
    }
    judge.findings
}

struct Judge<'r, 'a> {
    rules: &'r ModelRules<'a>,
    findings: Vec<Finding>,
}

impl Judge<'_, '_> {
    fn refuse(&mut self, service: Option<&str>, key: &str, why: Why) {
        self.findings.push(Finding {
            service: service.map(str::to_owned),
            key: key.to_owned(),
            why,
        });
    }

    fn needs(&mut self, service: Option<&str>, key: &str, allowance: Allowance, what: String) {
        if !self.rules.allow.contains(&allowance) {
            self.refuse(service, key, Why::Needs(allowance, what));
        }
    }

    fn host_path(&mut self, service: Option<&str>, key: &str, path: &Path) {
        let real = real_for_judging(path);
        if !(self.rules.host_path_allowed)(&real) {
            self.refuse(service, key, Why::OutsideHostPaths(real));
        }
    }

    /// A bind's source: the socket (or a directory holding it) needs
    /// `docker_socket`; the socket itself, allowed, is no project path.
    fn bind(&mut self, service: &str, source: &Path) {
        let real = real_for_judging(source);
        if let Some(socket) = self.rules.socket {
            if socket.starts_with(&real) {
                let what = if real == socket {
                    format!("{} is the Docker socket", source.display())
                } else {
                    format!("{} holds the Docker socket", source.display())
                };
                self.needs(Some(service), "volumes", Allowance::DockerSocket, what);
                if real == socket {
                    return;
                }
            }
        }
        if !(self.rules.host_path_allowed)(&real) {
            self.refuse(Some(service), "volumes", Why::OutsideHostPaths(real));
        }
    }

    fn service(
        &mut self,
        name: &str,
        service: &Value,
        volumes: Option<&serde_json::Map<String, Value>>,
        project: &str,
    ) {
        let s = Some(name);
        if service.get("privileged").and_then(Value::as_bool) == Some(true) {
            self.needs(
                s,
                "privileged",
                Allowance::Privileged,
                "privileged: true".into(),
            );
        }
        for key in ["pid", "ipc", "network_mode", "userns_mode"] {
            let Some(mode) = service.get(key).and_then(Value::as_str) else {
                continue;
            };
            if mode == "host" {
                self.needs(s, key, Allowance::HostNamespaces, format!("{key}: host"));
            } else if let Some(container) = mode.strip_prefix("container:") {
                self.needs(
                    s,
                    key,
                    Allowance::ForeignResources,
                    format!("{key} joins the container `{container}`, outside the compose project"),
                );
            }
        }
        if !list(service.get("cap_add")).is_empty() {
            self.needs(
                s,
                "cap_add",
                Allowance::CapAdd,
                "cap_add adds capabilities".into(),
            );
        }
        if !list(service.get("devices")).is_empty() {
            self.needs(
                s,
                "devices",
                Allowance::Devices,
                "devices maps host devices".into(),
            );
        }
        for opt in list(service.get("security_opt")) {
            if opt.as_str().is_some_and(|o| o.contains("unconfined")) {
                self.needs(
                    s,
                    "security_opt",
                    Allowance::Unconfined,
                    "security_opt names an unconfined profile".into(),
                );
            }
        }
        for from in list(service.get("volumes_from")) {
            let Some(from) = from.as_str() else { continue };
            // v2 writes `name` or `container:name`, v1 `service:name:rw`.
            if let Some(container) = from.strip_prefix("container:") {
                let container = container.split(':').next().unwrap_or(container);
                self.needs(
                    s,
                    "volumes_from",
                    Allowance::ForeignResources,
                    format!("volumes_from names the container `{container}`, outside the compose project"),
                );
            }
        }
        for volume in list(service.get("volumes")) {
            self.mount(name, volume, volumes, project);
        }
        if let Some(build) = service.get("build") {
            self.build(name, build);
        }
    }

    fn mount(
        &mut self,
        service: &str,
        volume: &Value,
        volumes: Option<&serde_json::Map<String, Value>>,
        project: &str,
    ) {
        // v2 writes the long form; v1 `source:target[:mode]` for binds and
        // named volumes, the long form for what it cannot shorten.
        let (kind, source) = match volume {
            Value::String(short) => match short.split_once(':') {
                Some((source, _)) if source.starts_with('/') => ("bind", source),
                Some((source, _)) => ("volume", source),
                None => ("volume", ""),
            },
            Value::Object(long) => (
                long.get("type").and_then(Value::as_str).unwrap_or("volume"),
                long.get("source").and_then(Value::as_str).unwrap_or(""),
            ),
            _ => return,
        };
        match kind {
            "bind" => self.bind(service, Path::new(source)),
            "volume" if !source.is_empty() => {
                let declared = volumes.and_then(|v| v.get(source));
                self.named_volume(service, source, declared, project);
            }
            _ => {}
        }
    }

    fn named_volume(&mut self, service: &str, key: &str, declared: Option<&Value>, project: &str) {
        let Some(declared) = declared else { return };
        let s = Some(service);
        if declared.get("external").and_then(Value::as_bool) == Some(true) {
            let name = declared.get("name").and_then(Value::as_str).unwrap_or(key);
            self.needs(
                s,
                "volumes",
                Allowance::ForeignResources,
                format!("the external volume `{name}` lies outside the compose project"),
            );
        } else if let Some(name) = declared.get("name").and_then(Value::as_str) {
            // Compose names a project's own volume `<project>_<key>`.
            if name != format!("{project}_{key}") {
                self.needs(
                    s,
                    "volumes",
                    Allowance::ForeignResources,
                    format!("the volume `{key}` is named `{name}`, outside the compose project"),
                );
            }
        }
        let options = declared.get("driver_opts").and_then(Value::as_object);
        let binds = options
            .and_then(|o| o.get("o"))
            .and_then(Value::as_str)
            .is_some_and(|o| o.split(',').any(|opt| opt == "bind" || opt == "rbind"));
        if let Some(device) = options
            .and_then(|o| o.get("device"))
            .and_then(Value::as_str)
        {
            if binds || device.starts_with('/') {
                self.bind(service, Path::new(device));
            }
        }
    }

    fn build(&mut self, service: &str, build: &Value) {
        let context = match build {
            Value::String(context) => Some(context.as_str()),
            other => other.get("context").and_then(Value::as_str),
        };
        // A remote context (a git or https address) is no host path.
        let local = |text: &str| !text.contains("://") && !text.starts_with("git@");
        let Some(context) = context.filter(|c| local(c)) else {
            return;
        };
        let context = Path::new(context);
        self.host_path(Some(service), "build.context", context);
        if let Some(file) = build.get("dockerfile").and_then(Value::as_str) {
            self.host_path(Some(service), "build.dockerfile", &context.join(file));
        }
        // `ssh: ["id=/path/to/key"]` hands a host file to the build.
        for entry in list(build.get("ssh")) {
            if let Some((_, path)) = entry.as_str().and_then(|e| e.split_once('=')) {
                self.host_path(Some(service), "build.ssh", Path::new(path));
            }
        }
        let extra = build.get("additional_contexts").and_then(Value::as_object);
        for (name, source) in extra.into_iter().flatten() {
            if let Some(source) = source.as_str().filter(|s| local(s) && !s.contains(':')) {
                let key = format!("build.additional_contexts.{name}");
                self.host_path(Some(service), &key, &context.join(source));
            }
        }
    }
}

/// What `project`'s rules refuse in compose's model of `target`, whose user
/// config files really are `real_configs`: asks the engine for the model
/// (cached), then judges it.
pub async fn project_findings(
    engine: &dyn super::Engine,
    project: &crate::policy::Project,
    target: &super::ComposeTarget,
    real_configs: &[PathBuf],
) -> Result<Vec<Finding>, ModelError> {
    let model = engine.compose_model(target).await?;
    Ok(judge_project(
        project,
        &model,
        target.project.as_str(),
        real_configs,
    ))
}

/// What `project`'s rules refuse in `model`, a model of the compose project
/// `compose_project` whose user config files really are `real_configs`
/// (their directories are the host paths when the project names none).
pub fn judge_project(
    project: &crate::policy::Project,
    model: &ComposeModel,
    compose_project: &str,
    real_configs: &[PathBuf],
) -> Vec<Finding> {
    let own_dirs: Vec<PathBuf> = real_configs
        .iter()
        .filter_map(|f| f.parent())
        .map(Path::to_path_buf)
        .collect();
    let allowed = |real: &Path| project.allows_host_path(real, &own_dirs);
    let socket = std::fs::canonicalize(crate::privilege::docker_socket()).ok();
    let rules = ModelRules {
        host_path_allowed: &allowed,
        allow: &project.allow,
        socket: socket.as_deref(),
    };
    judge(&model.model, &model.raw, compose_project, &rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree(PathBuf);

    impl Tree {
        fn new() -> Self {
            let dir =
                std::env::temp_dir().join(format!("dh-model-{}", crate::names::JobId::random()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(std::fs::canonicalize(&dir).unwrap())
        }

        fn write(&self, relative: &str, text: &str) -> PathBuf {
            let path = self.0.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn judged(
        model: &Value,
        raw: &RawReferences,
        root: &Path,
        allow: &[Allowance],
        socket: Option<&Path>,
    ) -> Vec<String> {
        let allowed = |p: &Path| p.starts_with(root);
        let allow: BTreeSet<Allowance> = allow.iter().copied().collect();
        let rules = ModelRules {
            host_path_allowed: &allowed,
            allow: &allow,
            socket,
        };
        judge(model, raw, "app", &rules)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn allowances_have_one_name_each() {
        for a in Allowance::ALL {
            assert_eq!(Allowance::parse(a.as_str()), Some(a));
        }
        assert_eq!(Allowance::parse("everything"), None);
    }

    #[test]
    fn v2_json_and_v1_yaml_models_are_judged_alike() {
        let tree = Tree::new();
        let root = &tree.0;
        let host = Tree::new();
        let socket = host.write("run/docker.sock", "");
        let run = socket.parent().unwrap();
        let v2 = serde_json::json!({
            "name": "app",
            "services": {"web": {
                "image": "busybox",
                "volumes": [
                    {"type": "bind", "source": root.join("data"), "target": "/data"},
                    {"type": "bind", "source": socket, "target": "/var/run/docker.sock"},
                    {"type": "bind", "source": run, "target": "/hostrun"},
                    {"type": "bind", "source": "/etc", "target": "/hostetc"},
                    {"type": "volume", "source": "named", "target": "/named"},
                    {"type": "volume", "source": "ext", "target": "/ext"}
                ],
                "privileged": true, "pid": "host", "network_mode": "container:other-team",
                "cap_add": ["NET_ADMIN"],
                "devices": [{"source": "/dev/null", "target": "/dev/x"}],
                "security_opt": ["seccomp:unconfined"],
                "volumes_from": ["container:theirs"],
                "build": {"context": root.join("sub"), "dockerfile": "../../elsewhere/Dockerfile",
                          "ssh": ["default=/root/.ssh/id_ed25519"]}
            }},
            "volumes": {"named": {"name": "app_named"}, "ext": {"name": "theirs", "external": true}},
            "secrets": {"s": {"name": "app_s", "file": "/etc/shadow"}}
        });
        let v1_yaml = format!(
            "services:\n  web:\n    image: busybox\n    volumes:\n    - {root}/data:/data:rw\n    - {socket}:/var/run/docker.sock:rw\n    - source: {run}\n      target: /hostrun\n      type: bind\n    - /etc:/hostetc:rw\n    - named:/named:rw\n    - ext:/ext:rw\n    privileged: true\n    pid: host\n    network_mode: container:other-team\n    cap_add:\n    - NET_ADMIN\n    devices:\n    - /dev/null:/dev/x\n    security_opt:\n    - seccomp:unconfined\n    volumes_from:\n    - container:theirs:rw\n    build:\n      context: {root}/sub\n      dockerfile: ../../elsewhere/Dockerfile\n      ssh:\n      - default=/root/.ssh/id_ed25519\nvolumes:\n  named: {{}}\n  ext:\n    external: true\n    name: theirs\nsecrets:\n  s:\n    file: /etc/shadow\n",
            root = root.display(),
            socket = socket.display(),
            run = run.display(),
        );
        let v1 = parse_config_output(&v1_yaml, true).unwrap();
        let raw = RawReferences::default();
        let a = judged(&v2, &raw, root, &[], Some(&socket));
        let b = judged(&v1, &raw, root, &[], Some(&socket));
        assert_eq!(a, b);
        let text = a.join("\n");
        for expected in [
            "service `web`, `volumes`: ",
            "is the Docker socket, which needs allow = [\"docker_socket\"]",
            "holds the Docker socket, which needs allow = [\"docker_socket\"]",
            "service `web`, `volumes`: /etc is outside the project's host paths",
            "`privileged`: privileged: true, which needs allow = [\"privileged\"]",
            "`pid`: pid: host, which needs allow = [\"host_namespaces\"]",
            "`network_mode`: network_mode joins the container `other-team`",
            "`cap_add`: cap_add adds capabilities, which needs allow = [\"cap_add\"]",
            "`devices`: devices maps host devices",
            "`security_opt`: security_opt names an unconfined profile",
            "`volumes_from`: volumes_from names the container `theirs`",
            "the external volume `theirs` lies outside the compose project",
            "`build.dockerfile`: ",
            "`build.ssh`: /root/.ssh/id_ed25519 is outside the project's host paths",
            "`secrets.s.file`: /etc/shadow is outside the project's host paths",
        ] {
            assert!(text.contains(expected), "{expected}:\n{text}");
        }
        assert!(
            !text.contains("/data"),
            "a bind below the project is fine:\n{text}"
        );
        assert!(
            !text.contains("named`"),
            "the project's own volume is fine:\n{text}"
        );

        // Allowed, the socket itself passes; the directory holding it is
        // still a host path outside the project.
        let all: Vec<Allowance> = Allowance::ALL.to_vec();
        let text = judged(&v2, &raw, root, &all, Some(&socket)).join("\n");
        assert!(!text.contains("docker.sock"), "{text}");
        assert!(
            text.contains(&format!("{} is outside", run.display())),
            "{text}"
        );
    }

    #[test]
    fn what_the_model_drops_is_read_from_the_files() {
        let tree = Tree::new();
        let main = tree.write(
            "app/compose.yml",
            "include:\n  - sub/extra.yml\n  - path: [more.yml]\n    env_file: ../other/included.env\nservices:\n  web:\n    image: busybox\n    env_file: [./web.env, {path: /srv/team-b/.env, required: false}]\n  a:\n    extends:\n      file: ../base/base.yml\n      service: b\n  v:\n    env_file: ${SECRET_DIR}/x.env\n",
        );
        tree.write(
            "app/sub/extra.yml",
            "services:\n  x:\n    env_file: ../x.env\n",
        );
        tree.write("app/more.yml", "services: {}\n");
        tree.write("base/base.yml", "services:\n  b:\n    env_file: b.env\n");
        let raw = raw_references(std::slice::from_ref(&main)).unwrap();
        let root = &tree.0;
        let paths: Vec<(Option<&str>, &str, PathBuf)> = raw
            .paths
            .iter()
            .map(|(s, k, p)| (s.as_deref(), k.as_str(), p.clone()))
            .collect();
        for expected in [
            (None, "include", root.join("app/sub/extra.yml")),
            (None, "include", root.join("app/more.yml")),
            (None, "include.env_file", root.join("other/included.env")),
            (Some("web"), "env_file", root.join("app/web.env")),
            (Some("web"), "env_file", PathBuf::from("/srv/team-b/.env")),
            (Some("a"), "extends.file", root.join("base/base.yml")),
            (Some("x"), "env_file", root.join("app/x.env")),
            (Some("b"), "env_file", root.join("base/b.env")),
        ] {
            assert!(paths.contains(&expected), "{expected:?} in {paths:?}");
        }
        assert_eq!(
            raw.variables,
            vec![(Some("v".into()), "env_file".into(), "SECRET_DIR".into())]
        );
        assert_eq!(raw.files_read.len(), 4);

        let app = root.join("app");
        let allowed = |p: &Path| p.starts_with(&app);
        let allow = BTreeSet::new();
        let rules = ModelRules {
            host_path_allowed: &allowed,
            allow: &allow,
            socket: None,
        };
        let text: Vec<String> = judge(&serde_json::json!({"services": {}}), &raw, "app", &rules)
            .iter()
            .map(ToString::to_string)
            .collect();
        let text = text.join("\n");
        assert!(
            text.contains("service `web`, `env_file`: /srv/team-b/.env is outside"),
            "{text}"
        );
        assert!(text.contains("`include.env_file`: "), "{text}");
        assert!(text.contains("service `a`, `extends.file`: "), "{text}");
        assert!(
            text.contains("service `v`, `env_file`: the path uses the variable `SECRET_DIR`"),
            "{text}"
        );
        assert!(!text.contains("app/web.env"), "{text}");
        assert!(
            !text.contains("SECRET_DIR}"),
            "names the variable, not the text: {text}"
        );
    }

    #[test]
    fn a_path_that_does_not_exist_is_judged_by_its_nearest_ancestor() {
        let tree = Tree::new();
        let outside = Tree::new();
        std::os::unix::fs::symlink(&outside.0, tree.0.join("link")).unwrap();
        assert_eq!(
            real_for_judging(&tree.0.join("link/new/dir")),
            outside.0.join("new/dir")
        );
        assert_eq!(
            real_for_judging(&tree.0.join("a/../b/./c")),
            tree.0.join("b/c")
        );
    }

    #[test]
    fn variables_are_found_and_dollars_escaped() {
        assert_eq!(variable_in("${DIR}/x.env"), Some("DIR".into()));
        assert_eq!(variable_in("/srv/$TEAM/x"), Some("TEAM".into()));
        assert_eq!(variable_in("/srv/$${x}"), None);
        assert_eq!(variable_in("/srv/plain"), None);
    }

    #[test]
    fn config_output_must_be_a_model() {
        assert!(parse_config_output("{\"services\": {}}", false).is_ok());
        assert!(parse_config_output("services: {}\n", true).is_ok());
        assert!(parse_config_output("[]", false).is_err());
        assert!(parse_config_output("not: [valid", true).is_err());
    }
}
