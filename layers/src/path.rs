//! The artifact path of a request: what patterns see, what upstream is sent,
//! and what is refused before anything else happens.
//!
//! Patterns see the path after the remote's name, without the leading `/`,
//! percent-decoded and without the query string. Upstream is sent the path as
//! the client encoded it, so `%2F` inside a segment (npm scoped names) stays
//! `%2F`. `.` segments are dropped (flat apt repositories ask for
//! `repo/./Packages.gz`); a trailing `/` is kept (PyPI's `simple/requests/`);
//! `..` segments, empty segments (`//`, which is also how absolute URLs
//! smuggled into a path look), control characters, NUL, backslashes and
//! over-long paths are refused, in every encoding.

use std::fmt;

use http::StatusCode;
use percent_encoding::percent_decode_str;

/// Separates the parts of a cache key.
pub const KEY_SEPARATOR: char = '\u{1f}';

/// The longest raw path (after the remote's name) that is accepted, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// A validated artifact path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactPath {
    decoded: String,
    raw: String,
    query: Option<String>,
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// No path after the remote's name.
    Empty,
    /// Longer than [`MAX_PATH_LEN`].
    TooLong,
    /// A `%` escape that is not valid, or bytes that are not UTF-8.
    BadEncoding,
    /// A `..` segment, in any encoding.
    Traversal,
    /// An empty segment (`//`), as in an absolute URL inside the path.
    EmptySegment,
    /// NUL, a control character or a backslash.
    ForbiddenCharacter,
}

impl PathError {
    /// The status a client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            PathError::TooLong => StatusCode::URI_TOO_LONG,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::Empty => "no artifact path after the remote name",
            PathError::TooLong => "artifact path is too long",
            PathError::BadEncoding => "artifact path is not valid percent-encoded UTF-8",
            PathError::Traversal => "artifact path contains a '..' segment",
            PathError::EmptySegment => "artifact path contains an empty segment ('//')",
            PathError::ForbiddenCharacter => "artifact path contains a control character, NUL or backslash",
        })
    }
}

impl std::error::Error for PathError {}

impl ArtifactPath {
    /// Validates `raw` (the percent-encoded path after the remote's name,
    /// without a leading `/`) and an optional raw query string.
    pub fn parse(raw: &str, query: Option<&str>) -> Result<Self, PathError> {
        if raw.len() > MAX_PATH_LEN || query.is_some_and(|q| q.len() > MAX_PATH_LEN) {
            return Err(PathError::TooLong);
        }
        // A trailing slash names a directory-like resource (an index page).
        let (raw, trailing_slash) = match raw.strip_suffix('/') {
            Some(stripped) if !stripped.is_empty() => (stripped, true),
            _ => (raw, false),
        };
        let mut kept = Vec::new();
        for segment in raw.split('/') {
            let decoded = decode(segment)?;
            // Checked per decoded segment *and* below on the whole decoded
            // path, so `..%2F` and `%2e%2e` are caught as well as `..`.
            match decoded.as_str() {
                "." => continue,
                ".." => return Err(PathError::Traversal),
                "" => return Err(PathError::EmptySegment),
                _ => kept.push(segment),
            }
        }
        if kept.is_empty() {
            return Err(PathError::Empty);
        }
        let mut raw = kept.join("/");
        let mut decoded = decode(&raw)?;
        for segment in decoded.split('/') {
            match segment {
                ".." => return Err(PathError::Traversal),
                "" => return Err(PathError::EmptySegment),
                _ => {}
            }
        }
        if decoded.chars().any(|c| c.is_control() || c == '\\') {
            return Err(PathError::ForbiddenCharacter);
        }
        if trailing_slash {
            raw.push('/');
            decoded.push('/');
        }
        let query = match query {
            Some(q) if !q.is_empty() => {
                let decoded_query = decode(q)?;
                if decoded_query.chars().any(|c| c.is_control()) {
                    return Err(PathError::ForbiddenCharacter);
                }
                Some(q.to_owned())
            }
            _ => None,
        };
        Ok(Self { decoded, raw, query })
    }

    /// The percent-decoded path: what patterns see.
    pub fn decoded(&self) -> &str {
        &self.decoded
    }

    /// The path as the client encoded it (less `.` segments): what upstream is sent.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The raw query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The last segment of the decoded path.
    pub fn file_name(&self) -> &str {
        self.decoded.rsplit('/').next().unwrap_or_default()
    }

