//! Supply-chain policy on a remote or a group (`policy:`): a release-age
//! cooldown (`min_release_age`, with `allow` exceptions), blocklists
//! (`deny` entries and OSV records from `deny_file`), `mode: report` to try
//! a policy without enforcing it, and an audit line for every decision that
//! changed, or would have changed, an answer.
//!
//! It sits after the patterns and before the metadata layers
//! ([`PolicyLayer`]): a file of a hidden version is refused 403 with a JSON
//! body naming the policy; a document that lists versions (npm packuments,
//! PyPI pages, Go `@v/list` and `@latest`) is filtered on the way out, per
//! request, through the format ([`Versions::filter_versions`](crate::format::Versions::filter_versions)). Publish
//! times come from the format's metadata, fetched through the cache; a
//! version whose time cannot be learned counts as too young (fail closed)
//! unless allowed.
//!
//! [`Versions::filter_versions`](crate::format::Versions::filter_versions): crate::format::Versions::filter_versions

mod audit;
pub mod osv;
mod refusal;
mod service;

use std::time::Duration;

pub use crate::format::{time, version};
pub use audit::{Audit, AuditEvent, PolicyStats};
pub use service::{PolicyLayer, PolicyService};
pub use version::{Range, Scheme};

/// A remote's or a group's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Versions published more recently are hidden and refused.
    pub min_release_age: Option<Duration>,
    /// Exceptions to the cooldown: names, or `name@version`.
    pub allow: Vec<Subject>,
    /// Denied names, versions and ranges (from `deny` and `deny_file`).
    pub deny: Vec<Denial>,
    /// Enforce, or only report.
    pub mode: Mode,
    /// What becomes of a path whose package the format cannot name.
    pub unclassified: Unclassified,
}

/// What a policy does with a path its format cannot classify
/// (`unclassified:`): refuse it (the default: it cannot be judged), or
/// serve it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unclassified {
    /// 403, with an audit line.
    #[default]
    Refuse,
    /// Served, unjudged.
    Allow,
}

/// What the policy withheld from an answer, as an extension on it: a group
/// reads it, so that a member's refusal is final (not "ask the next") and a
/// version a member hid stays out of a merged document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Withheld {
    /// The file was refused.
    pub refused: bool,
    /// Versions hidden from the document.
    pub versions: Vec<String>,
    /// Entries whose version could not be read were hidden.
    pub unversioned: bool,
}

/// Enforce the policy, or serve everything and report what it would do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Hide and refuse.
    #[default]
    Enforce,
    /// Serve everything; log and count what would have been hidden or refused.
    Report,
}

/// A package, or one version of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The name, as the format normalizes it.
    pub name: String,
    /// One version, or every version.
    pub version: Option<String>,
}

impl Subject {
    /// `name` or `name@version` (a scoped npm name keeps its leading `@`).
    pub fn parse(text: &str) -> Self {
        match text.rfind('@').filter(|&at| at > 0) {
            Some(at) => Self { name: text[..at].to_owned(), version: Some(text[at + 1..].to_owned()) },
            None => Self { name: text.to_owned(), version: None },
        }
    }
}

/// Versions of a package that are denied, and the rule that denies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The name, as the format normalizes it.
    pub name: String,
    /// Which versions.
    pub versions: Versions,
    /// `deny`, or the OSV record's id.
    pub rule: String,
}

/// A set of versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Versions {
    /// Every version.
    All,
    /// These versions.
    Listed(Vec<String>),
    /// Any of these ranges.
    Ranges(Vec<Range>),
}

/// What the policy says of one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Served.
    Pass,
    /// Too young, but allowed by an exception.
    Allowed,
    /// Denied by `rule`.
    Denied(String),
    /// Published less than `min_release_age` ago (or when is not known:
    /// `None`); served from the given time.
    TooYoung(Option<i64>),
}

