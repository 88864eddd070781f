//! What compose reads that its model does not show, read from the files
//! with compose's own rules.
//!
//! Both tools inline `env_file` contents (and v2 `label_file` contents)
//! into the model and drop the paths, and resolve `include` (v2) and
//! `extends.file` away. So the paths are read here, as compose resolves
//! them (checked against both tools):
//! - YAML anchors, aliases and merge keys (`<<`) apply; a YAML tag
//!   (compose v2's `!reset`, `!override`) is not followed, and refused.
//! - Relative paths in the files given with `-f` resolve against the
//!   project directory, also in an override file kept elsewhere.
//! - An extended file's relative paths resolve against its own directory.
//! - An included file's project directory is its `project_directory`
//!   (relative to the including one's), else the directory of its first
//!   path; its relative paths resolve there, and its variables come from
//!   its `env_file` entries (relative to the including directory) or else
//!   the `.env` in its project directory.
//! - A path that names a variable, starts with `~` (compose expands it to
//!   its own home directory), or a remote include, is not resolved here: it
//!   is refused, by name. So is a top-level key compose files do not have
//!   (v1's first file format, with services at the top).
//! - A file is read only once its real path is one the project may read
//!   (`may_read`), and only when it is a regular file, up to 1 MiB: a path
//!   outside the project is refused unread, so its existence is not told.
//!
//! Every file read is listed, so that a model is cached by what compose
//! read ([`Reads::files`]).

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::ModelError;
use super::judge::{Finding, Why};
use crate::docker::ComposeTarget;
use crate::docker::host_path::{normalise, real_for_judging};

/// The largest compose file read here; compose files are a few KiB.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// How many files `include` and `extends` may chain through.
const MAX_FILES: usize = 64;
/// The env file compose reads from a project directory when none is named.
const IMPLICIT_ENV_FILE: &str = ".env";

/// A path compose reads for the model that the model does not show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The service whose key names it, or `None` for a top-level one.
    pub service: Option<String>,
    /// The key, e.g. `env_file`, `extends.file`, `include`,
    /// `include.env_file`, `label_file`, `environment_file`.
    pub key: String,
    /// Absolute, as compose resolves it.
    pub path: PathBuf,
}

/// What compose reads for one invocation's model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Each path the model drops, to be judged as a host path.
    pub references: Vec<Reference>,
    /// What could not be followed (a variable in a path, a YAML tag, a
    /// remote include): refused, by name.
    pub problems: Vec<Finding>,
    /// Every file compose reads for the model, absolute: the config files,
    /// what they include or extend, and every env and label file (named or
    /// implicit, present or not).
    pub files: Vec<PathBuf>,
}

/// One compose file to read, and the directory its relative paths
/// resolve against.
struct Pending {
    file: PathBuf,
    base: PathBuf,
}

/// The top-level keys of a compose file.
const TOP_LEVEL: [&str; 8] = [
    "version", "name", "include", "services", "volumes", "networks", "secrets", "configs",
];

/// Reads the files of `target`'s invocation (its config and env files,
/// its project directory) and everything they name that `may_read` admits
/// (by real path).
pub fn read(target: &ComposeTarget, may_read: &dyn Fn(&Path) -> bool) -> Result<Reads, ModelError> {
    let mut reads = Reads::default();
    let project_dir = &target.working_dir;
    // The invocation's own env files, or the project's implicit `.env`.
    if target.env_files.is_empty() {
        reads.implicit(
            None,
            "environment_file",
            &project_dir.join(IMPLICIT_ENV_FILE),
        );
    } else {
        for file in &target.env_files {
            reads.reference(None, "environment_file", file);
        }
    }
    let mut pending: Vec<Pending> = target
        .config_files
        .iter()
        .rev()
        .map(|file| Pending {
            file: file.clone(),
            base: project_dir.clone(),
        })
        .collect();
    let mut done: Vec<PathBuf> = Vec::new();
    while let Some(Pending { file, base }) = pending.pop() {
        if done.contains(&file) {
            continue;
        }
        if done.len() >= MAX_FILES {
            return Err(ModelError::File(format!(
                "more than {MAX_FILES} compose files are included or extended"
            )));
        }
        done.push(file.clone());
        if !reads.files.contains(&file) {
            reads.files.push(file.clone());
        }
        let Some(document) = reads.parse(&file)? else {
            continue;
        };
        reads.top_level(&document, &file);
        let before = pending.len();
        reads.include(&document, &base, &mut pending);
        reads.services(&document, &base, &mut pending);
        // What this file names is read only where the project may read.
        let named: Vec<Pending> = pending.drain(before..).collect();
        for next in named {
            if may_read(&real_for_judging(&next.file)) {
                pending.push(next);
            }
        }
    }
    Ok(reads)
}

