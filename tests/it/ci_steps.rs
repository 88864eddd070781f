//! The CI steps without an engine: `action.yml` and the GitLab component
//! against the CIs' own schemas (check-jsonschema's built-in ones), and
//! `trigger`'s fleets against stand-in hosts that count what they receive.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::ci::{self, Component, HostPlay, StandInHost};
use crate::support::temp_dir;

const SECRET: &str = "fleet-secret-0123456789abcdef";

fn names(mapping: &serde_yaml::Value) -> BTreeSet<String> {
    mapping
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_action_validates_as_a_github_action_and_passes_no_input_as_an_argument() {
    let Some(tool) = ci::check_jsonschema() else {
        return;
    };
    ci::validate(&tool, "github-actions", &ci::repo_file("action.yml")).unwrap();
    let action = ci::action();
    assert_eq!(
        names(&action["inputs"]),
        set(&[
            "url",
            "container",
            "service",
            "action",
            "project",
            "image",
            "wait",
            "parallel",
            "oidc-audience",
            "secret"
        ])
    );
    assert_eq!(
        names(&action["outputs"]),
        set(&["job-id", "state", "image", "results"])
    );
    let args: Vec<&str> = action["runs"]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["trigger", "--github-action"]);
    // The schema does refuse what is not an action.
    let dir = temp_dir("action-schema");
    let broken = dir.path().join("action.yml");
    let text = std::fs::read_to_string(ci::repo_file("action.yml")).unwrap();
    std::fs::write(&broken, text.replace("using: docker", "using: container")).unwrap();
    assert!(ci::validate(&tool, "github-actions", &broken).is_err());
}

