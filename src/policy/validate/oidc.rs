//! A project's `oidc` rules: which CI tokens sign in as it.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use toml::Spanned;

use super::{At, MAX_OIDC_TEXT_LEN, MAX_PATTERN_LEN, Reader};
use crate::policy::raw::{ClaimText, ClaimValue, Field, List};
use crate::policy::{ClaimPattern, KeySource, OidcRule, raw};

impl Reader<'_> {
    /// `[[projects.<name>.oidc]]`: one or more tables.
    pub(super) fn oidc_rules(
        &mut self,
        field: At<List<raw::Oidc>>,
        section: &str,
    ) -> Option<Vec<OidcRule>> {
        let span = field.span();
        let rules = match field.into_inner() {
            Field::Value(rules) if !rules.is_empty() => rules,
            _ => {
                self.error(
                    span,
                    format!(
                        "`oidc` must be one or more tables: [[{}.oidc]]",
                        &section[1..section.len() - 1]
                    ),
                );
                return None;
            }
        };
        let mut out = Vec::new();
        let mut ok = true;
        for rule in rules {
            match self.oidc_rule(rule, section) {
                Some(rule) => out.push(rule),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A bounded, non-empty string.
    pub(super) fn oidc_text(
        &mut self,
        key: &str,
        field: At<String>,
    ) -> Option<(String, Range<usize>)> {
        let (text, span) = self.string(key, field)?;
        if text.is_empty() || text.len() > MAX_OIDC_TEXT_LEN {
            self.error(
                span,
                format!("`{key}` must be 1 to {MAX_OIDC_TEXT_LEN} characters"),
            );
            return None;
        }
        Some((text, span))
    }

    pub(super) fn oidc_rule(&mut self, field: At<raw::Oidc>, section: &str) -> Option<OidcRule> {
        let what = format!("[[{}.oidc]]", &section[1..section.len() - 1]);
        let span = field.span();
        let raw::Oidc {
            issuer,
            audience,
            claims,
            jwks_file,
            max_token_age_secs,
            unknown,
        } = self.table(field, &what)?;
        self.unknown_keys(&unknown, &what);
        for (key, found) in [
            ("issuer", issuer.is_some()),
            ("audience", audience.is_some()),
        ] {
            if !found {
                self.error(span.clone(), format!("{what} has no `{key}`"));
            }
        }
        let issuer_span = issuer.as_ref().map_or(span, Spanned::span);
        let issuer = issuer
            .and_then(|v| self.oidc_text("issuer", v))
            .filter(|(text, span)| match crate::auth::oidc::check_url(text) {
                Ok(_) => true,
                Err(e) => {
                    self.error(span.clone(), format!("`issuer`: {e}"));
                    false
                }
            })
            .map(|(text, _)| text);
        let audience = audience.and_then(|v| self.oidc_text("audience", v));
        let claims = match claims {
            Some(v) => self.claims(v),
            None => Some(Vec::new()),
        };
        let jwks_file = jwks_file
            .and_then(|v| self.oidc_text("jwks_file", v))
            .map(|(path, span)| (self.base.join(path), span));
        let max_age = match max_token_age_secs {
            Some(v) => self.integer("max_token_age_secs", v, 1..86_401),
            None => Some(crate::auth::oidc::DEFAULT_MAX_TOKEN_AGE_SECS),
        };
        let issuer = issuer?;
        self.key_source(&issuer, issuer_span.clone(), jwks_file)?;
        let rule = OidcRule {
            issuer,
            audience: audience?.0,
            claims: claims?,
            max_token_age_secs: max_age?,
        };
        if let Some(problem) = rule.unbounded() {
            self.warn(issuer_span, format!("{what} {problem}"));
        }
        Some(rule)
    }

    /// Where the keys of `issuer` come from (its `jwks_file`, read now, or
    /// discovery), the same for every rule that names it.
    fn key_source(
        &mut self,
        issuer: &str,
        issuer_span: Range<usize>,
        jwks_file: Option<(PathBuf, Range<usize>)>,
    ) -> Option<()> {
        let source = match jwks_file {
            None => KeySource::Discovery,
            Some((path, span)) => {
                let set = match self.env.read_file(&path) {
                    Ok(bytes) => {
                        crate::auth::oidc::KeySet::parse(&bytes).map_err(|e| e.to_string())
                    }
                    Err(e) => Err(format!("cannot read it: {e}")),
                };
                match set {
                    Ok(set) => KeySource::File(path, Arc::new(set)),
                    Err(e) => {
                        self.error(span, format!("jwks_file {}: {e}", path.display()));
                        return None;
                    }
                }
            }
        };
        match self.key_sources.get(issuer) {
            Some(known) if known.file() != source.file() => {
                self.error(
                    issuer_span,
                    format!("the issuer {issuer} is given different jwks_file settings; every rule naming it must give the same"),
                );
                return None;
            }
            Some(_) => {}
            None => {
                self.key_sources.insert(issuer.to_owned(), source);
            }
        }
        Some(())
    }

    /// `claims = { name = "glob" | ["glob", …] }`; integers and booleans
    /// stand for their text.
    pub(super) fn claims(
        &mut self,
        field: At<raw::Entries<ClaimValue>>,
    ) -> Option<Vec<ClaimPattern>> {
        let table = self.table(field, "`claims`")?;
        let mut out = Vec::new();
        let mut ok = true;
        for (key, value) in table {
            let name = key.get_ref();
            if name.is_empty() || name.len() > MAX_OIDC_TEXT_LEN {
                self.error(key.span(), "a claim name must be 1 to 512 characters");
                ok = false;
                continue;
            }
            let span = value.span();
            let items: Vec<(Option<String>, Range<usize>)> = match value.into_inner() {
                Field::Value(ClaimValue::One(text)) => vec![(Some(text), span.clone())],
                Field::Value(ClaimValue::Many(items)) => items
                    .into_iter()
                    .map(|item| {
                        let span = item.span();
                        match item.into_inner() {
                            Field::Value(ClaimText(text)) => (Some(text), span),
                            Field::Wrong { .. } => (None, span),
                        }
                    })
                    .collect(),
                Field::Wrong { .. } => vec![(None, span.clone())],
            };
            let mut patterns = Vec::new();
            for (text, item_span) in &items {
                let problem = match text {
                    None => Some(format!(
                        "claim `{name}` must be a string, a number, a boolean, or a list of them"
                    )),
                    Some(p) if p.is_empty() || p.len() > MAX_PATTERN_LEN => Some(format!(
                        "claim `{name}`: a pattern must be 1 to {MAX_PATTERN_LEN} characters"
                    )),
                    Some(p) => crate::policy::glob(p, crate::policy::GlobSyntax::Path)
                        .err()
                        .map(|e| format!("claim `{name}` pattern `{p}`: {}", e.kind())),
                };
                match (problem, text) {
                    (None, Some(text)) => patterns.push(text.clone()),
                    (problem, _) => {
                        self.error(item_span.clone(), problem.unwrap_or_default());
                        ok = false;
                    }
                }
            }
            if items.is_empty() {
                self.error(span, format!("claim `{name}` lists no pattern"));
                ok = false;
                continue;
            }
            match ClaimPattern::new(name.to_owned(), patterns) {
                Ok(claim) => out.push(claim),
                Err(e) => {
                    self.error(span, format!("claim `{name}`: {}", e.kind()));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}
