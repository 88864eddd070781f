//! The policy: who may redeploy what.
//!
//! [`load`] reads `delivery.toml` and every secret it names, reports all
//! problems at once with their line numbers, and compiles the result: glob
//! sets per project, one global index from container patterns to projects,
//! and pre-keyed HMAC states. After that nothing here does IO, and every
//! decision is a plain function of the compiled [`Policy`].

mod load;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::auth::SigningKey;
use crate::client_addr::Cidr;
use crate::names::{Action, ContainerName, ProjectName};

pub use load::{Diagnostic, Environment, Loaded, PolicyErrors, SystemEnvironment, load, parse};

/// `[server]`: how the gateway listens and what it accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub docs: bool,
    pub max_body_bytes: usize,
    pub timestamp_tolerance_secs: u64,
    pub max_wait_secs: u64,
    /// Already resolved against the policy file's directory.
    pub state_dir: PathBuf,
    pub metrics: bool,
    /// Serve `/metrics` here instead of on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// Peers whose forwarding header is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Lowercase name of the forwarding header.
    pub client_ip_header: String,
    pub max_connections: usize,
    /// Bound on reading request headers, and separately on reading a body.
    pub request_timeout_secs: u64,
    pub replay_cache_entries: usize,
    pub auth_failure_limit: u32,
    pub auth_failure_window_secs: u64,
    pub job_history_days: u64,
    pub job_history_max: u64,
}

impl ServerSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

/// Which compose tool to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeTool {
    /// `docker compose` when it answers, else `docker-compose`.
    Auto,
    /// An explicit argv prefix, e.g. `["docker", "compose"]`.
    Command(Vec<String>),
}

/// `[docker]`: how jobs run.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerSettings {
    pub compose: ComposeTool,
    pub job_timeout_secs: u64,
    pub max_parallel_jobs: usize,
    /// On SIGTERM, how long running jobs may go on before they are stopped.
    pub shutdown_grace_secs: u64,
}

/// Where a secret came from; shown by `check`, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    Literal,
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "env:{name}"),
            SecretSource::File(path) => write!(f, "file:{}", path.display()),
            SecretSource::Literal => f.write_str("literal"),
        }
    }
}

/// Container-name patterns: allowed when one pattern matches and no `!pattern` does.
#[derive(Debug, Clone)]
pub struct ContainerPatterns {
    allow: GlobSet,
    deny: GlobSet,
    /// The patterns as written, for `check`.
    source: Vec<String>,
}

impl ContainerPatterns {
    pub fn allows(&self, name: &str) -> bool {
        self.allow.is_match(name) && !self.deny.is_match(name)
    }

    fn denies(&self, name: &str) -> bool {
        self.deny.is_match(name)
    }
}

/// One team or repository of the policy.
#[derive(Debug, Clone)]
pub struct Project {
    pub name: ProjectName,
    keys: Vec<SigningKey>,
    pub secret_sources: Vec<SecretSource>,
    pub containers: ContainerPatterns,
    pub actions: Vec<Action>,
    compose_files: Option<(GlobSet, Vec<String>)>,
}

impl Project {
    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    pub fn allows_action(&self, action: Action) -> bool {
        self.actions.contains(&action)
    }

    pub fn allows_container(&self, name: &ContainerName) -> bool {
        self.containers.allows(name.as_str())
    }

    /// Every file must match one of the `compose_files` globs, when they are set.
    pub fn allows_compose_files(&self, files: &[PathBuf]) -> bool {
        match &self.compose_files {
            None => true,
            Some((set, _)) => files.iter().all(|f| set.is_match(f)),
        }
    }
}

/// How the policy came to be, for logs and `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    /// No policy file, `SECRET_KEY` set: the seed tool's single-secret mode.
    Seed,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Seed => f.write_str("seed-compatible mode (SECRET_KEY)"),
        }
    }
}

