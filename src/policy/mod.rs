//! The policy: who may redeploy what.
//!
//! [`load`] reads `delivery.toml` and every secret it names, reports all
//! problems at once with their line numbers, and compiles the result: glob
//! sets per project, one global index from container patterns to projects,
//! and pre-keyed HMAC states. After that nothing here does IO, and every
//! decision is a plain function of the compiled [`Policy`].

mod allowance;
mod notify;
mod oidc;
mod overlap;
mod raw;
mod security_opt;
mod validate;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::auth::signature::SigningKey;
use crate::client_addr::Cidr;
use crate::names::{Action, ContainerName, ProjectName, SwarmServiceName};

pub use allowance::Allowance;
pub use notify::{EVENTS, Hidden, NotifyKind, NotifyTarget, Outcome, SmtpSettings, SmtpTls};
pub use oidc::{ClaimPattern, KeySource, Mismatch, OidcRule};
pub use security_opt::{ProfileKind, SecurityOpt};
pub use validate::{Diagnostic, Environment, Loaded, PolicyErrors, SystemEnvironment, load, parse};

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
    /// Connections one client address may hold at once (trusted proxies
    /// are exempt: every client behind one arrives from its address).
    pub max_connections_per_address: usize,
    /// Requests of one project that may hold their answer with `?wait=` at
    /// once; past it, more get 429 before anything runs.
    pub max_waiting_per_project: usize,
    /// Bound on reading request headers, and separately on reading a body.
    pub request_timeout_secs: u64,
    pub replay_cache_entries: usize,
    /// Live replay entries one project may hold, so that one project's
    /// flood cannot fill the cache for everyone.
    pub replay_entries_per_project: usize,
    pub auth_failure_limit: u32,
    pub auth_failure_window_secs: u64,
    pub job_history_days: u64,
    pub job_history_max: u64,
    /// Releases kept per service, whatever the job history keeps.
    pub release_history: u64,
    /// Where people reach the gateway (`https://deploy.example.com`), so
    /// notifications can link to a job's page.
    pub public_url: Option<String>,
    /// The read-only web page.
    pub ui: UiSettings,
}

/// `[server.ui]`: the read-only web page and who may see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UiSettings {
    pub enabled: bool,
    /// Session cookies without `Secure`: only on a loopback listener.
    pub insecure_cookies: bool,
    pub viewers: Vec<Viewer>,
}

/// A person (or a team) who may read some projects' pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub name: String,
    /// What the viewer signs in with; compared in constant time.
    pub token: Hidden<String>,
    /// Globs on policy project names.
    pub projects: Vec<String>,
}

impl Viewer {
    /// Whether the viewer may read `project`'s pages.
    pub fn sees(&self, project: &str) -> bool {
        glob_set(
            self.projects.iter().map(String::as_str),
            GlobSyntax::ContainerName,
        )
        .is_ok_and(|set| set.is_match(project))
    }
}

impl UiSettings {
    /// The viewer whose token is `token`, compared in constant time with
    /// every viewer's.
    pub fn viewer_by_token(&self, token: &str) -> Option<&Viewer> {
        use crate::auth::signature::SigningKey;
        // Equal tokens give equal MACs; the MACs are compared in constant
        // time, and every viewer is tried.
        let presented = SigningKey::new(token.as_bytes()).sign(b"viewer", "");
        let mut found = None;
        for viewer in &self.viewers {
            let own = SigningKey::new(viewer.token.0.as_bytes());
            if own.verify(b"viewer", "", &presented) {
                found = Some(viewer);
            }
        }
        found
    }

    pub fn viewer(&self, name: &str) -> Option<&Viewer> {
        self.viewers.iter().find(|v| v.name == name)
    }
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
    /// Compose v1, `docker-compose`.
    V1,
    /// Compose v2, the `docker compose` plugin.
    V2,
    /// An explicit argv prefix, e.g. `["docker", "compose"]`.
    Command(Vec<String>),
}

impl ComposeTool {
    /// The argv prefixes to try, in order; the first that answers is used.
    pub fn candidates(&self) -> Vec<Vec<String>> {
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        match self {
            Self::Auto => vec![argv(&["docker", "compose"]), argv(&["docker-compose"])],
            Self::V1 => vec![argv(&["docker-compose"])],
            Self::V2 => vec![argv(&["docker", "compose"])],
            Self::Command(prefix) => vec![prefix.clone()],
        }
    }
}

