//! The command line: `serve`, `check`, `openapi`, `sign`, `trigger`, and the
//! hidden `helper`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::docker::{ComposeHost, DockerEngine, Swarm};
use crate::names::{Action, JobId};
use crate::policy::{self, ComposeTool, Policy, SystemEnvironment};
use crate::serve::{self, Controls};
use crate::store::Store;
use crate::trigger_client::fleet::Hosts;
use crate::trigger_client::{
    self, OutputFormat, SignInput, TokenSource, Trigger, TriggerError, TriggerTarget,
};

#[derive(Debug, Parser)]
#[command(
    name = "delivery-hook",
    version,
    about = "Signed redeploys of docker compose services for CI pipelines"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActionArg {
    Pull,
    Build,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// The policy file [default: $DELIVERY_CONFIG, then ./delivery.toml].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log lines as text or as JSON objects (the audit trail included).
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Validate the policy and print a summary; exit 1 on any error.
    Check {
        /// The policy file [default: $DELIVERY_CONFIG, then ./delivery.toml].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also judge every compose project running on this host as a deploy
        /// by each policy project whose containers match would be judged.
        #[arg(long)]
        compose: bool,
    },
    /// Exit 0 when the gateway this policy configures answers `/healthz`
    /// on its listen address: the container image's health check.
    Healthcheck {
        /// The policy file [default: $DELIVERY_CONFIG, then ./delivery.toml].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Send a test notification to each of a project's notify targets and
    /// report each outcome; exit 1 unless every one was delivered.
    NotifyTest {
        /// The policy file [default: $DELIVERY_CONFIG, then ./delivery.toml].
        #[arg(long)]
        config: Option<PathBuf>,
        /// The policy project whose targets to try.
        #[arg(long)]
        project: String,
    },
    /// Print the OpenAPI document (JSON).
    Openapi,
    /// Print the X-Timestamp and X-Signature headers for a request.
    Sign {
        /// The environment variable holding the secret.
        #[arg(long, default_value = "DELIVERY_SECRET")]
        secret_env: String,
        /// Sign for this Unix time instead of now.
        #[arg(long)]
        timestamp: Option<String>,
        /// Sign this request target (path and query) of a request without a body.
        #[arg(long, conflicts_with = "body")]
        path: Option<String>,
        /// The exact body to sign, or - to read it from stdin.
        body: Option<String>,
    },
    /// Sign and send a deploy to one host or several, follow each job,
    /// exit 0 only if every one succeeded.
    Trigger(TriggerArgs),
    /// Run a self-update job that a gateway handed off. The gateway starts
    /// this in a helper container; it is not meant to be run by hand.
    #[command(hide = true)]
    Helper {
        /// The gateway's state directory, holding the job store.
        #[arg(long)]
        state_dir: PathBuf,
        /// The job to run.
        #[arg(long)]
        job: String,
        /// The job's time budget, counted from when the gateway started it.
        #[arg(long)]
        timeout_secs: u64,
        /// How long the service must run unchanged after `up`.
        #[arg(long, default_value_t = 5)]
        stable_secs: u64,
        /// The compose command, e.g. `docker compose`.
        #[arg(last = true, required = true)]
        compose: Vec<String>,
    },
}

/// `trigger`'s flags. An empty value is a flag not given, so that a CI
/// template can pass its inputs through whether they are set or not.
#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// A gateway's base URL, e.g. `https://deploy.example.com`. Give it
    /// more than once (or several in one value, one a line) to deploy to
    /// several hosts, in order, each waited for.
    #[arg(long, value_name = "URL")]
    url: Vec<String>,
    /// A file of gateway URLs, one a line; `#` starts a comment.
    #[arg(long, value_name = "PATH")]
    urls_file: Option<PathBuf>,
    /// Deploy this many hosts at a time; the next wave starts only when
    /// every host of this one succeeded.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
    /// The container to redeploy.
    #[arg(long)]
    container: Option<String>,
    /// Or the Docker Swarm service to update (with `pull`).
    #[arg(long)]
    service: Option<String>,
    #[arg(long, value_enum, default_value = "pull")]
    action: ActionArg,
    /// The policy project to sign for (sent as X-Project).
    #[arg(long)]
    project: Option<String>,
    /// With `pull`: deploy exactly this image,
    /// `<repository>@sha256:<64 hex>`, instead of what the tag points at.
    #[arg(long)]
    image: Option<String>,
    /// Roll the service back to a release instead: `previous` (the
    /// newest whose image is not the one running) or the id of the job
    /// that made it (see `GET /releases`).
    #[arg(long, value_name = "JOB|previous", conflicts_with = "image")]
    rollback_to: Option<String>,
    /// The environment variable holding the secret [default: DELIVERY_SECRET].
    /// Named here, it wins over --oidc and --token-env.
    #[arg(long, value_name = "VAR")]
    secret_env: Option<String>,
    /// Inside GitHub Actions (`permissions: id-token: write`): authenticate
    /// with an OpenID Connect token for this audience instead of a secret.
    #[arg(long, value_name = "AUDIENCE")]
    oidc: Option<String>,
    /// Authenticate with the OpenID Connect token in this environment
    /// variable (GitLab CI's `id_tokens`, whose `aud` sets the audience)
    /// instead of a secret; it wins over `--oidc`'s request.
    #[arg(long, value_name = "NAME")]
    token_env: Option<String>,
    /// Follow each job for up to this many seconds; exit 1 unless it
    /// succeeds. Required with several hosts.
    #[arg(long)]
    wait: Option<u64>,
    /// Progress lines, or JSON on stdout: the final job for one `--url`,
    /// `{"exit_code", "hosts": [...]}` for a list of hosts.
    #[arg(long, value_enum, default_value = "text")]
    output: OutputArg,
    /// Run as the GitHub Action: every input from the `INPUT_*` variables
    /// the runner sets, the outputs to `GITHUB_OUTPUT`.
    #[arg(long, conflicts_with_all = ["url", "urls_file", "container", "service"])]
    github_action: bool,
}

