//! OpenID Connect ID tokens, as CI systems issue them to their jobs.
//!
//! A token is checked in a fixed order, each step with its own rule name
//! for the refusal: its size; its shape and algorithm (RS256 or ES256 only,
//! decided from the header before any key is looked at, so `none` and
//! HS256 never reach a verifier); its key, by `kid`, from the issuer the
//! token names, which must be one the policy lists; the signature; `iss`
//! exactly; `exp`, `nbf` and `iat` with [`LEEWAY_SECS`]; and a `jti`. What
//! the token may do (audience, age, claims) is the policy's question
//! ([`crate::policy::OidcRule`]).
//!
//! jsonwebtoken parses and validates; `ring` gives it the signature
//! checks; [`keys`] finds and caches the issuers' key sets.

pub mod keys;
mod ring;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

pub use keys::{Key, KeyCache, KeyError, KeySet};

/// The largest token read; a longer one is refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// How old a token may be when a rule does not say (`max_token_age_secs`).
pub const DEFAULT_MAX_TOKEN_AGE_SECS: u64 = 600;
/// How far `exp`, `nbf` and `iat` may be off the gateway's clock.
pub const LEEWAY_SECS: u64 = 60;
/// How far ahead a token's `exp` may lie. CI tokens live minutes; one
/// that claims a longer life is refused, which also bounds how long its
/// single-use entry is kept.
pub const MAX_LIFETIME_SECS: u64 = 24 * 60 * 60;
/// The longest `jti` remembered.
const MAX_JTI_BYTES: usize = 256;
/// The issuers whose tokens name the repository they were issued for.
pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";
pub const GITLAB_ISSUER: &str = "https://gitlab.com";

/// The check a token failed: named in the refusal as its `rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRule {
    Size,
    Format,
    Algorithm,
    Key,
    Signature,
    Issuer,
    Audience,
    Expired,
    NotYetValid,
    TooOld,
    Jti,
}

impl TokenRule {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRule::Size => "size",
            TokenRule::Format => "format",
            TokenRule::Algorithm => "algorithm",
            TokenRule::Key => "key",
            TokenRule::Signature => "signature",
            TokenRule::Issuer => "issuer",
            TokenRule::Audience => "audience",
            TokenRule::Expired => "expired",
            TokenRule::NotYetValid => "not_yet_valid",
            TokenRule::TooOld => "too_old",
            TokenRule::Jti => "jti",
        }
    }

    /// Fixed words for a person; nothing from the token is repeated.
    pub fn message(self) -> &'static str {
        match self {
            TokenRule::Size => "the bearer token is longer than 8192 bytes",
            TokenRule::Format => {
                "the bearer token is not a JWT with a JSON header and claims (iss, aud, exp, iat as their types)"
            }
            TokenRule::Algorithm => "the token's algorithm is not accepted: RS256 or ES256 only",
            TokenRule::Key => {
                "the token's key (kid) is not in its issuer's key set; a rotated key is fetched at most once a minute"
            }
            TokenRule::Signature => "the token's signature does not verify",
            TokenRule::Issuer => "no project accepts tokens from the token's issuer",
            TokenRule::Audience => {
                "the token's audience (aud) is not one a rule of this project accepts"
            }
            TokenRule::Expired => {
                "the token has expired, or claims to expire more than 24 hours ahead"
            }
            TokenRule::NotYetValid => "the token is not valid yet (nbf or iat in the future)",
            TokenRule::TooOld => {
                "the token was issued longer ago than the rule's max_token_age_secs"
            }
            TokenRule::Jti => "the token has no jti, so it could be used twice",
        }
    }
}

/// A token whose header and issuer have been read, not yet verified.
#[derive(Debug)]
pub struct Presented<'t> {
    token: &'t str,
    pub algorithm: Algorithm,
    pub kid: String,
    /// The issuer the token claims; its keys decide whether that is true.
    pub issuer: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct IssuerOnly {
    iss: String,
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Reads what selects the key: size, shape, algorithm, `kid`, `iss`.
pub fn inspect(token: &str) -> Result<Presented<'_>, TokenRule> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenRule::Size);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRule::Format);
    };
    let header: Header = decode_part(header).ok_or(TokenRule::Format)?;
    let algorithm = match header.alg.as_str() {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        _ => return Err(TokenRule::Algorithm),
    };
    let kid = header.kid.filter(|k| !k.is_empty()).ok_or(TokenRule::Key)?;
    let issuer = decode_part::<IssuerOnly>(claims)
        .ok_or(TokenRule::Format)?
        .iss;
    Ok(Presented {
        token,
        algorithm,
        kid,
        issuer,
    })
}

/// A token whose signature, issuer and times were verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub issuer: String,
    pub jti: String,
    pub audiences: Vec<String>,
    pub expires_at: u64,
    pub issued_at: u64,
    pub claims: Map<String, Value>,
}

impl Verified {
    /// The claim's value as a policy compares it: strings as they are,
    /// booleans and numbers as their JSON text; anything else has none.
    pub fn claim_text(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        match self.claims.get(name)? {
            Value::String(s) => Some(s.as_str().into()),
            Value::Bool(b) => Some(b.to_string().into()),
            Value::Number(n) => Some(n.to_string().into()),
            _ => None,
        }
    }
}