/// A merge key YAML does not define.
#[derive(Debug, thiserror::Error)]
enum MergeError {
    #[error("a merge key names something other than a mapping")]
    NotAMapping,
    #[error("a merge list holds something other than mappings")]
    ListHoldsOther,
}

/// Applies YAML merge keys (`<<`), a merged mapping's own merges first, as
/// compose's parsers do: keys the mapping sets win, and of several merged
/// mappings the first.
fn merge_keys(value: &mut Value) -> Result<(), MergeError> {
    match value {
        Value::Mapping(map) => {
            for (_, inner) in map.iter_mut() {
                merge_keys(inner)?;
            }
            match map.remove("<<") {
                None => {}
                Some(Value::Mapping(merged)) => {
                    for (key, inner) in merged {
                        map.entry(key).or_insert(inner);
                    }
                }
                Some(Value::Sequence(items)) => {
                    for item in items {
                        let Value::Mapping(merged) = item else {
                            return Err(MergeError::ListHoldsOther);
                        };
                        for (key, inner) in merged {
                            map.entry(key).or_insert(inner);
                        }
                    }
                }
                Some(_) => return Err(MergeError::NotAMapping),
            }
        }
        Value::Sequence(items) => {
            for item in items {
                merge_keys(item)?;
            }
        }
        Value::Tagged(tagged) => merge_keys(&mut tagged.value)?,
        _ => {}
    }
    Ok(())
}

fn read_yaml(file: &Path) -> Result<Value, ModelError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        ModelError::File(format!(
            "the compose file {} cannot be read: {e}",
            file.display()
        ))
    };
    let bytes = read_bounded(file).map_err(|e| unreadable(&e))?;
    let text = String::from_utf8(bytes).map_err(|_| unreadable(&"it is not UTF-8"))?;
    // Not the parser's words: they may quote the file.
    serde_yaml::from_str::<Value>(&text).map_err(|e| match e.location() {
        Some(at) => unreadable(&format!("it is not YAML (line {})", at.line())),
        None => unreadable(&"it is not YAML"),
    })
}

/// A regular file's contents (symlinks followed), up to `MAX_FILE_BYTES` (1 MiB):
/// never a FIFO, a device or a directory, which could block or never end.
pub fn read_bounded(file: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Opened without blocking (a FIFO would wait for a writer), then judged
    // by what was opened, not by a second look at the path.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(file)?;
    if !opened.metadata()?.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    let mut bytes = Vec::new();
    opened.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "it is larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

/// The first YAML tag in `value`, with the key path it stands at.
fn first_tag(value: &Value, at: &str) -> Option<(String, String)> {
    match value {
        Value::Tagged(tagged) => Some((at.to_owned(), tagged.tag.to_string())),
        Value::Mapping(map) => map.iter().find_map(|(k, v)| {
            let key = k.as_str().map_or_else(|| "?".to_owned(), str::to_owned);
            let path = if at.is_empty() {
                key
            } else {
                format!("{at}.{key}")
            };
            first_tag(k, &path).or_else(|| first_tag(v, &path))
        }),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| first_tag(v, &format!("{at}[{i}]"))),
        _ => None,
    }
}

/// A value that may be one item or a list, as a list.
fn list(value: Option<&Value>) -> Vec<&Value> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items.iter().collect(),
        Some(one) => vec![one],
    }
}

