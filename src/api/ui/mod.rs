//! The read-only web page at `/ui`: server-rendered HTML, a stylesheet and
//! a small script of its own, all served from the binary.
//!
//! Rules:
//! - nothing but the sign-in form is shown without a session; a session is
//!   a signed cookie (`crate::sessions`), never a token in a URL;
//! - sign-in and sign-out are `POST`s whose `Origin` is this gateway's;
//!   failed sign-ins are throttled per address in a bucket of their own;
//! - a page, fragment or output of a project outside the viewer's globs is
//!   404, as one that does not exist;
//! - every answer carries the Content-Security-Policy below, so the page
//!   loads nothing from elsewhere and runs no inline script;
//! - nothing here changes a job or a service.

mod chart;
mod pages;

use std::sync::Arc;
use std::time::Duration;

use poem::http::{StatusCode, header};
use poem::web::{Data, Path};
use poem::{EndpointExt, IntoEndpoint, Request, Response, Route, get, handler, post};

use crate::auth::throttle::Throttle;
use crate::gateway::Gateway;
use crate::names::JobId;
use crate::policy::{Policy, Viewer};
use crate::sessions::LIFETIME_SECS;

/// The session cookie's name.
const COOKIE: &str = "dh_ui";
/// The sign-in form's largest body.
const MAX_FORM_BYTES: usize = 4096;
/// Jobs a project page lists and charts.
pub const RECENT_JOBS: usize = 100;

pub const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'";
const CSS: &str = include_str!("ui.css");
const SCRIPT: &str = include_str!("ui.js");
/// The page's icon, so a browser asks nothing of another path.
const ICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#146c2e\"/></svg>";

/// The stylesheet and the script, as served.
pub fn assets() -> (&'static str, &'static str) {
    (CSS, SCRIPT)
}

/// A project page listing `jobs` (newest first), without releases: what
/// the benchmark measures.
pub fn render_project(project: &str, jobs: &[crate::record::JobRecord]) -> String {
    pages::project_from_jobs(project, jobs)
}

/// Failed sign-ins, apart from the API's failed authentications.
#[derive(Default)]
struct SignIns(Throttle);

/// The routes under `/ui`.
pub fn routes() -> impl poem::Endpoint + 'static {
    Route::new()
        .at("/", get(home))
        .at("/sign-in", post(sign_in))
        .at("/sign-out", post(sign_out))
        .at("/assets/ui.css", get(css))
        .at("/assets/ui.js", get(script))
        .at("/assets/icon.svg", get(icon))
        .at("/p/:project", get(project_page))
        .at("/p/:project/jobs", get(project_jobs))
        .at("/jobs/:id", get(job_page))
        .at("/jobs/:id/output", get(job_output))
        .data(Arc::new(SignIns::default()))
        .into_endpoint()
}

/// An answer with the page's headers.
fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        // Not `no-referrer`: under it a browser sends `Origin: null` with a
        // form, and the sign-in could not tell its own page from another.
        .header(header::REFERRER_POLICY, "same-origin")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
}

fn html(status: StatusCode, body: String) -> Response {
    answer(status, "text/html; charset=utf-8", body)
}

fn not_found() -> Response {
    html(StatusCode::NOT_FOUND, pages::not_found())
}

fn see_other(to: &str) -> Response {
    let mut response = answer(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        String::new(),
    );
    if let Ok(value) = header::HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The viewer whose session the request's cookie carries, by the policy in
/// force and the gateway's clock.
fn viewer_of(gateway: &Gateway, policy: &Policy, request: &Request) -> Option<Viewer> {
    let cookies = request.headers().get_all(header::COOKIE);
    let value = cookies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))?;
    let name = gateway
        .sessions()
        .viewer(value, gateway.clock().unix_secs())?;
    policy.server.ui.viewer(name).cloned()
}

