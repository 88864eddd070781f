//! A `[projects.<name>]` table: its keys, what it may deploy, and how its
//! compose files are judged.

use std::collections::BTreeSet;
use std::ops::Range;

use toml::Spanned;

use super::{At, MAX_PATTERN_LEN, Reader};
use crate::auth::signature::MIN_SECRET_LEN;
use crate::names::{Action, ProjectName};
use crate::policy::raw::{Field, List};
use crate::policy::{Allowance, ModelMode, ProjectSpec, SecretSource, raw};

impl Reader<'_> {
    pub(super) fn project(
        &mut self,
        name: Spanned<String>,
        field: At<raw::Project>,
    ) -> Option<ProjectSpec> {
        let section = format!("[projects.{}]", name.get_ref());
        let project_name = self.project_name(&name);
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
        let required = [
            // A project whose CI presents tokens needs no secret.
            (secrets.is_none() && oidc.is_none(), "secrets` or `oidc"),
            // A project that updates only Swarm services names no containers.
            (!has_containers && services.is_none(), "containers"),
            (!has_actions, "actions"),
        ];
        for (_, what) in required.into_iter().filter(|(absent, _)| *absent) {
            self.error(span.clone(), format!("{section} has no `{what}`"));
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

    /// A `[projects.<name>]` table's name.
    fn project_name(&mut self, name: &Spanned<String>) -> Option<ProjectName> {
        ProjectName::parse(name.get_ref())
            .map_err(|e| {
                let message = format!("project name `{}` {e}", name.get_ref());
                self.error(name.span(), message);
            })
            .ok()
    }

    /// `compose_model`: `"enforce"`, `"warn"` or `"off"`.
    pub(super) fn model_mode(&mut self, field: At<String>) -> Option<Option<ModelMode>> {
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
    pub(super) fn host_path_patterns(
        &mut self,
        field: At<List<String>>,
    ) -> Option<Option<Vec<String>>> {
        self.glob_list(
            "host_paths",
            "host path",
            field,
            crate::policy::GlobSyntax::Path,
            |pattern| {
                (!pattern.starts_with('/'))
                    .then(|| format!("host path pattern `{pattern}` must be absolute"))
            },
        )
        .map(Some)
    }

    /// `allow`: names of what compose may do beyond the project's paths.
    pub(super) fn allowances(&mut self, field: At<List<String>>) -> Option<BTreeSet<Allowance>> {
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
    pub(super) fn network_patterns(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
        self.glob_list(
            "networks",
            "network",
            field,
            crate::policy::GlobSyntax::ContainerName,
            |_| None,
        )
    }

    /// `model_images`: globs over the image repositories a compose model
    /// may name.
    pub(super) fn model_image_patterns(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
        self.glob_list(
            "model_images",
            "image repository",
            field,
            crate::policy::GlobSyntax::Path,
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
    pub(super) fn security_opts(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
        let (items, _) = self.strings("security_opts", field)?;
        let mut ok = true;
        let mut opts = Vec::with_capacity(items.len());
        for (text, span) in items {
            match crate::policy::SecurityOpt::parse(&text) {
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

    pub(super) fn service_patterns(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
        self.glob_list(
            "services",
            "Swarm service",
            field,
            crate::policy::GlobSyntax::ContainerName,
            |pattern| {
                pattern.starts_with('!').then(|| {
                    format!("service pattern `{pattern}`: `services` has no exclusions; list the services allowed")
                })
            },
        )
    }

    pub(super) fn image_patterns(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
        self.glob_list("images", "image repository", field, crate::policy::GlobSyntax::Path, |pattern| {
            pattern.contains('@').then(|| {
                format!("image pattern `{pattern}` must name repositories, without a digest: the digest is the caller's")
            })
        })
    }

    pub(super) fn compose_project_patterns(
        &mut self,
        field: At<List<String>>,
    ) -> Option<Vec<String>> {
        self.glob_list(
            "compose_projects",
            "compose project",
            field,
            crate::policy::GlobSyntax::ContainerName,
            |_| None,
        )
    }

    pub(super) fn secrets(
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

    pub(super) fn secret(
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

    pub(super) fn container_patterns(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
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
                crate::policy::glob(body, crate::policy::GlobSyntax::ContainerName)
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

    pub(super) fn compose_file_patterns(&mut self, field: At<List<String>>) -> Option<Vec<String>> {
        self.glob_list("compose_files", "compose file", field, crate::policy::GlobSyntax::Path, |pattern| {
            (!pattern.starts_with('/')).then(|| {
                format!("compose file pattern `{pattern}` must be absolute: compose records absolute paths")
            })
        })
    }

    pub(super) fn actions(&mut self, field: At<List<String>>) -> Option<Vec<Action>> {
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
