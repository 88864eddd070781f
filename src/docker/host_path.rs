//! Host paths as the kernel reads them: folded textually first, then
//! resolved through the filesystem where they exist.

use std::path::{Component, Path, PathBuf};

/// A path made absolute and free of `.` and `..` without touching the
/// filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    pub path: PathBuf,
    /// Whether a `..` climbed above the root, where the kernel stays: a
    /// path compose reads means the root there, but no path compose writes
    /// into a label has one.
    pub above_root: bool,
}

/// `path` relative to the root, with `.` and `..` folded away: `/srv/app/../x`
/// is `/srv/x`, and `/../etc` is `/etc` with [`Normalised::above_root`] set.
pub fn normalise(path: &Path) -> Normalised {
    let mut out = PathBuf::from("/");
    let mut above_root = false;
    for component in path.components() {
        match component {
            Component::ParentDir => above_root |= !out.pop(),
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Normalised {
        path: out,
        above_root,
    }
}

/// The real path `path` has or will have: the nearest existing ancestor's
/// real path, with the rest (which does not exist, so holds no symlink)
/// appended.
pub fn real_for_judging(path: &Path) -> PathBuf {
    let path = normalise(path).path;
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(real, |acc, part| acc.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_fold_and_a_climb_above_the_root_stays_there() {
        let n = normalise(Path::new("/srv/app/./../x"));
        assert_eq!(n.path, PathBuf::from("/srv/x"));
        assert!(!n.above_root);
        let n = normalise(Path::new("/srv/../../etc"));
        assert_eq!(n.path, PathBuf::from("/etc"));
        assert!(n.above_root);
        assert_eq!(normalise(Path::new("a/b/..")).path, PathBuf::from("/a"));
    }
}
