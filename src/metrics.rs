//! Counters for `GET /metrics`, encoded by prometheus-client in the
//! OpenMetrics text format, which Prometheus reads.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::names::Action;
use crate::record::JobState;

/// Upper bounds of the job-duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 11] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
];

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Label = (&'static str, &'static str);
/// `operation` and `status`.
type RequestLabels = ([Label; 1], [(&'static str, u16); 1]);

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    auth_failures: Family<[Label; 1], Counter>,
    jobs: Family<[Label; 2], Counter>,
    durations: Family<[Label; 1], Histogram, fn() -> Histogram>,
    jobs_queued: Gauge,
    jobs_running: Gauge,
    replay_entries: Gauge,
    replay_capacity: Gauge,
    throttled_clients: Gauge,
    notifications: Family<[Label; 2], Counter>,
    notifications_waiting: Gauge,
}

/// Point-in-time values the caller reads when rendering.
pub struct Gauges {
    pub jobs_queued: usize,
    pub jobs_running: usize,
    pub replay_entries: usize,
    pub replay_capacity: usize,
    pub throttled_clients: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("delivery_hook");
        let requests = Family::default();
        registry.register(
            "requests",
            "HTTP requests answered, by operation and status",
            requests.clone(),
        );
        let auth_failures = Family::default();
        registry.register(
            "auth_failures",
            "Refused authentications, by reason code",
            auth_failures.clone(),
        );
        let jobs = Family::default();
        registry.register(
            "jobs",
            "Jobs that reached a final state, by action and state",
            jobs.clone(),
        );
        let durations = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register(
            "job_duration_seconds",
            "Time from a job's start to its final state",
            durations.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let gauge: Gauge<i64, std::sync::atomic::AtomicI64> = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let jobs_queued = gauge("jobs_queued", "Jobs waiting to run");
        let jobs_running = gauge("jobs_running", "Jobs running now");
        let replay_entries = gauge(
            "replay_cache_entries",
            "Signed requests remembered for replay protection",
        );
        let replay_capacity = gauge("replay_cache_capacity", "Bound on the replay cache");
        let throttled_clients = gauge(
            "throttled_clients",
            "Client addresses with recent authentication failures",
        );
        let notifications_waiting = gauge(
            "notifications_waiting",
            "Deploy notifications in the outbox, waiting for delivery or a retry",
        );
        let notifications = Family::default();
        registry.register(
            "notifications",
            "Deploy notification attempts, by target kind and outcome (delivered, retry, gave_up, dropped)",
            notifications.clone(),
        );
        Self {
            registry,
            requests,
            auth_failures,
            jobs,
            durations,
            jobs_queued,
            jobs_running,
            replay_entries,
            replay_capacity,
            throttled_clients,
            notifications,
            notifications_waiting,
        }
    }
}

impl Metrics {
    /// One HTTP request answered; `operation` is the operationId.
    pub fn request(&self, operation: &'static str, status: u16) {
        self.requests
            .get_or_create(&([("operation", operation)], [("status", status)]))
            .inc();
    }

    /// One authentication failure, by its reason code.
    pub fn auth_failure(&self, code: &'static str) {
        self.auth_failures.get_or_create(&[("reason", code)]).inc();
    }

    /// One job reached a final state.
    pub fn job_finished(&self, action: Action, state: JobState, duration: Duration) {
        self.jobs
            .get_or_create(&[("action", action.as_str()), ("state", state.as_str())])
            .inc();
        self.durations
            .get_or_create(&[("action", action.as_str())])
            .observe(duration.as_secs_f64());
    }

    /// One notification attempt's outcome.
    pub fn notification(&self, kind: &'static str, outcome: &'static str) {
        self.notifications
            .get_or_create(&[("kind", kind), ("outcome", outcome)])
            .inc();
    }

    /// How many notifications the outbox holds.
    pub fn notifications_waiting(&self, count: u64) {
        self.notifications_waiting
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let set = |gauge: &Gauge, value: usize| {
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set(&self.jobs_queued, gauges.jobs_queued);
        set(&self.jobs_running, gauges.jobs_running);
        set(&self.replay_entries, gauges.replay_entries);
        set(&self.replay_capacity, gauges.replay_capacity);
        set(&self.throttled_clients, gauges.throttled_clients);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.request("pullContainer", 202);
        m.request("pullContainer", 202);
        m.auth_failure("signature_mismatch");
        m.job_finished(
            Action::Pull,
            JobState::Succeeded,
            Duration::from_millis(1500),
        );
        let text = m.render(&Gauges {
            jobs_queued: 1,
            jobs_running: 2,
            replay_entries: 3,
            replay_capacity: 4,
            throttled_clients: 0,
        });
        for expected in [
            "delivery_hook_requests_total{operation=\"pullContainer\",status=\"202\"} 2",
            "delivery_hook_auth_failures_total{reason=\"signature_mismatch\"} 1",
            "delivery_hook_jobs_total{action=\"pull\",state=\"succeeded\"} 1",
            "delivery_hook_job_duration_seconds_bucket{le=\"1.0\",action=\"pull\"} 0",
            "delivery_hook_job_duration_seconds_bucket{le=\"2.0\",action=\"pull\"} 1",
            "delivery_hook_job_duration_seconds_bucket{le=\"+Inf\",action=\"pull\"} 1",
            "delivery_hook_jobs_running 2",
        ] {
            assert!(text.contains(expected), "{expected} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
