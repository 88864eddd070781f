use super::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::names::{Action, ContainerName};
use crate::policy::{Allowance, KeySource, ModelMode, SmtpTls};

struct FakeEnv {
    vars: HashMap<&'static str, &'static str>,
    files: HashMap<&'static str, &'static [u8]>,
}

impl Environment for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).map(|v| v.to_string())
    }
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.files
            .get(path.to_str().unwrap())
            .map(|b| b.to_vec())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

fn env() -> FakeEnv {
    FakeEnv {
        vars: HashMap::from([
            ("BILLING_SECRET", "billing-secret-0123456789"),
            ("SHOP_SECRET", "shop-secret-0123456789ab"),
            ("SHORT", "short"),
            ("OTHER_SECRET", "other-secret-0123456789ab"),
            ("DUP", "billing-secret-0123456789"),
            ("HOOK_URL", "https://hooks.example/t0ken"),
            ("PLAIN_URL", "http://receiver.example/hook"),
            ("FTP_URL", "ftp://hooks.example/"),
            ("HOOK_KEY", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ("SMTP_USER", "deliverer"),
            ("SMTP_PASSWORD", "pa55word"),
        ]),
        files: HashMap::from([
            ("/etc/dh/next", &b"billing-next-0123456789\n"[..]),
            ("/etc/dh/crlf", &b"crlf-secret-0123456789\r\n"[..]),
            (
                "/etc/dh/jwks.json",
                &br#"{"keys": [{"kty": "EC", "kid": "k1", "crv": "P-256", "x": "AAAA", "y": "AAAA"}]}"#[..],
            ),
            ("/etc/dh/empty.json", &br#"{"keys": []}"#[..]),
        ]),
    }
}

fn parse_ok(text: &str) -> Loaded {
    match parse(text, Path::new("/etc/dh/delivery.toml"), &env()) {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected a valid policy, got:\n{e}"),
    }
}

fn parse_err(text: &str) -> String {
    match parse(text, Path::new("/etc/dh/delivery.toml"), &env()) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.to_string(),
    }
}

const FULL: &str = r#"
[server]
listen = "0.0.0.0:9000"
docs = true
max_body_bytes = 4096
timestamp_tolerance_secs = 60
max_wait_secs = 30
state_dir = "state"
metrics = true
trusted_proxies = ["10.0.0.0/8"]

[docker]
compose = ["docker-compose"]
job_timeout_secs = 120
max_parallel_jobs = 2

[projects.billing]
secrets = ["env:BILLING_SECRET", "file:/etc/dh/next"]
containers = ["billing-*", "!billing-db"]
actions = ["pull", "build"]
compose_files = ["/srv/billing/**"]
compose_projects = ["billing"]
compose_model = "warn"
host_paths = ["/srv/billing/**", "/var/lib/billing"]
allow = ["docker_socket", "cap_add"]
model_images = ["reg.example.com/billing/*"]

[projects.shop]
secrets = ["env:SHOP_SECRET"]
containers = ["shop-web"]
actions = ["pull"]
model_images = ["reg.example.com/shop/*"]
compose_projects = ["shop", "shop-*"]
"#;

fn name(n: &str) -> ContainerName {
    ContainerName::parse(n).unwrap()
}

#[test]
fn a_full_policy_compiles_with_every_setting() {
    let loaded = parse_ok(FULL);
    let p = &loaded.policy;
    assert_eq!(p.server.listen, "0.0.0.0:9000".parse().unwrap());
    assert!(p.server.docs && p.server.metrics);
    assert_eq!(p.server.max_body_bytes, 4096);
    assert_eq!(p.server.timestamp_tolerance_secs, 60);
    assert_eq!(p.server.max_wait_secs, 30);
    assert_eq!(p.server.state_dir, PathBuf::from("/etc/dh/state"));
    assert_eq!(p.server.trusted_proxies.len(), 1);
    assert_eq!(
        p.docker.compose,
        ComposeTool::Command(vec!["docker-compose".into()])
    );
    assert_eq!(p.docker.job_timeout_secs, 120);
    assert_eq!(p.docker.max_parallel_jobs, 2);
    let billing = p.project("billing").unwrap();
    assert_eq!(billing.keys().len(), 2);
    assert_eq!(billing.actions, vec![Action::Pull, Action::Build]);
    assert_eq!(billing.compose_model, ModelMode::Warn);
    assert_eq!(
        billing.allow,
        BTreeSet::from([Allowance::DockerSocket, Allowance::CapAdd])
    );
    let own: &[PathBuf] = &[];
    assert!(billing.allows_host_path(Path::new("/srv/billing/data/x"), own));
    assert!(billing.allows_host_path(Path::new("/var/lib/billing/cache"), own));
    assert!(!billing.allows_host_path(Path::new("/var/lib/other"), own));
    // Two projects: the model is judged unless a project says otherwise.
    let shop = p.project("shop").unwrap();
    assert_eq!(shop.compose_model, ModelMode::Enforce);
    assert!(shop.allow.is_empty());
    assert!(shop.allows_host_path(Path::new("/srv/shop/x"), &[PathBuf::from("/srv/shop")]));
    assert!(!shop.allows_host_path(Path::new("/srv/shopping"), &[PathBuf::from("/srv/shop")]));
    let summary = p.summary().to_string();
    assert!(
        summary.contains("compose model warn; host paths /srv/billing/**, /var/lib/billing; allow docker_socket, cap_add"),
        "{summary}"
    );
    // Shop's host paths follow its compose files wherever they lie.
    let shown = loaded.warnings().to_string();
    assert_eq!(loaded.warnings.len(), 1, "{shown}");
    assert!(
        shown.contains("project `shop` has neither `compose_files` nor `host_paths`"),
        "{shown}"
    );
}

#[test]
fn compose_model_settings_are_checked_with_their_lines() {
    let text = "[projects.a]\nsecrets = [\"env:SHOP_SECRET\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\ncompose_model = \"strict\"\nhost_paths = [\"relative/*\"]\nallow = [\"docker_socket\", \"root\"]\n";
    let err = parse_err(text);
    assert!(
        err.contains(":5: `compose_model` must be \"enforce\", \"warn\" or \"off\""),
        "{err}"
    );
    assert!(
        err.contains(":6: host path pattern `relative/*` must be absolute"),
        "{err}"
    );
    assert!(
        err.contains(":7: `allow` names `root`, which is none of docker_socket, privileged"),
        "{err}"
    );
    // One project alone: its model is not judged unless it asks.
    let single = parse_ok(
        "[projects.a]\nsecrets = [\"env:SHOP_SECRET\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n",
    );
    assert_eq!(
        single.policy.project("a").unwrap().compose_model,
        ModelMode::Off
    );
}

#[test]
fn safe_deploy_settings_have_defaults_and_bounds() {
    let p = parse_ok(FULL).policy;
    assert_eq!(p.docker.stable_secs, 5, "the default");
    let shop = p.project("shop").unwrap();
    assert!(shop.rollback, "rollback is on unless turned off");
    // Without `images`, only the compose file's repository.
    assert!(shop.allows_image("reg.example.com/shop/web", Some("reg.example.com/shop/web")));
    assert!(!shop.allows_image("reg.example.com/other", Some("reg.example.com/shop/web")));
    assert!(!shop.allows_image("reg.example.com/shop/web", None));

    let text = FULL
        .replace("max_parallel_jobs = 2", "max_parallel_jobs = 2\nstable_secs = 0")
        .replace(
            r#"compose_projects = ["shop", "shop-*"]"#,
            "compose_projects = [\"shop\"]\nrollback = false\nimages = [\"reg.example.com/shop/*\"]",
        );
    let p = parse_ok(&text).policy;
    assert_eq!(p.docker.stable_secs, 0);
    let shop = p.project("shop").unwrap();
    assert!(!shop.rollback);
    assert!(shop.allows_image("reg.example.com/shop/web", None));
    assert!(
        !shop.allows_image("reg.example.com/shop/web/deeper", None),
        "`*` does not cross `/`"
    );
    assert!(!shop.allows_image(
        "reg.example.com/billing/web",
        Some("reg.example.com/billing/web")
    ));

    for (from, to, says) in [
        (
            "max_parallel_jobs = 2",
            "max_parallel_jobs = 2\nstable_secs = 3601",
            "`stable_secs` must be",
        ),
        (
            r#"compose_projects = ["shop", "shop-*"]"#,
            "rollback = \"yes\"",
            "`rollback` must be true or false",
        ),
        (
            r#"compose_projects = ["shop", "shop-*"]"#,
            "images = [\"app@sha256:x\"]",
            "without a digest",
        ),
        (
            r#"compose_projects = ["shop", "shop-*"]"#,
            "images = []",
            "`images`, when present",
        ),
    ] {
        let text = parse_err(&FULL.replace(from, to));
        assert!(text.contains(says), "{to}: {text}");
    }
}

#[test]
fn compose_project_globs_bound_a_project() {
    let p = parse_ok(FULL).policy;
    let shop = p.project("shop").unwrap();
    assert!(shop.allows_compose_project("shop"));
    assert!(shop.allows_compose_project("shop-staging"));
    assert!(!shop.allows_compose_project("billing"));
    assert!(
        !p.project("billing")
            .unwrap()
            .allows_compose_project("anything")
    );
    let p = parse_ok(&FULL.replace("compose_projects = [\"billing\"]\n", "")).policy;
    assert!(
        p.project("billing")
            .unwrap()
            .allows_compose_project("anything"),
        "absent means any"
    );
    let text = parse_err(&FULL.replace(
        r#"compose_projects = ["shop", "shop-*"]"#,
        r#"compose_projects = []"#,
    ));
    assert!(text.contains("`compose_projects`, when present"), "{text}");
}

#[test]
fn shared_hosts_are_warned_about_missing_boundaries_and_overlaps() {
    let text = r#"
[projects.billing]
secrets = ["env:BILLING_SECRET"]
containers = ["billing-*", "!billing-db"]
actions = ["pull"]
compose_projects = ["billing"]
host_paths = ["/srv/billing/**"]

[projects.web]
secrets = ["env:SHOP_SECRET"]
containers = ["*-web"]
actions = ["pull"]
model_images = ["reg.example.com/web/*"]

[projects.db]
secrets = ["env:OTHER_SECRET"]
containers = ["billing-db", "shop-db"]
actions = ["pull"]
compose_files = ["/srv/db/**"]
model_images = ["reg.example.com/db/*"]
"#;
    let loaded = parse_ok(text);
    let shown = loaded.warnings().to_string();
    assert!(
        shown.contains(":11: project `web` has neither `compose_files` nor `compose_projects`"),
        "{shown}"
    );
    assert!(
        shown.contains(":11: project `web` has neither `compose_files` nor `host_paths`"),
        "{shown}"
    );
    assert!(
        shown.contains(":4: project `billing` has no `model_images`"),
        "{shown}"
    );
    assert!(
        shown.contains("`billing` and `web` may both deploy") && shown.contains("e.g. `billing-"),
        "{shown}"
    );
    assert!(
        !shown.contains("`billing` and `db`"),
        "billing excludes billing-db: {shown}"
    );
    assert!(
        shown.contains(
            ":17: project `db` bounds its compose files but not its compose project names"
        ),
        "{shown}"
    );
    assert_eq!(loaded.warnings.len(), 5, "{shown}");
    let single = parse_ok(
        "[projects.a]\nsecrets = [\"env:SHOP_SECRET\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n",
    );
    assert!(
        single.warnings.is_empty(),
        "one project has no one to share with"
    );
}

#[test]
fn defaults_fill_every_section_but_projects() {
    let loaded = parse_ok(
        "[projects.a]\nsecrets = [\"env:SHOP_SECRET\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n",
    );
    let p = &loaded.policy;
    assert_eq!(p.server, default_server(Path::new("/etc/dh")));
    assert_eq!(p.docker, default_docker());
    assert_eq!(p.server.state_dir, PathBuf::from("/etc/dh/delivery-state"));
}

#[test]
fn compose_names_a_tool_or_an_argv() {
    let minimal = "[projects.a]\nsecrets = [\"env:SHOP_SECRET\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n";
    for (value, tool, first) in [
        ("\"auto\"", ComposeTool::Auto, vec!["docker", "compose"]),
        ("\"v1\"", ComposeTool::V1, vec!["docker-compose"]),
        ("\"v2\"", ComposeTool::V2, vec!["docker", "compose"]),
    ] {
        let text = format!("[docker]\ncompose = {value}\n\n{minimal}");
        let compose = parse_ok(&text).policy.docker.compose;
        assert_eq!(compose, tool);
        assert_eq!(compose.candidates()[0], first);
    }
    assert_eq!(ComposeTool::Auto.candidates().len(), 2, "v2, then v1");
    let err = parse_err(&format!("[docker]\ncompose = \"v3\"\n\n{minimal}"));
    assert!(
        err.contains(":2: `compose` must be \"auto\", \"v1\", \"v2\""),
        "{err}"
    );
}

#[test]
fn delivery_state_dir_is_the_default_a_policy_can_override() {
    let mut e = env();
    e.vars
        .insert("DELIVERY_STATE_DIR", "/var/lib/delivery-hook");
    let minimal = "[projects.a]\nsecrets = [\"env:SHOP_SECRET\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n";
    let loaded = parse(minimal, Path::new("/etc/dh/delivery.toml"), &e).unwrap();
    assert_eq!(
        loaded.policy.server.state_dir,
        PathBuf::from("/var/lib/delivery-hook")
    );
    let own = format!("[server]\nstate_dir = \"/srv/state\"\n\n{minimal}");
    let loaded = parse(&own, Path::new("/etc/dh/delivery.toml"), &e).unwrap();
    assert_eq!(loaded.policy.server.state_dir, PathBuf::from("/srv/state"));
}

#[test]
fn container_globs_with_exclusions() {
    let p = parse_ok(FULL).policy;
    let billing = p.project("billing").unwrap();
    assert!(p.allows_container(billing, &name("billing-web")));
    assert!(p.allows_container(billing, &name("billing-")));
    assert!(
        !p.allows_container(billing, &name("billing-db")),
        "! excludes"
    );
    assert!(!p.allows_container(billing, &name("billingweb")));
    assert!(!p.allows_container(billing, &name("shop-web")));
    let shop = p.project("shop").unwrap();
    assert!(p.allows_container(shop, &name("shop-web")));
    assert!(
        !p.allows_container(shop, &name("shop-web2")),
        "no implicit prefix match"
    );
}

#[test]
fn candidates_are_the_projects_allowing_the_name() {
    let p = parse_ok(FULL).policy;
    let names = |c: &str| -> Vec<String> {
        p.candidates(&name(c))
            .iter()
            .map(|p| p.name.to_string())
            .collect()
    };
    assert_eq!(names("billing-web"), vec!["billing"]);
    assert_eq!(names("shop-web"), vec!["shop"]);
    assert!(
        names("billing-db").is_empty(),
        "an excluded name has no candidate"
    );
    assert!(names("other").is_empty());
}

#[test]
fn compose_file_globs() {
    let p = parse_ok(FULL).policy;
    let billing = p.project("billing").unwrap();
    let ok = [
        PathBuf::from("/srv/billing/compose.yml"),
        PathBuf::from("/srv/billing/a/b.yml"),
    ];
    assert!(billing.allows_compose_files(&ok));
    let mixed = [ok[0].clone(), PathBuf::from("/srv/shop/compose.yml")];
    assert!(
        !billing.allows_compose_files(&mixed),
        "every file must match"
    );
    let shop = p.project("shop").unwrap();
    assert!(
        shop.allows_compose_files(&mixed),
        "no compose_files means any"
    );
}

#[test]
fn every_path_compose_reads_is_judged() {
    let p = parse_ok(FULL).policy;
    let billing = p.project("billing").unwrap();
    let config = [PathBuf::from("/srv/billing/compose.yml")];
    let env = [PathBuf::from("/srv/billing/prod.env")];
    let dir = Path::new("/srv/billing");
    assert!(billing.allows_compose_paths(&config, &env, dir));
    assert!(billing.allows_compose_paths(&config, &[], Path::new("/srv/billing/env")));
    let foreign_env = [PathBuf::from("/srv/shop/.env")];
    assert!(
        !billing.allows_compose_paths(&config, &foreign_env, dir),
        "an env file outside compose_files"
    );
    assert!(
        !billing.allows_compose_paths(&config, &env, Path::new("/srv")),
        "a working directory above the compose file"
    );
    assert!(
        !billing.allows_compose_paths(&config, &env, Path::new("/srv/billing2")),
        "a sibling that shares a prefix is not below"
    );
    let shop = p.project("shop").unwrap();
    assert!(shop.allows_compose_paths(&config, &foreign_env, Path::new("/")));
}

#[test]
fn file_secrets_are_trimmed_and_rotation_keys_load() {
    let p = parse_ok(FULL).policy;
    let billing = p.project("billing").unwrap();
    let next = crate::auth::signature::SigningKey::new(b"billing-next-0123456789");
    let sig = next.sign(b"x", "1");
    assert!(crate::auth::signature::verify_any(billing.keys(), b"x", "1", &sig).is_some());
    let crlf = parse_ok(
        "[projects.a]\nsecrets = [\"file:/etc/dh/crlf\"]\ncontainers = [\"*\"]\nactions = [\"pull\"]\n",
    );
    let key = crate::auth::signature::SigningKey::new(b"crlf-secret-0123456789");
    let sig = key.sign(b"x", "1");
    let a = crlf.policy.project("a").unwrap();
    assert!(crate::auth::signature::verify_any(a.keys(), b"x", "1", &sig).is_some());
}

#[test]
fn a_secret_of_another_project_never_authorises() {
    let p = parse_ok(FULL).policy;
    let shop_key = crate::auth::signature::SigningKey::new(b"shop-secret-0123456789ab");
    let sig = shop_key.sign(b"x", "1");
    let billing = p.project("billing").unwrap();
    assert_eq!(
        crate::auth::signature::verify_any(billing.keys(), b"x", "1", &sig),
        None
    );
}

#[test]
fn literal_secrets_warn_with_their_line() {
    let loaded = parse_ok(
        "[projects.a]\ncontainers = [\"*\"]\nsecrets = [\"literal-secret-0123456789\"]\nactions = [\"pull\"]\n",
    );
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].line, Some(3));
    let shown = loaded.warnings().to_string();
    assert!(
        shown.starts_with("warning: /etc/dh/delivery.toml:3: "),
        "{shown}"
    );
    assert!(
        !shown.contains("literal-secret"),
        "the warning never shows the secret"
    );
}

