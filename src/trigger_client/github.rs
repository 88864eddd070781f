//! `trigger --github-action`: the GitHub Action (`action.yml`) runs the
//! image with only these two arguments; its inputs arrive as the
//! `INPUT_<NAME>` variables the runner sets, so the secret never is an
//! argument, and the outputs go to the file `GITHUB_OUTPUT` names.

use std::io::Write;

use super::fleet::{Hosts, Report};
use super::{
    EXIT_REFUSED, OutputFormat, Prepared, TokenSource, Trigger, TriggerError, TriggerTarget,
};
use crate::names::Action;

/// Why the action's inputs cannot be deployed, or its outputs not written.
#[derive(Debug, thiserror::Error)]
enum ActionError {
    #[error("the input `{name}` is `{text}`, not a whole number")]
    NotNumber { name: &'static str, text: String },
    #[error("give the input `container` or `service` (one of them)")]
    Target,
    #[error("the input `action` is `{0}`: pull or build")]
    Action(String),
    #[error("give the input `oidc-audience` or `secret` (one of them)")]
    Credential,
    #[error(transparent)]
    Trigger(#[from] TriggerError),
    #[error("cannot write the outputs to GITHUB_OUTPUT: {0}")]
    Outputs(#[source] std::io::Error),
}

/// The variable that carries the `secret` input; `trigger` reads the
/// secret from it as from `--secret-env`.
pub const SECRET_INPUT: &str = "INPUT_SECRET";

/// An input as the runner passes it: `INPUT_` and the name in capitals;
/// an empty value is an input not given.
fn input(name: &str) -> Option<String> {
    let var = format!("INPUT_{}", name.to_ascii_uppercase());
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A whole number input, or its default.
fn number(name: &'static str, default: u64) -> Result<u64, ActionError> {
    match input(name) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| ActionError::NotNumber { name, text }),
    }
}

/// What to deploy, to which hosts, from the action's inputs.
fn from_inputs() -> Result<(Trigger, Hosts), ActionError> {
    let target = match (input("container"), input("service")) {
        (Some(container), None) => TriggerTarget::Container(container),
        (None, Some(service)) => TriggerTarget::Service(service),
        _ => return Err(ActionError::Target),
    };
    let action = match input("action").as_deref() {
        None | Some("pull") => Action::Pull,
        Some("build") => Action::Build,
        Some(other) => return Err(ActionError::Action(other.to_owned())),
    };
    let token = match (input("oidc-audience"), input("secret")) {
        (Some(audience), None) => Some(TokenSource::GitHubActions { audience }),
        (None, Some(_)) => None,
        _ => return Err(ActionError::Credential),
    };
    let urls = input("url").into_iter().collect::<Vec<_>>();
    let hosts = Hosts::read(&urls, None, number("parallel", 1)? as usize)?;
    let trigger = Trigger {
        target,
        action,
        project: input("project"),
        image: input("image"),
        rollback_to: None,
        wait: Some(number("wait", 600)?),
        output: OutputFormat::Text,
        token,
        secret_env: SECRET_INPUT.to_owned(),
    };
    Ok((trigger, hosts))
}

/// Runs the action: the deploy's lines, the per-host lines, the outputs;
/// returns the exit code.
pub async fn run_action() -> u8 {
    let prepared = from_inputs().and_then(|(trigger, hosts)| {
        hosts.check(&trigger)?;
        Ok((Prepared::new(trigger)?, hosts))
    });
    let (prepared, hosts) = match prepared {
        Ok(ready) => ready,
        Err(e) => {
            println!("::error title=delivery-hook::{e}");
            return EXIT_REFUSED;
        }
    };
    // What the gateways say (compose's output above all) is printed as
    // text: the runner does not read workflow commands in it.
    let resume = random_token("delivery-hook-");
    println!("::stop-commands::{resume}");
    let report = super::fleet::deploy(&prepared, &hosts).await;
    for line in report.lines() {
        println!("{line}");
    }
    println!("::{resume}::");
    if let Some(failed) = report.decisive().filter(|h| h.exit_code != Some(0)) {
        let error = failed.error.as_deref().unwrap_or("");
        println!("::error title=delivery-hook::{}: {error}", failed.url);
    }
    if let Err(e) = write_outputs(&report) {
        println!("::error title=delivery-hook::{e}");
        return report.exit_code.max(EXIT_REFUSED);
    }
    report.exit_code
}

/// The step's outputs: `job-id`, `state` and `image` of the decisive host's
/// job, and `results`, every host's as JSON, each job without its output
/// (the log holds its tail; outputs are bounded in size).
pub fn outputs(report: &Report) -> Vec<(&'static str, String)> {
    let job = report.decisive().and_then(|h| h.job.as_ref());
    let mut hosts = report.hosts.clone();
    for host in &mut hosts {
        if let Some(job) = &mut host.job {
            job.output.clear();
        }
    }
    let results = serde_json::to_string(&hosts).unwrap_or_default();
    vec![
        ("job-id", job.map(|j| j.id.clone()).unwrap_or_default()),
        (
            "state",
            job.map(|j| j.state.as_str().to_owned()).unwrap_or_default(),
        ),
        (
            "image",
            job.and_then(|j| j.running_image.clone())
                .unwrap_or_default(),
        ),
        ("results", results),
    ]
}

/// Appends the outputs to the file `GITHUB_OUTPUT` names; nothing outside
/// a runner.
fn write_outputs(report: &Report) -> Result<(), ActionError> {
    let Some(path) = std::env::var_os("GITHUB_OUTPUT").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let mut text = String::new();
    for (name, value) in outputs(report) {
        text.push_str(&output_entry(name, &value));
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(ActionError::Outputs)
}

/// `name<<DELIMITER`, the value, `DELIMITER`: the runner's form for values
/// of any number of lines. The delimiter is random and not in the value.
fn output_entry(name: &str, value: &str) -> String {
    loop {
        let delimiter = random_token("ghadelimiter_");
        if !value.contains(&delimiter) {
            return format!("{name}<<{delimiter}\n{value}\n{delimiter}\n");
        }
    }
}

/// `prefix` and 96 random bits in hex: a word no one can guess in advance.
fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    let _ = getrandom::fill(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_of_several_lines_is_framed_by_a_delimiter_it_does_not_hold() {
        let entry = output_entry("results", "line one\nline two");
        let lines: Vec<&str> = entry.lines().collect();
        let delimiter = lines[0].strip_prefix("results<<").unwrap();
        assert!(delimiter.starts_with("ghadelimiter_") && delimiter.len() > 20);
        assert_eq!(&lines[1..], ["line one", "line two", delimiter]);
        assert_ne!(output_entry("a", ""), output_entry("a", ""));
    }
}
