//! Sessions of the web page's viewers: a value signed with a key kept in
//! `state_dir`, naming the viewer, the generation it was issued in and
//! when it ends.
//!
//! Rules:
//! - a session lasts [`LIFETIME_SECS`] from its sign-in, by the gateway's
//!   clock;
//! - signing out and reloading the policy raise the generation, so every
//!   session issued before stops working (a cookie sent again after a
//!   sign-out is refused);
//! - the key and the generation are written 0600 in `state_dir`, so a
//!   restart neither ends sessions nor brings an ended one back.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How long a session lasts.
pub const LIFETIME_SECS: u64 = 12 * 60 * 60;

/// The file holding the key and the generation.
const FILE: &str = "ui-session";

/// The signing key and the generation in force.
pub struct Sessions {
    key: Vec<u8>,
    generation: Mutex<u64>,
    path: PathBuf,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

impl Sessions {
    /// Reads `<state_dir>/ui-session`, writing a new key the first time.
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        let path = state_dir.join(FILE);
        let read = std::fs::read_to_string(&path);
        let parsed = read.as_deref().ok().and_then(|text| {
            let mut lines = text.lines();
            let key = hex::decode(lines.next()?).ok().filter(|k| k.len() == 32)?;
            let generation = lines.next()?.parse().ok()?;
            Some((key, generation))
        });
        let sessions = match parsed {
            Some((key, generation)) => Self {
                key,
                generation: Mutex::new(generation),
                path,
            },
            None => {
                let mut key = vec![0u8; 32];
                getrandom::fill(&mut key).map_err(std::io::Error::other)?;
                let sessions = Self {
                    key,
                    generation: Mutex::new(0),
                    path,
                };
                std::fs::create_dir_all(state_dir)?;
                sessions.write(0)?;
                sessions
            }
        };
        Ok(sessions)
    }

    fn write(&self, generation: u64) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let next = self.path.with_extension("next");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&next)?;
        writeln!(file, "{}\n{generation}", hex::encode(&self.key))?;
        file.sync_all()?;
        std::fs::rename(&next, &self.path)
    }

    fn mac(&self, message: &str) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(message.as_bytes());
        mac
    }

    fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session of `viewer` from `now` (Unix seconds): the cookie's value.
    pub fn issue(&self, viewer: &str, now: u64) -> String {
        let message = format!(
            "{viewer}.{}.{}",
            self.generation(),
            now.saturating_add(LIFETIME_SECS)
        );
        let mac = hex::encode(self.mac(&message).finalize().into_bytes());
        format!("{message}.{mac}")
    }

    /// The viewer a cookie's value names, when it is signed with the key,
    /// of the generation in force, and not past its end at `now`.
    pub fn viewer<'c>(&self, value: &'c str, now: u64) -> Option<&'c str> {
        let (message, mac) = value.rsplit_once('.')?;
        let mac = hex::decode(mac).ok()?;
        // Compared in constant time by the `hmac` crate.
        self.mac(message).verify_slice(&mac).ok()?;
        let mut parts = message.rsplitn(3, '.');
        let expires: u64 = parts.next()?.parse().ok()?;
        let generation: u64 = parts.next()?.parse().ok()?;
        let viewer = parts.next()?;
        (generation == self.generation() && now < expires).then_some(viewer)
    }

    /// Ends every session issued so far: a sign-out, or a policy reload.
    pub fn end_all(&self) -> std::io::Result<()> {
        let mut generation = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        *generation += 1;
        self.write(*generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_at_its_time_at_a_new_generation_and_when_altered() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::open(dir.path()).unwrap();
        let cookie = sessions.issue("ops.team", 1_000);
        assert_eq!(sessions.viewer(&cookie, 1_000), Some("ops.team"));
        assert_eq!(
            sessions.viewer(&cookie, 1_000 + LIFETIME_SECS - 1),
            Some("ops.team")
        );
        assert_eq!(sessions.viewer(&cookie, 1_000 + LIFETIME_SECS), None);
        let forged = cookie.replacen("ops.team", "admin", 1);
        assert_eq!(sessions.viewer(&forged, 1_000), None);
        // The key and generation survive a restart.
        let again = Sessions::open(dir.path()).unwrap();
        assert_eq!(again.viewer(&cookie, 1_000), Some("ops.team"));
        again.end_all().unwrap();
        assert_eq!(again.viewer(&cookie, 1_000), None);
        let after = Sessions::open(dir.path()).unwrap();
        assert_eq!(
            after.viewer(&cookie, 1_000),
            None,
            "an ended session stays ended"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
