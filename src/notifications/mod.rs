//! Deploy results, delivered to people: a generic webhook signed as
//! Standard Webhooks specifies, a Slack incoming webhook, or mail.
//!
//! When a job ends, the notifications its project's targets want are
//! written to the store's outbox in the transaction that records the end
//! ([`Notifier`] is the jobs' [`Outbox`]). A task of its own delivers them:
//! each attempt bounded by [`ATTEMPT_TIMEOUT`], failures retried with
//! exponential backoff and jitter until [`GIVE_UP_AFTER`], across restarts,
//! so delivery is at least once and never delays or changes a deploy. A
//! message keeps its id on every attempt (`webhook-id`), for the receiver
//! to drop duplicates.

mod message;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::jobs::Outbox;
use crate::metrics::Metrics;
use crate::outbound::LazyClient;
use crate::policy::{NotifyKind, NotifyTarget, PolicyCell, SmtpSettings, SmtpTls};
use crate::record::{JobRecord, rfc3339};
use crate::store::{OutboxOutcome, OutboxRow, Store};

pub use message::Facts;

/// How long one delivery attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a notification is retried after its job ended.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The first retry's delay; each later one doubles, up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_secs(2);
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Deliveries in flight at once: a target that never answers holds one.
const PARALLEL: usize = 8;
/// How long the task sleeps when nothing is due, at most.
const IDLE: Duration = Duration::from_secs(60);

/// Renders a job as the API shows it, for a message's `data`.
pub type Render = fn(&JobRecord) -> serde_json::Value;

/// Why an attempt failed, in words without a URL, key or address.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the receiver answered {0}")]
    Status(reqwest::StatusCode),
    #[error("{0}")]
    Http(String),
    #[error("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())]
    Timeout,
    #[error("mail: {0}")]
    Mail(String),
    #[error("no [notify.smtp] to send mail with")]
    NoSmtp,
    #[error("the message is not valid: {0}")]
    Message(String),
}

/// The outbox's writer and deliverer.
pub struct Notifier {
    store: Store,
    policy: Arc<PolicyCell>,
    metrics: Arc<Metrics>,
    render: Render,
    /// For webhooks and Slack; made at the first delivery.
    http: LazyClient,
    wake: tokio::sync::Notify,
    /// Due times, backoff and giving up are read from it.
    clock: Clock,
}

impl Outbox for Notifier {
    fn rows(&self, record: &JobRecord) -> Vec<OutboxRow> {
        let policy = self.policy.get();
        let Some(project) = policy.project(&record.project) else {
            return Vec::new();
        };
        let wanted: Vec<&NotifyTarget> = project
            .notify
            .iter()
            .filter(|t| record.state.outcome().is_some_and(|o| t.wants(o)))
            .collect();
        if wanted.is_empty() {
            return Vec::new();
        }
        let now = self.clock.unix_ms();
        let event = record.state.as_str();
        let page = policy
            .server
            .public_url
            .as_deref()
            .filter(|_| policy.server.ui.enabled)
            .map(|url| format!("{url}/ui/jobs/{}", record.id));
        let payload = message(
            event,
            record.finished_at_ms.unwrap_or(now),
            (self.render)(record),
            page.as_deref(),
        );
        let id = format!("msg_{}_{event}", record.id);
        wanted
            .into_iter()
            .map(|target| OutboxRow {
                message: id.clone(),
                target: target.id.clone(),
                project: record.project.clone(),
                job: record.id,
                event: event.to_owned(),
                created_at_ms: now,
                next_at_ms: now,
                attempts: 0,
                payload: payload.clone(),
            })
            .collect()
    }

    fn written(&self) {
        self.wake.notify_one();
    }
}

/// A message's JSON: `{"type": "deploy.<event>", "timestamp", "data"}`,
/// and `page`, the job's web page, when the gateway serves one at a
/// `public_url`. The message of a job's end has the id
/// `msg_<job id>_<state>`, the same for every target and attempt.
pub fn message(event: &str, at_ms: u64, data: serde_json::Value, page: Option<&str>) -> String {
    let mut message = serde_json::json!({
        "type": format!("deploy.{event}"),
        "timestamp": rfc3339(at_ms),
        "data": data,
    });
    if let Some(page) = page {
        message["page"] = page.into();
    }
    message.to_string()
}

