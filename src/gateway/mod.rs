//! The decisions behind each request, in order, independent of HTTP types.
//!
//! A deploy request is handled as:
//! 1. throttle: a client address with too many recent auth failures is
//!    rate-limited;
//! 2. headers: timestamp format and window, signature format
//!    (unauthenticated);
//! 3. body: read with the size and time limits;
//! 4. candidate keys: `X-Project`'s keys, or, without it, the keys of the
//!    projects whose patterns allow the named container (the body is parsed
//!    for the name only; nothing else in it is used before the MAC checks);
//! 5. the MAC, over the raw bytes, constant time (unauthenticated).
//!    A request with a CI token instead (`Authorization: Bearer`, no
//!    `X-Signature`) has the token verified in steps 2 to 5 (size,
//!    algorithm, issuer, key, signature, times, `jti`: unauthenticated),
//!    and the candidate project whose `oidc` rules admit it (audience and
//!    age: unauthenticated; claims: forbidden) is the one it acts for;
//! 6. the body, strictly, a pin's form included, and no pin on `/build`
//!    (invalid); the policy: action, container (forbidden); a place to
//!    wait, with `wait` (rate-limited);
//! 7. replay: the window (or the token's expiry) again with the admitting
//!    clock reading; the same signed request or token again gets the
//!    first one's job; the project's bound;
//! 8. the engine: the container by exact name (not found, undeployable,
//!    unavailable); its compose project and files (the gateway's own pin
//!    overrides left out) against the project's globs, and a pin's
//!    repository against `images` or the container's own (forbidden);
//! 9. the job: queued (or joined within the project), durable with the
//!    request's replay entry, then answered.
//!
//! Every decision is logged once on the `audit` target.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::oidc::KeyCache;
use crate::auth::replay::{self, Admission, ReplayCache, Ticket};
use crate::auth::signature::{AuthError, Signature};
use crate::auth::throttle::Throttle;
use crate::clock::Clock;
use crate::docker::model::{Finding, ProjectRules};
use crate::docker::{
    ComposeHost, ComposeLabels, ComposeTarget, ContainerFacts, Engine, ImagePin, RealPaths,
    Reference, Resolved, StateFiles,
};
use crate::jobs::{JobRequest, Jobs, SubmitError, Submitted};
use crate::metrics::{Gauges, Metrics};
use crate::names::{Action, ContainerName, JobId, SwarmServiceName};
use crate::notifications::Notifier;
use crate::policy::{KeySource, ModelMode, Policy, PolicyCell, Project};
use crate::recent::Recent;
use crate::record::{DeployTarget, Deployment, JobRecord};
use crate::slots::{Slot, Slots};
use crate::store::StoreError;

mod admit;
mod audit;
mod reads;
mod refusal;
mod releases;

use admit::Admitted;
pub use audit::{REFUSAL_INTERVAL, REFUSALS_IN_FULL};
use audit::{RefusalLog, Seen};
pub use refusal::{BodyError, Code, Operation, Operations, Refusal, RefusalKind};

/// The signing headers as received.
#[derive(Debug, Default, Clone, Copy)]
pub struct SignedHeaders<'a> {
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub project: Option<&'a str>,
    /// `Authorization: Bearer <token>`: a CI's OpenID Connect token, in
    /// place of the timestamp and signature.
    pub bearer: Option<&'a str>,
}

impl<'a> SignedHeaders<'a> {
    /// The CI token that authenticates the request: the bearer token of a
    /// request without `X-Signature`. A signed request is judged by its
    /// signature alone, whatever `Authorization` a proxy or client adds,
    /// so every signing pipeline works as it did.
    pub fn token(&self) -> Option<&'a str> {
        match self.signature {
            Some(_) => None,
            None => self.bearer,
        }
    }
}

/// A deploy request, as the HTTP layer hands it over.
pub struct DeployCall<'a> {
    pub action: Action,
    /// A rollback (`POST /rollback`): a pull of the release `to` names.
    pub rollback: bool,
    pub client: IpAddr,
    pub headers: SignedHeaders<'a>,
    pub wait_secs: Option<u64>,
}