#[test]
fn the_component_s_documents_validate_and_its_job_is_one_command_with_no_secret_in_it() {
    let Some(tool) = ci::check_jsonschema() else {
        return;
    };
    let component = Component::read();
    let dir = temp_dir("component-schema");
    for (name, text) in [
        ("spec.yml", &component.spec_text),
        ("jobs.yml", &component.jobs_text),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        ci::validate(&tool, "gitlab-ci", &path).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let broken = dir.path().join("broken.yml");
    std::fs::write(&broken, component.jobs_text.replace("script:", "scripts:")).unwrap();
    assert!(ci::validate(&tool, "gitlab-ci", &broken).is_err());

    let job = component.job(&[
        ("url", "https://a.example\nhttps://b.example"),
        ("container", "web"),
        ("oidc-audience", "https://deploy.example"),
        ("secret-variable", "DEPLOY_SECRET"),
    ]);
    assert_eq!(
        job["id_tokens"]["DELIVERY_ID_TOKEN"]["aud"].as_str(),
        Some("https://deploy.example")
    );
    let script = job["script"].as_sequence().unwrap();
    assert_eq!(script.len(), 1);
    let words = ci::words(script[0].as_str().unwrap());
    assert_eq!(
        &words[..4],
        [
            "delivery-hook",
            "trigger",
            "--url",
            "https://a.example\nhttps://b.example"
        ]
    );
    let after = |flag: &str| {
        let at = words.iter().position(|w| w == flag).unwrap();
        words[at + 1].clone()
    };
    assert_eq!(after("--secret-env"), "DEPLOY_SECRET");
    assert_eq!(after("--token-env"), "DELIVERY_ID_TOKEN");
    assert_eq!(after("--project"), "", "an input not given is passed empty");
}

/// Runs the built binary with `args` and `env`, and no secret or token of
/// the machine's own.
fn binary(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_delivery-hook"))
        .args(args)
        .env_remove("DELIVERY_SECRET")
        .env_remove("GITHUB_OUTPUT")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn hosts(plays: &[HostPlay]) -> Vec<StandInHost> {
    plays.iter().map(|p| StandInHost::start(*p)).collect()
}

fn counts(hosts: &[StandInHost]) -> Vec<usize> {
    hosts.iter().map(StandInHost::requests).collect()
}

fn outcomes(report: &Value) -> Vec<&str> {
    report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["outcome"].as_str().unwrap())
        .collect()
}

#[test]
fn a_fleet_stops_at_the_first_host_that_fails_and_sends_the_rest_nothing() {
    use HostPlay::*;
    let fleet = hosts(&[Succeed, Fail, Succeed]);
    let mut args = vec!["trigger", "--container", "web", "--wait", "30"];
    for host in &fleet {
        args.extend(["--url", &host.url]);
    }
    let out = binary(&args, &[("DELIVERY_SECRET", SECRET)]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert_eq!(counts(&fleet), [1, 1, 0], "{stdout}");
    for line in [
        format!("deployed:    {}", fleet[0].url),
        format!("failed:      {} (exit 1: job ", fleet[1].url),
        format!("not touched: {}", fleet[2].url),
        format!(
            "{}: failed: `compose pull` exited with code 1",
            fleet[1].url
        ),
    ] {
        assert!(stdout.contains(&line), "{line} in:\n{stdout}");
    }
}

#[test]
fn waves_of_parallel_hosts_stop_after_the_wave_that_failed_with_the_first_failure_s_code() {
    use HostPlay::*;
    let fleet = hosts(&[Succeed, Succeed, Fail, Refuse, Succeed]);
    let dir = temp_dir("urls-file");
    let file = dir.path().join("hosts.txt");
    let listed: Vec<String> = fleet
        .iter()
        .map(|h| format!("{}  # a host", h.url))
        .collect();
    std::fs::write(&file, format!("# the fleet\n\n{}\n", listed.join("\n"))).unwrap();
    let file = file.display().to_string();
    let args = [
        "trigger",
        "--urls-file",
        &file,
        "--container",
        "web",
        "--wait",
        "30",
        "--parallel",
        "2",
        "--output",
        "json",
    ];
    let out = binary(&args, &[("DELIVERY_SECRET", SECRET)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(counts(&fleet), [1, 1, 1, 1, 0]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["exit_code"], 1);
    assert_eq!(
        outcomes(&report),
        ["deployed", "deployed", "failed", "refused", "not_touched"]
    );
    assert_eq!(report["hosts"][0]["job"]["state"], "succeeded");
    assert_eq!(report["hosts"][3]["exit_code"], 2);
    assert!(
        report["hosts"][3]["error"]
            .as_str()
            .unwrap()
            .starts_with("refused (403 container_not_allowed)")
    );
}

#[test]
fn several_hosts_are_not_sent_anything_without_wait_or_with_a_bad_url() {
    let fleet = hosts(&[HostPlay::Succeed, HostPlay::Succeed]);
    let (a, b) = (fleet[0].url.as_str(), fleet[1].url.as_str());
    for (args, says) in [
        (vec!["--url", a, "--url", b], "give --wait"),
        (
            vec!["--url", a, "--url", "ftp://b", "--wait", "9"],
            "ftp://b",
        ),
        (
            vec!["--url", &format!("{a}\n{a}/"), "--wait", "9"],
            "listed twice",
        ),
    ] {
        let mut all = vec!["trigger", "--container", "web"];
        all.extend(args);
        let out = binary(&all, &[("DELIVERY_SECRET", SECRET)]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
    assert_eq!(counts(&fleet), [0, 0]);
}

#[test]
fn the_action_mode_reads_its_inputs_from_the_environment_and_writes_its_outputs() {
    let fleet = hosts(&[HostPlay::Succeed, HostPlay::Fail]);
    let dir = temp_dir("github-output");
    let output = dir.path().join("set_output");
    let urls = format!("{}\n{}\n", fleet[0].url, fleet[1].url);
    let output_path = output.display().to_string();
    let env = [
        ("INPUT_URL", urls.as_str()),
        ("INPUT_CONTAINER", "web"),
        ("INPUT_SERVICE", ""),
        ("INPUT_ACTION", "pull"),
        ("INPUT_WAIT", "30"),
        ("INPUT_PARALLEL", "1"),
        ("INPUT_OIDC-AUDIENCE", ""),
        ("INPUT_SECRET", SECRET),
        ("GITHUB_OUTPUT", output_path.as_str()),
    ];
    let out = binary(&["trigger", "--github-action"], &env);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(!stdout.contains(SECRET) && !text(&out.stderr).contains(SECRET));
    // The gateways' text is fenced off from the runner's workflow
    // commands; the step's own error comes after the fence.
    let fence = stdout
        .lines()
        .find_map(|l| l.strip_prefix("::stop-commands::"))
        .expect("commands stopped");
    let resumed = stdout
        .find(&format!("::{fence}::"))
        .expect("commands resumed");
    let error = format!("::error title=delivery-hook::{}: job ", fleet[1].url);
    assert!(stdout[resumed..].contains(&error), "{stdout}");
    let outputs = ci::parse_outputs(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(outputs["state"], "failed");
    assert_eq!(outputs["job-id"].len(), 32);
    assert!(outputs["image"].starts_with("sha256:"));
    let results: Value = serde_json::from_str(&outputs["results"]).unwrap();
    assert_eq!(
        outcomes(&serde_json::json!({ "hosts": results })),
        ["deployed", "failed"]
    );
    assert_eq!(results[1]["job"]["output"], "", "the log holds the output");
    // Neither input nor both: nothing is sent.
    let env = [
        ("INPUT_URL", fleet[0].url.as_str()),
        ("INPUT_CONTAINER", "web"),
    ];
    let out = binary(&["trigger", "--github-action"], &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("give the input `oidc-audience` or `secret`"));
    assert_eq!(counts(&fleet), [1, 1]);
}

#[test]
fn the_component_s_command_deploys_with_the_named_secret_over_the_token() {
    let fleet = hosts(&[HostPlay::Succeed, HostPlay::Succeed]);
    let urls = format!("{}\n{}", fleet[0].url, fleet[1].url);
    let job = Component::read().job(&[
        ("url", &urls),
        ("container", "web"),
        ("wait", "30"),
        ("secret-variable", "DEPLOY_SECRET"),
    ]);
    let words = ci::words(job["script"][0].as_str().unwrap());
    assert_eq!(words[0], "delivery-hook");
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    let env = [
        ("DEPLOY_SECRET", SECRET),
        ("DELIVERY_ID_TOKEN", "not-a-token"),
    ];
    let out = binary(&args, &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(counts(&fleet), [1, 1]);
    let signed: Vec<usize> = fleet.iter().map(StandInHost::signed_requests).collect();
    assert_eq!(signed, [1, 1], "signed with the secret, not sent the token");
}
