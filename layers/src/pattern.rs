//! Path patterns and classification.
//!
//! Patterns follow Python's `re.search`: unanchored unless written with `^` or
//! `$`. They compile with the `regex` crate (linear time); only a pattern that
//! `regex` cannot express (look-around such as `^(?!.*\.tgz$).*`) falls back
//! to `fancy-regex`, with a bounded backtracking budget. A pattern that errors
//! while matching denies the request: policy fails closed.
//!
//! Precedence: a path matching a mutable pattern (the user's, then the
//! package type's built-in ones) is mutable even when an immutable pattern
//! matches too; otherwise a path matching an immutable pattern is immutable;
//! otherwise, on a remote without `immutable_patterns`, immutable; otherwise
//! denied.

use std::fmt;

use crate::format::Package;

/// How many backtracking steps a look-around pattern may take on one path
/// before it counts as failed (and so denies).
const BACKTRACK_LIMIT: usize = 100_000;

/// The largest compiled pattern accepted, in bytes: far above any real path
/// pattern, and small enough that matching a path stays cheap
/// (`[ab]{1000}{1000}` is refused when the configuration loads).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// One compiled pattern, keeping its source text for messages.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    matcher: Matcher,
}

#[derive(Clone)]
enum Matcher {
    Linear(regex::Regex),
    Backtracking(Box<fancy_regex::Regex>),
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

/// A pattern that does not compile, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// Why it does not compile.
    pub reason: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pattern {:?} does not compile: {}", self.pattern, self.reason)
    }
}

impl std::error::Error for PatternError {}

impl Pattern {
    /// Compiles `source`, with `regex` where it can and `fancy-regex` where it must.
    pub fn new(source: &str) -> Result<Self, PatternError> {
        let matcher = match regex::RegexBuilder::new(source).size_limit(PATTERN_SIZE_LIMIT).build() {
            Ok(re) => Matcher::Linear(re),
            Err(too_big @ regex::Error::CompiledTooBig(_)) => {
                return Err(PatternError { pattern: source.to_owned(), reason: too_big.to_string() });
            }
            Err(linear_err) => {
                match fancy_regex::RegexBuilder::new(source)
                    .backtrack_limit(BACKTRACK_LIMIT)
                    .delegate_size_limit(PATTERN_SIZE_LIMIT)
                    .build()
                {
                    Ok(re) => Matcher::Backtracking(Box::new(re)),
                    Err(fancy_err) => {
                        // A size limit or syntax error: report what the linear
                        // engine said, unless only look-around was missing.
                        let reason = match linear_err {
                            regex::Error::Syntax(s) if s.contains("look-around") => fancy_err.to_string(),
                            other => other.to_string(),
                        };
                        return Err(PatternError {
                            pattern: source.to_owned(),
                            reason: reason.lines().last().unwrap_or_default().trim().to_owned(),
                        });
                    }
                }
            }
        };
        Ok(Self { source: source.to_owned(), matcher })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches anywhere in `path`; `Err` when the
    /// backtracking engine gave up.
    pub fn is_match(&self, path: &str) -> Result<bool, String> {
        match &self.matcher {
            Matcher::Linear(re) => Ok(re.is_match(path)),
            Matcher::Backtracking(re) => re.is_match(path).map_err(|e| e.to_string()),
        }
    }
}

/// The class of an allowed path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Never changes once published; cached for `immutable_ttl` (0 = forever).
    Immutable,
    /// Changes over time; cached for `mutable_ttl`.
    Mutable {
        /// Matched by a package type's built-in pattern rather than the user's.
        builtin: bool,
    },
}

impl Class {
    /// The class's name, as listed to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Immutable => "immutable",
            Class::Mutable { .. } => "mutable",
        }
    }
}

/// The outcome of classifying a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, with its class.
    Allow(Class),
    /// Denied, with the reason given to the client.
    Deny(String),
}

/// A remote's compiled patterns.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    immutable: Option<Vec<Pattern>>,
    user_mutable: Vec<Pattern>,
    builtin_mutable: Vec<Pattern>,
    /// The immutable patterns gate every path, mutable ones included (Docker:
    /// they restrict image names, so a denied image is denied whole).
    gate_all: bool,
}

impl Classifier {
    /// A classifier from the user's patterns plus `package`'s built-in mutable
    /// ones. `immutable: None` (the key absent) allows every path.
    pub fn new(immutable: Option<Vec<Pattern>>, mutable: Vec<Pattern>, package: Package) -> Self {
        let spec = package.format().spec();
        let builtin_mutable = spec
            .mutable
            .iter()
            .filter(|b| !mutable.iter().any(|m| m.as_str() == **b))
            .map(|b| Pattern::new(b).expect("built-in patterns compile"))
            .collect();
        Self { immutable, user_mutable: mutable, builtin_mutable, gate_all: spec.patterns_gate_every_path }
    }