#[test]
fn every_error_is_reported_with_its_line() {
    let text = r#"[server]
listen = "nowhere"
docs = "yes"
max_body_bytes = 10
colour = 1

[docker]
compose = "podman"
max_parallel_jobs = 0
extra = true

[projects.billing]
secrets = ["env:MISSING", "file:/nope", "env:SHORT"]
containers = ["/billing", "!", "[z-a]"]
actions = ["pull", "deploy", "pull"]
compose_files = ["relative/*.yml"]
unknown = 1

[projects."bad name"]
secrets = ["env:SHOP_SECRET"]
containers = ["!x"]
actions = []

[projects.dup]
secrets = ["env:DUP", "env:BILLING_SECRET"]
containers = ["*"]
actions = ["pull"]

[projects.dup2]
secrets = ["env:DUP"]
containers = ["*"]
actions = ["build"]

[projects.empty]

[surprise]
"#;
    let out = parse_err(text);
    let expect = [
        ":2: `listen` must be an IP:port address",
        ":3: `docs` must be true or false",
        ":4: `max_body_bytes` must be an integer from 64 to",
        ":5: unknown key `colour` in [server]",
        ":8: `compose` must be \"auto\", \"v1\", \"v2\" or an argv",
        ":9: `max_parallel_jobs` must be an integer from 1 to 256",
        ":10: unknown key `extra` in [docker]",
        ":13: environment variable `MISSING` is not set",
        ":13: cannot read secret file /nope",
        ":13: the secret from env:SHORT is shorter than 16 bytes",
        ":14: container pattern `/billing` starts with '/'",
        ":14: an empty container pattern matches nothing",
        ":14: container pattern `[z-a]`",
        ":15: unknown action `deploy`",
        ":15: action `pull` is listed twice",
        ":16: compose file pattern `relative/*.yml` must be absolute",
        ":17: unknown key `unknown` in [projects.billing]",
        ":19: project name `bad name` may contain only",
        ":21: `containers` needs at least one pattern without '!'",
        ":22: `actions` must list pull, build or both",
        ":25: project `dup` lists the same secret twice",
        ":30: the secret from env:DUP is also used by project `dup`",
        "[projects.empty] has no `secrets`",
        "[projects.empty] has no `containers`",
        "[projects.empty] has no `actions`",
        ":36: unknown section `surprise`",
    ];
    for e in expect {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
    assert!(
        !out.contains("billing-secret"),
        "errors never show a secret:\n{out}"
    );
    for line in out.lines() {
        assert!(line.starts_with("error: /etc/dh/delivery.toml"), "{line}");
    }
}

#[test]
fn a_table_of_the_wrong_type_hides_no_other_error() {
    let text = r#"server = 1
docker = "v2"

[projects.a]
secrets = "env:SHOP_SECRET"
containers = ["a-*"]
actions = ["pull"]
oidc = [{ issuer = 7, audience = ["x"] }, "rule"]
rollback = 1979-05-27

[projects.b]
secrets = ["env:BILLING_SECRET"]
containers = [1, "b-*"]
actions = "pull"
images = [true]

[projects.c]
secrets = ["env:DUP"]
containers = ["c-*"]
actions = ["pull"]
oidc = [{ issuer = "https://token.actions.githubusercontent.com", audience = "c", claims = { repository = { x = 1 }, ref = [] }, colour = 2 }]
"#;
    let out = parse_err(text);
    let expect = [
        ":1: [server] must be a table, not an integer",
        ":2: [docker] must be a table, not a string",
        ":5: `secrets` must be an array of strings",
        ":8: `issuer` must be a string",
        ":8: `audience` must be a string",
        ":8: [[projects.a.oidc]] must be a table, not a string",
        ":9: `rollback` must be true or false",
        ":13: `containers` must contain only strings",
        ":14: `actions` must be an array of strings",
        ":15: `images` must contain only strings",
        ":21: claim `repository` must be a string, a number, a boolean, or a list of them",
        ":21: claim `ref` lists no pattern",
        ":21: unknown key `colour` in [[projects.c.oidc]]",
    ];
    for e in expect {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
}

#[test]
fn notify_targets_load_and_every_mistake_is_reported_with_its_line() {
    let good = r#"[notify.smtp]
host = "smtp.example.com"
from = "delivery-hook <dh@example.com>"
username_env = "SMTP_USER"
password_env = "SMTP_PASSWORD"

[projects.shop]
secrets = ["env:SHOP_SECRET"]
containers = ["shop-*"]
actions = ["pull"]

[[projects.shop.notify]]
kind = "webhook"
url_env = "HOOK_URL"
secret_env = "HOOK_KEY"
events = ["failed", "rolled_back"]

[[projects.shop.notify]]
kind = "email"
to = ["ops@example.com"]
"#;
    let loaded = parse_ok(good);
    let shop = loaded.policy.project("shop").unwrap();
    assert_eq!(shop.notify.len(), 2);
    assert_eq!(
        shop.notify[0].events,
        [
            crate::policy::Outcome::Failed,
            crate::policy::Outcome::RolledBack
        ]
    );
    assert_eq!(shop.notify[1].events, crate::policy::EVENTS);
    let smtp = loaded.policy.smtp.as_ref().unwrap();
    assert_eq!((smtp.port, smtp.tls), (587, SmtpTls::StartTls));
    let withheld = loaded.policy.secret_env_names();
    for name in ["HOOK_URL", "HOOK_KEY", "SMTP_USER", "SMTP_PASSWORD"] {
        assert!(withheld.iter().any(|n| n == name), "{name} in {withheld:?}");
    }
    let summary = loaded.policy.summary().to_string();
    assert!(
        summary.contains("notify 1: webhook (URL from $HOOK_URL); on failed, rolled_back"),
        "{summary}"
    );
    for secret in ["t0ken", "pa55word", "MfKQ9r8"] {
        assert!(!summary.contains(secret), "{summary}");
        assert!(!format!("{:?}", loaded.policy.project("shop")).contains(secret));
    }

    let bad = r#"[projects.shop]
secrets = ["env:SHOP_SECRET"]
containers = ["shop-*"]
actions = ["pull"]

[[projects.shop.notify]]
kind = "pager"

[[projects.shop.notify]]
kind = "webhook"
url_env = "MISSING_URL"
secret_env = "HOOK_KEY"

[[projects.shop.notify]]
kind = "slack"
url_env = "FTP_URL"
to = ["ops@example.com"]

[[projects.shop.notify]]
kind = "webhook"
url_env = "HOOK_URL"
secret_env = "SHOP_SECRET"
events = ["done"]

[[projects.shop.notify]]
kind = "email"
to = ["not an address"]
colour = "red"
"#;
    let out = parse_err(bad);
    for expected in [
        ":7: notify kind `pager` is none of webhook, slack, email",
        ":11: environment variable `MISSING_URL` is not set",
        ":16: `FTP_URL` holds no http or https URL",
        ":17: `to` is for email targets",
        ":22: `secret_env` must hold a Standard Webhooks key",
        ":23: `events` names `done`, which is none of succeeded, failed, timed_out, interrupted, rolled_back",
        ":27: `not an address` is not a mail address",
        ":27: an email target needs [notify.smtp]",
        ":28: unknown key `colour` in [[projects.shop.notify]]",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("hooks.example"), "no URL in an error:\n{out}");

    let plain = good.replace("HOOK_URL", "PLAIN_URL");
    let warnings: Vec<String> = parse_ok(&plain)
        .warnings
        .iter()
        .map(|d| d.message.clone())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("`PLAIN_URL` holds a plain http URL")),
        "{warnings:?}"
    );
}

