//! Every refusal the catalogue gives an operation, produced by a real
//! request to that operation of an in-process gateway over the fake
//! engine: the status its kind decides, its code, and, where the code
//! says nothing ran, no compose command. The table covers exactly the
//! catalogue's (operation, code) pairs: a new code, or a new operation of
//! an existing code, without a case fails the test by name.
//!
//! A case is a code, the operations it is produced on, what the gateway
//! is put through before the request ([`Before`]) and how the request
//! differs from a good one ([`Call`]). A new operation is one arm of
//! [`send`] and its name in the `ops` of the cases that reach it.
//!
//! A rollback is sent as the deploy's call with `to` added; a list of
//! releases as a read naming the call's container or service in its
//! query. A rollback refused only after its release is found gets a
//! release of its own first ([`needs_release`]).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use delivery_hook::catalogue::{Code, Operation};
use delivery_hook::docker::model::{ConfigFailure, ModelError};
use delivery_hook::names::JobId;
use futures_util::future::join_all;
use poem::test::TestResponse;
use serde_json::{Value, json};

use crate::support::jwt::{Keys, Signer};
use crate::support::*;

use Operation::{Build, GetJob, ListJobs, ListReleases, Pull, Readiness, Rollback};

const DEPLOY: &[Operation] = &[Pull, Build, Rollback];
const READS: &[Operation] = &[GetJob, ListJobs, ListReleases];
const SIGNED: &[Operation] = &[Pull, Build, Rollback, GetJob, ListJobs, ListReleases];
const DEPLOY_GET: &[Operation] = &[Pull, Build, Rollback, GetJob];
/// The operations that find the container or service a request names.
const LOOKUP: &[Operation] = &[Pull, Build, Rollback, ListReleases];
const PULL: &[Operation] = &[Pull, Rollback];
const PULL_LOOKUP: &[Operation] = &[Pull, Rollback, ListReleases];

const AUD: &str = "https://deploy.test";
/// An issuer whose keys only a file gives.
const FILE_ISSUER: &str = "http://127.0.0.1:9/files";
/// An issuer nothing answers for.
const DOWN_ISSUER: &str = "http://127.0.0.1:9/down";
const OPS: &str = "ops-secret-0123456789abcdef";
const BUILDS: &str = "builds-secret-0123456789abc";
/// A pin of a repository outside shop's `images`.
const FOREIGN_PIN: &str =
    "docker.io/evil/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Projects beside the test policy's: one that may only build, one whose
/// `compose_files` hold nothing; and shop's CI tokens.
fn tail(jwks: &Path) -> String {
    format!(
        r#"
[projects.builds]
secrets = ["{BUILDS}"]
containers = ["builds-*"]
actions = ["build"]
compose_projects = ["builds"]

[projects.ops]
secrets = ["{OPS}"]
containers = ["ops-*"]
actions = ["pull", "build"]
compose_files = ["/nowhere/**"]

[[projects.shop.oidc]]
issuer = "{FILE_ISSUER}"
audience = "{AUD}"
claims = {{ repository = "org/web" }}
jwks_file = "{jwks}"

[[projects.shop.oidc]]
issuer = "{DOWN_ISSUER}"
audience = "{AUD}"
claims = {{ repository = "org/web" }}
"#,
        jwks = jwks.display()
    )
}

/// A CI token of `issuer` for `repository`.
fn token(issuer: &str, repository: &str) -> String {
    let now = now();
    let claims = json!({
        "iss": issuer, "aud": AUD, "sub": "repo:x", "repository": repository,
        "jti": JobId::random().to_string(), "iat": now, "nbf": now, "exp": now + 300,
    });
    Keys::load().token(Signer::Rsa1, &claims)
}