/// Verifies `presented` with `key` (found by its `kid` among its issuer's
/// keys), at Unix time `now`.
pub fn verify(presented: &Presented<'_>, key: &Key, now: u64) -> Result<Verified, TokenRule> {
    ring::install();
    if key.algorithm != presented.algorithm {
        return Err(TokenRule::Algorithm);
    }
    let mut validation = Validation::new(presented.algorithm);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    // The audience is a rule's, and rules differ; it is checked against them.
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.set_issuer(&[presented.issuer.as_str()]);
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(presented.token, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenRule::Signature,
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => TokenRule::Algorithm,
                ErrorKind::ExpiredSignature => TokenRule::Expired,
                ErrorKind::ImmatureSignature => TokenRule::NotYetValid,
                ErrorKind::InvalidIssuer => TokenRule::Issuer,
                ErrorKind::InvalidAudience => TokenRule::Audience,
                _ => TokenRule::Format,
            })?;
    let claims = data.claims;
    // Every time must be a whole second that a signed 64-bit integer holds
    // (the store keeps them so); past that, arithmetic on them is checked.
    let fits = |name: &str| {
        claims
            .get(name)
            .is_none_or(|v| v.as_i64().is_some_and(|t| t >= 0))
    };
    if !["exp", "nbf", "iat"].into_iter().all(fits) {
        return Err(TokenRule::Expired);
    }
    let number = |name: &str| claims.get(name).and_then(Value::as_u64);
    let expires_at = number("exp").ok_or(TokenRule::Format)?;
    let issued_at = number("iat").ok_or(TokenRule::Format)?;
    let latest_expiry = now
        .checked_add(MAX_LIFETIME_SECS + LEEWAY_SECS)
        .ok_or(TokenRule::Expired)?;
    if expires_at > latest_expiry {
        return Err(TokenRule::Expired);
    }
    if issued_at > now.checked_add(LEEWAY_SECS).ok_or(TokenRule::NotYetValid)? {
        return Err(TokenRule::NotYetValid);
    }
    let audiences = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or(TokenRule::Format)?,
        _ => return Err(TokenRule::Format),
    };
    let jti = match claims.get("jti") {
        Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= MAX_JTI_BYTES => jti.clone(),
        _ => return Err(TokenRule::Jti),
    };
    Ok(Verified {
        issuer: presented.issuer.clone(),
        jti,
        audiences,
        expires_at,
        issued_at,
        claims,
    })
}

/// Why a text cannot be an issuer or a key set's address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`{text}` is not a URL: {reason}")]
    NotUrl {
        text: String,
        reason: url::ParseError,
    },
    #[error("`{0}` must be an https URL (http only on a loopback address)")]
    NotHttps(String),
    #[error("`{0}` must name a host, without a user")]
    NoHost(String),
    #[error("`{0}` must have no query or fragment")]
    QueryOrFragment(String),
}

/// Whether `text` may be an issuer or a key set's address: https, or
/// plain http to a loopback address (a local issuer, or a test's).
pub fn check_url(text: &str) -> Result<reqwest::Url, UrlError> {
    let url = reqwest::Url::parse(text).map_err(|reason| UrlError::NotUrl {
        text: text.to_owned(),
        reason,
    })?;
    match url.scheme() {
        "https" => {}
        "http" if crate::outbound::is_loopback(&url) => {}
        _ => return Err(UrlError::NotHttps(text.to_owned())),
    }
    if url.host().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::NoHost(text.to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(UrlError::QueryOrFragment(text.to_owned()));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(value: serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    fn token(header: serde_json::Value, claims: serde_json::Value) -> String {
        format!("{}.{}.c2ln", part(header), part(claims))
    }

    #[test]
    fn the_algorithm_is_decided_from_the_header_first() {
        let claims = serde_json::json!({"iss": "https://issuer.example"});
        for alg in ["none", "HS256", "RS512", "ES384", "EdDSA", "rs256"] {
            let t = token(serde_json::json!({"alg": alg, "kid": "k"}), claims.clone());
            assert_eq!(inspect(&t).unwrap_err(), TokenRule::Algorithm, "{alg}");
        }
        let t = token(serde_json::json!({"alg": "ES256"}), claims.clone());
        assert_eq!(inspect(&t).unwrap_err(), TokenRule::Key);
        let t = token(serde_json::json!({"alg": "RS256", "kid": "k1"}), claims);
        let p = inspect(&t).unwrap();
        assert_eq!((p.algorithm, p.kid.as_str()), (Algorithm::RS256, "k1"));
        assert_eq!(p.issuer, "https://issuer.example");
    }

    #[test]
    fn size_and_shape_are_checked_before_anything_is_decoded() {
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(inspect(&long).unwrap_err(), TokenRule::Size);
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"] {
            assert_eq!(inspect(bad).unwrap_err(), TokenRule::Format, "{bad}");
        }
    }

    #[test]
    fn issuers_are_https_or_loopback() {
        for ok in [
            "https://token.actions.githubusercontent.com",
            "https://gitlab.example.com/",
            "http://127.0.0.1:8080",
            "http://[::1]:9000/issuer",
            "http://localhost:1",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://issuer.example",
            "http://10.0.0.1",
            "ftp://127.0.0.1",
            "https://user@issuer.example",
            "https://issuer.example/?a=b",
            "https://issuer.example/#x",
            "issuer.example",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
