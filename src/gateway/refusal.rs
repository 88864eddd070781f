//! Refusals: what a request that runs nothing gets, in domain terms.

use std::borrow::Cow;

use crate::admission::auth::AuthError;
use crate::docker::{EngineError, TargetError};
use crate::jobs::StoreError;
use crate::names::NameError;

/// Why a request is refused, as a kind the HTTP layer maps to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request is malformed: its body, a name, a parameter.
    Invalid,
    /// Authentication failed.
    Unauthenticated,
    /// Authenticated, but outside the project's policy.
    Forbidden,
    /// Authenticated and allowed, but there is no such container or job.
    NotFound,
    /// The body did not arrive in time.
    BodyTimeout,
    /// The body is over the size limit.
    BodyTooLarge,
    /// The body is not sent as JSON.
    NotJson,
    /// The container exists but cannot be deployed.
    Undeployable,
    /// A bound on one client or project was reached; try again later.
    RateLimited,
    /// The engine, the store or the gateway itself cannot take it now.
    Unavailable,
}

impl RefusalKind {
    /// The kind's name, as the audit log shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::Invalid => "invalid",
            RefusalKind::Unauthenticated => "unauthenticated",
            RefusalKind::Forbidden => "forbidden",
            RefusalKind::NotFound => "not_found",
            RefusalKind::BodyTimeout => "body_timeout",
            RefusalKind::BodyTooLarge => "body_too_large",
            RefusalKind::NotJson => "not_json",
            RefusalKind::Undeployable => "undeployable",
            RefusalKind::RateLimited => "rate_limited",
            RefusalKind::Unavailable => "unavailable",
        }
    }
}

/// A request that runs nothing, and why, in words safe to send to anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// Stable and machine-readable, e.g. `signature_mismatch`.
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// For `invalid_token`: the check the token failed.
    pub rule: Option<&'static str>,
}

impl Refusal {
    pub fn new(
        kind: RefusalKind,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            retry_after: None,
            rule: None,
        }
    }

    pub(super) fn rule(mut self, rule: &'static str) -> Self {
        self.rule = Some(rule);
        self
    }

    pub(super) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub(super) fn bad_name(e: NameError) -> Self {
        Refusal::new(
            RefusalKind::Invalid,
            "invalid_container_name",
            format!(
                "container_name {e}; the pattern is {}",
                crate::names::CONTAINER_NAME_PATTERN
            ),
        )
    }

    pub(super) fn engine(e: &EngineError) -> Self {
        Refusal::new(
            RefusalKind::Unavailable,
            "engine_unavailable",
            "the Docker engine does not answer; try again later",
        )
        .retry_after(match e {
            EngineError::Unreachable(_) => 5,
            EngineError::Api(_) | EngineError::Unsupported(_) => 1,
        })
    }

    pub(super) fn store(_: &StoreError) -> Self {
        Refusal::new(
            RefusalKind::Unavailable,
            "store_unavailable",
            "the job could not be recorded; nothing was run",
        )
        .retry_after(5)
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        Refusal::new(RefusalKind::Unauthenticated, e.code(), e.message())
    }
}

impl From<TargetError> for Refusal {
    fn from(e: TargetError) -> Self {
        Refusal::new(RefusalKind::Undeployable, e.code(), e.to_string())
    }
}

/// Why reading a body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    TimedOut,
    Broken,
}
