//! Limits that only show over a real socket: the accept loop's header
//! timeout, header bound and connection cap; throttling by real client
//! address; trusted proxies; and a 10 MB body against the real binary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use delivery_hook::gateway::Gateway;
use delivery_hook::serve::{self, Controls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// The gateway over the fake engine, served on a free loopback port.
struct Served {
    addr: SocketAddr,
    stop: CancellationToken,
    _gateway: Arc<Gateway>,
    _engine: Arc<FakeEngine>,
    _root: TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(extra_server: &str) -> Served {
    let (gateway, engine, root) = gateway_over_fake(extra_server).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let (_reload_tx, reload) = tokio::sync::mpsc::channel(1);
    let controls = Controls {
        shutdown: stop.clone(),
        reload,
    };
    tokio::spawn(serve::run_until_shutdown(
        gateway.clone(),
        listener,
        None,
        controls,
    ));
    Served {
        addr,
        stop,
        _gateway: gateway,
        _engine: engine,
        _root: root,
    }
}

/// Connects from a chosen loopback source address.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// Sends one request and reads one response: (status, body).
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> (u16, String) {
    stream.write_all(request).await.unwrap();
    read_response(stream).await
}

async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let status = head[9..12].parse().unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while data.len() < end + 4 + length {
                let n = stream.read(&mut buffer).await.unwrap();
                assert!(n > 0, "connection closed mid-body");
                data.extend_from_slice(&buffer[..n]);
            }
            return (
                status,
                String::from_utf8_lossy(&data[end + 4..end + 4 + length]).to_string(),
            );
        }
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(
            n > 0,
            "connection closed before a response: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buffer[..n]);
    }
}

fn signed_post(body: &str, secret: &str, extra: &str) -> Vec<u8> {
    let ts = now().to_string();
    format!(
        "POST /pull HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Timestamp: {ts}\r\nX-Signature: {}\r\n{extra}\r\n{body}",
        body.len(),
        sign(secret, body.as_bytes(), &ts)
    )
    .into_bytes()
}

