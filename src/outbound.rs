//! Requests the gateway makes itself (issuers' key sets, notifications):
//! one way to make their HTTP client, and one rule for loopback addresses.

use std::sync::OnceLock;
use std::time::Duration;

/// An HTTP client made when first needed: loading the system's TLS roots
/// costs memory a gateway that never calls out need not spend, and a host
/// without them must still start. Its requests are bounded by `timeout`
/// and never redirected, so an answer cannot send them to an address the
/// policy does not name. A client that could not be made stays unmade,
/// with the reason.
pub struct LazyClient {
    timeout: Duration,
    client: OnceLock<Result<reqwest::Client, NoClient>>,
}

/// Why no HTTP client could be made (the system's TLS roots, typically):
/// the builder's error chain, kept for every later request to report.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no HTTP client: {0}")]
pub struct NoClient(String);

impl LazyClient {
    pub const fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            client: OnceLock::new(),
        }
    }

    /// The client, or why none could be made.
    pub fn get(&self) -> Result<&reqwest::Client, &NoClient> {
        self.client
            .get_or_init(|| {
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::builder()
                    .timeout(self.timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("delivery-hook/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| NoClient(crate::error_chain(&e)))
            })
            .as_ref()
    }
}

/// Whether `url` names a loopback address (or `localhost`).
pub fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}
