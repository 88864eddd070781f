//! CI tokens against issuers over HTTPS: the gateway binary, trusting the
//! test authority through `SSL_CERT_FILE` (its own process, so no other
//! test's client trusts it), fetches each issuer's discovery document and
//! key set from a local issuer with a certificate of that authority. The
//! issuers' quirks are refused: a key set over the size or key bounds, a
//! redirect, a discovery document naming another issuer.

use std::time::Duration;

use serde_json::Value;

use crate::e2e::{free_port, wait_until};
use crate::support::issuer::{Quirk, Signer, TestIssuer};
use crate::support::receivers::{Certificate, certificate};
use crate::support::{GatewayBinary, TempDir, temp_dir};

const AUD: &str = "https://deploy.test";

/// The gateway binary with project `p<i>` admitting `org/web`'s tokens of
/// the `i`th issuer, trusting `authority` alone.
fn gateway(dir: &TempDir, issuers: &[&TestIssuer], authority: &Certificate) -> GatewayBinary {
    let port = free_port();
    let mut text = format!("[server]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\n");
    for (i, issuer) in issuers.iter().enumerate() {
        text.push_str(&format!(
            "\n[projects.p{i}]\nsecrets = [\"p{i}-secret-0123456789abcdef\"]\ncontainers = [\"p{i}-*\"]\nactions = [\"pull\"]\n\
             [[projects.p{i}.oidc]]\nissuer = \"{}\"\naudience = \"{AUD}\"\nclaims = {{ repository = \"org/web\" }}\n",
            issuer.url
        ));
    }
    let authority = authority.authority.display().to_string();
    GatewayBinary::start(
        dir.path(),
        &text,
        &[],
        port,
        &[
            ("SSL_CERT_FILE", &authority),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
    )
}

/// `GET /jobs` as project `p<i>` with a token of `issuer` signed by `signer`.
async fn read(g: &GatewayBinary, i: usize, issuer: &TestIssuer, signer: Signer) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = issuer.token(signer, &issuer.claims(AUD));
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/jobs", g.port))
        .header("Authorization", format!("Bearer {token}"))
        .header("X-Project", format!("p{i}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts `issuer_unavailable` (with no `rule`: no check of the token
/// failed) and that the gateway's log gives `why`.
fn unavailable(g: &GatewayBinary, (status, body): (u16, Value), why: &str) {
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("issuer_unavailable")),
        "{body}"
    );
    assert!(body["rule"].is_null(), "{body}");
    // The log is written apart from the answer: waited for, not read once.
    let says = || std::fs::read_to_string(&g.log).is_ok_and(|log| log.contains(why));
    wait_until(
        &format!("the log to say `{why}`"),
        Duration::from_secs(10),
        says,
    );
}

#[tokio::test]
async fn a_token_is_verified_against_an_issuer_over_https_that_the_gateway_trusts() {
    let dir = temp_dir("oidc-tls");
    let authority = certificate(dir.path());
    let issuer = TestIssuer::start_tls(&[Signer::Rsa1], &authority, Quirk::None);
    assert!(issuer.url.starts_with("https://"), "{}", issuer.url);
    let trusting = temp_dir("oidc-tls-trusting");
    let g = gateway(&trusting, &[&issuer], &authority);
    let (status, body) = read(&g, 0, &issuer, Signer::Rsa1).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"], serde_json::json!([]));
    assert!(issuer.jwks_fetches() >= 1);

    // A gateway trusting another authority does not take the issuer's word.
    let other = temp_dir("oidc-tls-other");
    let stranger = gateway(&other, &[&issuer], &certificate(other.path()));
    let refused = read(&stranger, 0, &issuer, Signer::Rsa1).await;
    unavailable(&stranger, refused, "certificate");
}

#[tokio::test]
async fn a_key_set_over_the_size_or_key_bound_is_refused() {
    let dir = temp_dir("oidc-tls-size");
    let authority = certificate(dir.path());
    // Over 256 KiB: not read to the end, no set, no verified token.
    let padded = TestIssuer::start_tls(&[Signer::Rsa1], &authority, Quirk::Padded(300 * 1024));
    // 64 other keys first: the 65th, the token's, is past the bound.
    let crowded = TestIssuer::start_tls(&[Signer::Rsa1], &authority, Quirk::Crowded(64));
    let served = temp_dir("oidc-tls-size-g");
    let g = gateway(&served, &[&padded, &crowded], &authority);
    let too_large = read(&g, 0, &padded, Signer::Rsa1).await;
    unavailable(&g, too_large, "is larger than 262144 bytes");
    let (status, body) = read(&g, 1, &crowded, Signer::Rsa1).await;
    assert_eq!(
        (status, body["code"].as_str(), body["rule"].as_str()),
        (401, Some("invalid_token"), Some("key")),
        "{body}"
    );
}

#[tokio::test]
async fn a_redirect_from_discovery_or_the_key_set_is_not_followed() {
    let dir = temp_dir("oidc-tls-redirect");
    let authority = certificate(dir.path());
    let discovery = TestIssuer::start_tls(&[Signer::Rsa1], &authority, Quirk::DiscoveryRedirects);
    let jwks = TestIssuer::start_tls(&[Signer::Rsa1], &authority, Quirk::JwksRedirects);
    let served = temp_dir("oidc-tls-redirect-g");
    let g = gateway(&served, &[&discovery, &jwks], &authority);
    let refused = read(&g, 0, &discovery, Signer::Rsa1).await;
    unavailable(
        &g,
        refused,
        "/.well-known/openid-configuration answered 307",
    );
    let refused = read(&g, 1, &jwks, Signer::Rsa1).await;
    unavailable(&g, refused, "/redirected-jwks answered 307");
    assert_eq!((discovery.moved_fetches(), jwks.moved_fetches()), (0, 0));
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_refused() {
    let dir = temp_dir("oidc-tls-issuer");
    let authority = certificate(dir.path());
    let issuer = TestIssuer::start_tls(
        &[Signer::Rsa1],
        &authority,
        Quirk::NamesIssuer("https://elsewhere.example".into()),
    );
    let served = temp_dir("oidc-tls-issuer-g");
    let g = gateway(&served, &[&issuer], &authority);
    let refused = read(&g, 0, &issuer, Signer::Rsa1).await;
    unavailable(
        &g,
        refused,
        "names the issuer `https://elsewhere.example`, not this one",
    );
    assert_eq!(issuer.jwks_fetches(), 0, "its key set is never asked for");
}
