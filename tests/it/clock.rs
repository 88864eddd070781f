//! Time, moved instead of waited for: in-process over the fake engine, with
//! the gateway's manual clock, which its jobs and notifications share. The
//! health gate's stable time, a notification's retries, giving up after a
//! day, and a removed target's messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use delivery_hook::jobs::Outbox;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::support::{Harness, SHOP, set_var, soon, status_json};

/// Waits (briefly, in real time) for something the gateway does at once.
/// The health gate waits `stable_secs` by the gateway's clock: a container
/// that started just now passes once the clock has moved on, not after
/// five seconds of waiting.
#[tokio::test]
async fn the_health_gate_passes_when_the_clock_has_moved_past_stable_secs() {
    let h = Harness::new().await;
    *h.engine.started_at.lock().unwrap() = Some(h.clock.system_time());
    let (status, accepted) = status_json(h.deploy("/pull", "shop-web", SHOP).await).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_string();
    let engine = h.engine.clone();
    soon("the deploy's up", || engine.command_count() == 2).await;
    let path = format!("/jobs/{id}");
    let (_, job) = status_json(h.get_signed(&path, SHOP, "shop").await).await;
    assert_eq!(job["state"], "running", "the gate waits: {job}");
    h.clock.advance(Duration::from_secs(5));
    let started = std::time::Instant::now();
    let (_, job) = status_json(h.get_signed(&format!("{path}?wait=10"), SHOP, "shop").await).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "passed by the clock, not by waiting: {:?}",
        started.elapsed()
    );
}

