//! The pages, written from the store's records through askama templates
//! (`templates/ui/`), which are checked when the crate compiles and escape
//! every value.

use askama::Template;

use super::RECENT_JOBS;
use super::chart;
use crate::gateway::Gateway;
use crate::policy::{Policy, Viewer};
use crate::record::{JobRecord, JobState, JobTarget, Requester, rfc3339};
use crate::store::{Release, StoreError, compose_key, swarm_key};

pub const WRONG_TOKEN: &str = "That token signs in no viewer.";
pub const THROTTLED: &str = "Too many failed sign-ins from this address; wait a minute.";
pub const CROSS_ORIGIN: &str = "Sign in from this gateway's own page.";

/// Releases a service's history shows.
const HISTORY: usize = 20;

#[derive(Template)]
#[template(path = "ui/sign_in.html")]
struct SignInPage<'a> {
    problem: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "ui/message.html")]
struct MessagePage<'a> {
    title: &'a str,
    text: &'a str,
}

#[derive(Template)]
#[template(path = "ui/home.html")]
struct HomePage<'a> {
    viewer: &'a str,
    projects: Vec<&'a str>,
}

#[derive(Template)]
#[template(path = "ui/project.html")]
struct ProjectPage<'a> {
    project: &'a str,
    services: Vec<ServiceView>,
    rows: Vec<JobRow>,
    chart: String,
}

#[derive(Template)]
#[template(path = "ui/rows.html")]
struct Rows {
    rows: Vec<JobRow>,
}

#[derive(Template)]
#[template(path = "ui/job.html")]
struct JobPage {
    row: JobRow,
    project: String,
    error: String,
    steps: Vec<String>,
}

/// A job as a row of the pages.
pub struct JobRow {
    pub id: String,
    pub service: String,
    pub state: &'static str,
    pub created: String,
    pub duration: String,
    pub who: String,
    pub before: String,
    pub after: String,
    /// What a rollback did: restored a release, or returned after a failure.
    pub rollback: String,
}

/// A service with its releases, newest first.
struct ServiceView {
    name: String,
    current: Option<ReleaseRow>,
    history: Vec<ReleaseRow>,
}

struct ReleaseRow {
    job: String,
    image: String,
    digest: String,
    at: String,
    who: String,
}

fn render(template: &impl Template) -> String {
    template.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "a page could not be written");
        String::from("<!doctype html><title>error</title><p>The page could not be written.</p>")
    })
}

pub fn sign_in(problem: Option<&str>) -> String {
    render(&SignInPage { problem })
}

pub fn not_found() -> String {
    render(&MessagePage {
        title: "Not found",
        text: "There is no such page, or it is not yours to see.",
    })
}

pub fn unavailable() -> String {
    render(&MessagePage {
        title: "Unavailable",
        text: "The job store does not answer; try again shortly.",
    })
}

pub fn home(policy: &Policy, viewer: &Viewer) -> String {
    let projects = policy
        .projects()
        .iter()
        .map(|p| p.name.as_str())
        .filter(|name| viewer.sees(name))
        .collect();
    render(&HomePage {
        viewer: &viewer.name,
        projects,
    })
}

fn who(requester: Option<&Requester>) -> String {
    match requester {
        Some(Requester::Key { index }) => format!("key {index}"),
        Some(Requester::Token { issuer, subject }) => format!("{subject} ({issuer})"),
        None => String::new(),
    }
}

/// An image id or reference, short enough for a table.
fn short(image: Option<&str>) -> String {
    let Some(image) = image else {
        return String::new();
    };
    match image.rsplit_once("sha256:") {
        Some((head, hex)) => format!("{head}sha256:{}", &hex[..hex.len().min(12)]),
        None => image.to_owned(),
    }
}

