//! What to run: a compose service identified by its container's labels, and
//! the argv for each step.
//!
//! Label values come from the engine, and anyone who can start a container
//! can write them, so each is validated before it becomes an argument: names
//! against compose's own rules, paths free of control characters and, once
//! resolved, absolute and normalised. Arguments are passed as `--flag=value`
//! and the service after `--`, so no value can be read as an option.
//!
//! Two steps, so that the pure part is testable without a filesystem:
//! [`ComposeLabels::from_labels`] checks the label text, and
//! [`ComposeLabels::resolve`] turns it into paths that exist here, with their
//! real (symlink-free) forms beside them for the policy to judge.
//!
//! The shapes compose writes (read from compose 1.29.2 on this host and from
//! compose v2's `pkg/compose/loader.go` and `cmd/compose/compose.go`):
//! - v2 writes every path absolute: the working directory, each config file,
//!   and `environment_file` (only when `--env-file` was given, comma-joined).
//! - v1 writes the working directory absolute (the physical directory, with
//!   symlinks resolved by `getcwd`), but `config_files` and
//!   `environment_file` exactly as given on its command line: relative to the
//!   directory compose was started from, which no label records. Without
//!   `-f` that directory is the working directory (`docker-compose.yml`);
//!   with `-f sub/compose.yml` or `--project-directory`, it is a directory
//!   above it.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::copies::JudgedCopies;
use super::pins::PinFiles;

use crate::names::{ComposeProjectName, ServiceName};

pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
pub const LABEL_WORKING_DIR: &str = "com.docker.compose.project.working_dir";
pub const LABEL_CONFIG_FILES: &str = "com.docker.compose.project.config_files";
pub const LABEL_ENV_FILE: &str = "com.docker.compose.project.environment_file";
pub const LABEL_ONEOFF: &str = "com.docker.compose.oneoff";
pub const LABEL_VERSION: &str = "com.docker.compose.version";

/// The env file compose reads from the project directory when none is named.
const IMPLICIT_ENV_FILE: &str = ".env";

/// More files than any real project uses; a bound on label parsing.
const MAX_FILES: usize = 32;
const MAX_PATH_LEN: usize = 4096;
/// How many directories above the working directory a relative entry is
/// looked for in; deeper trees are not a shape compose projects take.
const MAX_ANCESTORS: usize = 64;

/// Why a container cannot be deployed (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the container was not created by docker compose (it has no {LABEL_PROJECT} label)")]
    NotCompose,
    #[error("the container lacks the compose label {0}; recreate it with docker compose")]
    MissingLabel(&'static str),
    #[error(
        "the container's label {0} is also set by its image, and an image can carry any label; build the image without compose labels"
    )]
    Untrusted(&'static str),
    #[error("the container's label {label} is not acceptable: {reason}")]
    InvalidLabel { label: &'static str, reason: String },
    #[error(
        "{} (from the label {label}) is not visible inside the gateway; mount it at the same absolute path as on the host",
        .path.display()
    )]
    NotVisible { label: &'static str, path: PathBuf },
    #[error(
        "the label {label} names {} relative to the directory compose was started from, which compose does not record, and it is not in {} or any directory above it; start compose from the project directory or with absolute paths, and mount the files at the same absolute path as on the host",
        .entry.display(), .working_dir.display()
    )]
    RelativeNotFound {
        label: &'static str,
        entry: PathBuf,
        working_dir: PathBuf,
    },
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
    /// `up -d --no-build -- <service>`: a rollback, with the image the
    /// service's reference was pointed back at.
    UpNoBuild,
}

/// A container's compose labels, checked as text. Paths may still be
/// relative; [`ComposeLabels::resolve`] places them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComposeLabels {
    pub project: ComposeProjectName,
    pub service: ServiceName,
    /// Absolute and normalised.
    pub working_dir: PathBuf,
    /// As written: absolute ones normalised, relative ones untouched.
    pub config_files: Vec<PathBuf>,
    pub env_files: Vec<PathBuf>,
}

/// A compose service, as its container's labels describe it, with every
/// path absolute and normalised: what the commands are given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComposeTarget {
    pub project: ComposeProjectName,
    pub service: ServiceName,
    pub working_dir: PathBuf,
    pub config_files: Vec<PathBuf>,
    pub env_files: Vec<PathBuf>,
}

/// Where the files compose will read really are, symlinks followed: what the
/// policy judges. Includes the implicit `.env` of the project directory when
/// compose would read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealPaths {
    pub working_dir: PathBuf,
    pub config_files: Vec<PathBuf>,
    pub env_files: Vec<PathBuf>,
}

