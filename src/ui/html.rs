//! Small pieces of the operator page: escaping, numbers for people, the page
//! frame with its inline CSS. Everything a client or upstream wrote (paths,
//! header values, remote descriptions) goes through [`escape`].

use std::fmt::Write;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Text as HTML (element content and quoted attribute values).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Characters kept raw in one path segment of a link.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `path` as URL path segments, each percent-encoded (`/` kept between).
pub(crate) fn url_path(path: &str) -> String {
    path.split('/').map(|s| utf8_percent_encode(s, SEGMENT).to_string()).collect::<Vec<_>>().join("/")
}

/// `text` as a query value.
pub(crate) fn query_value(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// Bytes for people: `512 B`, `3.4 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How long ago `ms` (since the epoch) was, from `now_ms`: `just now`,
/// `3 minutes ago`, `2 days ago`; `in 5 hours` for a time to come.
pub(crate) fn ago(ms: i64, now_ms: i64) -> String {
    let (seconds, future) =
        if ms > now_ms { ((ms - now_ms) / 1000, true) } else { ((now_ms - ms) / 1000, false) };
    let (n, unit) = match seconds {
        0..=9 => return if future { "in a few seconds".into() } else { "just now".into() },
        10..=59 => (seconds, "second"),
        60..=3599 => (seconds / 60, "minute"),
        3600..=86_399 => (seconds / 3600, "hour"),
        _ => (seconds / 86_400, "day"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if future {
        format!("in {n} {unit}{plural}")
    } else {
        format!("{n} {unit}{plural} ago")
    }
}

/// A whole page: `title` (escaped here) around `body` (already HTML).
pub(crate) fn page(title: &str, body: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · artifactapi</title><style>{CSS}</style></head><body>\
         <header><a href=\"/ui/\">artifactapi</a> <span>{title}</span></header><main>{body}</main></body></html>",
        title = escape(title),
    );
    out
}

const CSS: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2433;background:#f6f7f9}\
header{background:#1d2433;color:#fff;padding:10px 20px}header a{color:#fff;font-weight:600;text-decoration:none;margin-right:12px}\
main{padding:16px 20px;max-width:1400px}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e3e6ea;vertical-align:top}\
th{background:#eef0f3;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
code,.path{font-family:ui-monospace,monospace;word-break:break-all}a{color:#1f5fbf}\
form{margin:0 0 12px}input[type=search]{width:360px;padding:5px}button{padding:5px 12px;cursor:pointer}\
.danger{background:#b3261e;color:#fff;border:0;border-radius:3px}.muted{color:#6b7280}\
.note{padding:8px 12px;background:#fff8e1;border:1px solid #f0d58c;margin:0 0 12px}h2{font-size:16px;margin:18px 0 8px}";
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_times_for_people() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 + 400_000), "3.4 MiB");
        assert_eq!(bytes(200 << 30), "200 GiB");
        assert_eq!(ago(1_000_000, 1_000_000 + 180_000), "3 minutes ago");
        assert_eq!(ago(0, 2_000), "just now");
        assert_eq!(ago(10_000_000, 1_000), "in 2 hours");
        assert_eq!(escape("<script>a&\"'"), "&lt;script&gt;a&amp;&quot;&#39;");
        assert_eq!(url_path("rel/a b?c/<x>"), "rel/a%20b%3Fc/%3Cx%3E");
    }
}
