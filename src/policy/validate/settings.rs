//! `[server]`, `[docker]` and `[notify.smtp]`: the gateway's own settings.

use std::ops::Range;

use toml::Spanned;

use super::{At, Reader};
use crate::client_addr::Cidr;
use crate::names::MAX_WAIT_SECS;
use crate::policy::raw::{ComposeValue, Field, List};
use crate::policy::{ComposeTool, Hidden, ServerSettings, SmtpSettings, SmtpTls, raw};

impl Reader<'_> {
    pub(super) fn server_section(&mut self, server: raw::Server) {
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
            release_history,
            public_url,
            ui,
            unknown,
        } = server;
        self.unknown_keys(&unknown, "[server]");
        if let Some(field) = public_url {
            self.public_url(field);
        }
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
        if let Some(v) = state_dir {
            self.state_dir(v);
        }
        if let Some(v) = client_ip_header {
            self.client_ip_header(v);
        }
        if let Some(v) = trusted_proxies {
            self.trusted_proxies(v);
        }
        let integers = [
            ("max_body_bytes", max_body_bytes),
            ("timestamp_tolerance_secs", timestamp_tolerance_secs),
            ("max_wait_secs", max_wait_secs),
            ("max_connections", max_connections),
            ("max_connections_per_address", max_connections_per_address),
            ("max_waiting_per_project", max_waiting_per_project),
            ("request_timeout_secs", request_timeout_secs),
            ("replay_cache_entries", replay_cache_entries),
            ("replay_entries_per_project", replay_entries_per_project),
            ("auth_failure_limit", auth_failure_limit),
            ("auth_failure_window_secs", auth_failure_window_secs),
            ("job_history_days", job_history_days),
            ("job_history_max", job_history_max),
            ("release_history", release_history),
        ];
        for (key, field) in integers {
            let (range, set) = server_integer(key);
            if let Some(n) = field.and_then(|v| self.integer(key, v, range)) {
                set(&mut self.server, n);
            }
        }
        if let Some(ui) = ui.and_then(|v| self.table(v, "[server.ui]")) {
            self.ui_section(ui);
        }
    }

    fn state_dir(&mut self, field: At<String>) {
        if let Some((dir, span)) = self.string("state_dir", field) {
            if dir.is_empty() {
                self.error(span, "`state_dir` must not be empty");
            } else {
                self.server.state_dir = self.base.join(dir);
            }
        }
    }

    fn client_ip_header(&mut self, field: At<String>) {
        if let Some((h, span)) = self.string("client_ip_header", field) {
            let valid = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if valid {
                self.server.client_ip_header = h.to_ascii_lowercase();
            } else {
                self.error(span, "`client_ip_header` must be a header name");
            }
        }
    }

    fn trusted_proxies(&mut self, field: At<List<String>>) {
        if let Some((items, _)) = self.strings("trusted_proxies", field) {
            let mut proxies = Vec::new();
            for (text, span) in items {
                match text.parse::<Cidr>() {
                    Ok(c) => proxies.push(c),
                    Err(e) => self.error(span, e.to_string()),
                }
            }
            self.server.trusted_proxies = proxies;
        }
    }

    pub(super) fn docker_section(&mut self, docker: raw::Docker) {
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
    pub(super) fn compose_tool(&mut self, field: At<ComposeValue>) {
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

    /// `[notify.smtp]`.
    pub(super) fn smtp_section(&mut self, smtp: raw::Smtp) {
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
        let host = self.smtp_host(host);
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
        let from = self.smtp_from(from);
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

    fn smtp_host(&mut self, field: Option<At<String>>) -> Option<String> {
        match field.and_then(|v| self.string("host", v)) {
            Some((host, span)) if host.is_empty() || host.contains(char::is_whitespace) => {
                self.error(span, "`host` must be a host name or address");
                None
            }
            Some((host, _)) => Some(host),
            None => {
                self.unplaced("[notify.smtp] has no `host`");
                None
            }
        }
    }

    fn smtp_from(&mut self, field: Option<At<String>>) -> Option<String> {
        match field.and_then(|v| self.string("from", v)) {
            Some((from, span)) => match from.parse::<lettre::message::Mailbox>() {
                Ok(_) => Some(from),
                Err(_) => {
                    self.error(span, format!("`from` `{from}` is not a mail address"));
                    None
                }
            },
            None => {
                self.unplaced("[notify.smtp] has no `from`");
                None
            }
        }
    }

    /// The variable `field` names, and its value.
    pub(super) fn env_value(
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
}

/// Where an integer of `[server]` goes once judged.
type Setter = fn(&mut ServerSettings, u64);

/// An integer key of `[server]`: the range it accepts, and where it goes.
fn server_integer(key: &str) -> (Range<u64>, Setter) {
    match key {
        "max_body_bytes" => (64..(16 << 20) + 1, |s, n| s.max_body_bytes = n as usize),
        "timestamp_tolerance_secs" => (1..86_401, |s, n| s.timestamp_tolerance_secs = n),
        "max_wait_secs" => (0..MAX_WAIT_SECS + 1, |s, n| s.max_wait_secs = n),
        "max_connections" => (1..1_000_001, |s, n| s.max_connections = n as usize),
        "max_connections_per_address" => (1..1_000_001, |s, n| {
            s.max_connections_per_address = n as usize
        }),
        "max_waiting_per_project" => (1..1_000_001, |s, n| s.max_waiting_per_project = n as usize),
        "request_timeout_secs" => (1..3601, |s, n| s.request_timeout_secs = n),
        "replay_cache_entries" => (16..100_000_001, |s, n| s.replay_cache_entries = n as usize),
        "replay_entries_per_project" => (1..100_000_001, |s, n| {
            s.replay_entries_per_project = n as usize
        }),
        "auth_failure_limit" => (1..1_000_001, |s, n| s.auth_failure_limit = n as u32),
        "auth_failure_window_secs" => (1..86_401, |s, n| s.auth_failure_window_secs = n),
        "job_history_days" => (1..36_501, |s, n| s.job_history_days = n),
        "job_history_max" => (1..1_000_000_001, |s, n| s.job_history_max = n),
        "release_history" => (1..10_001, |s, n| s.release_history = n),
        other => unreachable!("`{other}` is not an integer of [server]"),
    }
}
