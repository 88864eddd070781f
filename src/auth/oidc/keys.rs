//! Issuers' key sets: parsed from JWKS, fetched through OpenID discovery,
//! and cached.
//!
//! A set is fetched when a token names a `kid` the cached set lacks (the
//! issuer rotated), at most once per [`REFRESH_INTERVAL`] per issuer; a
//! failed fetch keeps the last good set, and an empty or unusable one never
//! replaces it. An issuer whose set has never been had is tried again
//! after [`RETRY_INTERVAL`], so an issuer down at start is picked up soon
//! after it returns. One fetch per issuer runs at a time; requests that
//! need it wait for it rather than start their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::outbound::LazyClient;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// The least time between two fetches for an issuer whose set is cached.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// The least time between two fetches for an issuer with no set yet.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// The largest discovery document or key set read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// The most keys kept from one set.
const MAX_KEYS: usize = 64;
/// One request to an issuer, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One public key of an issuer, with the algorithm it verifies.
pub struct Key {
    pub algorithm: Algorithm,
    pub(super) decoding: DecodingKey,
}

/// The usable keys of a JWKS, by `kid`.
pub struct KeySet {
    keys: HashMap<String, Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// The algorithm a JWK verifies, when it is one the gateway accepts: RSA
/// for RS256, P-256 for ES256, for signatures, with a `kid`.
fn usable(jwk: &Jwk) -> Option<Algorithm> {
    if jwk.common.key_id.as_deref().is_none_or(str::is_empty)
        || matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
    {
        return None;
    }
    let (algorithm, declared) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(algorithm),
        Some(a) if a == declared => Some(algorithm),
        Some(_) => None,
    }
}

/// Why a document is no key set.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("the key set is not a JWKS document: {0}")]
    NotJwks(#[source] serde_json::Error),
    #[error("the key set holds no RS256 or ES256 signing key with a kid")]
    NoKey,
}

/// Why an issuer's key set could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    NoClient(#[from] crate::outbound::NoClient),
    #[error("{url}: {reason}")]
    Request { url: String, reason: String },
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{url} is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url} is not a discovery document: {source}")]
    NotDiscovery {
        url: String,
        source: serde_json::Error,
    },
    #[error("{url} names the issuer `{named}`, not this one")]
    OtherIssuer { url: String, named: String },
    #[error("the discovery document's jwks_uri: {0}")]
    JwksUri(#[source] super::UrlError),
    #[error("{url}: {source}")]
    KeySet { url: String, source: KeySetError },
}

impl KeySet {
    /// The usable keys of a JWKS document. Keys of other types or
    /// algorithms are skipped; a set with none left is an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeySetError> {
        let raw: RawSet = serde_json::from_slice(bytes).map_err(KeySetError::NotJwks)?;
        let mut keys = HashMap::new();
        for value in raw.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            let Some(algorithm) = usable(&jwk) else {
                continue;
            };
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            if keys.len() == MAX_KEYS {
                break;
            }
            let kid = jwk.common.key_id.unwrap_or_default();
            keys.insert(
                kid,
                Key {
                    algorithm,
                    decoding,
                },
            );
        }
        if keys.is_empty() {
            return Err(KeySetError::NoKey);
        }
        Ok(Self { keys })
    }

    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Why no key could be had for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The issuer's set is known and lacks this `kid`.
    Unknown,
    /// No set of this issuer could be had; retry after this many seconds.
    Unavailable { retry_after_secs: u64 },
}

