//! The web page in-process: sign-in and its throttle, sessions and their
//! end, and what a viewer may see.

use std::time::Duration;

use poem::test::TestResponse;

use crate::support::{ALICE, BILLING, BOB, Harness, status_json, ui_server};

const ORIGIN: &str = "http://127.0.0.1:8000";
const HOST: &str = "127.0.0.1:8000";
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'";

async fn sign_in_with(h: &Harness, body: &str, origin: Option<&str>) -> TestResponse {
    let mut request = h
        .client
        .post("/ui/sign-in")
        .header("Host", HOST)
        .content_type("application/x-www-form-urlencoded");
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    request.body(body.to_owned()).send().await
}

fn header(response: &TestResponse, name: &str) -> String {
    response
        .0
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Signs in with `token`; the session cookie, `dh_ui=…`.
async fn session(h: &Harness, token: &str) -> String {
    let response = sign_in_with(h, &format!("token={token}"), Some(ORIGIN)).await;
    assert_eq!(response.0.status().as_u16(), 303);
    let cookie = header(&response, "set-cookie");
    cookie.split(';').next().unwrap().to_owned()
}

async fn get(h: &Harness, path: &str, cookie: &str) -> (u16, String, TestResponse) {
    let response = h
        .client
        .get(path)
        .header("Host", HOST)
        .header("Cookie", cookie)
        .send()
        .await;
    let status = response.0.status().as_u16();
    let csp = header(&response, "content-security-policy");
    (status, csp, response)
}

async fn status_of(h: &Harness, path: &str, cookie: &str) -> u16 {
    get(h, path, cookie).await.0
}

#[tokio::test]
async fn a_viewer_signs_in_and_sees_its_projects_only() {
    let h = Harness::with_server(&ui_server(false)).await;
    let (status, csp, response) = get(&h, "/ui", "").await;
    assert_eq!((status, csp.as_str()), (200, CSP));
    let form = response.0.into_body().into_string().await.unwrap();
    assert!(form.contains("<label for=\"token\">"), "{form}");
    let response = sign_in_with(&h, &format!("token={ALICE}"), Some(ORIGIN)).await;
    assert_eq!(header(&response, "location"), "/ui/");
    let cookie = header(&response, "set-cookie");
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/ui",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(ALICE), "the token is not the session");
    let alice = cookie.split(';').next().unwrap().to_owned();
    let bob = session(&h, BOB).await;

    let (_, job) = status_json(h.deploy("/pull?wait=10", "billing-web", BILLING).await).await;
    let id = job["id"].as_str().unwrap();
    let (status, csp, response) = get(&h, "/ui/p/billing", &alice).await;
    assert_eq!((status, csp.as_str()), (200, CSP));
    let page = response.0.into_body().into_string().await.unwrap();
    for part in [id, "succeeded", "<svg", "billing/web", "/ui/assets/ui.js"] {
        assert!(page.contains(part), "{part} in {page}");
    }
    let pages = [
        "/ui/p/billing".to_owned(),
        "/ui/p/billing/jobs".to_owned(),
        format!("/ui/jobs/{id}"),
        format!("/ui/jobs/{id}/output"),
    ];
    for path in &pages {
        assert_eq!(status_of(&h, path, &alice).await, 200, "{path}");
        assert_eq!(status_of(&h, path, &bob).await, 404, "bob on {path}");
        assert_eq!(status_of(&h, path, "").await, 303, "no session on {path}");
    }
    assert_eq!(status_of(&h, "/ui/p/nowhere", &alice).await, 404);
    assert_eq!(status_of(&h, "/ui/p/shop", &bob).await, 200);
    let (_, _, home) = get(&h, "/ui/", &bob).await;
    let home = home.0.into_body().into_string().await.unwrap();
    assert!(
        home.contains("/ui/p/shop") && !home.contains("/ui/p/billing"),
        "{home}"
    );
}

#[tokio::test]
async fn sign_in_takes_a_form_from_this_origin_and_throttles_failures() {
    let h = Harness::with_server(&ui_server(true)).await;
    let good = format!("token={ALICE}");
    for origin in [None, Some("https://evil.example")] {
        let response = sign_in_with(&h, &good, origin).await;
        assert_eq!(response.0.status().as_u16(), 403, "{origin:?}");
        assert!(header(&response, "set-cookie").is_empty());
    }
    // A token in the URL signs nobody in.
    let (status, _, response) = get(&h, &format!("/ui/?token={ALICE}"), "").await;
    assert_eq!(status, 200);
    assert!(header(&response, "set-cookie").is_empty());
    let cookie = header(&sign_in_with(&h, &good, Some(ORIGIN)).await, "set-cookie");
    assert!(
        !cookie.contains("Secure"),
        "insecure_cookies on loopback: {cookie}"
    );
    for _ in 0..3 {
        let response = sign_in_with(&h, "token=not-a-viewer-token", Some(ORIGIN)).await;
        assert_eq!(response.0.status().as_u16(), 401);
    }
    let response = sign_in_with(&h, &good, Some(ORIGIN)).await;
    assert_eq!(
        response.0.status().as_u16(),
        429,
        "throttled, even the right token"
    );
    assert!(!header(&response, "retry-after").is_empty());
    // The API's own bucket is untouched.
    let (status, _) = status_json(h.deploy("/pull", "billing-web", BILLING).await).await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn sessions_end_at_sign_out_at_a_reload_and_after_twelve_hours() {
    let h = Harness::with_server(&ui_server(false)).await;
    let first = session(&h, ALICE).await;
    assert_eq!(status_of(&h, "/ui/p/billing", &first).await, 200);
    let out = h
        .client
        .post("/ui/sign-out")
        .header("Host", HOST)
        .header("Origin", ORIGIN)
        .header("Cookie", &first)
        .send()
        .await;
    assert_eq!(out.0.status().as_u16(), 303);
    assert!(header(&out, "set-cookie").contains("Max-Age=0"));
    assert_eq!(
        status_of(&h, "/ui/p/billing", &first).await,
        303,
        "the old cookie sent again"
    );

    let second = session(&h, ALICE).await;
    h.reload_with_tail("");
    assert_eq!(status_of(&h, "/ui/p/billing", &second).await, 303);

    let third = session(&h, ALICE).await;
    h.clock.advance(Duration::from_secs(12 * 3600 - 1));
    assert_eq!(status_of(&h, "/ui/p/billing", &third).await, 200);
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(status_of(&h, "/ui/p/billing", &third).await, 303);
}

#[tokio::test]
async fn without_enabled_there_is_no_page() {
    let h = Harness::new().await;
    let response = h.client.get("/ui").send().await;
    assert_eq!(response.0.status().as_u16(), 404);
}
