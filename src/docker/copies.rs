//! The judged copies: what compose runs is the model the judge read.
//!
//! A job writes compose's model of its invocation (what `config` printed,
//! its pin merged in) to `<state_dir>/judged/<compose project>/<hash>.json`,
//! mode 0600, and runs every compose command with that one file,
//! `--project-directory` set to the project's working directory and an
//! empty env file in place of the implicit `.env`. So compose reads no file
//! of the project's after the judge did: a file changed between the check
//! and the command changes nothing that runs.
//!
//! Compose records the copy in the containers' `config_files` label. Beside
//! each copy, `<hash>.origin.json` keeps the files the labels named before,
//! and the next request reads a container whose label names a copy as if it
//! named those (see `ComposeLabels::from_copies`), so it judges the team's
//! current files. A copy is removed once no container names it and no job
//! uses it.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ComposeTarget;

const SUFFIX: &str = ".json";
const ORIGIN_SUFFIX: &str = ".origin.json";
/// The env file every command on a copy is given, so that compose reads no
/// `.env` of the project's.
const EMPTY_ENV: &str = "empty.env";
/// Hex digits of a copy's name.
const NAME_LEN: usize = 32;

/// The files a copy was made from: the target as its labels named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub project: String,
    pub working_dir: PathBuf,
    pub config_files: Vec<PathBuf>,
    pub env_files: Vec<PathBuf>,
}

/// Why a copy's origin could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the gateway's copy {0} has no record of the files it was made from")]
    NoOrigin(PathBuf),
    #[error("the record of the gateway's copy {path} cannot be read: {why}")]
    Unreadable { path: PathBuf, why: String },
}

/// The judged copies under one state directory.
#[derive(Debug)]
pub struct JudgedCopies {
    /// Absolute: compose runs in the project's directory.
    dir: PathBuf,
    /// Copies that jobs run now, with how many jobs use each.
    in_use: Mutex<HashMap<PathBuf, usize>>,
}

/// A copy a job runs; it is not collected while this lives.
#[derive(Debug)]
pub struct CopyInUse {
    copies: Arc<JudgedCopies>,
    pub path: PathBuf,
}

impl Drop for CopyInUse {
    fn drop(&mut self) {
        let mut in_use = self.copies.in_use.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = in_use.get_mut(&self.path) {
            *count -= 1;
            if *count == 0 {
                in_use.remove(&self.path);
            }
        }
    }
}

