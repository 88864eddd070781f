//! The judge: walks compose's model of one invocation with the table, and
//! says what the project's rules refuse in it.
//!
//! Every key of the model is looked up in [`super::table`]; a key without a
//! row is refused (`unknown`), and so is a value outside the closed list of
//! its row. Paths are judged by their real paths (a path that does not
//! exist yet by its nearest existing ancestor).

use crate::docker::host_path::real_for_judging;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::table::{self, Check, Row, Verdict, When};
use crate::docker::image_ref::Reference;
use crate::policy::{Allowance, SecurityOpt};

/// How one project's model is judged.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    /// The job's compose project: its own volumes and networks are named
    /// `<project>_<key>`.
    pub compose_project: &'a str,
    pub allow: &'a BTreeSet<Allowance>,
    /// Whether a real host path lies within the project's host paths.
    pub host_path: &'a (dyn Fn(&Path) -> bool + Sync),
    /// Whether the project may join this network outside its compose
    /// project (its `networks`).
    pub network: &'a (dyn Fn(&str) -> bool + Sync),
    /// Whether the model may name this image repository (`model_images`).
    pub image: &'a (dyn Fn(&str) -> bool + Sync),
    /// Whether the project's `containers` allow this container name.
    pub container_name: &'a (dyn Fn(&str) -> bool + Sync),
    /// The `security_opt` profiles the project lists, as written.
    pub security_opts: &'a [String],
    /// The Docker socket the gateway uses, by real path, when it is a
    /// socket on this host.
    pub socket: Option<&'a Path>,
    /// Names of volumes and networks that exist and belong to another
    /// compose project (or to none): a name of the project's own form
    /// (`<project>_<key>`) can still be another project's
    /// (`<project>_<other>_<key>`).
    pub taken: &'a std::collections::BTreeSet<String>,
    /// Host paths, by real path, that containers on the engine bind
    /// read-write, each with the container's name.
    pub writable_binds: &'a [(String, PathBuf)],
}

/// Why one thing in the model is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// A key, or a value of a closed list, the table does not know; `class`
    /// is the allowance that admits such values, when one does.
    Unknown {
        what: String,
        class: Option<Allowance>,
    },
    /// Something only this allowance admits; the text says what.
    Needs(Allowance, String),
    /// A host path outside the project's host paths.
    OutsideHostPaths(PathBuf),
    /// A path that names a variable the gateway does not resolve.
    Variable(String),
    /// Never admitted; the text says why.
    Refused(String),
    /// What compose would read, and the gateway cannot follow.
    Unreadable(String),
}

impl Why {
    /// A stable word for the kind of refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Why::Unknown { .. } => "unknown",
            Why::Needs(..) => "needs_allow",
            Why::OutsideHostPaths(_) => "outside_host_paths",
            Why::Variable(_) => "variable",
            Why::Refused(_) => "refused",
            Why::Unreadable(_) => "unreadable",
        }
    }
}

/// One thing the model would do that the project's rules refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The service, or `None` for a top-level key.
    pub service: Option<String>,
    /// Where in the service (or the model), e.g. `volumes[0]`,
    /// `security_opt`, `volumes.data.driver_opts`.
    pub key: String,
    pub why: Why,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Unknown { what, class } => {
                write!(
                    f,
                    "{what}, which the gateway does not know (reason: unknown)"
                )?;
                if let Some(class) = class {
                    write!(f, "; only allow = [\"{class}\"] admits it")?;
                }
                Ok(())
            }
            Why::Needs(class, what) => write!(f, "{what}, which needs allow = [\"{class}\"]"),
            Why::OutsideHostPaths(path) => {
                write!(f, "{} is outside the project's host paths", path.display())
            }
            Why::Variable(name) => write!(
                f,
                "the path uses the variable `{name}`, which is not judged; write the path out"
            ),
            Why::Refused(what) => write!(f, "{what}"),
            Why::Unreadable(what) => write!(f, "{what}, which the gateway cannot follow"),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.service {
            Some(service) => write!(f, "service `{service}`, `{}`: {}", self.key, self.why),
            None => write!(f, "`{}`: {}", self.key, self.why),
        }
    }
}

/// Judges a model in the copy's form (what `config` printed, parsed) against
/// `rules`: the values compose will use when it reads the copy.
pub fn judge_model(copy: &Value, rules: &Rules<'_>) -> Vec<Finding> {
    let model = &super::as_run(copy);
    let mut walk = Walk {
        rules,
        model,
        findings: Vec::new(),
        binds: Vec::new(),
    };
    match model.as_object() {
        Some(map) => walk.object(
            "",
            &Place {
                service: None,
                key: String::new(),
                name: None,
            },
            map,
        ),
        None => walk.unknown(
            &Place {
                service: None,
                key: "(model)".into(),
                name: None,
            },
            "a model that is not a mapping".into(),
            None,
        ),
    }
    walk.nested_binds();
    walk.findings
}

/// Where in the model a value stands.
#[derive(Clone)]
struct Place<'m> {
    service: Option<&'m str>,
    /// Relative to the service when in one.
    key: String,
    /// The name a `*` of the row matched last (a volume's, a network's).
    name: Option<&'m str>,
}

impl<'m> Place<'m> {
    fn child(&self, key: &str) -> Self {
        Place {
            service: self.service,
            key: if self.key.is_empty() {
                key.to_owned()
            } else {
                format!("{}.{key}", self.key)
            },
            name: self.name,
        }
    }

    fn item(&self, index: usize) -> Self {
        Place {
            service: self.service,
            key: format!("{}[{index}]", self.key),
            name: self.name,
        }
    }
}

struct Walk<'r, 'a> {
    rules: &'r Rules<'a>,
    model: &'r Value,
    findings: Vec<Finding>,
    /// Every bind source the model mounts, as [`Walk::nested_binds`]
    /// judges them once the walk is done.
    binds: Vec<Bound>,
}

/// A host path the model mounts.
struct Bound {
    service: Option<String>,
    key: String,
    real: PathBuf,
    writable: bool,
}

/// A value that may be one item or a list, as a list.
pub(super) fn list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    }
}

/// A mapping, or a list of `key=value` (`labels`, `sysctls`), as pairs.
fn pairs(value: &Value) -> Vec<(String, String)> {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), scalar(v).unwrap_or_default()))
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (item.to_owned(), String::new()),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A scalar as text.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn is_set(value: &Value, when: When) -> bool {
    match (value, when) {
        (Value::Bool(b), _) => *b,
        (Value::String(s), When::True) => s == "true",
        (_, When::True) => false,
        (Value::Null, _) => false,
        (Value::String(s), When::NonEmpty) => !s.is_empty() && s != "0",
        (Value::Number(n), When::NonEmpty) => n.as_f64() != Some(0.0),
        (Value::Array(a), When::NonEmpty) => !a.is_empty(),
        (Value::Object(o), When::NonEmpty) => !o.is_empty(),
    }
}

/// A remote build context or source: git or https, not a host path.
fn is_remote(text: &str) -> bool {
    text.contains("://") || text.starts_with("git@") || text.starts_with("github.com/")
}

