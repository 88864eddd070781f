//! Authentication of a deploy request, by either credential: an HMAC
//! signature (steps 2 to 5) or a CI's OpenID Connect token. Both end with
//! the project that authenticated, the parsed body, and the replay entry
//! that makes the request single-use.

use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{
    Body, BodyError, Code, DeployCall, Gateway, NamedTarget, Refusal, Wanted, named_project,
    parse_body, replay_key,
};
use crate::auth::oidc::{self, KeyError, TokenRule, Verified};
use crate::auth::signature::{self, AuthError};
use crate::jobs::ReplayMark;
use crate::policy::{KeySource, Mismatch, Policy, Project};
use crate::record::Requester;

/// An authenticated deploy request.
pub(super) struct Admitted<'p> {
    pub(super) project: &'p Project,
    pub(super) wanted: Wanted,
    pub(super) mark: ReplayMark,
    pub(super) valid: Validity,
    pub(super) requester: Requester,
}

/// Until when the credential admits the request.
pub(super) enum Validity {
    /// The signed timestamp, within the tolerance.
    Window { timestamp: u64, tolerance: u64 },
    /// The token's `exp`, with the leeway.
    Token { expires_at: u64 },
}

/// The replay key of a token: its issuer and `jti`, apart from every MAC.
fn token_replay_key(token: &Verified) -> crate::auth::replay::ReplayKey {
    let digest = Sha256::new()
        .chain_update(b"delivery-hook oidc\0")
        .chain_update(token.issuer.as_bytes())
        .chain_update([0])
        .chain_update(token.jti.as_bytes())
        .finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// What an authenticated body asks for: read again unless it was read to
/// find the candidates.
fn wanted(early: Option<Body>, body: &[u8], rollback: bool) -> Result<Wanted, Refusal> {
    match early {
        Some(early) => early,
        None => parse_body(body, rollback)?,
    }
    .wanted()
}

fn invalid_token(rule: TokenRule) -> Refusal {
    Refusal::new(Code::InvalidToken, rule.message()).rule(rule.as_str())
}

fn token_not_allowed() -> Refusal {
    Refusal::new(
        Code::TokenNotAllowed,
        "the token is valid, but its claims match no oidc rule of this project",
    )
}

impl Gateway {
    /// Reads the body within the server's limits.
    async fn read_checked<F, Fut>(&self, policy: &Policy, read_body: F) -> Result<Vec<u8>, Refusal>
    where
        F: FnOnce(usize) -> Fut,
        Fut: Future<Output = Result<Vec<u8>, BodyError>>,
    {
        let limit = policy.server.max_body_bytes;
        read_body(limit).await.map_err(|e| match e {
            BodyError::TooLarge => Refusal::new(
                Code::BodyTooLarge,
                format!("the body is larger than {limit} bytes"),
            ),
            BodyError::TimedOut => {
                Refusal::new(Code::BodyTimeout, "the body did not arrive in time")
            }
            BodyError::Broken => Refusal::new(Code::InvalidBody, "the body could not be read"),
        })
    }

    /// The projects a request may act for: `X-Project`'s, or those whose
    /// patterns allow what the body names. The body is parsed for the name
    /// only; it is returned when it was.
    fn candidates<'p>(
        policy: &'p Policy,
        named: Option<Option<&'p Project>>,
        body: &[u8],
        rollback: bool,
    ) -> Result<(Vec<&'p Project>, Option<Body>), Refusal> {
        Ok(match named {
            Some(project) => (project.into_iter().collect(), None),
            None => {
                let early = parse_body(body, rollback)?;
                let candidates = match &early.named {
                    NamedTarget::Container(name) => policy.candidates(name),
                    NamedTarget::Service(name) => policy.service_candidates(name),
                };
                (candidates, Some(early))
            }
        })
    }

    /// An HMAC-signed request: the headers, the body, and the MAC over it
    /// with the keys of the candidate projects.
    pub(super) async fn admit_signed<'p, F, Fut>(
        &self,
        policy: &'p Policy,
        call: &DeployCall<'_>,
        read_body: F,
    ) -> Result<Admitted<'p>, Refusal>
    where
        F: FnOnce(usize) -> Fut,
        Fut: Future<Output = Result<Vec<u8>, BodyError>>,
    {
        let fail = |e: AuthError| self.auth_failed(policy, call.client, e);
        let tolerance = policy.server.timestamp_tolerance_secs;
        let signed = self.signed_headers(policy, call.headers).map_err(fail)?;
        let named = match call.headers.project {
            Some(name) => Some(named_project(policy, name).map_err(fail)?),
            None => None,
        };
        let body = self.read_checked(policy, read_body).await?;
        let (candidates, early) = Self::candidates(policy, named, &body, call.rollback)?;
        let (project, key) = signed.signer(&candidates, &body).map_err(fail)?;
        let wanted = wanted(early, &body, call.rollback)?;
        let (timestamp, signature) = (signed.timestamp, signed.signature);
        // An entry outlives every moment at which its request can still be
        // admitted: the window's end, plus the time a body may take to
        // arrive after the headers, plus a second for the clock's rounding.
        let expires_at = timestamp
            .secs
            .saturating_add(tolerance)
            .saturating_add(policy.server.request_timeout_secs)
            .saturating_add(1);
        Ok(Admitted {
            project,
            wanted,
            mark: ReplayMark {
                key: replay_key(&signature),
                expires_at,
            },
            valid: Validity::Window {
                timestamp: timestamp.secs,
                tolerance,
            },
            requester: Requester::Key {
                index: u32::try_from(key).unwrap_or(u32::MAX),
            },
        })
    }

    /// A client address with too many recent failures is turned away
    /// before anything of its request is read.
    pub(super) fn check_throttle(&self, policy: &Policy, client: IpAddr) -> Result<(), Refusal> {
        let window = Duration::from_secs(policy.server.auth_failure_window_secs);
        self.throttle
            .check(client, self.clock.now(), policy.server.auth_failure_limit, window)
            .map_err(|wait| {
                Refusal::new(Code::TooManyFailures, "too many failed authentication attempts from this address; wait before retrying",
                )
                .retry_after(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            })
    }

    /// A failed authentication: counted, and its refusal.
    pub(super) fn auth_failed(&self, policy: &Policy, client: IpAddr, e: AuthError) -> Refusal {
        self.failed_attempt(policy, client, e.into());
        e.into()
    }

    /// A failed authentication, by signature or token (`code`): counted
    /// against the client's address and in the metrics.
    pub(super) fn failed_attempt(&self, policy: &Policy, client: IpAddr, code: Code) {
        self.throttle.record_failure(
            client,
            self.clock.now(),
            Duration::from_secs(policy.server.auth_failure_window_secs),
        );
        self.metrics.auth_failure(code.as_str());
    }

    /// The signature headers of `headers`, checked by the policy's window at
    /// the gateway's clock: the first step of every signed request.
    pub(super) fn signed_headers<'h>(
        &self,
        policy: &Policy,
        headers: super::SignedHeaders<'h>,
    ) -> Result<signature::Signed<'h>, AuthError> {
        signature::Signed::check(
            headers.timestamp,
            headers.signature,
            self.clock.unix_secs(),
            policy.server.timestamp_tolerance_secs,
        )
    }

    /// A request with a CI's token: the token, then the body, then the
    /// candidate project whose rules admit the token.
    pub(super) async fn admit_token<'p, F, Fut>(
        &self,
        policy: &'p Policy,
        call: &DeployCall<'_>,
        token: &str,
        subject: &mut Option<String>,
        read_body: F,
    ) -> Result<Admitted<'p>, Refusal>
    where
        F: FnOnce(usize) -> Fut,
        Fut: Future<Output = Result<Vec<u8>, BodyError>>,
    {
        let verified = self.verify_token(policy, call.client, token).await?;
        *subject = verified.claim_text("sub").map(|s| s.into_owned());
        let named = match call.headers.project {
            Some(name) => Some(
                named_project(policy, name)
                    .map_err(|e| self.auth_failed(policy, call.client, e))?,
            ),
            None => None,
        };
        let body = self.read_checked(policy, read_body).await?;
        let (candidates, early) = Self::candidates(policy, named, &body, call.rollback)?;
        let project = self.token_project(policy, call.client, &candidates, &verified)?;
        let wanted = wanted(early, &body, call.rollback)?;
        let expires_at = verified.expires_at.saturating_add(oidc::LEEWAY_SECS);
        Ok(Admitted {
            project,
            wanted,
            mark: ReplayMark {
                key: token_replay_key(&verified),
                // Remembered one second past the last moment it is accepted.
                expires_at: expires_at.saturating_add(1),
            },
            valid: Validity::Token { expires_at },
            requester: Requester::Token {
                issuer: verified.issuer.clone(),
                subject: subject.clone().unwrap_or_default(),
            },
        })
    }

    /// Verifies a bearer token: size, shape, algorithm, an issuer some rule
    /// names, its key by `kid`, signature, times and `jti`.
    pub(super) async fn verify_token(
        &self,
        policy: &Policy,
        client: std::net::IpAddr,
        token: &str,
    ) -> Result<Verified, Refusal> {
        let failed = |rule: TokenRule| {
            self.failed_attempt(policy, client, Code::InvalidToken);
            invalid_token(rule)
        };
        let presented = oidc::inspect(token).map_err(failed)?;
        let source = policy
            .key_source(&presented.issuer)
            .ok_or_else(|| failed(TokenRule::Issuer))?;
        let fetched;
        let set = match source {
            KeySource::File(_, set) => set,
            KeySource::Discovery => {
                fetched = self
                    .keys
                    .key_set(&presented.issuer, &presented.kid)
                    .await
                    .map_err(|e| match e {
                        KeyError::Unknown => failed(TokenRule::Key),
                        KeyError::Unavailable { retry_after_secs } => Refusal::new(
                            Code::IssuerUnavailable,
                            "the token's issuer could not be asked for its keys; retry later",
                        )
                        .retry_after(retry_after_secs),
                    })?;
                &fetched
            }
        };
        let key = set
            .get(&presented.kid)
            .ok_or_else(|| failed(TokenRule::Key))?;
        oidc::verify(&presented, key, self.clock.unix_secs()).map_err(failed)
    }

    /// The first candidate with a rule that admits `token`. When none
    /// does, the refusal names how far the closest rule got: a wrong
    /// audience, or an age past the rule its claims match, is the token's
    /// fault (401); a token whose claims no rule allows is 403.
    pub(super) fn token_project<'p>(
        &self,
        policy: &Policy,
        client: std::net::IpAddr,
        candidates: &[&'p Project],
        token: &Verified,
    ) -> Result<&'p Project, Refusal> {
        let now = self.clock.unix_secs();
        let mut closest = None;
        for project in candidates {
            for rule in &project.oidc {
                match rule.admits(token, now) {
                    Ok(()) => return Ok(project),
                    Err(m) => closest = closest.max(Some(m)),
                }
            }
        }
        let rule = match closest {
            Some(Mismatch::Audience) => TokenRule::Audience,
            Some(Mismatch::TooOld) => TokenRule::TooOld,
            None | Some(Mismatch::Issuer | Mismatch::Claims) => {
                return Err(token_not_allowed());
            }
        };
        self.failed_attempt(policy, client, Code::InvalidToken);
        Err(invalid_token(rule))
    }

    /// Is the credential still valid at `now`, the reading that admits it?
    pub(super) fn still_valid(
        &self,
        policy: &Policy,
        client: std::net::IpAddr,
        valid: &Validity,
        now: u64,
    ) -> Result<(), Refusal> {
        match *valid {
            Validity::Window {
                timestamp,
                tolerance,
            } => signature::check_window(timestamp, now, tolerance)
                .map_err(|e| self.auth_failed(policy, client, e)),
            Validity::Token { expires_at } if now > expires_at => {
                self.failed_attempt(policy, client, Code::InvalidToken);
                Err(invalid_token(TokenRule::Expired))
            }
            Validity::Token { .. } => Ok(()),
        }
    }
}