/// The compiled policy. Cheap to share behind an `Arc`; swapped whole on reload.
#[derive(Debug)]
pub struct Policy {
    pub origin: Origin,
    pub server: ServerSettings,
    pub docker: DockerSettings,
    projects: Vec<Project>,
    by_name: HashMap<String, usize>,
    /// Every allow pattern of every project in one automaton, so finding the
    /// projects that may touch a name costs the same with 10 or 10,000 projects.
    container_index: GlobSet,
    /// Which project each pattern of `container_index` belongs to.
    pattern_owner: Vec<usize>,
}

/// Builds a glob the way every pattern in the policy is read: `*` and `?`
/// never cross `/`, `**` does, `\` escapes.
fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

fn glob_set<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<GlobSet, globset::Error> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(glob(pattern)?);
    }
    builder.build()
}

/// A project before compilation, as the loader produced it.
pub(crate) struct ProjectSpec {
    pub name: ProjectName,
    pub secrets: Vec<(SecretSource, Vec<u8>)>,
    pub containers: Vec<String>,
    pub actions: Vec<Action>,
    pub compose_files: Option<Vec<String>>,
}

impl Policy {
    /// Compiles validated specs. Patterns were checked by the loader, so a
    /// failure here is a bug and reported as such.
    pub(crate) fn compile(
        origin: Origin,
        server: ServerSettings,
        docker: DockerSettings,
        specs: Vec<ProjectSpec>,
    ) -> Result<Self, globset::Error> {
        let mut projects = Vec::with_capacity(specs.len());
        let mut by_name = HashMap::with_capacity(specs.len());
        let mut index = GlobSetBuilder::new();
        let mut pattern_owner = Vec::new();
        for (position, spec) in specs.into_iter().enumerate() {
            let (deny, allow): (Vec<&str>, Vec<&str>) = spec
                .containers
                .iter()
                .map(String::as_str)
                .partition(|p| p.starts_with('!'));
            for pattern in &allow {
                index.add(glob(pattern)?);
                pattern_owner.push(position);
            }
            let containers = ContainerPatterns {
                allow: glob_set(allow.iter().copied())?,
                deny: glob_set(deny.iter().map(|p| &p[1..]))?,
                source: spec.containers.clone(),
            };
            let compose_files = match spec.compose_files {
                None => None,
                Some(patterns) => Some((glob_set(patterns.iter().map(String::as_str))?, patterns)),
            };
            by_name.insert(spec.name.as_str().to_owned(), position);
            let (secret_sources, keys) = spec
                .secrets
                .into_iter()
                .map(|(source, bytes)| (source, SigningKey::new(&bytes)))
                .unzip();
            projects.push(Project {
                name: spec.name,
                keys,
                secret_sources,
                containers,
                actions: spec.actions,
                compose_files,
            });
        }
        Ok(Self {
            origin,
            server,
            docker,
            projects,
            by_name,
            container_index: index.build()?,
            pattern_owner,
        })
    }

    /// The seed tool's mode: one project `default`, every container, both actions.
    pub fn seed(secret: &str, port: u16, docs: bool, state_dir: PathBuf) -> Result<Self, String> {
        if secret.len() < crate::auth::MIN_SECRET_LEN {
            return Err(format!(
                "SECRET_KEY is shorter than {} bytes; use a longer secret",
                crate::auth::MIN_SECRET_LEN
            ));
        }
        let mut server = load::default_server(Path::new("."));
        server.listen = SocketAddr::from(([0, 0, 0, 0], port));
        server.docs = docs;
        server.state_dir = state_dir;
        let spec = ProjectSpec {
            name: ProjectName::parse("default").expect("a valid name"),
            secrets: vec![(
                SecretSource::Env("SECRET_KEY".into()),
                secret.as_bytes().to_vec(),
            )],
            containers: vec!["*".into()],
            actions: Action::ALL.to_vec(),
            compose_files: None,
        };
        Self::compile(Origin::Seed, server, load::default_docker(), vec![spec])
            .map_err(|e| format!("internal error compiling the seed policy: {e}"))
    }

    pub fn project(&self, name: &str) -> Option<&Project> {
        self.by_name.get(name).map(|&i| &self.projects[i])
    }

