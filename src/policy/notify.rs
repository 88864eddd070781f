//! Where a project's deploy results go: its `[[projects.<name>.notify]]`
//! targets and the global `[notify.smtp]`, as the loader validated them.
//! URLs, keys and passwords come from the environment and are never
//! printed: their `Debug` is redacted.

use std::fmt;

use sha2::{Digest, Sha256};

/// A value that is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Hidden<T>(pub T);

impl<T> fmt::Debug for Hidden<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How a job ended, as a notification target names it: the job's final
/// states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Interrupted,
    RolledBack,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Interrupted => "interrupted",
            Outcome::RolledBack => "rolled_back",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        EVENTS.into_iter().find(|o| o.as_str() == text)
    }
}

/// The end states a target is told about unless it names its own.
pub const EVENTS: [Outcome; 5] = [
    Outcome::Succeeded,
    Outcome::Failed,
    Outcome::TimedOut,
    Outcome::Interrupted,
    Outcome::RolledBack,
];

/// One place a project's deploy results go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    /// Stable while the target's settings stay the same: the outbox knows
    /// a delivery's target by it, across restarts and reloads.
    pub id: String,
    /// Its place in the project's list, from 1, for people.
    pub number: usize,
    pub kind: NotifyKind,
    /// The end states it is told about.
    pub events: Vec<Outcome>,
    /// The environment variables it was read from, which a self-update
    /// helper container is not given.
    pub variables: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyKind {
    /// A generic webhook, signed as Standard Webhooks specifies.
    Webhook {
        url: Hidden<reqwest::Url>,
        /// The signing key, decoded from `whsec_<base64>`.
        key: Hidden<Vec<u8>>,
    },
    /// A Slack incoming webhook (Mattermost and Rocket.Chat take the same).
    Slack { url: Hidden<reqwest::Url> },
    /// Mail through `[notify.smtp]`.
    Email { to: Vec<String> },
}

impl NotifyKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            NotifyKind::Webhook { .. } => "webhook",
            NotifyKind::Slack { .. } => "slack",
            NotifyKind::Email { .. } => "email",
        }
    }
}

impl NotifyTarget {
    /// A target, its id derived from its kind, the names of its variables
    /// and its addresses: not from the variables' values, so a rotated key
    /// or URL keeps it.
    pub fn new(
        number: usize,
        kind: NotifyKind,
        variables: Vec<String>,
        events: Vec<Outcome>,
    ) -> Self {
        let mut digest = Sha256::new();
        digest.update(kind.as_str());
        let addresses = match &kind {
            NotifyKind::Email { to } => to.as_slice(),
            _ => &[],
        };
        for setting in variables.iter().chain(addresses) {
            digest.update([0]);
            digest.update(setting);
        }
        let id = format!(
            "{}-{}",
            kind.as_str(),
            &hex::encode(digest.finalize())[..12]
        );
        Self {
            id,
            number,
            kind,
            events,
            variables,
        }
    }

    pub fn wants(&self, outcome: Outcome) -> bool {
        self.events.contains(&outcome)
    }
}

/// How mail is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub from: String,
    /// User name and password, when the server wants a login.
    pub login: Option<(String, Hidden<String>)>,
    /// The environment variables they were read from.
    pub variables: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required.
    StartTls,
    /// TLS from the first byte.
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

impl SmtpTls {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "starttls" => Some(SmtpTls::StartTls),
            "tls" => Some(SmtpTls::Tls),
            "none" => Some(SmtpTls::None),
            _ => None,
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_settings_not_secrets_and_nothing_is_printed() {
        let url = |u: &str| Hidden(reqwest::Url::parse(u).unwrap());
        let a = NotifyTarget::new(
            1,
            NotifyKind::Slack {
                url: url("https://hooks.example/secret-token"),
            },
            vec!["SLACK_URL".into()],
            EVENTS.to_vec(),
        );
        let b = NotifyTarget::new(
            1,
            NotifyKind::Slack {
                url: url("https://hooks.example/other-token"),
            },
            vec!["SLACK_URL".into()],
            vec![Outcome::Failed],
        );
        let c = NotifyTarget::new(
            1,
            NotifyKind::Slack {
                url: url("https://hooks.example/secret-token"),
            },
            vec!["OTHER_URL".into()],
            EVENTS.to_vec(),
        );
        assert_eq!(
            a.id, b.id,
            "a new URL in the same variable is the same target"
        );
        assert_ne!(a.id, c.id);
        assert!(a.id.starts_with("slack-"));
        let printed = format!("{a:?}");
        assert!(!printed.contains("secret-token"), "{printed}");
    }
}
