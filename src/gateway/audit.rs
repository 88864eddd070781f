//! The audit trail: one line per accepted request, naming the project that
//! authenticated (never one merely named); and refusals, the first few of
//! each source and code per interval in full, the rest counted, so a flood
//! of refusals cannot fill the host's disk.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::record::JobTarget;

use super::{Code, DeployCall, DeployOutcome, ReadCall, Refusal};

/// Refusals of one source and code written in full per interval.
pub const REFUSALS_IN_FULL: u32 = 5;

/// The interval over which refusals are counted.
pub const REFUSAL_INTERVAL: Duration = Duration::from_secs(60);

/// Sources counted one by one per interval; the refusals of further
/// sources are counted together, per code.
const SOURCES: usize = 1024;

/// What a deploy request was found to be about, as far as it got.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) project: Option<String>,
    pub(super) container: Option<String>,
    /// The `sub` of the CI token that authenticated, if one did.
    pub(super) token_subject: Option<String>,
}

/// Counts refusals per source and code over the current interval.
#[derive(Default)]
pub(super) struct RefusalLog {
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    counts: HashMap<(IpAddr, Code), u32>,
    /// Refusals of sources past [`SOURCES`], per code.
    others: HashMap<Code, u64>,
}

impl RefusalLog {
    /// Counts a refusal; true when its line is to be written in full.
    fn in_full(&self, client: IpAddr, code: Code, now: Instant) -> bool {
        let (ended, in_full) = {
            let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            let ended = match window.started {
                Some(started) if now.saturating_duration_since(started) < REFUSAL_INTERVAL => None,
                _ => Some(std::mem::take(&mut *window)),
            };
            window.started.get_or_insert(now);
            let sources = window.counts.len();
            let in_full = match window.counts.get_mut(&(client, code)) {
                Some(count) => {
                    *count = count.saturating_add(1);
                    *count <= REFUSALS_IN_FULL
                }
                None if sources < SOURCES => {
                    window.counts.insert((client, code), 1);
                    true
                }
                None => {
                    *window.others.entry(code).or_default() += 1;
                    false
                }
            };
            (ended, in_full)
        };
        if let Some(ended) = ended {
            ended.summarise(now);
        }
        in_full
    }

    /// Writes the counts of the interval so far and starts a new one: on a
    /// timer, and when the gateway stops.
    pub(super) fn flush(&self, now: Instant) {
        let ended = std::mem::take(&mut *self.window.lock().unwrap_or_else(|e| e.into_inner()));
        ended.summarise(now);
    }
}

impl Window {
    /// One line per source and code whose refusals were not all written.
    fn summarise(self, now: Instant) {
        let secs = self
            .started
            .map_or(0, |s| now.saturating_duration_since(s).as_secs());
        for ((client, code), count) in self.counts {
            if count > REFUSALS_IN_FULL {
                tracing::info!(
                    target: "audit",
                    client = %client,
                    refusal = code.kind().as_str(),
                    code = code.as_str(),
                    refused = count,
                    not_written = count - REFUSALS_IN_FULL,
                    over_secs = secs,
                    "refusals summarised"
                );
            }
        }
        for (code, count) in self.others {
            tracing::info!(
                target: "audit",
                client = "other",
                refusal = code.kind().as_str(),
                code = code.as_str(),
                refused = count,
                not_written = count,
                over_secs = secs,
                "refusals summarised"
            );
        }
    }
}

impl RefusalLog {
    pub(super) fn deploy(
        &self,
        call: &DeployCall<'_>,
        seen: &Seen,
        result: &Result<DeployOutcome, Refusal>,
        now: Instant,
    ) {
        match result {
            Ok(o) => tracing::info!(
                target: "audit",
                client = %call.client,
                project = %o.job.project,
                container = o.job.container_name(),
                swarm_service = match &o.job.target {
                    JobTarget::Swarm(s) => s.name.as_str(),
                    JobTarget::Compose(_) => "-",
                },
                action = call.action.as_str(),
                job = %o.job.id,
                state = o.job.state.as_str(),
                replayed = o.replayed,
                coalesced = o.coalesced,
                token_subject = seen.token_subject.as_deref().unwrap_or("-"),
                code = if o.replayed { "replayed" } else if o.coalesced { "coalesced" } else { "accepted" },
                "deploy accepted"
            ),
            Err(r) if self.in_full(call.client, r.code, now) => tracing::info!(
                target: "audit",
                client = %call.client,
                project = seen.project.as_deref().unwrap_or("-"),
                container = seen.container.as_deref().unwrap_or("-"),
                token_subject = seen.token_subject.as_deref().unwrap_or("-"),
                action = call.action.as_str(),
                refusal = r.kind().as_str(),
                code = r.code.as_str(),
                "deploy refused"
            ),
            Err(_) => {}
        }
    }

    pub(super) fn read(
        &self,
        call: &ReadCall<'_>,
        operation: &str,
        result: Result<(), &Refusal>,
        now: Instant,
    ) {
        match result {
            Ok(_) => tracing::debug!(
                target: "audit",
                client = %call.client,
                project = call.headers.project.unwrap_or("-"),
                operation,
                "read allowed"
            ),
            Err(r) if self.in_full(call.client, r.code, now) => tracing::info!(
                target: "audit",
                client = %call.client,
                project = call.headers.project.unwrap_or("-"),
                operation,
                refusal = r.kind().as_str(),
                code = r.code.as_str(),
                "read refused"
            ),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusals_of_a_source_and_code_are_written_then_counted() {
        let log = RefusalLog::default();
        let start = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let written =
            |client, code, at| (0..20).filter(|_| log.in_full(client, code, at)).count() as u32;
        assert_eq!(written(a, Code::SignatureMismatch, start), REFUSALS_IN_FULL);
        assert_eq!(
            written(a, Code::InvalidJson, start),
            REFUSALS_IN_FULL,
            "per code"
        );
        assert_eq!(
            written(b, Code::SignatureMismatch, start),
            REFUSALS_IN_FULL,
            "per source"
        );
        let counted = log.window.lock().unwrap().counts[&(a, Code::SignatureMismatch)];
        assert_eq!(counted, 20);
        let later = start + REFUSAL_INTERVAL;
        assert_eq!(
            written(a, Code::SignatureMismatch, later),
            REFUSALS_IN_FULL,
            "a new interval"
        );
        assert_eq!(log.window.lock().unwrap().counts.len(), 1);
    }

    #[test]
    fn sources_past_the_bound_are_counted_together() {
        let log = RefusalLog::default();
        let now = Instant::now();
        for i in 0..SOURCES as u32 + 10 {
            log.in_full(IpAddr::from(i.to_be_bytes()), Code::SignatureMismatch, now);
        }
        let window = log.window.lock().unwrap();
        assert_eq!(window.counts.len(), SOURCES);
        assert_eq!(window.others[&Code::SignatureMismatch], 10);
    }
}