#[test]
fn syntax_errors_carry_lines_too() {
    let out = parse_err("[projects.a]\nsecrets = [\"env:SHOP_SECRET\"\ncontainers = 1\n");
    assert!(out.contains("delivery.toml:"), "{out}");
    assert!(out.contains("TOML syntax"), "{out}");
}

#[test]
fn a_policy_without_projects_is_refused() {
    let out = parse_err("[server]\ndocs = true\n");
    assert!(out.contains("no [projects.<name>] section"), "{out}");
    let out = parse_err("[projects]\n");
    assert!(out.contains("[projects] defines no project"), "{out}");
}

#[test]
fn delivery_listen_overrides_the_file() {
    let mut e = env();
    e.vars.insert("DELIVERY_LISTEN", "127.0.0.1:9999");
    let loaded = parse(FULL, Path::new("/etc/dh/delivery.toml"), &e).unwrap();
    assert_eq!(
        loaded.policy.server.listen,
        "127.0.0.1:9999".parse().unwrap()
    );
    e.vars.insert("DELIVERY_LISTEN", "bogus");
    let err = parse(FULL, Path::new("/etc/dh/delivery.toml"), &e).unwrap_err();
    assert!(err.to_string().contains("DELIVERY_LISTEN"));
}

#[test]
fn summary_lists_projects_but_never_secrets() {
    let p = parse_ok(FULL).policy;
    let s = p.summary().to_string();
    assert!(s.contains("billing: containers billing-*, !billing-db; actions pull, build; secrets 2 (env:BILLING_SECRET, file:/etc/dh/next); compose files /srv/billing/**"), "{s}");
    assert!(s.contains("projects: 2"));
    assert!(!s.contains("billing-secret-0123456789"));
    assert!(!s.contains("billing-next"));
}