/// A webhook receiver on loopback that answers the n-th request with
/// `statuses[n]` (the last one after that).
struct Receiver {
    url: String,
    hits: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Receiver {
    async fn start(statuses: &'static [u16]) -> Self {
        Self::answering(statuses, String::new()).await
    }

    /// A receiver that answers every request with a redirect to `to`.
    async fn redirecting(to: &str) -> Self {
        Self::answering(&[307], format!("location: {to}\r\n")).await
    }

    async fn answering(statuses: &'static [u16], headers: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (counter, stopped) = (hits.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap(),
                    () = stopped.cancelled() => return,
                };
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Headers, then as much body as they announce.
                loop {
                    let n = socket.read(&mut buffer).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let status = statuses[n.min(statuses.len() - 1)];
                let answer = format!(
                    "HTTP/1.1 {status} X\r\n{headers}content-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        Self { url, hits, stop }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The notifications counted with `outcome` (`/metrics`).
async fn counted(h: &Harness, outcome: &str) -> f64 {
    let response = h.client.get("/metrics").send().await;
    let text = response.0.into_body().into_string().await.unwrap();
    crate::support::parse_metrics(&text)
        .samples
        .iter()
        .filter(|s| {
            s.metric == "delivery_hook_notifications_total"
                && s.labels.get("outcome") == Some(outcome)
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// A gateway whose project `shop` tells a webhook at `url` of every end,
/// with its notifier running; and the test's variable names.
async fn notifying(url: &str) -> (Harness, CancellationToken) {
    let suffix = delivery_hook::names::JobId::random().to_string();
    let (url_var, key_var) = (format!("HOOK_URL_{suffix}"), format!("HOOK_KEY_{suffix}"));
    set_var(&url_var, url);
    set_var(&key_var, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let h = Harness::with_policy(
        "metrics = true",
        &format!(
            "\n[[projects.shop.notify]]\nkind = \"webhook\"\nurl_env = \"{url_var}\"\nsecret_env = \"{key_var}\"\n"
        ),
    )
    .await;
    // The gateway's clock an hour ahead of the system's: every time the
    // notifier keeps is read from it.
    h.clock.advance(Duration::from_secs(3600));
    let stop = CancellationToken::new();
    tokio::spawn(h.gateway.notifier().clone().run(stop.clone()));
    (h, stop)
}

/// Deploys `shop-web` to its end; the job.
async fn deployed(h: &Harness) -> Value {
    let body = crate::support::body_for("shop-web");
    let signed = h.post_signed("/pull?wait=10", &body, SHOP, h.clock.unix_secs(), None);
    let (status, job) = status_json(signed.await).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    job
}

/// Waits (briefly, in real time) until `/metrics` counts `n`
/// notifications with `outcome`.
async fn until_counted(h: &Harness, outcome: &str, n: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while counted(h, outcome).await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} `{outcome}`"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (briefly, in real time) until `/metrics` shows `n` messages
/// waiting; the notifier counts them after each pass.
async fn until_waiting(h: &Harness, n: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = crate::support::metric(h, "delivery_hook_notifications_waiting", &[]).await;
        if waiting == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{waiting} waiting, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wakes the notifier, as a job's end does, after the clock moved.
fn wake(h: &Harness) {
    h.gateway.notifier().written();
}

#[tokio::test]
async fn a_notification_is_retried_when_the_gateways_clock_says_so() {
    let receiver = Receiver::start(&[503, 204]).await;
    let (h, _stop) = notifying(&receiver.url).await;
    deployed(&h).await;
    soon("the first attempt", || receiver.hits() == 1).await;
    until_counted(&h, "retry", 1.0).await;
    // The retry is due 1 to 2 s after the attempt, by the gateway's clock.
    let now = h.clock.unix_ms();
    let (waiting, next) = h.gateway.jobs().store().waiting(now).await.unwrap();
    assert_eq!(waiting, 1);
    until_waiting(&h, 1.0).await;
    let next = next.expect("a retry is scheduled");
    assert!(
        next > now && next - now <= 2000,
        "due {} ms after the gateway's now",
        next as i64 - now as i64
    );
    wake(&h);
    assert_eq!(receiver.hits(), 1, "the retry waits for its time");
    // Due: the first retry comes after 1 to 2 s, jittered.
    h.clock.advance(Duration::from_secs(2));
    wake(&h);
    soon("the retry", || receiver.hits() == 2).await;
    until_counted(&h, "delivered", 1.0).await;
}

/// A redirect is an answer like any other that is not 2xx: the message is
/// retried at its own URL, and the place it points to gets nothing.
#[tokio::test]
async fn a_notification_follows_no_redirect() {
    let elsewhere = Receiver::start(&[204]).await;
    let receiver = Receiver::redirecting(&elsewhere.url).await;
    let (h, _stop) = notifying(&receiver.url).await;
    deployed(&h).await;
    soon("the first attempt", || receiver.hits() == 1).await;
    until_counted(&h, "retry", 1.0).await;
    assert_eq!(elsewhere.hits(), 0, "the redirect was not followed");
    assert_eq!(counted(&h, "delivered").await, 0.0);
}

#[tokio::test]
async fn a_notification_is_given_up_after_a_day_by_the_gateways_clock() {
    let receiver = Receiver::start(&[503]).await;
    let (h, _stop) = notifying(&receiver.url).await;
    deployed(&h).await;
    soon("the first attempt", || receiver.hits() == 1).await;
    until_counted(&h, "retry", 1.0).await;
    h.clock.advance(Duration::from_secs(24 * 3600 + 1));
    wake(&h);
    soon("the last attempt", || receiver.hits() == 2).await;
    until_counted(&h, "gave_up", 1.0).await;
    // Nothing is tried again: attempts come only from the outbox, which
    // the last one emptied.
    let (waiting, _) = h
        .gateway
        .jobs()
        .store()
        .waiting(h.clock.unix_ms())
        .await
        .unwrap();
    assert_eq!(waiting, 0, "the outbox is empty");
    until_waiting(&h, 0.0).await;
    assert_eq!(receiver.hits(), 2);
}

#[tokio::test]
async fn a_removed_targets_notifications_are_dropped() {
    let receiver = Receiver::start(&[503]).await;
    let (h, _stop) = notifying(&receiver.url).await;
    deployed(&h).await;
    soon("the first attempt", || receiver.hits() == 1).await;
    until_counted(&h, "retry", 1.0).await;
    h.reload_with_tail("");
    h.clock.advance(Duration::from_secs(60));
    wake(&h);
    until_counted(&h, "dropped", 1.0).await;
    assert_eq!(receiver.hits(), 1, "nothing is sent to a removed target");
}
