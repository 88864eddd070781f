//! Override compose files that pin one service to one image digest.
//!
//! A pinned deploy runs compose with the user's files and one more,
//! `<state_dir>/pins/<compose project>/<service>/<digest hex>.json`, which
//! sets only that service's `image` (JSON is YAML, and the override carries
//! no `version`, so compose merges it into files of any version). The user's
//! files are never edited. Compose records the override in the container's
//! `config_files` label; the gateway recognises its own files there and
//! leaves them out of the next deploy's files, so an unpinned deploy returns
//! the service to its compose file's image. A file stays while a container
//! may still name it, and is removed once the service runs without it.

use std::io;
use std::path::{Path, PathBuf};

use super::image_ref::ImagePin;

const SUFFIX: &str = ".json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinFiles {
    /// Absolute: compose runs in the project's directory.
    dir: PathBuf,
}

impl PinFiles {
    pub fn new(state_dir: &Path) -> Self {
        let dir = state_dir.join("pins");
        Self {
            dir: std::path::absolute(&dir).unwrap_or(dir),
        }
    }

    fn service_dir(&self, project: &str, service: &str) -> PathBuf {
        self.dir.join(project).join(service)
    }

    /// Where the override for `pin` of this service lives.
    pub fn path(&self, project: &str, service: &str, pin: &ImagePin) -> PathBuf {
        self.service_dir(project, service)
            .join(format!("{}{SUFFIX}", pin.hex()))
    }

    /// Whether `path` is one of this service's overrides, by its text (the
    /// labels name it as it was written).
    pub fn is_pin_of(&self, path: &Path, project: &str, service: &str) -> bool {
        path.parent() == Some(self.service_dir(project, service).as_path())
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(SUFFIX))
                .is_some_and(|hex| {
                    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                })
    }

    /// Writes the override for `pin` (whole, through a rename) and returns
    /// its path.
    pub fn write(&self, project: &str, service: &str, pin: &ImagePin) -> io::Result<PathBuf> {
        let path = self.path(project, service, pin);
        let dir = self.service_dir(project, service);
        std::fs::create_dir_all(&dir)?;
        let document = serde_json::json!({
            "services": { service: { "image": pin.to_string() } }
        });
        let temporary = dir.join(format!(".{}.tmp", pin.hex()));
        std::fs::write(&temporary, document.to_string())?;
        std::fs::rename(&temporary, &path)?;
        Ok(path)
    }

    /// Removes this service's overrides except `keep`.
    pub fn retain(&self, project: &str, service: &str, keep: Option<&Path>) -> io::Result<()> {
        let entries = match std::fs::read_dir(self.service_dir(project, service)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            if Some(path.as_path()) != keep && self.is_pin_of(&path, project, service) {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_written_recognised_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let pins = PinFiles::new(&state);
        let one =
            ImagePin::parse(&format!("127.0.0.1:5000/app@sha256:{}", "a".repeat(64))).unwrap();
        let two =
            ImagePin::parse(&format!("127.0.0.1:5000/app@sha256:{}", "b".repeat(64))).unwrap();
        let path = pins.write("shop", "web", &one).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["services"]["web"]["image"], one.to_string());
        assert!(pins.is_pin_of(&path, "shop", "web"));
        assert!(!pins.is_pin_of(&path, "shop", "db"));
        assert!(!pins.is_pin_of(&path, "other", "web"));
        assert!(!pins.is_pin_of(&state.join("pins/shop/web/x.json"), "shop", "web"));
        assert!(!pins.is_pin_of(Path::new("/srv/shop/compose.yml"), "shop", "web"));

        let second = pins.write("shop", "web", &two).unwrap();
        pins.retain("shop", "web", Some(&second)).unwrap();
        assert!(!path.exists() && second.exists());
        pins.retain("shop", "web", None).unwrap();
        assert!(!second.exists());
        pins.retain("nothing", "here", None).unwrap();
    }
}