impl std::fmt::Display for ComposeTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::V1 => f.write_str("v1 (docker-compose)"),
            Self::V2 => f.write_str("v2 (docker compose)"),
            Self::Command(argv) => f.write_str(&argv.join(" ")),
        }
    }
}

/// `[docker]`: how jobs run.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerSettings {
    pub compose: ComposeTool,
    pub job_timeout_secs: u64,
    pub max_parallel_jobs: usize,
    /// On SIGTERM, how long running jobs may go on before they are stopped.
    pub shutdown_grace_secs: u64,
    /// After `up`, how long every container of the service must run
    /// without a restart (and be healthy, where checked) for the deploy to
    /// count as succeeded.
    pub stable_secs: u64,
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

/// One team or repository of the policy. Its container patterns live in the
/// policy's global indexes; [`Policy::allows_container`] asks them.
#[derive(Debug, Clone)]
pub struct Project {
    pub name: ProjectName,
    /// Its position in the policy, which the indexes name it by.
    position: usize,
    keys: Vec<SigningKey>,
    pub secret_sources: Vec<SecretSource>,
    /// The container patterns as written, `!` excludes included.
    pub containers: Vec<String>,
    pub actions: Vec<Action>,
    compose_files: Option<(GlobSet, Vec<String>)>,
    compose_projects: Option<(GlobSet, Vec<String>)>,
    images: Option<(GlobSet, Vec<String>)>,
    /// A deploy whose service does not come up is rolled back to the image
    /// it ran before.
    pub rollback: bool,
    /// The Swarm service patterns as written; `None` when it may update none.
    pub services: Option<Vec<String>>,
    /// The CI tokens it accepts, as alternatives; empty when it takes none.
    pub oidc: Vec<OidcRule>,
    /// Whether compose's model of a job is judged, and what a refusal does.
    pub compose_model: ModelMode,
    /// Globs over the real host paths compose may read or mount; `None`:
    /// the real directories of the job's config files, and below.
    host_paths: Option<(GlobSet, Vec<String>)>,
    /// What compose may do beyond the project's own paths.
    pub allow: BTreeSet<Allowance>,
    /// Networks outside its compose project that its services may join
    /// (a shared proxy network), by name.
    networks: Option<(GlobSet, Vec<String>)>,
    /// The `security_opt` profiles its services may name, as written
    /// (`apparmor=…`, `seccomp=<file>`, `label=type:…`).
    pub security_opts: Vec<String>,
    /// Bounds every image its compose model names, when set.
    model_images: Option<(GlobSet, Vec<String>)>,
    /// Where its deploy results go.
    pub notify: Vec<NotifyTarget>,
}

/// How a project's compose model is judged before and during a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelMode {
    /// A refusal is 403 `compose_model_not_allowed`, and nothing runs.
    Enforce,
    /// A refusal is audited and logged, and the job runs.
    Warn,
    /// The model is not asked for.
    Off,
}

impl ModelMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelMode::Enforce => "enforce",
            ModelMode::Warn => "warn",
            ModelMode::Off => "off",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [ModelMode::Enforce, ModelMode::Warn, ModelMode::Off]
            .into_iter()
            .find(|m| m.as_str() == text)
    }
}

impl Project {
    /// Whether a pin of `repository` may be deployed: it must match one of
    /// the `images` globs, or, without them, be the repository the
    /// container was created from (`compose_repository`).
    pub fn allows_image(&self, repository: &str, compose_repository: Option<&str>) -> bool {
        match &self.images {
            Some((set, _)) => set.is_match(repository),
            None => compose_repository == Some(repository),
        }
    }

    /// Whether the project names the compose files it may use, so that
    /// any real path can be judged by them.
    pub fn bounds_compose_files(&self) -> bool {
        self.compose_files.is_some()
    }

    /// Whether compose may read or mount the real host path `real`: it, or
    /// a directory above it, matches `host_paths`; without them, it lies in
    /// one of `own_dirs` (the real directories of the job's config files).
    pub fn allows_host_path(&self, real: &Path, own_dirs: &[PathBuf]) -> bool {
        match &self.host_paths {
            Some((set, _)) => real.ancestors().any(|p| set.is_match(p)),
            None => own_dirs.iter().any(|dir| real.starts_with(dir)),
        }
    }

