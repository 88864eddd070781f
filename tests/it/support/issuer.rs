//! A local OpenID Connect issuer on 127.0.0.1: the discovery document, a
//! JWKS the test changes at will, and the GitHub Actions runtime's token
//! endpoint; over plain HTTP, or over HTTPS with a certificate of the test
//! authority ([`super::receivers::certificate`]), and with a [`Quirk`] an
//! issuer should not have. It runs on a thread of its own, so a test that
//! blocks on a child process (`trigger`) does not stall it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use poem::http::StatusCode;
use poem::http::uri::Scheme;
use poem::listener::{Acceptor, AcceptorExt, Listener, TcpAcceptor, TcpListener};
use poem::web::{Data, Json, Query, Redirect};
use poem::web::{LocalAddr, RemoteAddr};
use poem::{EndpointExt, IntoResponse, Request, Response, Route, get, handler};
use serde_json::{Value, json};

use super::jwt::Keys;
pub use super::jwt::Signer;
use super::receivers::Certificate;

/// What the issuer does that it should not.
#[derive(Debug, Clone, Default)]
pub enum Quirk {
    #[default]
    None,
    /// Discovery redirects to a copy of itself at `/moved/discovery`.
    DiscoveryRedirects,
    /// Discovery names `/redirected-jwks`, which redirects to `/moved/jwks`.
    JwksRedirects,
    /// Discovery names this issuer instead of its own URL.
    NamesIssuer(String),
    /// The JWKS carries this many bytes of padding beside its keys.
    Padded(usize),
    /// The JWKS lists this many other keys before the published ones.
    Crowded(usize),
}

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
    quirk: Quirk,
    /// Requests to `/moved/…`, where only a followed redirect leads.
    moved_fetches: AtomicUsize,
}

/// The discovery document, as the quirk has it.
fn discovery_document(state: &State) -> Json<Value> {
    let issuer = match &state.quirk {
        Quirk::NamesIssuer(other) => other.clone(),
        _ => state.url.clone(),
    };
    let path = match state.quirk {
        Quirk::JwksRedirects => "redirected-jwks",
        _ => "jwks",
    };
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{}/{path}", state.url),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
}

#[handler]
fn discovery(state: Data<&Arc<State>>) -> poem::Result<Response> {
    if !state.up.load(Ordering::SeqCst) {
        return Err(poem::Error::from_status(StatusCode::SERVICE_UNAVAILABLE));
    }
    Ok(match state.quirk {
        Quirk::DiscoveryRedirects => {
            Redirect::temporary(format!("{}/moved/discovery", state.url)).into_response()
        }
        _ => discovery_document(&state).into_response(),
    })
}

/// Where only a followed redirect leads: discovery, or the JWKS.
#[handler]
fn moved(state: Data<&Arc<State>>, request: &Request) -> Response {
    state.moved_fetches.fetch_add(1, Ordering::SeqCst);
    if request.uri().path().ends_with("/discovery") {
        discovery_document(&state).into_response()
    } else {
        key_set(&state).into_response()
    }
}

#[handler]
fn redirected_jwks(state: Data<&Arc<State>>) -> Redirect {
    Redirect::temporary(format!("{}/moved/jwks", state.url))
}

/// The published keys, after the quirk's.
fn key_set(state: &State) -> Json<Value> {
    let mut keys: Vec<Value> = Vec::new();
    if let Quirk::Crowded(others) = state.quirk {
        let other = state.keys.jwk(Signer::Rsa2);
        keys.extend((0..others).map(|i| {
            let mut key = other.clone();
            key["kid"] = json!(format!("other-{i}"));
            key
        }));
    }
    keys.extend(
        state
            .published
            .lock()
            .unwrap()
            .iter()
            .map(|s| state.keys.jwk(*s)),
    );
    let mut set = json!({ "keys": keys });
    if let Quirk::Padded(bytes) = state.quirk {
        set["padding"] = json!("x".repeat(bytes));
    }
    Json(set)
}

#[handler]
fn jwks(state: Data<&Arc<State>>) -> poem::Result<Json<Value>> {
    if !state.up.load(Ordering::SeqCst) {
        return Err(poem::Error::from_status(StatusCode::SERVICE_UNAVAILABLE));
    }
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    Ok(key_set(&state))
}

/// TLS over the TCP acceptor, with the certificate of the test authority.
/// A client that does not trust it is dropped and the next one accepted.
struct TlsAcceptor {
    tcp: TcpAcceptor,
    tls: tokio_rustls::TlsAcceptor,
}

impl TlsAcceptor {
    fn new(tcp: TcpAcceptor, certificate: &Certificate) -> Self {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(&certificate.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&certificate.key).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Self {
            tcp,
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        }
    }
}

impl Acceptor for TlsAcceptor {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.tcp.local_addr()
    }

    async fn accept(&mut self) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            let (stream, local, remote, _) = self.tcp.accept().await?;
            if let Ok(tls) = self.tls.accept(stream).await {
                return Ok((tls, local, remote, Scheme::HTTPS));
            }
        }
    }
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
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestIssuer {
    /// Serves discovery and a JWKS publishing `published`.
    pub fn start(published: &[Signer]) -> Self {
        Self::serve(published, None, Quirk::None)
    }

    /// As [`Self::start`], over HTTPS with `certificate`, with `quirk`.
    pub fn start_tls(published: &[Signer], certificate: &Certificate, quirk: Quirk) -> Self {
        Self::serve(published, Some(certificate), quirk)
    }

    fn serve(published: &[Signer], certificate: Option<&Certificate>, quirk: Quirk) -> Self {
        let keys = Keys::load();
        let certificate = certificate.cloned();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, port) = std::sync::mpsc::channel();
        let published = published.to_vec();
        let (state_tx, state_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let tcp = TcpListener::bind("127.0.0.1:0")
                    .into_acceptor()
                    .await
                    .unwrap();
                let addr = tcp.local_addr()[0].as_socket_addr().copied().unwrap();
                let (acceptor, scheme) = match &certificate {
                    Some(certificate) => (TlsAcceptor::new(tcp, certificate).boxed(), "https"),
                    None => (tcp.boxed(), "http"),
                };
                let url = format!("{scheme}://127.0.0.1:{}", addr.port());
                let state = Arc::new(State {
                    url: url.clone(),
                    published: Mutex::new(published),
                    up: AtomicBool::new(true),
                    jwks_fetches: AtomicUsize::new(0),
                    runtime_tokens: AtomicUsize::new(0),
                    keys,
                    runtime_claims: Mutex::new(json!({})),
                    runtime_audience: Mutex::new(None),
                    quirk,
                    moved_fetches: AtomicUsize::new(0),
                });
                state_tx.send(state.clone()).unwrap();
                ready.send(url).unwrap();
                let app = Route::new()
                    .at("/.well-known/openid-configuration", get(discovery))
                    .at("/jwks", get(jwks))
                    .at("/redirected-jwks", get(redirected_jwks))
                    .at("/moved/*rest", get(moved))
                    .at("/github-token", get(github_token))
                    .data(state);
                let _ = poem::Server::new_with_acceptor(acceptor)
                    .run_with_graceful_shutdown(
                        app,
                        async {
                            let _ = stopped.await;
                        },
                        None,
                    )
                    .await;
            });
        });
        let url = port.recv().unwrap();
        let state = state_rx.recv().unwrap();
        Self {
            url,
            state,
            stop: Some(stop),
            thread: Some(thread),
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

    /// How many requests reached where only a followed redirect leads.
    pub fn moved_fetches(&self) -> usize {
        self.state.moved_fetches.load(Ordering::SeqCst)
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

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
