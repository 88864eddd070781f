//! Counters for `GET /metrics`, in the Prometheus text format.
//!
//! The label sets are small and closed (operation × status, a dozen reason
//! codes, action × final state), so plain maps behind a mutex do; nothing
//! here is on a path hot enough for sharded atomics to pay.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::jobs::JobState;
use crate::names::Action;

/// Upper bounds of the job-duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 11] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Counters {
    requests: BTreeMap<(&'static str, u16), u64>,
    auth_failures: BTreeMap<&'static str, u64>,
    jobs: BTreeMap<(&'static str, &'static str), u64>,
    durations: BTreeMap<&'static str, Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

/// Point-in-time values the caller reads when rendering.
pub struct Gauges {
    pub jobs_queued: usize,
    pub jobs_running: usize,
    pub replay_entries: usize,
    pub replay_capacity: usize,
    pub throttled_clients: usize,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One HTTP request answered; `operation` is the operationId.
    pub fn request(&self, operation: &'static str, status: u16) {
        *self.lock().requests.entry((operation, status)).or_default() += 1;
    }

    /// One authentication failure, by its reason code.
    pub fn auth_failure(&self, code: &'static str) {
        *self.lock().auth_failures.entry(code).or_default() += 1;
    }

    /// One job reached a final state.
    pub fn job_finished(&self, action: Action, state: JobState, duration: Duration) {
        let mut c = self.lock();
        *c.jobs.entry((action.as_str(), state.as_str())).or_default() += 1;
        let h = c.durations.entry(action.as_str()).or_default();
        let secs = duration.as_secs_f64();
        for (bound, count) in DURATION_BUCKETS.iter().zip(h.counts.iter_mut()) {
            if secs <= *bound {
                *count += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let c = self.lock();
        let mut out = String::new();
        let w = &mut out;
        header(
            w,
            "delivery_hook_requests_total",
            "counter",
            "HTTP requests answered, by operation and status.",
        );
        for ((op, status), n) in &c.requests {
            let _ = writeln!(
                w,
                "delivery_hook_requests_total{{operation=\"{op}\",status=\"{status}\"}} {n}"
            );
        }
        header(
            w,
            "delivery_hook_auth_failures_total",
            "counter",
            "Refused authentications, by reason code.",
        );
        for (reason, n) in &c.auth_failures {
            let _ = writeln!(
                w,
                "delivery_hook_auth_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        header(
            w,
            "delivery_hook_jobs_total",
            "counter",
            "Jobs that reached a final state, by action and state.",
        );
        for ((action, state), n) in &c.jobs {
            let _ = writeln!(
                w,
                "delivery_hook_jobs_total{{action=\"{action}\",state=\"{state}\"}} {n}"
            );
        }
        header(
            w,
            "delivery_hook_job_duration_seconds",
            "histogram",
            "Time from a job's start to its final state.",
        );
        for (action, h) in &c.durations {
            for (bound, count) in DURATION_BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    w,
                    "delivery_hook_job_duration_seconds_bucket{{action=\"{action}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                w,
                "delivery_hook_job_duration_seconds_bucket{{action=\"{action}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                w,
                "delivery_hook_job_duration_seconds_sum{{action=\"{action}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                w,
                "delivery_hook_job_duration_seconds_count{{action=\"{action}\"}} {}",
                h.count
            );
        }
        let gauge = |w: &mut String, name: &str, help: &str, value: usize| {
            header(w, name, "gauge", help);
            let _ = writeln!(w, "{name} {value}");
        };
        gauge(
            w,
            "delivery_hook_jobs_queued",
            "Jobs waiting to run.",
            gauges.jobs_queued,
        );
        gauge(
            w,
            "delivery_hook_jobs_running",
            "Jobs running now.",
            gauges.jobs_running,
        );
        gauge(
            w,
            "delivery_hook_replay_cache_entries",
            "Signed requests remembered for replay protection.",
            gauges.replay_entries,
        );
        gauge(
            w,
            "delivery_hook_replay_cache_capacity",
            "Bound on the replay cache.",
            gauges.replay_capacity,
        );
        gauge(
            w,
            "delivery_hook_throttled_clients",
            "Client addresses with recent authentication failures.",
            gauges.throttled_clients,
        );
        out
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}");
    let _ = writeln!(w, "# TYPE {name} {kind}");
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
        assert!(text.contains(
            "delivery_hook_requests_total{operation=\"pullContainer\",status=\"202\"} 2"
        ));
        assert!(
            text.contains("delivery_hook_auth_failures_total{reason=\"signature_mismatch\"} 1")
        );
        assert!(text.contains("delivery_hook_jobs_total{action=\"pull\",state=\"succeeded\"} 1"));
        assert!(
            text.contains("delivery_hook_job_duration_seconds_bucket{action=\"pull\",le=\"1\"} 0")
        );
        assert!(
            text.contains("delivery_hook_job_duration_seconds_bucket{action=\"pull\",le=\"2\"} 1")
        );
        assert!(
            text.contains(
                "delivery_hook_job_duration_seconds_bucket{action=\"pull\",le=\"+Inf\"} 1"
            )
        );
        assert!(text.contains("delivery_hook_jobs_running 2"));
    }
}