    /// Classifies a decoded artifact path.
    pub fn classify(&self, path: &str) -> Decision {
        if let (true, Some(immutable)) = (self.gate_all, &self.immutable) {
            match any_match(immutable, path) {
                Ok(true) => {}
                Ok(false) => {
                    return Decision::Deny("image name matches none of the remote's patterns".into())
                }
                Err(reason) => return Decision::Deny(reason),
            }
        }
        let groups = [(&self.user_mutable, false), (&self.builtin_mutable, true)];
        for (patterns, builtin) in groups {
            for p in patterns {
                match p.is_match(path) {
                    Ok(true) => return Decision::Allow(Class::Mutable { builtin }),
                    Ok(false) => {}
                    Err(e) => return Decision::Deny(failed(p, &e)),
                }
            }
        }
        let Some(immutable) = &self.immutable else {
            return Decision::Allow(Class::Immutable);
        };
        match any_match(immutable, path) {
            Ok(true) => Decision::Allow(Class::Immutable),
            Ok(false) => Decision::Deny("path matches none of the remote's patterns".to_owned()),
            Err(reason) => Decision::Deny(reason),
        }
    }

    /// The user's immutable patterns (`None` when the key is absent).
    pub fn immutable_patterns(&self) -> Option<&[Pattern]> {
        self.immutable.as_deref()
    }

    /// The user's mutable patterns.
    pub fn mutable_patterns(&self) -> &[Pattern] {
        &self.user_mutable
    }
}

/// Whether any of `patterns` matches `path`; `Err` with the reason to deny
/// when one could not be evaluated.
fn any_match(patterns: &[Pattern], path: &str) -> Result<bool, String> {
    for p in patterns {
        match p.is_match(path) {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) => return Err(failed(p, &e)),
        }
    }
    Ok(false)
}

fn failed(p: &Pattern, e: &str) -> String {
    format!("pattern {:?} could not be evaluated ({e}); denied", p.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(list: &[&str]) -> Vec<Pattern> {
        list.iter().map(|p| Pattern::new(p).unwrap()).collect()
    }

    fn classifier(imm: Option<&[&str]>, mutable: &[&str]) -> Classifier {
        Classifier::new(imm.map(pats), pats(mutable), Package::GENERIC)
    }

    #[test]
    fn patterns_search_anywhere_unless_anchored() {
        let p = Pattern::new(r"terragrunt_linux").unwrap();
        assert_eq!(p.is_match("a/b/terragrunt_linux_amd64"), Ok(true));
        let anchored = Pattern::new(r"^terragrunt").unwrap();
        assert_eq!(anchored.is_match("a/terragrunt"), Ok(false));
    }

    #[test]
    fn a_remote_without_immutable_patterns_allows_everything_as_immutable() {
        let c = classifier(None, &[]);
        assert_eq!(c.classify("any/thing"), Decision::Allow(Class::Immutable));
    }

    #[test]
    fn unmatched_paths_are_denied_when_immutable_patterns_exist() {
        let c = classifier(Some(&[r"\.tar\.gz$"]), &[]);
        assert_eq!(c.classify("a.tar.gz"), Decision::Allow(Class::Immutable));
        assert!(matches!(c.classify("a.zip"), Decision::Deny(_)));
    }

    #[test]
    fn mutable_wins_over_immutable() {
        let c = classifier(Some(&[r"\.tar\.gz$"]), &[r"heads/main\.tar\.gz$"]);
        assert_eq!(
            c.classify("x/archive/refs/heads/main.tar.gz"),
            Decision::Allow(Class::Mutable { builtin: false })
        );
        assert_eq!(c.classify("x/archive/refs/tags/v1.tar.gz"), Decision::Allow(Class::Immutable));
    }

    #[test]
    fn a_mutable_pattern_wins_over_immutable_patterns_as_in_the_seed() {
        let generic = classifier(Some(&[r"\.tgz$"]), &["index"]);
        assert_eq!(generic.classify("index.html"), Decision::Allow(Class::Mutable { builtin: false }));
    }

    #[test]
    fn look_around_falls_back_to_the_backtracking_engine() {
        let c = classifier(Some(&[r"\.tgz$"]), &[r"^(?!.*\.tgz$).*"]);
        assert_eq!(c.classify("express"), Decision::Allow(Class::Mutable { builtin: false }));
        assert_eq!(c.classify("@babel/core"), Decision::Allow(Class::Mutable { builtin: false }));
        assert_eq!(c.classify("express/-/express-4.18.2.tgz"), Decision::Allow(Class::Immutable));
    }

    #[test]
    fn a_pattern_that_fails_while_matching_denies() {
        // Catastrophic backtracking: the budget runs out and the path is denied,
        // even though a later pattern would allow it.
        let c = classifier(Some(&[r"(a*)*\1(?=b)", r"a"]), &[]);
        let path = "a".repeat(64);
        match c.classify(&path) {
            Decision::Deny(reason) => {
                assert!(reason.contains("could not be evaluated"), "{reason}")
            }
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn oversized_patterns_are_refused_when_compiled() {
        for source in [r"[ab]{1000}{1000}", r"\w{100}{100}", r"(?=x)[\w\d]{1000}{100}"] {
            let err = Pattern::new(source).unwrap_err();
            assert!(!source.starts_with("(?=") || err.reason.contains("NFA"), "{source}: {}", err.reason);
            assert!(
                source.starts_with("(?=") || err.reason.contains("size limit"),
                "{source}: {}",
                err.reason
            );
        }
        for source in [r"\w+-\d+\.\d+\.tar\.gz$", r"^(?!.*\.tgz$).*", r"[a-z0-9._-]{1,128}"] {
            assert!(Pattern::new(source).is_ok(), "{source}");
        }
    }

    #[test]
    fn bad_patterns_say_why() {
        let err = Pattern::new(r"([a-z]").unwrap_err();
        assert_eq!(err.pattern, "([a-z]");
        assert!(!err.reason.is_empty());
    }
}
