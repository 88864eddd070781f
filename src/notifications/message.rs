//! A job's end as people read it: the facts of a message's `data`, as a
//! Slack message and as a mail.

use serde_json::{Value, json};

use super::DeliveryError;

/// Slack shows at most 3000 characters in a text block.
const SLACK_TEXT: usize = 2900;

/// What a notification tells: read from the message's JSON, the job as the
/// API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `deploy.<state>`, or `deploy.test`.
    pub event: String,
    pub job: String,
    pub project: String,
    pub state: String,
    /// The container, or `service <name>` for a Swarm job.
    pub target: String,
    pub action: String,
    pub image_before: Option<String>,
    pub image_after: Option<String>,
    pub requested_by: Option<String>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    /// The job's web page.
    pub page: Option<String>,
}

/// A message as the notifier writes it, read back as a type: its event and
/// the fields of the job (as the API shows it) that a message tells.
#[derive(serde::Deserialize)]
struct Message {
    #[serde(rename = "type")]
    event: String,
    data: JobData,
    #[serde(default)]
    page: Option<String>,
}

#[derive(serde::Deserialize)]
struct JobData {
    #[serde(default)]
    id: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    action: String,
    container_name: Option<String>,
    swarm_service: Option<String>,
    previous_image: Option<String>,
    running_image: Option<String>,
    requested_by: Option<Who>,
    duration_ms: Option<u64>,
    error: Option<String>,
}

/// Who asked, as the API writes it.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Who {
    Key {
        key_index: u32,
    },
    Token {
        oidc_issuer: String,
        oidc_subject: String,
    },
}

/// `None` for an absent or empty text.
fn given(text: Option<String>) -> Option<String> {
    text.filter(|s| !s.is_empty())
}

impl Facts {
    pub fn from_payload(payload: &str) -> Result<Self, DeliveryError> {
        let Message { event, data, page } =
            serde_json::from_str(payload).map_err(|e| DeliveryError::Message(e.to_string()))?;
        let target = match given(data.swarm_service) {
            Some(service) => format!("service {service}"),
            None => given(data.container_name).unwrap_or_default(),
        };
        let requested_by = data.requested_by.map(|who| match who {
            Who::Key { key_index } => format!("the project's key {key_index}"),
            Who::Token {
                oidc_issuer,
                oidc_subject,
            } => format!("CI token {oidc_subject} ({oidc_issuer})"),
        });
        Ok(Self {
            event,
            job: data.id,
            project: data.project,
            state: data.state,
            target,
            action: data.action,
            image_before: given(data.previous_image),
            image_after: given(data.running_image),
            requested_by,
            duration_ms: data.duration_ms,
            error: given(data.error),
            page: given(page),
        })
    }

    /// `failed` as people say it.
    fn outcome(&self) -> String {
        match self.state.as_str() {
            "rolled_back" => "rolled back".into(),
            "timed_out" => "timed out".into(),
            other => other.to_owned(),
        }
    }

    fn headline(&self) -> String {
        if self.event == "deploy.test" {
            return format!(
                "Test notification from delivery-hook for project {}",
                self.project
            );
        }
        format!(
            "Deploy {}: {} of project {}",
            self.outcome(),
            self.target,
            self.project
        )
    }

    /// The facts as (name, value) lines.
    fn lines(&self) -> Vec<(&'static str, String)> {
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let mut lines = vec![
            ("Job", self.job.clone()),
            ("Project", self.project.clone()),
            ("Target", self.target.clone()),
            ("Action", self.action.clone()),
            ("State", self.state.clone()),
            ("Image before", or_none(&self.image_before)),
            ("Image after", or_none(&self.image_after)),
            ("Requested by", or_none(&self.requested_by)),
            (
                "Duration",
                self.duration_ms
                    .map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
            ),
        ];
        if let Some(page) = &self.page {
            lines.push(("Page", page.clone()));
        }
        lines
    }

    /// A Slack incoming-webhook message: `text` for notifications and
    /// clients without blocks, and blocks with the facts.
    pub fn slack(&self) -> Value {
        let fields: Vec<Value> = self
            .lines()
            .into_iter()
            .map(|(name, value)| json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", escape(&value))}))
            .collect();
        let mut blocks = vec![
            json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}*", escape(&self.headline()))}}),
            // A section holds at most ten fields.
            json!({"type": "section", "fields": fields}),
        ];
        if let Some(error) = &self.error {
            let error: String = escape(error).chars().take(SLACK_TEXT).collect();
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Error*\n{error}")}}));
        }
        json!({"text": self.headline(), "blocks": blocks})
    }

    pub fn subject(&self) -> String {
        format!("[delivery-hook] {}", self.headline())
    }

    /// The mail's plain text.
    pub fn text(&self) -> String {
        let mut text = format!("{}\n\n", self.headline());
        for (name, value) in self.lines() {
            text.push_str(&format!("{name}: {value}\n"));
        }
        if let Some(error) = &self.error {
            text.push_str(&format!("\nError: {error}\n"));
        }
        text
    }
}

/// Slack's mrkdwn treats `&`, `<` and `>` as markup.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> String {
        json!({
            "type": "deploy.rolled_back",
            "timestamp": "2026-12-07T01:00:00.000Z",
            "data": {
                "id": "5f0c3a9e8b7d4c21a0e9f8d7c6b5a493",
                "project": "billing",
                "action": "pull",
                "state": "rolled_back",
                "container_name": "billing-web",
                "previous_image": "sha256:aaa",
                "running_image": "sha256:aaa",
                "requested_by": {"key_index": 0},
                "duration_ms": 9411,
                "error": "the service did not come up <crash>"
            }
        })
        .to_string()
    }

    #[test]
    fn facts_read_from_the_job_make_a_slack_message_and_a_mail() {
        let facts = Facts::from_payload(&payload()).unwrap();
        assert_eq!(facts.target, "billing-web");
        assert_eq!(facts.requested_by.as_deref(), Some("the project's key 0"));
        let slack = facts.slack();
        assert_eq!(
            slack["text"],
            "Deploy rolled back: billing-web of project billing"
        );
        let fields = slack["blocks"][1]["fields"].as_array().unwrap();
        assert!(fields.len() <= 10);
        assert!(fields.iter().any(|f| f["text"] == "*Duration*\n9.4 s"));
        assert!(
            slack["blocks"][2]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("&lt;crash&gt;")
        );
        let text = facts.text();
        assert!(text.contains("Image before: sha256:aaa\n"), "{text}");
        assert!(text.contains("Error: the service did not come up <crash>"));
        assert!(
            facts
                .subject()
                .starts_with("[delivery-hook] Deploy rolled back")
        );
    }

    #[test]
    fn a_message_with_the_job_s_page_links_to_it() {
        let data: Value = serde_json::from_str::<Value>(&payload()).unwrap()["data"].clone();
        let page = "https://deploy.example.com/ui/jobs/5f0c3a9e8b7d4c21a0e9f8d7c6b5a493";
        let message = crate::notifications::message("rolled_back", 0, data.clone(), Some(page));
        let facts = Facts::from_payload(&message).unwrap();
        assert!(facts.text().contains(&format!("Page: {page}\n")));
        let fields = facts.slack()["blocks"][1]["fields"].clone();
        assert_eq!(fields.as_array().unwrap().len(), 10, "Slack's most");
        let without = crate::notifications::message("rolled_back", 0, data, None);
        assert!(
            !Facts::from_payload(&without)
                .unwrap()
                .text()
                .contains("Page:")
        );
    }
}
