//! The audit trail: one line per request decision, on the `audit` target,
//! naming the project that authenticated (never one merely named).

use super::{DeployCall, DeployOutcome, ReadCall, Refusal};

/// What a deploy request was found to be about, as far as it got.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) project: Option<String>,
    pub(super) container: Option<String>,
    /// The `sub` of the CI token that authenticated, if one did.
    pub(super) token_subject: Option<String>,
}

pub(super) fn audit_deploy(
    call: &DeployCall<'_>,
    seen: &Seen,
    result: &Result<DeployOutcome, Refusal>,
) {
    match result {
        Ok(o) => tracing::info!(
            target: "audit",
            client = %call.client,
            project = %o.job.project,
            container = %o.job.container_name,
            swarm_service = o.job.swarm_service.as_deref().unwrap_or("-"),
            action = call.action.as_str(),
            job = %o.job.id,
            state = o.job.state.as_str(),
            replayed = o.replayed,
            coalesced = o.coalesced,
            token_subject = seen.token_subject.as_deref().unwrap_or("-"),
            code = if o.replayed { "replayed" } else if o.coalesced { "coalesced" } else { "accepted" },
            "deploy accepted"
        ),
        Err(r) => tracing::info!(
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
    }
}

pub(super) fn audit_read(call: &ReadCall<'_>, operation: &str, result: Result<(), &Refusal>) {
    match result {
        Ok(_) => tracing::debug!(
            target: "audit",
            client = %call.client,
            project = call.headers.project.unwrap_or("-"),
            operation,
            "read allowed"
        ),
        Err(r) => tracing::info!(
            target: "audit",
            client = %call.client,
            project = call.headers.project.unwrap_or("-"),
            operation,
            refusal = r.kind().as_str(),
            code = r.code.as_str(),
            "read refused"
        ),
    }
}
