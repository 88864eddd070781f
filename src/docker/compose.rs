//! What to run: a compose service identified by its container's labels, and
//! the argv for each step.
//!
//! Label values come from the engine, and anyone who can start a container
//! can write them, so each is validated before it becomes an argument: names
//! against compose's own rules, paths as absolute, normalised and free of
//! control characters. Arguments are passed as `--flag=value` and the service
//! after `--`, so no value can be read as an option.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::names::{ComposeProjectName, ServiceName};

pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
pub const LABEL_WORKING_DIR: &str = "com.docker.compose.project.working_dir";
pub const LABEL_CONFIG_FILES: &str = "com.docker.compose.project.config_files";
pub const LABEL_ENV_FILE: &str = "com.docker.compose.project.environment_file";
pub const LABEL_ONEOFF: &str = "com.docker.compose.oneoff";

/// More files than any real project uses; a bound on label parsing.
const MAX_FILES: usize = 32;
const MAX_PATH_LEN: usize = 4096;

/// Why a container cannot be deployed (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the container was not created by docker compose (it has no {LABEL_PROJECT} label)")]
    NotCompose,
    #[error("the container lacks the compose label {0}; recreate it with docker compose")]
    MissingLabel(&'static str),
    #[error("the container's label {label} is not acceptable: {reason}")]
    InvalidLabel { label: &'static str, reason: String },
    #[error(
        "{} is not visible inside the gateway; mount it at the same absolute path as on the host",
        .0.display()
    )]
    NotVisible(PathBuf),
}

impl TargetError {
    pub fn code(&self) -> &'static str {
        match self {
            TargetError::NotCompose => "not_compose_managed",
            TargetError::MissingLabel(_) => "compose_label_missing",
            TargetError::InvalidLabel { .. } => "compose_label_invalid",
            TargetError::NotVisible(_) => "compose_file_not_visible",
        }
    }
}

/// One step of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeOp {
    /// `pull -- <service>`
    Pull,
    /// `up -d -- <service>`
    Up,
    /// `up -d --build -- <service>`
    UpBuild,
}

/// A compose service, as its container's labels describe it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComposeTarget {
    pub project: ComposeProjectName,
    pub service: ServiceName,
    pub working_dir: PathBuf,
    pub config_files: Vec<PathBuf>,
    pub env_files: Vec<PathBuf>,
}

fn label<'a>(
    labels: &'a HashMap<String, String>,
    name: &'static str,
) -> Result<&'a str, TargetError> {
    labels
        .get(name)
        .map(String::as_str)
        .ok_or(TargetError::MissingLabel(name))
}

