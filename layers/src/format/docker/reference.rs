//! What a `/v2/` path asks for: an image name and a manifest, blob or tag
//! list, validated as the distribution specification writes them.

use std::{fmt, sync::LazyLock};

use regex::Regex;

/// One path component of an image name (`library`, `nginx`, `rke2-runtime`).
static COMPONENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$").expect("name regex"));

/// A tag (`latest`, `v1.30.0-rke2r1`).
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$").expect("tag regex"));

/// The longest image name accepted, in bytes.
const MAX_NAME: usize = 255;

/// A content digest this proxy can check: `sha256:` with 64 hex digits or
/// `sha512:` with 128, lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: &'static str,
    hex: String,
}

impl Digest {
    /// Parses `algorithm:hex`; `None` for anything else (other algorithms
    /// included: their bytes could not be checked).
    pub fn parse(s: &str) -> Option<Self> {
        let (algorithm, hex) = s.split_once(':')?;
        let (algorithm, len) = match algorithm {
            "sha256" => ("sha256", 64),
            "sha512" => ("sha512", 128),
            _ => return None,
        };
        let valid = hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| Self { algorithm, hex: hex.to_owned() })
    }

    /// `sha256` or `sha512`.
    pub fn algorithm(&self) -> &'static str {
        self.algorithm
    }

    /// The hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

/// How a manifest is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// By tag: mutable.
    Tag(String),
    /// By digest: immutable.
    Digest(Digest),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(tag) => f.write_str(tag),
            Reference::Digest(digest) => digest.fmt(f),
        }
    }
}

/// What is asked of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `manifests/{reference}`.
    Manifest(Reference),
    /// `blobs/{digest}`.
    Blob(Digest),
    /// `tags/list`.
    Tags,
    /// `blobs/uploads/...`: pushing, which a mirror does not do.
    Upload,
}

impl Target {
    /// The path after the image name, as patterns see it.
    pub fn suffix(&self) -> String {
        match self {
            Target::Manifest(reference) => format!("manifests/{reference}"),
            Target::Blob(digest) => format!("blobs/{digest}"),
            Target::Tags => "tags/list".to_owned(),
            Target::Upload => "blobs/uploads/".to_owned(),
        }
    }
}

/// Why a `/v2/` path was refused, with the registry error code to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Not an endpoint of the API.
    Endpoint,
    /// The image name breaks the naming rules.
    Name(String),
    /// The tag breaks the naming rules.
    Tag(String),
    /// Not a digest this proxy can check.
    Digest(String),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Endpoint => f.write_str("not an endpoint of the registry API"),
            Invalid::Name(name) => write!(f, "invalid repository name {name:?}"),
            Invalid::Tag(tag) => write!(f, "invalid tag {tag:?}"),
            Invalid::Digest(d) => write!(f, "invalid or unsupported digest {d:?} (sha256 or sha512 only)"),
        }
    }
}

impl std::error::Error for Invalid {}

/// Splits the path after `/v2/` into the name's components and the target.
/// The components are not yet validated: the first may be a remote's name.
pub fn split(rest: &str) -> Result<(Vec<&str>, Target), Invalid> {
    let segments: Vec<&str> = rest.split('/').collect();
    let n = segments.len();
    let (name, target) = if let Some(i) = segments.iter().rposition(|s| *s == "uploads") {
        // `{name}/blobs/uploads/` and everything under it.
        if i < 2 || segments[i - 1] != "blobs" {
            return Err(Invalid::Endpoint);
        }
        (&segments[..i - 1], Target::Upload)
    } else if n >= 3 && segments[n - 2] == "manifests" {
        let reference = segments[n - 1];
        let reference = if reference.contains(':') {
            Reference::Digest(Digest::parse(reference).ok_or_else(|| Invalid::Digest(reference.to_owned()))?)
        } else if TAG.is_match(reference) {
            Reference::Tag(reference.to_owned())
        } else {
            return Err(Invalid::Tag(reference.to_owned()));
        };
        (&segments[..n - 2], Target::Manifest(reference))
    } else if n >= 3 && segments[n - 2] == "blobs" {
        let digest = segments[n - 1];
        (
            &segments[..n - 2],
            Target::Blob(Digest::parse(digest).ok_or_else(|| Invalid::Digest(digest.to_owned()))?),
        )
    } else if n >= 3 && segments[n - 2] == "tags" && segments[n - 1] == "list" {
        (&segments[..n - 2], Target::Tags)
    } else {
        return Err(Invalid::Endpoint);
    };
    if name.is_empty() {
        return Err(Invalid::Endpoint);
    }
    Ok((name.to_vec(), target))
}

/// Validates image name components and joins them.
pub fn name(components: &[&str]) -> Result<String, Invalid> {
    let joined = components.join("/");
    if components.is_empty() || joined.len() > MAX_NAME || !components.iter().all(|c| COMPONENT.is_match(c)) {
        return Err(Invalid::Name(joined));
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn splits_every_endpoint_with_names_of_any_depth() {
        let (name, target) = split("library/nginx/manifests/latest").unwrap();
        assert_eq!(name, ["library", "nginx"]);
        assert_eq!(target, Target::Manifest(Reference::Tag("latest".into())));
        let deep = format!("a/b/c/d/manifests/{D}");
        let (name, target) = split(&deep).unwrap();
        assert_eq!(name.len(), 4);
        assert_eq!(target.suffix(), format!("manifests/{D}"));
        let blob = format!("x/blobs/{D}");
        let (name, target) = split(&blob).unwrap();
        assert_eq!((name, target.suffix()), (vec!["x"], format!("blobs/{D}")));
        assert_eq!(split("x/y/tags/list").unwrap().1, Target::Tags);
        assert_eq!(split("x/blobs/uploads/").unwrap().1, Target::Upload);
        assert_eq!(split("x/blobs/uploads/1234-abcd").unwrap().1, Target::Upload);
        // A repository may itself be called "manifests" or "blobs".
        assert_eq!(split("blobs/manifests/v1").unwrap().0, ["blobs"]);
    }

    #[test]
    fn refuses_what_the_specification_does_not_allow() {
        assert_eq!(split("_catalog"), Err(Invalid::Endpoint));
        assert_eq!(split("manifests/latest"), Err(Invalid::Endpoint));
        assert!(matches!(split("x/manifests/sha256:abc"), Err(Invalid::Digest(_))));
        assert!(matches!(split("x/manifests/md5:abc"), Err(Invalid::Digest(_))));
        assert!(matches!(split(&format!("x/blobs/{}", D.to_uppercase())), Err(Invalid::Digest(_))));
        assert!(matches!(split("x/blobs/latest"), Err(Invalid::Digest(_))));
        assert!(matches!(split("x/manifests/-bad"), Err(Invalid::Tag(_))));
        assert!(matches!(split(&format!("x/manifests/{}", "t".repeat(129))), Err(Invalid::Tag(_))));
        for bad in [&["Library", "nginx"][..], &["a..b"], &["a", ""], &["%2e%2e"], &["-a"], &["a-"]] {
            assert!(name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            name(&["library", "my_app", "a__b", "x--y", "v1.2"]).unwrap(),
            "library/my_app/a__b/x--y/v1.2"
        );
        assert!(name(&["a"; 200]).is_err(), "over-long names are refused");
    }
}