const BIND_OPTIONS: [&str; 7] = ["bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec"];
const TMPFS_OPTIONS: [&str; 4] = ["size", "mode", "uid", "gid"];
const NETWORK_VOLUME_OPTIONS: [&str; 24] = [
    "addr",
    "vers",
    "nfsvers",
    "ro",
    "rw",
    "soft",
    "hard",
    "timeo",
    "retrans",
    "proto",
    "port",
    "nolock",
    "noatime",
    "rsize",
    "wsize",
    "nosuid",
    "nodev",
    "noexec",
    "username",
    "password",
    "domain",
    "uid",
    "gid",
    "file_mode",
];
const MOUNT_MODES: [&str; 7] = ["rw", "ro", "z", "Z", "nocopy", "private", "rprivate"];
const PROPAGATIONS_SHARED: [&str; 4] = ["shared", "rshared", "slave", "rslave"];
const LOCAL_LOG_DRIVERS: [&str; 4] = ["json-file", "local", "journald", "none"];
const REMOTE_LOG_DRIVERS: [&str; 7] = [
    "syslog",
    "gelf",
    "fluentd",
    "awslogs",
    "splunk",
    "gcplogs",
    "logentries",
];
/// Options of the drivers that write on this host (and the options every
/// driver takes: `mode`, `max-buffer-size`).
const LOCAL_LOG_OPTIONS: [&str; 11] = [
    "max-size",
    "max-file",
    "compress",
    "labels",
    "labels-regex",
    "env",
    "env-regex",
    "tag",
    "mode",
    "max-buffer-size",
    "cache-disabled",
];
const BRIDGE_OPTIONS: [&str; 6] = [
    "com.docker.network.bridge.enable_icc",
    "com.docker.network.bridge.enable_ip_masquerade",
    "com.docker.network.bridge.host_binding_ipv4",
    "com.docker.network.driver.mtu",
    "com.docker.network.bridge.mtu",
    "com.docker.network.container_iface_prefix",
];

impl<'r, 'a> Walk<'r, 'a> {
    fn push(&mut self, place: &Place<'_>, why: Why) {
        self.findings.push(Finding {
            service: place.service.map(str::to_owned),
            key: place.key.clone(),
            why,
        });
    }

    fn unknown(&mut self, place: &Place<'_>, what: String, class: Option<Allowance>) {
        if class.is_some_and(|c| self.rules.allow.contains(&c)) {
            return;
        }
        self.push(place, Why::Unknown { what, class });
    }

    fn needs(&mut self, place: &Place<'_>, class: Allowance, what: String) {
        if !self.rules.allow.contains(&class) {
            self.push(place, Why::Needs(class, what));
        }
    }

    fn refuse(&mut self, place: &Place<'_>, what: String) {
        self.push(place, Why::Refused(what));
    }

    fn host_path(&mut self, place: &Place<'_>, path: &Path) {
        let real = real_for_judging(path);
        if !(self.rules.host_path)(&real) {
            self.push(place, Why::OutsideHostPaths(real));
        }
    }

    /// A bind's source: the socket (or a directory holding it) needs
    /// `docker_socket`; the socket itself, allowed, is no project path.
    fn bind(&mut self, place: &Place<'_>, source: &Path, writable: bool) {
        let real = real_for_judging(source);
        self.binds.push(Bound {
            service: place.service.map(str::to_owned),
            key: place.key.clone(),
            real: real.clone(),
            writable,
        });
        if let Some(socket) = self.rules.socket {
            if socket.starts_with(&real) {
                let what = if real == socket {
                    format!("{} is the Docker socket", source.display())
                } else {
                    format!("{} holds the Docker socket", source.display())
                };
                self.needs(place, Allowance::DockerSocket, what);
                if real == socket {
                    return;
                }
            }
        }
        if !(self.rules.host_path)(&real) {
            self.push(place, Why::OutsideHostPaths(real));
        }
    }

    /// A bind source strictly under a directory that a container binds
    /// read-write (one of the model's, or one on the engine) needs
    /// `volume_options`: from inside that container, a symlink can take
    /// its place after the judge, and the engine follows it at every start
    /// of the container that binds it, to any host path, as root.
    fn nested_binds(&mut self) {
        if self.rules.allow.contains(&Allowance::VolumeOptions) {
            return;
        }
        let own = self.binds.iter().filter(|b| b.writable).map(|b| {
            let holder = match &b.service {
                Some(service) => format!("the service `{service}`"),
                None => format!("the volume at `{}`", b.key),
            };
            (b.real.clone(), holder)
        });
        let engine = self
            .rules
            .writable_binds
            .iter()
            .map(|(container, real)| (real.clone(), format!("the container `{container}`")));
        let holders: Vec<(PathBuf, String)> = own.chain(engine).collect();
        let mut nested = Vec::new();
        for bound in &self.binds {
            let under = holders
                .iter()
                .find(|(parent, _)| bound.real != *parent && bound.real.starts_with(parent));
            if let Some((parent, holder)) = under {
                nested.push(Finding {
                    service: bound.service.clone(),
                    key: bound.key.clone(),
                    why: Why::Needs(
                        Allowance::VolumeOptions,
                        format!(
                            "{} lies under {}, which {holder} binds read-write (a symlink put in its place there is followed when the engine mounts it)",
                            bound.real.display(),
                            parent.display()
                        ),
                    ),
                });
            }
        }
        self.findings.extend(nested);
    }