/// What a deploy request got.
#[derive(Debug, Clone)]
pub struct DeployOutcome {
    pub job: JobRecord,
    pub replayed: bool,
    pub coalesced: bool,
    /// The caller asked to wait (so a failed job is an error for it).
    pub waited: bool,
}

/// A read of one job or of a project's list, as the HTTP layer hands it over.
pub struct ReadCall<'a> {
    pub client: IpAddr,
    pub headers: SignedHeaders<'a>,
    /// The path and query exactly as received: the signed message.
    pub target: &'a str,
}

/// One page of a project's jobs.
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    /// Pass as `before` for the next page; `None` on the last.
    pub next: Option<String>,
}

/// The deploy body. Deserialised by hand because serde's derived impl also
/// accepts a JSON array by position (`["web"]`): only an object is a body,
/// `container_name` or `service_name` must appear exactly once, `image` at
/// most once, and other fields are ignored, as the tool this replaces
/// ignored them. `to` is a field of a rollback's body only: elsewhere it is
/// one of the others, whatever it holds.
struct DeployBody {
    container_name: Option<String>,
    service_name: Option<String>,
    image: Option<String>,
    to: Option<String>,
}

/// A key of the deploy body, read without copying it.
enum Key {
    ContainerName,
    ServiceName,
    Image,
    To,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;

        impl serde::de::Visitor<'_> for Name {
            type Value = Key;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Key, E> {
                Ok(match name {
                    "container_name" => Key::ContainerName,
                    "service_name" => Key::ServiceName,
                    "image" => Key::Image,
                    "to" => Key::To,
                    _ => Key::Other,
                })
            }
        }

        deserializer.deserialize_identifier(Name)
    }
}