/// A signing header: as a pipeline computes it, missing, or this text.
#[derive(Clone, Copy)]
enum Header {
    Good,
    Absent,
    Text(&'static str),
}

/// A request: a good one signed by shop for `shop-web`, unless changed.
#[derive(Clone)]
struct Call {
    secret: &'static str,
    project: Option<&'static str>,
    ts: u64,
    timestamp: Header,
    signature: Header,
    bearer: Option<String>,
    body: String,
    content_type: &'static str,
    /// The body never arrives.
    stalled: bool,
    query: &'static str,
    /// The id in `GET /jobs/{id}`.
    job: String,
    /// A rollback's `to`, unless the body has one.
    to: String,
}

impl Default for Call {
    fn default() -> Self {
        Self {
            secret: SHOP,
            project: Some("shop"),
            ts: now(),
            timestamp: Header::Good,
            signature: Header::Good,
            bearer: None,
            body: body_for("shop-web"),
            content_type: "application/json",
            stalled: false,
            query: "",
            job: JobId::random().to_string(),
            to: "previous".into(),
        }
    }
}

impl Call {
    fn body(self, body: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            ..self
        }
    }
    fn container(self, name: &str) -> Self {
        self.body(body_for(name))
    }
    fn signed_by(self, secret: &'static str, project: &'static str) -> Self {
        Self {
            secret,
            project: Some(project),
            ..self
        }
    }
    fn query(self, query: &'static str) -> Self {
        Self { query, ..self }
    }
    fn job(self, job: &str) -> Self {
        Self {
            job: job.into(),
            ..self
        }
    }
    /// A CI token in place of the signature.
    fn bearer(self, token: String) -> Self {
        Self {
            bearer: Some(token),
            timestamp: Header::Absent,
            signature: Header::Absent,
            ..self
        }
    }
}

/// What the gateway goes through before the request.
#[derive(Clone, Copy)]
enum Before {
    Nothing,
    /// The engine does not answer.
    EngineDown,
    /// The engine is a Swarm manager without services.
    SwarmManager,
    /// This container of the engine, as [`container`] makes it; the
    /// request names it.
    Container(&'static str),
    /// `compose config` prints this model, or fails so.
    Model(fn() -> Result<Value, ModelError>),
    /// The store's tables are gone.
    StoreBroken,
    /// The jobs are stopping.
    ShuttingDown,
    /// The client failed authentication as often as it may.
    Throttled,
    /// The replay memory holds as many requests as it can.
    ReplayFull,
    /// Shop has as many remembered requests as it may.
    ProjectFull,
    /// Shop has as many requests waiting as it may.
    Waiting,
    /// The request was accepted once and its job is no longer kept.
    JobGone,
    /// Resolving `shop-web`'s compose paths panics (a seam of
    /// `test-seams`).
    Panics,
}

impl Before {
    fn server(self) -> &'static str {
        match self {
            Before::Throttled => "auth_failure_limit = 1",
            Before::ReplayFull => "replay_cache_entries = 16",
            Before::ProjectFull => "replay_entries_per_project = 1",
            Before::Waiting => "max_waiting_per_project = 1",
            _ => "auth_failure_limit = 1000",
        }
    }
}

struct Case {
    code: Code,
    ops: &'static [Operation],
    before: Before,
    call: fn(Operation) -> Call,
}

const fn case(
    code: Code,
    ops: &'static [Operation],
    before: Before,
    call: fn(Operation) -> Call,
) -> Case {
    Case {
        code,
        ops,
        before,
        call,
    }
}

fn good(_: Operation) -> Call {
    Call::default()
}

fn escaping_model() -> Result<Value, ModelError> {
    Ok(json!({"services": {"web": {"image": "busybox", "privileged": true}}}))
}

fn broken_model() -> Result<Value, ModelError> {
    Err(ModelError::Config(ConfigFailure {
        file: None,
        line: Some(3),
        message: Some("yaml: mapping values are not allowed here".into()),
    }))
}