    /// Whether its services may join the network named `name`, which lies
    /// outside its compose project.
    pub fn allows_network(&self, name: &str) -> bool {
        self.networks
            .as_ref()
            .is_some_and(|(set, _)| set.is_match(name))
    }

    /// Whether its compose model may name the image `repository` (a
    /// reference without tag or digest): any, unless `model_images` is set.
    pub fn allows_model_image(&self, repository: &str) -> bool {
        self.model_images
            .as_ref()
            .is_none_or(|(set, _)| set.is_match(repository))
    }

    /// The compose project must match one of the `compose_projects` globs,
    /// when they are set.
    pub fn allows_compose_project(&self, name: &str) -> bool {
        self.compose_projects
            .as_ref()
            .is_none_or(|(set, _)| set.is_match(name))
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    pub fn allows_action(&self, action: Action) -> bool {
        self.actions.contains(&action)
    }

    /// Every file must match one of the `compose_files` globs, when they are set.
    pub fn allows_compose_files(&self, files: &[PathBuf]) -> bool {
        match &self.compose_files {
            None => true,
            Some((set, _)) => files.iter().all(|f| set.is_match(f)),
        }
    }

    /// Everything compose reads for a job, when `compose_files` is set: the
    /// config and env files match its globs, and the working directory is
    /// the directory of one of the config files or below it (compose reads
    /// `.env` and relative paths from there). Paths are real paths, so a
    /// symlink cannot lead outside.
    pub fn allows_compose_paths(
        &self,
        config_files: &[PathBuf],
        env_files: &[PathBuf],
        working_dir: &Path,
    ) -> bool {
        if self.compose_files.is_none() {
            return true;
        }
        self.allows_compose_files(config_files)
            && self.allows_compose_files(env_files)
            && config_files
                .iter()
                .filter_map(|f| f.parent())
                .any(|dir| working_dir.starts_with(dir))
    }
}

impl crate::auth::signature::Keyed for Project {
    fn keys(&self) -> &[SigningKey] {
        &self.keys
    }
}

/// The policy in force, shared by the gateway, which swaps it on reload,
/// and the jobs, which judge their files by it before each compose command.
/// A reader keeps the policy it took for as long as it needs it.
#[derive(Debug)]
pub struct PolicyCell(std::sync::RwLock<std::sync::Arc<Policy>>);

impl PolicyCell {
    pub fn new(policy: Policy) -> Self {
        Self(std::sync::RwLock::new(std::sync::Arc::new(policy)))
    }

    pub fn get(&self) -> std::sync::Arc<Policy> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Swaps in a new policy atomically.
    pub fn replace(&self, policy: Policy) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(policy);
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
    /// Every container pattern of every project, in two indexes (allow and
    /// `!` deny) that know the project each pattern belongs to. One lookup
    /// answers for all projects, so a request costs the same with 10 or
    /// 10,000, and memory grows with the patterns, not a matcher per project.
    allow: PatternIndex,
    deny: PatternIndex,
    /// The Swarm service patterns of every project.
    services: PatternIndex,
    /// Where the keys of each issuer an `oidc` rule names come from.
    key_sources: HashMap<String, KeySource>,
    /// How mail is sent, when a project has email targets.
    pub smtp: Option<SmtpSettings>,
}

/// Container patterns of many projects, with the project each belongs to.
///
/// Policies are mostly literal names, `prefix*` and `*suffix`; those are
/// answered with hash lookups (one per distinct prefix or suffix length),
/// which cost the same with 10 or 10,000 projects. Any other glob goes into
/// one glob set, tried once per lookup.
#[derive(Debug, Default)]
struct PatternIndex {
    exact: HashMap<Box<str>, Vec<usize>>,
    prefixes: HashMap<Box<str>, Vec<usize>>,
    prefix_lengths: Vec<usize>,
    suffixes: HashMap<Box<str>, Vec<usize>>,
    suffix_lengths: Vec<usize>,
    /// Projects with a bare `*`.
    everything: Vec<usize>,
    others: GlobSet,
    other_owner: Vec<usize>,
}

/// Characters that make a pattern more than a literal.
fn is_glob_syntax(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\')
}

#[derive(Default)]
struct PatternIndexBuilder {
    index: PatternIndex,
    others: Vec<Glob>,
}

impl PatternIndexBuilder {
    fn add(&mut self, pattern: &str, owner: usize) -> Result<(), globset::Error> {
        let literal = |text: &str| !text.contains(is_glob_syntax);
        let index = &mut self.index;
        if pattern == "*" {
            index.everything.push(owner);
        } else if literal(pattern) {
            index.exact.entry(pattern.into()).or_default().push(owner);
        } else if let Some(prefix) = pattern.strip_suffix('*').filter(|p| literal(p)) {
            index.prefixes.entry(prefix.into()).or_default().push(owner);
            index.prefix_lengths.push(prefix.len());
        } else if let Some(suffix) = pattern.strip_prefix('*').filter(|s| literal(s)) {
            index.suffixes.entry(suffix.into()).or_default().push(owner);
            index.suffix_lengths.push(suffix.len());
        } else {
            self.others.push(glob(pattern, GlobSyntax::ContainerName)?);
            index.other_owner.push(owner);
        }
        Ok(())
    }

