//! The HTTP/1.1 server.
//!
//! poem's own server offers no header-read timeout, connection cap or
//! header-size bound, and the gateway faces the internet, so the poem
//! endpoint is served from this accept loop on hyper directly:
//! - at most `max_connections` at once; past that, new connections wait in
//!   the kernel's backlog instead of costing memory here;
//! - at most `max_connections_per_address` from one client address (trusted
//!   proxies aside); past that, its new connections are closed at once, so
//!   one client cannot take every slot;
//! - request headers must arrive within the request timeout (slowloris),
//!   and bodies are read under the same bound by the handlers;
//! - headers larger than [`MAX_HEADER_BYTES`] get 431;
//! - on shutdown, listening stops, idle connections close, and requests in
//!   flight finish, up to a drain bound.
//!
//! HTTP/2 is not served: CI clients and reverse proxies speak HTTP/1.1 to an
//! upstream like this one.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, EndpointExt, IntoEndpoint};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client_addr::{Cidr, canonical};
use crate::policy::PolicyCell;
use crate::slots::Slots;

/// Bound on the request line plus headers; hyper answers 431 beyond it.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The bounds of one listener. `max_connections` sizes the listener once;
/// the bounds of each connection are read as it is accepted, from the
/// policy in force when there is one, so that a reload reaches the next
/// connection.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub per_connection: PerConnection,
    /// How long requests in flight may take to finish after shutdown begins.
    pub drain: Duration,
}

/// Where each connection's bounds come from.
#[derive(Debug, Clone)]
pub enum PerConnection {
    Fixed(ConnectionLimits),
    /// `server.max_connections_per_address`, `trusted_proxies` and
    /// `request_timeout_secs` of the policy in force.
    InForce(Arc<PolicyCell>),
}

#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections_per_address: usize,
    /// Peers exempt from the per-address bound (trusted proxies).
    pub proxies: Vec<Cidr>,
    pub header_timeout: Duration,
}

impl PerConnection {
    /// Whether `address` is exempt from the per-address bound, that bound,
    /// and the header timeout.
    fn for_address(&self, address: std::net::IpAddr) -> (bool, usize, Duration) {
        let of = |limits: &ConnectionLimits| {
            (
                limits.proxies.iter().any(|p| p.contains(address)),
                limits.max_connections_per_address,
                limits.header_timeout,
            )
        };
        match self {
            PerConnection::Fixed(limits) => of(limits),
            PerConnection::InForce(cell) => {
                let policy = cell.get();
                let server = &policy.server;
                (
                    server.trusted_proxies.iter().any(|p| p.contains(address)),
                    server.max_connections_per_address,
                    server.request_timeout(),
                )
            }
        }
    }
}

/// Serves `endpoint` on `listener` until `shutdown` completes, then drains.
/// The caller binds, so tests and the CLI choose the address (port 0 works).
pub async fn accept_loop(
    listener: TcpListener,
    endpoint: impl IntoEndpoint<Endpoint: 'static>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let endpoint = Arc::new(endpoint.into_endpoint().map_to_response());
    let local = listener.local_addr()?;
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Slots::default();
    let closing = CancellationToken::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning on the same error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let address = canonical(peer.ip());
        let (exempt, per_address_bound, timeout) = limits.per_connection.for_address(address);
        let counted = if exempt {
            None
        } else {
            match per_address.enter(address, per_address_bound) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(peer = %peer, "closing a connection past the per-address bound");
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let endpoint = endpoint.clone();
        let closing = closing.clone();
        connections.spawn(async move {
            serve_connection(stream, local, peer, endpoint, timeout, closing).await;
            drop(counted);
            drop(permit);
        });
    }
    drop(listener);
    closing.cancel();
    let drained = tokio::time::timeout(limits.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "closing connections that did not finish within the drain bound"
        );
        connections.shutdown().await;
    }
    Ok(())
}

async fn serve_connection<E: Endpoint<Output = poem::Response> + 'static>(
    stream: TcpStream,
    local: std::net::SocketAddr,
    peer: std::net::SocketAddr,
    endpoint: Arc<E>,
    header_timeout: Duration,
    closing: CancellationToken,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let endpoint = endpoint.clone();
        async move {
            let request = poem::Request::from((
                request,
                LocalAddr(local.into()),
                RemoteAddr(peer.into()),
                poem::http::uri::Scheme::HTTP,
            ));
            let response = endpoint.get_response(request).await;
            Ok::<_, Infallible>(hyper::Response::from(response))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        }
        () = closing.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