/// The first variable a path interpolates (`$NAME`, `${NAME…}`), if any;
/// `$$` is a literal `$`.
pub(super) fn variable_in(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let start = match bytes.get(i + 1) {
            Some(b'$') => {
                i += 2;
                continue;
            }
            Some(b'{') => i + 2,
            _ => i + 1,
        };
        let name: String = path[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        return Some(name);
    }
    None
}

impl Reads {
    /// `file` parsed with its merge keys applied; `None`, with the problem
    /// noted, when it uses a YAML tag, which the gateway does not follow.
    fn parse(&mut self, file: &Path) -> Result<Option<Value>, ModelError> {
        let mut document = read_yaml(file)?;
        if let Some(tag) = first_tag(&document, "") {
            self.problem(
                None,
                &tag.0,
                Why::Unreadable(format!("{} uses the YAML tag `{}`", file.display(), tag.1)),
            );
            return Ok(None);
        }
        merge_keys(&mut document).map_err(|e| {
            ModelError::File(format!(
                "the merge keys of {} cannot be applied: {e}",
                file.display()
            ))
        })?;
        Ok(Some(document))
    }

    /// Each top-level key outside compose's current format.
    fn top_level(&mut self, document: &Value, file: &Path) {
        for key in document.as_mapping().into_iter().flat_map(|m| m.keys()) {
            let known = key
                .as_str()
                .is_some_and(|k| TOP_LEVEL.contains(&k) || k.starts_with("x-"));
            if !known {
                let name = key.as_str().unwrap_or("?");
                self.problem(
                    None,
                    name,
                    Why::Unknown {
                        what: format!(
                            "the top-level key `{name}` of {} (compose's first file format puts services there)",
                            file.display()
                        ),
                        class: None,
                    },
                );
            }
        }
    }

    fn problem(&mut self, service: Option<&str>, key: &str, why: Why) {
        self.problems.push(Finding {
            service: service.map(str::to_owned),
            key: key.to_owned(),
            why,
        });
    }

    fn reference(&mut self, service: Option<&str>, key: &str, path: &Path) {
        let path = normalise(path).path;
        if !self.files.contains(&path) {
            self.files.push(path.clone());
        }
        self.references.push(Reference {
            service: service.map(str::to_owned),
            key: key.to_owned(),
            path,
        });
    }

    /// A file compose reads only when it exists (an implicit `.env`): it
    /// counts among the files read either way, so that its appearing is a
    /// change, and is judged when it is there.
    fn implicit(&mut self, service: Option<&str>, key: &str, path: &Path) {
        if std::fs::symlink_metadata(path).is_ok() {
            self.reference(service, key, path);
        } else if !self.files.iter().any(|f| f == path) {
            self.files.push(path.to_path_buf());
        }
    }

    /// A path as a file names it: resolved against `base`, or refused when
    /// it interpolates a variable or is not text.
    fn path_in(
        &mut self,
        service: Option<&str>,
        key: &str,
        value: &Value,
        base: &Path,
    ) -> Option<PathBuf> {
        let Some(text) = value.as_str() else {
            self.problem(
                service,
                key,
                Why::Unreadable("a path that is not text".into()),
            );
            return None;
        };
        if let Some(name) = variable_in(text) {
            self.problem(service, key, Why::Variable(name));
            return None;
        }
        if text.starts_with('~') {
            self.problem(
                service,
                key,
                Why::Unreadable(format!(
                    "the path `{text}`, which compose reads from the gateway's home directory"
                )),
            );
            return None;
        }
        // Interpolation leaves `$$` as one `$`.
        Some(normalise(&base.join(text.replace("$$", "$"))).path)
    }

