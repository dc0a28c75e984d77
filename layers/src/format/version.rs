//! Versions compared the way each ecosystem orders them, and version ranges
//! in a small common syntax: comparators (`<`, `<=`, `>`, `>=`, `=`, `==`,
//! `!=`) joined by spaces or commas (all must hold), alternatives joined by
//! `||`. That covers npm's and Go's range forms without `^`/`~` sugar and
//! PEP 440 specifiers (`>=1.0,<2.0`).

use std::cmp::Ordering;

/// How an ecosystem orders its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Semantic versions (npm, Go with its `v` and `+incompatible`, Cargo).
    Semver,
    /// PEP 440 (PyPI): release numbers, then `a`/`b`/`rc`, `.post`, `.dev`.
    Pep440,
}

impl Scheme {
    /// Orders `a` and `b`.
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Scheme::Semver => semver_key(a).cmp(&semver_key(b)),
            Scheme::Pep440 => pep440_key(a).cmp(&pep440_key(b)),
        }
    }
}

/// Numbers as numbers, the rest as text, in order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Number(u64),
    Text(String),
}

fn parts(s: &str) -> Vec<Part> {
    s.split(['.', '-'])
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().map(Part::Number).unwrap_or_else(|_| Part::Text(p.to_owned())))
        .collect()
}

/// Release numbers, then "no pre-release" above any pre-release.
fn semver_key(v: &str) -> (Vec<u64>, bool, Vec<Part>) {
    let v = v.trim().trim_start_matches('v').trim_start_matches('=');
    let v = v.split('+').next().unwrap_or_default();
    let (release, pre) = match v.split_once('-') {
        Some((r, p)) => (r, Some(p)),
        None => (v, None),
    };
    let numbers = release.split('.').map(|n| n.parse().unwrap_or(0)).collect();
    (numbers, pre.is_none(), pre.map(parts).unwrap_or_default())
}