/// Reads a [`DeployBody`]: `rollback` says whether `to` is read.
struct BodyShape {
    rollback: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for BodyShape {
    type Value = DeployBody;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<DeployBody, D::Error> {
        use serde::de::{Error, IgnoredAny, MapAccess, Visitor};

        struct Fields {
            rollback: bool,
        }

        impl<'de> Visitor<'de> for Fields {
            type Value = DeployBody;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object with a container_name or service_name string")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DeployBody, A::Error> {
                let mut container_name = None;
                let mut service_name = None;
                let mut image = None;
                let mut to = None;
                while let Some(key) = map.next_key::<Key>()? {
                    let (slot, name) = match key {
                        Key::ContainerName => (&mut container_name, "container_name"),
                        Key::ServiceName => (&mut service_name, "service_name"),
                        Key::Image => (&mut image, "image"),
                        Key::To if self.rollback => (&mut to, "to"),
                        Key::To | Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.is_some() {
                        return Err(A::Error::custom(format_args!("duplicate field `{name}`")));
                    }
                    *slot = Some(map.next_value::<String>()?);
                }
                match (&container_name, &service_name) {
                    (None, None) => Err(A::Error::missing_field("container_name")),
                    (Some(_), Some(_)) => Err(A::Error::custom(
                        "`container_name` and `service_name` name two things; send one",
                    )),
                    _ => Ok(DeployBody {
                        container_name,
                        service_name,
                        image,
                        to,
                    }),
                }
            }
        }

        deserializer.deserialize_map(Fields {
            rollback: self.rollback,
        })
    }
}

/// How long resolved compose paths are reused: a burst of requests for one
/// container resolves them once, and a change on disk counts within this,
/// as a change of the container does in the engine's lookup cache.
const RESOLVED_TTL: Duration = Duration::from_secs(1);
/// Bound on the resolved-paths cache; past it, it starts again empty.
const RESOLVED_ENTRIES: usize = 1024;

pub struct Gateway {
    resolved: Recent<ComposeLabels, Resolved>,
    policy: Arc<PolicyCell>,
    /// Requests holding their answer with `?wait=`, per project.
    waiting: Slots<String>,
    engine: Arc<dyn Engine>,
    jobs: Jobs,
    replay: ReplayCache<JobId, Refusal>,
    throttle: Throttle,
    metrics: Arc<Metrics>,
    /// The key sets of the issuers the policy's `oidc` rules name.
    keys: KeyCache,
    /// Refusals written in full or counted.
    audit: RefusalLog,
    clock: Clock,
    /// Delivers the notifications of jobs' ends.
    notifier: Arc<Notifier>,
    /// The web page's viewers' sessions, which a reload ends.
    sessions: Arc<crate::sessions::Sessions>,
}

fn replay_key(signature: &Signature) -> replay::ReplayKey {
    let mut key = [0u8; 16];
    key.copy_from_slice(&signature[..16]);
    key
}

/// What a deploy names.
#[derive(Debug, Clone)]
pub enum NamedTarget {
    Container(ContainerName),
    Service(SwarmServiceName),
}

impl NamedTarget {
    fn name(&self) -> String {
        match self {
            NamedTarget::Container(name) => name.to_string(),
            NamedTarget::Service(name) => format!("service:{name}"),
        }
    }
}

/// What a deploy body asks for.
#[derive(Debug, Clone)]
struct Wanted {
    named: NamedTarget,
    pin: Option<ImagePin>,
    /// A rollback's `to`, as sent; read only for a rollback.
    to: Option<String>,
}

/// What a compose deploy deploys: the caller's pin, or the release a
/// rollback names.
struct Wants {
    pin: Option<ImagePin>,
    restore: Option<releases::RollbackTo>,
}

/// A deploy body read for its shape and name: all that may be read before
/// the request authenticates (the name picks the candidate keys).
struct Body {
    named: NamedTarget,
    image: Option<String>,
    to: Option<String>,
}

/// Parses the deploy body's shape strictly: malformed JSON, a missing or
/// repeated `container_name` or `image`, or a name outside the pattern are
/// each refused. `image` stays text until [`Body::wanted`]; `to` is read
/// for a `rollback` only.
fn parse_body(bytes: &[u8], rollback: bool) -> Result<Body, Refusal> {
    let shape = match rollback {
        true => r#"{"container_name" | "service_name": "<name>", "to": "previous" | "<job id>"}"#,
        false => r#"{"container_name": "<name>"} or {"service_name": "<name>"}"#,
    };
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let body = serde::de::DeserializeSeed::deserialize(BodyShape { rollback }, &mut reader)
        .and_then(|body| reader.end().map(|()| body))
        .map_err(|e| match e.is_data() {
            true => Refusal::new(Code::InvalidBody, format!("the body must be {shape}: {e}")),
            false => Refusal::new(
                Code::InvalidJson,
                format!("the body is not valid JSON: {e}"),
            ),
        })?;
    let named = match (body.container_name, body.service_name) {
        (Some(name), _) => {
            NamedTarget::Container(ContainerName::parse(&name).map_err(Refusal::bad_name)?)
        }
        (None, Some(name)) => {
            NamedTarget::Service(SwarmServiceName::parse(&name).map_err(|e| {
                Refusal::new(Code::InvalidServiceName, format!("the service name {e}"))
            })?)
        }
        (None, None) => unreachable!("the body names one of them"),
    };
    Ok(Body {
        named,
        image: body.image,
        to: body.to,
    })
}

impl Body {
    /// What an authenticated body asks for: its `image` must be a pin.
    fn wanted(self) -> Result<Wanted, Refusal> {
        let pin = match self.image {
            None => None,
            Some(text) => Some(ImagePin::parse(&text).map_err(|e| {
                Refusal::new(Code::InvalidImage, format!("`image` is not a pin: {e}"))
            })?),
        };
        Ok(Wanted {
            named: self.named,
            pin,
            to: self.to,
        })
    }
}

impl Gateway {
    /// A gateway serving `policy`, which the jobs share.
    pub fn new(
        policy: Arc<PolicyCell>,
        engine: Arc<dyn Engine>,
        jobs: Jobs,
        metrics: Arc<Metrics>,
        clock: Clock,
        notifier: Arc<Notifier>,
        sessions: Arc<crate::sessions::Sessions>,
    ) -> Self {
        let current = policy.get();
        let replay = ReplayCache::new(current.server.replay_cache_entries);
        Self {
            resolved: Recent::new(RESOLVED_TTL, RESOLVED_ENTRIES, clock.clone()),
            waiting: Slots::default(),
            policy,
            engine,
            jobs,
            replay,
            throttle: Throttle::new(),
            metrics,
            keys: KeyCache::new(clock.clone()),
            audit: RefusalLog::default(),
            clock,
            notifier,
            sessions,
        }
    }