/// Whether a `POST` comes from a page of this gateway: its `Origin` names
/// the host it was sent to, or the policy's `public_url`.
fn same_origin(policy: &Policy, request: &Request) -> bool {
    let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if policy.server.public_url.as_deref().is_some_and(|url| {
        url.strip_prefix(origin)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }) {
        return true;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    host.is_some_and(|h| origin_host == Some(h))
}

fn session_cookie(policy: &Policy, value: &str, max_age: u64) -> String {
    let secure = if policy.server.ui.insecure_cookies {
        ""
    } else {
        "; Secure"
    };
    format!("{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

#[handler]
fn css() -> Response {
    answer(StatusCode::OK, "text/css; charset=utf-8", CSS.to_owned())
}

#[handler]
fn icon() -> Response {
    answer(StatusCode::OK, "image/svg+xml", ICON.to_owned())
}

#[handler]
fn script() -> Response {
    answer(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        SCRIPT.to_owned(),
    )
}

/// `/ui`: the viewer's projects, or the sign-in form.
#[handler]
fn home(gateway: Data<&Arc<Gateway>>, request: &Request) -> Response {
    let policy = gateway.policy();
    match viewer_of(&gateway, &policy, request) {
        Some(viewer) => html(StatusCode::OK, pages::home(&policy, &viewer)),
        None => html(StatusCode::OK, pages::sign_in(None)),
    }
}

/// The sign-in form's fields.
#[derive(serde::Deserialize)]
struct SignInForm {
    token: String,
}

/// `POST /ui/sign-in`: a token from the form, never from the URL.
#[handler]
async fn sign_in(
    gateway: Data<&Arc<Gateway>>,
    sign_ins: Data<&Arc<SignIns>>,
    request: &Request,
    body: poem::Body,
) -> Response {
    let policy = gateway.policy();
    if !same_origin(&policy, request) {
        return html(
            StatusCode::FORBIDDEN,
            pages::sign_in(Some(pages::CROSS_ORIGIN)),
        );
    }
    let client = super::client_of(&policy, request);
    let now = gateway.clock().now();
    let window = Duration::from_secs(policy.server.auth_failure_window_secs);
    if let Err(wait) = sign_ins
        .0
        .0
        .check(client, now, policy.server.auth_failure_limit, window)
    {
        let mut response = html(
            StatusCode::TOO_MANY_REQUESTS,
            pages::sign_in(Some(pages::THROTTLED)),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, (wait.as_secs() + 1).into());
        return response;
    }
    let form = body
        .into_bytes_limit(MAX_FORM_BYTES)
        .await
        .ok()
        .and_then(|bytes| serde_urlencoded::from_bytes::<SignInForm>(&bytes).ok());
    let viewer = form.and_then(|f| policy.server.ui.viewer_by_token(&f.token).cloned());
    let Some(viewer) = viewer else {
        sign_ins.0.0.record_failure(client, now, window);
        tracing::warn!(target: "audit", %client, "web page sign-in refused");
        return html(
            StatusCode::UNAUTHORIZED,
            pages::sign_in(Some(pages::WRONG_TOKEN)),
        );
    };
    tracing::info!(target: "audit", %client, viewer = %viewer.name, "web page sign-in");
    let value = gateway
        .sessions()
        .issue(&viewer.name, gateway.clock().unix_secs());
    let mut response = see_other("/ui/");
    if let Ok(cookie) =
        header::HeaderValue::from_str(&session_cookie(&policy, &value, LIFETIME_SECS))
    {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /ui/sign-out`: every session issued so far ends.
#[handler]
fn sign_out(gateway: Data<&Arc<Gateway>>, request: &Request) -> Response {
    let policy = gateway.policy();
    if !same_origin(&policy, request) {
        return html(
            StatusCode::FORBIDDEN,
            pages::sign_in(Some(pages::CROSS_ORIGIN)),
        );
    }
    if viewer_of(&gateway, &policy, request).is_some() {
        if let Err(e) = gateway.sessions().end_all() {
            tracing::error!(error = %e, "could not end the web page's sessions");
        }
    }
    let mut response = see_other("/ui/");
    if let Ok(cookie) = header::HeaderValue::from_str(&session_cookie(&policy, "", 0)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Why a page is not shown.
enum Withheld {
    /// No session: the sign-in form.
    NoSession,
    /// Not there, or not the viewer's to see.
    NotFound,
    /// The store does not answer.
    Unavailable,
}

impl Withheld {
    fn answer(self) -> Response {
        match self {
            Withheld::NoSession => see_other("/ui/"),
            Withheld::NotFound => not_found(),
            Withheld::Unavailable => html(StatusCode::SERVICE_UNAVAILABLE, pages::unavailable()),
        }
    }
}

/// The viewer, when signed in and allowed to see `project`.
fn seeing(gateway: &Gateway, request: &Request, project: &str) -> Result<Viewer, Withheld> {
    let policy = gateway.policy();
    let viewer = viewer_of(gateway, &policy, request).ok_or(Withheld::NoSession)?;
    if policy.project(project).is_some() && viewer.sees(project) {
        Ok(viewer)
    } else {
        Err(Withheld::NotFound)
    }
}

/// `/ui/p/{project}`: each service's releases, recent jobs and the chart.
#[handler]
async fn project_page(
    gateway: Data<&Arc<Gateway>>,
    request: &Request,
    Path(project): Path<String>,
) -> Response {
    project_view(&gateway, request, &project, false).await
}

/// `/ui/p/{project}/jobs`: the recent jobs' rows, which the page's script
/// fetches again while it is open.
#[handler]
async fn project_jobs(
    gateway: Data<&Arc<Gateway>>,
    request: &Request,
    Path(project): Path<String>,
) -> Response {
    project_view(&gateway, request, &project, true).await
}

/// A project's page, or only its recent jobs' rows.
async fn project_view(gateway: &Gateway, request: &Request, project: &str, rows: bool) -> Response {
    if let Err(withheld) = seeing(gateway, request, project) {
        return withheld.answer();
    }
    let written = match rows {
        true => pages::job_rows(gateway, project).await,
        false => pages::project(gateway, project).await,
    };
    match written {
        Ok(page) => html(StatusCode::OK, page),
        Err(e) => unavailable(&e).answer(),
    }
}

fn unavailable(e: &crate::store::StoreError) -> Withheld {
    tracing::error!(error = %e, "the web page could not read the store");
    Withheld::Unavailable
}

/// The job `id`, when the viewer may see its project.
async fn visible_job(
    gateway: &Gateway,
    request: &Request,
    id: &str,
) -> Result<crate::record::JobRecord, Withheld> {
    let policy = gateway.policy();
    let viewer = viewer_of(gateway, &policy, request).ok_or(Withheld::NoSession)?;
    let id = JobId::parse(id).ok_or(Withheld::NotFound)?;
    let job = gateway
        .jobs()
        .get(id)
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or(Withheld::NotFound)?;
    if viewer.sees(&job.project) && policy.project(&job.project).is_some() {
        Ok(job)
    } else {
        Err(Withheld::NotFound)
    }
}

/// `/ui/jobs/{id}`: one job, at a permanent link.
#[handler]
async fn job_page(
    gateway: Data<&Arc<Gateway>>,
    request: &Request,
    Path(id): Path<String>,
) -> Response {
    job_view(&gateway, request, &id, false).await
}

/// `/ui/jobs/{id}/output`: the tail of the job's output, as text.
#[handler]
async fn job_output(
    gateway: Data<&Arc<Gateway>>,
    request: &Request,
    Path(id): Path<String>,
) -> Response {
    job_view(&gateway, request, &id, true).await
}

/// A job's page, or only its output.
async fn job_view(gateway: &Gateway, request: &Request, id: &str, output: bool) -> Response {
    match visible_job(gateway, request, id).await {
        Ok(job) if output => answer(StatusCode::OK, "text/plain; charset=utf-8", job.output),
        Ok(job) => html(StatusCode::OK, pages::job(&job)),
        Err(withheld) => withheld.answer(),
    }
}