    fn build(mut self) -> Result<PatternIndex, globset::Error> {
        let mut set = GlobSetBuilder::new();
        for glob in self.others {
            set.add(glob);
        }
        let index = &mut self.index;
        index.others = set.build()?;
        for lengths in [&mut index.prefix_lengths, &mut index.suffix_lengths] {
            lengths.sort_unstable();
            lengths.dedup();
        }
        index.everything.sort_unstable();
        index.everything.dedup();
        Ok(self.index)
    }
}

impl PatternIndex {
    /// The projects with a pattern matching `name`, sorted, without repeats.
    fn owners(&self, name: &str) -> Vec<usize> {
        let mut owners = self.everything.clone();
        let mut take = |found: Option<&Vec<usize>>| {
            if let Some(found) = found {
                owners.extend_from_slice(found);
            }
        };
        take(self.exact.get(name));
        // Names are ASCII (validated), so every byte offset is a boundary.
        for &length in self.prefix_lengths.iter().take_while(|&&l| l <= name.len()) {
            take(self.prefixes.get(&name[..length]));
        }
        for &length in self.suffix_lengths.iter().take_while(|&&l| l <= name.len()) {
            take(self.suffixes.get(&name[name.len() - length..]));
        }
        if !self.other_owner.is_empty() {
            owners.extend(
                self.others
                    .matches(name)
                    .into_iter()
                    .map(|i| self.other_owner[i]),
            );
        }
        owners.sort_unstable();
        owners.dedup();
        owners
    }

    fn has(&self, name: &str, owner: usize) -> bool {
        self.owners(name).binary_search(&owner).is_ok()
    }
}

/// How a pattern reads `*`, by what it is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GlobSyntax {
    /// Container names never contain `/`, so `*` is plain "anything" (with
    /// `*` unable to cross `/`, globset would compile each such pattern into
    /// a regex, which grows with the policy and fails past a few thousand).
    ContainerName,
    /// Compose file paths: `*` and `?` never cross `/`, `**` does.
    Path,
}

/// Builds a glob the way the policy reads it; `\` escapes.
fn glob(pattern: &str, syntax: GlobSyntax) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(syntax == GlobSyntax::Path)
        .backslash_escape(true)
        .build()
}

fn glob_set<'a>(
    patterns: impl IntoIterator<Item = &'a str>,
    syntax: GlobSyntax,
) -> Result<GlobSet, globset::Error> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(glob(pattern, syntax)?);
    }
    builder.build()
}

/// Why the seed-compatible policy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(
        "SECRET_KEY is shorter than {} bytes; use a longer secret",
        crate::auth::signature::MIN_SECRET_LEN
    )]
    ShortSecret,
    #[error("internal error compiling the seed policy: {0}")]
    Compile(globset::Error),
}

/// A project before compilation, as the loader produced it.
pub(crate) struct ProjectSpec {
    pub name: ProjectName,
    pub secrets: Vec<(SecretSource, Vec<u8>)>,
    pub containers: Vec<String>,
    pub actions: Vec<Action>,
    pub compose_files: Option<Vec<String>>,
    pub compose_projects: Option<Vec<String>>,
    pub images: Option<Vec<String>>,
    pub rollback: bool,
    pub services: Option<Vec<String>>,
    pub oidc: Vec<OidcRule>,
    /// `None`: the default, which depends on how many projects there are.
    pub compose_model: Option<ModelMode>,
    pub host_paths: Option<Vec<String>>,
    pub allow: BTreeSet<Allowance>,
    pub networks: Option<Vec<String>>,
    pub security_opts: Vec<String>,
    pub model_images: Option<Vec<String>>,
    pub notify: Vec<NotifyTarget>,
    /// Where its `containers` stand in the policy file, for warnings.
    pub containers_span: std::ops::Range<usize>,
}