/// An absolute, normalised path without control characters.
fn checked_path(label: &'static str, text: &str) -> Result<PathBuf, TargetError> {
    let invalid = |reason: &str| TargetError::InvalidLabel {
        label,
        reason: reason.to_owned(),
    };
    if text.is_empty() || text.len() > MAX_PATH_LEN {
        return Err(invalid("a path must be 1 to 4096 bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid("a path contains a control character"));
    }
    let Some(relative) = text.strip_prefix('/') else {
        return Err(invalid("a path is not absolute"));
    };
    // Textual, because `Path::components` silently drops interior `.` and `//`.
    if relative
        .split('/')
        .any(|segment| matches!(segment, "." | ".."))
    {
        return Err(invalid("a path contains '.' or '..'"));
    }
    Ok(PathBuf::from(text))
}

fn path_list(label: &'static str, text: &str) -> Result<Vec<PathBuf>, TargetError> {
    let files = text
        .split(',')
        .map(|f| checked_path(label, f))
        .collect::<Result<Vec<_>, _>>()?;
    if files.len() > MAX_FILES {
        return Err(TargetError::InvalidLabel {
            label,
            reason: format!("more than {MAX_FILES} files"),
        });
    }
    Ok(files)
}

impl ComposeTarget {
    /// Reads the compose labels of a container.
    pub fn from_labels(labels: &HashMap<String, String>) -> Result<Self, TargetError> {
        let project = labels.get(LABEL_PROJECT).ok_or(TargetError::NotCompose)?;
        Self::from_parts(
            project,
            label(labels, LABEL_SERVICE)?,
            label(labels, LABEL_WORKING_DIR)?,
            label(labels, LABEL_CONFIG_FILES)?,
            labels.get(LABEL_ENV_FILE).map_or("", String::as_str),
        )
    }

    /// Validates each part as the label of that name; file lists are
    /// comma-separated, and an empty `env_files` means none.
    pub fn from_parts(
        project: &str,
        service: &str,
        working_dir: &str,
        config_files: &str,
        env_files: &str,
    ) -> Result<Self, TargetError> {
        let project =
            ComposeProjectName::parse(project).map_err(|e| TargetError::InvalidLabel {
                label: LABEL_PROJECT,
                reason: format!("the project name {e}"),
            })?;
        let service = ServiceName::parse(service).map_err(|e| TargetError::InvalidLabel {
            label: LABEL_SERVICE,
            reason: format!("the service name {e}"),
        })?;
        let working_dir = checked_path(LABEL_WORKING_DIR, working_dir)?;
        let config_files = path_list(LABEL_CONFIG_FILES, config_files)?;
        let env_files = if env_files.is_empty() {
            Vec::new()
        } else {
            path_list(LABEL_ENV_FILE, env_files)?
        };
        Ok(Self {
            project,
            service,
            working_dir,
            config_files,
            env_files,
        })
    }

    /// Every file compose will read must exist at the same path in here.
    pub fn check_visible(&self) -> Result<(), TargetError> {
        let wanted = std::iter::once(&self.working_dir)
            .chain(&self.config_files)
            .chain(&self.env_files);
        for path in wanted {
            if !path.exists() {
                return Err(TargetError::NotVisible(path.clone()));
            }
        }
        Ok(())
    }

    /// The arguments after the compose tool itself, e.g. after `docker compose`.
    pub fn args(&self, op: ComposeOp) -> Vec<String> {
        let mut args = vec![format!("--project-name={}", self.project)];
        for file in &self.config_files {
            args.push(format!("--file={}", file.display()));
        }
        for file in &self.env_files {
            args.push(format!("--env-file={}", file.display()));
        }
        args.push(format!(
            "--project-directory={}",
            self.working_dir.display()
        ));
        let tail: &[&str] = match op {
            ComposeOp::Pull => &["pull"],
            ComposeOp::Up => &["up", "-d"],
            ComposeOp::UpBuild => &["up", "-d", "--build"],
        };
        args.extend(tail.iter().map(|s| s.to_string()));
        args.push("--".into());
        args.push(self.service.to_string());
        args
    }

    /// The files, comma-joined, as the seed's `compose_file` field showed them.
    pub fn files_joined(&self) -> String {
        self.config_files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn good() -> HashMap<String, String> {
        labels(&[
            (LABEL_PROJECT, "billing"),
            (LABEL_SERVICE, "web"),
            (LABEL_WORKING_DIR, "/srv/billing"),
            (
                LABEL_CONFIG_FILES,
                "/srv/billing/compose.yml,/srv/billing/override.yml",
            ),
        ])
    }

    #[test]
    fn labels_become_a_target_and_argv() {
        let t = ComposeTarget::from_labels(&good()).unwrap();
        assert_eq!(t.service.as_str(), "web");
        assert_eq!(
            t.args(ComposeOp::Pull),
            [
                "--project-name=billing",
                "--file=/srv/billing/compose.yml",
                "--file=/srv/billing/override.yml",
                "--project-directory=/srv/billing",
                "pull",
                "--",
                "web"
            ]
        );
        assert_eq!(
            t.args(ComposeOp::UpBuild)[4..],
            ["up", "-d", "--build", "--", "web"]
        );
        assert_eq!(
            t.files_joined(),
            "/srv/billing/compose.yml,/srv/billing/override.yml"
        );
    }

    #[test]
    fn env_files_are_passed_when_compose_recorded_them() {
        let mut l = good();
        l.insert(LABEL_ENV_FILE.into(), "/srv/billing/prod.env".into());
        let t = ComposeTarget::from_labels(&l).unwrap();
        assert!(
            t.args(ComposeOp::Up)
                .contains(&"--env-file=/srv/billing/prod.env".to_string())
        );
    }

    #[test]
    fn hostile_labels_are_refused() {
        let cases: &[(&str, &str, &str)] = &[
            (LABEL_PROJECT, "-p", "compose_label_invalid"),
            (LABEL_PROJECT, "Billing", "compose_label_invalid"),
            (LABEL_SERVICE, "--rm", "compose_label_invalid"),
            (LABEL_SERVICE, "web;id", "compose_label_invalid"),
            (LABEL_WORKING_DIR, "relative", "compose_label_invalid"),
            (LABEL_WORKING_DIR, "/srv/../etc", "compose_label_invalid"),
            (LABEL_WORKING_DIR, "/srv/a\nb", "compose_label_invalid"),
            (LABEL_CONFIG_FILES, "/srv/a.yml,", "compose_label_invalid"),
            (LABEL_CONFIG_FILES, "/srv/./a.yml", "compose_label_invalid"),
            (LABEL_CONFIG_FILES, "/srv/a/..", "compose_label_invalid"),
        ];
        for (label, value, code) in cases {
            let mut l = good();
            l.insert(label.to_string(), value.to_string());
            let err = ComposeTarget::from_labels(&l).unwrap_err();
            assert_eq!(err.code(), *code, "{label}={value:?}");
        }
    }

    #[test]
    fn missing_labels_say_which() {
        assert_eq!(
            ComposeTarget::from_labels(&labels(&[])),
            Err(TargetError::NotCompose)
        );
        let mut l = good();
        l.remove(LABEL_CONFIG_FILES);
        assert_eq!(
            ComposeTarget::from_labels(&l),
            Err(TargetError::MissingLabel(LABEL_CONFIG_FILES))
        );
    }

    #[test]
    fn invisible_files_are_named() {
        let t = ComposeTarget::from_labels(&good()).unwrap();
        let err = t.check_visible().unwrap_err();
        assert_eq!(err, TargetError::NotVisible(PathBuf::from("/srv/billing")));
        assert!(
            err.to_string()
                .contains("mount it at the same absolute path")
        );
    }
}
