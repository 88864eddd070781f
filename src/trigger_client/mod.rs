//! The client commands: `sign` and `trigger`.
//!
//! Secrets come from an environment variable, never from the command line,
//! where `ps` would show them.
//!
//! - this module: signing, CI tokens, and one host's deploy followed to its end;
//! - [`fleet`]: several hosts, a wave at a time, stopping at the first failure;
//! - [`github`]: `trigger --github-action`, the GitHub Action's inputs and outputs.

pub mod fleet;
pub mod github;

use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::api::{Job, JobRollback, JobStatus, Problem};
use crate::auth::signature::{self, SigningKey};
use crate::docker::ImagePin;
use crate::error_chain;
use crate::names::{Action, ContainerName, SwarmServiceName};

/// `trigger`'s exit codes: 0 the job succeeded (or was accepted, without
/// `--wait`), 1 it failed or timed out, 2 the request was refused or the
/// gateway could not be reached.
pub const EXIT_SUCCEEDED: u8 = 0;
pub const EXIT_JOB_FAILED: u8 = 1;
pub const EXIT_REFUSED: u8 = 2;

/// How long one follow-up request holds on the server while a job runs;
/// short, so each state change is printed within about this long.
const FOLLOW_STEP_SECS: u64 = 1;
/// How many lines of output `trigger` prints when a job fails.
const TAIL_LINES: usize = 30;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why `sign` (or reading the secret for `trigger`) failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the secret variable {0} is empty")]
    EmptySecret(String),
    #[error("the secret is read from the environment variable {0}, which is not set")]
    NoSecret(String),
    #[error(transparent)]
    Timestamp(#[from] signature::AuthError),
    #[error("failed to read the body from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("failed to write the headers: {0}")]
    Output(std::io::Error),
}

