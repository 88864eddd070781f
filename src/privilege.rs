//! Dropping root when started as root in the container image.
//!
//! The image starts as root so that the seed tool's compose example (socket
//! mounted, no `group_add`) keeps working, and `serve` then becomes the
//! unprivileged user named by `DELIVERY_RUN_AS`, keeping only the Docker
//! socket's group. Started as any other user, nothing happens.

use std::ffi::{CStr, CString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The Docker socket this process will use: `DOCKER_HOST` when it is a
/// `unix://` address, else the default.
pub fn docker_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => PathBuf::from(&host["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// Why root could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("internal error: root must be dropped before any thread starts, and {0} run")]
    Threads(usize),
    #[error("DELIVERY_RUN_AS=`{0}` is not a user name")]
    BadName(String),
    #[error("DELIVERY_RUN_AS: no user `{0}` in /etc/passwd")]
    NoUser(String),
    #[error("cannot become `{user}`: {source}")]
    Become {
        user: String,
        source: std::io::Error,
    },
}

/// Becomes `user` with the socket's group as its only supplementary group.
/// Must run before any thread starts: it sets `HOME` for the new user.
pub fn drop_root(user: &str, socket: &Path) -> Result<(), PrivilegeError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |tasks| tasks.count());
    if threads != 1 {
        return Err(PrivilegeError::Threads(threads));
    }
    let name = CString::new(user).map_err(|_| PrivilegeError::BadName(user.to_owned()))?;
    // SAFETY: getpwnam returns null or a pointer to a static record, read at once.
    let (uid, gid, home) = unsafe {
        let entry = libc::getpwnam(name.as_ptr());
        if entry.is_null() {
            return Err(PrivilegeError::NoUser(user.to_owned()));
        }
        let home = CStr::from_ptr((*entry).pw_dir)
            .to_string_lossy()
            .into_owned();
        ((*entry).pw_uid, (*entry).pw_gid, home)
    };
    let groups: Vec<libc::gid_t> = std::fs::metadata(socket)
        .map(|m| m.gid())
        .into_iter()
        .collect();
    // SAFETY: plain system calls on values we own; order matters (groups and
    // gid while still root, uid last).
    let failed = unsafe {
        libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
    };
    if failed {
        return Err(PrivilegeError::Become {
            user: user.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: called before the runtime or any other thread starts.
    unsafe { std::env::set_var("HOME", home) };
    Ok(())
}
