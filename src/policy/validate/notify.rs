//! A project's `notify` targets: where its deploys' results go.

use super::{At, Reader};
use crate::policy::raw::List;
use crate::policy::{Hidden, NotifyKind, NotifyTarget, raw};

use base64::Engine as _;
use std::ops::Range;

impl Reader<'_> {
    /// `[[projects.<name>.notify]]`: where the project's deploy results go.
    pub(super) fn notify_targets(
        &mut self,
        field: At<List<raw::Target>>,
        section: &str,
    ) -> Option<Vec<NotifyTarget>> {
        let what = format!("[[{}.notify]]", &section[1..section.len() - 1]);
        let span = field.span();
        let targets = self.value("notify", field, &format!("one or more tables: {what}"))?;
        if targets.is_empty() {
            self.error(span, format!("`notify` must be one or more tables: {what}"));
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, target) in targets.into_iter().enumerate() {
            match self.notify_target(target, &what, i + 1) {
                Some(target) => out.push(target),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(super) fn notify_target(
        &mut self,
        field: At<raw::Target>,
        what: &str,
        number: usize,
    ) -> Option<NotifyTarget> {
        let span = field.span();
        let mut target = self.table(field, what)?;
        self.unknown_keys(&target.unknown, what);
        let Some((kind, kind_span)) = target.kind.take().and_then(|v| self.string("kind", v))
        else {
            self.error(span, format!("{what} has no `kind`"));
            return None;
        };
        let fitting = self.keys_fit_kind(&kind, kind_span, &target)?;
        let events = match target.events {
            None => Some(crate::policy::EVENTS.to_vec()),
            Some(v) => self.notify_events(v),
        };
        let mut variables = Vec::new();
        let raw::Target {
            url_env,
            secret_env,
            to,
            ..
        } = target;
        let built = match kind.as_str() {
            "email" => self.email_target(to, &span, what),
            "slack" => {
                let Some(url_env) = url_env else {
                    self.error(span, format!("{what} has no `url_env`"));
                    return None;
                };
                self.target_url(url_env, &mut variables)?
                    .map(|url| NotifyKind::Slack { url: Hidden(url) })
            }
            _ => {
                let Some(url_env) = url_env else {
                    self.error(span, format!("{what} has no `url_env`"));
                    return None;
                };
                let url = self.target_url(url_env, &mut variables)?;
                let key = self.webhook_key(secret_env, &span, what, &mut variables);
                url.zip(key).map(|(url, key)| NotifyKind::Webhook {
                    url: Hidden(url),
                    key: Hidden(key),
                })
            }
        };
        match (built, events, fitting) {
            (Some(kind), Some(events), true) => {
                Some(NotifyTarget::new(number, kind, variables, events))
            }
            _ => None,
        }
    }

    /// Whether each key the target sets is one its kind reads (each that is
    /// not is an error); `None` when the kind is none of the three.
    fn keys_fit_kind(
        &mut self,
        kind: &str,
        kind_span: Range<usize>,
        target: &raw::Target,
    ) -> Option<bool> {
        let only = |key: &str, kinds: &str| format!("`{key}` is for {kinds} targets");
        let misplaced: Vec<(Range<usize>, String)> = match kind {
            "webhook" | "slack" => {
                let to = target
                    .to
                    .as_ref()
                    .map(|to| (to.span(), only("to", "email")));
                let secret = target
                    .secret_env
                    .as_ref()
                    .filter(|_| kind == "slack")
                    .map(|secret| (secret.span(), only("secret_env", "webhook")));
                to.into_iter().chain(secret).collect()
            }
            "email" => [
                ("url_env", &target.url_env),
                ("secret_env", &target.secret_env),
            ]
            .into_iter()
            .filter_map(|(key, field)| {
                field
                    .as_ref()
                    .map(|field| (field.span(), only(key, "webhook and slack")))
            })
            .collect(),
            other => {
                self.error(
                    kind_span,
                    format!("notify kind `{other}` is none of webhook, slack, email"),
                );
                return None;
            }
        };
        let fits = misplaced.is_empty();
        for (span, message) in misplaced {
            self.error(span, message);
        }
        Some(fits)
    }

    /// An email target's addresses; it needs `[notify.smtp]`.
    fn email_target(
        &mut self,
        to: Option<At<List<String>>>,
        span: &Range<usize>,
        what: &str,
    ) -> Option<NotifyKind> {
        let Some((addresses, list_span)) = to.and_then(|v| self.strings("to", v)) else {
            self.error(span.clone(), format!("{what} has no `to`"));
            return None;
        };
        let mut ok = true;
        if addresses.is_empty() {
            self.error(list_span.clone(), "`to` must list at least one address");
            ok = false;
        }
        for (address, span) in &addresses {
            if address.parse::<lettre::message::Mailbox>().is_err() {
                self.error(span.clone(), format!("`{address}` is not a mail address"));
                ok = false;
            }
        }
        if self.smtp.is_none() {
            self.error(list_span, "an email target needs [notify.smtp]");
            ok = false;
        }
        ok.then(|| NotifyKind::Email {
            to: addresses.into_iter().map(|(a, _)| a).collect(),
        })
    }

    /// The URL a webhook or Slack target's `url_env` holds, its variable
    /// noted; `None` outside when the variable is unset, `Some(None)` when
    /// its value is no URL the gateway sends to.
    fn target_url(
        &mut self,
        url_env: At<String>,
        variables: &mut Vec<String>,
    ) -> Option<Option<reqwest::Url>> {
        let (name, text, url_span) = self.env_value("url_env", url_env)?;
        let url = self.notify_url(&name, &text, url_span);
        variables.push(name);
        Some(url)
    }

    /// A webhook target's signing key: `secret_env` names a variable
    /// holding a Standard Webhooks key (`whsec_` and the base64 of 16 or
    /// more bytes).
    fn webhook_key(
        &mut self,
        secret_env: Option<At<String>>,
        span: &Range<usize>,
        what: &str,
        variables: &mut Vec<String>,
    ) -> Option<Vec<u8>> {
        let Some(field) = secret_env else {
            self.error(span.clone(), format!("{what} has no `secret_env`"));
            return None;
        };
        let (var, text, span) = self.env_value("secret_env", field)?;
        variables.push(var);
        let key = text
            .strip_prefix("whsec_")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .filter(|key| key.len() >= 16);
        if key.is_none() {
            self.error(
                span,
                "`secret_env` must hold a Standard Webhooks key: whsec_ and the base64 of 16 or more bytes",
            );
        }
        key
    }

    /// A target's URL: http or https, with a host. Never printed: it may
    /// hold a token.
    pub(super) fn notify_url(
        &mut self,
        name: &str,
        text: &str,
        span: Range<usize>,
    ) -> Option<reqwest::Url> {
        let url = reqwest::Url::parse(text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        match url {
            None => {
                self.error(span, format!("`{name}` holds no http or https URL"));
                None
            }
            Some(url) => {
                if url.scheme() == "http" && !crate::outbound::is_loopback(&url) {
                    self.warn(
                        span,
                        format!(
                            "`{name}` holds a plain http URL: deploy results travel unencrypted"
                        ),
                    );
                }
                Some(url)
            }
        }
    }

    /// `events`: end states.
    pub(super) fn notify_events(
        &mut self,
        field: At<List<String>>,
    ) -> Option<Vec<crate::policy::Outcome>> {
        let (items, span) = self.strings("events", field)?;
        if items.is_empty() {
            self.error(span, "`events`, when present, must list an end state");
            return None;
        }
        let mut events = Vec::new();
        let mut ok = true;
        for (name, span) in items {
            match crate::policy::Outcome::parse(&name) {
                Some(state) if !events.contains(&state) => events.push(state),
                Some(_) => {}
                None => {
                    let names: Vec<&str> =
                        crate::policy::EVENTS.iter().map(|s| s.as_str()).collect();
                    self.error(
                        span,
                        format!(
                            "`events` names `{name}`, which is none of {}",
                            names.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(events)
    }
}
