//! `[server]`'s `public_url` and `[server.ui]`: the web page's settings and
//! its viewers.

use std::collections::HashSet;

use super::{At, Reader};
use crate::policy::raw::{self, Field, List};
use crate::policy::{Hidden, Viewer};

/// The shortest viewer token accepted, in bytes.
const MIN_TOKEN_BYTES: usize = 16;
/// The longest `public_url`.
const MAX_URL_LEN: usize = 2048;

impl Reader<'_> {
    /// `public_url`: an absolute http(s) URL without query or fragment,
    /// kept without its trailing `/`.
    pub(super) fn public_url(&mut self, field: At<String>) {
        let Some((url, span)) = self.string("public_url", field) else {
            return;
        };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        let valid = url.len() <= MAX_URL_LEN
            && rest.is_some_and(|r| {
                !r.is_empty()
                    && !r.starts_with('/')
                    && !r.contains(['?', '#', '"', '<', '>', '\\'])
                    && !r.chars().any(|c| c.is_whitespace() || c.is_control())
            });
        if valid {
            self.server.public_url = Some(url.trim_end_matches('/').to_owned());
        } else {
            self.error(
                span,
                "`public_url` must be an http:// or https:// URL such as https://deploy.example.com, without a query",
            );
        }
    }

    /// `[server.ui]`.
    pub(super) fn ui_section(&mut self, ui: raw::Ui) {
        let raw::Ui {
            enabled,
            insecure_cookies,
            viewers,
            unknown,
        } = ui;
        self.unknown_keys(&unknown, "[server.ui]");
        if let Some(b) = enabled.and_then(|v| self.boolean("enabled", v)) {
            self.server.ui.enabled = b;
        }
        if let Some(field) = insecure_cookies {
            let span = field.span();
            if let Some(b) = self.boolean("insecure_cookies", field) {
                self.server.ui.insecure_cookies = b;
                if b && !self.server.listen.ip().is_loopback() {
                    self.error(
                        span,
                        "`insecure_cookies` sends session cookies without `Secure`: only on a loopback `listen`",
                    );
                }
            }
        }
        if let Some(viewers) = viewers.and_then(|v| self.value("viewers", v, "an array of tables"))
        {
            self.viewers(viewers);
        }
        if self.server.ui.enabled && self.server.ui.viewers.is_empty() {
            self.unplaced(
                "[server.ui] is enabled but has no [[server.ui.viewers]]: nobody could sign in",
            );
        }
    }

    fn viewers(&mut self, viewers: List<raw::Viewer>) {
        let mut names = HashSet::new();
        let mut tokens = HashSet::new();
        for item in viewers {
            let span = item.span();
            let Field::Value(viewer) = item.into_inner() else {
                self.error(span, "each of `viewers` must be a table");
                continue;
            };
            let Some(viewer) = self.viewer(viewer, span.clone()) else {
                continue;
            };
            if !names.insert(viewer.name.clone()) {
                self.error(
                    span.clone(),
                    format!("viewer `{}` is named twice", viewer.name),
                );
            } else if !tokens.insert(viewer.token.0.clone()) {
                self.error(
                    span,
                    format!("viewer `{}` has another viewer's token", viewer.name),
                );
            } else {
                self.server.ui.viewers.push(viewer);
            }
        }
    }

    fn viewer(&mut self, viewer: raw::Viewer, span: std::ops::Range<usize>) -> Option<Viewer> {
        let raw::Viewer {
            name,
            token_env,
            projects,
            unknown,
        } = viewer;
        self.unknown_keys(&unknown, "[[server.ui.viewers]]");
        let name = match name.and_then(|v| self.string("name", v)) {
            Some((name, span)) if crate::names::ProjectName::parse(&name).is_err() => {
                self.error(span, "a viewer's `name` must be a name like a project's");
                None
            }
            Some((name, _)) => Some(name),
            None => {
                self.error(span.clone(), "a viewer needs a `name`");
                None
            }
        };
        let token = match token_env.and_then(|v| self.env_value("token_env", v)) {
            Some((var, token, span)) if token.len() < MIN_TOKEN_BYTES => {
                self.error(
                    span,
                    format!("the token in `{var}` is shorter than {MIN_TOKEN_BYTES} bytes"),
                );
                None
            }
            Some((_, token, _)) => Some(token),
            None => {
                self.error(span.clone(), "a viewer needs a `token_env`");
                None
            }
        };
        let projects = match projects {
            Some(field) => self.glob_list(
                "projects",
                "project",
                field,
                crate::policy::GlobSyntax::ContainerName,
                |_| None,
            ),
            None => {
                self.error(span, "a viewer needs `projects`, globs on project names");
                None
            }
        };
        Some(Viewer {
            name: name?,
            token: Hidden(token?),
            projects: projects?,
        })
    }
}