/// A flag's value, unless it is empty.
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

impl TriggerArgs {
    /// What to deploy and where.
    fn into_request(self) -> Result<(Trigger, Hosts), TriggerError> {
        let target = match (given(self.container), given(self.service)) {
            (Some(container), None) => TriggerTarget::Container(container),
            (None, Some(service)) => TriggerTarget::Service(service),
            (Some(_), Some(_)) => return Err(TriggerError::BothTargets),
            (None, None) => return Err(TriggerError::NoTarget),
        };
        let hosts = Hosts::read(&self.url, self.urls_file.as_deref(), self.parallel.into())?;
        let secret_env = given(self.secret_env);
        let token = match (given(self.oidc), given(self.token_env)) {
            _ if secret_env.is_some() => None,
            (_, Some(name)) => Some(TokenSource::Env(name)),
            (Some(audience), None) => Some(TokenSource::GitHubActions { audience }),
            (None, None) => None,
        };
        let trigger = Trigger {
            target,
            action: match self.action {
                ActionArg::Pull => Action::Pull,
                ActionArg::Build => Action::Build,
            },
            project: given(self.project),
            image: given(self.image),
            rollback_to: given(self.rollback_to),
            wait: self.wait,
            output: match self.output {
                OutputArg::Text => OutputFormat::Text,
                OutputArg::Json => OutputFormat::Json,
            },
            token,
            secret_env: secret_env.unwrap_or_else(|| "DELIVERY_SECRET".to_owned()),
        };
        Ok((trigger, hosts))
    }
}

/// The policy path, and whether the operator named it.
fn config_path(flag: Option<PathBuf>) -> (PathBuf, bool) {
    match flag {
        Some(path) => (path, true),
        None => match std::env::var_os("DELIVERY_CONFIG").filter(|v| !v.is_empty()) {
            Some(path) => (PathBuf::from(path), false),
            None => (PathBuf::from("delivery.toml"), false),
        },
    }
}