fn rollback_of(job: &JobRecord) -> String {
    if let Some(restored) = &job.restored {
        return format!(
            "restored release {} ({})",
            restored.job,
            short(Some(&restored.image))
        );
    }
    match job.rollback() {
        Some(r) => format!(
            "rolled back to {}: {}",
            short(Some(&r.to_image)),
            r.state.as_str()
        ),
        None => String::new(),
    }
}

pub fn row(job: &JobRecord) -> JobRow {
    JobRow {
        id: job.id.to_string(),
        service: job.service().to_owned(),
        state: job.state.as_str(),
        created: rfc3339(job.created_at_ms),
        duration: job
            .started_at_ms
            .zip(job.finished_at_ms)
            .map(|(start, end)| format!("{:.1} s", end.saturating_sub(start) as f64 / 1000.0))
            .unwrap_or_default(),
        who: who(job.requested_by.as_ref()),
        before: short(job.previous_image.as_deref()),
        after: short(job.running_image.as_deref()),
        rollback: rollback_of(job),
    }
}

fn release_row(r: &Release) -> ReleaseRow {
    ReleaseRow {
        job: r.job.to_string(),
        image: short(Some(&r.image)),
        digest: r.digest.clone().unwrap_or_default(),
        at: rfc3339(r.at_ms),
        who: who(r.requested_by.as_ref()),
    }
}

/// The key a job's service's releases are kept under.
fn service_key(job: &JobRecord) -> String {
    match &job.target {
        JobTarget::Compose(c) => compose_key(&c.compose_project, &c.service),
        JobTarget::Swarm(s) => swarm_key(&s.name),
    }
}

async fn services(
    gateway: &Gateway,
    project: &str,
    jobs: &[JobRecord],
) -> Result<Vec<ServiceView>, StoreError> {
    let mut keys: Vec<String> = jobs.iter().map(service_key).collect();
    keys.sort();
    keys.dedup();
    let mut services = Vec::new();
    for key in keys {
        let releases = gateway
            .jobs()
            .store()
            .releases(Some(project), &key, HISTORY)
            .await?;
        let mut history: Vec<ReleaseRow> = releases.iter().map(release_row).collect();
        let current = (!history.is_empty()).then(|| history.remove(0));
        services.push(ServiceView {
            name: key,
            current,
            history,
        });
    }
    Ok(services)
}

pub async fn project(gateway: &Gateway, project: &str) -> Result<String, StoreError> {
    let jobs = gateway.jobs().list(project, RECENT_JOBS, None).await?;
    Ok(project_of(
        project,
        &jobs,
        services(gateway, project, &jobs).await?,
    ))
}

/// A project page from its recent jobs; apart from the store, for the
/// benchmark.
fn project_of(project: &str, jobs: &[JobRecord], services: Vec<ServiceView>) -> String {
    render(&ProjectPage {
        project,
        services,
        rows: jobs.iter().map(row).collect(),
        chart: chart::outcomes(jobs),
    })
}

/// A project page of `jobs`, without releases: what the benchmark renders.
pub fn project_from_jobs(project: &str, jobs: &[JobRecord]) -> String {
    project_of(project, jobs, Vec::new())
}

pub async fn job_rows(gateway: &Gateway, project: &str) -> Result<String, StoreError> {
    let jobs = gateway.jobs().list(project, RECENT_JOBS, None).await?;
    Ok(render(&Rows {
        rows: jobs.iter().map(row).collect(),
    }))
}

pub fn job(job: &JobRecord) -> String {
    render(&JobPage {
        row: row(job),
        project: job.project.clone(),
        error: job.error.clone().unwrap_or_default(),
        steps: job
            .steps
            .iter()
            .map(|s| {
                let exit = s.exit_code.map_or("killed".into(), |c| format!("exit {c}"));
                format!("{} ({exit}, {} ms)", s.argv.join(" "), s.duration_ms)
            })
            .collect(),
    })
}

impl JobRow {
    /// Whether the job may still change.
    pub fn live(&self) -> bool {
        !JobState::parse(self.state).is_some_and(JobState::is_final)
    }
}
