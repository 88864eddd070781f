//! `[[projects.<name>.oidc]]`: which CI tokens may act for a project.
//!
//! A rule names an issuer, an audience and claims; a verified token matches
//! when its `aud` holds the audience, it is no older than the rule allows,
//! and every listed claim matches one of its globs (`*` does not cross
//! `/`). A project's rules are alternatives.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use globset::GlobSet;

use crate::auth::oidc::{GITHUB_ISSUER, GITLAB_ISSUER, KeySet, Verified};

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `<issuer>/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery,
    /// A JWKS file read with the policy (`jwks_file`), for hosts without
    /// network access; reloading the policy reads it again.
    File(PathBuf, Arc<KeySet>),
}

impl KeySource {
    /// The `jwks_file`, for a source that is one.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            KeySource::Discovery => None,
            KeySource::File(path, _) => Some(path),
        }
    }
}

/// One claim a token must carry: any of the globs.
#[derive(Debug, Clone)]
pub struct ClaimPattern {
    pub name: String,
    pub patterns: Vec<String>,
    set: GlobSet,
}

impl ClaimPattern {
    pub(crate) fn new(name: String, patterns: Vec<String>) -> Result<Self, globset::Error> {
        let set = super::glob_set(patterns.iter().map(String::as_str), super::GlobSyntax::Path)?;
        Ok(Self {
            name,
            patterns,
            set,
        })
    }
}

/// One accepted kind of token.
#[derive(Debug, Clone)]
pub struct OidcRule {
    pub issuer: String,
    pub audience: String,
    pub claims: Vec<ClaimPattern>,
    pub max_token_age_secs: u64,
}

/// Why a verified token does not match a rule, in the order checked: a
/// later one means the token came closer to the rule. The claims come
/// before the audience and the age: only a token whose claims a rule of the
/// project accepts learns more than that no rule is its, so a token's
/// answer for a project that does not exist is the answer for one whose
/// rules it does not match. A token too old for the rule its claims match
/// is told so, and trigger renews it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mismatch {
    Issuer,
    Claims,
    Audience,
    TooOld,
}

impl OidcRule {
    /// Whether `token`, verified, may act under this rule at Unix time `now`.
    pub fn admits(&self, token: &Verified, now: u64) -> Result<(), Mismatch> {
        if token.issuer != self.issuer {
            return Err(Mismatch::Issuer);
        }
        let matches = |claim: &ClaimPattern| {
            token
                .claim_text(&claim.name)
                .is_some_and(|value| claim.set.is_match(value.as_ref()))
        };
        if !self.claims.iter().all(matches) {
            return Err(Mismatch::Claims);
        }
        if !token.audiences.contains(&self.audience) {
            return Err(Mismatch::Audience);
        }
        if now.saturating_sub(token.issued_at) > self.max_token_age_secs {
            return Err(Mismatch::TooOld);
        }
        Ok(())
    }

    /// Why a rule of a multi-tenant issuer accepts too much: every
    /// organisation's jobs get tokens from it, so a rule must name the
    /// repository or project.
    pub fn unbounded(&self) -> Option<&'static str> {
        let has = |names: &[&str]| self.claims.iter().any(|c| names.contains(&c.name.as_str()));
        let issuer = self.issuer.trim_end_matches('/');
        if issuer == GITHUB_ISSUER && !has(&["repository", "repository_owner_id"]) {
            Some(
                "names neither `repository` nor `repository_owner_id`: any GitHub repository's workflow gets tokens from this issuer",
            )
        } else if issuer == GITLAB_ISSUER && !has(&["project_path", "project_id"]) {
            Some(
                "names neither `project_path` nor `project_id`: any gitlab.com project's job gets tokens from this issuer",
            )
        } else {
            None
        }
    }
}

impl fmt::Display for OidcRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "issuer {}, audience {}", self.issuer, self.audience)?;
        for claim in &self.claims {
            write!(f, ", {} = {}", claim.name, claim.patterns.join(" | "))?;
        }
        write!(f, ", at most {} s old", self.max_token_age_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(claims: serde_json::Value, issued_at: u64) -> Verified {
        Verified {
            issuer: GITHUB_ISSUER.into(),
            jti: "j".into(),
            audiences: vec!["https://deploy.example".into(), "other".into()],
            expires_at: issued_at + 300,
            issued_at,
            claims: claims.as_object().unwrap().clone(),
        }
    }

    fn rule(claims: &[(&str, &[&str])]) -> OidcRule {
        OidcRule {
            issuer: GITHUB_ISSUER.into(),
            audience: "https://deploy.example".into(),
            claims: claims
                .iter()
                .map(|(n, p)| {
                    ClaimPattern::new(n.to_string(), p.iter().map(|s| s.to_string()).collect())
                        .unwrap()
                })
                .collect(),
            max_token_age_secs: 600,
        }
    }

    #[test]
    fn every_listed_claim_must_match_one_of_its_globs() {
        let r = rule(&[
            ("repository", &["org/web"]),
            ("ref", &["refs/heads/main", "refs/tags/v*"]),
            ("run_attempt", &["1"]),
            ("fork", &["false"]),
        ]);
        let base = json!({"repository": "org/web", "ref": "refs/heads/main", "run_attempt": 1, "fork": false});
        let ok = |claims: serde_json::Value| r.admits(&token(claims, 1000), 1010);
        assert_eq!(ok(base.clone()), Ok(()));
        let mut tag = base.clone();
        tag["ref"] = json!("refs/tags/v1.2");
        assert_eq!(ok(tag), Ok(()));
        let mut text = base.clone();
        (text["run_attempt"], text["fork"]) = (json!("1"), json!("false"));
        assert_eq!(ok(text), Ok(()), "a number or boolean compares as its text");
        for (name, value) in [
            ("repository", json!("org/web2")),
            ("repository", json!("org/web/x")),
            ("ref", json!("refs/heads/feature")),
            ("ref", json!("refs/tags/v1/evil")),
            ("run_attempt", json!(2)),
            ("run_attempt", json!([1])),
            ("fork", json!(true)),
        ] {
            let mut claims = base.clone();
            claims[name] = value.clone();
            assert_eq!(ok(claims), Err(Mismatch::Claims), "{name} = {value}");
        }
        let mut missing = base.clone();
        missing.as_object_mut().unwrap().remove("ref");
        assert_eq!(ok(missing), Err(Mismatch::Claims));
    }

    #[test]
    fn claims_then_audience_then_age() {
        let r = rule(&[("repository", &["org/*"])]);
        let ours = json!({"repository": "org/web"});
        assert_eq!(r.admits(&token(ours.clone(), 1000), 1600), Ok(()));
        assert_eq!(
            r.admits(&token(ours.clone(), 1000), 1601),
            Err(Mismatch::TooOld)
        );
        let mut ours_elsewhere = token(ours, 1000);
        ours_elsewhere.audiences = vec!["https://other.example".into()];
        assert_eq!(r.admits(&ours_elsewhere, 1601), Err(Mismatch::Audience));
        // Claims no rule takes say nothing more, whatever else is wrong.
        let claims = json!({"repository": "other/web"});
        let mut theirs = token(claims, 1000);
        assert_eq!(r.admits(&theirs, 1601), Err(Mismatch::Claims));
        theirs.audiences = vec!["https://other.example".into()];
        assert_eq!(r.admits(&theirs, 1601), Err(Mismatch::Claims));
        theirs.issuer = "https://gitlab.com".into();
        assert_eq!(r.admits(&theirs, 1000), Err(Mismatch::Issuer));
    }

    #[test]
    fn multi_tenant_issuers_need_a_repository_or_project() {
        assert!(rule(&[("ref", &["refs/heads/main"])]).unbounded().is_some());
        assert!(rule(&[("repository", &["org/web"])]).unbounded().is_none());
        assert!(
            rule(&[("repository_owner_id", &["42"])])
                .unbounded()
                .is_none()
        );
        let mut gitlab = rule(&[("repository", &["org/web"])]);
        gitlab.issuer = GITLAB_ISSUER.into();
        assert!(gitlab.unbounded().is_some());
        gitlab.claims = rule(&[("project_path", &["group/web"])]).claims;
        assert!(gitlab.unbounded().is_none());
        let mut own = rule(&[]);
        own.issuer = "https://gitlab.example.com".into();
        assert!(own.unbounded().is_none());
    }
}