impl RealPaths {
    /// Every path, each marked with its role, in a fixed order: what a job
    /// keeps of the files it was admitted with, to compare later.
    pub fn listing(&self) -> Vec<String> {
        std::iter::once(format!("dir {}", self.working_dir.display()))
            .chain(
                self.config_files
                    .iter()
                    .map(|p| format!("config {}", p.display())),
            )
            .chain(
                self.env_files
                    .iter()
                    .map(|p| format!("env {}", p.display())),
            )
            .collect()
    }
}

/// A target whose files exist here, and their real paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub target: ComposeTarget,
    pub real: RealPaths,
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

fn invalid(label: &'static str, reason: impl Into<String>) -> TargetError {
    TargetError::InvalidLabel {
        label,
        reason: reason.into(),
    }
}

/// `path` folded textually (`/srv/app/../x` is `/srv/x`); a `..` above
/// the root is refused, since no label compose writes has one.
fn normalise(label: &'static str, path: &Path) -> Result<PathBuf, TargetError> {
    let normalised = super::host_path::normalise(path);
    if normalised.above_root {
        return Err(invalid(label, "a path escapes above the root directory"));
    }
    Ok(normalised.path)
}

/// A path as a label holds it: bounded, printable, and a file path (not
/// compose's `-` for standard input, nor a remote git or OCI reference).
/// Absolute paths come back normalised; relative ones as written.
fn checked_path(label: &'static str, text: &str) -> Result<PathBuf, TargetError> {
    if text.is_empty() || text.len() > MAX_PATH_LEN {
        return Err(invalid(label, "a path must be 1 to 4096 bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid(label, "a path contains a control character"));
    }
    if text == "-" {
        return Err(invalid(
            label,
            "compose read this project from standard input, which cannot be read again; use a compose file",
        ));
    }
    if text.contains("://") || text.starts_with("git@") {
        return Err(invalid(
            label,
            "compose read this project from a remote source; use a compose file on this host",
        ));
    }
    let path = Path::new(text);
    if path.is_absolute() {
        normalise(label, path)
    } else {
        Ok(path.to_path_buf())
    }
}

/// The project, service and working directory, as their labels must be.
fn service_of(
    project: &str,
    service: &str,
    working_dir: &str,
) -> Result<(ComposeProjectName, ServiceName, PathBuf), TargetError> {
    let project = ComposeProjectName::parse(project)
        .map_err(|e| invalid(LABEL_PROJECT, format!("the project name {e}")))?;
    let service = ServiceName::parse(service)
        .map_err(|e| invalid(LABEL_SERVICE, format!("the service name {e}")))?;
    let working_dir = checked_path(LABEL_WORKING_DIR, working_dir)?;
    if !working_dir.is_absolute() {
        return Err(invalid(
            LABEL_WORKING_DIR,
            "the working directory is not absolute",
        ));
    }
    Ok((project, service, working_dir))
}

fn path_list(label: &'static str, text: &str) -> Result<Vec<PathBuf>, TargetError> {
    if text.split(',').count() > MAX_FILES {
        return Err(invalid(label, format!("more than {MAX_FILES} files")));
    }
    text.split(',').map(|f| checked_path(label, f)).collect()
}

/// Whether a path names an existing regular file, symlinks followed.
fn is_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

fn real_path(label: &'static str, path: &Path) -> Result<PathBuf, TargetError> {
    std::fs::canonicalize(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => TargetError::NotVisible {
            label,
            path: path.to_path_buf(),
        },
        _ => invalid(
            label,
            format!("{} cannot be read here: {e}", path.display()),
        ),
    })
}

/// The labels this module reads.
const READ_LABELS: [&str; 5] = [
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_WORKING_DIR,
    LABEL_CONFIG_FILES,
    LABEL_ENV_FILE,
];

/// The labels that both compose tools write on every container they create:
/// v1 1.29 (`Service.labels` and `execution_context_labels`: project,
/// service, one-off, version, working directory) and v2 (`ToProject`'s
/// `CustomLabels`: the same five and the config files). The engine lays a
/// container's own labels over its image's, so on a compose-made container
/// these values are compose's whatever the image carries; v2 labels the
/// images it builds with project, service and version, so these must not
/// be refused for being on the image. The config files are not here: v1
/// leaves that label out when the file comes from standard input (`-f -`),
/// so an image could supply it; nor is the environment file, which both
/// write only when `--env-file` is given.
const WRITTEN_ON_EVERY_CONTAINER: [&str; 5] = [
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_ONEOFF,
    LABEL_VERSION,
    LABEL_WORKING_DIR,
];

/// The labels read here that an image's label of the same key may have
/// supplied, because compose does not always write them.
fn image_may_supply(label: &str) -> bool {
    READ_LABELS.contains(&label) && !WRITTEN_ON_EVERY_CONTAINER.contains(&label)
}

impl ComposeLabels {
    /// Reads the compose labels of a container created from an image with
    /// `image_labels`. The engine copies an image's labels onto its
    /// containers, so a label compose writes only sometimes, when the image
    /// also sets it, may be the image's word, not compose's: such a
    /// container is refused.
    pub fn from_container(
        labels: &HashMap<String, String>,
        image_labels: &HashMap<String, String>,
    ) -> Result<Self, TargetError> {
        if let Some(label) = READ_LABELS
            .into_iter()
            .find(|l| image_may_supply(l) && image_labels.contains_key(*l))
        {
            return Err(TargetError::Untrusted(label));
        }
        Self::from_labels(labels)
    }

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
        let (project, service, working_dir) = service_of(project, service, working_dir)?;
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

    /// The labels without the gateway's own pin overrides of this service,
    /// which a pinned deploy added: the next deploy decides its pin anew,
    /// and an unpinned one returns to the user's files alone.
    pub fn without_pins(mut self, pins: &PinFiles) -> Result<Self, TargetError> {
        let (project, service) = (self.project.as_str(), self.service.as_str());
        self.config_files
            .retain(|path| !pins.is_pin_of(path, project, service));
        if self.config_files.is_empty() {
            return Err(invalid(
                LABEL_CONFIG_FILES,
                "it names only the gateway's own override files",
            ));
        }
        Ok(self)
    }

    /// The labels as they were before the gateway ran compose on a judged
    /// copy: when `config_files` names one of this project's copies, the
    /// files the copy was made from, so the next deploy judges the
    /// project's current files.
    pub fn from_copies(mut self, copies: &JudgedCopies) -> Result<Self, TargetError> {
        let project = self.project.as_str();
        let Some(origin) = copies.origin_of(project, &self.config_files) else {
            return Ok(self);
        };
        let origin = origin.map_err(|e| invalid(LABEL_CONFIG_FILES, e.to_string()))?;
        if origin.working_dir != self.working_dir {
            return Err(invalid(
                LABEL_WORKING_DIR,
                "the working directory is not the one the gateway's copy was made for",
            ));
        }
        if self.env_files.iter().any(|f| *f != copies.empty_env()) {
            return Err(invalid(
                LABEL_ENV_FILE,
                "it names an env file beside the gateway's copy",
            ));
        }
        let checked = |label: &'static str, paths: Vec<PathBuf>| {
            paths
                .into_iter()
                .map(|p| {
                    let text = p
                        .to_str()
                        .ok_or_else(|| invalid(label, "a path is not text"))?;
                    let path = checked_path(label, text)?;
                    if path.is_absolute() {
                        Ok(path)
                    } else {
                        Err(invalid(label, "a path is not absolute"))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        self.config_files = checked(LABEL_CONFIG_FILES, origin.config_files)?;
        self.env_files = checked(LABEL_ENV_FILE, origin.env_files)?;
        if self.config_files.is_empty() {
            return Err(invalid(
                LABEL_CONFIG_FILES,
                "the gateway's copy records no compose file",
            ));
        }
        Ok(self)
    }

    fn relative_entries(&self) -> impl Iterator<Item = (&'static str, &PathBuf)> {
        let configs = self.config_files.iter().map(|p| (LABEL_CONFIG_FILES, p));
        let envs = self.env_files.iter().map(|p| (LABEL_ENV_FILE, p));
        configs.chain(envs).filter(|(_, p)| p.is_relative())
    }

    /// The directory relative entries were written against: the working
    /// directory or the nearest directory above it in which every relative
    /// entry is a file. One directory for all of them, since compose wrote
    /// them all against the one it was started in.
    fn base_dir(&self) -> Result<&Path, TargetError> {
        let mut relative = self.relative_entries().peekable();
        if relative.peek().is_none() {
            return Ok(&self.working_dir);
        }
        let entries: Vec<_> = relative.collect();
        let bases = || self.working_dir.ancestors().take(MAX_ANCESTORS);
        bases()
            .find(|base| entries.iter().all(|(_, entry)| is_file(&base.join(entry))))
            .ok_or_else(|| {
                // Name the entry found nowhere, else (each found, but not
                // all in one directory) the first.
                let (label, entry) = entries
                    .iter()
                    .find(|(_, entry)| !bases().any(|base| is_file(&base.join(entry))))
                    .unwrap_or(&entries[0]);
                TargetError::RelativeNotFound {
                    label,
                    entry: (*entry).clone(),
                    working_dir: self.working_dir.clone(),
                }
            })
    }

    /// Places every path: relative entries against the directory compose was
    /// started in (see `base_dir`), then normalised; then checks that
    /// each exists here and finds its real path. Reads the filesystem.
    pub fn resolve(&self) -> Result<Resolved, TargetError> {
        let base = self.base_dir()?;
        let place = |label: &'static str, path: &PathBuf| normalise(label, &base.join(path));
        let config_files = self
            .config_files
            .iter()
            .map(|p| place(LABEL_CONFIG_FILES, p))
            .collect::<Result<Vec<_>, _>>()?;
        let env_files = self
            .env_files
            .iter()
            .map(|p| place(LABEL_ENV_FILE, p))
            .collect::<Result<Vec<_>, _>>()?;

        let target = ComposeTarget {
            project: self.project.clone(),
            service: self.service.clone(),
            working_dir: self.working_dir.clone(),
            config_files,
            env_files,
        };
        let real = target.real_paths()?;
        Ok(Resolved { target, real })
    }
}

impl ComposeTarget {
    /// Where the files compose will read really are now, symlinks followed
    /// (the implicit `.env` of the project directory included). The same
    /// target can resolve elsewhere later: a symlink moved.
    pub fn real_paths(&self) -> Result<RealPaths, TargetError> {
        let real_dir = real_path(LABEL_WORKING_DIR, &self.working_dir)?;
        if !real_dir.is_dir() {
            return Err(invalid(
                LABEL_WORKING_DIR,
                "the working directory is not a directory",
            ));
        }
        let real_files = |label: &'static str, paths: &[PathBuf]| {
            paths
                .iter()
                .map(|p| {
                    let real = real_path(label, p)?;
                    if real.is_file() {
                        Ok(real)
                    } else {
                        Err(invalid(label, format!("{} is not a file", p.display())))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let real_configs = real_files(LABEL_CONFIG_FILES, &self.config_files)?;
        let mut real_envs = real_files(LABEL_ENV_FILE, &self.env_files)?;
        if self.env_files.is_empty() {
            let implicit = self.working_dir.join(IMPLICIT_ENV_FILE);
            if std::fs::symlink_metadata(&implicit).is_ok() {
                real_envs.push(real_path(LABEL_WORKING_DIR, &implicit)?);
            }
        }
        Ok(RealPaths {
            working_dir: real_dir,
            config_files: real_configs,
            env_files: real_envs,
        })
    }

    /// A target from parts already resolved (a stored job's): every path
    /// must be absolute. Validated as labels are, path by path.
    pub fn from_stored(
        project: &str,
        service: &str,
        working_dir: &str,
        config_files: &[String],
        env_files: &[String],
    ) -> Result<Self, TargetError> {
        let (project, service, working_dir) = service_of(project, service, working_dir)?;
        let absolute = |label: &'static str, paths: &[String]| {
            if paths.len() > MAX_FILES {
                return Err(invalid(label, format!("more than {MAX_FILES} files")));
            }
            paths
                .iter()
                .map(|text| {
                    let path = checked_path(label, text)?;
                    if path.is_absolute() {
                        Ok(path)
                    } else {
                        Err(invalid(label, "a path is not absolute"))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            project,
            service,
            working_dir,
            config_files: absolute(LABEL_CONFIG_FILES, config_files)?,
            env_files: absolute(LABEL_ENV_FILE, env_files)?,
        })
    }

    /// The same invocation with one more compose file after the others
    /// (the gateway's override that pins the service's image).
    pub fn with_override(mut self, file: PathBuf) -> Self {
        self.config_files.push(file);
        self
    }

    /// As [`Self::from_stored`], from comma-separated lists.
    pub fn from_parts(
        project: &str,
        service: &str,
        working_dir: &str,
        config_files: &str,
        env_files: &str,
    ) -> Result<Self, TargetError> {
        let list = |text: &str| -> Vec<String> {
            if text.is_empty() {
                Vec::new()
            } else {
                text.split(',').map(str::to_owned).collect()
            }
        };
        Self::from_stored(
            project,
            service,
            working_dir,
            &list(config_files),
            &list(env_files),
        )
    }

    /// The arguments after the compose tool itself, e.g. after `docker compose`.
    pub fn args(&self, op: ComposeOp) -> Vec<String> {
        let mut args = self.project_args();
        let tail: &[&str] = match op {
            ComposeOp::Pull => &["pull"],
            ComposeOp::Up => &["up", "-d"],
            ComposeOp::UpBuild => &["up", "-d", "--build"],
            ComposeOp::UpNoBuild => &["up", "-d", "--no-build"],
        };
        args.extend(tail.iter().map(|s| s.to_string()));
        args.push("--".into());
        args.push(self.service.to_string());
        args
    }

    /// `config` for the same project, files and directory as every other
    /// command: the model of exactly the invocation that runs, all of its
    /// services (`up` starts a service's dependencies too), with every
    /// profile active (v2: `--profile=*`; v1 prints every service whatever
    /// its profiles), so that a profile cannot hide one. v2 prints JSON when
    /// asked; v1 prints only YAML.
    pub fn config_args(&self, v2: bool) -> Vec<String> {
        let mut args = self.project_args();
        if v2 {
            args.push("--profile=*".into());
        }
        args.push("config".into());
        if v2 {
            args.push("--format=json".into());
        }
        args
    }

    fn project_args(&self) -> Vec<String> {
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
    use std::os::unix::fs::symlink;

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

    /// A directory tree for one test, removed when dropped.
    struct Tree {
        /// The real path, so that expectations compare with canonicalize's.
        root: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            Self {
                root: std::fs::canonicalize(dir.path()).unwrap(),
                _dir: dir,
            }
        }

        fn file(&self, relative: &str) -> PathBuf {
            let path = self.root.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "services: {}\n").unwrap();
            path
        }

        fn dir(&self, relative: &str) -> PathBuf {
            let path = self.root.join(relative);
            std::fs::create_dir_all(&path).unwrap();
            path
        }

        fn path(&self, relative: &str) -> String {
            self.root.join(relative).display().to_string()
        }
    }

    /// Compose labels as v1 writes them: the working directory absolute,
    /// files as given on its command line.
    fn v1(
        working_dir: &str,
        config_files: &str,
        env_file: Option<&str>,
    ) -> HashMap<String, String> {
        let mut l = labels(&[
            (
                "com.docker.compose.config-hash",
                "3ab8aaab48a7e2745bfa1671e17729f91fe03f4f702b9090e96a54a9185313b5",
            ),
            ("com.docker.compose.container-number", "1"),
            (LABEL_ONEOFF, "False"),
            (LABEL_PROJECT, "app"),
            (LABEL_CONFIG_FILES, config_files),
            (LABEL_WORKING_DIR, working_dir),
            (LABEL_SERVICE, "web"),
            ("com.docker.compose.version", "1.29.2"),
        ]);
        if let Some(env) = env_file {
            l.insert(LABEL_ENV_FILE.into(), env.into());
        }
        l
    }

    fn resolve(l: &HashMap<String, String>) -> Result<Resolved, TargetError> {
        ComposeLabels::from_labels(l)?.resolve()
    }

    #[test]
    fn the_gateways_own_pin_overrides_are_left_out_of_the_next_deploy() {
        let pins = PinFiles::new(Path::new("/var/lib/dh"));
        let hex = "ab".repeat(32);
        let ours = format!("/var/lib/dh/pins/billing/web/{hex}.json");
        let other_service = format!("/var/lib/dh/pins/billing/db/{hex}.json");
        let read = |files: &str| {
            ComposeLabels::from_parts("billing", "web", "/srv/billing", files, "")
                .unwrap()
                .without_pins(&pins)
        };
        let kept = read(&format!("/srv/billing/compose.yml,{ours}")).unwrap();
        assert_eq!(
            kept.config_files,
            [PathBuf::from("/srv/billing/compose.yml")]
        );
        // Another service's override is no pin of this one: the policy judges it.
        let foreign = read(&format!("/srv/billing/compose.yml,{other_service}")).unwrap();
        assert_eq!(foreign.config_files.len(), 2);
        assert!(matches!(read(&ours), Err(TargetError::InvalidLabel { .. })));
        let target = ComposeTarget::from_parts(
            "billing",
            "web",
            "/srv/billing",
            "/srv/billing/compose.yml",
            "",
        )
        .unwrap()
        .with_override(PathBuf::from(&ours));
        let args = target.args(ComposeOp::UpNoBuild);
        let files: Vec<&String> = args.iter().filter(|a| a.starts_with("--file=")).collect();
        assert_eq!(
            files,
            [
                &"--file=/srv/billing/compose.yml".to_string(),
                &format!("--file={ours}")
            ]
        );
        assert!(args.ends_with(&[
            "up".into(),
            "-d".into(),
            "--no-build".into(),
            "--".into(),
            "web".into()
        ]));
    }

    #[test]
    fn labels_become_a_target_and_argv() {
        let t = ComposeTarget::from_parts(
            "billing",
            "web",
            "/srv/billing",
            "/srv/billing/compose.yml,/srv/billing/override.yml",
            "",
        )
        .unwrap();
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
    fn a_stored_target_keeps_each_path_whole() {
        let files = ["/srv/a,b/compose.yml".to_string()];
        let t = ComposeTarget::from_stored("p", "web", "/srv/a,b", &files, &[]).unwrap();
        assert_eq!(t.config_files, [PathBuf::from("/srv/a,b/compose.yml")]);
    }

    #[test]
    fn a_stored_target_must_be_absolute() {
        let err = ComposeTarget::from_parts("p", "web", "/srv", "compose.yml", "").unwrap_err();
        assert!(matches!(err, TargetError::InvalidLabel { .. }), "{err:?}");
        let err =
            ComposeTarget::from_parts("p", "web", "/srv", "/srv/c.yml", "prod.env").unwrap_err();
        assert!(err.to_string().contains(LABEL_ENV_FILE), "{err}");
    }

    #[test]
    fn v1_from_the_project_directory_records_bare_file_names() {
        // cd /srv/app && docker-compose up -d
        let tree = Tree::new();
        let file = tree.file("app/docker-compose.yml");
        let over = tree.file("app/docker-compose.override.yml");
        let r = resolve(&v1(
            &tree.path("app"),
            "docker-compose.yml,docker-compose.override.yml",
            None,
        ))
        .unwrap();
        assert_eq!(r.target.config_files, [file.clone(), over.clone()]);
        assert_eq!(r.target.working_dir, tree.root.join("app"));
        assert_eq!(r.real.config_files, [file, over]);
        assert!(r.real.env_files.is_empty());
    }

    #[test]
    fn v1_with_a_relative_file_from_a_directory_above() {
        // cd /srv && docker-compose -f app/sub/compose.yml up -d: compose
        // records the working directory /srv/app/sub and the file as given.
        let tree = Tree::new();
        let file = tree.file("app/sub/compose.yml");
        let r = resolve(&v1(&tree.path("app/sub"), "app/sub/compose.yml", None)).unwrap();
        assert_eq!(r.target.config_files, [file]);
        assert_eq!(
            r.target.args(ComposeOp::Up)[1],
            format!("--file={}", tree.path("app/sub/compose.yml"))
        );
    }

    #[test]
    fn v1_with_several_relative_files_and_a_relative_env_file() {
        let tree = Tree::new();
        let base = tree.file("app/base.yml");
        let over = tree.file("app/override.yml");
        let env = tree.file("app/custom.env");
        let r = resolve(&v1(
            &tree.path("app"),
            "base.yml,override.yml",
            Some("custom.env"),
        ))
        .unwrap();
        assert_eq!(r.target.config_files, [base, over]);
        assert_eq!(r.target.env_files, std::slice::from_ref(&env));
        assert_eq!(r.real.env_files, std::slice::from_ref(&env));
        assert!(
            r.target
                .args(ComposeOp::Pull)
                .contains(&format!("--env-file={}", env.display()))
        );
    }

    #[test]
    fn v1_with_a_project_directory_elsewhere() {
        // cd /srv && docker-compose -f app/c.yml --project-directory pd
        // --env-file app/custom.env up -d
        let tree = Tree::new();
        let file = tree.file("app/c.yml");
        let env = tree.file("app/custom.env");
        tree.dir("pd");
        let r = resolve(&v1(&tree.path("pd"), "app/c.yml", Some("app/custom.env"))).unwrap();
        assert_eq!(r.target.config_files, [file]);
        assert_eq!(r.target.env_files, [env]);
        assert_eq!(r.target.working_dir, tree.root.join("pd"));
    }

    #[test]
    fn the_working_directory_wins_over_directories_above() {
        // Both /srv/app/compose.yml and /srv/compose.yml exist; compose run
        // without -f in /srv/app read the first.
        let tree = Tree::new();
        tree.file("compose.yml");
        let near = tree.file("app/compose.yml");
        let r = resolve(&v1(&tree.path("app"), "compose.yml", None)).unwrap();
        assert_eq!(r.target.config_files, [near]);
    }

    #[test]
    fn relative_entries_with_dot_dot_are_normalised() {
        // cd /srv/app && docker-compose -f ../shared/compose.yml up -d
        let tree = Tree::new();
        let file = tree.file("shared/compose.yml");
        tree.dir("app");
        let r = resolve(&v1(&tree.path("shared"), "../shared/compose.yml", None)).unwrap();
        assert_eq!(r.target.config_files, [file]);
        assert!(
            !r.target.args(ComposeOp::Up)[1].contains(".."),
            "argv gets the normalised path"
        );
    }

    #[test]
    fn a_relative_entry_found_nowhere_names_its_label() {
        let tree = Tree::new();
        tree.file("app/compose.yml");
        let err = resolve(&v1(&tree.path("app"), "compose.yml", Some("prod.env"))).unwrap_err();
        assert!(
            matches!(
                err,
                TargetError::NotVisible { .. } | TargetError::RelativeNotFound { .. }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(LABEL_ENV_FILE) && text.contains("prod.env"),
            "{text}"
        );
    }

    #[test]
    fn symlinks_are_judged_by_their_real_paths() {
        let tree = Tree::new();
        let real = tree.file("real/app/compose.yml");
        symlink(tree.root.join("real/app"), tree.root.join("link")).unwrap();
        let other = tree.file("other-team/.env");
        symlink(&other, tree.root.join("real/app/.env")).unwrap();
        let r = resolve(&v1(&tree.path("link"), "compose.yml", None)).unwrap();
        // Compose is given the path the labels name (a `current` symlink
        // keeps working when it is moved), the policy the real one.
        assert_eq!(r.target.config_files, [tree.root.join("link/compose.yml")]);
        assert_eq!(r.real.config_files, [real]);
        assert_eq!(r.real.working_dir, tree.root.join("real/app"));
        assert_eq!(r.real.env_files, [other], "the implicit .env is read too");
    }

    #[test]
    fn a_dangling_implicit_env_file_is_refused() {
        let tree = Tree::new();
        tree.file("app/compose.yml");
        symlink(tree.root.join("gone.env"), tree.root.join("app/.env")).unwrap();
        let err = resolve(&v1(&tree.path("app"), "compose.yml", None)).unwrap_err();
        assert!(
            matches!(
                err,
                TargetError::NotVisible { .. } | TargetError::RelativeNotFound { .. }
            ),
            "{err:?}"
        );
    }

    /// The labels compose v2 writes (`pkg/compose/loader.go`, with
    /// `cmd/compose/compose.go` making `--env-file` paths absolute): every
    /// path absolute, `environment_file` comma-joined and only when given.
    fn v2(root: &Tree, env_files: Option<&str>) -> HashMap<String, String> {
        let mut l = labels(&[
            (
                "com.docker.compose.config-hash",
                "a2c5a7f0b1c4e0f6f8c3a58f3e1f5b2d9c1e7a6b4d3c2b1a0f9e8d7c6b5a4f3e",
            ),
            ("com.docker.compose.container-number", "1"),
            ("com.docker.compose.depends_on", ""),
            (
                "com.docker.compose.image",
                "sha256:0dff7c67cda49033f1088efe57d898c6a7ccd2264c7f9a57f10d2392d102300a",
            ),
            (LABEL_ONEOFF, "False"),
            (LABEL_PROJECT, "app"),
            (LABEL_SERVICE, "web"),
            ("com.docker.compose.version", "2.29.7"),
        ]);
        l.insert(LABEL_WORKING_DIR.into(), root.path("app"));
        l.insert(
            LABEL_CONFIG_FILES.into(),
            format!(
                "{},{}",
                root.path("app/compose.yaml"),
                root.path("app/compose.prod.yaml")
            ),
        );
        if let Some(env) = env_files {
            l.insert(LABEL_ENV_FILE.into(), env.into());
        }
        l
    }

    #[test]
    fn v2_labels_are_absolute_and_resolve_as_they_are() {
        let tree = Tree::new();
        let a = tree.file("app/compose.yaml");
        let b = tree.file("app/compose.prod.yaml");
        let e1 = tree.file("app/base.env");
        let e2 = tree.file("app/prod.env");
        let envs = format!("{},{}", e1.display(), e2.display());
        let r = resolve(&v2(&tree, Some(&envs))).unwrap();
        assert_eq!(r.target.config_files, [a.clone(), b.clone()]);
        assert_eq!(r.target.env_files, [e1.clone(), e2.clone()]);
        assert_eq!(r.real.config_files, [a, b]);
        assert_eq!(r.real.env_files, [e1, e2]);

        let r = resolve(&v2(&tree, None)).unwrap();
        assert!(r.target.env_files.is_empty());
    }

    #[test]
    fn v2_absolute_files_that_are_missing_are_named() {
        let tree = Tree::new();
        tree.file("app/compose.yaml");
        let err = resolve(&v2(&tree, None)).unwrap_err();
        assert_eq!(
            err,
            TargetError::NotVisible {
                label: LABEL_CONFIG_FILES,
                path: tree.root.join("app/compose.prod.yaml")
            }
        );
        assert!(
            err.to_string()
                .contains("mount it at the same absolute path")
        );
    }

    #[test]
    fn a_missing_working_directory_is_named() {
        let err = ComposeLabels::from_labels(&good())
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(
            matches!(
                err,
                TargetError::NotVisible { .. } | TargetError::RelativeNotFound { .. }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn hostile_labels_are_refused() {
        let cases: &[(&str, &str)] = &[
            (LABEL_PROJECT, "-p"),
            (LABEL_PROJECT, "Billing"),
            (LABEL_SERVICE, "--rm"),
            (LABEL_SERVICE, "web;id"),
            (LABEL_WORKING_DIR, "relative"),
            (LABEL_WORKING_DIR, "/srv/../../etc"),
            (LABEL_WORKING_DIR, "/srv/a\nb"),
            (LABEL_CONFIG_FILES, "/srv/a.yml,"),
            (LABEL_CONFIG_FILES, "/../etc/passwd"),
            (LABEL_CONFIG_FILES, "-"),
            (LABEL_CONFIG_FILES, "https://github.com/x/y.git"),
            (LABEL_CONFIG_FILES, "oci://registry/app:1"),
            (LABEL_CONFIG_FILES, "a\u{85}b.yml"),
            (LABEL_ENV_FILE, "/srv/a.env,"),
        ];
        for (label, value) in cases {
            let mut l = good();
            l.insert(label.to_string(), value.to_string());
            let err = ComposeLabels::from_labels(&l).unwrap_err();
            assert!(
                matches!(err, TargetError::InvalidLabel { .. }),
                "{label}={value:?}: {err:?}"
            );
        }
        let many = vec!["a.yml"; MAX_FILES + 1].join(",");
        let mut l = good();
        l.insert(LABEL_CONFIG_FILES.into(), many);
        assert!(matches!(
            ComposeLabels::from_labels(&l),
            Err(TargetError::InvalidLabel { .. })
        ));
    }

    #[test]
    fn absolute_paths_are_normalised_not_refused() {
        let mut l = good();
        l.insert(
            LABEL_CONFIG_FILES.into(),
            "/srv/billing/./x/../compose.yml".into(),
        );
        let parsed = ComposeLabels::from_labels(&l).unwrap();
        assert_eq!(
            parsed.config_files,
            [PathBuf::from("/srv/billing/compose.yml")]
        );
    }

    #[test]
    fn a_compose_label_the_image_sets_is_not_trusted() {
        let tree = Tree::new();
        tree.file("app/compose.yml");
        let l = v1(
            &tree.path("app"),
            "compose.yml",
            Some("/srv/other-team/.env"),
        );
        let image = labels(&[
            (LABEL_ENV_FILE, "/srv/other-team/.env"),
            ("maintainer", "x"),
        ]);
        assert_eq!(
            ComposeLabels::from_container(&l, &image),
            Err(TargetError::Untrusted(LABEL_ENV_FILE))
        );
        let harmless = labels(&[("maintainer", "x"), ("com.docker.compose.version", "1")]);
        let l = v1(&tree.path("app"), "compose.yml", None);
        assert!(ComposeLabels::from_container(&l, &harmless).is_ok());
    }

    #[test]
    fn labels_compose_writes_on_every_container_are_trusted_over_the_image() {
        let tree = Tree::new();
        tree.file("app/compose.yml");
        let l = v1(&tree.path("app"), "compose.yml", None);
        // What compose v2 writes on the images it builds, and a working
        // directory an image claims: compose overwrites each of them.
        let built_by_v2 = labels(&[
            (LABEL_PROJECT, "app"),
            (LABEL_SERVICE, "web"),
            (LABEL_VERSION, "2.26.1"),
            (LABEL_ONEOFF, "False"),
            (LABEL_WORKING_DIR, "/srv/other-team"),
        ]);
        let read = ComposeLabels::from_container(&l, &built_by_v2).unwrap();
        assert_eq!(read.working_dir, PathBuf::from(tree.path("app")));
        // Those compose writes only sometimes stay the image's possible word.
        for label in [LABEL_CONFIG_FILES, LABEL_ENV_FILE] {
            let mut image = built_by_v2.clone();
            image.insert(label.into(), "/srv/other-team/x".into());
            assert_eq!(
                ComposeLabels::from_container(&l, &image),
                Err(TargetError::Untrusted(label)),
                "{label}"
            );
        }
    }

    #[test]
    fn missing_labels_say_which() {
        assert_eq!(
            ComposeLabels::from_labels(&labels(&[])),
            Err(TargetError::NotCompose)
        );
        let mut l = good();
        l.remove(LABEL_CONFIG_FILES);
        assert_eq!(
            ComposeLabels::from_labels(&l),
            Err(TargetError::MissingLabel(LABEL_CONFIG_FILES))
        );
    }
}
