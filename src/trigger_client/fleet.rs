//! Several hosts: the gateways a deploy goes to, a wave of `parallel` at a
//! time, each followed to its end. After a wave in which a host did not
//! succeed, no further host is sent anything.

use std::path::Path;

use futures_util::future::join_all;
use serde::Serialize;

use super::{
    EXIT_JOB_FAILED, EXIT_REFUSED, EXIT_SUCCEEDED, OutputFormat, Prepared, Trigger, TriggerError,
};
use crate::api::Job;

/// The gateways to deploy to, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts {
    pub urls: Vec<String>,
    /// How many hosts are deployed at once.
    pub parallel: usize,
    /// Report per host (`--output json`: `{"exit_code", "hosts"}`): set for
    /// a list of hosts; a single `--url` answers as it always did.
    pub per_host: bool,
}

impl Hosts {
    /// The hosts of `--url` values and the `--urls-file`'s lines, each
    /// checked: one URL a line or word, `#` starting a comment.
    pub fn read(
        urls: &[String],
        file: Option<&Path>,
        parallel: usize,
    ) -> Result<Self, TriggerError> {
        let mut listed: Vec<String> = urls.iter().flat_map(|u| url_words(u)).collect();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| TriggerError::UrlsFile {
                path: path.to_owned(),
                source,
            })?;
            listed.extend(url_words(&text));
        }
        let mut hosts = Vec::new();
        for url in listed {
            let url = checked_url(&url)?;
            if hosts.contains(&url) {
                return Err(TriggerError::ListedTwice(url));
            }
            hosts.push(url);
        }
        if hosts.is_empty() {
            return Err(TriggerError::NoUrl);
        }
        Ok(Self {
            per_host: hosts.len() > 1 || file.is_some(),
            urls: hosts,
            parallel: parallel.max(1),
        })
    }

    /// What a deploy to these hosts needs of `t`.
    pub fn check(&self, t: &Trigger) -> Result<(), TriggerError> {
        if self.urls.len() > 1 && t.wait.is_none() {
            return Err(TriggerError::WaitNeeded);
        }
        Ok(())
    }
}

/// The URLs in `text`: whitespace-separated words, up to a `#` comment on
/// each line.
fn url_words(text: &str) -> Vec<String> {
    text.lines()
        .flat_map(|line| {
            line.split_whitespace()
                .take_while(|word| !word.starts_with('#'))
        })
        .map(str::to_owned)
        .collect()
}

/// A gateway's base URL: http or https, a host, no query or fragment.
fn checked_url(text: &str) -> Result<String, TriggerError> {
    let url = url::Url::parse(text).map_err(|source| TriggerError::NotUrl {
        text: text.to_owned(),
        source,
    })?;
    let usable = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.query().is_none()
        && url.fragment().is_none();
    if !usable {
        return Err(TriggerError::NotBaseUrl(text.to_owned()));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// How a host's deploy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The job succeeded.
    Deployed,
    /// Accepted, not waited for (no `--wait`).
    Accepted,
    /// The job failed, timed out or was rolled back (exit 1).
    Failed,
    /// The request was refused, or the gateway could not be reached (exit 2).
    Refused,
    /// Never sent anything: an earlier host did not succeed.
    NotTouched,
}

/// One host's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct HostResult {
    pub url: String,
    pub outcome: Outcome,
    /// `trigger`'s exit code for this host; absent when it was not touched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
    /// Why it did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The job as last read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
}

impl HostResult {
    pub(super) fn refused(url: &str, line: String) -> Self {
        Self {
            url: url.to_owned(),
            outcome: Outcome::Refused,
            exit_code: Some(EXIT_REFUSED),
            error: Some(line),
            job: None,
        }
    }

    pub(super) fn ended(url: &str, code: u8, job: Job, waited: bool) -> Self {
        let outcome = match (code, waited) {
            (EXIT_SUCCEEDED, true) => Outcome::Deployed,
            (EXIT_SUCCEEDED, false) => Outcome::Accepted,
            _ => Outcome::Failed,
        };
        Self {
            url: url.to_owned(),
            outcome,
            exit_code: Some(code),
            error: (code == EXIT_JOB_FAILED).then(|| {
                let reason = job.error.as_deref().unwrap_or("no reason given");
                format!("job {} {}: {reason}", job.id, job.state.as_str())
            }),
            job: Some(job),
        }
    }

    fn not_touched(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            outcome: Outcome::NotTouched,
            exit_code: None,
            error: None,
            job: None,
        }
    }

    fn succeeded(&self) -> bool {
        self.exit_code == Some(EXIT_SUCCEEDED)
    }
}

/// Every host's outcome, in the order they were listed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The exit code of the first host, in list order, that did not
    /// succeed; 0 when all did.
    pub exit_code: u8,
    pub hosts: Vec<HostResult>,
}