impl Verdict {
    /// Whether the version is hidden or refused.
    pub fn blocks(&self) -> bool {
        matches!(self, Verdict::Denied(_) | Verdict::TooYoung(_))
    }

    /// The rule, for the audit and metrics.
    pub fn rule(&self) -> &str {
        match self {
            Verdict::Denied(rule) => rule,
            Verdict::TooYoung(_) | Verdict::Allowed => "min_release_age",
            Verdict::Pass => "",
        }
    }
}

impl Policy {
    /// Whether a cooldown applies.
    pub fn has_cooldown(&self) -> bool {
        self.min_release_age.is_some()
    }

    /// Whether some version of `name` may be hidden: then an entry whose
    /// version cannot be read is hidden too, as it cannot be judged.
    pub fn may_hide(&self, name: &str) -> bool {
        self.has_cooldown() || self.deny.iter().any(|d| d.name == name)
    }

    /// The verdict on `name`@`version`, published at `published_ms` (when
    /// known), at `now_ms`.
    pub fn judge(
        &self,
        scheme: Scheme,
        name: &str,
        version: &str,
        published_ms: Option<i64>,
        now_ms: i64,
    ) -> Verdict {
        if let Some(denial) = self.deny.iter().find(|d| d.name == name && d.covers(scheme, version)) {
            return Verdict::Denied(denial.rule.clone());
        }
        let Some(age) = self.min_release_age else { return Verdict::Pass };
        let available_at = published_ms.map(|p| p.saturating_add(age.as_millis() as i64));
        if available_at.is_some_and(|at| at <= now_ms) {
            return Verdict::Pass;
        }
        let allowed =
            self.allow.iter().any(|a| a.name == name && a.version.as_deref().is_none_or(|v| v == version));
        if allowed {
            Verdict::Allowed
        } else {
            Verdict::TooYoung(available_at)
        }
    }
}

impl Denial {
    /// Whether `version` is denied.
    pub fn covers(&self, scheme: Scheme, version: &str) -> bool {
        match &self.versions {
            Versions::All => true,
            Versions::Listed(list) => list.iter().any(|v| scheme.compare(v, version).is_eq()),
            Versions::Ranges(ranges) => ranges.iter().any(|r| r.contains(scheme, version)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn too_young_denied_allowed_and_unknown() {
        let policy = Policy {
            min_release_age: Some(Duration::from_secs(7 * 86_400)),
            allow: vec![Subject::parse("trusted"), Subject::parse("@acme/x@2.0.0")],
            deny: vec![Denial {
                name: "evil".into(),
                versions: Versions::Ranges(vec![Range::parse("<2.0.0").unwrap()]),
                rule: "GHSA-xxxx".into(),
            }],
            mode: Mode::Enforce,
            unclassified: Unclassified::Refuse,
        };
        let now = 100 * DAY;
        let judge =
            |name: &str, version: &str, at: Option<i64>| policy.judge(Scheme::Semver, name, version, at, now);
        assert_eq!(judge("a", "1.0.0", Some(now - 8 * DAY)), Verdict::Pass);
        assert_eq!(judge("a", "1.1.0", Some(now - DAY)), Verdict::TooYoung(Some(now + 6 * DAY)));
        assert_eq!(judge("a", "1.1.0", None), Verdict::TooYoung(None), "unknown time: fail closed");
        assert_eq!(judge("trusted", "9.0.0", None), Verdict::Allowed);
        assert_eq!(judge("@acme/x", "2.0.0", Some(now)), Verdict::Allowed);
        assert!(judge("@acme/x", "2.0.1", Some(now)).blocks());
        assert_eq!(judge("evil", "1.9.0", Some(now - 99 * DAY)), Verdict::Denied("GHSA-xxxx".into()));
        assert_eq!(judge("evil", "2.0.0", Some(now - 99 * DAY)), Verdict::Pass);
        assert_eq!(Subject::parse("@acme/x"), Subject { name: "@acme/x".into(), version: None });
    }
}