    /// The path with its query, as shown to operators (`a/b.tgz?x=1`).
    pub fn display(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{}", self.decoded, q),
            None => self.decoded.clone(),
        }
    }

    /// The cache key for this path on `remote`. The three encodings of a path
    /// (`@s%2fn`, `@s%2Fn`, `@s/n`) give one key; the query is part of it.
    /// U+001F (unit separator) separates the parts: a control character, so
    /// it can appear in none of them, and unlike NUL every index can store it.
    pub fn cache_key(&self, remote: &str) -> String {
        let mut key = String::with_capacity(remote.len() + self.decoded.len() + 2);
        key.push_str(remote);
        key.push(KEY_SEPARATOR);
        key.push_str(&self.decoded);
        if let Some(q) = &self.query {
            key.push(KEY_SEPARATOR);
            key.push_str(q);
        }
        key
    }
}

fn decode(s: &str) -> Result<String, PathError> {
    // A '%' not followed by two hex digits is left as is by the decoder; refuse
    // it instead, so that every byte upstream sees was meant by the client.
    let bytes = s.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(PathError::BadEncoding);
        }
    }
    percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|_| PathError::BadEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> ArtifactPath {
        ArtifactPath::parse(raw, None).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn err(raw: &str) -> PathError {
        ArtifactPath::parse(raw, None).expect_err(raw)
    }

    #[test]
    fn decodes_for_patterns_and_keeps_raw_for_upstream() {
        let p = ok("a/b%20c.tgz");
        assert_eq!(p.decoded(), "a/b c.tgz");
        assert_eq!(p.raw(), "a/b%20c.tgz");
        assert_eq!(p.file_name(), "b c.tgz");
    }

    #[test]
    fn keeps_encoded_slash_inside_a_segment() {
        let p = ok("@scope%2Fname");
        assert_eq!(p.raw(), "@scope%2Fname");
        assert_eq!(p.decoded(), "@scope/name");
    }

    #[test]
    fn the_three_encodings_of_a_scoped_name_share_a_key() {
        let keys: Vec<_> = ["@s%2fn", "@s%2Fn", "@s/n"].iter().map(|r| ok(r).cache_key("r")).collect();
        assert_eq!(keys[0], keys[1]);
        assert_eq!(keys[1], keys[2]);
    }

    #[test]
    fn query_is_part_of_the_key_and_cannot_collide_with_an_encoded_question_mark() {
        let with_query = ArtifactPath::parse("a", Some("b")).unwrap();
        let encoded = ok("a%3Fb");
        assert_ne!(with_query.cache_key("r"), encoded.cache_key("r"));
        assert_eq!(with_query.query(), Some("b"));
        assert_eq!(with_query.display(), "a?b");
    }

    #[test]
    fn keeps_a_trailing_slash() {
        let p = ok("simple/requests/");
        assert_eq!(p.decoded(), "simple/requests/");
        assert_eq!(p.raw(), "simple/requests/");
        assert_ne!(p.cache_key("r"), ok("simple/requests").cache_key("r"));
        assert_eq!(ok("simple/").decoded(), "simple/");
        assert_eq!(p.file_name(), "");
    }

    #[test]
    fn drops_dot_segments() {
        let p = ok("repo/./Packages.gz");
        assert_eq!(p.decoded(), "repo/Packages.gz");
        assert_eq!(p.raw(), "repo/Packages.gz");
        assert_eq!(ok("%2E/x").raw(), "x");
    }

    #[test]
    fn refuses_traversal_in_every_encoding() {
        for raw in [
            "..",
            "a/../b",
            "a/%2e%2e/b",
            "a/%2E%2E/b",
            "a/.%2e/b",
            "a/..%2Fb",
            "a%2F..%2Fb",
            "a/%2e%2e%2fb",
            "..%2f",
        ] {
            assert_eq!(err(raw), PathError::Traversal, "{raw}");
        }
    }

    #[test]
    fn refuses_empty_segments_and_absolute_urls() {
        for raw in ["a//b", "http://evil.example/x", "https:%2F%2Fevil.example/x", "a//", "/a", "/"] {
            assert_eq!(err(raw), PathError::EmptySegment, "{raw}");
        }
    }

    #[test]
    fn refuses_control_characters_nul_and_backslash() {
        for raw in ["a%00b", "a%0Ab", "a%0db", "a%7Fb", "a%5Cb"] {
            assert_eq!(err(raw), PathError::ForbiddenCharacter, "{raw}");
        }
        assert_eq!(ArtifactPath::parse("a", Some("x=%00")).unwrap_err(), PathError::ForbiddenCharacter);
    }

    #[test]
    fn refuses_bad_encoding_and_over_long_paths() {
        assert_eq!(err("a%zz"), PathError::BadEncoding);
        assert_eq!(err("a%2"), PathError::BadEncoding);
        assert_eq!(err("a%ff"), PathError::BadEncoding);
        assert_eq!(err(&"a".repeat(MAX_PATH_LEN + 1)), PathError::TooLong);
        assert_eq!(PathError::TooLong.status(), StatusCode::URI_TOO_LONG);
        assert_eq!(err(""), PathError::EmptySegment);
        assert_eq!(err("."), PathError::Empty);
    }
}