impl Report {
    fn new(hosts: Vec<HostResult>) -> Self {
        let exit_code = hosts
            .iter()
            .find_map(|h| h.exit_code.filter(|&c| c != EXIT_SUCCEEDED))
            .unwrap_or(EXIT_SUCCEEDED);
        Self { exit_code, hosts }
    }

    /// The host whose job the CI step's outputs describe: the first that
    /// did not succeed, else the last one deployed.
    pub fn decisive(&self) -> Option<&HostResult> {
        self.hosts
            .iter()
            .find(|h| h.exit_code.is_some_and(|c| c != EXIT_SUCCEEDED))
            .or_else(|| self.hosts.iter().rev().find(|h| h.job.is_some()))
    }

    /// One line per host: which were deployed, which failed, which were
    /// not touched.
    pub fn lines(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| match (h.outcome, &h.error) {
                (Outcome::Deployed, _) => format!("deployed:    {}", h.url),
                (Outcome::Accepted, _) => format!("accepted:    {}", h.url),
                (Outcome::NotTouched, _) => format!("not touched: {}", h.url),
                (Outcome::Failed | Outcome::Refused, error) => format!(
                    "failed:      {} (exit {}: {})",
                    h.url,
                    h.exit_code.unwrap_or(EXIT_REFUSED),
                    error.as_deref().unwrap_or("")
                ),
            })
            .collect()
    }

    /// The lines, then (`--output json`) the report as JSON on stdout.
    pub fn print(&self, output: OutputFormat) {
        for line in self.lines() {
            match output {
                OutputFormat::Text => println!("{line}"),
                OutputFormat::Json => eprintln!("{line}"),
            }
        }
        if output == OutputFormat::Json {
            println!("{}", serde_json::to_string(self).unwrap_or_default());
        }
    }
}

/// Deploys to `hosts` a wave at a time; after a wave with a host that did
/// not succeed, the rest are not touched.
pub async fn deploy(prepared: &Prepared, hosts: &Hosts) -> Report {
    let labelled = hosts.urls.len() > 1;
    let mut results = Vec::with_capacity(hosts.urls.len());
    let mut waves = hosts.urls.chunks(hosts.parallel.max(1));
    for wave in waves.by_ref() {
        let sent = wave
            .iter()
            .map(|url| prepared.deploy_to(url, labelled.then(|| url.clone())));
        let done = join_all(sent).await;
        let stop = !done.iter().all(HostResult::succeeded);
        results.extend(done);
        if stop {
            break;
        }
    }
    results.extend(waves.flatten().map(|url| HostResult::not_touched(url)));
    Report::new(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(urls: &[&str], parallel: usize) -> Result<Hosts, TriggerError> {
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        Hosts::read(&urls, None, parallel)
    }

    #[test]
    fn urls_are_words_or_lines_with_comments() {
        let listed = hosts(
            &[
                "https://a.example/",
                "# the second site\nhttps://b.example  # eu\n\n  http://10.0.0.3:8000\n",
            ],
            0,
        )
        .unwrap();
        assert_eq!(
            listed,
            Hosts {
                urls: vec![
                    "https://a.example".into(),
                    "https://b.example".into(),
                    "http://10.0.0.3:8000".into()
                ],
                parallel: 1,
                per_host: true,
            }
        );
        assert!(!hosts(&["https://a.example"], 1).unwrap().per_host);
    }

    #[test]
    fn a_list_that_cannot_be_deployed_is_refused_whole() {
        for (urls, says) in [
            (&["ftp://a.example"][..], "not a gateway's base URL"),
            (&["https://a.example?x=1"], "not a gateway's base URL"),
            (&["a.example"], "is not one"),
            (&["https://a.example", "https://a.example/"], "listed twice"),
            (&["# nothing\n"], "no gateway URL"),
        ] {
            let error = hosts(urls, 1).unwrap_err().to_string();
            assert!(error.contains(says), "{urls:?}: {error}");
        }
    }

    #[test]
    fn the_exit_code_is_the_first_failed_host_in_list_order() {
        let mut first = HostResult::not_touched("https://a");
        first.exit_code = Some(EXIT_SUCCEEDED);
        first.outcome = Outcome::Deployed;
        let refused = HostResult::refused("https://b", "refused (401 x): y".into());
        let mut failed = HostResult::not_touched("https://c");
        failed.exit_code = Some(EXIT_JOB_FAILED);
        failed.outcome = Outcome::Failed;
        let report = Report::new(vec![first, refused, failed]);
        assert_eq!(report.exit_code, EXIT_REFUSED);
        assert_eq!(report.decisive().map(|h| h.url.as_str()), Some("https://b"));
        assert_eq!(
            report.lines(),
            [
                "deployed:    https://a",
                "failed:      https://b (exit 2: refused (401 x): y)",
                "failed:      https://c (exit 1: )",
            ]
        );
        let value = serde_json::to_value(&report).unwrap();
        assert_eq!(value["hosts"][1]["outcome"], "refused");
        assert_eq!(value["hosts"][0].get("job"), None);
    }
}