    fn services(&self) -> Option<&'r Map<String, Value>> {
        self.model.get("services").and_then(Value::as_object)
    }

    fn is_service(&self, name: &str) -> bool {
        self.services().is_some_and(|s| s.contains_key(name))
    }

    /// The keys of a mapping at table path `pattern`.
    fn object(&mut self, pattern: &str, place: &Place<'r>, map: &'r Map<String, Value>) {
        // Where the keys are names the file chooses (services, volumes,
        // networks…), `x-evil` is one more of them; elsewhere an `x-` key
        // is an extension field, which compose ignores.
        let names = table::row_of(&join(pattern, "*")).is_some();
        for (key, value) in map {
            if key.starts_with("x-") && !names {
                continue;
            }
            let exact = join(pattern, key);
            let (row, name) = match table::row_of(&exact) {
                Some(row) => (row, place.name),
                None => match table::row_of(&join(pattern, "*")) {
                    Some(row) => (row, Some(key.as_str())),
                    None => {
                        let place = place.child(key);
                        self.unknown(&place, format!("the key `{key}`"), None);
                        continue;
                    }
                },
            };
            // Entering a service, keys are named relative to it.
            let child = if row.key == "services.*" {
                Place {
                    service: Some(key.as_str()),
                    key: String::new(),
                    name,
                }
            } else {
                Place {
                    name,
                    ..place.child(key)
                }
            };
            self.value(row, &child, value);
        }
    }

    fn value(&mut self, row: &Row, place: &Place<'r>, value: &'r Value) {
        match row.verdict {
            Verdict::Admitted | Verdict::Nested | Verdict::Part => {}
            Verdict::If(check) => self.check(check, place, value),
            Verdict::Allow(class, when) => {
                if is_set(value, when) {
                    let what = match when {
                        When::True => format!("`{}: true`", last_key(row.key)),
                        When::NonEmpty => format!("`{}` is set", last_key(row.key)),
                    };
                    self.needs(place, class, what);
                }
            }
            Verdict::Refused(why) => self.refuse(place, why.to_owned()),
        }
        if !table::has_rows_below(row.key) {
            return;
        }
        match value {
            Value::Object(map) => self.object(row.key, place, map),
            Value::Array(items) => {
                let pattern = format!("{}[]", row.key);
                let item_row = table::row_of(&pattern);
                for (index, item) in items.iter().enumerate() {
                    let at = place.item(index);
                    match (item_row, item) {
                        (Some(item_row), _) => self.value(item_row, &at, item),
                        (None, Value::Object(map)) => self.object(&pattern, &at, map),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    fn check(&mut self, check: Check, place: &Place<'r>, value: &'r Value) {
        match check {
            Check::HostPath => {
                for item in list(value) {
                    if let Some(path) = item.as_str() {
                        self.host_path(place, Path::new(path));
                    }
                }
            }
            // The engine binds a secret's or config's file into the
            // containers that use it, read-only: judged as a bind is.
            Check::MountedFile => {
                if let Some(path) = value.as_str() {
                    self.bind(place, Path::new(path), false);
                }
            }
            Check::ProjectName => self.project_name(place, value),
            Check::Image => self.image(place, value),
            Check::BuildTags => {
                for tag in list(value) {
                    self.image(place, tag);
                }
            }
            Check::ContainerName => self.container_name(place, value),
            Check::Labels => self.labels(place, value),
            Check::Namespace => self.namespace(place, value),
            Check::SecurityOpt => self.security_opts(place, value),
            Check::Sysctls => self.sysctls(place, value),
            Check::OomScoreAdj => self.oom_score_adj(place, value),
            Check::Logging => self.logging(place, value),
            Check::Mount => self.mount(place, value),
            Check::Propagation => self.propagation(place, value.as_str().unwrap_or_default()),
            Check::VolumesFrom => self.volumes_from(place, value),
            Check::Volume => self.volume(place, value),
            Check::Network => self.network(place, value),
            Check::IpamDriver => {
                if !matches!(value.as_str(), None | Some("default")) {
                    let driver = scalar(value).unwrap_or_default();
                    self.unknown(place, format!("the IPAM driver `{driver}`"), None);
                }
            }
            Check::Build => self.build(place, value),
            Check::CacheRefs => {
                for entry in list(value) {
                    self.cache_ref(place, entry.as_str().unwrap_or_default());
                }
            }
            Check::BuildNetwork => self.build_network(place, value),
            Check::Entitlements => self.entitlements(place, value),
        }
    }

    fn project_name(&mut self, place: &Place<'_>, value: &Value) {
        if value.as_str() != Some(self.rules.compose_project) {
            self.refuse(
                place,
                format!(
                    "the model names the project `{}`, not `{}`",
                    scalar(value).unwrap_or_default(),
                    self.rules.compose_project
                ),
            );
        }
    }

    fn container_name(&mut self, place: &Place<'_>, value: &Value) {
        let name = value.as_str().unwrap_or_default();
        if !(self.rules.container_name)(name) {
            self.refuse(
                place,
                format!("the container name `{name}` is outside the project's containers"),
            );
        }
    }

    fn labels(&mut self, place: &Place<'_>, value: &Value) {
        for (key, _) in pairs(value) {
            if key.to_ascii_lowercase().starts_with("com.docker.compose.") {
                self.refuse(place, format!("sets compose's own label `{key}`"));
            }
        }
    }

    /// Only sysctls inside the container's own network namespace, and the
    /// one IPC sysctl the engine namespaces, stay inside the container.
    fn sysctls(&mut self, place: &Place<'_>, value: &Value) {
        for (key, _) in pairs(value) {
            if !(key.starts_with("net.") || key == "kernel.shm_rmid_forced") {
                self.needs(
                    place,
                    Allowance::Kernel,
                    format!("the sysctl `{key}` reaches beyond the container"),
                );
            }
        }
    }

    fn oom_score_adj(&mut self, place: &Place<'_>, value: &Value) {
        match value.as_i64() {
            Some(n) if n >= 0 => {}
            Some(n) => self.needs(
                place,
                Allowance::Kernel,
                format!("oom_score_adj {n} makes the host's processes die first"),
            ),
            None => self.unknown(
                place,
                format!("oom_score_adj `{}`", scalar(value).unwrap_or_default()),
                None,
            ),
        }
    }

    fn build_network(&mut self, place: &Place<'_>, value: &Value) {
        match value.as_str().unwrap_or_default() {
            "" | "default" | "none" => {}
            "host" => self.needs(
                place,
                Allowance::HostNamespaces,
                "the build runs in the host's network".into(),
            ),
            name => self.join_network(place, name),
        }
    }

    fn entitlements(&mut self, place: &Place<'_>, value: &Value) {
        for entry in list(value) {
            match entry.as_str().unwrap_or_default() {
                "network.host" => self.needs(
                    place,
                    Allowance::HostNamespaces,
                    "the entitlement `network.host`".into(),
                ),
                "security.insecure" => self.needs(
                    place,
                    Allowance::Privileged,
                    "the entitlement `security.insecure`".into(),
                ),
                other => self.unknown(place, format!("the entitlement `{other}`"), None),
            }
        }
    }

    fn image(&mut self, place: &Place<'_>, value: &Value) {
        let text = value.as_str().unwrap_or_default();
        match Reference::parse(text) {
            Some(reference) if (self.rules.image)(reference.repository) => {}
            Some(reference) => self.refuse(
                place,
                format!(
                    "the image `{}` is outside the project's model_images",
                    reference.repository
                ),
            ),
            None => self.unknown(place, format!("the image reference `{text}`"), None),
        }
    }

    /// Joining a network by name: the project's own, or one its
    /// `networks` name.
    /// Whether `name` is the name of one of the model's own networks:
    /// `<project>_<key>` for a network the model declares, not taken.
    fn own_network(&self, name: &str) -> bool {
        let networks = self.model.get("networks").and_then(Value::as_object);
        networks.into_iter().flatten().any(|(key, network)| {
            let own = format!("{}_{key}", self.rules.compose_project);
            let named = network.get("name").and_then(Value::as_str).unwrap_or(&own);
            let external = network
                .get("external")
                .is_some_and(|e| is_set(e, When::NonEmpty));
            !external && named == own && own == name && !self.rules.taken.contains(name)
        })
    }

    fn join_network(&mut self, place: &Place<'_>, name: &str) {
        if !self.own_network(name) && !(self.rules.network)(name) {
            self.needs(
                place,
                Allowance::ForeignResources,
                format!("the network `{name}` lies outside the compose project"),
            );
        }
    }

    fn namespace(&mut self, place: &Place<'_>, value: &Value) {
        let key = last_key(&place.key);
        let mode = value.as_str().unwrap_or_default();
        // The values each key takes that stay within the container.
        let own: &[&str] = match key {
            "ipc" => &["private", "shareable", "none"],
            "cgroup" => &["private"],
            "network_mode" => &["bridge", "none", "default"],
            _ => &[],
        };
        if own.contains(&mode) {
            return;
        }
        if mode == "host" {
            self.needs(
                place,
                Allowance::HostNamespaces,
                format!("`{key}: host` shares the host's namespace"),
            );
        } else if let Some(service) = mode.strip_prefix("service:") {
            if !self.is_service(service) {
                self.unknown(
                    place,
                    format!("`{key}` names the service `{service}`"),
                    None,
                );
            }
        } else if let Some(container) = mode.strip_prefix("container:") {
            self.needs(
                place,
                Allowance::ForeignResources,
                format!("`{key}` joins the container `{container}`, outside the compose project"),
            );
        } else if key == "network_mode" && !mode.is_empty() {
            self.join_network(place, mode);
        } else {
            self.unknown(place, format!("`{key}: {mode}`"), None);
        }
    }

    fn security_opts(&mut self, place: &Place<'_>, value: &Value) {
        for entry in list(value) {
            let text = entry.as_str().unwrap_or_default();
            match SecurityOpt::parse(text) {
                None => self.unknown(place, format!("the security_opt `{text}`"), None),
                Some(SecurityOpt::NoNewPrivileges(_)) => {}
                Some(SecurityOpt::Unconfined(what)) => self.needs(
                    place,
                    Allowance::Unconfined,
                    format!("`{what}` lifts a confinement"),
                ),
                Some(profile) => {
                    let named = profile.to_string();
                    if !self.rules.security_opts.contains(&named) {
                        self.refuse(
                            place,
                            format!("the profile `{named}` is not in the project's security_opts"),
                        );
                    }
                    if let Some(file) = profile.profile_file() {
                        self.host_path(place, Path::new(file));
                    }
                }
            }
        }
    }

    fn logging(&mut self, place: &Place<'_>, value: &Value) {
        let driver = value
            .get("driver")
            .and_then(Value::as_str)
            .unwrap_or("json-file");
        let at = place.child("driver");
        if REMOTE_LOG_DRIVERS.contains(&driver) {
            self.needs(
                &at,
                Allowance::RemoteLogging,
                format!("the logging driver `{driver}` sends the logs to another host"),
            );
            return;
        }
        if !LOCAL_LOG_DRIVERS.contains(&driver) {
            self.unknown(&at, format!("the logging driver `{driver}`"), None);
            return;
        }
        let options = value.get("options").and_then(Value::as_object);
        for key in options.into_iter().flat_map(|o| o.keys()) {
            if !LOCAL_LOG_OPTIONS.contains(&key.as_str()) {
                self.unknown(
                    &place.child("options"),
                    format!("the logging option `{key}`"),
                    None,
                );
            }
        }
    }

    fn propagation(&mut self, place: &Place<'_>, mode: &str) {
        if PROPAGATIONS_SHARED.contains(&mode) {
            self.needs(
                place,
                Allowance::VolumeOptions,
                format!("the mount propagation `{mode}` shares mounts with the host"),
            );
        } else if !matches!(mode, "private" | "rprivate") {
            self.unknown(
                place,
                format!("the mount propagation `{mode}`"),
                Some(Allowance::VolumeOptions),
            );
        }
    }

    /// One item of a service's `volumes`: v2 prints the long form, v1
    /// `source:target[:mode]` for binds and named volumes.
    fn mount(&mut self, place: &Place<'_>, value: &Value) {
        match value {
            Value::String(short) => {
                let parts: Vec<&str> = short.split(':').collect();
                let (source, mode) = match parts.as_slice() {
                    [_target] => return,
                    [source, _target] => (*source, None),
                    [source, _target, mode] => (*source, Some(*mode)),
                    _ => {
                        return self.unknown(place, format!("the volume `{short}`"), None);
                    }
                };
                for token in mode.into_iter().flat_map(|m| m.split(',')) {
                    if PROPAGATIONS_SHARED.contains(&token) {
                        self.propagation(place, token);
                    } else if !MOUNT_MODES.contains(&token) {
                        self.unknown(
                            place,
                            format!("the mount mode `{token}`"),
                            Some(Allowance::VolumeOptions),
                        );
                    }
                }
                if source.starts_with('/') || source.starts_with('.') || source.starts_with('~') {
                    let read_only = mode.is_some_and(|m| m.split(',').any(|t| t == "ro"));
                    self.bind(place, Path::new(source), !read_only);
                }
            }
            Value::Object(long) => {
                let source = long.get("source").and_then(Value::as_str).unwrap_or("");
                match long.get("type").and_then(Value::as_str).unwrap_or("volume") {
                    "bind" => {
                        let read_only = long
                            .get("read_only")
                            .is_some_and(|v| v.as_bool() == Some(true) || *v == "true");
                        self.bind(place, Path::new(source), !read_only);
                    }
                    "volume" | "tmpfs" => {}
                    other => self.unknown(
                        &place.child("type"),
                        format!("the mount type `{other}`"),
                        None,
                    ),
                }
            }
            _ => self.unknown(
                place,
                "a volume that is neither text nor a mapping".into(),
                None,
            ),
        }
    }

    fn volumes_from(&mut self, place: &Place<'_>, value: &Value) {
        for entry in list(value) {
            let text = entry.as_str().unwrap_or_default();
            // `name`, `service:name` or `container:name`, each with an
            // optional `:ro` or `:rw`.
            let (kind, rest) = match text.split_once(':') {
                Some((kind @ ("service" | "container"), rest)) => (kind, rest),
                _ => ("service", text),
            };
            let (name, mode) = match rest.split_once(':') {
                Some((name, mode)) => (name, Some(mode)),
                None => (rest, None),
            };
            if mode.is_some_and(|m| !matches!(m, "ro" | "rw")) {
                self.unknown(place, format!("volumes_from `{text}`"), None);
            } else if kind == "container" || !self.is_service(name) {
                self.needs(
                    place,
                    Allowance::ForeignResources,
                    format!(
                        "volumes_from names the container `{name}`, outside the compose project"
                    ),
                );
            }
        }
    }

    /// A top-level volume, `place.name` its key.
    fn volume(&mut self, place: &Place<'_>, value: &Value) {
        let key = place.name.unwrap_or_default();
        let field = |name: &str| value.get(name);
        let external = field("external");
        let named = field("name")
            .and_then(Value::as_str)
            .or_else(|| external.and_then(|e| e.get("name")).and_then(Value::as_str));
        if external.is_some_and(|e| is_set(e, When::NonEmpty)) {
            return self.needs(
                &place.child("external"),
                Allowance::ForeignResources,
                format!(
                    "the external volume `{}` lies outside the compose project",
                    named.unwrap_or(key)
                ),
            );
        }
        let own = format!("{}_{key}", self.rules.compose_project);
        let name = named.unwrap_or(&own);
        if name != own {
            self.needs(
                &place.child("name"),
                Allowance::ForeignResources,
                format!("the volume `{key}` is named `{name}`, outside the compose project"),
            );
        } else if self.rules.taken.contains(name) {
            self.needs(
                &place.child("name"),
                Allowance::ForeignResources,
                format!("the volume `{name}` exists and belongs to another compose project"),
            );
        }
        let driver = field("driver").and_then(Value::as_str).unwrap_or("local");
        if driver != "local" {
            return self.needs(
                &place.child("driver"),
                Allowance::VolumeOptions,
                format!("the volume driver `{driver}`"),
            );
        }
        if let Some(options) = field("driver_opts").and_then(Value::as_object) {
            self.volume_options(&place.child("driver_opts"), options);
        }
    }

    /// A `local` volume's `driver_opts`: the mount it makes (`type`, `o`,
    /// `device`), which is a host bind, a tmpfs, or a network share.
    fn volume_options(&mut self, at: &Place<'_>, options: &serde_json::Map<String, Value>) {
        let text = |name: &str| options.get(name).and_then(scalar).unwrap_or_default();
        for name in options.keys() {
            if !matches!(name.as_str(), "type" | "o" | "device") {
                self.unknown(
                    at,
                    format!("the driver option `{name}`"),
                    Some(Allowance::VolumeOptions),
                );
            }
        }
        let kind = text("type");
        let o = text("o");
        let device = text("device");
        let tokens: Vec<&str> = o.split(',').filter(|t| !t.is_empty()).collect();
        match kind.as_str() {
            "none" => {
                if !tokens.iter().any(|t| matches!(*t, "bind" | "rbind")) {
                    return self.needs(
                        at,
                        Allowance::VolumeOptions,
                        format!("a mount of type `none` without `bind` (o: `{o}`)"),
                    );
                }
                self.mount_tokens(at, &tokens, &BIND_OPTIONS, false);
                // The engine resolves a relative device from `/`. Writable
                // unless `o` says `ro`, however services mount the volume.
                let writable = !tokens.contains(&"ro");
                self.bind(at, &Path::new("/").join(&device), writable);
            }
            "tmpfs" => {
                if device != "tmpfs" {
                    self.unknown(
                        at,
                        format!("the tmpfs device `{device}`"),
                        Some(Allowance::VolumeOptions),
                    );
                }
                self.mount_tokens(at, &tokens, &TMPFS_OPTIONS, true);
            }
            "nfs" | "nfs4" | "cifs" => {
                self.needs(
                    at,
                    Allowance::NetworkVolumes,
                    format!("a `{kind}` volume from another host"),
                );
                self.mount_tokens(at, &tokens, &NETWORK_VOLUME_OPTIONS, true);
            }
            other => self.needs(
                at,
                Allowance::VolumeOptions,
                format!("the mount type `{other}` (device `{device}`, o `{o}`)"),
            ),
        }
    }

    /// Each `o` token that is not `allowed`: by its name before any `=`
    /// where the options take values, else whole.
    fn mount_tokens(&mut self, at: &Place<'_>, tokens: &[&str], allowed: &[&str], valued: bool) {
        for token in tokens {
            let name = match token.split_once('=') {
                Some((name, _)) if valued => name,
                _ => *token,
            };
            if !allowed.contains(&name) {
                self.unknown(
                    at,
                    format!("the `o` token `{token}`"),
                    Some(Allowance::VolumeOptions),
                );
            }
        }
    }

    /// A top-level network, `place.name` its key.
    fn network(&mut self, place: &Place<'_>, value: &Value) {
        let key = place.name.unwrap_or_default();
        let field = |name: &str| value.get(name);
        let external = field("external").filter(|e| is_set(e, When::NonEmpty));
        let named = field("name")
            .and_then(Value::as_str)
            .or_else(|| external.and_then(|e| e.get("name")).and_then(Value::as_str));
        if external.is_some() {
            let name = named.unwrap_or(key);
            if !(self.rules.network)(name) {
                self.needs(
                    &place.child("external"),
                    Allowance::ForeignResources,
                    format!(
                        "the external network `{name}` lies outside the compose project and the project's networks"
                    ),
                );
            }
            return;
        }
        let own = format!("{}_{key}", self.rules.compose_project);
        let name = named.unwrap_or(&own);
        if (name != own || self.rules.taken.contains(name)) && !(self.rules.network)(name) {
            let what = if name == own {
                format!("the network `{name}` exists and belongs to another compose project")
            } else {
                format!("the network `{key}` is named `{name}`, outside the compose project")
            };
            self.needs(&place.child("name"), Allowance::ForeignResources, what);
        }
        match field("driver").and_then(Value::as_str).unwrap_or("bridge") {
            "bridge" | "default" => {}
            "host" => self.needs(
                &place.child("driver"),
                Allowance::HostNamespaces,
                "the `host` network driver".into(),
            ),
            other => self.needs(
                &place.child("driver"),
                Allowance::Kernel,
                format!("the network driver `{other}`"),
            ),
        }
        let options = field("driver_opts").and_then(Value::as_object);
        for name in options.into_iter().flat_map(|o| o.keys()) {
            if !BRIDGE_OPTIONS.contains(&name.as_str()) {
                self.unknown(
                    &place.child("driver_opts"),
                    format!("the network option `{name}`"),
                    Some(Allowance::Kernel),
                );
            }
        }
    }

    fn build(&mut self, place: &Place<'_>, value: &Value) {
        let context = match value {
            Value::String(context) => Some(context.as_str()),
            other => other.get("context").and_then(Value::as_str),
        };
        let local = context.filter(|c| !is_remote(c)).map(Path::new);
        if let Some(context) = local {
            self.host_path(&place.child("context"), context);
            if let Some(file) = value.get("dockerfile").and_then(Value::as_str) {
                self.host_path(&place.child("dockerfile"), &context.join(file));
            }
        }
        // `ssh: ["id=/path/to/key" | "default"]`, or a mapping of id to path.
        let at = place.child("ssh");
        for (id, path) in value.get("ssh").map(pairs).unwrap_or_default() {
            if path.is_empty() {
                self.refuse(
                    &at,
                    format!(
                        "`{id}` without a key would hand the build the gateway's own SSH agent"
                    ),
                );
            } else {
                self.host_path(&at, Path::new(&path));
            }
        }
        let extra = value.get("additional_contexts").and_then(Value::as_object);
        for (name, source) in extra.into_iter().flatten() {
            let at = place.child(&format!("additional_contexts.{name}"));
            let source = source.as_str().unwrap_or_default();
            if let Some(path) = source.strip_prefix("oci-layout://") {
                self.host_path(&at, Path::new(path));
            } else if source.starts_with("docker-image://")
                || source.starts_with("service:")
                || is_remote(source)
            {
            } else {
                // A local directory, as the context's relative paths are.
                let base = local.unwrap_or(Path::new("/"));
                self.host_path(&at, &base.join(source));
            }
        }
    }

    fn cache_ref(&mut self, place: &Place<'_>, entry: &str) {
        if !entry.contains('=') {
            // An image reference.
            return;
        }
        let fields: Vec<(&str, &str)> = entry
            .split(',')
            .map(|f| f.split_once('=').unwrap_or((f, "")))
            .collect();
        let get = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        match get("type") {
            Some("registry" | "inline") => {}
            Some("local") => {
                for path in [get("src"), get("dest")].into_iter().flatten() {
                    self.host_path(place, Path::new(path));
                }
            }
            _ => self.unknown(place, format!("the build cache `{entry}`"), None),
        }
    }
}

fn join(pattern: &str, key: &str) -> String {
    if pattern.is_empty() {
        key.to_owned()
    } else {
        format!("{pattern}.{key}")
    }
}

/// The last key of a dotted path, without an item index.
fn last_key(path: &str) -> &str {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.split('[').next().unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the judge refuses in `model` for the compose project `app`
    /// whose host paths are `root`, with `allow`, a proxy network named
    /// `shared-proxy` and the listed profile `apparmor=docker-web`.
    fn judged(
        model: &Value,
        root: &Path,
        allow: &[Allowance],
        socket: Option<&Path>,
    ) -> Vec<String> {
        findings(model, root, allow, socket)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn findings(
        model: &Value,
        root: &Path,
        allow: &[Allowance],
        socket: Option<&Path>,
    ) -> Vec<Finding> {
        findings_beside(model, root, allow, socket, &[])
    }

    /// As [`findings`], on an engine whose containers bind `writable`
    /// read-write.
    fn findings_beside(
        model: &Value,
        root: &Path,
        allow: &[Allowance],
        socket: Option<&Path>,
        writable: &[(String, PathBuf)],
    ) -> Vec<Finding> {
        let host_path = |p: &Path| p.starts_with(root);
        let network = |n: &str| n == "shared-proxy";
        let image = |_: &str| true;
        let container_name = |n: &str| n.starts_with("app-");
        let allow: BTreeSet<Allowance> = allow.iter().copied().collect();
        let profiles = vec![
            "apparmor=docker-web".to_string(),
            format!("seccomp={}/strict.json", root.display()),
            "seccomp=/etc/docker/everything.json".to_string(),
        ];
        let taken = std::collections::BTreeSet::from(["app_taken".to_string()]);
        let rules = Rules {
            compose_project: "app",
            allow: &allow,
            host_path: &host_path,
            network: &network,
            image: &image,
            container_name: &container_name,
            security_opts: &profiles,
            socket,
            taken: &taken,
            writable_binds: writable,
        };
        judge_model(model, &rules)
    }

    fn root() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        (dir, real)
    }

    /// A bind source below a directory that a container binds read-write
    /// can be swapped for a symlink from inside that container: it needs
    /// `volume_options`, whoever holds the parent (a service of the model,
    /// a volume's bind, or any container on the engine). The same path
    /// twice, and anything under a read-only bind, are admitted.
    #[test]
    fn a_bind_under_a_directory_a_container_binds_read_write_needs_volume_options() {
        let (_dir, root) = root();
        let path = |p: &str| root.join(p).display().to_string();
        let model = json!({
            "services": {
                "web": {"image": "busybox", "volumes": [
                    {"type": "bind", "source": path("team"), "target": "/team"},
                    {"type": "bind", "source": path("team/config"), "target": "/config", "read_only": true},
                    format!("{}:/again", path("team")),
                    format!("{}:/seen:ro", path("seen")),
                    format!("{}:/seen-below", path("seen/below")),
                ]},
                "worker": {"image": "busybox", "volumes": [
                    format!("{}:/data:ro", path("bound/data")),
                    format!("{}:/held", path("held/x")),
                ]}
            },
            "volumes": {
                "bound": {"name": "app_bound", "driver_opts": {"type": "none", "o": "bind", "device": path("bound")}},
                "shown": {"name": "app_shown", "driver_opts": {"type": "none", "o": "bind,ro", "device": path("shown")}}
            },
            // The engine binds these files into the containers as well.
            "secrets": {"s": {"name": "app_s", "file": path("team/s.txt")}},
            "configs": {"c": {"name": "app_c", "file": path("seen/c.txt")}}
        });
        let writable = [("other-team-tool".to_string(), root.join("held"))];
        let found: Vec<String> = findings_beside(&model, &root, &[], None, &writable)
            .iter()
            .map(ToString::to_string)
            .collect();
        let config = path("team/config");
        let team = path("team");
        let data = path("bound/data");
        let held = path("held/x");
        assert_eq!(
            found,
            [
                format!(
                    "`secrets.s.file`: {} lies under {team}, which the service `web` binds read-write (a symlink put in its place there is followed when the engine mounts it), which needs allow = [\"volume_options\"]",
                    path("team/s.txt")
                ),
                format!(
                    "service `web`, `volumes[1]`: {config} lies under {team}, which the service `web` binds read-write (a symlink put in its place there is followed when the engine mounts it), which needs allow = [\"volume_options\"]"
                ),
                format!(
                    "service `worker`, `volumes[0]`: {data} lies under {}, which the volume at `volumes.bound.driver_opts` binds read-write (a symlink put in its place there is followed when the engine mounts it), which needs allow = [\"volume_options\"]",
                    path("bound")
                ),
                format!(
                    "service `worker`, `volumes[1]`: {held} lies under {}, which the container `other-team-tool` binds read-write (a symlink put in its place there is followed when the engine mounts it), which needs allow = [\"volume_options\"]",
                    path("held")
                ),
            ]
        );
        let allowed = findings_beside(&model, &root, &[Allowance::VolumeOptions], None, &writable);
        assert!(allowed.is_empty(), "{allowed:?}");
    }

    #[test]
    fn the_honest_shapes_are_admitted() {
        let (_dir, root) = root();
        let model = json!({
            "name": "app",
            "x-defaults": {"restart": "always"},
            "services": {
                "web": {
                    "image": "registry.example.com/app/web:1",
                    "command": ["serve"], "restart": "unless-stopped", "init": true,
                    "environment": {"A": "1"},
                    "volumes": [
                        {"type": "bind", "source": root.join("data"), "target": "/data", "bind": {"create_host_path": true}},
                        {"type": "volume", "source": "cache", "target": "/cache", "volume": {}},
                        {"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": "1000"}},
                        {"type": "volume", "target": "/anon", "volume": {}}
                    ],
                    "networks": {"default": null, "proxy": {"aliases": ["web"]}},
                    "security_opt": ["no-new-privileges:true", "apparmor=docker-web"],
                    "extra_hosts": ["db.internal=10.0.0.5"],
                    "sysctls": {"net.core.somaxconn": "1024"},
                    "logging": {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}},
                    "profiles": ["web"],
                    "ulimits": {"nofile": {"soft": 1024, "hard": 2048}, "nproc": 100},
                    "healthcheck": {"test": ["CMD", "true"], "interval": "10s"},
                    "ports": [{"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"}],
                    "depends_on": {"db": {"condition": "service_started", "required": true}},
                    "deploy": {"resources": {"limits": {"memory": "104857600"}}, "placement": {}},
                    "cap_drop": ["ALL"], "read_only": true, "tmpfs": ["/run"],
                    "container_name": "app-web",
                    "x-note": "ignored",
                    "build": {"context": root.join("web"), "dockerfile": "Dockerfile",
                              "args": {"V": "1"}, "ssh": ["key=".to_string() + &root.join("id").display().to_string()]},
                    "labels": {"traefik.enable": "true"},
                    "oom_score_adj": 10
                },
                "db": {"image": "postgres:16", "network_mode": "bridge", "ipc": "private"},
                "side": {"image": "busybox", "network_mode": "service:web", "volumes_from": ["web:ro"]}
            },
            "volumes": {
                "cache": {"name": "app_cache"},
                "scratch": {"name": "app_scratch", "driver_opts": {"type": "tmpfs", "device": "tmpfs", "o": "size=100m,uid=1000"}},
                "bound": {"name": "app_bound", "driver_opts": {"type": "none", "o": "bind", "device": root.join("bound")}}
            },
            "networks": {
                "default": {"name": "app_default", "ipam": {}},
                "proxy": {"name": "shared-proxy", "external": true}
            },
            "secrets": {"s": {"name": "app_s", "file": root.join("secret.txt")}},
            "configs": {"c": {"name": "app_c", "content": "hello"}}
        });
        assert_eq!(judged(&model, &root, &[], None), Vec::<String>::new());
    }

    /// The first finding of the security review: volume driver options
    /// that mount the host's files, whatever `o` and `device` say.
    #[test]
    fn volume_driver_options_outside_the_closed_lists_are_refused() {
        let (_dir, root) = root();
        let volume = |options: Value| {
            json!({"services": {"web": {"image": "busybox",
                "volumes": [{"type": "volume", "source": "v", "target": "/v"}]}},
                "volumes": {"v": {"name": "app_v", "driver_opts": options}}})
        };
        let overlay =
            volume(json!({"type": "overlay", "device": "overlay", "o": "lowerdir=/etc:/usr"}));
        let text = judged(&overlay, &root, &[], None).join("\n");
        assert!(
            text.contains("`volumes.v.driver_opts`: the mount type `overlay`")
                && text.contains("needs allow = [\"volume_options\"]"),
            "{text}"
        );
        let upper = volume(json!({"type": "overlay", "device": "overlay",
            "o": format!("lowerdir={0}/a,upperdir=/srv/team-b,workdir={0}/w", root.display())}));
        assert!(!judged(&upper, &root, &[], None).is_empty());
        let block = volume(json!({"type": "ext4", "device": "dev/vda"}));
        let text = judged(&block, &root, &[], None).join("\n");
        assert!(text.contains("the mount type `ext4`"), "{text}");
        // A relative device is resolved from `/`, as the engine does.
        let relative = volume(json!({"type": "none", "o": "bind", "device": "etc"}));
        let text = judged(&relative, &root, &[], None).join("\n");
        assert!(
            text.contains("/etc is outside the project's host paths"),
            "{text}"
        );
        let token = volume(json!({"type": "none", "o": "bind,remount", "device": root.join("x")}));
        let found = findings(&token, &root, &[], None);
        assert_eq!(found[0].why.reason(), "unknown", "{found:?}");
        let tmpfs = volume(json!({"type": "tmpfs", "device": "tmpfs", "o": "size=1m,exec"}));
        assert_eq!(
            findings(&tmpfs, &root, &[], None)[0].why.reason(),
            "unknown"
        );
        let nfs = volume(json!({"type": "nfs", "device": ":/export", "o": "addr=10.0.0.1,ro"}));
        let text = judged(&nfs, &root, &[], None).join("\n");
        assert!(
            text.contains("needs allow = [\"network_volumes\"]"),
            "{text}"
        );
        assert!(judged(&nfs, &root, &[Allowance::NetworkVolumes], None).is_empty());
        let driver = json!({"services": {}, "volumes": {"v": {"driver": "rexray"}}});
        assert!(judged(&driver, &root, &[], None)[0].contains("the volume driver `rexray`"));
        assert!(judged(&overlay, &root, &[Allowance::VolumeOptions], None).is_empty());
    }

    #[test]
    fn a_key_the_table_does_not_know_is_refused_by_name() {
        let (_dir, root) = root();
        let model = json!({"services": {"web": {"image": "busybox", "models": ["llm"]}},
                           "future": {}});
        let found = findings(&model, &root, &[], None);
        assert_eq!(found.len(), 2, "{found:?}");
        let service = found.iter().find(|f| f.service.is_some()).unwrap();
        assert_eq!(service.service.as_deref(), Some("web"));
        assert_eq!(service.key, "models");
        assert_eq!(service.why.reason(), "unknown");
        assert!(service.to_string().contains("(reason: unknown)"));
        let top = found.iter().find(|f| f.service.is_none()).unwrap();
        assert_eq!((top.key.as_str(), top.why.reason()), ("future", "unknown"));
    }

    #[test]
    fn what_lifts_confinement_needs_its_class() {
        let (_dir, root) = root();
        let service = |extra: Value| {
            let mut web = json!({"image": "busybox"});
            web.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"services": {"web": web}})
        };
        let cases: Vec<(Value, &str)> = vec![
            (json!({"privileged": true}), "privileged"),
            (json!({"uts": "host"}), "host_namespaces"),
            (json!({"cgroup": "host"}), "host_namespaces"),
            (json!({"pid": "host"}), "host_namespaces"),
            (json!({"userns_mode": "host"}), "host_namespaces"),
            (json!({"network_mode": "host"}), "host_namespaces"),
            (json!({"cap_add": ["SYS_ADMIN"]}), "cap_add"),
            (json!({"devices": ["/dev/sda:/dev/sda"]}), "devices"),
            (json!({"device_cgroup_rules": ["b 8:* rwm"]}), "devices"),
            (json!({"gpus": [{"driver": "nvidia"}]}), "gpus"),
            (json!({"security_opt": ["label:disable"]}), "unconfined"),
            (
                json!({"security_opt": ["seccomp=unconfined"]}),
                "unconfined",
            ),
            (
                json!({"security_opt": ["systempaths=unconfined"]}),
                "unconfined",
            ),
            (json!({"cgroup_parent": "/system.slice"}), "kernel"),
            (json!({"runtime": "runc-unsafe"}), "kernel"),
            (json!({"storage_opt": {"size": "1G"}}), "kernel"),
            (json!({"sysctls": {"kernel.core_pattern": "|/x"}}), "kernel"),
            (json!({"oom_score_adj": -1000}), "kernel"),
            (json!({"oom_kill_disable": true}), "kernel"),
            (
                json!({"logging": {"driver": "syslog", "options": {"syslog-address": "udp://10.0.0.1:514"}}}),
                "remote_logging",
            ),
            (
                json!({"external_links": ["other_db_1:db"]}),
                "foreign_resources",
            ),
            (json!({"ipc": "container:other"}), "foreign_resources"),
            (
                json!({"volumes_from": ["container:theirs"]}),
                "foreign_resources",
            ),
            (
                json!({"post_start": [{"command": ["x"], "privileged": true}]}),
                "privileged",
            ),
        ];
        for (extra, class) in cases {
            let model = service(extra.clone());
            let text = judged(&model, &root, &[], None).join("\n");
            assert!(
                text.contains(&format!("needs allow = [\"{class}\"]")),
                "{extra}: {text}"
            );
            let allowed = [Allowance::parse(class).unwrap()];
            assert!(
                judged(&model, &root, &allowed, None).is_empty(),
                "{extra} with {class}"
            );
        }
        // Profiles: only those the project lists, a seccomp file also a host path.
        let listed_outside =
            service(json!({"security_opt": ["seccomp=/etc/docker/everything.json"]}));
        let text = judged(&listed_outside, &root, &[], None).join("\n");
        assert!(
            text.contains("/etc/docker/everything.json is outside"),
            "{text}"
        );
        let unlisted = service(json!({"security_opt": ["apparmor=other"]}));
        let text = judged(&unlisted, &root, &[], None).join("\n");
        assert!(
            text.contains("`apparmor=other` is not in the project's security_opts"),
            "{text}"
        );
        let listed =
            service(json!({"security_opt": [format!("seccomp:{}/strict.json", root.display())]}));
        assert!(judged(&listed, &root, &[], None).is_empty());
        let unknown = service(json!({"security_opt": ["writable-cgroups=true"]}));
        assert_eq!(
            findings(&unknown, &root, &[], None)[0].why.reason(),
            "unknown"
        );
        let driver = service(json!({"logging": {"driver": "splunk2"}}));
        assert_eq!(
            findings(&driver, &root, &[], None)[0].why.reason(),
            "unknown"
        );
        let option = service(json!({"logging": {"driver": "local", "options": {"path": "/etc"}}}));
        assert_eq!(
            findings(&option, &root, &[], None)[0].why.reason(),
            "unknown"
        );
    }

    #[test]
    fn compose_labels_names_and_networks_outside_the_project_are_refused() {
        let (_dir, root) = root();
        let model = json!({
            "services": {"web": {"image": "busybox",
                "labels": {"com.docker.compose.project.environment_file": "/srv/team-b/.env"},
                "container_name": "billing-web"}},
            "networks": {
                "theirs": {"name": "team-b_default", "external": true},
                "named": {"name": "team-b_back"},
                "host": {"name": "app_host", "driver": "host"},
                "mac": {"name": "app_mac", "driver": "macvlan", "driver_opts": {"parent": "eth0"}},
                "sub": {"name": "app_sub", "ipam": {"config": [{"subnet": "10.0.0.0/8"}]}}
            },
            "volumes": {"data": {"name": "team-b_data"}, "ext": {"external": true, "name": "team-b_db"}}
        });
        let text = judged(&model, &root, &[], None).join("\n");
        for expected in [
            "sets compose's own label `com.docker.compose.project.environment_file`",
            "the container name `billing-web` is outside the project's containers",
            "the external network `team-b_default` lies outside the compose project",
            "the network `named` is named `team-b_back`",
            "the `host` network driver, which needs allow = [\"host_namespaces\"]",
            "the network driver `macvlan`, which needs allow = [\"kernel\"]",
            "the network option `parent`",
            "`networks.sub.ipam.config`: `config` is set, which needs allow = [\"kernel\"]",
            "the volume `data` is named `team-b_data`",
            "the external volume `team-b_db`",
        ] {
            assert!(text.contains(expected), "{expected}:\n{text}");
        }
    }

    #[test]
    fn builds_judge_every_local_source_even_with_a_remote_context() {
        let (_dir, root) = root();
        let model = json!({"services": {"web": {"build": {
            "context": "https://github.com/example/app.git",
            "additional_contexts": {"b": "/srv/team-b", "img": "docker-image://busybox", "git": "https://example.com/x.git"},
            "ssh": ["default", "key=/root/.ssh/id_ed25519"],
            "cache_to": ["type=local,dest=/srv/team-b/cache"],
            "network": "host",
            "entitlements": ["security.insecure"],
            "privileged": true
        }}}});
        let text = judged(&model, &root, &[], None).join("\n");
        for expected in [
            "`build.additional_contexts.b`: /srv/team-b is outside",
            "`default` without a key would hand the build the gateway's own SSH agent",
            "`build.ssh`: /root/.ssh/id_ed25519 is outside",
            "/srv/team-b/cache is outside",
            "the build runs in the host's network",
            "the entitlement `security.insecure`",
            "`privileged: true`",
        ] {
            assert!(text.contains(expected), "{expected}:\n{text}");
        }
        assert!(
            !text.contains("github.com"),
            "a remote context is no path: {text}"
        );
    }

    /// The same project as v2 prints it (JSON) and v1 (YAML): one verdict.
    #[test]
    fn v2_json_and_v1_yaml_models_are_judged_alike() {
        let (_dir, root) = root();
        let host = tempfile::tempdir().unwrap();
        let host = std::fs::canonicalize(host.path()).unwrap();
        std::fs::create_dir_all(host.join("run")).unwrap();
        let socket = host.join("run/docker.sock");
        std::fs::write(&socket, "").unwrap();
        let run = socket.parent().unwrap();
        let v2 = json!({
            "name": "app",
            "services": {"web": {
                "image": "busybox",
                "volumes": [
                    {"type": "bind", "source": root.join("data"), "target": "/data"},
                    {"type": "bind", "source": socket, "target": "/var/run/docker.sock"},
                    {"type": "bind", "source": run, "target": "/hostrun"},
                    {"type": "bind", "source": "/etc", "target": "/hostetc"},
                    {"type": "bind", "source": root.join("p"), "target": "/p", "bind": {"propagation": "rshared"}},
                    {"type": "volume", "source": "named", "target": "/named"}
                ],
                "privileged": true, "pid": "host", "network_mode": "container:other-team",
                "security_opt": ["seccomp:unconfined"],
                "volumes_from": ["container:theirs"]
            }},
            "volumes": {"named": {"name": "app_named"}}
        });
        let v1_yaml = format!(
            "services:\n  web:\n    image: busybox\n    volumes:\n    - {root}/data:/data:rw\n    - {socket}:/var/run/docker.sock:rw\n    - source: {run}\n      target: /hostrun\n      type: bind\n    - /etc:/hostetc:rw\n    - {root}/p:/p:rshared\n    - named:/named:rw\n    privileged: true\n    pid: host\n    network_mode: container:other-team\n    security_opt:\n    - seccomp:unconfined\n    volumes_from:\n    - container:theirs:rw\nversion: '3.9'\nvolumes:\n  named: {{}}\n",
            root = root.display(),
            socket = socket.display(),
            run = run.display(),
        );
        let v1 = crate::docker::model::parse_config_output(&v1_yaml, true).unwrap();
        let strip = |found: Vec<Finding>| -> Vec<(Option<String>, String)> {
            found
                .into_iter()
                .map(|f| (f.service, f.why.to_string()))
                .collect()
        };
        let a = strip(findings(&v2, &root, &[], Some(&socket)));
        let b = strip(findings(&v1, &root, &[], Some(&socket)));
        assert_eq!(a, b);
        let text = judged(&v2, &root, &[], Some(&socket)).join("\n");
        for expected in [
            "is the Docker socket, which needs allow = [\"docker_socket\"]",
            "holds the Docker socket, which needs allow = [\"docker_socket\"]",
            "/etc is outside the project's host paths",
            "the mount propagation `rshared`",
            "`privileged: true`",
            "`pid: host`",
            "joins the container `other-team`",
            "`seccomp=unconfined` lifts a confinement",
            "volumes_from names the container `theirs`",
        ] {
            assert!(text.contains(expected), "{expected}:\n{text}");
        }
        assert!(
            !text.contains("/data"),
            "a bind below the project is fine:\n{text}"
        );
        // Allowed, the socket itself passes; the directory holding it is
        // still a host path outside the project.
        let text = judged(&v2, &root, &Allowance::ALL, Some(&socket)).join("\n");
        assert!(!text.contains("docker.sock"), "{text}");
        assert!(
            text.contains(&format!("{} is outside", run.display())),
            "{text}"
        );
    }

    /// Where the keys are names, an `x-` name is a service, a volume or a
    /// network like any other, and judged.
    #[test]
    fn x_names_are_judged_where_keys_are_names() {
        let (_dir, root) = root();
        let model = json!({
            "x-note": {"anything": true},
            "services": {
                "web": {"image": "busybox", "x-extra": {"privileged": true},
                        "volumes": [{"type": "volume", "source": "x-root", "target": "/host"}]},
                "x-evil": {"image": "busybox", "pid": "host"}
            },
            "volumes": {"x-root": {"name": "app_x-root", "driver_opts": {"type": "none", "o": "bind", "device": "/"}}},
            "networks": {"x-net": {"name": "team-b_default", "external": true}}
        });
        let text = judged(&model, &root, &[], None).join("\n");
        for expected in [
            "service `x-evil`, `pid`: `pid: host`",
            "`volumes.x-root.driver_opts`: / is outside",
            "the external network `team-b_default`",
        ] {
            assert!(text.contains(expected), "{expected}:\n{text}");
        }
        assert!(
            !text.contains("x-extra") && !text.contains("x-note"),
            "{text}"
        );
    }

    /// A name of the project's own form is the project's only when no
    /// other project has it: `app_billing_data` may be project `app_billing`'s.
    #[test]
    fn own_names_are_exact_and_not_another_projects() {
        let (_dir, root) = root();
        let model = json!({
            "services": {
                "web": {"image": "busybox", "network_mode": "app_billing_default",
                        "volumes": [{"type": "volume", "source": "taken", "target": "/t"}]},
                "api": {"image": "busybox", "network_mode": "app_front"}
            },
            "volumes": {"taken": {"name": "app_taken"}},
            "networks": {"front": {"name": "app_front"}}
        });
        let text = judged(&model, &root, &[], None).join("\n");
        assert!(
            text.contains("the network `app_billing_default` lies outside"),
            "{text}"
        );
        assert!(
            text.contains("the volume `app_taken` exists and belongs to another compose project"),
            "{text}"
        );
        assert!(!text.contains("app_front"), "{text}");
    }

    /// What is judged is what compose uses when it reads the copy: each
    /// `$$` one `$`; v1's verbatim values are escaped for the copy.
    #[test]
    fn the_judge_reads_values_as_compose_reads_the_copy() {
        let (_dir, root) = root();
        std::os::unix::fs::symlink("/", root.join("${Y-..}")).unwrap();
        // v2 escapes every value: `$${Y-..}` runs as `${Y-..}`, the symlink.
        let v2 = json!({"services": {"web": {"image": "busybox",
            "volumes": [{"type": "bind", "source": format!("{}/$${{Y-..}}", root.display()), "target": "/h"}]}}});
        let text = judged(&v2, &root, &[], None).join("\n");
        assert!(
            text.contains("/ is outside the project's host paths"),
            "{text}"
        );
        // v1 prints short volumes interpolated, unescaped: the copy escapes
        // them, so compose does not interpolate `${Y-..}` into `..`.
        let v1 = crate::docker::model::parse_config_output(
            &format!(
                "services:\n  web:\n    image: busybox\n    volumes:\n    - {}/data/${{Y-..}}/${{Y-..}}:/h:ro\n    security_opt:\n    - label=type:a$b\n",
                root.display()
            ),
            true,
        )
        .unwrap();
        let copy_volume = v1["services"]["web"]["volumes"][0].as_str().unwrap();
        assert!(
            copy_volume.contains("/data/$${Y-..}/$${Y-..}:/h:ro"),
            "{copy_volume}"
        );
        assert_eq!(v1["services"]["web"]["security_opt"][0], "label=type:a$$b");
        let run = crate::docker::model::as_run(&v1);
        assert!(
            run["services"]["web"]["volumes"][0]
                .as_str()
                .unwrap()
                .contains("/data/${Y-..}/${Y-..}")
        );
    }

    #[test]
    fn a_path_that_does_not_exist_is_judged_by_its_nearest_ancestor() {
        let (_a, tree) = root();
        let (_b, outside) = root();
        std::os::unix::fs::symlink(&outside, tree.join("link")).unwrap();
        assert_eq!(
            real_for_judging(&tree.join("link/new/dir")),
            outside.join("new/dir")
        );
        assert_eq!(real_for_judging(&tree.join("a/../b/./c")), tree.join("b/c"));
    }
}