/// Release numbers (trailing zeros dropped), a dev release first, then a
/// pre-release, then the release, then post-releases.
fn pep440_key(v: &str) -> (u64, Vec<u64>, (u8, u64), u64, u64) {
    let v = v.trim().to_ascii_lowercase();
    let v = v.trim_start_matches('v');
    let (epoch, v) = match v.split_once('!') {
        Some((e, rest)) => (e.parse().unwrap_or(0), rest),
        None => (0, v),
    };
    let v = v.split('+').next().unwrap_or_default();
    let digits_end = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let mut release: Vec<u64> = v[..digits_end].split('.').filter_map(|n| n.parse().ok()).collect();
    while release.last() == Some(&0) {
        release.pop();
    }
    let rest = v[digits_end..].trim_start_matches(['.', '-', '_']);
    let number_after = |s: &str, tag: &str| -> Option<u64> {
        let at = s.find(tag)?;
        let n: String = s[at + tag.len()..]
            .trim_start_matches(['.', '-', '_'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some(n.parse().unwrap_or(0))
    };
    let dev = number_after(rest, "dev");
    let post = number_after(rest, "post").or_else(|| number_after(rest, "rev"));
    let pre = [("rc", 3u8), ("c", 3), ("b", 2), ("beta", 2), ("a", 1), ("alpha", 1)].iter().find_map(
        |(tag, rank)| {
            let at = rest.find(tag)?;
            let before_post = rest.find("post").is_none_or(|p| at < p);
            let not_dev = !rest[at..].starts_with("dev");
            (before_post && not_dev).then(|| (*rank, number_after(rest, tag).unwrap_or(0)))
        },
    );
    // A plain release ranks above its pre-releases; a dev release of the
    // release itself below all of them.
    let pre = match (pre, dev, post) {
        (Some(pre), _, _) => pre,
        (None, Some(_), None) => (0, 0),
        _ => (4, 0),
    };
    (epoch, release, pre, post.map_or(0, |p| p + 1), dev.map_or(u64::MAX, |d| d))
}

/// A version range in the common syntax (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// Alternatives, each a list of comparators that must all hold.
    alternatives: Vec<Vec<(Op, String)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Range {
    /// Parses a range; `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut alternatives = Vec::new();
        for alternative in text.split("||") {
            let mut comparators = Vec::new();
            let mut words = alternative.split([' ', ',']).filter(|w| !w.is_empty()).peekable();
            while let Some(word) = words.next() {
                let split = word.find(|c: char| !"<>=!".contains(c)).unwrap_or(word.len());
                let (op, mut version) = (&word[..split], word[split..].to_owned());
                if version.is_empty() {
                    // `>= 1.0`: the version is the next word.
                    version =
                        words.next().ok_or_else(|| format!("{text:?}: {op:?} has no version"))?.to_owned();
                }
                if !version.starts_with(|c: char| c.is_ascii_alphanumeric()) {
                    return Err(format!(
                        "{text:?}: {version:?} is not a version (ranges use <, <=, >, >=, =, != and ||)"
                    ));
                }
                let op = match op {
                    "<" => Op::Lt,
                    "<=" => Op::Le,
                    ">" => Op::Gt,
                    ">=" => Op::Ge,
                    "" | "=" | "==" => Op::Eq,
                    "!=" => Op::Ne,
                    other => {
                        return Err(format!("{text:?}: {other:?} is not a comparison (<, <=, >, >=, =, !=)"))
                    }
                };
                comparators.push((op, version));
            }
            if comparators.is_empty() {
                return Err(format!("{text:?}: an empty range"));
            }
            alternatives.push(comparators);
        }
        Ok(Self { alternatives })
    }

    /// From `introduced` (`0`: the first version) up to `fixed`
    /// (excluded) or `last_affected` (included): an OSV range.
    pub fn between(introduced: &str, fixed: Option<&str>, last_affected: Option<&str>) -> Self {
        let mut comparators = Vec::new();
        if introduced != "0" {
            comparators.push((Op::Ge, introduced.to_owned()));
        }
        match (fixed, last_affected) {
            (Some(fixed), _) => comparators.push((Op::Lt, fixed.to_owned())),
            (None, Some(last)) => comparators.push((Op::Le, last.to_owned())),
            (None, None) => {}
        }
        if comparators.is_empty() {
            comparators.push((Op::Ge, "0".to_owned()));
        }
        Self { alternatives: vec![comparators] }
    }

    /// Whether `version` is in the range, ordered by `scheme`.
    pub fn contains(&self, scheme: Scheme, version: &str) -> bool {
        self.alternatives.iter().any(|all| {
            all.iter().all(|(op, bound)| {
                let order = scheme.compare(version, bound);
                match op {
                    Op::Lt => order == Ordering::Less,
                    Op::Le => order != Ordering::Greater,
                    Op::Gt => order == Ordering::Greater,
                    Op::Ge => order != Ordering::Less,
                    Op::Eq => order == Ordering::Equal,
                    Op::Ne => order != Ordering::Equal,
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_orders_numbers_and_pre_releases() {
        let s = Scheme::Semver;
        assert_eq!(s.compare("1.10.0", "1.9.0"), Ordering::Greater);
        assert_eq!(s.compare("1.0.0-rc.1", "1.0.0"), Ordering::Less);
        assert_eq!(s.compare("1.0.0-rc.2", "1.0.0-rc.10"), Ordering::Less);
        assert_eq!(s.compare("v2.0.0+incompatible", "v1.9.9"), Ordering::Greater);
    }

    #[test]
    fn pep440_orders_dev_pre_release_post() {
        let s = Scheme::Pep440;
        let ordered = ["1.0.dev1", "1.0a1", "1.0b2", "1.0rc1", "1.0", "1.0.post1", "1.1", "2.0"];
        for pair in ordered.windows(2) {
            assert_eq!(s.compare(pair[0], pair[1]), Ordering::Less, "{pair:?}");
        }
        assert_eq!(s.compare("1.0", "1.0.0"), Ordering::Equal);
    }

    #[test]
    fn ranges_in_npm_pep440_and_osv_forms() {
        let r = Range::parse(">=1.0.0 <1.2.0 || 2.0.0").unwrap();
        for (v, inside) in
            [("1.0.0", true), ("1.1.9", true), ("1.2.0", false), ("2.0.0", true), ("0.9.0", false)]
        {
            assert_eq!(r.contains(Scheme::Semver, v), inside, "{v}");
        }
        let r = Range::parse(">=1.0,<2.0").unwrap();
        assert!(r.contains(Scheme::Pep440, "1.5") && !r.contains(Scheme::Pep440, "2.0"));
        assert!(Range::parse(">= 1.0").unwrap().contains(Scheme::Pep440, "1.0"));
        assert!(Range::parse("~>1.0").is_err() && Range::parse("").is_err());
        let osv = Range::between("0", Some("4.17.21"), None);
        assert!(osv.contains(Scheme::Semver, "4.17.20") && !osv.contains(Scheme::Semver, "4.17.21"));
        let osv = Range::between("1.0", None, Some("1.4"));
        assert!(osv.contains(Scheme::Pep440, "1.4") && !osv.contains(Scheme::Pep440, "1.4.1"));
    }
}