#[derive(Default)]
struct Issuer {
    keys: Mutex<Option<Arc<KeySet>>>,
    /// When the last fetch started; held while one runs.
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl Issuer {
    fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// The key sets of the issuers the policy names, fetched on demand.
pub struct KeyCache {
    /// Made at the first fetch; when it cannot be, every fetch fails with
    /// the reason.
    http: LazyClient,
    issuers: Mutex<HashMap<String, Arc<Issuer>>>,
    clock: Clock,
}

impl KeyCache {
    pub fn new(clock: Clock) -> Self {
        Self {
            http: LazyClient::new(FETCH_TIMEOUT),
            issuers: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn issuer(&self, issuer: &str) -> Arc<Issuer> {
        self.issuers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(issuer.to_owned())
            .or_default()
            .clone()
    }

    /// The set of `issuer` holding `kid`: the cached one, or a fresh one
    /// when the cached lacks it and the intervals allow a fetch.
    pub async fn key_set(&self, issuer: &str, kid: &str) -> Result<Arc<KeySet>, KeyError> {
        let state = self.issuer(issuer);
        if let Some(set) = state.current().filter(|s| s.get(kid).is_some()) {
            return Ok(set);
        }
        let mut fetched = state.fetched.lock().await;
        // Another request may have fetched while this one waited.
        let current = state.current();
        if let Some(set) = current.clone().filter(|s| s.get(kid).is_some()) {
            return Ok(set);
        }
        let interval = if current.is_some() {
            REFRESH_INTERVAL
        } else {
            RETRY_INTERVAL
        };
        if fetched.is_none_or(|at| self.clock.now() - at >= interval) {
            self.refresh(issuer, &state, &mut fetched).await;
        }
        match state.current() {
            Some(set) if set.get(kid).is_some() => Ok(set),
            Some(_) => Err(KeyError::Unknown),
            None => {
                let waited = fetched.map_or(Duration::ZERO, |at| self.clock.now() - at);
                // Rounded up: a client that waits this long finds the
                // interval over.
                let left = interval.saturating_sub(waited);
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                Err(KeyError::Unavailable {
                    retry_after_secs: secs.max(1),
                })
            }
        }
    }

    /// Fetches `issuer`'s set unless one is cached: at start, so the first
    /// request does not wait for it.
    pub async fn warm(&self, issuer: &str) {
        let state = self.issuer(issuer);
        let mut fetched = state.fetched.lock().await;
        if state.current().is_none() {
            self.refresh(issuer, &state, &mut fetched).await;
        }
    }

    /// Fetches `issuer`'s set, noting when in `fetched`, and keeps it if
    /// it is good.
    async fn refresh(&self, issuer: &str, state: &Issuer, fetched: &mut Option<Instant>) {
        *fetched = Some(self.clock.now());
        match self.fetch(issuer).await {
            Ok(set) => {
                tracing::info!(issuer, keys = set.len(), "fetched the issuer's key set");
                *state.keys.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(set));
            }
            Err(error) => {
                let kept = state.current().is_some();
                tracing::warn!(
                    issuer,
                    error = %error,
                    kept_last_good = kept,
                    "could not fetch the issuer's key set"
                );
            }
        }
    }

    /// Discovery, then the key set it names.
    async fn fetch(&self, issuer: &str) -> Result<KeySet, FetchError> {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let document = self.get(&discovery).await?;
        let document: Discovery =
            serde_json::from_slice(&document).map_err(|source| FetchError::NotDiscovery {
                url: discovery.clone(),
                source,
            })?;
        if document.issuer != issuer {
            return Err(FetchError::OtherIssuer {
                url: discovery,
                named: document.issuer,
            });
        }
        let jwks = super::check_url(&document.jwks_uri).map_err(FetchError::JwksUri)?;
        KeySet::parse(&self.get(jwks.as_str()).await?).map_err(|source| FetchError::KeySet {
            url: document.jwks_uri,
            source,
        })
    }

    /// The body of a 200 answer to GET `url`, at most
    /// [`MAX_DOCUMENT_BYTES`].
    async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let http = self
            .http
            .get()
            .map_err(|e| FetchError::NoClient(e.clone()))?;
        let failed = |e: reqwest::Error| FetchError::Request {
            url: url.to_owned(),
            reason: crate::error_chain(&e),
        };
        let mut response = http
            .get(url)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(failed)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge {
                    url: url.to_owned(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signing_keys_of_the_accepted_algorithms_are_kept() {
        let jwks = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "use": "sig", "alg": "RS256", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa512", "alg": "RS512", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "n": "sXch", "e": "AQAB"},
            {"kty": "EC", "kid": "p256", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AAAA", "y": "AAAA"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AAAA"},
            {"kty": "weird", "kid": "w"}
        ]});
        let set = KeySet::parse(jwks.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 2, "{set:?}");
        assert_eq!(set.get("rsa").unwrap().algorithm, Algorithm::RS256);
        assert_eq!(set.get("p256").unwrap().algorithm, Algorithm::ES256);
        assert!(set.get("hmac").is_none());
        let none = serde_json::json!({"keys": [{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}]});
        assert!(KeySet::parse(none.to_string().as_bytes()).is_err());
        assert!(KeySet::parse(b"{\"keys\": 3}").is_err());
    }
}