    /// The web page's sessions.
    pub fn sessions(&self) -> &crate::sessions::Sessions {
        &self.sessions
    }

    /// The gateway's clock, which its jobs and notifications share.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    /// Writes the counts of refusals not written in full since the last
    /// time; on a timer, and when the gateway stops.
    pub fn flush_refusal_counts(&self) {
        self.audit.flush(self.clock.now());
    }

    /// Fetches the key set of every issuer the policy names that has none
    /// cached yet: at start and after a reload, so the first token of each
    /// does not wait for it. An issuer that does not answer is logged and
    /// tried again when a token needs it.
    pub async fn warm_issuers(&self) {
        let policy = self.policy();
        let issuers = policy
            .key_sources()
            .filter(|(_, source)| matches!(source, KeySource::Discovery))
            .map(|(issuer, _)| self.keys.warm(issuer));
        futures_util::future::join_all(issuers).await;
    }

    /// Loads the durable replay entries still alive, so a request accepted
    /// before a restart still gets its job back after it. Returns how many.
    pub async fn restore_replays(&self) -> Result<usize, StoreError> {
        let now = self.clock.unix_secs();
        let rows = self.jobs.store().live_replays(now).await?;
        let rows = rows
            .into_iter()
            .map(|r| (r.key, r.project, r.expires_at, r.job));
        Ok(self.replay.restore(rows, now))
    }

    /// The policy in force; a request keeps the one it started with.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.get()
    }

    /// The policy cell the gateway and its jobs share.
    pub fn policy_cell(&self) -> Arc<PolicyCell> {
        self.policy.clone()
    }

    /// Swaps in a new policy atomically; requests in flight finish on the
    /// old one, and jobs judge their next command by the new one. The web
    /// page's sessions end.
    pub fn replace_policy(&self, policy: Policy) {
        self.jobs
            .store()
            .keep_releases(policy.server.release_history);
        self.policy.replace(policy);
        // Viewers and their projects may have changed: every session ends.
        if let Err(e) = self.sessions.end_all() {
            tracing::error!(error = %e, "could not end the web page's sessions");
        }
    }

    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn gauges(&self) -> Gauges {
        let (queued, running) = self.jobs.depth();
        Gauges {
            jobs_queued: queued,
            jobs_running: running,
            replay_entries: self.replay.len(),
            replay_capacity: self.replay.capacity(),
            throttled_clients: self.throttle.tracked(),
        }
    }

