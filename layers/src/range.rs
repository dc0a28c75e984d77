//! Single byte ranges (`Range: bytes=a-b`), the form download clients send.

use std::ops::Range;

/// What a `Range` header asks of a body of a known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: answer the whole body with 200 (also for multiple
    /// ranges and other units, which a server may ignore).
    Full,
    /// One satisfiable range: answer 206 with these bytes.
    Partial(Range<u64>),
    /// A range that lies wholly past the end: answer 416.
    Unsatisfiable,
}

/// Interprets the value of a `Range` header against a body of `len` bytes.
pub fn parse(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        // Suffix range: the last N bytes.
        let Ok(n) = end.parse::<u64>() else {
            return RangeRequest::Full;
        };
        if n == 0 {
            return RangeRequest::Unsatisfiable;
        }
        len.saturating_sub(n)..len
    } else {
        let Ok(first) = start.parse::<u64>() else {
            return RangeRequest::Full;
        };
        let last = if end.is_empty() {
            len.saturating_sub(1)
        } else {
            match end.parse::<u64>() {
                Ok(last) if last >= first => last.min(len.saturating_sub(1)),
                _ => return RangeRequest::Full,
            }
        };
        if first >= len {
            return RangeRequest::Unsatisfiable;
        }
        first..last + 1
    };
    if range.is_empty() {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Partial(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_clients_send() {
        assert_eq!(parse(Some("bytes=0-9"), 100), RangeRequest::Partial(0..10));
        assert_eq!(parse(Some("bytes=90-"), 100), RangeRequest::Partial(90..100));
        assert_eq!(parse(Some("bytes=-16"), 100), RangeRequest::Partial(84..100));
        assert_eq!(parse(Some("bytes=-500"), 100), RangeRequest::Partial(0..100));
        assert_eq!(parse(Some("bytes=50-5000"), 100), RangeRequest::Partial(50..100));
    }

    #[test]
    fn past_the_end_is_unsatisfiable() {
        assert_eq!(parse(Some("bytes=100-"), 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-"), 0), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn odd_or_multiple_ranges_get_the_whole_body() {
        assert_eq!(parse(None, 100), RangeRequest::Full);
        assert_eq!(parse(Some("bytes=0-1,5-6"), 100), RangeRequest::Full);
        assert_eq!(parse(Some("items=0-1"), 100), RangeRequest::Full);
        assert_eq!(parse(Some("bytes=9-1"), 100), RangeRequest::Full);
        assert_eq!(parse(Some("bytes=x-1"), 100), RangeRequest::Full);
    }
}
