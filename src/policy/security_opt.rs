//! A service's `security_opt` entry, as the engine reads it: `key=value`,
//! or the older `key:value`, or `no-new-privileges` alone.

use std::fmt;

/// One `security_opt` entry the gateway knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityOpt {
    /// `no-new-privileges`, `…:true`, `…=false`.
    NoNewPrivileges(bool),
    /// An entry that lifts a confinement: `label=disable`,
    /// `seccomp=unconfined`, `apparmor=unconfined`,
    /// `systempaths=unconfined`.
    Unconfined(&'static str),
    /// A named profile: `apparmor=<profile>`, `seccomp=<file>` or
    /// `label=<user|role|type|level>:<value>`.
    Profile { kind: ProfileKind, value: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    Apparmor,
    Seccomp,
    Label,
}

impl ProfileKind {
    fn as_str(self) -> &'static str {
        match self {
            ProfileKind::Apparmor => "apparmor",
            ProfileKind::Seccomp => "seccomp",
            ProfileKind::Label => "label",
        }
    }
}

/// The SELinux label parts an entry may set.
const LABEL_PARTS: [&str; 4] = ["user", "role", "type", "level"];

impl SecurityOpt {
    /// Reads an entry; `None` for one the gateway does not know.
    pub fn parse(text: &str) -> Option<Self> {
        if text == "no-new-privileges" {
            return Some(Self::NoNewPrivileges(true));
        }
        // `=` separates when present; the older form uses the first `:`.
        let (key, value) = text.split_once('=').or_else(|| text.split_once(':'))?;
        match (key, value) {
            ("no-new-privileges", "true") => Some(Self::NoNewPrivileges(true)),
            ("no-new-privileges", "false") => Some(Self::NoNewPrivileges(false)),
            ("label", "disable") => Some(Self::Unconfined("label=disable")),
            ("seccomp", "unconfined") => Some(Self::Unconfined("seccomp=unconfined")),
            ("apparmor", "unconfined") => Some(Self::Unconfined("apparmor=unconfined")),
            ("systempaths", "unconfined") => Some(Self::Unconfined("systempaths=unconfined")),
            ("apparmor", name) if is_profile_name(name) => Some(Self::Profile {
                kind: ProfileKind::Apparmor,
                value: name.to_owned(),
            }),
            ("seccomp", file) if file.starts_with('/') && is_printable(file) => {
                Some(Self::Profile {
                    kind: ProfileKind::Seccomp,
                    value: file.to_owned(),
                })
            }
            ("label", part) => {
                let (name, value) = part.split_once(':')?;
                (LABEL_PARTS.contains(&name) && is_profile_name(value)).then(|| Self::Profile {
                    kind: ProfileKind::Label,
                    value: part.to_owned(),
                })
            }
            _ => None,
        }
    }

    /// Whether this names a profile, which a project's `security_opts`
    /// must list.
    pub fn is_profile(&self) -> bool {
        matches!(self, Self::Profile { .. })
    }

    /// The host file a `seccomp` profile is read from.
    pub fn profile_file(&self) -> Option<&str> {
        match self {
            Self::Profile {
                kind: ProfileKind::Seccomp,
                value,
            } => Some(value),
            _ => None,
        }
    }
}

fn is_printable(text: &str) -> bool {
    !text.is_empty() && text.len() <= 4096 && !text.chars().any(char::is_control)
}

fn is_profile_name(text: &str) -> bool {
    is_printable(text)
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c))
}

impl fmt::Display for SecurityOpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoNewPrivileges(on) => write!(f, "no-new-privileges={on}"),
            Self::Unconfined(text) => f.write_str(text),
            Self::Profile { kind, value } => write!(f, "{}={value}", kind.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_read_in_both_forms() {
        for text in [
            "no-new-privileges",
            "no-new-privileges:true",
            "no-new-privileges=true",
        ] {
            assert_eq!(
                SecurityOpt::parse(text),
                Some(SecurityOpt::NoNewPrivileges(true))
            );
        }
        assert_eq!(
            SecurityOpt::parse("no-new-privileges:false"),
            Some(SecurityOpt::NoNewPrivileges(false))
        );
        for text in [
            "label:disable",
            "label=disable",
            "seccomp:unconfined",
            "apparmor=unconfined",
            "systempaths=unconfined",
        ] {
            assert!(
                matches!(SecurityOpt::parse(text), Some(SecurityOpt::Unconfined(_))),
                "{text}"
            );
        }
        let seccomp = SecurityOpt::parse("seccomp:/etc/docker/strict.json").unwrap();
        assert_eq!(seccomp.to_string(), "seccomp=/etc/docker/strict.json");
        assert_eq!(seccomp.profile_file(), Some("/etc/docker/strict.json"));
        assert_eq!(
            SecurityOpt::parse("label:type:svirt_apache_t")
                .unwrap()
                .to_string(),
            "label=type:svirt_apache_t"
        );
        assert_eq!(
            SecurityOpt::parse("apparmor=docker-nginx")
                .unwrap()
                .to_string(),
            "apparmor=docker-nginx"
        );
        for unknown in [
            "seccomp=relative.json",
            "label=nested",
            "label=type:",
            "writable-cgroups=true",
            "no-new-privileges=yes",
            "apparmor=a b",
            "",
        ] {
            assert_eq!(SecurityOpt::parse(unknown), None, "{unknown}");
        }
    }
}