impl Notifier {
    pub fn new(
        store: Store,
        policy: Arc<PolicyCell>,
        metrics: Arc<Metrics>,
        render: Render,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            policy,
            metrics,
            render,
            http: LazyClient::new(ATTEMPT_TIMEOUT),
            wake: tokio::sync::Notify::new(),
            clock,
        })
    }

    /// Delivers what the outbox holds until `stop`; what is left waits for
    /// the next start.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut flying: JoinSet<(String, String)> = JoinSet::new();
        let mut busy: HashSet<(String, String)> = HashSet::new();
        loop {
            let room = PARALLEL.saturating_sub(flying.len());
            if room > 0 {
                match self
                    .store
                    .due(self.clock.unix_ms(), room + busy.len())
                    .await
                {
                    Ok(rows) => {
                        for row in rows {
                            let key = (row.message.clone(), row.target.clone());
                            if flying.len() >= PARALLEL || busy.contains(&key) {
                                continue;
                            }
                            busy.insert(key.clone());
                            let this = self.clone();
                            flying.spawn(async move {
                                this.attempt(row).await;
                                key
                            });
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "the outbox could not be read"),
                }
            }
            // A row due now that did not start is in flight, or waits for
            // room: a finished attempt wakes the loop for those. Otherwise
            // the next look is when the soonest later one is due.
            let now = self.clock.unix_ms();
            let next = match self.store.waiting(now).await {
                Ok((count, later)) => {
                    self.metrics.notifications_waiting(count);
                    later.map_or(IDLE, |at| Duration::from_millis(at - now).min(IDLE))
                }
                Err(_) => IDLE,
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(next), if flying.len() < PARALLEL => {}
                Some(done) = flying.join_next() => {
                    if let Ok(key) = done {
                        busy.remove(&key);
                    }
                }
            }
        }
        flying.abort_all();
    }

    /// One attempt at one row, and its outcome recorded.
    async fn attempt(&self, row: OutboxRow) {
        let policy = self.policy.get();
        let target = policy
            .project(&row.project)
            .and_then(|p| p.notify.iter().find(|t| t.id == row.target));
        let Some(target) = target else {
            tracing::warn!(
                target: "audit",
                job = %row.job,
                project = %row.project,
                event = %row.event,
                "notification dropped: its target is no longer in the policy"
            );
            self.metrics.notification("unknown", "dropped");
            self.settle(&row, OutboxOutcome::Done).await;
            return;
        };
        let kind = target.kind.as_str();
        let attempts = row.attempts + 1;
        let result = match self.http.get() {
            Ok(http) => {
                let message = Outgoing {
                    id: &row.message,
                    payload: &row.payload,
                    at_secs: self.clock.unix_secs(),
                };
                deliver(http, target, policy.smtp.as_ref(), message).await
            }
            Err(why) => Err(DeliveryError::Http(why.to_string())),
        };
        let now = self.clock.unix_ms();
        // One audit line per outcome, naming the attempt but never where it went.
        macro_rules! audit {
            ($level:ident, $($fields:tt)*) => {
                tracing::$level!(
                    target: "audit",
                    job = %row.job,
                    project = %row.project,
                    event = %row.event,
                    kind,
                    notify_target = target.number,
                    attempts,
                    $($fields)*
                )
            };
        }
        let outcome = match result {
            Ok(()) => {
                audit!(info, "notification delivered");
                self.metrics.notification(kind, "delivered");
                OutboxOutcome::Done
            }
            Err(error)
                if now.saturating_sub(row.created_at_ms) >= GIVE_UP_AFTER.as_millis() as u64 =>
            {
                audit!(warn, error = %error, "notification given up after a day of attempts");
                self.metrics.notification(kind, "gave_up");
                OutboxOutcome::Done
            }
            Err(error) => {
                let delay = backoff(attempts);
                audit!(
                    warn,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %error,
                    "notification attempt failed"
                );
                self.metrics.notification(kind, "retry");
                OutboxOutcome::Retry {
                    attempts,
                    next_at_ms: now + delay.as_millis() as u64,
                }
            }
        };
        self.settle(&row, outcome).await;
    }

    async fn settle(&self, row: &OutboxRow, outcome: OutboxOutcome) {
        if let Err(e) = self.store.settle(&row.message, &row.target, outcome).await {
            tracing::error!(job = %row.job, error = %e, "a notification's outcome could not be recorded");
        }
    }
}

/// One message to send: its id, its JSON, and when it is sent (Unix
/// seconds, the webhook's timestamp).
pub struct Outgoing<'a> {
    pub id: &'a str,
    pub payload: &'a str,
    pub at_secs: u64,
}