/// Why no policy is in force at start.
#[derive(Debug, thiserror::Error)]
enum NoPolicy {
    #[error("UVICORN_PORT=`{0}` is not a port number")]
    SeedPort(String),
    #[error(transparent)]
    Seed(#[from] policy::SeedError),
    /// Every error of the file; `seedless` when no file was named or found
    /// and the seed-compatible mode was not asked for either.
    #[error("{errors}{}", if *.seedless { "\n(no policy file, and SECRET_KEY is not set for the seed-compatible mode)" } else { "" })]
    File {
        errors: policy::PolicyErrors,
        seedless: bool,
    },
}

/// A policy and the warnings to show.
fn load_policy(flag: Option<PathBuf>) -> Result<(Policy, Option<String>, PathBuf), NoPolicy> {
    let (path, explicit) = config_path(flag);
    if !explicit && !path.exists() {
        if let Ok(secret) = std::env::var("SECRET_KEY") {
            let port = match std::env::var("UVICORN_PORT") {
                Ok(p) => p.parse().map_err(|_| NoPolicy::SeedPort(p))?,
                Err(_) => 8000,
            };
            let docs = std::env::var("SHOW_DOCS").is_ok_and(|v| !v.is_empty());
            let state = std::env::var_os("DELIVERY_STATE_DIR")
                .map_or_else(|| PathBuf::from("delivery-state"), PathBuf::from);
            let policy = Policy::seed(&secret, port, docs, state)?;
            return Ok((policy, None, path));
        }
    }
    let loaded = policy::load(&path, &SystemEnvironment).map_err(|errors| NoPolicy::File {
        errors,
        seedless: !explicit && !path.exists(),
    })?;
    let warnings = (!loaded.warnings.is_empty()).then(|| loaded.warnings().to_string());
    Ok((loaded.policy, warnings, path))
}

pub fn run_command_line(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config, log_format } => serve(config, log_format),
        Command::Helper {
            state_dir,
            job,
            timeout_secs,
            stable_secs,
            compose,
        } => {
            let budget = crate::jobs::HelperBudget {
                timeout: Duration::from_secs(timeout_secs),
                stable: Duration::from_secs(stable_secs),
            };
            helper(state_dir, &job, budget, compose)
        }
        Command::Check { config, compose } => check(config, compose),
        Command::Healthcheck { config } => runtime().block_on(healthcheck(config)),
        Command::NotifyTest { config, project } => {
            runtime().block_on(notify_test(config, &project))
        }
        Command::Openapi => {
            println!("{}", crate::api::document());
            ExitCode::SUCCESS
        }
        Command::Sign {
            secret_env,
            timestamp,
            path,
            body,
        } => sign(&secret_env, timestamp, path, body),
        Command::Trigger(args) if args.github_action => {
            ExitCode::from(runtime().block_on(trigger_client::github::run_action()))
        }
        Command::Trigger(args) => match args.into_request() {
            Ok((trigger, hosts)) => {
                ExitCode::from(runtime().block_on(trigger_client::trigger(trigger, hosts)))
            }
            Err(e) => {
                eprintln!("delivery-hook: {e}");
                ExitCode::from(trigger_client::EXIT_REFUSED)
            }
        },
    }
}

/// `serve`: drops root, starts the log writer, runs the gateway.
fn serve(config: Option<PathBuf>, log_format: LogFormat) -> ExitCode {
    // Before the log writer's thread: the new user's HOME is set in the
    // environment, which no other thread may be reading.
    if let Err(e) = become_run_as_user() {
        return fail(&e);
    }
    let _logs = crate::logging::init(match log_format {
        LogFormat::Text => crate::logging::Format::Text,
        LogFormat::Json => crate::logging::Format::Json,
    });
    runtime().block_on(serve_command(config))
}

/// `helper`: drops root and finishes the self-update job `job`.
fn helper(
    state_dir: PathBuf,
    job: &str,
    budget: crate::jobs::HelperBudget,
    compose: Vec<String>,
) -> ExitCode {
    if let Err(e) = become_run_as_user() {
        return fail(&e);
    }
    let _logs = crate::logging::init(crate::logging::Format::Text);
    let Some(id) = JobId::parse(job) else {
        return fail(format!("--job `{job}` is not a job id"));
    };
    runtime().block_on(helper_command(state_dir, id, budget, compose))
}