#[test]
fn seed_mode_is_one_project_for_everything() {
    let p = Policy::seed("your-very-secret-key", 8000, true, PathBuf::from("s")).unwrap();
    assert_eq!(p.server.listen, "0.0.0.0:8000".parse().unwrap());
    assert!(p.server.docs);
    let default = p.project("default").unwrap();
    assert!(p.allows_container(default, &name("anything")));
    assert!(default.allows_action(Action::Build));
    assert_eq!(p.candidates(&name("x")).len(), 1);
    assert!(Policy::seed("short", 8000, false, PathBuf::from("s")).is_err());
}

#[test]
fn oidc_rules_load_and_a_project_with_them_needs_no_secret() {
    let loaded = parse_ok(
        r#"
[projects.web]
containers = ["web-*"]
actions = ["pull"]

[[projects.web.oidc]]
issuer = "https://token.actions.githubusercontent.com"
audience = "https://deploy.example.com"
claims = { repository = "org/web", ref = ["refs/heads/main", "refs/tags/v*"], run_attempt = 1 }

[[projects.web.oidc]]
issuer = "http://127.0.0.1:9999"
audience = "local"
jwks_file = "jwks.json"
max_token_age_secs = 60
"#,
    );
    assert!(loaded.warnings.is_empty(), "{}", loaded.warnings());
    let web = loaded.policy.project("web").unwrap();
    assert!(web.keys().is_empty());
    assert_eq!(web.oidc.len(), 2);
    assert_eq!(web.oidc[0].max_token_age_secs, 600);
    let claim = |name: &str| {
        let c = web.oidc[0].claims.iter().find(|c| c.name == name).unwrap();
        c.patterns.clone()
    };
    assert_eq!(claim("ref"), ["refs/heads/main", "refs/tags/v*"]);
    assert_eq!(claim("run_attempt"), ["1"]);
    assert!(matches!(
        loaded
            .policy
            .key_source("https://token.actions.githubusercontent.com"),
        Some(KeySource::Discovery)
    ));
    assert!(matches!(
        loaded.policy.key_source("http://127.0.0.1:9999"),
        Some(KeySource::File(path, set)) if path == Path::new("/etc/dh/jwks.json") && set.get("k1").is_some()
    ));
    let shown = loaded.policy.summary().to_string();
    assert!(
        shown.contains("oidc: issuer https://token.actions.githubusercontent.com, audience https://deploy.example.com, ref = refs/heads/main | refs/tags/v*, repository = org/web, run_attempt = 1, at most 600 s old"),
        "{shown}"
    );
}

