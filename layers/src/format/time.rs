//! RFC 3339 times (what npm, PyPI and Go metadata write) to Unix
//! milliseconds and back.

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// `2024-01-02T03:04:05Z`, `2024-01-02T03:04:05.678+01:00`, ... as Unix
/// milliseconds; `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = std::str::from_utf8(b.get(from..from + len)?).ok()?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, s) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if b.get(4) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b't' | b' ')) || !(1..=12).contains(&mo) {
        return None;
    }
    let mut at = 19;
    let mut millis = 0;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        let frac = std::str::from_utf8(&b[at + 1..at + 1 + digits]).ok()?;
        millis = format!("{frac:0<3}")[..3].parse().ok()?;
        at += 1 + digits;
    }
    let offset_minutes = match b.get(at) {
        Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let minutes = num(at + 1, 2)? * 60 + num(at + 4, 2)?;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    let seconds = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// Unix milliseconds as `2024-01-02T03:04:05Z`.
pub fn format_rfc3339(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
    let rest = seconds.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-01-02T03:04:05.678Z"), Some(1_704_164_645_678));
        assert_eq!(parse_rfc3339("2024-01-02T04:04:05+01:00"), Some(1_704_164_645_000));
        assert_eq!(format_rfc3339(1_704_164_645_678), "2024-01-02T03:04:05Z");
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00Z").map(format_rfc3339).as_deref(),
            Some("2024-02-29T12:00:00Z")
        );
        for bad in ["", "yesterday", "2024-13-01T00:00:00Z", "2024-01-02 03:04:05"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
