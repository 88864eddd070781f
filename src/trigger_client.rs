//! The client commands: `sign` and `trigger`.
//!
//! Secrets come from an environment variable, never from the command line,
//! where `ps` would show them.

use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

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

pub struct Trigger {
    pub url: String,
    /// What to deploy: a container, or a Swarm service.
    pub target: TriggerTarget,
    pub action: Action,
    pub project: Option<String>,
    /// A pin, `<repository>@sha256:<hex>`, for `pull`.
    pub image: Option<String>,
    /// Roll back to this release (`previous` or a job id) instead.
    pub rollback_to: Option<String>,
    pub wait: Option<u64>,
    pub output: OutputFormat,
    /// A CI token instead of a secret.
    pub token: Option<TokenSource>,
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

struct Session {
    http: reqwest::Client,
    base: String,
    credential: Credential,
    /// Sent as X-Project; learnt from the accepted job when not given.
    project: Option<String>,
    started: Instant,
    format: OutputFormat,
}

/// A refusal or transport failure: exit 2 with one line.
struct Refused(String);

impl Session {
    fn say(&self, line: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let text = format!("[{elapsed:6.1}s] {line}");
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

    async fn json(&self, request: reqwest::RequestBuilder) -> Result<(u16, Value), Refused> {
        let response = request.send().await.map_err(|e| {
            Refused(format!(
                "the gateway could not be reached: {}",
                error_chain(&e)
            ))
        })?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| Refused(format!("the gateway's answer was cut off: {e}")))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    async fn get_job(&self, id: &str, wait: u64) -> Result<(u16, Value), Refused> {
        let target = format!("/jobs/{id}?wait={wait}");
        let request = self.http.get(format!("{}{target}", self.base));
        let request = self
            .signed(request, target.as_bytes())
            .timeout(Duration::from_secs(wait + 30));
        self.json(request).await
    }
}

fn refusal_line(status: u16, body: &Value) -> String {
    let code = body.get("code").and_then(Value::as_str).unwrap_or("");
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    format!("refused ({status} {code}): {message}")
}

fn describe(job: &Value) -> String {
    let field = |k: &str| job.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    format!(
        "job {} {}: {} {} (service {} of compose project {})",
        field("id"),
        field("state"),
        field("action"),
        field("container_name"),
        field("service"),
        field("compose_project"),
    )
}

fn state_of(job: &Value) -> &str {
    job.get("state").and_then(Value::as_str).unwrap_or("")
}

/// What a rollback did, in one line.
fn rollback_line(rollback: &Value) -> String {
    let text = |key: &str| rollback.get(key).and_then(Value::as_str).unwrap_or("?");
    let mut line = format!(
        "rollback from {} to {}: {}",
        text("from_image"),
        text("to_image"),
        text("state")
    );
    if let Some(error) = rollback.get("error").and_then(Value::as_str) {
        line.push_str(&format!(" ({error})"));
    }
    line
}

fn is_final(state: &str) -> bool {
    !matches!(state, "queued" | "running" | "")
}

/// The path and body of `trigger`'s request, or why it cannot be sent.
fn request_of(t: &Trigger) -> Result<(&'static str, Value), String> {
    let (field, name) = match &t.target {
        TriggerTarget::Container(name) => ContainerName::parse(name)
            .map(|_| ("container_name", name))
            .map_err(|e| format!("the container name {e}")),
        TriggerTarget::Service(name) => SwarmServiceName::parse(name)
            .map(|_| ("service_name", name))
            .map_err(|e| format!("the service name {e}")),
    }?;
    let mut body = serde_json::json!({ field: name });
    if let Some(image) = &t.image {
        ImagePin::parse(image).map_err(|e| format!("--image: {e}"))?;
        if t.action != Action::Pull {
            return Err("--image pins what `pull` deploys; `build` deploys what it builds".into());
        }
        body["image"] = image.as_str().into();
    }
    let Some(to) = &t.rollback_to else {
        return Ok((t.action.as_str(), body));
    };
    if to != "previous" && crate::names::JobId::parse(to).is_none() {
        return Err("--rollback-to takes `previous` or a job id (32 hex digits)".into());
    }
    if t.action != Action::Pull || t.image.is_some() {
        return Err(
            "--rollback-to deploys a release as a pull; it takes no --image or --action build"
                .into(),
        );
    }
    body["to"] = to.as_str().into();
    Ok(("rollback", body))
}

/// `delivery-hook trigger`: returns the exit code.
pub async fn trigger(secret_env: &str, t: Trigger) -> u8 {
    let (path, body) = match request_of(&t) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("delivery-hook: {e}");
            return EXIT_REFUSED;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("delivery-hook/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            eprintln!("delivery-hook: cannot set up HTTP: {}", error_chain(&e));
            return EXIT_REFUSED;
        }
    };
    let credential = match &t.token {
        None => secret_from_env(secret_env)
            .map(Credential::Secret)
            .map_err(|e| e.to_string()),
        Some(source) => fetch_token(&http, source)
            .await
            .map(|token| Credential::Token(token, source.clone()))
            .map_err(|e| e.to_string()),
    };
    let credential = match credential {
        Ok(credential) => credential,
        Err(e) => {
            eprintln!("delivery-hook: {e}");
            return EXIT_REFUSED;
        }
    };
    let mut session = Session {
        http,
        base: t.url.trim_end_matches('/').to_owned(),
        credential,
        project: t.project,
        started: Instant::now(),
        format: t.output,
    };
    match run_trigger(&mut session, &body.to_string(), path, t.wait).await {
        Ok((code, job)) => {
            if t.output == OutputFormat::Json {
                println!("{job}");
            }
            code
        }
        Err(Refused(line)) => {
            eprintln!("delivery-hook: {line}");
            EXIT_REFUSED
        }
    }
}

async fn run_trigger(
    s: &mut Session,
    body: &str,
    path: &str,
    wait: Option<u64>,
) -> Result<(u8, Value), Refused> {
    let body = body.to_owned();
    let request = s
        .http
        .post(format!("{}/{path}", s.base))
        .header("Content-Type", "application/json")
        .timeout(Duration::from_secs(60));
    let request = s.signed(request, body.as_bytes()).body(body);
    let (status, job) = s.json(request).await?;
    if !matches!(status, 200 | 202) {
        return Err(Refused(refusal_line(status, &job)));
    }
    let mut flags = Vec::new();
    for flag in ["replayed", "coalesced"] {
        if job.get(flag).and_then(Value::as_bool) == Some(true) {
            flags.push(flag);
        }
    }
    let suffix = if flags.is_empty() {
        String::new()
    } else {
        format!(" ({})", flags.join(", "))
    };
    s.say(&format!("{}{suffix}", describe(&job)));
    let Some(limit) = wait else {
        return Ok((EXIT_SUCCEEDED, job));
    };
    let id = job
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    // Reads need X-Project; the job says which project signed the request.
    if s.project.is_none() {
        s.project = job
            .get("project")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    let deadline = s.started + Duration::from_secs(limit);
    let mut job = job;
    let mut last_state = state_of(&job).to_owned();
    let mut unreachable_since: Option<String> = None;
    // A GitHub token was renewed since the last answer.
    let mut renewed = false;
    while !is_final(&last_state) {
        let left = deadline.saturating_duration_since(Instant::now()).as_secs();
        if left == 0 {
            s.say(&format!(
                "the job did not finish within {limit} s; it is still {last_state}; follow it at {}/jobs/{id}",
                s.base
            ));
            return Ok((EXIT_JOB_FAILED, job));
        }
        match s.get_job(&id, left.min(FOLLOW_STEP_SECS)).await {
            Ok((200, next)) => {
                unreachable_since = None;
                renewed = false;
                job = next;
            }
            Ok((401, body)) if matches!(s.credential, Credential::Token(..)) => {
                // A token outlives its use for reads after the rule's
                // max_token_age_secs; the runner gives a fresh one, a
                // variable's cannot be renewed.
                match &s.credential {
                    Credential::Token(_, source @ TokenSource::GitHubActions { .. })
                        if !renewed =>
                    {
                        let source = source.clone();
                        let token = fetch_token(&s.http, &source)
                            .await
                            .map_err(|e| Refused(e.to_string()))?;
                        s.credential = Credential::Token(token, source);
                        renewed = true;
                        continue;
                    }
                    _ => {
                        s.say(&format!(
                            "{}; the job is {last_state}; follow it at {}/jobs/{id}",
                            refusal_line(401, &body),
                            s.base
                        ));
                        return Ok((EXIT_JOB_FAILED, job));
                    }
                }
            }
            Ok((status, body)) => return Err(Refused(refusal_line(status, &body))),
            Err(Refused(line)) => {
                // The gateway may be restarting; its jobs survive that.
                if unreachable_since.is_none() {
                    s.say(&format!("{line}; retrying"));
                }
                unreachable_since = Some(line);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let state = state_of(&job).to_owned();
        if state != last_state {
            s.say(&state);
            last_state = state;
        }
    }
    if last_state == "succeeded" {
        return Ok((EXIT_SUCCEEDED, job));
    }
    let error = job
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("no reason given");
    s.say(&format!("{last_state}: {error}"));
    if let Some(rollback) = job.get("rollback") {
        s.say(&rollback_line(rollback));
    }
    if s.format == OutputFormat::Text {
        let output = job.get("output").and_then(Value::as_str).unwrap_or("");
        let lines: Vec<&str> = output.lines().collect();
        println!(
            "--- last {} lines of compose output ---",
            lines.len().min(TAIL_LINES)
        );
        for line in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
            println!("{line}");
        }
    }
    Ok((EXIT_JOB_FAILED, job))
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

    #[test]
    fn a_rollback_is_a_pull_of_a_release_sent_to_rollback() {
        let trigger = |action, image: Option<&str>, to: Option<&str>| Trigger {
            url: "http://127.0.0.1:1".into(),
            target: TriggerTarget::Container("billing-web".into()),
            action,
            project: None,
            image: image.map(str::to_owned),
            rollback_to: to.map(str::to_owned),
            wait: None,
            output: OutputFormat::Text,
            token: None,
        };
        let (path, body) = request_of(&trigger(Action::Pull, None, Some("previous"))).unwrap();
        assert_eq!(path, "rollback");
        assert_eq!(
            body,
            serde_json::json!({"container_name": "billing-web", "to": "previous"})
        );
        let id = "5f0c3a9e8b7d4c21a0e9f8d7c6b5a493";
        let (_, body) = request_of(&trigger(Action::Pull, None, Some(id))).unwrap();
        assert_eq!(body["to"], id);
        let pin = format!("reg.example.com/app@sha256:{}", "a".repeat(64));
        for refused in [
            trigger(Action::Pull, None, Some("last")),
            trigger(Action::Build, None, Some("previous")),
            trigger(Action::Pull, Some(&pin), Some("previous")),
        ] {
            assert!(request_of(&refused).is_err());
        }
        let (path, body) = request_of(&trigger(Action::Pull, Some(&pin), None)).unwrap();
        assert_eq!((path, body["image"].as_str()), ("pull", Some(pin.as_str())));
    }
}
