//! Validating `delivery.toml`: its values judged, every problem reported
//! with its line, and what passes compiled into a `Policy`.
//!
//! The file's shape is read by serde into the types of `raw.rs`, which keep
//! every value's position and hold a value of the wrong type or an unknown
//! key instead of stopping at it. This module reads the document and the
//! shared value checks; each section has its own file (`settings`,
//! `project`, `oidc`, `notify`), and `warnings` reads the projects
//! together for what a shared host lacks.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::DeTable;

use super::raw::{self, Field, List};
use super::{
    ComposeTool, DockerSettings, KeySource, Origin, Policy, ProjectSpec, ServerSettings,
    SmtpSettings,
};

mod notify;
mod oidc;
mod project;
mod settings;
mod ui;
mod warnings;

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
        release_history: 20,
        public_url: None,
        ui: Default::default(),
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

/// A value with its position.
type At<T> = Spanned<Field<T>>;

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

    /// An error of the file as a whole, with no line to point at.
    fn unplaced(&mut self, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            line: None,
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
            self.unplaced("no [projects.<name>] section: nobody could deploy anything");
        }
        if let Some(listen) = self.env.var("DELIVERY_LISTEN") {
            match listen.parse() {
                Ok(addr) => self.server.listen = addr,
                Err(_) => self.unplaced(format!(
                    "DELIVERY_LISTEN=`{listen}` is not an IP:port address"
                )),
            }
            if self.server.ui.insecure_cookies && !self.server.listen.ip().is_loopback() {
                self.unplaced(format!(
                    "DELIVERY_LISTEN=`{listen}` is not loopback, and [server.ui] sets `insecure_cookies`"
                ));
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

    /// A non-empty list of globs under `key`, each bounded, valid, and
    /// passing `check`; every bad one is reported.
    fn glob_list(
        &mut self,
        key: &str,
        what: &str,
        field: At<List<String>>,
        syntax: super::GlobSyntax,
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
                    super::glob(pattern, syntax)
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
}

#[cfg(test)]
mod tests;