fn is_name(name: &str) -> bool {
    name.len() == NAME_LEN && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Writes `bytes` to `path` whole (through a rename), readable only by
/// the gateway's user.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

impl JudgedCopies {
    pub fn new(state_dir: &Path) -> Arc<Self> {
        let dir = state_dir.join("judged");
        Arc::new(Self {
            dir: std::path::absolute(&dir).unwrap_or(dir),
            in_use: Mutex::new(HashMap::new()),
        })
    }

    fn project_dir(&self, project: &str) -> PathBuf {
        self.dir.join(project)
    }

    /// The empty env file commands on a copy are given.
    pub fn empty_env(&self) -> PathBuf {
        self.dir.join(EMPTY_ENV)
    }

    /// Writes `model`, the judged model of `origin`'s invocation, as a
    /// copy, and holds it for the job.
    pub fn write(self: &Arc<Self>, origin: &ComposeTarget, model: &Value) -> io::Result<CopyInUse> {
        use sha2::{Digest, Sha256};
        let project = origin.project.as_str();
        let dir = self.project_dir(project);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let empty = self.empty_env();
        if std::fs::symlink_metadata(&empty).is_err() {
            write_private(&empty, b"")?;
        }
        let record = Origin {
            project: project.to_owned(),
            working_dir: origin.working_dir.clone(),
            config_files: origin.config_files.clone(),
            env_files: origin.env_files.clone(),
        };
        let record = serde_json::to_vec(&record).map_err(io::Error::other)?;
        let copy = serde_json::to_vec_pretty(model).map_err(io::Error::other)?;
        let mut hash = Sha256::new();
        hash.update(&copy);
        hash.update([0]);
        hash.update(&record);
        let name = hex::encode(&hash.finalize()[..NAME_LEN / 2]);
        let path = dir.join(format!("{name}{SUFFIX}"));
        let guard = self.hold(path.clone());
        // The origin first: a copy is never without one.
        write_private(&dir.join(format!("{name}{ORIGIN_SUFFIX}")), &record)?;
        write_private(&path, &copy)?;
        Ok(guard)
    }

    /// Holds `copy` so that it is not collected while a job uses it.
    pub fn hold(self: &Arc<Self>, copy: PathBuf) -> CopyInUse {
        *self
            .in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(copy.clone())
            .or_default() += 1;
        CopyInUse {
            copies: self.clone(),
            path: copy,
        }
    }

    /// The target that runs `copy`, a copy of `origin`'s invocation.
    pub fn target_of(&self, copy: &Path, origin: &ComposeTarget) -> ComposeTarget {
        ComposeTarget {
            config_files: vec![copy.to_path_buf()],
            env_files: vec![self.empty_env()],
            ..origin.clone()
        }
    }

    /// Whether `path` is one of this compose project's copies, by its text
    /// (the labels name it as it was written).
    pub fn is_copy(&self, project: &str, path: &Path) -> bool {
        path.parent() == Some(self.project_dir(project).as_path())
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(SUFFIX))
                .is_some_and(is_name)
    }

    /// When `config_files` is one copy of `project`'s: the files it was
    /// made from.
    pub fn origin_of(
        &self,
        project: &str,
        config_files: &[PathBuf],
    ) -> Option<Result<Origin, CopyError>> {
        let [copy] = config_files else { return None };
        if !self.is_copy(project, copy) {
            return None;
        }
        let name = copy.file_name()?.to_str()?.strip_suffix(SUFFIX)?;
        let path = self
            .project_dir(project)
            .join(format!("{name}{ORIGIN_SUFFIX}"));
        Some(match std::fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CopyError::NoOrigin(copy.clone())),
            Err(e) => Err(CopyError::Unreadable {
                path,
                why: e.to_string(),
            }),
            Ok(bytes) => serde_json::from_slice::<Origin>(&bytes)
                .map_err(|e| CopyError::Unreadable {
                    path: path.clone(),
                    why: e.to_string(),
                })
                .and_then(|origin| {
                    if origin.project == project {
                        Ok(origin)
                    } else {
                        Err(CopyError::Unreadable {
                            path,
                            why: format!("it was made for the project `{}`", origin.project),
                        })
                    }
                }),
        })
    }

    /// Removes `project`'s copies that no container names (`named`, the
    /// `config_files` of every container of the project) and no job uses;
    /// returns how many.
    pub fn collect(&self, project: &str, named: &HashSet<PathBuf>) -> io::Result<usize> {
        let dir = self.project_dir(project);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let in_use = self
            .in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut removed = 0;
        for entry in entries {
            let path = entry?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(SUFFIX))
                .filter(|n| is_name(n))
            else {
                continue;
            };
            if named.contains(&path) || in_use.contains_key(&path) {
                continue;
            }
            std::fs::remove_file(&path)?;
            let origin = dir.join(format!("{name}{ORIGIN_SUFFIX}"));
            match std::fs::remove_file(origin) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_private_mapped_back_and_collected_when_unused() {
        use std::os::unix::fs::PermissionsExt;
        let state = tempfile::tempdir().unwrap();
        let copies = JudgedCopies::new(state.path());
        let origin = ComposeTarget::from_parts(
            "shop",
            "web",
            "/srv/shop",
            "/srv/shop/compose.yml,/srv/shop/prod.yml",
            "/srv/shop/prod.env",
        )
        .unwrap();
        let model = serde_json::json!({"services": {"web": {"image": "busybox"}}});
        let held = copies.write(&origin, &model).unwrap();
        let mode = std::fs::metadata(&held.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&held.path).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), model);

        let runs = copies.target_of(&held.path, &origin);
        assert_eq!(runs.config_files, vec![held.path.clone()]);
        assert_eq!(runs.env_files, vec![copies.empty_env()]);
        assert_eq!(std::fs::read(copies.empty_env()).unwrap(), b"");

        let back = copies
            .origin_of("shop", std::slice::from_ref(&held.path))
            .unwrap()
            .unwrap();
        assert_eq!(back.config_files, origin.config_files);
        assert_eq!(back.env_files, origin.env_files);
        assert_eq!(back.working_dir, origin.working_dir);
        assert!(
            copies
                .origin_of("other", std::slice::from_ref(&held.path))
                .is_none()
        );
        assert!(
            copies
                .origin_of("shop", &[PathBuf::from("/srv/shop/compose.yml")])
                .is_none()
        );

        // The same model of the same files is the same copy.
        let again = copies.write(&origin, &model).unwrap();
        assert_eq!(again.path, held.path);
        drop(again);
        // In use: kept; unused and unnamed: removed; named: kept.
        assert_eq!(copies.collect("shop", &HashSet::new()).unwrap(), 0);
        let path = held.path.clone();
        drop(held);
        let named = HashSet::from([path.clone()]);
        assert_eq!(copies.collect("shop", &named).unwrap(), 0);
        assert_eq!(copies.collect("shop", &HashSet::new()).unwrap(), 1);
        assert!(!path.exists());
        assert!(matches!(
            copies.origin_of("shop", std::slice::from_ref(&path)),
            Some(Err(CopyError::NoOrigin(_)))
        ));
    }
}