#[tokio::test]
async fn headers_that_never_finish_are_cut_off() {
    // The harness policy sets request_timeout_secs = 2.
    let s = serve("").await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await;
    let elapsed = started.elapsed();
    let closed = match read {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 408"),
        Err(_) => false,
    };
    assert!(closed, "the slow client was not cut off");
    assert!(
        elapsed >= Duration::from_millis(1900),
        "cut off by the timeout, not at once: {elapsed:?}"
    );
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let s = serve("").await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (status, _) = exchange(&mut stream, request.as_bytes()).await;
    assert_eq!(status, 431);
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let s = serve("max_connections = 2").await;
    let held_a = TcpStream::connect(s.addr).await.unwrap();
    let mut held_b = TcpStream::connect(s.addr).await.unwrap();
    // Both slots are taken once a request on one of them is answered.
    let (status, _) = exchange(&mut held_b, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(status, 200);
    let mut third = TcpStream::connect(s.addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // Work sent after the third's request is answered on a connection
    // that holds a slot, while the third has no answer: it waits to be
    // accepted, not to be served.
    for _ in 0..3 {
        let (status, _) = exchange(&mut held_b, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(status, 200);
    }
    let mut buffer = [0u8; 64];
    assert!(
        matches!(third.try_read(&mut buffer), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a third connection was served beyond max_connections = 2"
    );
    drop(held_a);
    let (status, _) = read_response(&mut third).await;
    assert_eq!(status, 200, "served once a slot freed");
}

#[tokio::test]
async fn a_failing_address_is_throttled_and_others_are_not() {
    let s = serve("auth_failure_limit = 5").await;
    let body = body_for("billing-web");
    for _ in 0..5 {
        let mut attacker = connect_from("127.0.0.2", s.addr).await;
        let (status, _) = exchange(
            &mut attacker,
            &signed_post(&body, "wrong-secret-0123456789", ""),
        )
        .await;
        assert_eq!(status, 401);
    }
    let mut attacker = connect_from("127.0.0.2", s.addr).await;
    let (status, answer) = exchange(&mut attacker, &signed_post(&body, BILLING, "")).await;
    assert_eq!(
        status, 429,
        "even a valid request from the blocked address: {answer}"
    );
    let mut client = connect_from("127.0.0.1", s.addr).await;
    let (status, answer) = exchange(&mut client, &signed_post(&body, BILLING, "")).await;
    assert_eq!(status, 202, "another address deploys: {answer}");
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let s = serve("auth_failure_limit = 2\ntrusted_proxies = [\"127.0.0.3\"]").await;
    let body = body_for("billing-web");
    let bad = |xff: &str| {
        signed_post(
            &body,
            "wrong-secret-0123456789",
            &format!("X-Forwarded-For: {xff}\r\n"),
        )
    };
    // Through the trusted proxy, failures count against the forwarded client.
    for _ in 0..2 {
        let mut proxy = connect_from("127.0.0.3", s.addr).await;
        assert_eq!(exchange(&mut proxy, &bad("198.51.100.7")).await.0, 401);
    }
    let mut proxy = connect_from("127.0.0.3", s.addr).await;
    let good = |xff: &str| signed_post(&body, BILLING, &format!("X-Forwarded-For: {xff}\r\n"));
    assert_eq!(exchange(&mut proxy, &good("198.51.100.7")).await.0, 429);
    let mut proxy = connect_from("127.0.0.3", s.addr).await;
    assert_eq!(
        exchange(&mut proxy, &good("198.51.100.8")).await.0,
        202,
        "a different client behind the proxy"
    );
    // From an untrusted peer the header is ignored: its own address counts.
    for _ in 0..2 {
        let mut direct = connect_from("127.0.0.4", s.addr).await;
        assert_eq!(exchange(&mut direct, &bad("203.0.113.1")).await.0, 401);
    }
    let mut direct = connect_from("127.0.0.4", s.addr).await;
    assert_eq!(
        exchange(&mut direct, &good("203.0.113.99")).await.0,
        429,
        "a spoofed header does not escape"
    );
}

/// `client_ip_header` names the header a trusted proxy forwards the
/// client's address in; `X-Forwarded-For` is then not read.
#[tokio::test]
async fn client_ip_header_names_the_header_trusted_proxies_use() {
    let s = serve(
        "auth_failure_limit = 2\ntrusted_proxies = [\"127.0.0.3\"]\nclient_ip_header = \"X-Real-IP\"",
    )
    .await;
    let body = body_for("billing-web");
    let headers =
        |real: &str, xff: &str| format!("X-Real-IP: {real}\r\nX-Forwarded-For: {xff}\r\n");
    for _ in 0..2 {
        let mut proxy = connect_from("127.0.0.3", s.addr).await;
        let bad = signed_post(
            &body,
            "wrong-secret-0123456789",
            &headers("198.51.100.7", "198.51.100.8"),
        );
        assert_eq!(exchange(&mut proxy, &bad).await.0, 401);
    }
    // The address in X-Real-IP is throttled; the one in X-Forwarded-For,
    // which counted nothing, is not.
    let mut proxy = connect_from("127.0.0.3", s.addr).await;
    let good = signed_post(&body, BILLING, &headers("198.51.100.7", "198.51.100.9"));
    assert_eq!(exchange(&mut proxy, &good).await.0, 429);
    let mut proxy = connect_from("127.0.0.3", s.addr).await;
    let good = signed_post(&body, BILLING, &headers("198.51.100.8", "198.51.100.7"));
    assert_eq!(exchange(&mut proxy, &good).await.0, 202);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_ten_megabyte_chunked_body_is_413_and_memory_stays_flat() {
    let dir = temp_dir("bigbody");
    let port = crate::e2e::free_port();
    let policy = dir.path().join("delivery.toml");
    std::fs::write(
        &policy,
        format!("[server]\nlisten = \"127.0.0.1:{port}\"\n\n[projects.big]\nsecrets = [\"big-secret-0123456789abcdef\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_delivery-hook"))
        .args(["serve", "--config"])
        .arg(&policy)
        .env_remove("DELIVERY_LISTEN")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut probe = loop {
        if let Ok(s) = TcpStream::connect(addr).await {
            break s;
        }
        assert!(Instant::now() < deadline, "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        exchange(&mut probe, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .0,
        200
    );
    let before = rss_kib(child.id());
    let ts = now().to_string();
    let head = format!(
        "POST /pull HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nX-Timestamp: {ts}\r\nX-Signature: {}\r\n\r\n",
        "ab".repeat(32)
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        while sent < 10 * 1024 * 1024 {
            let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if writer.write_all(&frame).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        let _ = writer.write_all(b"0\r\n\r\n").await;
        sent
    });
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("body_too_large"));
    let _ = sender.await;
    let after = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        after.saturating_sub(before) < 2048,
        "RSS grew from {before} KiB to {after} KiB while refusing a 10 MB body"
    );
}

/// Headers sent inside the window and the body after it closed: the window
/// is checked again with the clock reading that admits the request, so it
/// cannot run after its window (and after an earlier copy's replay entry
/// may have gone).
#[tokio::test]
async fn a_body_that_arrives_after_the_window_closed_is_refused() {
    let served = serve("timestamp_tolerance_secs = 1").await;
    // Start just after a second turns, so the wait below is about a second,
    // well inside the 2 s body timeout.
    let start = now();
    wait_until_clock(start + 1).await;
    let ts = now() - 1;
    let body = body_for("billing-web");
    let head = format!(
        "POST /pull HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Timestamp: {ts}\r\nX-Signature: {}\r\n\r\n",
        body.len(),
        sign(BILLING, body.as_bytes(), &ts.to_string())
    );
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    wait_until_clock(ts + 2).await;
    let (status, text) = exchange(&mut stream, body.as_bytes()).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("timestamp_out_of_window"), "{text}");
    assert_eq!(served._engine.command_count(), 0);
}

/// Waits until the Unix clock reads at least `secs`.
async fn wait_until_clock(secs: u64) {
    while now() < secs {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One address may hold a bounded number of connections; others still get in.
#[tokio::test]
async fn connections_per_address_are_bounded() {
    let served = serve("max_connections_per_address = 2").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from("127.0.0.2", served.addr).await;
        let (status, _) = exchange(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(status, 200);
        held.push(stream);
    }
    let mut third = connect_from("127.0.0.2", served.addr).await;
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buffer))
        .await
        .expect("closed, not left waiting");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the third connection is closed: {read:?}"
    );
    let mut other = connect_from("127.0.0.3", served.addr).await;
    let (status, _) = exchange(&mut other, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(status, 200, "another address is not affected");
    drop(held.pop());
    // Its place comes back once the server has seen the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect_from("127.0.0.2", served.addr).await;
        let _ = again
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await;
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(1), again.read(&mut buffer)).await
            && n > 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's place never came back"
        );
    }
}
