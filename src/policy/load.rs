//! Reading `delivery.toml`.
//!
//! The file's shape is read by serde into the types of `raw.rs`, which keep
//! every value's position and hold a value of the wrong type or an unknown
//! key instead of stopping at it. This module judges those values and
//! compiles them into a `Policy`, reporting every problem with its line.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::names::MAX_WAIT_SECS;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use toml::Spanned;
use toml::de::DeTable;

use super::raw::{self, ClaimText, ClaimValue, ComposeValue, Field, List};

use base64::Engine as _;

use super::{
    Allowance, ClaimPattern, ComposeTool, DockerSettings, Hidden, KeySource, ModelMode, NotifyKind,
    NotifyTarget, OidcRule, Origin, Policy, ProjectSpec, SecretSource, ServerSettings,
    SmtpSettings, SmtpTls,
};
use crate::auth::signature::MIN_SECRET_LEN;
use crate::client_addr::Cidr;
use crate::names::{Action, ProjectName};

/// The largest policy file read; 10,000 projects take about 2 MB.
const MAX_POLICY_BYTES: u64 = 64 << 20;
/// The largest secret file read.
const MAX_SECRET_FILE_BYTES: u64 = 64 << 10;
/// The longest container or compose-file pattern.
const MAX_PATTERN_LEN: usize = 1024;
/// The longest issuer, audience or claim name.
const MAX_OIDC_TEXT_LEN: usize = 512;

/// Where secrets and overrides come from; tests pass a fake.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
}

/// The process environment and the real filesystem.
pub struct SystemEnvironment;

impl Environment for SystemEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        read_bounded(path, MAX_SECRET_FILE_BYTES)
    }
}

fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// One problem, with the line it is on when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: Option<usize>,
    pub message: String,
}

/// Every error found in a policy; `Display` prints one `file:line: message` each.
#[derive(Debug, Clone)]
pub struct PolicyErrors {
    pub origin: String,
    pub errors: Vec<Diagnostic>,
}

fn write_diagnostics(
    f: &mut fmt::Formatter<'_>,
    origin: &str,
    level: &str,
    diagnostics: &[Diagnostic],
) -> fmt::Result {
    for (i, d) in diagnostics.iter().enumerate() {
        if i > 0 {
            writeln!(f)?;
        }
        match d.line {
            Some(line) => write!(f, "{level}: {origin}:{line}: {}", d.message)?,
            None => write!(f, "{level}: {origin}: {}", d.message)?,
        }
    }
    Ok(())
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_diagnostics(f, &self.origin, "error", &self.errors)
    }
}

impl std::error::Error for PolicyErrors {}

/// A policy that loaded, with what `check` should still warn about.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub origin: String,
    pub warnings: Vec<Diagnostic>,
}

impl Loaded {
    /// The warnings, one `warning: file:line: message` per line.
    pub fn warnings(&self) -> impl fmt::Display + '_ {
        struct Warnings<'a>(&'a Loaded);
        impl fmt::Display for Warnings<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_diagnostics(f, &self.0.origin, "warning", &self.0.warnings)
            }
        }
        Warnings(self)
    }
}

/// Reads and compiles the policy at `path`.
pub fn load(path: &Path, env: &dyn Environment) -> Result<Loaded, PolicyErrors> {
    let origin = path.display().to_string();
    let bytes = read_bounded(path, MAX_POLICY_BYTES).map_err(|e| PolicyErrors {
        origin: origin.clone(),
        errors: vec![Diagnostic {
            line: None,
            message: format!("cannot read the policy file: {e}"),
        }],
    })?;
    let text = String::from_utf8(bytes).map_err(|_| PolicyErrors {
        origin: origin.clone(),
        errors: vec![Diagnostic {
            line: None,
            message: "the policy file is not UTF-8".into(),
        }],
    })?;
    parse(&text, path, env)
}

/// Compiles policy text; `path` names it in messages and anchors relative paths.
pub fn parse(text: &str, path: &Path, env: &dyn Environment) -> Result<Loaded, PolicyErrors> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut reader = Reader::new(path.display().to_string(), text, base, env);
    let specs = reader.document();
    reader.boundary_warnings(&specs);
    let Reader {
        origin,
        mut errors,
        mut warnings,
        server,
        docker,
        key_sources,
        smtp,
        ..
    } = reader;
    errors.sort_by_key(|d| d.line);
    warnings.sort_by_key(|d| d.line);
    if !errors.is_empty() {
        return Err(PolicyErrors { origin, errors });
    }
    let mut policy = Policy::compile(
        Origin::File(path.to_owned()),
        server,
        docker,
        specs,
        key_sources,
    )
    .map_err(|e| PolicyErrors {
        origin: origin.clone(),
        errors: vec![Diagnostic {
            line: None,
            message: format!("internal error compiling patterns: {e}"),
        }],
    })?;
    policy.smtp = smtp;
    Ok(Loaded {
        policy,
        origin,
        warnings,
    })
}

pub(crate) fn default_server(base: &Path) -> ServerSettings {
    ServerSettings {
        listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
        docs: false,
        max_body_bytes: 16384,
        timestamp_tolerance_secs: 300,
        max_wait_secs: 600,
        state_dir: base.join("delivery-state"),
        metrics: false,
        metrics_listen: None,
        trusted_proxies: Vec::new(),
        client_ip_header: "x-forwarded-for".into(),
        max_connections: 1024,
        max_connections_per_address: 64,
        max_waiting_per_project: 64,
        request_timeout_secs: 10,
        replay_cache_entries: 100_000,
        replay_entries_per_project: 10_000,
        auth_failure_limit: 10,
        auth_failure_window_secs: 60,
        job_history_days: 30,
        job_history_max: 10_000,
    }
}

pub(crate) fn default_docker() -> DockerSettings {
    DockerSettings {
        compose: ComposeTool::Auto,
        job_timeout_secs: 900,
        max_parallel_jobs: 4,
        shutdown_grace_secs: 30,
        stable_secs: 5,
    }
}

/// Where an integer of `[server]` goes once judged.
type Setter = fn(&mut ServerSettings, u64);

/// A value with its position.
type At<T> = Spanned<Field<T>>;

/// An integer key of `[server]`: its value, accepted range and setter.
type ServerInteger = (&'static str, Option<At<i128>>, Range<u64>, Setter);

/// A list of strings, each with its position, and the list's position.
type Strings = (Vec<(String, Range<usize>)>, Range<usize>);

struct Reader<'t> {
    origin: String,
    line_starts: Vec<usize>,
    text: &'t str,
    base: &'t Path,
    env: &'t dyn Environment,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    server: ServerSettings,
    docker: DockerSettings,
    /// Secret bytes to the project that first used them.
    seen_secrets: HashMap<Vec<u8>, String>,
    /// `[notify.smtp]`, once read.
    smtp: Option<SmtpSettings>,
    /// Each issuer an `oidc` rule names, and where its keys come from.
    key_sources: HashMap<String, KeySource>,
}

impl<'t> Reader<'t> {
    fn new(origin: String, text: &'t str, base: &'t Path, env: &'t dyn Environment) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let mut server = default_server(base);
        // The container image names its state volume here; a policy's own
        // `state_dir` still wins.
        if let Some(dir) = env.var("DELIVERY_STATE_DIR").filter(|d| !d.is_empty()) {
            server.state_dir = base.join(dir);
        }
        Self {
            origin,
            line_starts,
            text,
            base,
            env,
            errors: Vec::new(),
            warnings: Vec::new(),
            server,
            docker: default_docker(),
            seen_secrets: HashMap::new(),
            smtp: None,
            key_sources: HashMap::new(),
        }
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.line_starts
            .partition_point(|&start| start <= span.start)
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = Some(self.line(&span));
        self.errors.push(Diagnostic {
            line,
            message: message.into(),
        });
    }

    fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = Some(self.line(&span));
        self.warnings.push(Diagnostic {
            line,
            message: message.into(),
        });
    }

    fn document(&mut self) -> Vec<ProjectSpec> {
        let (root, syntax) = DeTable::parse_recoverable(self.text);
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            self.error(span, format!("TOML syntax: {}", e.message()));
        }
        let document = match raw::document(root) {
            Ok(document) => self.table(document, "the policy"),
            Err(e) => {
                self.error(e.span().unwrap_or(0..0), format!("TOML: {}", e.message()));
                None
            }
        };
        let mut specs = Vec::new();
        let mut saw_projects = false;
        if let Some(document) = document {
            for key in &document.unknown {
                self.error(
                    key.span(),
                    format!(
                        "unknown section `{}` (expected server, docker or projects)",
                        key.get_ref()
                    ),
                );
            }
            if let Some(server) = document.server.and_then(|s| self.table(s, "[server]")) {
                self.server_section(server);
            }
            if let Some(docker) = document.docker.and_then(|d| self.table(d, "[docker]")) {
                self.docker_section(docker);
            }
            if let Some(notify) = document.notify.and_then(|n| self.table(n, "[notify]")) {
                self.unknown_keys(&notify.unknown, "[notify]");
                if let Some(smtp) = notify.smtp.and_then(|s| self.table(s, "[notify.smtp]")) {
                    self.smtp_section(smtp);
                }
            }
            if let Some(projects) = document.projects {
                saw_projects = true;
                let span = projects.span();
                if let Some(projects) = self.table(projects, "[projects]") {
                    if projects.is_empty() {
                        self.error(span, "[projects] defines no project");
                    }
                    for (name, project) in projects {
                        if let Some(spec) = self.project(name, project) {
                            specs.push(spec);
                        }
                    }
                }
            }
        }
        if !saw_projects {
            self.errors.push(Diagnostic {
                line: None,
                message: "no [projects.<name>] section: nobody could deploy anything".into(),
            });
        }
        if let Some(listen) = self.env.var("DELIVERY_LISTEN") {
            match listen.parse() {
                Ok(addr) => self.server.listen = addr,
                Err(_) => self.errors.push(Diagnostic {
                    line: None,
                    message: format!("DELIVERY_LISTEN=`{listen}` is not an IP:port address"),
                }),
            }
        }
        specs
    }

    /// A field's value, or `None` after reporting that `key` must be `what`.
    fn value<T>(&mut self, key: &str, field: At<T>, what: &str) -> Option<T> {
        let span = field.span();
        match field.into_inner() {
            Field::Value(v) => Some(v),
            Field::Wrong { .. } => {
                self.error(span, format!("`{key}` must be {what}"));
                None
            }
        }
    }

    /// A table's contents, or `None` after reporting what was found.
    fn table<T>(&mut self, field: At<T>, what: &str) -> Option<T> {
        let span = field.span();
        match field.into_inner() {
            Field::Value(t) => Some(t),
            Field::Wrong { found } => {
                let article = if found.starts_with(['a', 'i']) {
                    "an"
                } else {
                    "a"
                };
                self.error(
                    span,
                    format!("{what} must be a table, not {article} {found}"),
                );
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, field: At<bool>) -> Option<bool> {
        self.value(key, field, "true or false")
    }

    fn integer(&mut self, key: &str, field: At<i128>, range: Range<u64>) -> Option<u64> {
        let span = field.span();
        let n = match field.into_inner() {
            Field::Value(n) => u64::try_from(n).ok().filter(|n| range.contains(n)),
            Field::Wrong { .. } => None,
        };
        if n.is_none() {
            self.error(
                span,
                format!(
                    "`{key}` must be an integer from {} to {}",
                    range.start,
                    range.end - 1
                ),
            );
        }
        n
    }

    fn string(&mut self, key: &str, field: At<String>) -> Option<(String, Range<usize>)> {
        let span = field.span();
        self.value(key, field, "a string").map(|s| (s, span))
    }

    /// An array of strings, each with its position; `None` after reporting
    /// an error.
    fn strings(&mut self, key: &str, field: At<List<String>>) -> Option<Strings> {
        let span = field.span();
        let items = self.value(key, field, "an array of strings")?;
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            let item_span = item.span();
            match item.into_inner() {
                Field::Value(s) => out.push((s, item_span)),
                Field::Wrong { .. } => {
                    self.error(item_span, format!("`{key}` must contain only strings"));
                    ok = false;
                }
            }
        }
        ok.then_some((out, span))
    }

    fn socket_addr(&mut self, key: &str, field: At<String>) -> Option<SocketAddr> {
        let (text, span) = self.string(key, field)?;
        let addr = text.parse().ok();
        if addr.is_none() {
            self.error(
                span,
                format!("`{key}` must be an IP:port address such as 127.0.0.1:8000"),
            );
        }
        addr
    }

    fn unknown_keys(&mut self, keys: &[Spanned<String>], section: &str) {
        for key in keys {
            self.error(
                key.span(),
                format!("unknown key `{}` in {section}", key.get_ref()),
            );
        }
    }

    fn server_section(&mut self, server: raw::Server) {
        let raw::Server {
            listen,
            docs,
            metrics,
            metrics_listen,
            state_dir,
            client_ip_header,
            trusted_proxies,
            max_body_bytes,
            timestamp_tolerance_secs,
            max_wait_secs,
            max_connections,
            max_connections_per_address,
            max_waiting_per_project,
            request_timeout_secs,
            replay_cache_entries,
            replay_entries_per_project,
            auth_failure_limit,
            auth_failure_window_secs,
            job_history_days,
            job_history_max,
            unknown,
        } = server;
        self.unknown_keys(&unknown, "[server]");
        if let Some(a) = listen.and_then(|v| self.socket_addr("listen", v)) {
            self.server.listen = a;
        }
        if let Some(b) = docs.and_then(|v| self.boolean("docs", v)) {
            self.server.docs = b;
        }
        if let Some(b) = metrics.and_then(|v| self.boolean("metrics", v)) {
            self.server.metrics = b;
        }
        if let Some(v) = metrics_listen {
            self.server.metrics_listen = self.socket_addr("metrics_listen", v);
        }
        if let Some((dir, span)) = state_dir.and_then(|v| self.string("state_dir", v)) {
            if dir.is_empty() {
                self.error(span, "`state_dir` must not be empty");
            } else {
                self.server.state_dir = self.base.join(dir);
            }
        }
        if let Some((h, span)) = client_ip_header.and_then(|v| self.string("client_ip_header", v)) {
            let valid = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if valid {
                self.server.client_ip_header = h.to_ascii_lowercase();
            } else {
                self.error(span, "`client_ip_header` must be a header name");
            }
        }
        if let Some((items, _)) = trusted_proxies.and_then(|v| self.strings("trusted_proxies", v)) {
            let mut proxies = Vec::new();
            for (text, span) in items {
                match text.parse::<Cidr>() {
                    Ok(c) => proxies.push(c),
                    Err(e) => self.error(span, e.to_string()),
                }
            }
            self.server.trusted_proxies = proxies;
        }
        let integers: [ServerInteger; 13] = [
            (
                "max_body_bytes",
                max_body_bytes,
                64..(16 << 20) + 1,
                |s, n| s.max_body_bytes = n as usize,
            ),
            (
                "timestamp_tolerance_secs",
                timestamp_tolerance_secs,
                1..86_401,
                |s, n| s.timestamp_tolerance_secs = n,
            ),
            (
                "max_wait_secs",
                max_wait_secs,
                0..MAX_WAIT_SECS + 1,
                |s, n| s.max_wait_secs = n,
            ),
            ("max_connections", max_connections, 1..1_000_001, |s, n| {
                s.max_connections = n as usize
            }),
            (
                "max_connections_per_address",
                max_connections_per_address,
                1..1_000_001,
                |s, n| s.max_connections_per_address = n as usize,
            ),
            (
                "max_waiting_per_project",
                max_waiting_per_project,
                1..1_000_001,
                |s, n| s.max_waiting_per_project = n as usize,
            ),
            (
                "request_timeout_secs",
                request_timeout_secs,
                1..3601,
                |s, n| s.request_timeout_secs = n,
            ),
            (
                "replay_cache_entries",
                replay_cache_entries,
                16..100_000_001,
                |s, n| s.replay_cache_entries = n as usize,
            ),
            (
                "replay_entries_per_project",
                replay_entries_per_project,
                1..100_000_001,
                |s, n| s.replay_entries_per_project = n as usize,
            ),
            (
                "auth_failure_limit",
                auth_failure_limit,
                1..1_000_001,
                |s, n| s.auth_failure_limit = n as u32,
            ),
            (
                "auth_failure_window_secs",
                auth_failure_window_secs,
                1..86_401,
                |s, n| s.auth_failure_window_secs = n,
            ),
            ("job_history_days", job_history_days, 1..36_501, |s, n| {
                s.job_history_days = n
            }),
            (
                "job_history_max",
                job_history_max,
                1..1_000_000_001,
                |s, n| s.job_history_max = n,
            ),
        ];
        for (key, field, range, set) in integers {
            if let Some(n) = field.and_then(|v| self.integer(key, v, range)) {
                set(&mut self.server, n);
            }
        }
    }

    fn docker_section(&mut self, docker: raw::Docker) {
        let raw::Docker {
            compose,
            job_timeout_secs,
            max_parallel_jobs,
            shutdown_grace_secs,
            stable_secs,
            unknown,
        } = docker;
        self.unknown_keys(&unknown, "[docker]");
        if let Some(field) = compose {
            self.compose_tool(field);
        }
        if let Some(n) =
            job_timeout_secs.and_then(|v| self.integer("job_timeout_secs", v, 1..86_401))
        {
            self.docker.job_timeout_secs = n;
        }
        if let Some(n) =
            max_parallel_jobs.and_then(|v| self.integer("max_parallel_jobs", v, 1..257))
        {
            self.docker.max_parallel_jobs = n as usize;
        }
        if let Some(n) =
            shutdown_grace_secs.and_then(|v| self.integer("shutdown_grace_secs", v, 0..86_401))
        {
            self.docker.shutdown_grace_secs = n;
        }
        if let Some(n) = stable_secs.and_then(|v| self.integer("stable_secs", v, 0..3_601)) {
            self.docker.stable_secs = n;
        }
    }

    /// `compose`: `"auto"`, `"v1"`, `"v2"` or an argv.
    fn compose_tool(&mut self, field: At<ComposeValue>) {
        let span = field.span();
        let named = |name: &str| match name {
            "auto" => Some(ComposeTool::Auto),
            "v1" => Some(ComposeTool::V1),
            "v2" => Some(ComposeTool::V2),
            _ => None,
        };
        match field.into_inner() {
            Field::Value(ComposeValue::Name(name)) if named(&name).is_some() => {
                self.docker.compose = named(&name).unwrap_or(ComposeTool::Auto);
            }
            Field::Value(ComposeValue::Argv(items)) => {
                let Some((argv, _)) =
                    self.strings("compose", Spanned::new(span.clone(), Field::Value(items)))
                else {
                    return;
                };
                let argv: Vec<String> = argv.into_iter().map(|(s, _)| s).collect();
                let valid = !argv.is_empty()
                    && argv
                        .iter()
                        .all(|a| !a.is_empty() && !a.chars().any(|c| c.is_control()));
                if valid {
                    self.docker.compose = ComposeTool::Command(argv);
                } else {
                    self.error(
                        span,
                        "`compose` must be a non-empty argv without empty or control characters",
                    );
                }
            }
            _ => self.error(
                span,
                r#"`compose` must be "auto", "v1", "v2" or an argv such as ["docker", "compose"]"#,
            ),
        }
    }

    fn project(&mut self, name: Spanned<String>, field: At<raw::Project>) -> Option<ProjectSpec> {
        let section = format!("[projects.{}]", name.get_ref());
        let project_name = match ProjectName::parse(name.get_ref()) {
            Ok(n) => Some(n),
            Err(e) => {
                self.error(
                    name.span(),
                    format!("project name `{}` {e}", name.get_ref()),
                );
                None
            }
        };
        let span = field.span();
        let raw::Project {
            secrets,
            containers,
            actions,
            compose_files,
            compose_projects,
            images,
            rollback,
            services,
            oidc,
            compose_model,
            host_paths,
            allow,
            networks,
            security_opts,
            model_images,
            notify,
            unknown,
        } = self.table(field, &section)?;
        self.unknown_keys(&unknown, &section);
        let containers_span = containers.as_ref().map_or(span.clone(), Spanned::span);
        let has_containers = containers.is_some();
        let has_actions = actions.is_some();
        let secrets = secrets.map(|v| self.secrets(v, name.get_ref()));
        let containers = containers.map(|v| self.container_patterns(v));
        let actions = actions.and_then(|v| self.actions(v));
        let compose_files = compose_files.map(|v| self.compose_file_patterns(v));
        let compose_projects = compose_projects.map(|v| self.compose_project_patterns(v));
        let images = images.map(|v| self.image_patterns(v));
        let rollback = rollback.and_then(|v| self.boolean("rollback", v));
        let services = services.map(|v| self.service_patterns(v));
        let oidc = oidc.map(|v| self.oidc_rules(v, &section));
        let compose_model = compose_model.map(|v| self.model_mode(v));
        let host_paths = host_paths.map(|v| self.host_path_patterns(v));
        let allow = allow.map(|v| self.allowances(v));
        let networks = networks.map(|v| self.network_patterns(v));
        let security_opts = security_opts.map(|v| self.security_opts(v));
        let model_images = model_images.map(|v| self.model_image_patterns(v));
        let notify = notify.map(|v| self.notify_targets(v, &section));
        let mut missing = |what: &str| {
            self.error(span.clone(), format!("{section} has no `{what}`"));
        };
        // A project whose CI presents tokens needs no secret.
        if secrets.is_none() && oidc.is_none() {
            missing("secrets` or `oidc");
        }
        // A project that updates only Swarm services names no containers.
        if !has_containers && services.is_none() {
            missing("containers");
        }
        if !has_actions {
            missing("actions");
        }
        Some(ProjectSpec {
            name: project_name?,
            secrets: secrets.unwrap_or(Some(Vec::new()))?,
            oidc: oidc.unwrap_or(Some(Vec::new()))?,
            containers: containers.unwrap_or(Some(Vec::new()))?,
            actions: actions?,
            compose_files: compose_files.map_or(Some(None), |p| p.map(Some))?,
            compose_projects: compose_projects.map_or(Some(None), |p| p.map(Some))?,
            images: images.map_or(Some(None), |p| p.map(Some))?,
            rollback: rollback.unwrap_or(true),
            services: services.map_or(Some(None), |p| p.map(Some))?,
            compose_model: compose_model.unwrap_or(Some(None))?,
            host_paths: host_paths.unwrap_or(Some(None))?,
            allow: allow.unwrap_or(Some(BTreeSet::new()))?,
            networks: networks.map_or(Some(None), |p| p.map(Some))?,
            security_opts: security_opts.unwrap_or(Some(Vec::new()))?,
            model_images: model_images.map_or(Some(None), |p| p.map(Some))?,
            notify: notify.unwrap_or(Some(Vec::new()))?,
            containers_span,
        })
    }

    /// `compose_model`: `"enforce"`, `"warn"` or `"off"`.
    fn model_mode(&mut self, field: At<String>) -> Option<Option<ModelMode>> {
        let span = field.span();
        match field.into_inner() {
            Field::Value(text) if ModelMode::parse(&text).is_some() => {
                Some(ModelMode::parse(&text))
            }
            _ => {
                self.error(
                    span,
                    r#"`compose_model` must be "enforce", "warn" or "off""#,
                );
                None
            }
        }
    }

    /// `host_paths`: absolute globs over real host paths.
    fn host_path_patterns(&mut self, field: At<List<String>>) -> Option<Option<Vec<String>>> {
        self.glob_list(
            "host_paths",
            "host path",
            field,
            super::Subject::Path,
            |pattern| {
                (!pattern.starts_with('/'))
                    .then(|| format!("host path pattern `{pattern}` must be absolute"))
            },
        )
        .map(Some)
    }

    /// `allow`: names of what compose may do beyond the project's paths.
    fn allowances(&mut self, field: At<List<String>>) -> Option<BTreeSet<Allowance>> {
        let (items, _) = self.strings("allow", field)?;
        let mut allowed = BTreeSet::new();
        let mut ok = true;
        for (name, span) in items {
            match Allowance::parse(&name) {
                Some(a) => {
                    allowed.insert(a);
                }
                None => {
                    let names: Vec<&str> = Allowance::ALL.iter().map(|a| a.as_str()).collect();
                    self.error(
                        span,
                        format!(
                            "`allow` names `{name}`, which is none of {}",
                            names.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(allowed)
    }

    /// `networks`: globs over the names of networks outside the project's
    /// compose project that its services may join.
    fn network_patterns(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
        self.glob_list(
            "networks",
            "network",
            field,
            super::Subject::ContainerName,
            |_| None,
        )
    }

    /// `model_images`: globs over the image repositories a compose model
    /// may name.
    fn model_image_patterns(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
        self.glob_list(
            "model_images",
            "image repository",
            field,
            super::Subject::Path,
            |pattern| {
                (pattern.contains('@')
                    || pattern
                        .rsplit('/')
                        .next()
                        .is_some_and(|last| last.contains(':')))
                .then(|| {
                    format!(
                        "image pattern `{pattern}` must name repositories, without a tag or digest"
                    )
                })
            },
        )
    }

    /// `security_opts`: the `security_opt` profiles a project's services
    /// may name, each `apparmor=<profile>`, `seccomp=<absolute file>` or
    /// `label=<user|role|type|level>:<value>`; what weakens confinement
    /// is the `unconfined` class, not a profile.
    fn security_opts(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
        let (items, _) = self.strings("security_opts", field)?;
        let mut ok = true;
        let mut opts = Vec::with_capacity(items.len());
        for (text, span) in items {
            match super::SecurityOpt::parse(&text) {
                Some(opt) if opt.is_profile() => opts.push(opt.to_string()),
                _ => {
                    self.error(
                        span,
                        format!(
                            "`security_opts` names `{text}`, which is not a profile: write apparmor=<profile>, seccomp=<absolute file> or label=<user|role|type|level>:<value>"
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(opts)
    }

    /// `[[projects.<name>.oidc]]`: one or more tables.
    fn oidc_rules(&mut self, field: At<List<raw::Oidc>>, section: &str) -> Option<Vec<OidcRule>> {
        let span = field.span();
        let rules = match field.into_inner() {
            Field::Value(rules) if !rules.is_empty() => rules,
            _ => {
                self.error(
                    span,
                    format!(
                        "`oidc` must be one or more tables: [[{}.oidc]]",
                        &section[1..section.len() - 1]
                    ),
                );
                return None;
            }
        };
        let mut out = Vec::new();
        let mut ok = true;
        for rule in rules {
            match self.oidc_rule(rule, section) {
                Some(rule) => out.push(rule),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A bounded, non-empty string.
    fn oidc_text(&mut self, key: &str, field: At<String>) -> Option<(String, Range<usize>)> {
        let (text, span) = self.string(key, field)?;
        if text.is_empty() || text.len() > MAX_OIDC_TEXT_LEN {
            self.error(
                span,
                format!("`{key}` must be 1 to {MAX_OIDC_TEXT_LEN} characters"),
            );
            return None;
        }
        Some((text, span))
    }

    fn oidc_rule(&mut self, field: At<raw::Oidc>, section: &str) -> Option<OidcRule> {
        let what = format!("[[{}.oidc]]", &section[1..section.len() - 1]);
        let span = field.span();
        let raw::Oidc {
            issuer,
            audience,
            claims,
            jwks_file,
            max_token_age_secs,
            unknown,
        } = self.table(field, &what)?;
        self.unknown_keys(&unknown, &what);
        for (key, found) in [
            ("issuer", issuer.is_some()),
            ("audience", audience.is_some()),
        ] {
            if !found {
                self.error(span.clone(), format!("{what} has no `{key}`"));
            }
        }
        let issuer_span = issuer.as_ref().map_or(span, Spanned::span);
        let issuer = issuer
            .and_then(|v| self.oidc_text("issuer", v))
            .filter(|(text, span)| match crate::auth::oidc::check_url(text) {
                Ok(_) => true,
                Err(e) => {
                    self.error(span.clone(), format!("`issuer`: {e}"));
                    false
                }
            })
            .map(|(text, _)| text);
        let audience = audience.and_then(|v| self.oidc_text("audience", v));
        let claims = match claims {
            Some(v) => self.claims(v),
            None => Some(Vec::new()),
        };
        let jwks_file = jwks_file
            .and_then(|v| self.oidc_text("jwks_file", v))
            .map(|(path, span)| (self.base.join(path), span));
        let max_age = match max_token_age_secs {
            Some(v) => self.integer("max_token_age_secs", v, 1..86_401),
            None => Some(crate::auth::oidc::DEFAULT_MAX_TOKEN_AGE_SECS),
        };
        let issuer = issuer?;
        let source = match jwks_file {
            None => KeySource::Discovery,
            Some((path, span)) => {
                let set = match self.env.read_file(&path) {
                    Ok(bytes) => {
                        crate::auth::oidc::KeySet::parse(&bytes).map_err(|e| e.to_string())
                    }
                    Err(e) => Err(format!("cannot read it: {e}")),
                };
                match set {
                    Ok(set) => KeySource::File(path, Arc::new(set)),
                    Err(e) => {
                        self.error(span, format!("jwks_file {}: {e}", path.display()));
                        return None;
                    }
                }
            }
        };
        match self.key_sources.get(&issuer) {
            Some(known) if known.file() != source.file() => {
                self.error(
                    issuer_span,
                    format!("the issuer {issuer} is given different jwks_file settings; every rule naming it must give the same"),
                );
                return None;
            }
            Some(_) => {}
            None => {
                self.key_sources.insert(issuer.clone(), source);
            }
        }
        let rule = OidcRule {
            issuer,
            audience: audience?.0,
            claims: claims?,
            max_token_age_secs: max_age?,
        };
        if let Some(problem) = rule.unbounded() {
            self.warn(issuer_span, format!("{what} {problem}"));
        }
        Some(rule)
    }

    /// `claims = { name = "glob" | ["glob", …] }`; integers and booleans
    /// stand for their text.
    fn claims(&mut self, field: At<raw::Entries<ClaimValue>>) -> Option<Vec<ClaimPattern>> {
        let table = self.table(field, "`claims`")?;
        let mut out = Vec::new();
        let mut ok = true;
        for (key, value) in table {
            let name = key.get_ref();
            if name.is_empty() || name.len() > MAX_OIDC_TEXT_LEN {
                self.error(key.span(), "a claim name must be 1 to 512 characters");
                ok = false;
                continue;
            }
            let span = value.span();
            let items: Vec<(Option<String>, Range<usize>)> = match value.into_inner() {
                Field::Value(ClaimValue::One(text)) => vec![(Some(text), span.clone())],
                Field::Value(ClaimValue::Many(items)) => items
                    .into_iter()
                    .map(|item| {
                        let span = item.span();
                        match item.into_inner() {
                            Field::Value(ClaimText(text)) => (Some(text), span),
                            Field::Wrong { .. } => (None, span),
                        }
                    })
                    .collect(),
                Field::Wrong { .. } => vec![(None, span.clone())],
            };
            let mut patterns = Vec::new();
            for (text, item_span) in &items {
                let problem = match text {
                    None => Some(format!(
                        "claim `{name}` must be a string, a number, a boolean, or a list of them"
                    )),
                    Some(p) if p.is_empty() || p.len() > MAX_PATTERN_LEN => Some(format!(
                        "claim `{name}`: a pattern must be 1 to {MAX_PATTERN_LEN} characters"
                    )),
                    Some(p) => super::glob(p, super::Subject::Path)
                        .err()
                        .map(|e| format!("claim `{name}` pattern `{p}`: {}", e.kind())),
                };
                match (problem, text) {
                    (None, Some(text)) => patterns.push(text.clone()),
                    (problem, _) => {
                        self.error(item_span.clone(), problem.unwrap_or_default());
                        ok = false;
                    }
                }
            }
            if items.is_empty() {
                self.error(span, format!("claim `{name}` lists no pattern"));
                ok = false;
                continue;
            }
            match ClaimPattern::new(name.to_owned(), patterns) {
                Ok(claim) => out.push(claim),
                Err(e) => {
                    self.error(span, format!("claim `{name}`: {}", e.kind()));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn service_patterns(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
        self.glob_list(
            "services",
            "Swarm service",
            field,
            super::Subject::ContainerName,
            |pattern| {
                pattern.starts_with('!').then(|| {
                    format!("service pattern `{pattern}`: `services` has no exclusions; list the services allowed")
                })
            },
        )
    }

    fn image_patterns(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
        self.glob_list("images", "image repository", field, super::Subject::Path, |pattern| {
            pattern.contains('@').then(|| {
                format!("image pattern `{pattern}` must name repositories, without a digest: the digest is the caller's")
            })
        })
    }

    fn compose_project_patterns(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
        self.glob_list(
            "compose_projects",
            "compose project",
            field,
            super::Subject::ContainerName,
            |_| None,
        )
    }

    /// `[notify.smtp]`.
    fn smtp_section(&mut self, smtp: raw::Smtp) {
        let raw::Smtp {
            host,
            port,
            tls,
            from,
            username_env,
            password_env,
            unknown,
        } = smtp;
        self.unknown_keys(&unknown, "[notify.smtp]");
        let host = match host.and_then(|v| self.string("host", v)) {
            Some((host, span)) if host.is_empty() || host.contains(char::is_whitespace) => {
                self.error(span, "`host` must be a host name or address");
                None
            }
            Some((host, _)) => Some(host),
            None => {
                self.errors.push(Diagnostic {
                    line: None,
                    message: "[notify.smtp] has no `host`".into(),
                });
                None
            }
        };
        let tls = match tls.map(|v| self.string("tls", v)) {
            None => Some(SmtpTls::StartTls),
            Some(None) => None,
            Some(Some((text, span))) => {
                let tls = SmtpTls::parse(&text);
                if tls.is_none() {
                    self.error(span, r#"`tls` must be "starttls", "tls" or "none""#);
                }
                tls
            }
        };
        let port = match port {
            None => tls.map(SmtpTls::default_port),
            Some(v) => self.integer("port", v, 1..65_536).map(|p| p as u16),
        };
        let from = match from.and_then(|v| self.string("from", v)) {
            Some((from, span)) => match from.parse::<lettre::message::Mailbox>() {
                Ok(_) => Some(from),
                Err(_) => {
                    self.error(span, format!("`from` `{from}` is not a mail address"));
                    None
                }
            },
            None => {
                self.errors.push(Diagnostic {
                    line: None,
                    message: "[notify.smtp] has no `from`".into(),
                });
                None
            }
        };
        let user = username_env.and_then(|v| self.env_value("username_env", v));
        let password = password_env.and_then(|v| self.env_value("password_env", v));
        let mut variables = Vec::new();
        let login = match (user, password) {
            (None, None) => Some(None),
            (Some((user_var, user, _)), Some((password_var, password, _))) => {
                variables = vec![user_var, password_var];
                Some(Some((user, Hidden(password))))
            }
            (Some((_, _, span)), None) | (None, Some((_, _, span))) => {
                self.error(span, "`username_env` and `password_env` go together");
                None
            }
        };
        if let (Some(host), Some(port), Some(tls), Some(from), Some(login)) =
            (host, port, tls, from, login)
        {
            self.smtp = Some(SmtpSettings {
                host,
                port,
                tls,
                from,
                login,
                variables,
            });
        }
    }

    /// The variable `field` names, and its value.
    fn env_value(
        &mut self,
        key: &str,
        field: At<String>,
    ) -> Option<(String, String, Range<usize>)> {
        let (name, span) = self.string(key, field)?;
        match self
            .env
            .var(&name)
            .filter(|v| !name.is_empty() && !v.is_empty())
        {
            Some(value) => Some((name, value, span)),
            None => {
                self.error(span, format!("environment variable `{name}` is not set"));
                None
            }
        }
    }

    /// `[[projects.<name>.notify]]`: where the project's deploy results go.
    fn notify_targets(
        &mut self,
        field: At<List<raw::Target>>,
        section: &str,
    ) -> Option<Vec<NotifyTarget>> {
        let what = format!("[[{}.notify]]", &section[1..section.len() - 1]);
        let span = field.span();
        let targets = self.value("notify", field, &format!("one or more tables: {what}"))?;
        if targets.is_empty() {
            self.error(span, format!("`notify` must be one or more tables: {what}"));
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, target) in targets.into_iter().enumerate() {
            match self.notify_target(target, &what, i + 1) {
                Some(target) => out.push(target),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn notify_target(
        &mut self,
        field: At<raw::Target>,
        what: &str,
        number: usize,
    ) -> Option<NotifyTarget> {
        let span = field.span();
        let raw::Target {
            kind,
            url_env,
            secret_env,
            events,
            to,
            unknown,
        } = self.table(field, what)?;
        self.unknown_keys(&unknown, what);
        let Some((kind, kind_span)) = kind.and_then(|v| self.string("kind", v)) else {
            self.error(span, format!("{what} has no `kind`"));
            return None;
        };
        let only = |key: &str, kinds: &str| format!("`{key}` is for {kinds} targets");
        let mut ok = true;
        match kind.as_str() {
            "webhook" | "slack" => {
                if let Some(to) = &to {
                    self.error(to.span(), only("to", "email"));
                    ok = false;
                }
                if let Some(secret) = secret_env.as_ref().filter(|_| kind == "slack") {
                    self.error(secret.span(), only("secret_env", "webhook"));
                    ok = false;
                }
            }
            "email" => {
                for (key, field) in [("url_env", &url_env), ("secret_env", &secret_env)] {
                    if let Some(field) = field {
                        self.error(field.span(), only(key, "webhook and slack"));
                        ok = false;
                    }
                }
            }
            other => {
                self.error(
                    kind_span,
                    format!("notify kind `{other}` is none of webhook, slack, email"),
                );
                return None;
            }
        }
        let events = match events {
            None => Some(crate::policy::EVENTS.to_vec()),
            Some(v) => self.notify_events(v),
        };
        let mut variables = Vec::new();
        let built = match kind.as_str() {
            "email" => {
                let Some((addresses, list_span)) = to.and_then(|v| self.strings("to", v)) else {
                    self.error(span, format!("{what} has no `to`"));
                    return None;
                };
                if addresses.is_empty() {
                    self.error(list_span.clone(), "`to` must list at least one address");
                    ok = false;
                }
                for (address, span) in &addresses {
                    if address.parse::<lettre::message::Mailbox>().is_err() {
                        self.error(span.clone(), format!("`{address}` is not a mail address"));
                        ok = false;
                    }
                }
                if self.smtp.is_none() {
                    self.error(list_span, "an email target needs [notify.smtp]");
                    ok = false;
                }
                Some(NotifyKind::Email {
                    to: addresses.into_iter().map(|(a, _)| a).collect(),
                })
            }
            webhook_or_slack => {
                let Some(url_env) = url_env else {
                    self.error(span, format!("{what} has no `url_env`"));
                    return None;
                };
                let (name, text, url_span) = self.env_value("url_env", url_env)?;
                let url = self.notify_url(&name, &text, url_span);
                variables.push(name);
                if webhook_or_slack == "slack" {
                    url.map(|url| NotifyKind::Slack { url: Hidden(url) })
                } else {
                    let key = match secret_env {
                        None => {
                            self.error(span, format!("{what} has no `secret_env`"));
                            None
                        }
                        Some(v) => self.env_value("secret_env", v).and_then(|(var, text, span)| {
                            variables.push(var);
                            let key = text
                                .strip_prefix("whsec_")
                                .and_then(|b64| {
                                    base64::engine::general_purpose::STANDARD.decode(b64).ok()
                                })
                                .filter(|key| key.len() >= 16);
                            if key.is_none() {
                                self.error(span, "`secret_env` must hold a Standard Webhooks key: whsec_ and the base64 of 16 or more bytes");
                            }
                            key
                        }),
                    };
                    match (url, key) {
                        (Some(url), Some(key)) => Some(NotifyKind::Webhook {
                            url: Hidden(url),
                            key: Hidden(key),
                        }),
                        _ => None,
                    }
                }
            }
        };
        match (built, events, ok) {
            (Some(kind), Some(events), true) => {
                Some(NotifyTarget::new(number, kind, variables, events))
            }
            _ => None,
        }
    }

    /// A target's URL: http or https, with a host. Never printed: it may
    /// hold a token.
    fn notify_url(&mut self, name: &str, text: &str, span: Range<usize>) -> Option<reqwest::Url> {
        let url = reqwest::Url::parse(text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        match url {
            None => {
                self.error(span, format!("`{name}` holds no http or https URL"));
                None
            }
            Some(url) => {
                if url.scheme() == "http" && !crate::outbound::is_loopback(&url) {
                    self.warn(
                        span,
                        format!(
                            "`{name}` holds a plain http URL: deploy results travel unencrypted"
                        ),
                    );
                }
                Some(url)
            }
        }
    }

    /// `events`: end states.
    fn notify_events(&mut self, field: At<List<String>>) -> Option<Vec<super::Outcome>> {
        let (items, span) = self.strings("events", field)?;
        if items.is_empty() {
            self.error(span, "`events`, when present, must list an end state");
            return None;
        }
        let mut events = Vec::new();
        let mut ok = true;
        for (name, span) in items {
            match super::Outcome::parse(&name) {
                Some(state) if !events.contains(&state) => events.push(state),
                Some(_) => {}
                None => {
                    let names: Vec<&str> =
                        crate::policy::EVENTS.iter().map(|s| s.as_str()).collect();
                    self.error(
                        span,
                        format!(
                            "`events` names `{name}`, which is none of {}",
                            names.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(events)
    }

    /// On a host shared by several projects: a project with neither
    /// `compose_files` nor `compose_projects` is bounded by its container
    /// names alone, and two projects whose `containers` can match one name
    /// share that container.
    fn boundary_warnings(&mut self, specs: &[ProjectSpec]) {
        if specs.len() < 2 {
            return;
        }
        for spec in specs {
            if spec.compose_files.is_none()
                && spec.compose_projects.is_none()
                && !spec.containers.is_empty()
            {
                self.warn(
                    spec.containers_span.clone(),
                    format!(
                        "project `{}` has neither `compose_files` nor `compose_projects`: on a shared host its container names are its only boundary from the other projects",
                        spec.name
                    ),
                );
            } else if spec.compose_files.is_some() && spec.compose_projects.is_none() {
                self.warn(
                    spec.containers_span.clone(),
                    format!(
                        "project `{}` bounds its compose files but not its compose project names: its own files started under another project's compose name (`-p`) would act on that project's containers and networks; add `compose_projects`",
                        spec.name
                    ),
                );
            }
            let judged = spec.compose_model != Some(ModelMode::Off) && !spec.containers.is_empty();
            if judged && spec.compose_files.is_none() && spec.host_paths.is_none() {
                self.warn(
                    spec.containers_span.clone(),
                    format!(
                        "project `{}` has neither `compose_files` nor `host_paths`: its host paths are its compose files' real directories, which a project that can write its own directory moves by making a compose file a symlink; set `compose_files` or `host_paths`",
                        spec.name
                    ),
                );
            }
            if judged && spec.model_images.is_none() {
                self.warn(
                    spec.containers_span.clone(),
                    format!(
                        "project `{}` has no `model_images`: its compose files may name, build and tag any image, another project's included (whose next start without a pull runs it); set `model_images`",
                        spec.name
                    ),
                );
            }
        }
        // Only patterns whose literal prefixes nest can share a name; sorted
        // by prefix, those that extend one prefix stand together.
        let mut allows: Vec<(&str, usize, &str)> = specs
            .iter()
            .enumerate()
            .flat_map(|(i, spec)| {
                spec.containers
                    .iter()
                    .filter(|p| !p.starts_with('!'))
                    .map(move |p| (super::overlap::literal_prefix(p), i, p.as_str()))
            })
            .collect();
        allows.sort_unstable();
        let mut reported = HashSet::new();
        for (at, &(prefix, owner, pattern)) in allows.iter().enumerate() {
            for &(_, other, other_pattern) in allows[at + 1..]
                .iter()
                .take_while(|(p, _, _)| p.starts_with(prefix))
            {
                let pair = (owner.min(other), owner.max(other));
                if owner == other || reported.contains(&pair) {
                    continue;
                }
                let denied = |spec: &ProjectSpec, name: &str| {
                    spec.containers
                        .iter()
                        .filter_map(|p| p.strip_prefix('!'))
                        .any(|p| {
                            super::glob(p, super::Subject::ContainerName)
                                .is_ok_and(|g| g.compile_matcher().is_match(name))
                        })
                };
                let shared = super::overlap::shared_name(pattern, other_pattern)
                    .filter(|n| !denied(&specs[owner], n) && !denied(&specs[other], n));
                if let Some(name) = shared {
                    reported.insert(pair);
                    let (a, b) = (&specs[pair.0], &specs[pair.1]);
                    self.warn(
                        b.containers_span.clone(),
                        format!(
                            "projects `{}` and `{}` may both deploy some containers (`{pattern}` and `{other_pattern}` both match e.g. `{name}`)",
                            a.name, b.name
                        ),
                    );
                }
            }
        }
    }

    fn secrets(
        &mut self,
        field: At<List<String>>,
        project: &str,
    ) -> Option<Vec<(SecretSource, Vec<u8>)>> {
        let (items, span) = self.strings("secrets", field)?;
        if items.is_empty() {
            self.error(span, "`secrets` must list at least one secret");
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (text, span) in items {
            match self.secret(&text, &span, project) {
                Some(secret) => out.push(secret),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn secret(
        &mut self,
        text: &str,
        span: &Range<usize>,
        project: &str,
    ) -> Option<(SecretSource, Vec<u8>)> {
        let (source, bytes) = if let Some(var) = text.strip_prefix("env:") {
            let Some(value) = self.env.var(var).filter(|_| !var.is_empty()) else {
                self.error(
                    span.clone(),
                    format!("environment variable `{var}` is not set"),
                );
                return None;
            };
            (SecretSource::Env(var.to_owned()), value.into_bytes())
        } else if let Some(path) = text.strip_prefix("file:") {
            let path = self.base.join(path);
            let bytes = match self.env.read_file(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.error(
                        span.clone(),
                        format!("cannot read secret file {}: {e}", path.display()),
                    );
                    return None;
                }
            };
            let Ok(mut secret) = String::from_utf8(bytes) else {
                self.error(
                    span.clone(),
                    format!("secret file {} is not UTF-8", path.display()),
                );
                return None;
            };
            let trimmed = secret.trim_end_matches(['\n', '\r']).len();
            secret.truncate(trimmed);
            (SecretSource::File(path), secret.into_bytes())
        } else {
            self.warn(
                span.clone(),
                format!(
                    "project `{project}` has a literal secret in the policy file; prefer env: or file:"
                ),
            );
            (SecretSource::Literal, text.as_bytes().to_vec())
        };
        if bytes.len() < MIN_SECRET_LEN {
            self.error(
                span.clone(),
                format!("the secret from {source} is shorter than {MIN_SECRET_LEN} bytes"),
            );
            return None;
        }
        match self.seen_secrets.get(&bytes) {
            Some(owner) if owner == project => {
                self.error(
                    span.clone(),
                    format!("project `{project}` lists the same secret twice ({source})"),
                );
                None
            }
            Some(owner) => {
                let message = format!(
                    "the secret from {source} is also used by project `{owner}`; every project needs its own"
                );
                self.error(span.clone(), message);
                None
            }
            None => {
                self.seen_secrets.insert(bytes.clone(), project.to_owned());
                Some((source, bytes))
            }
        }
    }

    fn container_patterns(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
        let (items, list_span) = self.strings("containers", field)?;
        let mut ok = true;
        let mut any_allow = false;
        for (pattern, span) in &items {
            let body = pattern.strip_prefix('!').unwrap_or(pattern);
            any_allow |= !pattern.starts_with('!');
            let problem = if body.is_empty() {
                Some("an empty container pattern matches nothing".to_owned())
            } else if body.starts_with('/') {
                Some(format!(
                    "container pattern `{pattern}` starts with '/'; container names are matched without it"
                ))
            } else if body.len() > MAX_PATTERN_LEN {
                Some(format!(
                    "container pattern is longer than {MAX_PATTERN_LEN} characters"
                ))
            } else {
                super::glob(body, super::Subject::ContainerName)
                    .err()
                    .map(|e| format!("container pattern `{pattern}`: {}", e.kind()))
            };
            if let Some(problem) = problem {
                self.error(span.clone(), problem);
                ok = false;
            }
        }
        if ok && !any_allow {
            self.error(
                list_span,
                "`containers` needs at least one pattern without '!'",
            );
            ok = false;
        }
        ok.then(|| items.into_iter().map(|(p, _)| p).collect())
    }

    fn compose_file_patterns(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
        self.glob_list("compose_files", "compose file", field, super::Subject::Path, |pattern| {
            (!pattern.starts_with('/')).then(|| {
                format!("compose file pattern `{pattern}` must be absolute: compose records absolute paths")
            })
        })
    }

    /// A non-empty list of globs under `key`, each bounded, valid, and
    /// passing `check`; every bad one is reported.
    fn glob_list(
        &mut self,
        key: &str,
        what: &str,
        field: At<List<String>>,
        subject: super::Subject,
        check: impl Fn(&str) -> Option<String>,
    ) -> Option<Vec<String>> {
        let (items, span) = self.strings(key, field)?;
        if items.is_empty() {
            self.error(span, format!("`{key}`, when present, must list a pattern"));
            return None;
        }
        let mut ok = true;
        for (pattern, span) in &items {
            let problem = check(pattern).or_else(|| {
                if pattern.is_empty() || pattern.len() > MAX_PATTERN_LEN {
                    Some(format!(
                        "{what} pattern must be 1 to {MAX_PATTERN_LEN} characters"
                    ))
                } else {
                    super::glob(pattern, subject)
                        .err()
                        .map(|e| format!("{what} pattern `{pattern}`: {}", e.kind()))
                }
            });
            if let Some(problem) = problem {
                self.error(span.clone(), problem);
                ok = false;
            }
        }
        ok.then(|| items.into_iter().map(|(p, _)| p).collect())
    }

    fn actions(&mut self, field: At<List<String>>) -> Option<Vec<Action>> {
        let (items, span) = self.strings("actions", field)?;
        if items.is_empty() {
            self.error(span, "`actions` must list pull, build or both");
            return None;
        }
        let mut actions = Vec::new();
        let mut ok = true;
        for (text, span) in items {
            match Action::parse(&text) {
                Some(a) if actions.contains(&a) => {
                    self.error(span, format!("action `{text}` is listed twice"));
                    ok = false;
                }
                Some(a) => actions.push(a),
                None => {
                    self.error(
                        span,
                        format!("unknown action `{text}` (expected pull or build)"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(actions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::ContainerName;
    use crate::policy::KeySource;
    use std::path::{Path, PathBuf};

    struct FakeEnv {
        vars: HashMap<&'static str, &'static str>,
        files: HashMap<&'static str, &'static [u8]>,
    }

    impl Environment for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.vars.get(name).map(|v| v.to_string())
        }
        fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
            self.files
                .get(path.to_str().unwrap())
                .map(|b| b.to_vec())
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
    }

    fn env() -> FakeEnv {
        FakeEnv {
            vars: HashMap::from([
                ("BILLING_SECRET", "billing-secret-0123456789"),
                ("SHOP_SECRET", "shop-secret-0123456789ab"),
                ("SHORT", "short"),
                ("OTHER_SECRET", "other-secret-0123456789ab"),
                ("DUP", "billing-secret-0123456789"),
                ("HOOK_URL", "https://hooks.example/t0ken"),
                ("PLAIN_URL", "http://receiver.example/hook"),
                ("FTP_URL", "ftp://hooks.example/"),
                ("HOOK_KEY", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                ("SMTP_USER", "deliverer"),
                ("SMTP_PASSWORD", "pa55word"),
            ]),
            files: HashMap::from([
                ("/etc/dh/next", &b"billing-next-0123456789\n"[..]),
                ("/etc/dh/crlf", &b"crlf-secret-0123456789\r\n"[..]),
                (
                    "/etc/dh/jwks.json",
                    &br#"{"keys": [{"kty": "EC", "kid": "k1", "crv": "P-256", "x": "AAAA", "y": "AAAA"}]}"#[..],
                ),
                ("/etc/dh/empty.json", &br#"{"keys": []}"#[..]),
            ]),
        }
    }

    fn parse_ok(text: &str) -> Loaded {
        match parse(text, Path::new("/etc/dh/delivery.toml"), &env()) {
            Ok(loaded) => loaded,
            Err(e) => panic!("expected a valid policy, got:\n{e}"),
        }
    }

    fn parse_err(text: &str) -> String {
        match parse(text, Path::new("/etc/dh/delivery.toml"), &env()) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.to_string(),
        }
    }

    const FULL: &str = r#"
[server]
listen = "0.0.0.0:9000"
docs = true
max_body_bytes = 4096
timestamp_tolerance_secs = 60
max_wait_secs = 30
state_dir = "state"
metrics = true
trusted_proxies = ["10.0.0.0/8"]

[docker]
compose = ["docker-compose"]
job_timeout_secs = 120
max_parallel_jobs = 2

[projects.billing]
secrets = ["env:BILLING_SECRET", "file:/etc/dh/next"]
containers = ["billing-*", "!billing-db"]
actions = ["pull", "build"]
compose_files = ["/srv/billing/**"]
compose_projects = ["billing"]
compose_model = "warn"
host_paths = ["/srv/billing/**", "/var/lib/billing"]
allow = ["docker_socket", "cap_add"]
model_images = ["reg.example.com/billing/*"]

[projects.shop]
secrets = ["env:SHOP_SECRET"]
containers = ["shop-web"]
actions = ["pull"]
model_images = ["reg.example.com/shop/*"]
compose_projects = ["shop", "shop-*"]
"#;

    fn name(n: &str) -> ContainerName {
        ContainerName::parse(n).unwrap()
    }

    #[test]
    fn a_full_policy_compiles_with_every_setting() {
        let loaded = parse_ok(FULL);
        let p = &loaded.policy;
        assert_eq!(p.server.listen, "0.0.0.0:9000".parse().unwrap());
        assert!(p.server.docs && p.server.metrics);
        assert_eq!(p.server.max_body_bytes, 4096);
        assert_eq!(p.server.timestamp_tolerance_secs, 60);
        assert_eq!(p.server.max_wait_secs, 30);
        assert_eq!(p.server.state_dir, PathBuf::from("/etc/dh/state"));
        assert_eq!(p.server.trusted_proxies.len(), 1);
        assert_eq!(
            p.docker.compose,
            ComposeTool::Command(vec!["docker-compose".into()])
        );
        assert_eq!(p.docker.job_timeout_secs, 120);
        assert_eq!(p.docker.max_parallel_jobs, 2);
        let billing = p.project("billing").unwrap();
        assert_eq!(billing.keys().len(), 2);
        assert_eq!(billing.actions, vec![Action::Pull, Action::Build]);
        assert_eq!(billing.compose_model, ModelMode::Warn);
        assert_eq!(
            billing.allow,
            BTreeSet::from([Allowance::DockerSocket, Allowance::CapAdd])
        );
        let own: &[PathBuf] = &[];
        assert!(billing.allows_host_path(Path::new("/srv/billing/data/x"), own));
        assert!(billing.allows_host_path(Path::new("/var/lib/billing/cache"), own));
        assert!(!billing.allows_host_path(Path::new("/var/lib/other"), own));
        // Two projects: the model is judged unless a project says otherwise.
        let shop = p.project("shop").unwrap();
        assert_eq!(shop.compose_model, ModelMode::Enforce);
        assert!(shop.allow.is_empty());
        assert!(shop.allows_host_path(Path::new("/srv/shop/x"), &[PathBuf::from("/srv/shop")]));
        assert!(!shop.allows_host_path(Path::new("/srv/shopping"), &[PathBuf::from("/srv/shop")]));
        let summary = p.summary().to_string();
        assert!(
            summary.contains("compose model warn; host paths /srv/billing/**, /var/lib/billing; allow docker_socket, cap_add"),
            "{summary}"
        );
        // Shop's host paths follow its compose files wherever they lie.
        let shown = loaded.warnings().to_string();
        assert_eq!(loaded.warnings.len(), 1, "{shown}");
        assert!(
            shown.contains("project `shop` has neither `compose_files` nor `host_paths`"),
            "{shown}"
        );
    }

    #[test]
    fn compose_model_settings_are_checked_with_their_lines() {
        let text = "[projects.a]\nsecrets = [\"env:SHOP_SECRET\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\ncompose_model = \"strict\"\nhost_paths = [\"relative/*\"]\nallow = [\"docker_socket\", \"root\"]\n";
        let err = parse_err(text);
        assert!(
            err.contains(":5: `compose_model` must be \"enforce\", \"warn\" or \"off\""),
            "{err}"
        );
        assert!(
            err.contains(":6: host path pattern `relative/*` must be absolute"),
            "{err}"
        );
        assert!(
            err.contains(":7: `allow` names `root`, which is none of docker_socket, privileged"),
            "{err}"
        );
        // One project alone: its model is not judged unless it asks.
        let single = parse_ok(
            "[projects.a]\nsecrets = [\"env:SHOP_SECRET\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n",
        );
        assert_eq!(
            single.policy.project("a").unwrap().compose_model,
            ModelMode::Off
        );
    }

    #[test]
    fn safe_deploy_settings_have_defaults_and_bounds() {
        let p = parse_ok(FULL).policy;
        assert_eq!(p.docker.stable_secs, 5, "the default");
        let shop = p.project("shop").unwrap();
        assert!(shop.rollback, "rollback is on unless turned off");
        // Without `images`, only the compose file's repository.
        assert!(shop.allows_image("reg.example.com/shop/web", Some("reg.example.com/shop/web")));
        assert!(!shop.allows_image("reg.example.com/other", Some("reg.example.com/shop/web")));
        assert!(!shop.allows_image("reg.example.com/shop/web", None));

        let text = FULL
            .replace("max_parallel_jobs = 2", "max_parallel_jobs = 2\nstable_secs = 0")
            .replace(
                r#"compose_projects = ["shop", "shop-*"]"#,
                "compose_projects = [\"shop\"]\nrollback = false\nimages = [\"reg.example.com/shop/*\"]",
            );
        let p = parse_ok(&text).policy;
        assert_eq!(p.docker.stable_secs, 0);
        let shop = p.project("shop").unwrap();
        assert!(!shop.rollback);
        assert!(shop.allows_image("reg.example.com/shop/web", None));
        assert!(
            !shop.allows_image("reg.example.com/shop/web/deeper", None),
            "`*` does not cross `/`"
        );
        assert!(!shop.allows_image(
            "reg.example.com/billing/web",
            Some("reg.example.com/billing/web")
        ));

        for (from, to, says) in [
            (
                "max_parallel_jobs = 2",
                "max_parallel_jobs = 2\nstable_secs = 3601",
                "`stable_secs` must be",
            ),
            (
                r#"compose_projects = ["shop", "shop-*"]"#,
                "rollback = \"yes\"",
                "`rollback` must be true or false",
            ),
            (
                r#"compose_projects = ["shop", "shop-*"]"#,
                "images = [\"app@sha256:x\"]",
                "without a digest",
            ),
            (
                r#"compose_projects = ["shop", "shop-*"]"#,
                "images = []",
                "`images`, when present",
            ),
        ] {
            let text = parse_err(&FULL.replace(from, to));
            assert!(text.contains(says), "{to}: {text}");
        }
    }

    #[test]
    fn compose_project_globs_bound_a_project() {
        let p = parse_ok(FULL).policy;
        let shop = p.project("shop").unwrap();
        assert!(shop.allows_compose_project("shop"));
        assert!(shop.allows_compose_project("shop-staging"));
        assert!(!shop.allows_compose_project("billing"));
        assert!(
            !p.project("billing")
                .unwrap()
                .allows_compose_project("anything")
        );
        let p = parse_ok(&FULL.replace("compose_projects = [\"billing\"]\n", "")).policy;
        assert!(
            p.project("billing")
                .unwrap()
                .allows_compose_project("anything"),
            "absent means any"
        );
        let text = parse_err(&FULL.replace(
            r#"compose_projects = ["shop", "shop-*"]"#,
            r#"compose_projects = []"#,
        ));
        assert!(text.contains("`compose_projects`, when present"), "{text}");
    }

    #[test]
    fn shared_hosts_are_warned_about_missing_boundaries_and_overlaps() {
        let text = r#"
[projects.billing]
secrets = ["env:BILLING_SECRET"]
containers = ["billing-*", "!billing-db"]
actions = ["pull"]
compose_projects = ["billing"]
host_paths = ["/srv/billing/**"]

[projects.web]
secrets = ["env:SHOP_SECRET"]
containers = ["*-web"]
actions = ["pull"]
model_images = ["reg.example.com/web/*"]

[projects.db]
secrets = ["env:OTHER_SECRET"]
containers = ["billing-db", "shop-db"]
actions = ["pull"]
compose_files = ["/srv/db/**"]
model_images = ["reg.example.com/db/*"]
"#;
        let loaded = parse_ok(text);
        let shown = loaded.warnings().to_string();
        assert!(
            shown.contains(":11: project `web` has neither `compose_files` nor `compose_projects`"),
            "{shown}"
        );
        assert!(
            shown.contains(":11: project `web` has neither `compose_files` nor `host_paths`"),
            "{shown}"
        );
        assert!(
            shown.contains(":4: project `billing` has no `model_images`"),
            "{shown}"
        );
        assert!(
            shown.contains("`billing` and `web` may both deploy")
                && shown.contains("e.g. `billing-"),
            "{shown}"
        );
        assert!(
            !shown.contains("`billing` and `db`"),
            "billing excludes billing-db: {shown}"
        );
        assert!(
            shown.contains(
                ":17: project `db` bounds its compose files but not its compose project names"
            ),
            "{shown}"
        );
        assert_eq!(loaded.warnings.len(), 5, "{shown}");
        let single = parse_ok(
            "[projects.a]\nsecrets = [\"env:SHOP_SECRET\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n",
        );
        assert!(
            single.warnings.is_empty(),
            "one project has no one to share with"
        );
    }

    #[test]
    fn defaults_fill_every_section_but_projects() {
        let loaded = parse_ok(
            "[projects.a]\nsecrets = [\"env:SHOP_SECRET\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n",
        );
        let p = &loaded.policy;
        assert_eq!(p.server, default_server(Path::new("/etc/dh")));
        assert_eq!(p.docker, default_docker());
        assert_eq!(p.server.state_dir, PathBuf::from("/etc/dh/delivery-state"));
    }

    #[test]
    fn compose_names_a_tool_or_an_argv() {
        let minimal = "[projects.a]\nsecrets = [\"env:SHOP_SECRET\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n";
        for (value, tool, first) in [
            ("\"auto\"", ComposeTool::Auto, vec!["docker", "compose"]),
            ("\"v1\"", ComposeTool::V1, vec!["docker-compose"]),
            ("\"v2\"", ComposeTool::V2, vec!["docker", "compose"]),
        ] {
            let text = format!("[docker]\ncompose = {value}\n\n{minimal}");
            let compose = parse_ok(&text).policy.docker.compose;
            assert_eq!(compose, tool);
            assert_eq!(compose.candidates()[0], first);
        }
        assert_eq!(ComposeTool::Auto.candidates().len(), 2, "v2, then v1");
        let err = parse_err(&format!("[docker]\ncompose = \"v3\"\n\n{minimal}"));
        assert!(
            err.contains(":2: `compose` must be \"auto\", \"v1\", \"v2\""),
            "{err}"
        );
    }

    #[test]
    fn delivery_state_dir_is_the_default_a_policy_can_override() {
        let mut e = env();
        e.vars
            .insert("DELIVERY_STATE_DIR", "/var/lib/delivery-hook");
        let minimal = "[projects.a]\nsecrets = [\"env:SHOP_SECRET\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n";
        let loaded = parse(minimal, Path::new("/etc/dh/delivery.toml"), &e).unwrap();
        assert_eq!(
            loaded.policy.server.state_dir,
            PathBuf::from("/var/lib/delivery-hook")
        );
        let own = format!("[server]\nstate_dir = \"/srv/state\"\n\n{minimal}");
        let loaded = parse(&own, Path::new("/etc/dh/delivery.toml"), &e).unwrap();
        assert_eq!(loaded.policy.server.state_dir, PathBuf::from("/srv/state"));
    }

    #[test]
    fn container_globs_with_exclusions() {
        let p = parse_ok(FULL).policy;
        let billing = p.project("billing").unwrap();
        assert!(p.allows_container(billing, &name("billing-web")));
        assert!(p.allows_container(billing, &name("billing-")));
        assert!(
            !p.allows_container(billing, &name("billing-db")),
            "! excludes"
        );
        assert!(!p.allows_container(billing, &name("billingweb")));
        assert!(!p.allows_container(billing, &name("shop-web")));
        let shop = p.project("shop").unwrap();
        assert!(p.allows_container(shop, &name("shop-web")));
        assert!(
            !p.allows_container(shop, &name("shop-web2")),
            "no implicit prefix match"
        );
    }

    #[test]
    fn candidates_are_the_projects_allowing_the_name() {
        let p = parse_ok(FULL).policy;
        let names = |c: &str| -> Vec<String> {
            p.candidates(&name(c))
                .iter()
                .map(|p| p.name.to_string())
                .collect()
        };
        assert_eq!(names("billing-web"), vec!["billing"]);
        assert_eq!(names("shop-web"), vec!["shop"]);
        assert!(
            names("billing-db").is_empty(),
            "an excluded name has no candidate"
        );
        assert!(names("other").is_empty());
    }

    #[test]
    fn compose_file_globs() {
        let p = parse_ok(FULL).policy;
        let billing = p.project("billing").unwrap();
        let ok = [
            PathBuf::from("/srv/billing/compose.yml"),
            PathBuf::from("/srv/billing/a/b.yml"),
        ];
        assert!(billing.allows_compose_files(&ok));
        let mixed = [ok[0].clone(), PathBuf::from("/srv/shop/compose.yml")];
        assert!(
            !billing.allows_compose_files(&mixed),
            "every file must match"
        );
        let shop = p.project("shop").unwrap();
        assert!(
            shop.allows_compose_files(&mixed),
            "no compose_files means any"
        );
    }

    #[test]
    fn every_path_compose_reads_is_judged() {
        let p = parse_ok(FULL).policy;
        let billing = p.project("billing").unwrap();
        let config = [PathBuf::from("/srv/billing/compose.yml")];
        let env = [PathBuf::from("/srv/billing/prod.env")];
        let dir = Path::new("/srv/billing");
        assert!(billing.allows_compose_paths(&config, &env, dir));
        assert!(billing.allows_compose_paths(&config, &[], Path::new("/srv/billing/env")));
        let foreign_env = [PathBuf::from("/srv/shop/.env")];
        assert!(
            !billing.allows_compose_paths(&config, &foreign_env, dir),
            "an env file outside compose_files"
        );
        assert!(
            !billing.allows_compose_paths(&config, &env, Path::new("/srv")),
            "a working directory above the compose file"
        );
        assert!(
            !billing.allows_compose_paths(&config, &env, Path::new("/srv/billing2")),
            "a sibling that shares a prefix is not below"
        );
        let shop = p.project("shop").unwrap();
        assert!(shop.allows_compose_paths(&config, &foreign_env, Path::new("/")));
    }

    #[test]
    fn file_secrets_are_trimmed_and_rotation_keys_load() {
        let p = parse_ok(FULL).policy;
        let billing = p.project("billing").unwrap();
        let next = crate::auth::signature::SigningKey::new(b"billing-next-0123456789");
        let sig = next.sign(b"x", "1");
        assert!(crate::auth::signature::verify_any(billing.keys(), b"x", "1", &sig).is_some());
        let crlf = parse_ok(
            "[projects.a]\nsecrets = [\"file:/etc/dh/crlf\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n",
        );
        let key = crate::auth::signature::SigningKey::new(b"crlf-secret-0123456789");
        let sig = key.sign(b"x", "1");
        let a = crlf.policy.project("a").unwrap();
        assert!(crate::auth::signature::verify_any(a.keys(), b"x", "1", &sig).is_some());
    }

    #[test]
    fn a_secret_of_another_project_never_authorises() {
        let p = parse_ok(FULL).policy;
        let shop_key = crate::auth::signature::SigningKey::new(b"shop-secret-0123456789ab");
        let sig = shop_key.sign(b"x", "1");
        let billing = p.project("billing").unwrap();
        assert_eq!(
            crate::auth::signature::verify_any(billing.keys(), b"x", "1", &sig),
            None
        );
    }

    #[test]
    fn literal_secrets_warn_with_their_line() {
        let loaded = parse_ok(
            "[projects.a]\ncontainers = [\"*\"]\nsecrets = [\"literal-secret-0123456789\"]\nactions = [\"pull\"]\n",
        );
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(loaded.warnings[0].line, Some(3));
        let shown = loaded.warnings().to_string();
        assert!(
            shown.starts_with("warning: /etc/dh/delivery.toml:3: "),
            "{shown}"
        );
        assert!(
            !shown.contains("literal-secret"),
            "the warning never shows the secret"
        );
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let text = r#"[server]
listen = "nowhere"
docs = "yes"
max_body_bytes = 10
colour = 1

[docker]
compose = "podman"
max_parallel_jobs = 0
extra = true

[projects.billing]
secrets = ["env:MISSING", "file:/nope", "env:SHORT"]
containers = ["/billing", "!", "[z-a]"]
actions = ["pull", "deploy", "pull"]
compose_files = ["relative/*.yml"]
unknown = 1

[projects."bad name"]
secrets = ["env:SHOP_SECRET"]
containers = ["!x"]
actions = []

[projects.dup]
secrets = ["env:DUP", "env:BILLING_SECRET"]
containers = ["*"]
actions = ["pull"]

[projects.dup2]
secrets = ["env:DUP"]
containers = ["*"]
actions = ["build"]

[projects.empty]

[surprise]
"#;
        let out = parse_err(text);
        let expect = [
            ":2: `listen` must be an IP:port address",
            ":3: `docs` must be true or false",
            ":4: `max_body_bytes` must be an integer from 64 to",
            ":5: unknown key `colour` in [server]",
            ":8: `compose` must be \"auto\", \"v1\", \"v2\" or an argv",
            ":9: `max_parallel_jobs` must be an integer from 1 to 256",
            ":10: unknown key `extra` in [docker]",
            ":13: environment variable `MISSING` is not set",
            ":13: cannot read secret file /nope",
            ":13: the secret from env:SHORT is shorter than 16 bytes",
            ":14: container pattern `/billing` starts with '/'",
            ":14: an empty container pattern matches nothing",
            ":14: container pattern `[z-a]`",
            ":15: unknown action `deploy`",
            ":15: action `pull` is listed twice",
            ":16: compose file pattern `relative/*.yml` must be absolute",
            ":17: unknown key `unknown` in [projects.billing]",
            ":19: project name `bad name` may contain only",
            ":21: `containers` needs at least one pattern without '!'",
            ":22: `actions` must list pull, build or both",
            ":25: project `dup` lists the same secret twice",
            ":30: the secret from env:DUP is also used by project `dup`",
            "[projects.empty] has no `secrets`",
            "[projects.empty] has no `containers`",
            "[projects.empty] has no `actions`",
            ":36: unknown section `surprise`",
        ];
        for e in expect {
            assert!(out.contains(e), "missing {e:?} in:\n{out}");
        }
        assert!(
            !out.contains("billing-secret"),
            "errors never show a secret:\n{out}"
        );
        for line in out.lines() {
            assert!(line.starts_with("error: /etc/dh/delivery.toml"), "{line}");
        }
    }

    #[test]
    fn a_table_of_the_wrong_type_hides_no_other_error() {
        let text = r#"server = 1
docker = "v2"

[projects.a]
secrets = "env:SHOP_SECRET"
containers = ["a-*"]
actions = ["pull"]
oidc = [{ issuer = 7, audience = ["x"] }, "rule"]
rollback = 1979-05-27

[projects.b]
secrets = ["env:BILLING_SECRET"]
containers = [1, "b-*"]
actions = "pull"
images = [true]

[projects.c]
secrets = ["env:DUP"]
containers = ["c-*"]
actions = ["pull"]
oidc = [{ issuer = "https://token.actions.githubusercontent.com", audience = "c", claims = { repository = { x = 1 }, ref = [] }, colour = 2 }]
"#;
        let out = parse_err(text);
        let expect = [
            ":1: [server] must be a table, not an integer",
            ":2: [docker] must be a table, not a string",
            ":5: `secrets` must be an array of strings",
            ":8: `issuer` must be a string",
            ":8: `audience` must be a string",
            ":8: [[projects.a.oidc]] must be a table, not a string",
            ":9: `rollback` must be true or false",
            ":13: `containers` must contain only strings",
            ":14: `actions` must be an array of strings",
            ":15: `images` must contain only strings",
            ":21: claim `repository` must be a string, a number, a boolean, or a list of them",
            ":21: claim `ref` lists no pattern",
            ":21: unknown key `colour` in [[projects.c.oidc]]",
        ];
        for e in expect {
            assert!(out.contains(e), "missing {e:?} in:\n{out}");
        }
    }

    #[test]
    fn notify_targets_load_and_every_mistake_is_reported_with_its_line() {
        let good = r#"[notify.smtp]
host = "smtp.example.com"
from = "delivery-hook <dh@example.com>"
username_env = "SMTP_USER"
password_env = "SMTP_PASSWORD"

[projects.shop]
secrets = ["env:SHOP_SECRET"]
containers = ["shop-*"]
actions = ["pull"]

[[projects.shop.notify]]
kind = "webhook"
url_env = "HOOK_URL"
secret_env = "HOOK_KEY"
events = ["failed", "rolled_back"]

[[projects.shop.notify]]
kind = "email"
to = ["ops@example.com"]
"#;
        let loaded = parse_ok(good);
        let shop = loaded.policy.project("shop").unwrap();
        assert_eq!(shop.notify.len(), 2);
        assert_eq!(
            shop.notify[0].events,
            [
                crate::policy::Outcome::Failed,
                crate::policy::Outcome::RolledBack
            ]
        );
        assert_eq!(shop.notify[1].events, crate::policy::EVENTS);
        let smtp = loaded.policy.smtp.as_ref().unwrap();
        assert_eq!((smtp.port, smtp.tls), (587, SmtpTls::StartTls));
        let withheld = loaded.policy.secret_env_names();
        for name in ["HOOK_URL", "HOOK_KEY", "SMTP_USER", "SMTP_PASSWORD"] {
            assert!(withheld.iter().any(|n| n == name), "{name} in {withheld:?}");
        }
        let summary = loaded.policy.summary().to_string();
        assert!(
            summary.contains("notify 1: webhook (URL from $HOOK_URL); on failed, rolled_back"),
            "{summary}"
        );
        for secret in ["t0ken", "pa55word", "MfKQ9r8"] {
            assert!(!summary.contains(secret), "{summary}");
            assert!(!format!("{:?}", loaded.policy.project("shop")).contains(secret));
        }

        let bad = r#"[projects.shop]
secrets = ["env:SHOP_SECRET"]
containers = ["shop-*"]
actions = ["pull"]

[[projects.shop.notify]]
kind = "pager"

[[projects.shop.notify]]
kind = "webhook"
url_env = "MISSING_URL"
secret_env = "HOOK_KEY"

[[projects.shop.notify]]
kind = "slack"
url_env = "FTP_URL"
to = ["ops@example.com"]

[[projects.shop.notify]]
kind = "webhook"
url_env = "HOOK_URL"
secret_env = "SHOP_SECRET"
events = ["done"]

[[projects.shop.notify]]
kind = "email"
to = ["not an address"]
colour = "red"
"#;
        let out = parse_err(bad);
        for expected in [
            ":7: notify kind `pager` is none of webhook, slack, email",
            ":11: environment variable `MISSING_URL` is not set",
            ":16: `FTP_URL` holds no http or https URL",
            ":17: `to` is for email targets",
            ":22: `secret_env` must hold a Standard Webhooks key",
            ":23: `events` names `done`, which is none of succeeded, failed, timed_out, interrupted, rolled_back",
            ":27: `not an address` is not a mail address",
            ":27: an email target needs [notify.smtp]",
            ":28: unknown key `colour` in [[projects.shop.notify]]",
        ] {
            assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
        }
        assert!(!out.contains("hooks.example"), "no URL in an error:\n{out}");

        let plain = good.replace("HOOK_URL", "PLAIN_URL");
        let warnings: Vec<String> = parse_ok(&plain)
            .warnings
            .iter()
            .map(|d| d.message.clone())
            .collect();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("`PLAIN_URL` holds a plain http URL")),
            "{warnings:?}"
        );
    }

    #[test]
    fn syntax_errors_carry_lines_too() {
        let out = parse_err("[projects.a]\nsecrets = [\"env:SHOP_SECRET\"\ncontainers = 1\n");
        assert!(out.contains("delivery.toml:"), "{out}");
        assert!(out.contains("TOML syntax"), "{out}");
    }

    #[test]
    fn a_policy_without_projects_is_refused() {
        let out = parse_err("[server]\ndocs = true\n");
        assert!(out.contains("no [projects.<name>] section"), "{out}");
        let out = parse_err("[projects]\n");
        assert!(out.contains("[projects] defines no project"), "{out}");
    }

    #[test]
    fn delivery_listen_overrides_the_file() {
        let mut e = env();
        e.vars.insert("DELIVERY_LISTEN", "127.0.0.1:9999");
        let loaded = parse(FULL, Path::new("/etc/dh/delivery.toml"), &e).unwrap();
        assert_eq!(
            loaded.policy.server.listen,
            "127.0.0.1:9999".parse().unwrap()
        );
        e.vars.insert("DELIVERY_LISTEN", "bogus");
        let err = parse(FULL, Path::new("/etc/dh/delivery.toml"), &e).unwrap_err();
        assert!(err.to_string().contains("DELIVERY_LISTEN"));
    }

    #[test]
    fn summary_lists_projects_but_never_secrets() {
        let p = parse_ok(FULL).policy;
        let s = p.summary().to_string();
        assert!(s.contains("billing: containers billing-*, !billing-db; actions pull, build; secrets 2 (env:BILLING_SECRET, file:/etc/dh/next); compose files /srv/billing/**"), "{s}");
        assert!(s.contains("projects: 2"));
        assert!(!s.contains("billing-secret-0123456789"));
        assert!(!s.contains("billing-next"));
    }

    #[test]
    fn seed_mode_is_one_project_for_everything() {
        let p = Policy::seed("your-very-secret-key", 8000, true, PathBuf::from("s")).unwrap();
        assert_eq!(p.server.listen, "0.0.0.0:8000".parse().unwrap());
        assert!(p.server.docs);
        let default = p.project("default").unwrap();
        assert!(p.allows_container(default, &name("anything")));
        assert!(default.allows_action(Action::Build));
        assert_eq!(p.candidates(&name("x")).len(), 1);
        assert!(Policy::seed("short", 8000, false, PathBuf::from("s")).is_err());
    }

    #[test]
    fn oidc_rules_load_and_a_project_with_them_needs_no_secret() {
        let loaded = parse_ok(
            r#"
[projects.web]
containers = ["web-*"]
actions = ["pull"]

[[projects.web.oidc]]
issuer = "https://token.actions.githubusercontent.com"
audience = "https://deploy.example.com"
claims = { repository = "org/web", ref = ["refs/heads/main", "refs/tags/v*"], run_attempt = 1 }

[[projects.web.oidc]]
issuer = "http://127.0.0.1:9999"
audience = "local"
jwks_file = "jwks.json"
max_token_age_secs = 60
"#,
        );
        assert!(loaded.warnings.is_empty(), "{}", loaded.warnings());
        let web = loaded.policy.project("web").unwrap();
        assert!(web.keys().is_empty());
        assert_eq!(web.oidc.len(), 2);
        assert_eq!(web.oidc[0].max_token_age_secs, 600);
        let claim = |name: &str| {
            let c = web.oidc[0].claims.iter().find(|c| c.name == name).unwrap();
            c.patterns.clone()
        };
        assert_eq!(claim("ref"), ["refs/heads/main", "refs/tags/v*"]);
        assert_eq!(claim("run_attempt"), ["1"]);
        assert!(matches!(
            loaded
                .policy
                .key_source("https://token.actions.githubusercontent.com"),
            Some(KeySource::Discovery)
        ));
        assert!(matches!(
            loaded.policy.key_source("http://127.0.0.1:9999"),
            Some(KeySource::File(path, set)) if path == Path::new("/etc/dh/jwks.json") && set.get("k1").is_some()
        ));
        let shown = loaded.policy.summary().to_string();
        assert!(
            shown.contains("oidc: issuer https://token.actions.githubusercontent.com, audience https://deploy.example.com, ref = refs/heads/main | refs/tags/v*, repository = org/web, run_attempt = 1, at most 600 s old"),
            "{shown}"
        );
    }

    #[test]
    fn oidc_rule_errors_are_reported_with_their_lines() {
        let errors = parse_err(
            r#"
[projects.web]
containers = ["web-*"]
actions = ["pull"]

[[projects.web.oidc]]
issuer = "http://issuer.example"
audience = "a"

[[projects.web.oidc]]
issuer = "https://issuer.example"
claims = { repository = [], ref = { x = 1 }, sub = "[" }
max_token_age_secs = 0
colour = "blue"

[[projects.web.oidc]]
issuer = "https://other.example"
audience = "a"
jwks_file = "/etc/dh/empty.json"

[[projects.web.oidc]]
issuer = "https://third.example"
audience = "a"
jwks_file = "/etc/dh/missing.json"

[projects.none]
containers = ["x"]
actions = ["pull"]
"#,
        );
        for expected in [
            "delivery.toml:7: `issuer`: `http://issuer.example` must be an https URL (http only on a loopback address)",
            "delivery.toml:10: [[projects.web.oidc]] has no `audience`",
            "delivery.toml:12: claim `repository` lists no pattern",
            "delivery.toml:12: claim `ref` must be a string, a number, a boolean, or a list of them",
            "delivery.toml:12: claim `sub` pattern `[`: unclosed character class",
            "delivery.toml:13: `max_token_age_secs` must be an integer from 1 to 86400",
            "delivery.toml:14: unknown key `colour` in [[projects.web.oidc]]",
            "delivery.toml:19: jwks_file /etc/dh/empty.json: the key set holds no RS256 or ES256 signing key with a kid",
            "delivery.toml:24: jwks_file /etc/dh/missing.json: cannot read it",
            "[projects.none] has no `secrets` or `oidc`",
        ] {
            assert!(
                errors.contains(expected),
                "missing {expected:?} in:\n{errors}"
            );
        }
    }

    #[test]
    fn one_issuer_has_one_key_source_and_multi_tenant_rules_are_warned_about() {
        let errors = parse_err(
            r#"
[projects.web]
containers = ["web-*"]
actions = ["pull"]

[[projects.web.oidc]]
issuer = "http://127.0.0.1:9999"
audience = "a"

[[projects.web.oidc]]
issuer = "http://127.0.0.1:9999"
audience = "b"
jwks_file = "/etc/dh/jwks.json"
"#,
        );
        assert!(
            errors.contains("delivery.toml:11: the issuer http://127.0.0.1:9999 is given different jwks_file settings"),
            "{errors}"
        );
        let loaded = parse_ok(
            r#"
[projects.web]
containers = ["web-*"]
actions = ["pull"]

[[projects.web.oidc]]
issuer = "https://token.actions.githubusercontent.com"
audience = "a"
claims = { ref = "refs/heads/main" }

[[projects.web.oidc]]
issuer = "https://gitlab.com"
audience = "a"
claims = { project_path = "group/web" }

[[projects.web.oidc]]
issuer = "https://gitlab.com"
audience = "b"
"#,
        );
        let shown = loaded.warnings().to_string();
        assert_eq!(loaded.warnings.len(), 2, "{shown}");
        assert!(shown.contains("delivery.toml:7: [[projects.web.oidc]] names neither `repository` nor `repository_owner_id`"), "{shown}");
        assert!(shown.contains("delivery.toml:17: [[projects.web.oidc]] names neither `project_path` nor `project_id`"), "{shown}");
    }
}