/// Why a deploy cannot be sent: what its flags or inputs say, the hosts
/// they list, or the client's own setup. Each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("give --container or --service, not both")]
    BothTargets,
    #[error("give --container NAME or --service NAME")]
    NoTarget,
    #[error("cannot read --urls-file {}: {source}", path.display())]
    UrlsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the host {0} is listed twice")]
    ListedTwice(String),
    #[error("no gateway URL given: use --url or --urls-file")]
    NoUrl,
    #[error("the URL {text} is not one: {source}")]
    NotUrl {
        text: String,
        source: url::ParseError,
    },
    #[error("the URL {0} is not a gateway's base URL (http or https, with no query)")]
    NotBaseUrl(String),
    #[error("several hosts are deployed one wave after another, each waited for: give --wait SECS")]
    WaitNeeded,
    #[error("the container name {0}")]
    ContainerName(#[source] crate::names::NameError),
    #[error("the service name {0}")]
    ServiceName(#[source] crate::names::NameError),
    #[error("--image: {0}")]
    Image(#[source] crate::docker::PinError),
    #[error("--image pins what `pull` deploys; `build` deploys what it builds")]
    ImageOnBuild,
    #[error("--rollback-to takes `previous` or a job id (32 hex digits)")]
    RollbackTo,
    #[error("--rollback-to deploys a release as a pull; it takes no --image or --action build")]
    RollbackWith,
    #[error("cannot set up HTTP: {}", error_chain(.0))]
    Http(#[source] reqwest::Error),
    #[error(transparent)]
    Secret(#[from] SignError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Reads the signing secret from `var`.
pub fn secret_from_env(var: &str) -> Result<SigningKey, SignError> {
    match std::env::var(var) {
        Ok(secret) if !secret.is_empty() => Ok(SigningKey::new(secret.as_bytes())),
        Ok(_) => Err(SignError::EmptySecret(var.to_owned())),
        Err(_) => Err(SignError::NoSecret(var.to_owned())),
    }
}

/// What `sign` signs.
pub enum SignInput {
    Body(Vec<u8>),
    Stdin,
    /// A request target, for a request without a body.
    Path(String),
}

/// `delivery-hook sign`: prints the two headers for a request.
pub fn sign(
    key: &SigningKey,
    input: SignInput,
    timestamp: Option<String>,
    out: &mut dyn Write,
) -> Result<(), SignError> {
    let timestamp = timestamp.unwrap_or_else(|| unix_now().to_string());
    signature::parse_timestamp(Some(&timestamp))?;
    let payload = match input {
        SignInput::Body(bytes) => bytes,
        SignInput::Path(path) => path.into_bytes(),
        SignInput::Stdin => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .take(16 << 20)
                .read_to_end(&mut bytes)
                .map_err(SignError::Stdin)?;
            bytes
        }
    };
    let signature = hex::encode(key.sign(&payload, &timestamp));
    writeln!(out, "X-Timestamp: {timestamp}\nX-Signature: {signature}").map_err(SignError::Output)
}

/// How `trigger` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// A line per state change, for a CI log.
    Text,
    /// The final job as one JSON line on stdout; progress on stderr.
    Json,
}

/// What `trigger` names in its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerTarget {
    Container(String),
    Service(String),
}

/// What `trigger` deploys, and how it authenticates; the same on every host.
pub struct Trigger {
    /// What to deploy: a container, or a Swarm service.
    pub target: TriggerTarget,
    pub action: Action,
    pub project: Option<String>,
    /// A pin, `<repository>@sha256:<hex>`, for `pull`.
    pub image: Option<String>,
    /// A release to roll back to instead: `previous` or the job that made it.
    pub rollback_to: Option<String>,
    pub wait: Option<u64>,
    pub output: OutputFormat,
    /// A CI token instead of a secret.
    pub token: Option<TokenSource>,
    /// The environment variable holding the secret, when no token is used.
    pub secret_env: String,
}

/// What authenticates `trigger`'s requests.
pub enum Credential {
    /// A project secret: every request is signed.
    Secret(SigningKey),
    /// A CI's OpenID Connect token, sent as `Authorization: Bearer`, and
    /// where it came from.
    Token(String, TokenSource),
}

/// Where `trigger` gets a CI token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Asked of the GitHub Actions runtime for this audience.
    GitHubActions { audience: String },
    /// Read from this environment variable (GitLab's `id_tokens`).
    Env(String),
}

/// The GitHub Actions runtime's token endpoint and its bearer, set for jobs
/// with `permissions: id-token: write`.
const GITHUB_REQUEST_URL: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
const GITHUB_REQUEST_TOKEN: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";

/// Why no CI token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is read from the environment variable {0}, which is not set")]
    Unset(String),
    #[error(
        "--oidc asks the GitHub Actions runtime for a token, but {GITHUB_REQUEST_URL} is not set: give the job `permissions: id-token: write`, or use --token-env in other CI"
    )]
    NoRuntime,
    #[error("{GITHUB_REQUEST_URL} is not a URL: {0}")]
    NotUrl(#[source] url::ParseError),
    #[error("the GitHub Actions token request failed: {0}")]
    Request(String),
    #[error("the GitHub Actions token request answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the GitHub Actions token answer was cut off: {0}")]
    CutOff(#[source] reqwest::Error),
    #[error("the GitHub Actions token answer is not {{\"value\": …}}: {0}")]
    NotAnswer(#[source] serde_json::Error),
    #[error("the CI token is empty")]
    Empty,
}

/// Gets the token `source` names.
pub async fn fetch_token(
    http: &reqwest::Client,
    source: &TokenSource,
) -> Result<String, TokenError> {
    let token = match source {
        TokenSource::Env(name) => {
            std::env::var(name).map_err(|_| TokenError::Unset(name.clone()))?
        }
        TokenSource::GitHubActions { audience } => {
            let (Ok(url), Ok(bearer)) = (
                std::env::var(GITHUB_REQUEST_URL),
                std::env::var(GITHUB_REQUEST_TOKEN),
            ) else {
                return Err(TokenError::NoRuntime);
            };
            let mut url = reqwest::Url::parse(&url).map_err(TokenError::NotUrl)?;
            url.query_pairs_mut().append_pair("audience", audience);
            #[derive(serde::Deserialize)]
            struct Answer {
                value: String,
            }
            let response = http
                .get(url)
                .bearer_auth(bearer)
                .header("Accept", "application/json")
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .map_err(|e| TokenError::Request(error_chain(&e)))?;
            let status = response.status();
            if !status.is_success() {
                return Err(TokenError::Status(status));
            }
            let bytes = response.bytes().await.map_err(TokenError::CutOff)?;
            serde_json::from_slice::<Answer>(&bytes)
                .map_err(TokenError::NotAnswer)?
                .value
        }
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    Ok(token)
}

/// One host's deploy: the request, where it goes, and where lines go.
struct Session {
    http: reqwest::Client,
    base: String,
    credential: Credential,
    /// Sent as X-Project; learnt from the accepted job when not given.
    project: Option<String>,
    /// When the whole `trigger` started: every line counts from it.
    started: Instant,
    format: OutputFormat,
    /// Put before each line when several hosts are deployed.
    label: Option<String>,
}

/// A refusal or transport failure: exit 2 with one line.
struct Refused(String);

/// What the gateway answered: a job, or a refusal in one line.
enum Answer {
    Job(Box<Job>),
    Refusal(u16, String),
}

impl Session {
    fn say(&self, line: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let text = match &self.label {
            Some(label) => format!("[{elapsed:6.1}s] {label}: {line}"),
            None => format!("[{elapsed:6.1}s] {line}"),
        };
        match self.format {
            OutputFormat::Text => println!("{text}"),
            OutputFormat::Json => eprintln!("{text}"),
        }
    }

    fn signed(&self, request: reqwest::RequestBuilder, payload: &[u8]) -> reqwest::RequestBuilder {
        let request = match &self.credential {
            Credential::Secret(key) => {
                let timestamp = unix_now().to_string();
                let signature = hex::encode(key.sign(payload, &timestamp));
                request
                    .header("X-Timestamp", timestamp)
                    .header("X-Signature", signature)
            }
            Credential::Token(token, _) => request.bearer_auth(token),
        };
        match &self.project {
            Some(project) => request.header("X-Project", project),
            None => request,
        }
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<Answer, Refused> {
        let response = request.send().await.map_err(|e| {
            Refused(format!(
                "the gateway could not be reached: {}",
                error_chain(&e)
            ))
        })?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Refused(format!("the gateway's answer was cut off: {e}")))?;
        if !matches!(status, 200 | 202) {
            return Ok(Answer::Refusal(status, refusal_line(status, &bytes)));
        }
        serde_json::from_slice::<Job>(&bytes)
            .map(|job| Answer::Job(Box::new(job)))
            .map_err(|e| Refused(format!("the gateway answered {status} without a job: {e}")))
    }

    async fn get_job(&self, id: &str, wait: u64) -> Result<Answer, Refused> {
        let target = format!("/jobs/{id}?wait={wait}");
        let request = self.http.get(format!("{}{target}", self.base));
        let request = self
            .signed(request, target.as_bytes())
            .timeout(Duration::from_secs(wait + 30));
        self.answer(request).await
    }

    /// A fresh token in place of one the gateway no longer takes for reads;
    /// false when its source cannot give another (a variable's).
    async fn renew_token(&mut self) -> Result<bool, Refused> {
        let Credential::Token(_, source @ TokenSource::GitHubActions { .. }) = &self.credential
        else {
            return Ok(false);
        };
        let source = source.clone();
        let token = fetch_token(&self.http, &source)
            .await
            .map_err(|e| Refused(e.to_string()))?;
        self.credential = Credential::Token(token, source);
        Ok(true)
    }
}

/// A refusal in one line: the problem document's code and message, or
/// the start of whatever else answered (a proxy's page).
fn refusal_line(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<Problem>(body) {
        Ok(problem) => format!("refused ({status} {}): {}", problem.code, problem.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(200).collect();
            format!("refused ({status}): {text}")
        }
    }
}

fn describe(job: &Job) -> String {
    format!(
        "job {} {}: {} {} (service {} of compose project {})",
        job.id,
        job.state.as_str(),
        job.action.as_str(),
        job.container_name,
        job.service,
        job.compose_project,
    )
}

/// What a rollback did, in one line.
fn rollback_line(rollback: &JobRollback) -> String {
    let mut line = format!(
        "rollback from {} to {}: {}",
        rollback.from_image.as_deref().unwrap_or("?"),
        rollback.to_image,
        rollback.state.as_str()
    );
    if let Some(error) = &rollback.error {
        line.push_str(&format!(" ({error})"));
    }
    line
}

/// The path and JSON body of the request, once its target, pin and
/// release are checked.
fn request_of(t: &Trigger) -> Result<(&'static str, String), TriggerError> {
    let (field, name) = match &t.target {
        TriggerTarget::Container(name) => ContainerName::parse(name)
            .map(|_| ("container_name", name))
            .map_err(TriggerError::ContainerName)?,
        TriggerTarget::Service(name) => SwarmServiceName::parse(name)
            .map(|_| ("service_name", name))
            .map_err(TriggerError::ServiceName)?,
    };
    let mut body = serde_json::json!({ field: name });
    if let Some(image) = &t.image {
        ImagePin::parse(image).map_err(TriggerError::Image)?;
        if t.action != Action::Pull {
            return Err(TriggerError::ImageOnBuild);
        }
        body["image"] = image.as_str().into();
    }
    let Some(to) = &t.rollback_to else {
        return Ok((t.action.as_str(), body.to_string()));
    };
    if to != "previous" && crate::names::JobId::parse(to).is_none() {
        return Err(TriggerError::RollbackTo);
    }
    if t.action != Action::Pull || t.image.is_some() {
        return Err(TriggerError::RollbackWith);
    }
    body["to"] = to.as_str().into();
    Ok(("rollback", body.to_string()))
}

fn http_client() -> Result<reqwest::Client, TriggerError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("delivery-hook/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(TriggerError::Http)
}

/// A deploy checked and ready to send to any number of hosts.
pub struct Prepared {
    http: reqwest::Client,
    /// `pull`, `build` or `rollback`.
    path: &'static str,
    body: String,
    trigger: Trigger,
    started: Instant,
}

impl Prepared {
    /// Checks what `t` names.
    pub fn new(trigger: Trigger) -> Result<Self, TriggerError> {
        let (path, body) = request_of(&trigger)?;
        Ok(Self {
            path,
            body,
            http: http_client()?,
            trigger,
            started: Instant::now(),
        })
    }

    /// The credential for one host: a GitHub token is asked for afresh,
    /// so a long fleet deploy does not outlive it.
    async fn credential(&self) -> Result<Credential, TriggerError> {
        Ok(match &self.trigger.token {
            None => secret_from_env(&self.trigger.secret_env).map(Credential::Secret)?,
            Some(source) => fetch_token(&self.http, source)
                .await
                .map(|token| Credential::Token(token, source.clone()))?,
        })
    }

    /// Deploys to the gateway at `url`, followed as `--wait` says.
    async fn deploy_to(&self, url: &str, label: Option<String>) -> fleet::HostResult {
        let credential = match self.credential().await {
            Ok(credential) => credential,
            Err(e) => return fleet::HostResult::refused(url, e.to_string()),
        };
        let mut session = Session {
            http: self.http.clone(),
            base: url.trim_end_matches('/').to_owned(),
            credential,
            project: self.trigger.project.clone(),
            started: self.started,
            format: self.trigger.output,
            label,
        };
        let t = &self.trigger;
        match run_trigger(&mut session, &self.body, self.path, t.wait).await {
            Ok((code, job)) => fleet::HostResult::ended(url, code, job, t.wait.is_some()),
            Err(Refused(line)) => fleet::HostResult::refused(url, line),
        }
    }
}

/// `delivery-hook trigger`: deploys to every host and returns the exit code.
pub async fn trigger(t: Trigger, hosts: fleet::Hosts) -> u8 {
    let output = t.output;
    let prepared = match hosts.check(&t).and_then(|()| Prepared::new(t)) {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("delivery-hook: {e}");
            return EXIT_REFUSED;
        }
    };
    let report = fleet::deploy(&prepared, &hosts).await;
    if hosts.per_host {
        report.print(output);
        return report.exit_code;
    }
    // One host, answered as before fleets: the job, or the refusal.
    let host = &report.hosts[0];
    match (&host.job, host.outcome) {
        (_, fleet::Outcome::Refused) => {
            eprintln!("delivery-hook: {}", host.error.as_deref().unwrap_or(""));
        }
        (Some(job), _) if output == OutputFormat::Json => {
            println!("{}", serde_json::to_string(job).unwrap_or_default());
        }
        _ => {}
    }
    report.exit_code
}

/// Sends the deploy and follows its job for up to `wait` seconds; the exit
/// code and the last state of the job.
async fn run_trigger(
    s: &mut Session,
    body: &str,
    path: &str,
    wait: Option<u64>,
) -> Result<(u8, Job), Refused> {
    let job = submit(s, body, path).await?;
    let Some(limit) = wait else {
        return Ok((EXIT_SUCCEEDED, job));
    };
    // Reads need X-Project; the job says which project signed the request.
    if s.project.is_none() {
        s.project = Some(job.project.clone());
    }
    follow(s, job, limit).await
}

/// POSTs the deploy; the job it started (or joined, or replayed).
async fn submit(s: &Session, body: &str, path: &str) -> Result<Job, Refused> {
    let request = s
        .http
        .post(format!("{}/{path}", s.base))
        .header("Content-Type", "application/json")
        .timeout(Duration::from_secs(60));
    let request = s.signed(request, body.as_bytes()).body(body.to_owned());
    let job = match s.answer(request).await? {
        Answer::Job(job) => *job,
        Answer::Refusal(_, line) => return Err(Refused(line)),
    };
    let flags: Vec<&str> = [("replayed", job.replayed), ("coalesced", job.coalesced)]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
    let suffix = match flags.is_empty() {
        true => String::new(),
        false => format!(" ({})", flags.join(", ")),
    };
    s.say(&format!("{}{suffix}", describe(&job)));
    Ok(job)
}

/// Reads the job until it ends or `limit` seconds pass, printing each
/// change of state.
async fn follow(s: &mut Session, mut job: Job, limit: u64) -> Result<(u8, Job), Refused> {
    let deadline = Instant::now() + Duration::from_secs(limit);
    let mut last_state = job.state;
    let mut unreachable = false;
    // A GitHub token was renewed since the last answer.
    let mut renewed = false;
    while !last_state.is_final() {
        let left = deadline.saturating_duration_since(Instant::now()).as_secs();
        if left == 0 {
            s.say(&format!(
                "the job did not finish within {limit} s; it is still {}; follow it at {}/jobs/{}",
                last_state.as_str(),
                s.base,
                job.id
            ));
            return Ok((EXIT_JOB_FAILED, job));
        }
        match s.get_job(&job.id, left.min(FOLLOW_STEP_SECS)).await {
            Ok(Answer::Job(next)) => {
                (unreachable, renewed) = (false, false);
                job = *next;
            }
            // A token outlives its use for reads after the rule's
            // max_token_age_secs; the runner gives a fresh one, a
            // variable's cannot be renewed.
            Ok(Answer::Refusal(401, line)) if matches!(s.credential, Credential::Token(..)) => {
                if !renewed && s.renew_token().await? {
                    renewed = true;
                    continue;
                }
                s.say(&format!(
                    "{line}; the job is {}; follow it at {}/jobs/{}",
                    last_state.as_str(),
                    s.base,
                    job.id
                ));
                return Ok((EXIT_JOB_FAILED, job));
            }
            Ok(Answer::Refusal(_, line)) => return Err(Refused(line)),
            Err(Refused(line)) => {
                // The gateway may be restarting; its jobs survive that.
                if !unreachable {
                    s.say(&format!("{line}; retrying"));
                }
                unreachable = true;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        if job.state != last_state {
            s.say(job.state.as_str());
            last_state = job.state;
        }
    }
    Ok((end_of(s, &job), job))
}

/// The exit code of a job that ended; a failure says why, what a
/// rollback did, and (as text) the tail of compose's output.
fn end_of(s: &Session, job: &Job) -> u8 {
    if job.state == JobStatus::Succeeded {
        return EXIT_SUCCEEDED;
    }
    let error = job.error.as_deref().unwrap_or("no reason given");
    s.say(&format!("{}: {error}", job.state.as_str()));
    if let Some(rollback) = &job.rollback {
        s.say(&rollback_line(rollback));
    }
    if s.format == OutputFormat::Text {
        let lines: Vec<&str> = job.output.lines().collect();
        let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
        println!("--- last {} lines of compose output ---", tail.len());
        for line in tail {
            println!("{line}");
        }
    }
    EXIT_JOB_FAILED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_prints_the_headers_for_a_body_and_a_path() {
        let key = SigningKey::new(b"your-very-secret-key");
        let body = br#"{"container_name": "my-container-name"}"#.to_vec();
        let mut out = Vec::new();
        sign(
            &key,
            SignInput::Body(body),
            Some("1700000000".into()),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "X-Timestamp: 1700000000\nX-Signature: 448353b29e590d7fec7943fecb867e3ecd3943790e67d1e5c46d78abd5f6b986\n"
        );
        let mut out = Vec::new();
        sign(
            &key,
            SignInput::Path("/jobs/abc".into()),
            Some("5".into()),
            &mut out,
        )
        .unwrap();
        let expected = hex::encode(key.sign(b"/jobs/abc", "5"));
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with(&format!("{expected}\n"))
        );
        assert!(
            sign(
                &key,
                SignInput::Path("/".into()),
                Some("x1".into()),
                &mut Vec::new()
            )
            .is_err()
        );
    }
}
