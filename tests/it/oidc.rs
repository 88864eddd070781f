//! CI tokens (OpenID Connect) in place of secrets, in-process over the
//! fake engine, against a local issuer on 127.0.0.1.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::support::issuer::{Signer, TestIssuer};
use crate::support::{Harness, SHOP, body_for, expect_problem, now, status_json, temp_dir};

const AUD: &str = "https://deploy.test";

/// `billing` (which keeps its secrets) also accepts tokens of `org/web` on
/// main or a release tag.
fn rules(issuer: &str, extra: &str) -> String {
    format!(
        r#"
[[projects.billing.oidc]]
issuer = "{issuer}"
audience = "{AUD}"
claims = {{ repository = "org/web", ref = ["refs/heads/main", "refs/tags/v*"] }}
{extra}
"#
    )
}

async fn harness(issuer: &TestIssuer) -> Harness {
    Harness::with_policy("auth_failure_limit = 1000", &rules(&issuer.url, "")).await
}

async fn post_token(
    h: &Harness,
    path: &str,
    container: &str,
    token: &str,
    project: Option<&str>,
) -> poem::test::TestResponse {
    let mut request = h
        .client
        .post(path)
        .content_type("application/json")
        .header("Authorization", format!("Bearer {token}"));
    if let Some(project) = project {
        request = request.header("X-Project", project);
    }
    request.body(body_for(container)).send().await
}