    /// `include: [path | {path: path | [paths], env_file, project_directory}]`.
    fn include(&mut self, document: &Value, base: &Path, pending: &mut Vec<Pending>) {
        for entry in list(document.get("include")) {
            let (paths, env_files, project_dir) = match entry {
                Value::String(_) => (vec![entry], Vec::new(), None),
                Value::Mapping(_) => (
                    list(entry.get("path")),
                    list(entry.get("env_file")),
                    entry.get("project_directory"),
                ),
                _ => {
                    self.problem(
                        None,
                        "include",
                        Why::Unreadable(
                            "an include entry that is neither a path nor a mapping".into(),
                        ),
                    );
                    continue;
                }
            };
            let mut files = Vec::new();
            for path in paths {
                if path
                    .as_str()
                    .is_some_and(|p| p.contains("://") || p.starts_with("git@"))
                {
                    self.problem(
                        None,
                        "include",
                        Why::Unreadable("a remote include, which compose would fetch".into()),
                    );
                    continue;
                }
                if let Some(file) = self.path_in(None, "include", path, base) {
                    self.reference(None, "include", &file);
                    files.push(file);
                }
            }
            let Some(first) = files.first() else { continue };
            let dir = match project_dir {
                Some(dir) => match self.path_in(None, "include.project_directory", dir, base) {
                    Some(dir) => {
                        self.reference(None, "include.project_directory", &dir);
                        dir
                    }
                    None => continue,
                },
                None => first.parent().unwrap_or(Path::new("/")).to_path_buf(),
            };
            if env_files.is_empty() {
                self.implicit(None, "include.env_file", &dir.join(IMPLICIT_ENV_FILE));
            }
            for env in env_files {
                if let Some(env) = self.path_in(None, "include.env_file", env, base) {
                    self.reference(None, "include.env_file", &env);
                }
            }
            for file in files.into_iter().rev() {
                pending.push(Pending {
                    file,
                    base: dir.clone(),
                });
            }
        }
    }