/// One case per code: the catalogue's codes, in its order.
const CASES: &[Case] = &[
    case(Code::InvalidJson, DEPLOY, Before::Nothing, |_| {
        Call::default().body("{")
    }),
    case(Code::InvalidBody, DEPLOY, Before::Nothing, |_| {
        Call::default().body("[]")
    }),
    case(Code::InvalidContainerName, DEPLOY, Before::Nothing, |_| {
        Call::default().container("-shop")
    }),
    case(Code::InvalidServiceName, DEPLOY, Before::Nothing, |_| {
        Call::default().body(r#"{"service_name": "-shop"}"#)
    }),
    case(Code::InvalidImage, DEPLOY, Before::Nothing, |_| {
        Call::default().body(r#"{"container_name": "shop-web", "image": "shop:latest"}"#)
    }),
    case(Code::InvalidWait, DEPLOY_GET, Before::Nothing, |_| {
        Call::default().query("?wait=31")
    }),
    case(
        Code::InvalidParameter,
        READS,
        Before::Nothing,
        |op| match op {
            GetJob => Call::default().job("nothex"),
            ListReleases => Call::default().container("-shop"),
            _ => Call::default().query("?limit=0"),
        },
    ),
    case(Code::InvalidRequest, &[GetJob], Before::Nothing, |_| {
        Call::default().job("%FF")
    }),
    case(Code::MissingTimestamp, SIGNED, Before::Nothing, |_| Call {
        timestamp: Header::Absent,
        ..Call::default()
    }),
    case(Code::InvalidTimestamp, SIGNED, Before::Nothing, |_| Call {
        timestamp: Header::Text("soon"),
        ..Call::default()
    }),
    case(Code::TimestampOutOfWindow, SIGNED, Before::Nothing, |_| {
        Call {
            ts: now() - 100_000,
            ..Call::default()
        }
    }),
    case(Code::MissingSignature, SIGNED, Before::Nothing, |_| Call {
        signature: Header::Absent,
        ..Call::default()
    }),
    case(Code::InvalidSignature, SIGNED, Before::Nothing, |_| Call {
        signature: Header::Text("zz"),
        ..Call::default()
    }),
    case(Code::MissingProject, READS, Before::Nothing, |_| Call {
        project: None,
        ..Call::default()
    }),
    case(Code::InvalidProject, SIGNED, Before::Nothing, |_| Call {
        project: Some("Not A Project!"),
        ..Call::default()
    }),
    case(Code::SignatureMismatch, SIGNED, Before::Nothing, |_| {
        Call::default().signed_by(BILLING, "shop")
    }),
    case(Code::InvalidToken, SIGNED, Before::Nothing, |_| {
        Call::default().bearer("not-a-token".into())
    }),
    case(
        Code::ActionNotAllowed,
        DEPLOY,
        Before::Nothing,
        |op| match op {
            Pull | Rollback => Call::default()
                .signed_by(BUILDS, "builds")
                .container("builds-web"),
            _ => Call::default()
                .signed_by(BILLING, "billing")
                .container("billing-web"),
        },
    ),
    case(Code::ContainerNotAllowed, LOOKUP, Before::Nothing, |_| {
        Call::default().container("billing-web")
    }),
    case(Code::ServiceNotAllowed, LOOKUP, Before::Nothing, |_| {
        Call::default().body(r#"{"service_name": "billing_web"}"#)
    }),
    case(
        Code::ComposeProjectNotAllowed,
        LOOKUP,
        Before::Nothing,
        |_| Call::default().container("shop-foreign"),
    ),
    case(
        Code::ComposeFileNotAllowed,
        LOOKUP,
        Before::Container("ops-web"),
        |_| Call::default().signed_by(OPS, "ops"),
    ),
    // A rollback's release has a digest outside shop's `images`.
    case(
        Code::ImageNotAllowed,
        PULL,
        Before::Nothing,
        |op| match op {
            Rollback => Call::default(),
            _ => Call::default().body(format!(
                r#"{{"container_name": "shop-web", "image": "{FOREIGN_PIN}"}}"#
            )),
        },
    ),
    case(Code::TokenNotAllowed, SIGNED, Before::Nothing, |_| {
        Call::default().bearer(token(FILE_ISSUER, "org/other"))
    }),
    case(
        Code::ComposeModelNotAllowed,
        DEPLOY,
        Before::Model(escaping_model),
        good,
    ),
    case(Code::ContainerNotFound, LOOKUP, Before::Nothing, |_| {
        Call::default().container("shop-nowhere")
    }),
    case(
        Code::ServiceNotFound,
        PULL_LOOKUP,
        Before::SwarmManager,
        |_| Call::default().body(r#"{"service_name": "shop_api"}"#),
    ),
    case(
        Code::ServiceNotNamed,
        &[ListReleases],
        Before::Nothing,
        |_| Call::default().body("{}"),
    ),
    case(Code::ReleaseNotFound, &[Rollback], Before::Nothing, good),
    case(Code::JobNotFound, DEPLOY_GET, Before::JobGone, good),
    case(Code::BodyTimeout, DEPLOY, Before::Nothing, |_| Call {
        stalled: true,
        ..Call::default()
    }),
    case(Code::BodyTooLarge, DEPLOY, Before::Nothing, |_| {
        Call::default().body(format!(
            r#"{{"container_name": "shop-web", "pad": "{}"}}"#,
            "x".repeat(2048)
        ))
    }),
    case(Code::UnsupportedMediaType, DEPLOY, Before::Nothing, |_| {
        Call {
            content_type: "text/plain",
            ..Call::default()
        }
    }),
    case(
        Code::NotComposeManaged,
        LOOKUP,
        Before::Container("shop-plain"),
        good,
    ),
    case(
        Code::ComposeLabelMissing,
        LOOKUP,
        Before::Container("shop-unnamed"),
        good,
    ),
    case(
        Code::ComposeLabelInvalid,
        LOOKUP,
        Before::Container("shop-relative"),
        good,
    ),
    case(
        Code::ComposeLabelUntrusted,
        LOOKUP,
        Before::Container("shop-imagelabel"),
        good,
    ),
    case(
        Code::ComposeFileNotVisible,
        LOOKUP,
        Before::Container("shop-hidden"),
        good,
    ),
    case(
        Code::ComposeConfigInvalid,
        DEPLOY,
        Before::Model(broken_model),
        good,
    ),
    case(
        Code::ReleaseNotRestorable,
        &[Rollback],
        Before::Nothing,
        good,
    ),
    case(Code::NotBuildable, &[Build], Before::Nothing, |_| {
        Call::default().body(r#"{"service_name": "shop_api"}"#)
    }),
    case(Code::NotSwarmManager, PULL_LOOKUP, Before::Nothing, |_| {
        Call::default().body(r#"{"service_name": "shop_api"}"#)
    }),
    case(Code::TooManyFailures, SIGNED, Before::Throttled, good),
    case(Code::ProjectRateLimited, DEPLOY, Before::ProjectFull, good),
    case(Code::TooManyWaiting, DEPLOY_GET, Before::Waiting, |_| {
        Call::default().query("?wait=5")
    }),
    case(
        Code::EngineUnavailable,
        &[Pull, Build, Rollback, ListReleases, Readiness],
        Before::EngineDown,
        good,
    ),
    case(Code::StoreUnavailable, SIGNED, Before::StoreBroken, good),
    case(Code::ReplayCacheFull, DEPLOY, Before::ReplayFull, good),
    case(Code::ShuttingDown, DEPLOY, Before::ShuttingDown, good),
    case(Code::IssuerUnavailable, SIGNED, Before::Nothing, |_| {
        Call::default().bearer(token(DOWN_ISSUER, "org/web"))
    }),
    case(Code::InternalError, LOOKUP, Before::Panics, good),
];

/// `shop-*` containers the test policy lacks, and `ops-web`, whose files
/// are outside `ops`'s `compose_files`.
fn container(h: &Harness, name: &str) {
    let shop = h.root().join("shop");
    let mut labels = compose_labels("shop", "web", &shop);
    let mut image = Vec::new();
    match name {
        "ops-web" => {}
        "shop-plain" => labels.clear(),
        "shop-unnamed" => labels.retain(|(k, _)| *k == "com.docker.compose.project"),
        "shop-relative" => labels[2].1 = "relative".into(),
        "shop-imagelabel" => image.push((
            "com.docker.compose.project.environment_file",
            h.root().join("elsewhere/.env").display().to_string(),
        )),
        "shop-hidden" => labels = compose_labels("shop", "web", &shop.join("not-mounted")),
        other => panic!("no container {other}"),
    }
    h.engine.add_with_image(name, &labels, &image);
}

/// Sends shop's good request for `shop-web` as `op` (a deploy; a
/// rollback to `to`), each call a new request, and expects `status`;
/// returns the call and its answer.
async fn accepted(h: &Harness, op: Operation, query: &str, status: u16, to: &str) -> (Call, Value) {
    let call = Call {
        body: format!(
            r#"{{"container_name": "shop-web", "n": "{}"}}"#,
            JobId::random()
        ),
        to: to.to_owned(),
        ..Call::default()
    };
    let (got, body) = status_json(send(h, op, &call, query).await).await;
    assert_eq!(got, status, "{body}");
    (call, body)
}

/// The refusals a rollback reaches only once its release is found.
fn needs_release(code: Code) -> bool {
    matches!(
        code,
        Code::ComposeModelNotAllowed
            | Code::ComposeConfigInvalid
            | Code::ImageNotAllowed
            | Code::ShuttingDown
            | Code::JobNotFound
            | Code::ReleaseNotRestorable
    )
}

/// Makes a release of `shop-web` for a rollback that `code` refuses: a
/// pull bringing a new image. For `image_not_allowed` the image has a
/// digest of the compose file's repository, which is outside shop's
/// `images`; otherwise none, so the release is restored by its image id,
/// and for `release_not_restorable` the host then loses that image.
/// Returns the release's job.
async fn release(h: &Harness, code: Code) -> String {
    const HEX: &str = "5e1ea5e";
    const IMAGE: &str = "sha256:5e1ea5e";
    let repository = crate::support::fake_engine::REFERENCE
        .rsplit_once(':')
        .unwrap()
        .0;
    let digests = match code {
        Code::ImageNotAllowed => vec![format!("{repository}@sha256:{HEX:0>64}")],
        _ => Vec::new(),
    };
    *h.engine.up_image.lock().unwrap() = Some(IMAGE.to_owned());
    h.engine
        .images
        .lock()
        .unwrap()
        .insert(IMAGE.to_owned(), digests);
    let (_, job) = accepted(h, Pull, "?wait=10", 200, "previous").await;
    assert_eq!(job["state"], "succeeded", "{job}");
    if code == Code::ReleaseNotRestorable {
        // A later image replaced it, and the host lost it and its tag.
        *h.engine.image.lock().unwrap() = "sha256:1a7e5".into();
        h.engine.images.lock().unwrap().remove(IMAGE);
        h.engine.tags.lock().unwrap().clear();
    }
    job["id"].as_str().unwrap().to_owned()
}

/// A request left waiting on its held job, and what releases the job.
type Held = (tokio::task::JoinHandle<()>, Arc<tokio::sync::Semaphore>);

/// Puts the gateway through `before`; returns a request it left waiting,
/// and a request to send instead of the case's. A rollback restores
/// `release`.
async fn prepare(
    h: &Arc<Harness>,
    before: Before,
    op: Operation,
    release: &str,
) -> (Option<Held>, Option<Call>) {
    match before {
        Before::Nothing => {}
        Before::EngineDown => h.engine.down.store(true, Ordering::SeqCst),
        Before::SwarmManager => h.engine.swarm_manager.store(true, Ordering::SeqCst),
        Before::Container(name) => container(h, name),
        Before::Model(model) => *h.engine.model.lock().unwrap() = Some(model()),
        Before::StoreBroken => {
            let file = h.root().join("state/jobs.sqlite3");
            rusqlite::Connection::open(file)
                .unwrap()
                .execute_batch("DROP TABLE jobs; DROP TABLE replay; DROP TABLE releases;")
                .unwrap();
        }
        Before::ShuttingDown => h.gateway.jobs().shutdown(Duration::from_secs(1)).await,
        Before::Throttled => {
            let failed = Call {
                signature: Header::Text("zz"),
                ..Call::default()
            };
            expect_problem(send(h, op, &failed, "").await, 401, "invalid_signature").await;
        }
        Before::ReplayFull => {
            for _ in 0..16 {
                accepted(h, Pull, "?wait=10", 200, release).await;
            }
        }
        Before::ProjectFull => {
            accepted(h, Pull, "?wait=10", 200, release).await;
        }
        Before::Waiting => {
            let gate = h.engine.hold();
            let holder = h.clone();
            let held = tokio::spawn(async move {
                accepted(&holder, Pull, "?wait=10", 200, "previous").await;
            });
            wait_for(|| h.engine.running() == 1).await;
            return (Some((held, gate)), None);
        }
        Before::JobGone => {
            // A read replays nothing: its job is one a deploy made.
            let deploy = if op == GetJob { Pull } else { op };
            let (first, _) = accepted(h, deploy, "?wait=10", 200, release).await;
            let file = h.root().join("state/jobs.sqlite3");
            rusqlite::Connection::open(file)
                .unwrap()
                .execute_batch("DELETE FROM jobs;")
                .unwrap();
            if op != GetJob {
                return (None, Some(first));
            }
        }
        Before::Panics => {
            #[cfg(feature = "test-seams")]
            std::fs::write(
                h.root()
                    .join("shop")
                    .join(delivery_hook::gateway::RESOLVE_PANICS),
                "",
            )
            .unwrap();
        }
    }
    (None, None)
}

/// Polls `done` until it holds, for at most five seconds.
async fn wait_for(done: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !done() {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the gateway reached the state the case needs");
}

/// Sends `call` as `op`'s request; `query` replaces the call's.
async fn send(h: &Harness, op: Operation, call: &Call, query: &str) -> TestResponse {
    let query = if query.is_empty() { call.query } else { query };
    let mut body = call.body.clone();
    let (post, target) = match op {
        Pull => (true, format!("/pull{query}")),
        Build => (true, format!("/build{query}")),
        Rollback => {
            if let Ok(Value::Object(mut fields)) = serde_json::from_str(&body) {
                fields.entry("to").or_insert(json!(call.to));
                body = Value::Object(fields).to_string();
            }
            (true, format!("/rollback{query}"))
        }
        GetJob => (false, format!("/jobs/{}{query}", call.job)),
        ListJobs => (false, format!("/jobs{query}")),
        ListReleases => {
            let fields: Value = serde_json::from_str(&body).unwrap_or_default();
            let named: Vec<String> = ["container_name", "service_name"]
                .into_iter()
                .filter_map(|key| Some(format!("{key}={}", fields[key].as_str()?)))
                .collect();
            (false, format!("/releases?{}", named.join("&")))
        }
        Readiness => return h.client.get("/readyz").send().await,
    };
    let ts = call.ts.to_string();
    let message = if post {
        body.as_bytes()
    } else {
        target.as_bytes()
    };
    let signature = sign(call.secret, message, &ts);
    let mut request = if post {
        h.client.post(&target).content_type(call.content_type)
    } else {
        h.client.get(&target)
    };
    for (name, header, good) in [
        ("X-Timestamp", call.timestamp, ts.as_str()),
        ("X-Signature", call.signature, signature.as_str()),
    ] {
        match header {
            Header::Good => request = request.header(name, good),
            Header::Text(text) => request = request.header(name, text),
            Header::Absent => {}
        }
    }
    if let Some(project) = call.project {
        request = request.header("X-Project", project);
    }
    if let Some(token) = &call.bearer {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    if !post {
        return request.send().await;
    }
    if call.stalled {
        let (writer, reader) = tokio::io::duplex(64);
        let response = request
            .body(poem::Body::from_async_read(reader))
            .send()
            .await;
        drop(writer);
        return response;
    }
    request.body(body).send().await
}

/// What one case reached.
struct Reached {
    op: Operation,
    code: Code,
    status: u16,
}

/// Produces `case`'s code on `op`: with the `shared` gateway when the
/// case changes nothing others see, else with a gateway of its own.
async fn reach(case: &Case, op: Operation, tail: &str, shared: &Arc<Harness>) -> Reached {
    let code = case.code.as_str();
    let released = op == Rollback && needs_release(case.code);
    let h = match case.before {
        Before::Nothing | Before::Container(_) if !released => shared.clone(),
        before => Arc::new(Harness::with_policy(before.server(), tail).await),
    };
    let release = match released {
        true => release(&h, case.code).await,
        false => "previous".to_owned(),
    };
    let (held, instead) = prepare(&h, case.before, op, &release).await;
    let call = instead.unwrap_or_else(|| match case.before {
        Before::Container(name) => (case.call)(op).container(name),
        _ => (case.call)(op),
    });
    let call = Call {
        to: release,
        ..call
    };
    let commands = h.engine.command_count();
    let status = delivery_hook::api::http_status(case.code.kind());
    let response = send(&h, op, &call, "").await;
    let got = response.0.status().as_u16();
    let body = expect_problem(response, status, code).await;
    assert!(
        body["rule"].is_null() || case.code == Code::InvalidToken,
        "{op:?} {code}: {body}"
    );
    assert_eq!(
        h.engine.command_count(),
        commands,
        "{op:?} {code}: the refused request ran a command"
    );
    if let Some((request, gate)) = held {
        gate.add_permits(100);
        request.await.unwrap();
    }
    Reached {
        op,
        code: case.code,
        status: got,
    }
}

/// (operation id, code) pairs.
type Pairs = BTreeSet<(&'static str, &'static str)>;

/// The pairs the catalogue gives operations, and those the table has.
fn pairs() -> (Pairs, Pairs) {
    let key = |op: Operation, code: Code| (op.id(), code.as_str());
    let catalogue = Code::ALL
        .iter()
        .filter(|code| !Code::ONLY_JOBS.contains(code))
        .flat_map(|&code| {
            Operation::ALL
                .into_iter()
                .filter(move |op| code.operations().contains(*op))
                .map(move |op| key(op, code))
        })
        .collect();
    let table = CASES
        .iter()
        .flat_map(|case| case.ops.iter().map(|&op| key(op, case.code)))
        .collect();
    (catalogue, table)
}

#[test]
fn the_table_has_a_case_for_each_pair_the_catalogue_gives_an_operation() {
    let (catalogue, table) = pairs();
    let missing: Vec<_> = catalogue.difference(&table).collect();
    let extra: Vec<_> = table.difference(&catalogue).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "pairs without a case: {missing:?}; cases the catalogue does not list: {extra:?}"
    );
    let codes: Vec<Code> = CASES.iter().map(|c| c.code).collect();
    let unique: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(unique.len(), codes.len(), "one case per code");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_answers_each_of_its_refusals() {
    let jwks_dir = temp_dir("refusals");
    let jwks = jwks_dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [Keys::load().jwk(Signer::Rsa1)]}).to_string(),
    )
    .unwrap();
    let tail = &tail(&jwks);
    let shared = Arc::new(Harness::with_policy(Before::Nothing.server(), tail).await);
    let runs = CASES
        .iter()
        .filter(|case| {
            let seam = cfg!(feature = "test-seams") || !matches!(case.before, Before::Panics);
            if !seam {
                skip("internal_error is produced through the test-seams feature");
            }
            seam
        })
        .flat_map(|case| case.ops.iter().map(move |&op| (case, op)))
        .map(|(case, op)| reach(case, op, tail, &shared));
    let reached = join_all(runs).await;
    let mut table = String::from("operation       code                          status\n");
    for r in &reached {
        table.push_str(&format!(
            "{:<15} {:<29} {}\n",
            r.op.id(),
            r.code.as_str(),
            r.status
        ));
    }
    eprintln!("{table}{} pairs reached", reached.len());
}