    /// The compose paths of `labels`, resolved on the filesystem, or as
    /// resolved less than [`RESOLVED_TTL`] ago.
    async fn resolve(&self, labels: ComposeLabels) -> Result<Resolved, Refusal> {
        if let Some(resolved) = self.resolved.get(&labels) {
            return Ok(resolved);
        }
        let key = labels.clone();
        // A few stat and realpath calls, off the async workers all the same:
        // a slow mount must not stall other requests.
        let resolved = tokio::task::spawn_blocking(move || {
            #[cfg(feature = "test-seams")]
            seam::resolve_fails(&labels.working_dir);
            labels.resolve()
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "resolving compose paths panicked");
            Refusal::new(
                Code::InternalError,
                "the container's compose files could not be checked; nothing was run",
            )
        })??;
        self.resolved.insert(key, resolved.clone());
        Ok(resolved)
    }

    /// A place among the project's requests waiting with `?wait=`, or 429.
    fn wait_slot(&self, policy: &Policy, project: &str) -> Result<Slot<String>, Refusal> {
        self.waiting
            .enter(project.to_owned(), policy.server.max_waiting_per_project)
            .ok_or_else(|| {
                Refusal::new(Code::TooManyWaiting, "this project already has as many requests waiting with ?wait= as it may; retry later, or follow the job with GET /jobs/{id}",
                )
                .retry_after(5)
            })
    }

    /// Rule: 429 for a client that failed authentication too often.
    /// Handles a deploy request. `read_body(limit)` reads the raw body,
    /// refusing more than `limit` bytes; it is only called once the headers
    /// passed, so a refused request costs no body read.
    pub async fn deploy<F, Fut>(
        &self,
        call: DeployCall<'_>,
        read_body: F,
    ) -> Result<DeployOutcome, Refusal>
    where
        F: FnOnce(usize) -> Fut,
        Fut: Future<Output = Result<Vec<u8>, BodyError>>,
    {
        let policy = self.policy();
        let mut seen = Seen::default();
        let result = self.deploy_with(&policy, &call, &mut seen, read_body).await;
        self.audit.deploy(&call, &seen, &result, self.clock.now());
        result
    }

    async fn deploy_with<F, Fut>(
        &self,
        policy: &Policy,
        call: &DeployCall<'_>,
        seen: &mut Seen,
        read_body: F,
    ) -> Result<DeployOutcome, Refusal>
    where
        F: FnOnce(usize) -> Fut,
        Fut: Future<Output = Result<Vec<u8>, BodyError>>,
    {
        self.check_throttle(policy, call.client)?;
        if let Some(wait) = call.wait_secs {
            check_wait(policy, wait)?;
        }
        let admitted = match call.headers.token() {
            Some(token) => {
                self.admit_token(policy, call, token, &mut seen.token_subject, read_body)
                    .await?
            }
            None => self.admit_signed(policy, call, read_body).await?,
        };
        let Admitted {
            project, wanted, ..
        } = &admitted;
        let project = *project;
        seen.project = Some(project.name.to_string());
        seen.container = Some(wanted.named.name());
        if wanted.pin.is_some() && call.action != Action::Pull {
            return Err(Refusal::new(
                Code::InvalidBody,
                "`image` pins what /pull deploys; /build deploys what it builds",
            ));
        }
        let restore = match call.rollback {
            true => Some(releases::rollback_to(wanted)?),
            false => None,
        };
        authorise(policy, project, call.action, &wanted.named)?;

        let wait = call.wait_secs.filter(|w| *w > 0).map(Duration::from_secs);
        // Held until the answer goes out; taken before anything runs, so a
        // request refused here runs nothing.
        let _waiting = match wait {
            Some(_) => Some(self.wait_slot(policy, project.name.as_str())?),
            None => None,
        };
        self.admit_once(policy, call, &admitted, restore, wait)
            .await
    }

    /// Runs the admitted request once: the first copy becomes a job (a
    /// rollback's restoring `restore`), a replay or a copy in flight gets
    /// that job, and a full replay cache refuses.
    async fn admit_once(
        &self,
        policy: &Policy,
        call: &DeployCall<'_>,
        admitted: &Admitted<'_>,
        restore: Option<releases::RollbackTo>,
        wait: Option<Duration>,
    ) -> Result<DeployOutcome, Refusal> {
        let (project, mark) = (admitted.project, admitted.mark);
        // The steps below await the engine, the store and jobs; boxed, their
        // state lives on the heap only for requests that get this far, and
        // a refused request's future stays small (every layer of the HTTP
        // stack moves it).
        loop {
            // Validity is checked again with the reading that admits the
            // request: the body may have taken until after it ended.
            let now = self.clock.unix_secs();
            self.still_valid(policy, call.client, &admitted.valid, now)?;
            let per_project = policy.server.replay_entries_per_project;
            match self.replay.admit(
                mark.key,
                project.name.as_str(),
                mark.expires_at,
                now,
                per_project,
            ) {
                Admission::First(mut ticket) => {
                    let accepted = self.accept(policy, admitted, call.action, restore, &mut ticket);
                    let submitted = Box::pin(accepted).await;
                    ticket.settle(submitted.as_ref().map(|s| s.job.id).map_err(Clone::clone));
                    let submitted = submitted?;
                    let finished = self.finish(submitted.job, false, submitted.coalesced, wait);
                    return Box::pin(finished).await;
                }
                Admission::Replay(id) => return Box::pin(self.replayed(id, wait)).await,
                Admission::InFlight(receiver) => match replay::wait_for_outcome(receiver).await {
                    Some(Ok(id)) => return Box::pin(self.replayed(id, wait)).await,
                    Some(Err(refusal)) => return Err(refusal),
                    None => continue,
                },
                Admission::ProjectFull { retry_after_secs } => {
                    return Err(Refusal::new(Code::ProjectRateLimited, "this project has sent as many distinct deploy requests as the gateway remembers for one project; retry later",
                    )
                    .retry_after(retry_after_secs));
                }
                Admission::Full { retry_after_secs } => {
                    return Err(Refusal::new(Code::ReplayCacheFull, "the gateway is remembering as many recent requests as it can hold; retry later",
                    )
                    .retry_after(retry_after_secs));
                }
            }
        }
    }

    /// Resolves the container and queues the job: steps 8 and 9.
    async fn accept(
        &self,
        policy: &Policy,
        admitted: &Admitted<'_>,
        action: Action,
        restore: Option<releases::RollbackTo>,
        ticket: &mut Ticket<'_, JobId, Refusal>,
    ) -> Result<Submitted, Refusal> {
        let Admitted {
            project,
            wanted,
            mark,
            requester,
            ..
        } = admitted;
        let wanted = wanted.clone();
        let mut request = match wanted.named {
            NamedTarget::Container(container) => {
                let wants = Wants {
                    pin: wanted.pin,
                    restore,
                };
                self.compose_request(policy, project, action, container, wants)
                    .await?
            }
            NamedTarget::Service(name) => {
                self.swarm_request(project, action, name, wanted.pin, restore)
                    .await?
            }
        };
        request.requested_by = Some(requester.clone());
        match self
            .jobs
            .submit(request, Some(*mark), |id| ticket.recorded(id))
            .await
        {
            Ok(submitted) => Ok(submitted),
            Err(SubmitError::ShuttingDown) => Err(Refusal::new(
                Code::ShuttingDown,
                "the gateway is shutting down; retry against its next start",
            )
            .retry_after(5)),
            Err(SubmitError::Store(e)) => Err(Refusal::store(&e)),
        }
    }

    /// A Swarm service: the engine must be a manager and know it; a pin's
    /// repository must be allowed.
    async fn swarm_request(
        &self,
        project: &Project,
        action: Action,
        name: SwarmServiceName,
        pin: Option<ImagePin>,
        restore: Option<releases::RollbackTo>,
    ) -> Result<JobRequest, Refusal> {
        if action != Action::Pull {
            return Err(Refusal::new(
                Code::NotBuildable,
                "a Swarm service runs images from a registry; it cannot be built here, use /pull",
            ));
        }
        let service = self.find_service(&name).await?;
        let (pin, restore) = match restore {
            None => (pin, None),
            Some(to) => {
                let key = crate::store::swarm_key(name.as_str());
                let release = self
                    .release_to_restore(project, &key, &to, Some(&service.image))
                    .await?;
                let (pin, restored) = releases::by_digest(release)?;
                (Some(pin), Some(restored))
            }
        };
        if let Some(pin) = &pin {
            let current = Reference::parse(&service.image).map(|r| r.repository);
            check_image(project, pin, current)?;
        }
        Ok(JobRequest {
            project: project.name.clone(),
            action,
            deployment: Deployment {
                target: DeployTarget::Swarm(name),
                pin,
                restore,
            },
            self_update: false,
            rollback: false,
            admitted_files: Vec::new(),
            requested_by: None,
        })
    }

    /// A container of a compose service: its labels, files and pin, and,
    /// unless the project's `compose_model` is `off`, compose's model of
    /// the job judged.
    async fn compose_request(
        &self,
        policy: &Policy,
        project: &Project,
        action: Action,
        container: ContainerName,
        wants: Wants,
    ) -> Result<JobRequest, Refusal> {
        let container = &container;
        let facts = self.find_facts(container).await?;
        let files = self.jobs.files();
        let labels = project_labels(project, &facts, files)?;
        let Resolved { target, real } = self.resolve(labels).await?;
        check_paths(project, &real)?;
        let (pin, restore) = match wants.restore {
            None => (wants.pin, None),
            Some(to) => self.compose_restore(project, &facts, &target, &to).await?,
        };
        if let Some(pin) = &pin {
            let compose_repository = Reference::parse(&facts.image_reference).map(|r| r.repository);
            check_image(project, pin, compose_repository)?;
        }
        if project.compose_model != ModelMode::Off {
            let findings =
                model_findings(&*self.engine, policy, project, &target, pin.as_ref(), &real)
                    .await?;
            judged(project, &target, &findings)?;
        }
        let self_update = self
            .engine
            .own_service()
            .await
            .is_some_and(|(p, s)| p == target.project.as_str() && s == target.service.as_str());
        Ok(JobRequest {
            project: project.name.clone(),
            action,
            deployment: Deployment {
                target: DeployTarget::Compose {
                    container: container.clone(),
                    target,
                },
                pin,
                restore,
            },
            self_update,
            rollback: project.rollback,
            admitted_files: real.listing(),
            requested_by: None,
        })
    }

    async fn replayed(&self, id: JobId, wait: Option<Duration>) -> Result<DeployOutcome, Refusal> {
        let job = self
            .jobs
            .get(id)
            .await
            .map_err(|e| Refusal::store(&e))?
            .ok_or_else(|| {
                Refusal::new(
                    Code::JobNotFound,
                    "this request was seen before, but its job is no longer kept",
                )
            })?;
        self.finish(job, true, false, wait).await
    }

    async fn finish(
        &self,
        job: JobRecord,
        replayed: bool,
        coalesced: bool,
        wait: Option<Duration>,
    ) -> Result<DeployOutcome, Refusal> {
        let job = match wait {
            Some(limit) if !job.state.is_final() => self
                .jobs
                .wait(job.id, limit)
                .await
                .map_err(|e| Refusal::store(&e))?
                .unwrap_or(job),
            _ => job,
        };
        Ok(DeployOutcome {
            job,
            replayed,
            coalesced,
            waited: wait.is_some(),
        })
    }
}

