//! Validated names.
//!
//! Text from requests, the policy file and container labels is converted into
//! these types once, at the edge. Code that holds one never checks it again,
//! and nothing that reaches a command line or the Engine API is a bare string.

use std::fmt;

/// The longest container name accepted: one alphanumeric character plus 254.
pub const MAX_CONTAINER_NAME: usize = 255;

/// The container names a request may name, as a regular expression for
/// clients and the document (the check itself needs no regex engine).
pub const CONTAINER_NAME_PATTERN: &str = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$";

/// The longest `wait` any request may ask for, in seconds (a policy's
/// `max_wait_secs` may lower it).
pub const MAX_WAIT_SECS: u64 = 86_400;

/// Why a name was refused; shown to the caller as is, so it never echoes input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {0} characters")]
    TooLong(usize),
    #[error("must start with a letter or digit")]
    BadStart,
    #[error("may contain only letters, digits, '_', '.' and '-'")]
    BadCharacter,
}

/// Checks `^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,max-1}$` without a regex engine.
fn check_docker_name(text: &str, max: usize) -> Result<(), NameError> {
    let bytes = text.as_bytes();
    let Some(first) = bytes.first() else {
        return Err(NameError::Empty);
    };
    if bytes.len() > max {
        return Err(NameError::TooLong(max));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(NameError::BadStart);
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The longest name accepted.
            pub const MAX_LEN: usize = $max;

            pub fn parse(text: &str) -> Result<Self, NameError> {
                check_docker_name(text, $max)?;
                Ok(Self(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

validated_name!(
    /// A container name as Docker allows it: `^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$`.
    /// It can never start with `-` or `/`, so it cannot be read as an option or a path.
    ContainerName,
    MAX_CONTAINER_NAME
);

validated_name!(
    /// A project of the policy, as it appears in `X-Project` and in logs.
    ProjectName,
    64
);

validated_name!(
    /// A compose service name taken from the `com.docker.compose.service` label.
    ServiceName,
    255
);

validated_name!(
    /// A Docker Swarm service's name, as a request names it.
    SwarmServiceName,
    255
);

/// A compose project name from the `com.docker.compose.project` label.
///
/// Compose itself only creates names matching `^[a-z0-9][a-z0-9_-]*$`; anything
/// else on a container means the label was written by hand, so it is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComposeProjectName(String);

impl ComposeProjectName {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        check_docker_name(text, 255)?;
        if text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            Ok(Self(text.to_owned()))
        } else {
            Err(NameError::BadCharacter)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ComposeProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The two things a project may ask for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// `compose pull <service>` then `compose up -d <service>`.
    Pull,
    /// `compose up -d --build <service>`.
    Build,
}

impl Action {
    pub const ALL: [Action; 2] = [Action::Pull, Action::Build];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Build => "build",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// The seed's `message` field for this action.
    pub fn progress_word(self) -> &'static str {
        match self {
            Action::Pull => "pulling",
            Action::Build => "building",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job id: 128 bits from the operating system's CSPRNG, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId([u8; 16]);

impl JobId {
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        Self(bytes)
    }

    /// Parses the 32-hex-digit form; anything else is not a job id.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl serde::Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        JobId::parse(&text).ok_or_else(|| serde::de::Error::custom("not a 32-hex-digit job id"))
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_the_spec_pattern() {
        for ok in ["a", "billing-web", "A.b_c-1", "0", &"x".repeat(255)] {
            assert!(
                ContainerName::parse(ok).is_ok(),
                "{ok:?} should be accepted"
            );
        }
        let refused = [
            ("", NameError::Empty),
            ("-f", NameError::BadStart),
            ("_x", NameError::BadStart),
            (".hidden", NameError::BadStart),
            ("/web", NameError::BadStart),
            ("a;id", NameError::BadCharacter),
            ("$(id)", NameError::BadStart),
            ("a$(id)", NameError::BadCharacter),
            ("a/../x", NameError::BadCharacter),
            ("a b", NameError::BadCharacter),
            ("a\nb", NameError::BadCharacter),
            ("a\0b", NameError::BadCharacter),
            ("caf\u{e9}", NameError::BadCharacter),
        ];
        for (text, why) in refused {
            assert_eq!(ContainerName::parse(text), Err(why), "{text:?}");
        }
        assert_eq!(
            ContainerName::parse(&"x".repeat(256)),
            Err(NameError::TooLong(255))
        );
    }

    #[test]
    fn compose_project_names_are_lowercase() {
        assert!(ComposeProjectName::parse("billing_2-x").is_ok());
        assert!(ComposeProjectName::parse("Billing").is_err());
        assert!(ComposeProjectName::parse("a.b").is_err());
        assert!(ComposeProjectName::parse("-p").is_err());
    }

    #[test]
    fn job_ids_round_trip_and_differ() {
        let a = JobId::random();
        let b = JobId::random();
        assert_ne!(a, b);
        assert_eq!(JobId::parse(&a.to_string()), Some(a));
        assert_eq!(a.to_string().len(), 32);
        assert_eq!(JobId::parse("xyz"), None);
        assert_eq!(JobId::parse(&"g".repeat(32)), None);
    }

    #[test]
    fn actions_parse_only_known_words() {
        assert_eq!(Action::parse("pull"), Some(Action::Pull));
        assert_eq!(Action::parse("build"), Some(Action::Build));
        assert_eq!(Action::parse("Pull"), None);
        assert_eq!(Action::parse("rm"), None);
    }
}
