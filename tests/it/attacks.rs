//! The attack suite: hostile requests across headers, timestamps,
//! signatures, bodies, names, methods and paths. Each asserts the exact
//! status and error code, that the engine was not asked anything, that no
//! command ran, and that the answer holds no secret, signature or MAC.

use std::sync::atomic::Ordering;

use poem::http::{HeaderValue, Method};

use crate::support::*;

const TOLERANCE: u64 = 300;

/// One hostile request and what it must get.
struct Attack {
    name: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, HeaderValue)>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap()
}

/// Headers of a correctly signed JSON POST of `body` for `secret`.
fn signed(body: &[u8], secret: &str, ts: u64) -> Vec<(&'static str, HeaderValue)> {
    let ts = ts.to_string();
    vec![
        ("content-type", value("application/json")),
        ("x-timestamp", value(&ts)),
        ("x-signature", value(&sign(secret, body, &ts))),
    ]
}

/// The same, as the named project.
fn signed_as(body: &[u8], secret: &str, project: &str) -> Vec<(&'static str, HeaderValue)> {
    let mut h = signed(body, secret, now());
    h.push(("x-project", value(project)));
    h
}

fn with(
    mut headers: Vec<(&'static str, HeaderValue)>,
    name: &'static str,
    v: HeaderValue,
) -> Vec<(&'static str, HeaderValue)> {
    headers.retain(|(n, _)| *n != name);
    headers.push((name, v));
    headers
}

fn without(
    mut headers: Vec<(&'static str, HeaderValue)>,
    name: &str,
) -> Vec<(&'static str, HeaderValue)> {
    headers.retain(|(n, _)| *n != name);
    headers
}

fn post(
    name: &'static str,
    headers: Vec<(&'static str, HeaderValue)>,
    body: &[u8],
    status: u16,
    code: &'static str,
) -> Attack {
    Attack {
        name,
        method: Method::POST,
        path: "/pull".into(),
        headers,
        body: body.to_vec(),
        status,
        code,
    }
}

fn attacks() -> Vec<Attack> {
    let body = body_for("billing-web").into_bytes();
    let ok = signed(&body, BILLING, now());
    let ts = now();
    let sig = sign(BILLING, &body, &ts.to_string());
    let stale = |offset: i64| signed(&body, BILLING, (ts as i64 + offset) as u64);
    let mut list = vec![
        // Headers and timestamps.
        post(
            "no headers at all",
            vec![("content-type", value("application/json"))],
            &body,
            401,
            "missing_timestamp",
        ),
        post(
            "no timestamp",
            without(ok.clone(), "x-timestamp"),
            &body,
            401,
            "missing_timestamp",
        ),
        post(
            "empty timestamp",
            with(ok.clone(), "x-timestamp", value("")),
            &body,
            401,
            "invalid_timestamp",
        ),
        post(
            "negative timestamp",
            with(ok.clone(), "x-timestamp", value("-5")),
            &body,
            401,
            "invalid_timestamp",
        ),
        post(
            "float timestamp",
            with(ok.clone(), "x-timestamp", value("1.7e9")),
            &body,
            401,
            "invalid_timestamp",
        ),
        post(
            "padded timestamp",
            with(ok.clone(), "x-timestamp", value(&format!(" {ts}"))),
            &body,
            401,
            "invalid_timestamp",
        ),
        post(
            // With leading zeros, digits could move between a GET's query
            // and its timestamp under the same MAC.
            "leading-zero timestamp",
            with(ok.clone(), "x-timestamp", value(&format!("0{ts}"))),
            &body,
            401,
            "invalid_timestamp",
        ),
        post(
            "hex timestamp",
            with(ok.clone(), "x-timestamp", value("0x6565")),
            &body,
            401,
            "invalid_timestamp",
        ),
        post(
            "overflowing timestamp",
            with(ok.clone(), "x-timestamp", value("184467440737095516160")),
            &body,
            401,
            "invalid_timestamp",
        ),
        post(
            "non-ASCII timestamp",
            with(
                ok.clone(),
                "x-timestamp",
                HeaderValue::from_bytes(b"17\xe900").unwrap(),
            ),
            &body,
            401,
            "invalid_timestamp",
        ),
        post(
            "timestamp a day ahead",
            stale(86_400),
            &body,
            401,
            "timestamp_out_of_window",
        ),
        post(
            "timestamp a day old",
            stale(-86_400),
            &body,
            401,
            "timestamp_out_of_window",
        ),
        post(
            "timestamp just past the window",
            stale(-(TOLERANCE as i64) - 5),
            &body,
            401,
            "timestamp_out_of_window",
        ),
        post(
            "timestamp just ahead of the window",
            stale(TOLERANCE as i64 + 5),
            &body,
            401,
            "timestamp_out_of_window",
        ),
        post(
            "timestamp zero",
            with(ok.clone(), "x-timestamp", value("0")),
            &body,
            401,
            "timestamp_out_of_window",
        ),
        // Signatures.
        post(
            "no signature",
            without(ok.clone(), "x-signature"),
            &body,
            401,
            "missing_signature",
        ),
        post(
            "empty signature",
            with(ok.clone(), "x-signature", value("")),
            &body,
            401,
            "invalid_signature",
        ),
        post(
            "63 hex digits",
            with(ok.clone(), "x-signature", value(&sig[1..])),
            &body,
            401,
            "invalid_signature",
        ),
        post(
            "65 hex digits",
            with(ok.clone(), "x-signature", value(&format!("{sig}0"))),
            &body,
            401,
            "invalid_signature",
        ),
        post(
            "non-hex digits",
            with(ok.clone(), "x-signature", value(&"zz".repeat(32))),
            &body,
            401,
            "invalid_signature",
        ),
        post(
            "sha1= prefix",
            with(ok.clone(), "x-signature", value(&format!("sha1={sig}"))),
            &body,
            401,
            "invalid_signature",
        ),
        post(
            "bare sha256= prefix",
            with(ok.clone(), "x-signature", value("sha256=")),
            &body,
            401,
            "invalid_signature",
        ),
        post(
            "base64 signature",
            with(
                ok.clone(),
                "x-signature",
                value("RzxU3nQ1Bp5TkP2j8gR0dGhsb3R6cXh5enh5enh5eno="),
            ),
            &body,
            401,
            "invalid_signature",
        ),
        post(
            "non-ASCII signature",
            with(
                ok.clone(),
                "x-signature",
                HeaderValue::from_bytes(&[0xe9; 64]).unwrap(),
            ),
            &body,
            401,
            "invalid_signature",
        ),
        post(
            "all-zero MAC",
            with(ok.clone(), "x-signature", value(&"0".repeat(64))),
            &body,
            401,
            "signature_mismatch",
        ),
        post(
            "MAC of another body",
            signed(body_for("billing-worker").as_bytes(), BILLING, ts),
            &body,
            401,
            "signature_mismatch",
        ),
        post(
            "MAC with another secret",
            signed(&body, "not-the-secret-0123456789", ts),
            &body,
            401,
            "signature_mismatch",
        ),
        post(
            "MAC without the timestamp",
            with(ok.clone(), "x-signature", value(&sign(BILLING, &body, ""))),
            &body,
            401,
            "signature_mismatch",
        ),
        post(
            "MAC of timestamp then body",
            with(
                ok.clone(),
                "x-signature",
                value(&hex::encode(
                    delivery_hook::auth::signature::SigningKey::new(BILLING.as_bytes()).sign(
                        ts.to_string().as_bytes(),
                        &String::from_utf8(body.clone()).unwrap(),
                    ),
                )),
            ),
            &body,
            401,
            "signature_mismatch",
        ),
        post(
            "MAC for another timestamp",
            with(ok.clone(), "x-timestamp", value(&(ts - 1).to_string())),
            &body,
            401,
            "signature_mismatch",
        ),
        post(
            "truncated MAC padded",
            with(
                ok.clone(),
                "x-signature",
                value(&format!("{}{}", &sig[..32], "0".repeat(32))),
            ),
            &body,
            401,
            "signature_mismatch",
        ),
        post(
            "another project's key as the victim",
            signed_as(&body, SHOP, "billing"),
            &body,
            401,
            "signature_mismatch",
        ),
        post(
            "another project's key without X-Project",
            signed(&body, SHOP, ts),
            &body,
            401,
            "signature_mismatch",
        ),
        // X-Project.
        post(
            "unknown project",
            with(ok.clone(), "x-project", value("nosuch")),
            &body,
            401,
            "signature_mismatch",
        ),
        post(
            "path in X-Project",
            with(ok.clone(), "x-project", value("../billing")),
            &body,
            401,
            "invalid_project",
        ),
        post(
            "long X-Project",
            with(ok.clone(), "x-project", value(&"p".repeat(200))),
            &body,
            401,
            "invalid_project",
        ),
        post(
            "empty X-Project",
            with(ok.clone(), "x-project", value("")),
            &body,
            401,
            "invalid_project",
        ),
        // Content types and sizes.
        post(
            "text/plain body",
            with(ok.clone(), "content-type", value("text/plain")),
            &body,
            415,
            "unsupported_media_type",
        ),
        post(
            "form body",
            with(
                ok.clone(),
                "content-type",
                value("application/x-www-form-urlencoded"),
            ),
            &body,
            415,
            "unsupported_media_type",
        ),
        post(
            "multipart body",
            with(
                ok.clone(),
                "content-type",
                value("multipart/form-data; boundary=x"),
            ),
            &body,
            415,
            "unsupported_media_type",
        ),
        post(
            "no content type",
            without(ok.clone(), "content-type"),
            &body,
            415,
            "unsupported_media_type",
        ),
        post(
            "body over the limit",
            signed(&[b' '; 2048], BILLING, ts),
            &[b' '; 2048],
            413,
            "body_too_large",
        ),
        post(
            "declared length over the limit",
            with(ok.clone(), "content-length", value("1000000")),
            &body,
            413,
            "body_too_large",
        ),
    ];
    // Bodies, validly signed as billing, so that only their content is wrong.
    let bodies: [(&'static str, Vec<u8>, &'static str); 15] = [
        (
            "not JSON",
            b"container_name=billing-web".to_vec(),
            "invalid_json",
        ),
        ("empty body", Vec::new(), "invalid_json"),
        ("JSON array", b"[\"billing-web\"]".to_vec(), "invalid_body"),
        (
            "missing field",
            b"{\"container\": \"billing-web\"}".to_vec(),
            "invalid_body",
        ),
        (
            "number name",
            b"{\"container_name\": 7}".to_vec(),
            "invalid_body",
        ),
        (
            "null name",
            b"{\"container_name\": null}".to_vec(),
            "invalid_body",
        ),
        (
            "object name",
            b"{\"container_name\": {\"$ne\": 1}}".to_vec(),
            "invalid_body",
        ),
        (
            "duplicate keys",
            b"{\"container_name\": \"billing-web\", \"container_name\": \"-f\"}".to_vec(),
            "invalid_body",
        ),
        (
            "trailing garbage",
            b"{\"container_name\": \"billing-web\"} x".to_vec(),
            "invalid_json",
        ),
        (
            "deep nesting",
            [
                b"{\"container_name\": ".to_vec(),
                b"[".repeat(400),
                b"]".repeat(400),
                b"}".to_vec(),
            ]
            .concat(),
            "invalid_body",
        ),
        (
            "array for an object",
            b"[[[[[[[[\"billing-web\"]]]]]]]]".to_vec(),
            "invalid_body",
        ),
        (
            "UTF-16 body",
            "{\"container_name\": \"billing-web\"}"
                .encode_utf16()
                .flat_map(|u| u.to_le_bytes())
                .collect(),
            "invalid_json",
        ),
        (
            "byte order mark",
            [b"\xef\xbb\xbf".to_vec(), body.clone()].concat(),
            "invalid_json",
        ),
        (
            "invalid UTF-8",
            b"{\"container_name\": \"billing-\xff\"}".to_vec(),
            "invalid_json",
        ),
        (
            "lone surrogate",
            b"{\"container_name\": \"billing-\\ud800\"}".to_vec(),
            "invalid_json",
        ),
    ];
    for (name, bytes, code) in bodies {
        list.push(post(
            name,
            signed_as(&bytes, BILLING, "billing"),
            &bytes,
            400,
            code,
        ));
    }
    // Names that must never reach the engine or a command line.
    let names: [(&'static str, &str); 14] = [
        ("option-like name", "-f"),
        ("double-dash name", "--rm"),
        ("command separator", "a;id"),
        ("command substitution", "$(id)"),
        ("backticks", "a`id`"),
        ("parent path", "../x"),
        ("path inside a name", "billing-web/../x"),
        ("300 characters", &"a".repeat(300)),
        ("NUL", "billing\u{0}web"),
        ("newline", "billing\nweb"),
        ("non-ASCII", "billing-w\u{e9}b"),
        ("empty name", ""),
        ("leading space", " billing-web"),
        ("leading slash", "/billing-web"),
    ];
    for (name, container) in names {
        let bytes =
            serde_json::to_vec(&serde_json::json!({ "container_name": container })).unwrap();
        list.push(post(
            name,
            signed_as(&bytes, BILLING, "billing"),
            &bytes,
            400,
            "invalid_container_name",
        ));
    }
    // Methods and paths.
    let routes: [(&'static str, Method, &str, u16, &'static str); 10] = [
        (
            "GET on a deploy",
            Method::GET,
            "/pull",
            405,
            "method_not_allowed",
        ),
        (
            "PUT on a deploy",
            Method::PUT,
            "/build",
            405,
            "method_not_allowed",
        ),
        (
            "DELETE on a job",
            Method::DELETE,
            "/jobs/00",
            405,
            "method_not_allowed",
        ),
        ("upper-case path", Method::POST, "/PULL", 404, "not_found"),
        (
            "dot-dot path",
            Method::POST,
            "/pull/../build",
            404,
            "not_found",
        ),
        (
            "encoded NUL path",
            Method::POST,
            "/pull%00",
            404,
            "not_found",
        ),
        ("unknown action", Method::POST, "/rm", 404, "not_found"),
        (
            "traversal to a file",
            Method::GET,
            "/jobs/../../etc/passwd",
            404,
            "not_found",
        ),
        ("TRACE", Method::TRACE, "/pull", 405, "method_not_allowed"),
        (
            "wait not a number",
            Method::POST,
            "/pull?wait=-1",
            400,
            "invalid_wait",
        ),
    ];
    for (name, method, path, status, code) in routes {
        list.push(Attack {
            name,
            method,
            path: path.into(),
            headers: ok.clone(),
            body: body.clone(),
            status,
            code,
        });
    }
    list.push(Attack {
        name: "wait beyond max_wait_secs",
        path: "/pull?wait=99999999".into(),
        ..post("", ok.clone(), &body, 400, "invalid_wait")
    });
    list.push(Attack {
        name: "job id with traversal, signed",
        method: Method::GET,
        path: "/jobs/..%2f..%2fetc".into(),
        headers: {
            let target = "/jobs/..%2f..%2fetc";
            let ts = now().to_string();
            vec![
                ("x-timestamp", value(&ts)),
                ("x-signature", value(&sign(BILLING, target.as_bytes(), &ts))),
                ("x-project", value("billing")),
            ]
        },
        body: Vec::new(),
        status: 400,
        code: "invalid_parameter",
    });
    list
}

#[tokio::test]
async fn every_hostile_request_is_refused_and_runs_nothing() {
    let h = Harness::with_server("auth_failure_limit = 1000000").await;
    let cases = attacks();
    // The README counts them.
    assert_eq!(cases.len(), 84, "the suite has {} cases", cases.len());
    eprintln!("attack suite: {} hostile requests", cases.len());
    let mut names = std::collections::HashSet::new();
    for case in cases {
        assert!(names.insert(case.name), "duplicate case name {}", case.name);
        let mut request = h.client.request(case.method.clone(), &case.path);
        for (name, v) in &case.headers {
            request = request.header(*name, v.clone());
        }
        let sent_signature = case
            .headers
            .iter()
            .find(|(n, _)| *n == "x-signature")
            .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).to_string());
        let response = request.body(case.body.clone()).send().await;
        let (status, answer) = status_json(response).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (case.status, Some(case.code)),
            "{}: {answer}",
            case.name
        );
        let text = answer.to_string();
        for secret in [BILLING, BILLING_NEXT, SHOP] {
            assert!(!text.contains(secret), "{}: a secret leaked", case.name);
        }
        if let Some(signature) = sent_signature.filter(|s| s.len() >= 16) {
            assert!(
                !text.contains(&signature),
                "{}: the signature was echoed",
                case.name
            );
        }
        let ts = case
            .headers
            .iter()
            .find(|(n, _)| *n == "x-timestamp")
            .map(|(_, v)| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default();
        let true_mac = sign(BILLING, &case.body, &ts);
        assert!(
            !text.contains(&true_mac),
            "{}: the computed MAC leaked",
            case.name
        );
        assert_eq!(
            h.engine.lookups.load(Ordering::SeqCst),
            0,
            "{}: the engine was asked",
            case.name
        );
        assert_eq!(h.engine.command_count(), 0, "{}: a command ran", case.name);
    }
}

#[tokio::test]
async fn unauthenticated_callers_learn_nothing_about_projects_or_containers() {
    let h = Harness::with_server("auth_failure_limit = 1000000").await;
    let ts = now();
    let mut answers = Vec::new();
    // An existing container, an existing but excluded one, an unknown one:
    // without a valid key, all look the same.
    for name in ["billing-web", "billing-db", "billing-nope", "zzz"] {
        let body = body_for(name);
        let response = h
            .post_signed("/pull", &body, "guessed-secret-0123456789", ts, None)
            .await;
        answers.push(status_json(response).await);
    }
    // A real project and an unknown one with a wrong key look the same too.
    for project in ["billing", "shop", "nosuch"] {
        let body = body_for("billing-web");
        let response = h
            .post_signed(
                "/pull",
                &body,
                "guessed-secret-0123456789",
                ts,
                Some(project),
            )
            .await;
        answers.push(status_json(response).await);
    }
    let first = answers[0].clone();
    assert_eq!(first.0, 401);
    for answer in &answers {
        assert_eq!(answer, &first, "every answer identical");
    }
    assert_eq!(h.engine.lookups.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_valid_key_for_a_missing_container_is_404_and_runs_nothing() {
    let h = Harness::new().await;
    let response = h.deploy("/pull", "billing-nope", BILLING).await;
    expect_problem(response, 404, "container_not_found").await;
    assert_eq!(
        h.engine.lookups.load(Ordering::SeqCst),
        1,
        "one lookup, by exact name"
    );
    assert_eq!(h.engine.command_count(), 0);
}