impl Policy {
    /// Compiles validated specs. Patterns were checked by the loader, so a
    /// failure here is a bug and reported as such.
    pub(crate) fn compile(
        origin: Origin,
        server: ServerSettings,
        docker: DockerSettings,
        specs: Vec<ProjectSpec>,
        key_sources: HashMap<String, KeySource>,
    ) -> Result<Self, globset::Error> {
        let shared = specs.len() > 1;
        let mut projects = Vec::with_capacity(specs.len());
        let mut by_name = HashMap::with_capacity(specs.len());
        let mut allow = PatternIndexBuilder::default();
        let mut deny = PatternIndexBuilder::default();
        let mut services = PatternIndexBuilder::default();
        for (position, spec) in specs.into_iter().enumerate() {
            for pattern in &spec.containers {
                match pattern.strip_prefix('!') {
                    Some(denied) => deny.add(denied, position)?,
                    None => allow.add(pattern, position)?,
                }
            }
            for pattern in spec.services.iter().flatten() {
                services.add(pattern, position)?;
            }
            by_name.insert(spec.name.as_str().to_owned(), position);
            projects.push(Project::compile(spec, position, shared)?);
        }
        Ok(Self {
            origin,
            server,
            docker,
            projects,
            by_name,
            allow: allow.build()?,
            deny: deny.build()?,
            services: services.build()?,
            key_sources,
            smtp: None,
        })
    }

    /// The seed tool's mode: one project `default`, every container, both actions.
    pub fn seed(
        secret: &str,
        port: u16,
        docs: bool,
        state_dir: PathBuf,
    ) -> Result<Self, SeedError> {
        if secret.len() < crate::auth::signature::MIN_SECRET_LEN {
            return Err(SeedError::ShortSecret);
        }
        let mut server = validate::default_server(Path::new("."));
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
            compose_projects: None,
            images: None,
            rollback: true,
            services: None,
            oidc: Vec::new(),
            compose_model: None,
            host_paths: None,
            allow: BTreeSet::new(),
            networks: None,
            security_opts: Vec::new(),
            model_images: None,
            notify: Vec::new(),
            containers_span: 0..0,
        };
        Self::compile(
            Origin::Seed,
            server,
            validate::default_docker(),
            vec![spec],
            HashMap::new(),
        )
        .map_err(SeedError::Compile)
    }

    pub fn project(&self, name: &str) -> Option<&Project> {
        self.by_name.get(name).map(|&i| &self.projects[i])
    }

    pub fn projects(&self) -> &[Project] {
        &self.projects
    }

    /// The environment variables any project reads a secret from.
    pub fn secret_env_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .projects
            .iter()
            .flat_map(|p| &p.secret_sources)
            .filter_map(|s| match s {
                SecretSource::Env(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        // Notification URLs and keys, and the mail password.
        names.extend(
            self.projects
                .iter()
                .flat_map(|p| &p.notify)
                .flat_map(|t| t.variables.iter().cloned()),
        );
        names.extend(self.smtp.iter().flat_map(|s| s.variables.iter().cloned()));
        names.sort();
        names.dedup();
        names
    }

    /// Projects whose container patterns allow `name`: for a request without
    /// `X-Project`, only their keys are tried.
    pub fn candidates(&self, name: &ContainerName) -> Vec<&Project> {
        let denied = self.deny.owners(name.as_str());
        self.allow
            .owners(name.as_str())
            .into_iter()
            .filter(|owner| denied.binary_search(owner).is_err())
            .map(|owner| &self.projects[owner])
            .collect()
    }

    /// Projects whose `services` patterns allow the Swarm service `name`:
    /// for a request without `X-Project`, only their keys are tried.
    pub fn service_candidates(&self, name: &SwarmServiceName) -> Vec<&Project> {
        self.services
            .owners(name.as_str())
            .into_iter()
            .map(|owner| &self.projects[owner])
            .collect()
    }

    /// Where the keys of `issuer` come from, when a rule names it.
    pub fn key_source(&self, issuer: &str) -> Option<&KeySource> {
        self.key_sources.get(issuer)
    }

    /// The issuers the rules name, with where their keys come from.
    pub fn key_sources(&self) -> impl Iterator<Item = (&str, &KeySource)> {
        self.key_sources.iter().map(|(i, s)| (i.as_str(), s))
    }

    /// Whether `project` may update the Swarm service `name`.
    pub fn allows_service(&self, project: &Project, name: &SwarmServiceName) -> bool {
        self.services.has(name.as_str(), project.position)
    }

    /// Whether `project` may touch `name`: one of its patterns matches and
    /// none of its `!` patterns does.
    pub fn allows_container(&self, project: &Project, name: &ContainerName) -> bool {
        self.allow.has(name.as_str(), project.position)
            && !self.deny.has(name.as_str(), project.position)
    }

    /// The human summary printed by `delivery-hook check`. Never shows a secret.
    pub fn summary(&self) -> Summary<'_> {
        Summary(self)
    }
}