/// A failure inside the gateway, on demand, for the in-process tests.
#[cfg(feature = "test-seams")]
mod seam {
    /// A file that, in a container's working directory, makes resolving
    /// its compose paths panic, as a bug there would.
    pub const RESOLVE_PANICS: &str = ".delivery-test-resolve-panics";

    pub fn resolve_fails(working_dir: &std::path::Path) {
        if working_dir.join(RESOLVE_PANICS).exists() {
            panic!("resolving compose paths failed, as the test asked");
        }
    }
}

#[cfg(feature = "test-seams")]
pub use seam::RESOLVE_PANICS;

/// A container's compose labels, when `project` may act on its compose
/// project: checked before any path is looked at, so another team's files
/// are not probed on behalf of a project that may not touch them. The
/// gateway's own pin overrides are left out, and a judged copy is read as
/// the files it was made from.
fn project_labels(
    project: &Project,
    facts: &ContainerFacts,
    files: &StateFiles,
) -> Result<ComposeLabels, Refusal> {
    let labels = ComposeLabels::from_container(&facts.labels, &facts.image_labels)?;
    if !project.allows_compose_project(labels.project.as_str()) {
        return Err(Refusal::new(
            Code::ComposeProjectNotAllowed,
            "the container's compose project is outside this project's compose_projects",
        ));
    }
    Ok(labels
        .without_pins(&files.pins)?
        .from_copies(&files.copies)?)
}