    /// Each service's `env_file`, `label_file` and `extends.file`.
    fn services(&mut self, document: &Value, base: &Path, pending: &mut Vec<Pending>) {
        let Some(services) = document.get("services").and_then(Value::as_mapping) else {
            return;
        };
        for (name, service) in services {
            let name = name.as_str().unwrap_or("?");
            let name = Some(name);
            // `env_file: path | [path | {path, required, format}]`
            for entry in list(service.get("env_file")) {
                let path = match entry {
                    Value::Mapping(_) => entry.get("path").unwrap_or(&Value::Null),
                    other => other,
                };
                if let Some(file) = self.path_in(name, "env_file", path, base) {
                    self.reference(name, "env_file", &file);
                }
            }
            for entry in list(service.get("label_file")) {
                if let Some(file) = self.path_in(name, "label_file", entry, base) {
                    self.reference(name, "label_file", &file);
                }
            }
            if let Some(file) = service.get("extends").and_then(|e| e.get("file")) {
                if let Some(file) = self.path_in(name, "extends.file", file, base) {
                    self.reference(name, "extends.file", &file);
                    pending.push(Pending {
                        base: file.parent().unwrap_or(Path::new("/")).to_path_buf(),
                        file,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    impl Tree {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let root = std::fs::canonicalize(dir.path()).unwrap();
            Self { _dir: dir, root }
        }

        fn write(&self, relative: &str, text: &str) -> PathBuf {
            let path = self.root.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }

        fn target(&self, dir: &str, files: &[&str]) -> ComposeTarget {
            let files: Vec<String> = files
                .iter()
                .map(|f| self.root.join(f).display().to_string())
                .collect();
            ComposeTarget::from_stored(
                "app",
                "web",
                &self.root.join(dir).display().to_string(),
                &files,
                &[],
            )
            .unwrap()
        }
    }

    fn refs(reads: &Reads) -> Vec<(Option<&str>, &str, PathBuf)> {
        reads
            .references
            .iter()
            .map(|r| (r.service.as_deref(), r.key.as_str(), r.path.clone()))
            .collect()
    }

    /// The third finding of the security review: a merge key hid an env
    /// file of another team.
    #[test]
    fn merge_keys_and_anchors_are_applied() {
        let tree = Tree::new();
        tree.write(
            "app/compose.yml",
            "x-b: &b\n  env_file: /srv/team-b/.env\nservices:\n  web:\n    <<: *b\n    image: busybox\n  api:\n    <<: [*b]\n",
        );
        let reads = read(&tree.target("app", &["app/compose.yml"]), &|_| true).unwrap();
        let found = refs(&reads);
        for service in ["web", "api"] {
            assert!(
                found.contains(&(Some(service), "env_file", PathBuf::from("/srv/team-b/.env"))),
                "{service}: {found:?}"
            );
        }
    }

    /// Relative paths resolve as both tools resolve them: an override file
    /// elsewhere against the project directory, an extended file against
    /// its own.
    #[test]
    fn override_and_extended_files_resolve_as_compose_does() {
        let tree = Tree::new();
        tree.write(
            "app/compose.yml",
            "services:\n  web:\n    extends:\n      file: ../base/base.yml\n      service: b\n",
        );
        tree.write(
            "base/base.yml",
            "services:\n  b:\n    env_file: b.env\n    label_file: [labels]\n",
        );
        tree.write(
            "over/over.yml",
            "services:\n  web:\n    env_file: [{path: o.env, required: false}]\n",
        );
        let reads = read(
            &tree.target("app", &["app/compose.yml", "over/over.yml"]),
            &|_| true,
        )
        .unwrap();
        let found = refs(&reads);
        let root = &tree.root;
        for expected in [
            (Some("web"), "extends.file", root.join("base/base.yml")),
            (Some("b"), "env_file", root.join("base/b.env")),
            (Some("b"), "label_file", root.join("base/labels")),
            (Some("web"), "env_file", root.join("app/o.env")),
        ] {
            assert!(found.contains(&expected), "{expected:?} in {found:?}");
        }
        // Every file compose reads is listed, missing ones too.
        for file in [
            "app/compose.yml",
            "over/over.yml",
            "base/base.yml",
            "base/b.env",
            "app/o.env",
            "app/.env",
        ] {
            assert!(
                reads.files.contains(&root.join(file)),
                "{file}: {:?}",
                reads.files
            );
        }
    }

    /// Includes: each included project's directory, env files and own
    /// `.env`, which feeds its interpolation (the fourth finding and the
    /// medium one on `project_directory`).
    #[test]
    fn includes_bring_their_project_directory_and_env_files() {
        let tree = Tree::new();
        tree.write(
            "main/compose.yml",
            "include:\n  - sub/extra.yml\n  - path: sub2/two.yml\n    project_directory: ../other\n  - path: [sub2/three.yml]\n    env_file: three.env\nservices:\n  web:\n    image: busybox\n",
        );
        tree.write(
            "main/sub/extra.yml",
            "services:\n  x:\n    env_file: x.env\n",
        );
        tree.write("main/sub/.env", "PRIV=false\n");
        tree.write("other/.env", "TV=1\n");
        tree.write(
            "main/sub2/two.yml",
            "services:\n  two:\n    env_file: t.env\n",
        );
        tree.write(
            "main/sub2/three.yml",
            "services:\n  three:\n    image: busybox\n",
        );
        let reads = read(&tree.target("main", &["main/compose.yml"]), &|_| true).unwrap();
        let found = refs(&reads);
        let root = &tree.root;
        for expected in [
            (None, "include", root.join("main/sub/extra.yml")),
            (None, "include.env_file", root.join("main/sub/.env")),
            (Some("x"), "env_file", root.join("main/sub/x.env")),
            (None, "include.project_directory", root.join("other")),
            (None, "include.env_file", root.join("other/.env")),
            (Some("two"), "env_file", root.join("other/t.env")),
            (None, "include.env_file", root.join("main/three.env")),
        ] {
            assert!(found.contains(&expected), "{expected:?} in {found:?}");
        }
        assert!(reads.files.contains(&root.join("main/sub/.env")));
        assert!(
            !found
                .iter()
                .any(|(_, k, p)| *k == "include.env_file" && *p == root.join("main/sub2/.env"))
        );
    }

    #[test]
    fn what_cannot_be_followed_is_named() {
        let tree = Tree::new();
        tree.write(
            "app/compose.yml",
            "include:\n  - oci://registry.example.com/stack:1\nservices:\n  web:\n    env_file: ${SECRET_DIR}/x.env\n    extends: {file: \"$$literal/base.yml\", service: b}\n",
        );
        tree.write(
            "app/$literal/base.yml",
            "services:\n  b:\n    image: busybox\n",
        );
        let reads = read(&tree.target("app", &["app/compose.yml"]), &|_| true).unwrap();
        assert!(
            reads
                .files
                .contains(&tree.root.join("app/$literal/base.yml"))
        );
        let problems: Vec<String> = reads.problems.iter().map(ToString::to_string).collect();
        let text = problems.join("\n");
        assert!(text.contains("`include`: a remote include"), "{text}");
        assert!(
            text.contains("service `web`, `env_file`: the path uses the variable `SECRET_DIR`"),
            "{text}"
        );
        assert!(!text.contains("literal"), "`$$` is a literal `$`: {text}");

        tree.write(
            "tags/compose.yml",
            "services:\n  web:\n    env_file: !reset []\n",
        );
        let reads = read(&tree.target("tags", &["tags/compose.yml"]), &|_| true).unwrap();
        assert_eq!(reads.problems.len(), 1, "{:?}", reads.problems);
        assert_eq!(reads.problems[0].key, "services.web.env_file");
        assert!(
            reads.problems[0]
                .to_string()
                .contains("the YAML tag `!reset`")
        );
    }

    /// A merge inside a merged mapping is applied too.
    #[test]
    fn nested_merge_keys_are_applied() {
        let tree = Tree::new();
        tree.write(
            "app/compose.yml",
            "x-b: &b {env_file: [/srv/team-b/.env]}\nx-a: &a\n  <<: *b\nservices:\n  web: {image: busybox, <<: *a}\n",
        );
        let reads = read(&tree.target("app", &["app/compose.yml"]), &|_| true).unwrap();
        assert!(
            refs(&reads).contains(&(Some("web"), "env_file", PathBuf::from("/srv/team-b/.env"))),
            "{:?}",
            reads.references
        );
    }

    /// A file outside what the project may read is not opened (a FIFO would
    /// block, a missing file would tell it is missing), and a FIFO inside
    /// it is refused unread; `~` and the first file format are refused.
    #[test]
    fn what_is_read_is_judged_first_and_only_regular_files_are_read() {
        let tree = Tree::new();
        let fifo = tree.root.join("app/fifo.yml");
        std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        tree.write(
            "app/compose.yml",
            "services:\n  web:\n    extends: {file: /srv/team-b/compose.yml, service: web}\n  api:\n    env_file: [\"~/../srv/team-b/.env\"]\n",
        );
        let app = tree.root.join("app");
        let inside = |p: &Path| p.starts_with(&app);
        // The extended file does not exist: had it been opened, this would
        // fail saying so.
        let reads = read(&tree.target("app", &["app/compose.yml"]), &inside).unwrap();
        assert!(refs(&reads).contains(&(
            Some("web"),
            "extends.file",
            PathBuf::from("/srv/team-b/compose.yml")
        )));
        let text: Vec<String> = reads.problems.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.contains(
                "`~/../srv/team-b/.env`, which compose reads from the gateway's home directory"
            )),
            "{text:?}"
        );
        tree.write(
            "app/fifo-user.yml",
            "services:\n  web:\n    extends: {file: fifo.yml, service: x}\n",
        );
        let refused = read(&tree.target("app", &["app/fifo-user.yml"]), &inside).unwrap_err();
        assert!(
            refused.to_string().contains("it is not a regular file"),
            "{refused}"
        );
        tree.write(
            "app/old.yml",
            "web:\n  image: busybox\n  env_file: /srv/team-b/.env\n",
        );
        let reads = read(&tree.target("app", &["app/old.yml"]), &inside).unwrap();
        assert_eq!(reads.problems[0].key, "web", "{:?}", reads.problems);
        assert_eq!(reads.problems[0].why.reason(), "unknown");
    }

    #[test]
    fn variables_are_found_and_dollars_escaped() {
        assert_eq!(variable_in("${DIR}/x.env"), Some("DIR".into()));
        assert_eq!(variable_in("/srv/$TEAM/x"), Some("TEAM".into()));
        assert_eq!(variable_in("/srv/$${x}"), None);
        assert_eq!(variable_in("/srv/plain"), None);
    }
}
