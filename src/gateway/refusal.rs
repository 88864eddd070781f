//! Refusals: what a request that runs nothing gets, in domain terms: a
//! code of the catalogue ([`crate::catalogue`]) and a message safe to send.

use std::borrow::Cow;

pub use crate::catalogue::{Code, Operation, Operations, RefusalKind};

use crate::auth::signature::AuthError;
use crate::docker::{EngineError, TargetError};
use crate::names::NameError;
use crate::store::StoreError;

/// A request that runs nothing, and why, in words safe to send to anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: Code,
    pub message: Cow<'static, str>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// For `invalid_token`: the check the token failed.
    pub rule: Option<&'static str>,
    /// For `compose_model_not_allowed`: each thing the judge refused.
    pub findings: Vec<crate::docker::model::Finding>,
}

impl Refusal {
    pub fn new(code: Code, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            rule: None,
            findings: Vec::new(),
        }
    }

    pub fn kind(&self) -> RefusalKind {
        self.code.kind()
    }

    pub(super) fn rule(mut self, rule: &'static str) -> Self {
        self.rule = Some(rule);
        self
    }

    /// The judge's findings, which the problem document lists.
    pub fn findings(mut self, findings: Vec<crate::docker::model::Finding>) -> Self {
        self.findings = findings;
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub(super) fn bad_name(e: NameError) -> Self {
        Refusal::new(
            Code::InvalidContainerName,
            format!(
                "container_name {e}; the pattern is {}",
                crate::names::CONTAINER_NAME_PATTERN
            ),
        )
    }

    pub(super) fn engine(e: &EngineError) -> Self {
        Refusal::new(
            Code::EngineUnavailable,
            "the Docker engine does not answer; try again later",
        )
        .retry_after(match e {
            EngineError::Unreachable(_) => 5,
            EngineError::Api(_) | EngineError::Unsupported(_) => 1,
        })
    }

    pub(super) fn store(e: &StoreError) -> Self {
        tracing::error!(error = %e, "the job store failed");
        Refusal::new(
            Code::StoreUnavailable,
            "the job could not be recorded; nothing was run",
        )
        .retry_after(5)
    }
}

impl From<AuthError> for Code {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::MissingTimestamp => Code::MissingTimestamp,
            AuthError::InvalidTimestamp => Code::InvalidTimestamp,
            AuthError::TimestampOutOfWindow { .. } => Code::TimestampOutOfWindow,
            AuthError::MissingSignature => Code::MissingSignature,
            AuthError::InvalidSignature => Code::InvalidSignature,
            AuthError::MissingProject => Code::MissingProject,
            AuthError::InvalidProject => Code::InvalidProject,
            AuthError::SignatureMismatch => Code::SignatureMismatch,
        }
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        Refusal::new(e.into(), e.message())
    }
}

impl From<TargetError> for Refusal {
    fn from(e: TargetError) -> Self {
        let code = match &e {
            TargetError::NotCompose => Code::NotComposeManaged,
            TargetError::MissingLabel(_) => Code::ComposeLabelMissing,
            TargetError::Untrusted(_) => Code::ComposeLabelUntrusted,
            TargetError::InvalidLabel { .. } => Code::ComposeLabelInvalid,
            TargetError::NotVisible { .. } | TargetError::RelativeNotFound { .. } => {
                Code::ComposeFileNotVisible
            }
        };
        Refusal::new(code, e.to_string())
    }
}

/// Why reading a body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    TimedOut,
    Broken,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_answer_some_request() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text}"
            );
            let routing = matches!(
                code.kind(),
                RefusalKind::NotFound | RefusalKind::MethodNotAllowed
            ) && code.operations() == Operations::NONE;
            assert!(
                routing
                    || Code::ONLY_JOBS.contains(code)
                    || Operation::ALL
                        .iter()
                        .any(|o| code.operations().contains(*o)),
                "{text} answers no operation"
            );
        }
    }
}