#[tokio::test]
async fn a_valid_token_deploys_once_and_reads_its_job() {
    let issuer = TestIssuer::start(&[Signer::Rsa1, Signer::Ec]);
    let h = harness(&issuer).await;
    let rs256 = issuer.token(Signer::Rsa1, &issuer.claims(AUD));
    let (status, job) =
        status_json(post_token(&h, "/pull?wait=10", "billing-web", &rs256, None).await).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    assert_eq!(job["project"], "billing");
    assert_eq!(job["replayed"], false);
    let claims = issuer.claims(AUD);
    assert_eq!(
        job["requested_by"],
        json!({"oidc_issuer": claims["iss"], "oidc_subject": claims["sub"]}),
        "the job names the token that asked"
    );
    let ran = h.engine.command_count();
    assert!(ran > 0);

    // The same token again, even for another container, gets its job.
    for container in ["billing-web", "billing-worker"] {
        let (status, again) =
            status_json(post_token(&h, "/pull?wait=10", container, &rs256, None).await).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(
            (&again["id"], &again["replayed"]),
            (&job["id"], &json!(true))
        );
    }
    assert_eq!(h.engine.command_count(), ran, "a replay runs nothing");

    // ES256, and X-Project given.
    let es256 = issuer.token(Signer::Ec, &issuer.claims(AUD));
    let (status, other) = status_json(
        post_token(
            &h,
            "/pull?wait=10",
            "billing-worker",
            &es256,
            Some("billing"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, other["state"].as_str()),
        (200, Some("succeeded")),
        "{other}"
    );
    assert_ne!(other["id"], job["id"]);

    // Reads take the token as often as it is valid, for its project.
    let target = format!("/jobs/{}", job["id"].as_str().unwrap());
    for _ in 0..2 {
        let response = h
            .client
            .get(&target)
            .header("Authorization", format!("Bearer {rs256}"))
            .header("X-Project", "billing")
            .send()
            .await;
        let (status, read) = status_json(response).await;
        assert_eq!((status, &read["id"]), (200, &job["id"]), "{read}");
    }
    let response = h
        .client
        .get(&target)
        .header("Authorization", format!("Bearer {rs256}"))
        .header("X-Project", "shop")
        .send()
        .await;
    expect_problem(response, 403, "token_not_allowed").await;
}

/// A token signed with `HS256`, keyed with the issuer's public key: the
/// confusion attack on verifiers that take the algorithm from the token.
fn hs256_with_public_key(issuer: &TestIssuer, claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = json!({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"});
    let message = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let public = issuer.jwk(Signer::Rsa1).to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(public.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    format!("{message}.{}", b64.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn each_bad_token_gets_its_own_refusal_and_runs_nothing() {
    let issuer = TestIssuer::start(&[Signer::Rsa1]);
    let h = harness(&issuer).await;
    let now = now();
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut claims = issuer.claims(AUD);
        edit(&mut claims);
        claims
    };
    let signed = |edit: &dyn Fn(&mut Value)| issuer.token(Signer::Rsa1, &edited(edit));
    let header = |alg: &str, kid: &str| json!({"alg": alg, "kid": kid, "typ": "JWT"});
    let unsigned = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(header("none", "rsa-1").to_string()),
            b64.encode(issuer.claims(AUD).to_string())
        )
    };
    let cases: Vec<(&str, String, u16, &str, Option<&str>)> = vec![
        (
            "another key's signature under rsa-1's kid",
            issuer.token_with_header(Signer::Rsa2, &header("RS256", "rsa-1"), &issuer.claims(AUD)),
            401,
            "invalid_token",
            Some("signature"),
        ),
        (
            "a kid the issuer does not publish",
            issuer.token_with_header(Signer::Rsa2, &header("RS256", "rsa-2"), &issuer.claims(AUD)),
            401,
            "invalid_token",
            Some("key"),
        ),
        (
            "alg none",
            unsigned,
            401,
            "invalid_token",
            Some("algorithm"),
        ),
        (
            "HS256 keyed with the public key",
            hs256_with_public_key(&issuer, &issuer.claims(AUD)),
            401,
            "invalid_token",
            Some("algorithm"),
        ),
        (
            "an ES256 header on an RSA key",
            issuer.token_with_header(Signer::Rsa1, &header("ES256", "rsa-1"), &issuer.claims(AUD)),
            401,
            "invalid_token",
            Some("algorithm"),
        ),
        (
            "an issuer no rule names",
            signed(&|c| c["iss"] = json!("http://127.0.0.1:9")),
            401,
            "invalid_token",
            Some("issuer"),
        ),
        (
            "another audience",
            signed(&|c| c["aud"] = json!(["https://elsewhere.test"])),
            401,
            "invalid_token",
            Some("audience"),
        ),
        (
            "expired",
            signed(&|c| {
                c["iat"] = json!(now - 400);
                c["exp"] = json!(now - 120);
            }),
            401,
            "invalid_token",
            Some("expired"),
        ),
        (
            "not valid yet",
            signed(&|c| c["nbf"] = json!(now + 300)),
            401,
            "invalid_token",
            Some("not_yet_valid"),
        ),
        (
            "issued in the future",
            signed(&|c| c["iat"] = json!(now + 300)),
            401,
            "invalid_token",
            Some("not_yet_valid"),
        ),
        (
            "issued longer ago than max_token_age_secs",
            signed(&|c| c["iat"] = json!(now - 700)),
            401,
            "invalid_token",
            Some("too_old"),
        ),
        (
            "another repository",
            signed(&|c| c["repository"] = json!("org/other")),
            403,
            "token_not_allowed",
            None,
        ),
        (
            "another branch",
            signed(&|c| c["ref"] = json!("refs/heads/feature")),
            403,
            "token_not_allowed",
            None,
        ),
        (
            "a repository name that only a crossing `*` would match",
            signed(&|c| c["ref"] = json!("refs/tags/v1/../../heads/dev")),
            403,
            "token_not_allowed",
            None,
        ),
        (
            "an exp more than 24 hours ahead",
            signed(&|c| c["exp"] = json!(now + 25 * 3600)),
            401,
            "invalid_token",
            Some("expired"),
        ),
        (
            "an exp past a signed 64-bit integer",
            signed(&|c| c["exp"] = json!(u64::MAX - 1)),
            401,
            "invalid_token",
            Some("expired"),
        ),
        (
            "an exp near 2^63, which would wrap in the store",
            signed(&|c| c["exp"] = json!(i64::MAX as u64 - 10)),
            401,
            "invalid_token",
            Some("expired"),
        ),
        (
            "a negative iat",
            signed(&|c| c["iat"] = json!(-5)),
            401,
            "invalid_token",
            Some("expired"),
        ),
        (
            "longer than 8 KiB",
            signed(&|c| c["padding"] = json!("x".repeat(8192))),
            401,
            "invalid_token",
            Some("size"),
        ),
        (
            "without jti",
            signed(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
            401,
            "invalid_token",
            Some("jti"),
        ),
        (
            "without exp",
            signed(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            401,
            "invalid_token",
            Some("format"),
        ),
        (
            "not a JWT",
            "abc".into(),
            401,
            "invalid_token",
            Some("format"),
        ),
    ];
    for (what, token, status, code, rule) in cases {
        let response = post_token(&h, "/pull", "billing-web", &token, None).await;
        let problem = expect_problem(response, status, code).await;
        assert_eq!(problem["rule"].as_str(), rule, "{what}: {problem}");
        assert!(
            !problem.to_string().contains(&token[..20.min(token.len())]),
            "{what}"
        );
    }
    assert_eq!(h.engine.command_count(), 0, "no refused token ran anything");
    assert_eq!(
        h.engine.lookups.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no refused token reached the engine"
    );

    // Reuse is not a refusal: the first request's job comes back.
    let token = signed(&|_| {});
    let (first, job) =
        status_json(post_token(&h, "/pull", "billing-web", &token, None).await).await;
    let (second, again) =
        status_json(post_token(&h, "/pull", "billing-web", &token, None).await).await;
    assert_eq!(first, 202, "{job}");
    assert!([200, 202].contains(&second), "{again}");
    assert_eq!(
        (&again["id"], &again["replayed"]),
        (&job["id"], &json!(true))
    );
}

/// A token answers the same for a project that does not exist as for one
/// whose rules its claims do not match, whatever else is wrong with it, so
/// no token tells which projects a host has.
#[tokio::test]
async fn refusals_do_not_tell_whether_the_named_project_exists() {
    let issuer = TestIssuer::start(&[Signer::Rsa1]);
    let h = harness(&issuer).await;
    let mut claims = issuer.claims(AUD);
    claims["repository"] = json!("someone/else");
    let other_repo = issuer.token(Signer::Rsa1, &claims);
    claims["aud"] = json!(["https://elsewhere.test"]);
    let other_repo_and_audience = issuer.token(Signer::Rsa1, &claims);
    claims["iat"] = json!(now() - 700);
    let other_everything = issuer.token(Signer::Rsa1, &claims);
    for token in [&other_repo, &other_repo_and_audience, &other_everything] {
        let mut answers = Vec::new();
        for project in ["billing", "no-such-project"] {
            let response = post_token(&h, "/pull", "billing-web", token, Some(project)).await;
            let problem = expect_problem(response, 403, "token_not_allowed").await;
            answers.push(problem);
        }
        assert_eq!(answers[0], answers[1], "identical bodies");
    }
    assert_eq!(h.engine.command_count(), 0);
}

#[tokio::test]
async fn a_token_rule_and_secrets_work_side_by_side() {
    let issuer = TestIssuer::start(&[Signer::Rsa1]);
    let h = harness(&issuer).await;
    let (status, job) = status_json(
        h.deploy("/pull", "billing-web", crate::support::BILLING)
            .await,
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let token = issuer.token(Signer::Rsa1, &issuer.claims(AUD));
    let (status, job) =
        status_json(post_token(&h, "/pull", "billing-worker", &token, None).await).await;
    assert_eq!(status, 202, "{job}");
    // A token does not open a project that has no rule for it.
    let response = post_token(&h, "/pull", "shop-web", &token, None).await;
    expect_problem(response, 403, "token_not_allowed").await;
}

#[tokio::test]
async fn the_issuer_down_at_start_gives_503_and_leaves_secrets_working() {
    let issuer = TestIssuer::start(&[Signer::Rsa1]);
    issuer.set_up(false);
    let h = harness(&issuer).await;
    h.gateway.warm_issuers().await;
    let token = issuer.token(Signer::Rsa1, &issuer.claims(AUD));
    let response = post_token(&h, "/pull", "billing-web", &token, None).await;
    let retry_after: u64 = response.0.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    expect_problem(response, 503, "issuer_unavailable").await;
    let (status, job) = status_json(h.deploy("/pull", "shop-web", SHOP).await).await;
    assert_eq!(status, 202, "a project with a secret still deploys: {job}");

    // Back up: the issuer is not asked again before `Retry-After` has
    // passed, and is asked once it has.
    issuer.set_up(true);
    let token = issuer.token(Signer::Rsa1, &issuer.claims(AUD));
    let response = post_token(&h, "/pull", "billing-web", &token, None).await;
    expect_problem(response, 503, "issuer_unavailable").await;
    h.clock.advance(Duration::from_secs(retry_after));
    let token = issuer.token(Signer::Rsa1, &issuer.claims(AUD));
    let (status, body) =
        status_json(post_token(&h, "/pull", "billing-web", &token, None).await).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn a_key_rotated_at_the_issuer_is_picked_up_without_a_restart() {
    let issuer = TestIssuer::start(&[Signer::Rsa1]);
    let h = harness(&issuer).await;
    let old = issuer.token(Signer::Rsa1, &issuer.claims(AUD));
    let (status, _) = status_json(post_token(&h, "/pull", "billing-web", &old, None).await).await;
    assert_eq!(status, 202);
    assert_eq!(issuer.jwks_fetches(), 1);

    issuer.publish(&[Signer::Rsa2]);
    // Within a minute of the last fetch an unknown kid is refused, and the
    // issuer is not asked again: random kids cannot make the gateway
    // hammer it.
    for step in [0, 20, 39] {
        h.clock.advance(Duration::from_secs(step));
        let token = issuer.token(Signer::Rsa2, &issuer.claims(AUD));
        let (status, body) =
            status_json(post_token(&h, "/pull", "billing-worker", &token, None).await).await;
        assert_eq!(
            (status, body["rule"].as_str()),
            (401, Some("key")),
            "{body}"
        );
        assert_eq!(issuer.jwks_fetches(), 1, "no refetch within the minute");
    }
    // A minute after the last fetch, the unknown kid makes the gateway ask.
    h.clock.advance(Duration::from_secs(1));
    let token = issuer.token(Signer::Rsa2, &issuer.claims(AUD));
    let (status, body) =
        status_json(post_token(&h, "/pull", "billing-worker", &token, None).await).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(issuer.jwks_fetches(), 2);
    // The old key left the set with the rotation.
    let old = issuer.token(Signer::Rsa1, &issuer.claims(AUD));
    let (status, body) =
        status_json(post_token(&h, "/pull", "billing-web", &old, None).await).await;
    assert_eq!(
        (status, body["rule"].as_str()),
        (401, Some("key")),
        "{body}"
    );
}

#[tokio::test]
async fn a_replay_after_a_restart_is_still_caught() {
    let issuer = TestIssuer::start(&[Signer::Rsa1]);
    let h = harness(&issuer).await;
    let token = issuer.token(Signer::Rsa1, &issuer.claims(AUD));
    let (status, job) =
        status_json(post_token(&h, "/pull?wait=10", "billing-web", &token, None).await).await;
    assert_eq!(status, 200, "{job}");
    let h = h.restart().await;
    let (status, again) =
        status_json(post_token(&h, "/pull?wait=10", "billing-web", &token, None).await).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (&again["id"], &again["replayed"]),
        (&job["id"], &json!(true))
    );
    assert_eq!(
        h.engine.command_count(),
        0,
        "the restarted gateway ran nothing"
    );
}

#[tokio::test]
async fn a_jwks_file_serves_a_host_without_network() {
    let issuer = TestIssuer::start(&[Signer::Ec]);
    let dir = temp_dir("jwks");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, json!({"keys": [issuer.jwk(Signer::Ec)]}).to_string()).unwrap();
    // An issuer nothing listens on: only the file can give its keys.
    let offline = "http://127.0.0.1:9";
    let extra = format!("jwks_file = \"{}\"", file.display());
    let h = Harness::with_policy("", &rules(offline, &extra)).await;
    let mut claims = issuer.claims(AUD);
    claims["iss"] = json!(offline);
    let token = issuer.token(Signer::Ec, &claims);
    let (status, job) =
        status_json(post_token(&h, "/pull", "billing-web", &token, None).await).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(issuer.jwks_fetches(), 0);
}

#[tokio::test]
async fn the_document_declares_the_bearer_scheme_beside_the_signature() {
    let h = Harness::new().await;
    let (_, doc) = status_json(h.client.get("/openapi.json").send().await).await;
    let scheme = &doc["components"]["securitySchemes"]["oidc"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"], &scheme["bearerFormat"]),
        (&json!("http"), &json!("bearer"), &json!("JWT")),
        "{scheme}"
    );
    for (path, method) in [
        ("/pull", "post"),
        ("/build", "post"),
        ("/jobs/{id}", "get"),
        ("/jobs", "get"),
    ] {
        assert_eq!(
            doc["paths"][path][method]["security"],
            json!([{"signature": []}, {"oidc": []}]),
            "{path}"
        );
    }
}

/// `X-Signature` decides when both are sent: a bearer beside a good
/// signature is not read, and one beside a bad signature does not rescue
/// it. `Authorization: Basic` is no credential at all.
#[tokio::test]
async fn a_signature_wins_over_a_bearer_token_and_basic_is_ignored() {
    let issuer = TestIssuer::start(&[Signer::Rsa1]);
    let h = harness(&issuer).await;
    let token = issuer.token(Signer::Rsa1, &issuer.claims(AUD));
    let body = body_for("billing-web");
    let ts = now().to_string();
    let signed = |secret: &str, authorization: &str| {
        h.client
            .post("/pull")
            .content_type("application/json")
            .header("X-Timestamp", &ts)
            .header(
                "X-Signature",
                crate::support::sign(secret, body.as_bytes(), &ts),
            )
            .header("Authorization", authorization.to_owned())
            .body(body.clone())
            .send()
    };
    // A good signature beside a bearer that is no token: the signature admits.
    let (status, job) =
        status_json(signed(crate::support::BILLING, "Bearer not-a-jwt").await).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["requested_by"], json!({"key_index": 0}), "{job}");
    // A wrong signature beside a valid token: refused as a signature.
    let response = signed(SHOP, &format!("Bearer {token}")).await;
    expect_problem(response, 401, "signature_mismatch").await;
    // Basic is not read: without a signature there is no credential.
    let response = h
        .client
        .post("/pull")
        .content_type("application/json")
        .header("X-Timestamp", &ts)
        .header("Authorization", "Basic YmlsbGluZzpzZWNyZXQ=")
        .body(body.clone())
        .send()
        .await;
    expect_problem(response, 401, "missing_signature").await;
}

/// A refused CI token counts toward its address's failures like a wrong
/// signature: past the limit, even a good credential from that address
/// waits.
#[tokio::test]
async fn failed_ci_tokens_count_toward_the_throttle() {
    let issuer = TestIssuer::start(&[Signer::Rsa1]);
    let h = Harness::with_policy(
        "auth_failure_limit = 2\nauth_failure_window_secs = 60",
        &rules(&issuer.url, ""),
    )
    .await;
    let mut claims = issuer.claims(AUD);
    claims["aud"] = json!("https://another.test");
    let wrong_audience = issuer.token(Signer::Rsa1, &claims);
    for _ in 0..2 {
        let response = post_token(&h, "/pull", "billing-web", &wrong_audience, None).await;
        expect_problem(response, 401, "invalid_token").await;
    }
    let good = issuer.token(Signer::Rsa1, &issuer.claims(AUD));
    let response = post_token(&h, "/pull", "billing-web", &good, None).await;
    expect_problem(response, 429, "too_many_failures").await;
    assert_eq!(h.engine.command_count(), 0, "nothing ran");
}