impl Project {
    /// A project's compiled form: its globs built, its keys made, and its
    /// compose model mode decided (judged by default when `shared`: several
    /// teams on one host).
    fn compile(spec: ProjectSpec, position: usize, shared: bool) -> Result<Self, globset::Error> {
        let compiled = |patterns: Option<Vec<String>>, syntax| match patterns {
            None => Ok(None),
            Some(patterns) => glob_set(patterns.iter().map(String::as_str), syntax)
                .map(|set| Some((set, patterns))),
        };
        let compose_files = compiled(spec.compose_files, GlobSyntax::Path)?;
        // Compose project names hold no `/`, as container names do not.
        let compose_projects = compiled(spec.compose_projects, GlobSyntax::ContainerName)?;
        // Repositories have `/`-separated parts, as paths do.
        let images = compiled(spec.images, GlobSyntax::Path)?;
        let host_paths = compiled(spec.host_paths, GlobSyntax::Path)?;
        // Network names hold no `/`; image repositories do.
        let networks = compiled(spec.networks, GlobSyntax::ContainerName)?;
        let model_images = compiled(spec.model_images, GlobSyntax::Path)?;
        // Several teams on one host: what their compose files do is
        // judged unless a project says otherwise.
        let compose_model = spec.compose_model.unwrap_or(if shared {
            ModelMode::Enforce
        } else {
            ModelMode::Off
        });
        let (secret_sources, keys) = spec
            .secrets
            .into_iter()
            .map(|(source, bytes)| (source, SigningKey::new(&bytes)))
            .unzip();
        Ok(Project {
            name: spec.name,
            position,
            keys,
            secret_sources,
            containers: spec.containers,
            actions: spec.actions,
            compose_files,
            compose_projects,
            images,
            rollback: spec.rollback,
            services: spec.services,
            oidc: spec.oidc,
            compose_model,
            host_paths,
            allow: spec.allow,
            networks,
            security_opts: spec.security_opts,
            model_images,
            notify: spec.notify,
        })
    }
}

/// See [`Policy::summary`].
pub struct Summary<'a>(&'a Policy);

