//! A local OpenID Connect issuer on 127.0.0.1: the discovery document, a
//! JWKS the test changes at will, and the GitHub Actions runtime's token
//! endpoint. It runs on a thread of its own ([`Served`]), so a test that
//! blocks on a child process (`trigger`) does not stall it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use poem::http::StatusCode;
use poem::web::{Data, Json, Query};
use poem::{EndpointExt, Request, Route, get, handler};
use serde_json::{Value, json};

use super::Served;
use super::jwt::Keys;
pub use super::jwt::Signer;

/// The bearer the fake GitHub Actions runtime expects.
pub const RUNTIME_TOKEN: &str = "runtime-request-token";

struct State {
    url: String,
    published: Mutex<Vec<Signer>>,
    up: AtomicBool,
    jwks_fetches: AtomicUsize,
    runtime_tokens: AtomicUsize,
    keys: Keys,
    /// Claims the runtime endpoint puts into its tokens, beside the usual.
    runtime_claims: Mutex<Value>,
    /// The only audience the runtime endpoint gives tokens for, when set.
    runtime_audience: Mutex<Option<String>>,
}

#[handler]
fn discovery(state: Data<&Arc<State>>) -> poem::Result<Json<Value>> {
    if !state.up.load(Ordering::SeqCst) {
        return Err(poem::Error::from_status(StatusCode::SERVICE_UNAVAILABLE));
    }
    Ok(Json(json!({
        "issuer": state.url,
        "jwks_uri": format!("{}/jwks", state.url),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    })))
}

#[handler]
fn jwks(state: Data<&Arc<State>>) -> poem::Result<Json<Value>> {
    if !state.up.load(Ordering::SeqCst) {
        return Err(poem::Error::from_status(StatusCode::SERVICE_UNAVAILABLE));
    }
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = state
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|s| state.keys.jwk(*s))
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    audience: String,
}

/// As the GitHub Actions runtime: a token for `audience` to a caller with
/// the runtime's bearer.
#[handler]
fn github_token(
    state: Data<&Arc<State>>,
    request: &Request,
    query: Query<TokenQuery>,
) -> poem::Result<Json<Value>> {
    let expected = format!("Bearer {RUNTIME_TOKEN}");
    let given = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if !given.is_some_and(|g| g.eq_ignore_ascii_case(&expected)) {
        return Err(poem::Error::from_status(StatusCode::UNAUTHORIZED));
    }
    let required = state.runtime_audience.lock().unwrap().clone();
    if required.is_some_and(|audience| audience != query.audience) {
        return Err(poem::Error::from_status(StatusCode::FORBIDDEN));
    }
    let mut claims = claims_for(&state.url, &query.audience);
    for (k, v) in state.runtime_claims.lock().unwrap().as_object().unwrap() {
        claims[k] = v.clone();
    }
    let token = state.keys.token(Signer::Rsa1, &claims);
    state.runtime_tokens.fetch_add(1, Ordering::SeqCst);
    Ok(Json(json!({ "count": 1, "value": token })))
}

fn now() -> u64 {
    crate::support::now()
}

/// The claims of a GitHub Actions token for `org/web` on `main`.
fn claims_for(issuer: &str, audience: &str) -> Value {
    let now = now();
    json!({
        "iss": issuer,
        "aud": audience,
        "sub": "repo:org/web:ref:refs/heads/main",
        "repository": "org/web",
        "repository_owner_id": 42,
        "ref": "refs/heads/main",
        "run_attempt": "1",
        "jti": delivery_hook::names::JobId::random().to_string(),
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    })
}

/// The issuer; stops when dropped.
pub struct TestIssuer {
    pub url: String,
    state: Arc<State>,
    _served: Served,
}

impl TestIssuer {
    /// Serves discovery and a JWKS publishing `published`.
    pub fn start(published: &[Signer]) -> Self {
        let keys = Keys::load();
        let published = published.to_vec();
        let (state_tx, state_rx) = std::sync::mpsc::channel();
        let served = Served::start(move |url| {
            let state = Arc::new(State {
                url: url.to_owned(),
                published: Mutex::new(published),
                up: AtomicBool::new(true),
                jwks_fetches: AtomicUsize::new(0),
                runtime_tokens: AtomicUsize::new(0),
                keys,
                runtime_claims: Mutex::new(json!({})),
                runtime_audience: Mutex::new(None),
            });
            state_tx.send(state.clone()).unwrap();
            Route::new()
                .at("/.well-known/openid-configuration", get(discovery))
                .at("/jwks", get(jwks))
                .at("/github-token", get(github_token))
                .data(state)
        });
        Self {
            url: served.url.clone(),
            state: state_rx.recv().unwrap(),
            _served: served,
        }
    }

    /// From now on the runtime endpoint answers 403 to a request for any
    /// other audience, as a token for the wrong audience is no use.
    pub fn require_runtime_audience(&self, audience: &str) {
        *self.state.runtime_audience.lock().unwrap() = Some(audience.to_owned());
    }

    /// The keys the JWKS holds from now on.
    pub fn publish(&self, signers: &[Signer]) {
        *self.state.published.lock().unwrap() = signers.to_vec();
    }

    /// Whether discovery and the JWKS answer (503 when not).
    pub fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }

    /// How many times the JWKS was served.
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// How many tokens the runtime endpoint gave out.
    pub fn runtime_tokens(&self) -> usize {
        self.state.runtime_tokens.load(Ordering::SeqCst)
    }

    /// Claims the runtime token endpoint sets, over the usual ones.
    pub fn set_runtime_claims(&self, claims: Value) {
        *self.state.runtime_claims.lock().unwrap() = claims;
    }

    /// The URL the GitHub Actions runtime would give a job.
    pub fn runtime_url(&self) -> String {
        format!("{}/github-token?api-version=2.0", self.url)
    }

    /// A GitHub-like token's claims for `audience`, to edit before signing.
    pub fn claims(&self, audience: &str) -> Value {
        claims_for(&self.url, audience)
    }

    /// `claims` signed by `signer`, with its `kid` and `alg`.
    pub fn token(&self, signer: Signer, claims: &Value) -> String {
        self.state.keys.token(signer, claims)
    }

    /// `claims` under any `header`, signed by `signer`'s key.
    pub fn token_with_header(&self, signer: Signer, header: &Value, claims: &Value) -> String {
        self.state.keys.sign(signer, header, claims)
    }

    /// The public key of `signer` as its JWK.
    pub fn jwk(&self, signer: Signer) -> Value {
        self.state.keys.jwk(signer)
    }
}