    pub fn projects(&self) -> &[Project] {
        &self.projects
    }

    /// Projects whose container patterns allow `name` (rule 3 of the SPEC):
    /// only their keys are tried for a request without `X-Project`.
    pub fn candidates(&self, name: &ContainerName) -> Vec<&Project> {
        let mut owners: Vec<usize> = self
            .container_index
            .matches(name.as_str())
            .into_iter()
            .map(|pattern| self.pattern_owner[pattern])
            .collect();
        owners.sort_unstable();
        owners.dedup();
        owners
            .into_iter()
            .map(|i| &self.projects[i])
            .filter(|p| !p.containers.denies(name.as_str()))
            .collect()
    }

    /// The human summary printed by `delivery-hook check`. Never shows a secret.
    pub fn summary(&self) -> Summary<'_> {
        Summary(self)
    }
}

/// See [`Policy::summary`].
pub struct Summary<'a>(&'a Policy);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let policy = self.0;
        let s = &policy.server;
        let d = &policy.docker;
        let on = |b: bool| if b { "on" } else { "off" };
        writeln!(f, "policy: {}", policy.origin)?;
        writeln!(
            f,
            "server: listen {}, docs {}, metrics {}, body limit {} bytes, timestamp tolerance {} s, max wait {} s",
            s.listen,
            on(s.docs),
            on(s.metrics),
            s.max_body_bytes,
            s.timestamp_tolerance_secs,
            s.max_wait_secs
        )?;
        writeln!(f, "state: {}", s.state_dir.display())?;
        let compose = match &d.compose {
            ComposeTool::Auto => "auto".to_owned(),
            ComposeTool::Command(argv) => argv.join(" "),
        };
        writeln!(
            f,
            "docker: compose {compose}, job timeout {} s, {} parallel jobs",
            d.job_timeout_secs, d.max_parallel_jobs
        )?;
        writeln!(f, "projects: {}", policy.projects.len())?;
        for p in &policy.projects {
            let sources: Vec<String> = p.secret_sources.iter().map(ToString::to_string).collect();
            let actions: Vec<&str> = p.actions.iter().map(|a| a.as_str()).collect();
            write!(
                f,
                "  {}: containers {}; actions {}; secrets {} ({})",
                p.name,
                p.containers.source.join(", "),
                actions.join(", "),
                p.keys.len(),
                sources.join(", ")
            )?;
            if let Some((_, files)) = &p.compose_files {
                write!(f, "; compose files {}", files.join(", "))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn compile(containers: Vec<String>) -> Option<Policy> {
        let spec = ProjectSpec {
            name: ProjectName::parse("p").unwrap(),
            secrets: vec![(SecretSource::Literal, b"0123456789abcdef".to_vec())],
            containers,
            actions: vec![Action::Pull],
            compose_files: None,
        };
        Policy::compile(
            Origin::Seed,
            load::default_server(Path::new(".")),
            load::default_docker(),
            vec![spec],
        )
        .ok()
    }

    proptest! {
        /// The matcher never panics, and a name is allowed exactly when one
        /// allow pattern matches it and no deny pattern does, whether asked
        /// through the project or through the global index.
        #[test]
        fn matcher_agrees_with_its_definition(
            patterns in proptest::collection::vec("!?[a-c*?\\[\\]{},.-]{0,6}", 1..5),
            name in "[a-c.-]{1,6}",
        ) {
            let Ok(name) = ContainerName::parse(&name) else { return Ok(()) };
            let Some(policy) = compile(patterns.clone()) else { return Ok(()) };
            let matches = |p: &str| glob(p).map(|g| g.compile_matcher().is_match(name.as_str())).unwrap_or(false);
            let allowed = patterns.iter().any(|p| !p.starts_with('!') && matches(p))
                && !patterns.iter().any(|p| p.strip_prefix('!').is_some_and(matches));
            let project = policy.project("p").unwrap();
            prop_assert_eq!(project.allows_container(&name), allowed);
            prop_assert_eq!(!policy.candidates(&name).is_empty(), allowed);
        }
    }
}