/// The web page's line of the summary: whether it is served, to whom.
fn write_ui(f: &mut fmt::Formatter<'_>, s: &ServerSettings) -> fmt::Result {
    let ui = &s.ui;
    if !ui.enabled {
        return writeln!(f, "ui: off");
    }
    let viewers: Vec<String> = ui
        .viewers
        .iter()
        .map(|v| format!("{} ({})", v.name, v.projects.join(", ")))
        .collect();
    let cookies = if ui.insecure_cookies {
        "insecure cookies (loopback)"
    } else {
        "secure cookies"
    };
    writeln!(
        f,
        "ui: /ui, {cookies}, viewers {}; job links {}",
        viewers.join("; "),
        s.public_url.as_deref().unwrap_or("off (no public_url)")
    )
}

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
        writeln!(
            f,
            "state: {}, {} releases kept per service",
            s.state_dir.display(),
            s.release_history
        )?;
        write_ui(f, s)?;
        let compose = &d.compose;
        writeln!(
            f,
            "docker: compose {compose}, job timeout {} s, {} parallel jobs, stable after {} s",
            d.job_timeout_secs, d.max_parallel_jobs, d.stable_secs
        )?;
        writeln!(f, "projects: {}", policy.projects.len())?;
        for p in &policy.projects {
            write_project(f, p)?;
        }
        if let Some(smtp) = &policy.smtp {
            writeln!(
                f,
                "notify: mail from {} through {}:{} ({:?}{})",
                smtp.from,
                smtp.host,
                smtp.port,
                smtp.tls,
                if smtp.login.is_some() {
                    ", with a login"
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }
}

/// A project's line of the summary, then a line for each of its CI token
/// rules and notification targets.
fn write_project(f: &mut fmt::Formatter<'_>, p: &Project) -> fmt::Result {
    let sources: Vec<String> = p.secret_sources.iter().map(ToString::to_string).collect();
    let actions: Vec<&str> = p.actions.iter().map(|a| a.as_str()).collect();
    write!(
        f,
        "  {}: containers {}; actions {}; secrets {} ({})",
        p.name,
        p.containers.join(", "),
        actions.join(", "),
        p.keys.len(),
        sources.join(", ")
    )?;
    if let Some((_, files)) = &p.compose_files {
        write!(f, "; compose files {}", files.join(", "))?;
    }
    if let Some((_, names)) = &p.compose_projects {
        write!(f, "; compose projects {}", names.join(", "))?;
    }
    if let Some((_, images)) = &p.images {
        write!(f, "; images {}", images.join(", "))?;
    }
    if !p.rollback {
        write!(f, "; no rollback")?;
    }
    write!(f, "; compose model {}", p.compose_model.as_str())?;
    if let Some((_, paths)) = &p.host_paths {
        write!(f, "; host paths {}", paths.join(", "))?;
    }
    if !p.allow.is_empty() {
        let allow: Vec<&str> = p.allow.iter().map(|a| a.as_str()).collect();
        write!(f, "; allow {}", allow.join(", "))?;
    }
    if let Some((_, networks)) = &p.networks {
        write!(f, "; networks {}", networks.join(", "))?;
    }
    if !p.security_opts.is_empty() {
        write!(f, "; security opts {}", p.security_opts.join(", "))?;
    }
    if let Some((_, images)) = &p.model_images {
        write!(f, "; model images {}", images.join(", "))?;
    }
    if let Some(services) = &p.services {
        write!(f, "; swarm services {}", services.join(", "))?;
    }
    writeln!(f)?;
    for rule in &p.oidc {
        writeln!(f, "    oidc: {rule}")?;
    }
    for target in &p.notify {
        write_target(f, target)?;
    }
    Ok(())
}

fn write_target(f: &mut fmt::Formatter<'_>, target: &NotifyTarget) -> fmt::Result {
    let events: Vec<&str> = target.events.iter().map(|s| s.as_str()).collect();
    let whom = match &target.kind {
        NotifyKind::Email { to } => format!(" to {}", to.join(", ")),
        _ => format!(
            " (URL from ${})",
            target.variables.first().map_or("", String::as_str)
        ),
    };
    writeln!(
        f,
        "    notify {}: {}{whom}; on {}",
        target.number,
        target.kind.as_str(),
        events.join(", ")
    )
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
            compose_projects: None,
            images: None,
            rollback: true,
            services: None,
            oidc: Vec::new(),
            compose_model: None,
            host_paths: None,
            allow: BTreeSet::new(),
            networks: None,
            security_opts: Vec::new(),
            model_images: None,
            notify: Vec::new(),
            containers_span: 0..0,
        };
        Policy::compile(
            Origin::Seed,
            validate::default_server(Path::new(".")),
            validate::default_docker(),
            vec![spec],
            HashMap::new(),
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
            let matches = |p: &str| glob(p, GlobSyntax::ContainerName).map(|g| g.compile_matcher().is_match(name.as_str())).unwrap_or(false);
            let allowed = patterns.iter().any(|p| !p.starts_with('!') && matches(p))
                && !patterns.iter().any(|p| p.strip_prefix('!').is_some_and(matches));
            let project = policy.project("p").unwrap();
            prop_assert_eq!(policy.allows_container(project, &name), allowed);
            prop_assert_eq!(!policy.candidates(&name).is_empty(), allowed);
        }
    }
}