/// `sign`: prints the headers that sign a body (given, from stdin, or a
/// file's) with the secret in `secret_env`.
fn sign(
    secret_env: &str,
    timestamp: Option<String>,
    path: Option<String>,
    body: Option<String>,
) -> ExitCode {
    let input = match (path, body) {
        (Some(path), _) => SignInput::Path(path),
        (None, Some(body)) if body == "-" => SignInput::Stdin,
        (None, Some(body)) => SignInput::Body(body.into_bytes()),
        (None, None) => {
            return fail("give the BODY to sign, - to read it from stdin, or --path");
        }
    };
    let signed = trigger_client::secret_from_env(secret_env)
        .and_then(|key| trigger_client::sign(&key, input, timestamp, &mut std::io::stdout()));
    match signed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Drops root for the user `DELIVERY_RUN_AS` names, when it is set.
fn become_run_as_user() -> Result<(), crate::privilege::PrivilegeError> {
    match std::env::var("DELIVERY_RUN_AS") {
        Ok(user) => crate::privilege::drop_root(&user, &crate::privilege::docker_socket()),
        Err(_) => Ok(()),
    }
}

async fn helper_command(
    state_dir: PathBuf,
    id: JobId,
    budget: crate::jobs::HelperBudget,
    compose: Vec<String>,
) -> ExitCode {
    let files = crate::docker::StateFiles::new(&state_dir);
    let store = match Store::open(&state_dir) {
        Ok(store) => store,
        Err(e) => return fail(e),
    };
    let clock = Clock::system();
    let engine = DockerEngine::new(ComposeTool::Command(compose), clock.clone());
    let cancel = CancellationToken::new();
    {
        // Stopped, it stops compose's process group and records the job interrupted.
        let cancel = cancel.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            if let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                cancel.cancel();
            }
        });
    }
    tracing::info!(job = %id, "running a self-update job handed off by the gateway");
    match crate::jobs::run_helper(&engine, &store, id, budget, &files, &clock, cancel).await {
        Ok(record) => {
            tracing::info!(
                job = %id,
                state = record.state.as_str(),
                error = record.error.as_deref().unwrap_or(""),
                "self-update job finished"
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("delivery-hook: {message}");
    ExitCode::FAILURE
}

fn check(config: Option<PathBuf>, compose: bool) -> ExitCode {
    match load_policy(config) {
        Ok((policy, warnings, _)) => {
            if let Some(w) = warnings {
                eprintln!("{w}");
            }
            print!("{}", policy.summary());
            let engine = DockerEngine::new(policy.docker.compose.clone(), Clock::system());
            match runtime().block_on(engine.compose_found()) {
                Ok(found) => println!("found: {found}"),
                Err(e) => eprintln!("warning: {e}; compose deploys will fail"),
            }
            if compose {
                if let Err(e) = runtime().block_on(check_compose_projects(&policy, &engine)) {
                    return fail(format!(
                        "the running compose projects cannot be listed: {e}"
                    ));
                }
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// Prints, for every compose project running on this host, what a deploy
/// of each of its services would meet from each policy project whose
/// `containers` match the service's container, as if the project's
/// `compose_model` were `enforce`: what an upgrade to a judged model would
/// refuse.
async fn check_compose_projects(
    policy: &Policy,
    engine: &DockerEngine,
) -> Result<(), crate::docker::EngineError> {
    let files = crate::docker::StateFiles::new(&policy.server.state_dir);
    let containers = engine.compose_containers().await?;
    let mut seen = std::collections::HashSet::new();
    let mut current = None;
    for (compose_project, service, name) in containers {
        // One container per service speaks for it.
        if !seen.insert((compose_project.clone(), service.clone())) {
            continue;
        }
        if current.as_ref() != Some(&compose_project) {
            println!("compose project `{compose_project}`:");
            current = Some(compose_project.clone());
        }
        let parsed = crate::names::ContainerName::parse(&name).ok();
        let candidates = parsed
            .as_ref()
            .map(|n| policy.candidates(n))
            .unwrap_or_default();
        let facts = match &parsed {
            Some(parsed) if !candidates.is_empty() => engine.find_container(parsed).await?,
            _ => None,
        };
        let Some(facts) = facts else {
            println!("  service `{service}` ({name}): no policy project may deploy it");
            continue;
        };
        for project in candidates {
            let verdict = crate::gateway::verdict(engine, &files, policy, project, &facts).await;
            let said = match verdict {
                Ok(findings) if findings.is_empty() => "allowed".to_string(),
                Ok(findings) => {
                    let mode = match project.compose_model {
                        crate::policy::ModelMode::Enforce => "refused",
                        crate::policy::ModelMode::Warn => {
                            "refused under enforce (compose_model = \"warn\": runs with a warning)"
                        }
                        crate::policy::ModelMode::Off => {
                            "refused under enforce (compose_model = \"off\": runs unjudged)"
                        }
                    };
                    let each: Vec<String> = findings
                        .iter()
                        .map(|f| format!("    - [{}] {f}", f.why.reason()))
                        .collect();
                    format!("{mode}: compose_model_not_allowed\n{}", each.join("\n"))
                }
                Err(refusal) => format!("refused: {}: {}", refusal.code.as_str(), refusal.message),
            };
            println!(
                "  service `{service}` ({name}) by project `{}`: {said}",
                project.name
            );
        }
    }
    if current.is_none() {
        println!("no compose project runs on this host");
    }
    Ok(())
}

/// Bound on the health check's request: Docker's own `--timeout` should be
/// longer, so that a hung gateway is reported by this command's line.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// `notify-test`: one test message to each target, sent directly (not
/// through the outbox, so a failure is reported at once and not retried).
async fn notify_test(config: Option<PathBuf>, project: &str) -> ExitCode {
    let policy = match load_policy(config) {
        Ok((policy, _, _)) => policy,
        Err(errors) => return fail(errors),
    };
    let Some(found) = policy.project(project) else {
        return fail(format!("the policy has no project `{project}`"));
    };
    if found.notify.is_empty() {
        return fail(format!("project `{project}` has no notify targets"));
    }
    let now = Clock::system().unix_ms();
    let deployment = crate::record::Deployment {
        target: crate::record::DeployTarget::Swarm(
            crate::names::SwarmServiceName::parse("notify-test").expect("a valid name"),
        ),
        pin: None,
        restore: None,
    };
    let mut record =
        crate::record::JobRecord::new(project, crate::names::Action::Pull, &deployment, false, now);
    record.state = crate::record::JobState::Succeeded;
    let id = format!("msg_test_{}", crate::names::JobId::random());
    let payload = crate::notifications::message(
        "test",
        now,
        serde_json::to_value(crate::api::Job::from_record(record, false, false))
            .unwrap_or_default(),
        None,
    );
    let client = crate::outbound::LazyClient::new(crate::notifications::ATTEMPT_TIMEOUT);
    let http = match client.get() {
        Ok(http) => http,
        Err(why) => return fail(why.to_string()),
    };
    let mut delivered = true;
    for target in &found.notify {
        let message = crate::notifications::Outgoing {
            id: &id,
            payload: &payload,
            at_secs: now / 1000,
        };
        let sent = crate::notifications::deliver(http, target, policy.smtp.as_ref(), message).await;
        let kind = target.kind.as_str();
        match sent {
            Ok(()) => println!("target {} ({kind}): delivered", target.number),
            Err(e) => {
                delivered = false;
                println!("target {} ({kind}): not delivered: {e}", target.number);
            }
        }
    }
    if delivered {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Asks `/healthz` at the address `serve` listens on with this
/// configuration (the seed-compatible mode's included), on loopback when it
/// listens on every address.
async fn healthcheck(config: Option<PathBuf>) -> ExitCode {
    let listen = match load_policy(config) {
        Ok((policy, _, _)) => policy.server.listen,
        Err(errors) => return fail(format!("unhealthy: the policy does not load:\n{errors}")),
    };
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let url = format!(
        "http://{}/healthz",
        std::net::SocketAddr::new(ip, listen.port())
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let answer = match reqwest::Client::builder()
        .timeout(HEALTHCHECK_TIMEOUT)
        .build()
    {
        Ok(http) => http.get(&url).send().await,
        Err(e) => return fail(format!("unhealthy: no HTTP client: {e}")),
    };
    match answer {
        Ok(response) if response.status() == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok(response) => fail(format!("unhealthy: {url} answered {}", response.status())),
        Err(e) => fail(format!("unhealthy: {url} did not answer: {e}")),
    }
}

/// Signals: SIGTERM and SIGINT stop; SIGHUP reloads the policy file.
fn watch_signals(
    path: PathBuf,
    seed: bool,
    shutdown: CancellationToken,
    reload: mpsc::Sender<Policy>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    if seed {
                        tracing::warn!("SIGHUP: nothing to reload in the seed-compatible mode");
                        continue;
                    }
                    match policy::load(&path, &SystemEnvironment) {
                        Ok(loaded) => {
                            for w in &loaded.warnings {
                                tracing::warn!(line = w.line, "{}", w.message);
                            }
                            let _ = reload.send(loaded.policy).await;
                        }
                        Err(errors) => {
                            for e in &errors.errors {
                                tracing::error!(file = %errors.origin, line = e.line, "{}", e.message);
                            }
                            tracing::error!("the new policy is invalid; the old one stays in force");
                        }
                    }
                }
            }
        }
        tracing::info!("shutdown requested");
        shutdown.cancel();
    });
}

async fn serve_command(config: Option<PathBuf>) -> ExitCode {
    let (policy, warnings, path) = match load_policy(config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(w) = warnings {
        tracing::warn!("{w}");
    }
    let seed = policy.origin == policy::Origin::Seed;
    if seed {
        tracing::warn!(
            "no policy file: running in the seed-compatible mode (one project `default`, SECRET_KEY, every container, pull and build)"
        );
    }
    let listen = policy.server.listen;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => return fail(format!("failed to listen on {listen}: {e}")),
    };
    let metrics_listener = match policy
        .server
        .metrics_listen
        .filter(|_| policy.server.metrics)
        .map(bind_metrics)
    {
        Some(bound) => match bound.await {
            Ok(l) => Some(l),
            Err((addr, e)) => return fail(format!("failed to listen for metrics on {addr}: {e}")),
        },
        None => None,
    };
    let store = match Store::open(&policy.server.state_dir) {
        Ok(store) => store,
        Err(e) => return fail(e),
    };
    let clock = Clock::system();
    let engine = std::sync::Arc::new(DockerEngine::new(
        policy.docker.compose.clone(),
        clock.clone(),
    ));
    tokio::spawn(log_what_the_engine_is(engine.clone()));
    let gateway = match serve::build_gateway(policy, engine, store, clock).await {
        Ok(gateway) => gateway,
        Err(e) => return fail(e),
    };
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = mpsc::channel(1);
    watch_signals(path_for_reload(&path), seed, shutdown.clone(), reload_tx);
    tracing::info!(addr = %listen, "listening");
    let controls = Controls {
        shutdown,
        reload: reload_rx,
    };
    match serve::run_until_shutdown(gateway, listener, metrics_listener, controls).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("the server failed: {e}")),
    }
}

/// The metrics listener; the line to print says which address failed.
async fn bind_metrics(
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, (std::net::SocketAddr, std::io::Error)> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| (addr, e))
}

/// Logs the compose tool the engine runs and whether it is a Swarm
/// manager, or why either is unknown.
async fn log_what_the_engine_is(engine: std::sync::Arc<DockerEngine>) {
    match engine.compose_found().await {
        Ok(found) => tracing::info!(
            compose = %found.argv.join(" "),
            version = %found.version,
            tool = found.generation(),
            "compose tool"
        ),
        Err(e) => tracing::warn!("{e}"),
    }
    match Swarm::is_swarm_manager(&*engine).await {
        Ok(manager) => tracing::info!(
            swarm_manager = manager,
            "the engine {} a Swarm manager",
            if manager { "is" } else { "is not" }
        ),
        Err(e) => {
            tracing::warn!(error = %e, "whether the engine is a Swarm manager is unknown")
        }
    }
}

fn path_for_reload(path: &Path) -> PathBuf {
    path.to_owned()
}