/// Sends one message to one target, within [`ATTEMPT_TIMEOUT`].
pub async fn deliver(
    http: &reqwest::Client,
    target: &NotifyTarget,
    smtp: Option<&SmtpSettings>,
    message: Outgoing<'_>,
) -> Result<(), DeliveryError> {
    tokio::time::timeout(ATTEMPT_TIMEOUT, send(http, target, smtp, message))
        .await
        .unwrap_or(Err(DeliveryError::Timeout))
}

async fn send(
    http: &reqwest::Client,
    target: &NotifyTarget,
    smtp: Option<&SmtpSettings>,
    message: Outgoing<'_>,
) -> Result<(), DeliveryError> {
    let Outgoing {
        id,
        payload,
        at_secs: timestamp,
    } = message;
    match &target.kind {
        NotifyKind::Webhook { url, key } => {
            let request = http
                .post(url.0.clone())
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", sign(&key.0, id, timestamp, payload))
                .body(payload.to_owned());
            post(request).await
        }
        NotifyKind::Slack { url } => {
            let facts = Facts::from_payload(payload)?;
            let request = http
                .post(url.0.clone())
                .header("content-type", "application/json")
                .body(facts.slack().to_string());
            post(request).await
        }
        NotifyKind::Email { to } => {
            let smtp = smtp.ok_or(DeliveryError::NoSmtp)?;
            let facts = Facts::from_payload(payload)?;
            send_mail(smtp, to, id, &facts).await
        }
    }
}

async fn post(request: reqwest::RequestBuilder) -> Result<(), DeliveryError> {
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            DeliveryError::Timeout
        } else {
            // The URL may hold a token: it stays out of the error.
            DeliveryError::Http(crate::error_chain(&e.without_url()))
        }
    })?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Status(response.status()))
    }
}

/// `webhook-signature`: `v1,` and the base64 of HMAC-SHA256 over
/// `id.timestamp.body` with the key.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The delay before attempt `attempts + 1`: doubling from [`FIRST_DELAY`]
/// up to [`MAX_DELAY`], each a random share between half and all of it, so
/// that many messages to one receiver do not retry in step.
fn backoff(attempts: u32) -> Duration {
    let full = FIRST_DELAY
        .saturating_mul(1 << attempts.saturating_sub(1).min(20))
        .min(MAX_DELAY);
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    full / 2 + full / 2 * u32::from(byte[0]) / 255
}

async fn send_mail(
    smtp: &SmtpSettings,
    to: &[String],
    id: &str,
    facts: &Facts,
) -> Result<(), DeliveryError> {
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    // lettre's errors say their causes themselves.
    let mail_error = |e: &dyn std::error::Error| DeliveryError::Mail(e.to_string());
    let from: Mailbox = smtp
        .from
        .parse()
        .map_err(|e| DeliveryError::Message(format!("`from`: {e}")))?;
    let mut builder = Message::builder()
        .from(from)
        .subject(facts.subject())
        .message_id(Some(format!("<{id}@delivery-hook>")))
        .header(ContentType::TEXT_PLAIN);
    for address in to {
        let mailbox: Mailbox = address
            .parse()
            .map_err(|e| DeliveryError::Message(format!("`to`: {e}")))?;
        builder = builder.to(mailbox);
    }
    let message = builder
        .body(facts.text())
        .map_err(|e| DeliveryError::Message(e.to_string()))?;
    let transport = match smtp.tls {
        SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
            .map_err(|e| mail_error(&e))?,
        SmtpTls::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).map_err(|e| mail_error(&e))?
        }
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
    };
    let mut transport = transport.port(smtp.port).timeout(Some(ATTEMPT_TIMEOUT));
    if let Some((user, password)) = &smtp.login {
        transport = transport.credentials(Credentials::new(user.clone(), password.0.clone()));
    }
    transport
        .build()
        .send(message)
        .await
        .map_err(|e| mail_error(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_standard_webhooks_v1() {
        // The Standard Webhooks specification's example: key
        // `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`, id `msg_p5jXN8AQM9LWM0D4loKWxJek`,
        // timestamp 1614265330, body `{"test": 2432232314}`.
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops_growing() {
        for attempts in 1..40 {
            let full = FIRST_DELAY
                .saturating_mul(1 << (attempts - 1).min(20))
                .min(MAX_DELAY);
            let delay = backoff(attempts);
            assert!(delay >= full / 2 && delay <= full, "{attempts}: {delay:?}");
        }
        assert!(backoff(1) <= Duration::from_secs(2));
        assert!(backoff(30) >= MAX_DELAY / 2);
    }
}
