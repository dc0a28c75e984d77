//! Paths under a prefix as a range of the `(remote, path)` index.

/// The least string above every string that starts with `prefix`, in the
/// order both databases sort paths in (bytewise: SQLite's BINARY, the "C"
/// collation of PostgreSQL's `path`; code point order for UTF-8), if there
/// is one. `path >= prefix AND path < end` is then exactly "starts with
/// `prefix`", and reads a range of the `(remote, path)` index instead of
/// every row of the remote.
pub(super) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 + 1 {
            0xD800 => 0xE000,
            n => n,
        };
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_the_next_string_in_code_point_order() {
        assert_eq!(prefix_end("library/nginx/").as_deref(), Some("library/nginx0"));
        assert_eq!(prefix_end("a/é").as_deref(), Some("a/ê"));
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        for p in ["x/", "a/é", "z\u{10FFFF}y"] {
            let end = prefix_end(p).unwrap();
            for s in [p.to_string(), format!("{p}\u{10FFFF}\u{10FFFF}"), format!("{p}zzz")] {
                assert!(s.as_str() >= p && s < end, "{s:?} in [{p:?}, {end:?})");
            }
            assert!(end.as_str() > p && !end.starts_with(p));
        }
    }
}