/// The real files compose would read must satisfy `compose_files`.
fn check_paths(project: &Project, real: &RealPaths) -> Result<(), Refusal> {
    if project.allows_compose_paths(&real.config_files, &real.env_files, &real.working_dir) {
        Ok(())
    } else {
        Err(Refusal::new(
            Code::ComposeFileNotAllowed,
            "the files compose would read for this container are outside this project's compose_files",
        ))
    }
}

/// What `project`'s rules refuse in compose's model of `target` with `pin`
/// merged in: under `enforce`, compose is not asked for the model when
/// what it would read is refused. A model compose cannot print is 422.
async fn model_findings(
    engine: &dyn ComposeHost,
    policy: &Policy,
    project: &Project,
    target: &ComposeTarget,
    pin: Option<&ImagePin>,
    real: &RealPaths,
) -> Result<Vec<Finding>, Refusal> {
    let rules = ProjectRules::new(policy, project, target.project.as_str(), &real.config_files);
    let enforce = project.compose_model == ModelMode::Enforce;
    let judgement =
        crate::docker::model::judge_invocation(engine, target, pin, &rules.rules(), enforce)
            .await
            .map_err(|e| Refusal::new(Code::ComposeConfigInvalid, e.to_string()))?;
    Ok(judgement.findings)
}