#[test]
fn oidc_rule_errors_are_reported_with_their_lines() {
    let errors = parse_err(
        r#"
[projects.web]
containers = ["web-*"]
actions = ["pull"]

[[projects.web.oidc]]
issuer = "http://issuer.example"
audience = "a"

[[projects.web.oidc]]
issuer = "https://issuer.example"
claims = { repository = [], ref = { x = 1 }, sub = "[" }
max_token_age_secs = 0
colour = "blue"

[[projects.web.oidc]]
issuer = "https://other.example"
audience = "a"
jwks_file = "/etc/dh/empty.json"

[[projects.web.oidc]]
issuer = "https://third.example"
audience = "a"
jwks_file = "/etc/dh/missing.json"

[projects.none]
containers = ["x"]
actions = ["pull"]
"#,
    );
    for expected in [
        "delivery.toml:7: `issuer`: `http://issuer.example` must be an https URL (http only on a loopback address)",
        "delivery.toml:10: [[projects.web.oidc]] has no `audience`",
        "delivery.toml:12: claim `repository` lists no pattern",
        "delivery.toml:12: claim `ref` must be a string, a number, a boolean, or a list of them",
        "delivery.toml:12: claim `sub` pattern `[`: unclosed character class",
        "delivery.toml:13: `max_token_age_secs` must be an integer from 1 to 86400",
        "delivery.toml:14: unknown key `colour` in [[projects.web.oidc]]",
        "delivery.toml:19: jwks_file /etc/dh/empty.json: the key set holds no RS256 or ES256 signing key with a kid",
        "delivery.toml:24: jwks_file /etc/dh/missing.json: cannot read it",
        "[projects.none] has no `secrets` or `oidc`",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}

#[test]
fn one_issuer_has_one_key_source_and_multi_tenant_rules_are_warned_about() {
    let errors = parse_err(
        r#"
[projects.web]
containers = ["web-*"]
actions = ["pull"]

[[projects.web.oidc]]
issuer = "http://127.0.0.1:9999"
audience = "a"

[[projects.web.oidc]]
issuer = "http://127.0.0.1:9999"
audience = "b"
jwks_file = "/etc/dh/jwks.json"
"#,
    );
    assert!(
        errors.contains("delivery.toml:11: the issuer http://127.0.0.1:9999 is given different jwks_file settings"),
        "{errors}"
    );
    let loaded = parse_ok(
        r#"
[projects.web]
containers = ["web-*"]
actions = ["pull"]

[[projects.web.oidc]]
issuer = "https://token.actions.githubusercontent.com"
audience = "a"
claims = { ref = "refs/heads/main" }

[[projects.web.oidc]]
issuer = "https://gitlab.com"
audience = "a"
claims = { project_path = "group/web" }

[[projects.web.oidc]]
issuer = "https://gitlab.com"
audience = "b"
"#,
    );
    let shown = loaded.warnings().to_string();
    assert_eq!(loaded.warnings.len(), 2, "{shown}");
    assert!(shown.contains("delivery.toml:7: [[projects.web.oidc]] names neither `repository` nor `repository_owner_id`"), "{shown}");
    assert!(
        shown.contains(
            "delivery.toml:17: [[projects.web.oidc]] names neither `project_path` nor `project_id`"
        ),
        "{shown}"
    );
}

#[test]
fn the_web_page_s_viewers_and_cookies_are_judged() {
    let project = "[projects.billing]\nsecrets = [\"env:BILLING_SECRET\"]\ncontainers = [\"billing-*\"]\nactions = [\"pull\"]\n";
    let ok = parse_ok(&format!(
        "[server]\npublic_url = \"https://deploy.example.com/\"\n[server.ui]\nenabled = true\ninsecure_cookies = true\n[[server.ui.viewers]]\nname = \"ops\"\ntoken_env = \"SHOP_SECRET\"\nprojects = [\"bill*\"]\n{project}"
    ));
    let server = &ok.policy.server;
    assert_eq!(
        server.public_url.as_deref(),
        Some("https://deploy.example.com")
    );
    assert!(server.ui.enabled && server.ui.insecure_cookies);
    let viewer = server
        .ui
        .viewer_by_token("shop-secret-0123456789ab")
        .unwrap();
    assert!(viewer.sees("billing") && !viewer.sees("shop"));
    assert!(
        server
            .ui
            .viewer_by_token("shop-secret-0123456789aX")
            .is_none()
    );
    let summary = ok.policy.summary().to_string();
    assert!(
        summary.contains("ui: /ui, insecure cookies (loopback), viewers ops (bill*)"),
        "{summary}"
    );
    let errors = parse_err(&format!(
        "[server]\nlisten = \"0.0.0.0:8000\"\npublic_url = \"ftp://x\"\n[server.ui]\nenabled = true\ninsecure_cookies = true\n[[server.ui.viewers]]\nname = \"a\"\ntoken_env = \"SHORT\"\nprojects = [\"*\"]\n[[server.ui.viewers]]\nname = \"b\"\ntoken_env = \"SHOP_SECRET\"\nprojects = [\"*\"]\n[[server.ui.viewers]]\nname = \"c\"\ntoken_env = \"SHOP_SECRET\"\nprojects = [\"*\"]\ncolour = 1\n{project}"
    ));
    for expected in [
        ":3: `public_url` must be",
        ":6: `insecure_cookies` sends session cookies without `Secure`",
        ":9: the token in `SHORT` is shorter than 16 bytes",
        "viewer `c` has another viewer's token",
        "unknown key `colour` in [[server.ui.viewers]]",
    ] {
        assert!(errors.contains(expected), "{expected}:\n{errors}");
    }
    let nobody = parse_err(&format!("[server.ui]\nenabled = true\n{project}"));
    assert!(nobody.contains("nobody could sign in"), "{nobody}");
}
