//! Running one job: its compose steps, then a check that the service runs.

use std::time::Duration;

use tokio::sync::watch;

use super::record::{JobRecord, JobState, Step};
use crate::docker::{ComposeOp, ComposeTarget, ContainerStatus, Engine, Exit, Limits, OutputLog};
use crate::names::Action;

/// How often the service is looked at while it starts; the check waits for
/// a condition (running, and healthy where there is a health check).
const POLL: Duration = Duration::from_millis(250);

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub state: JobState,
    pub error: Option<String>,
}

impl Completion {
    fn ended(state: JobState, error: impl Into<String>) -> Self {
        Self {
            state,
            error: Some(error.into()),
        }
    }
}

fn steps(action: Action) -> &'static [ComposeOp] {
    match action {
        Action::Pull => &[ComposeOp::Pull, ComposeOp::Up],
        Action::Build => &[ComposeOp::UpBuild],
    }
}

fn describe(op: ComposeOp) -> &'static str {
    match op {
        ComposeOp::Pull => "compose pull",
        ComposeOp::Up => "compose up -d",
        ComposeOp::UpBuild => "compose up -d --build",
    }
}

fn timeout_message(timeout: Duration, during: &str) -> String {
    format!(
        "the job ran past job_timeout_secs ({} s) {during} and was stopped",
        timeout.as_secs()
    )
}

const INTERRUPTED: &str = "the gateway stopped while the job ran";

/// Runs the steps of `action` against `target`, recording each in `record`.
pub async fn execute(
    engine: &dyn Engine,
    target: &ComposeTarget,
    action: Action,
    record: &watch::Sender<JobRecord>,
    output: &OutputLog,
    limits: &Limits,
    timeout: Duration,
) -> Completion {
    for &op in steps(action) {
        let outcome = engine.run_compose(target, op, limits, output).await;
        record.send_modify(|r| r.steps.push(Step::from(&outcome)));
        let step = describe(op);
        let failure = match outcome.exit {
            Exit::Code(0) => continue,
            Exit::Code(code) => Completion::ended(
                JobState::Failed,
                format!("`{step}` exited with code {code}"),
            ),
            Exit::Signal(signal) => Completion::ended(
                JobState::Failed,
                format!("`{step}` was killed by signal {signal}"),
            ),
            Exit::SpawnFailed(why) => Completion::ended(JobState::Failed, why),
            Exit::TimedOut => Completion::ended(
                JobState::TimedOut,
                timeout_message(timeout, &format!("during `{step}`")),
            ),
            Exit::Cancelled => Completion::ended(JobState::Interrupted, INTERRUPTED),
        };
        return failure;
    }
    verify(engine, target, limits, timeout).await
}

/// What the service's containers say right now.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Ready,
    Waiting(String),
    Broken(String),
}

fn assess(service: &str, containers: &[ContainerStatus]) -> Verdict {
    if containers.is_empty() {
        return Verdict::Broken(format!(
            "no container of service {service} exists after `up`"
        ));
    }
    let mut waiting = None;
    for c in containers {
        match (c.state.as_str(), c.health.as_deref()) {
            ("running", None | Some("healthy")) => {}
            ("running", Some("unhealthy")) => {
                let log = c
                    .health_log
                    .as_deref()
                    .filter(|l| !l.is_empty())
                    .map(|l| format!("; last check said: {l}"))
                    .unwrap_or_default();
                return Verdict::Broken(format!(
                    "container {} is running but unhealthy: its health check failed{log}",
                    c.name
                ));
            }
            ("running", Some(other)) => {
                waiting = Some(format!(
                    "container {} is running, health check {other}",
                    c.name
                ));
            }
            ("created", _) => {
                waiting = Some(format!("container {} is created, not started", c.name))
            }
            ("restarting", _) => {
                return Verdict::Broken(format!(
                    "container {} is restarting after exiting with code {}; check its logs",
                    c.name, c.exit_code
                ));
            }
            ("exited" | "dead", _) => {
                return Verdict::Broken(format!(
                    "container {} is {} with exit code {}",
                    c.name, c.state, c.exit_code
                ));
            }
            (state, _) => {
                return Verdict::Broken(format!("container {} is {state}", c.name));
            }
        }
    }
    waiting.map_or(Verdict::Ready, Verdict::Waiting)
}

async fn verify(
    engine: &dyn Engine,
    target: &ComposeTarget,
    limits: &Limits,
    timeout: Duration,
) -> Completion {
    let service = target.service.as_str();
    loop {
        let last = match engine.service_containers(target).await {
            Ok(containers) => match assess(service, &containers) {
                Verdict::Ready => {
                    return Completion {
                        state: JobState::Succeeded,
                        error: None,
                    };
                }
                Verdict::Broken(why) => return Completion::ended(JobState::Failed, why),
                Verdict::Waiting(why) => why,
            },
            Err(e) => format!("the engine could not be asked about the service: {e}"),
        };
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = tokio::time::sleep_until(limits.deadline) => {
                let during = format!("while waiting for service {service} ({last})");
                return Completion::ended(JobState::TimedOut, timeout_message(timeout, &during));
            }
            () = limits.cancel.cancelled() => {
                return Completion::ended(JobState::Interrupted, INTERRUPTED);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(state: &str, health: Option<&str>) -> ContainerStatus {
        ContainerStatus {
            id: "id".into(),
            name: "web-1".into(),
            image: "sha256:x".into(),
            state: state.into(),
            exit_code: 3,
            health: health.map(Into::into),
            health_log: Some("connection refused".into()),
        }
    }

    #[test]
    fn running_without_or_with_a_passing_check_is_ready() {
        assert_eq!(assess("web", &[container("running", None)]), Verdict::Ready);
        assert_eq!(
            assess("web", &[container("running", Some("healthy"))]),
            Verdict::Ready
        );
    }

    #[test]
    fn starting_checks_wait() {
        assert!(matches!(
            assess(
                "web",
                &[
                    container("running", Some("healthy")),
                    container("running", Some("starting"))
                ]
            ),
            Verdict::Waiting(_)
        ));
    }

    #[test]
    fn broken_states_say_why() {
        let Verdict::Broken(why) = assess("web", &[container("running", Some("unhealthy"))]) else {
            panic!()
        };
        assert!(
            why.contains("unhealthy") && why.contains("connection refused"),
            "{why}"
        );
        let Verdict::Broken(why) = assess("web", &[container("exited", None)]) else {
            panic!()
        };
        assert!(why.contains("exit code 3"), "{why}");
        assert!(matches!(
            assess("web", &[container("restarting", None)]),
            Verdict::Broken(_)
        ));
        assert!(matches!(assess("web", &[]), Verdict::Broken(_)));
        assert!(matches!(
            assess("web", &[container("paused", None)]),
            Verdict::Broken(_)
        ));
    }
}