/// What a deploy of the container `facts` by `project` would meet, without
/// a pin and whatever the project's `compose_model`: a refusal, or every
/// key the model judge refuses (empty when it passes). For `check --compose`.
pub async fn verdict(
    engine: &dyn ComposeHost,
    files: &StateFiles,
    policy: &Policy,
    project: &Project,
    facts: &ContainerFacts,
) -> Result<Vec<Finding>, Refusal> {
    let labels = project_labels(project, facts, files)?;
    let Resolved { target, real } = labels.resolve()?;
    check_paths(project, &real)?;
    let rules = ProjectRules::new(policy, project, target.project.as_str(), &real.config_files);
    crate::docker::model::judge_invocation(engine, &target, None, &rules.rules(), false)
        .await
        .map(|judgement| judgement.findings)
        .map_err(|e| Refusal::new(Code::ComposeConfigInvalid, e.to_string()))
}

/// A refusal under `enforce`; under `warn`, an audit line for each finding.
fn judged(project: &Project, target: &ComposeTarget, findings: &[Finding]) -> Result<(), Refusal> {
    let Some(first) = findings.first() else {
        return Ok(());
    };
    if project.compose_model == ModelMode::Warn {
        crate::docker::model::audit_warned(project.name.as_str(), target, findings);
        return Ok(());
    }
    let more = match findings.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    Err(
        Refusal::new(Code::ComposeModelNotAllowed, format!("{first}{more}"))
            .findings(findings.to_vec()),
    )
}

fn check_wait(policy: &Policy, wait: u64) -> Result<(), Refusal> {
    let max = policy.server.max_wait_secs;
    if wait > max {
        return Err(Refusal::new(
            Code::InvalidWait,
            format!("wait must be from 0 to {max} seconds"),
        ));
    }
    Ok(())
}

/// `X-Project`: a malformed name is its own error; an unknown one is not
/// told apart from a wrong signature, so project names cannot be probed.
fn named_project<'p>(policy: &'p Policy, name: &str) -> Result<Option<&'p Project>, AuthError> {
    crate::names::ProjectName::parse(name).map_err(|_| AuthError::InvalidProject)?;
    Ok(policy.project(name))
}

/// Step 6: the project's policy.
fn authorise(
    policy: &Policy,
    project: &Project,
    action: Action,
    named: &NamedTarget,
) -> Result<(), Refusal> {
    if !project.allows_action(action) {
        return Err(Refusal::new(
            Code::ActionNotAllowed,
            format!("this project may not {action}"),
        ));
    }
    authorise_target(policy, project, named)
}

/// The project's globs for what a request names.
fn authorise_target(
    policy: &Policy,
    project: &Project,
    named: &NamedTarget,
) -> Result<(), Refusal> {
    match named {
        NamedTarget::Container(name) if !policy.allows_container(project, name) => {
            Err(Refusal::new(
                Code::ContainerNotAllowed,
                "this project may not deploy this container",
            ))
        }
        NamedTarget::Service(name) if !policy.allows_service(project, name) => Err(Refusal::new(
            Code::ServiceNotAllowed,
            "this project may not update this Swarm service",
        )),
        _ => Ok(()),
    }
}

/// A pin's repository must match the project's `images`, or, without
/// them, be the repository the service runs now (`current`).
fn check_image(project: &Project, pin: &ImagePin, current: Option<&str>) -> Result<(), Refusal> {
    if project.allows_image(pin.repository(), current) {
        Ok(())
    } else {
        Err(Refusal::new(
            Code::ImageNotAllowed,
            "the pinned repository is outside this project's images (or, without them, not the repository the service runs)",
        ))
    }
}
