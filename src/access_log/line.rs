//! An access line, formatted as bytes into a buffer of the thread that ends
//! the request, then appended to the pending lines: no allocation and no
//! formatting machinery per line, and the date made once a second.

use std::cell::RefCell;

use http::Version;

use super::{Client, Entry, Started};

thread_local! {
    /// This thread's line, cleared for each request.
    static LINE: RefCell<Line> = RefCell::new(Line(Vec::with_capacity(512)));
    /// The second the stamps below are of, nginx's and RFC 3339's (without
    /// the milliseconds).
    static STAMP: RefCell<(i64, String, String)> = const { RefCell::new((i64::MIN, String::new(), String::new())) };
}

/// Formats the line of a request that ended with `status` after `bytes`, and
/// hands it to the writer.
pub(super) fn write(entry: &Entry, status: u16, bytes: u64) {
    let started = &entry.started;
    let micros = started.at.elapsed().as_micros() as u64;
    let note = std::mem::take(&mut *entry.note.lock().expect("access note lock"));
    LINE.with_borrow_mut(|line| {
        line.0.clear();
        let fields = Fields {
            started,
            status,
            bytes,
            micros,
            cache: note.cache,
            source: note.source,
            remote: note.remote.as_ref().map(|r| r.name.as_str()),
            upstream_micros: note.upstream_ms.map(|ms| (ms * 1000.0).round() as u64),
        };
        if entry.log.shared.json {
            fields.json(line);
        } else {
            fields.combined(line);
        }
        entry.log.shared.pending.push(&line.0);
        // A huge line (a long path) leaves no huge buffer behind.
        if line.0.capacity() > 8192 {
            *line = Line(Vec::with_capacity(512));
        }
    });
}

struct Fields<'a> {
    started: &'a Started,
    status: u16,
    bytes: u64,
    micros: u64,
    cache: Option<&'static str>,
    source: Option<&'static str>,
    remote: Option<&'a str>,
    upstream_micros: Option<u64>,
}

impl Fields<'_> {
    fn path(&self) -> &str {
        self.started.path.as_ref().map_or("/", |p| p.as_str())
    }

    /// nginx's combined format, then `key=value` pairs.
    fn combined(&self, line: &mut Line) {
        let s = self.started;
        line.client(s.client);
        line.text(" - - [");
        stamp(s.at_ms, |combined, _| line.text(combined));
        line.text("] \"");
        line.quoted(s.method.as_str().as_bytes(), false);
        line.0.push(b' ');
        line.quoted(self.path().as_bytes(), false);
        line.text(match s.version {
            Version::HTTP_2 => " HTTP/2.0\" ",
            Version::HTTP_10 => " HTTP/1.0\" ",
            _ => " HTTP/1.1\" ",
        });
        line.number(self.status.into());
        line.0.push(b' ');
        line.number(self.bytes);
        line.text(" \"");
        line.header(s.referer.as_ref());
        line.text("\" \"");
        line.header(s.agent.as_ref());
        line.text("\" cache=");
        line.text(self.cache.unwrap_or("-"));
        line.text(" source=");
        line.text(self.source.unwrap_or("-"));
        line.text(" remote=");
        match self.remote {
            // A `key=value` value: no spaces or quotes to break the line apart.
            Some(remote) => line.quoted(remote.as_bytes(), true),
            None => line.0.push(b'-'),
        }
        line.text(" duration_ms=");
        line.millis(self.micros);
        line.text(" upstream_ms=");
        match self.upstream_micros {
            Some(micros) => line.millis(micros),
            None => line.0.push(b'-'),
        }
        line.0.push(b'\n');
    }

    /// A JSON object.
    fn json(&self, line: &mut Line) {
        let s = self.started;
        line.text("{\"time\":\"");
        stamp(s.at_ms, |_, iso| line.text(iso));
        line.0.push(b'.');
        line.padded(s.at_ms.rem_euclid(1000) as u64);
        line.text("Z\",\"client\":\"");
        line.client(s.client);
        line.text("\",\"method\":");
        line.json_str(Some(s.method.as_str()));
        line.text(",\"path\":");
        line.json_str(Some(self.path()));
        line.text(",\"status\":");
        line.number(self.status.into());
        line.text(",\"bytes\":");
        line.number(self.bytes);
        line.text(",\"cache\":");
        line.json_str(self.cache);
        line.text(",\"source\":");
        line.json_str(self.source);
        line.text(",\"remote\":");
        line.json_str(self.remote);
        line.text(",\"duration_ms\":");
        line.millis(self.micros);
        line.text(",\"upstream_ms\":");
        match self.upstream_micros {
            Some(micros) => line.millis(micros),
            None => line.text("null"),
        }
        line.text("}\n");
    }
}

/// A line's bytes. What goes in is ASCII or, in JSON strings, whole UTF-8
/// characters, so a line is always text.
struct Line(Vec<u8>);

impl Line {
    fn text(&mut self, text: &str) {
        self.0.extend_from_slice(text.as_bytes());
    }

    fn client(&mut self, client: Client) {
        match client {
            Client::Unknown => self.0.push(b'-'),
            Client::Peer(std::net::IpAddr::V4(ip)) => {
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.0.push(b'.');
                    }
                    self.number(octet.into());
                }
            }
            Client::Peer(ip) => self.text(&ip.to_string()),
        }
    }

    /// `n` in decimal.
    fn number(&mut self, n: u64) {
        self.0.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// `n` (below 1000) in three digits.
    fn padded(&mut self, n: u64) {
        self.0.extend_from_slice(&[n / 100 % 10, n / 10 % 10, n % 10].map(|d| b'0' + d as u8));
    }

    /// Milliseconds with three decimals, from microseconds.
    fn millis(&mut self, micros: u64) {
        self.number(micros / 1000);
        self.0.push(b'.');
        self.padded(micros % 1000);
    }

    /// A header's value as nginx writes a quoted field, `-` when absent.
    fn header(&mut self, value: Option<&http::HeaderValue>) {
        match value {
            Some(value) => self.quoted(value.as_bytes(), false),
            None => self.0.push(b'-'),
        }
    }

    /// As nginx writes a quoted field: `"` and `\` escaped, bytes outside
    /// printable ASCII as `\xHH`; spaces too with `spaces`.
    fn quoted(&mut self, text: &[u8], spaces: bool) {
        let plain = |b: u8| PLAIN[usize::from(b)] || b == b' ' && !spaces;
        if text.iter().all(|&b| plain(b)) {
            self.0.extend_from_slice(text);
            return;
        }
        for &b in text {
            match b {
                b'"' => self.text("\\\""),
                b'\\' => self.text("\\\\"),
                b if plain(b) => self.0.push(b),
                _ => {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    self.0.extend_from_slice(&[
                        b'\\',
                        b'x',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 15)],
                    ]);
                }
            }
        }
    }

    /// A JSON string (or `null`): `"`, `\` and control characters escaped.
    fn json_str(&mut self, text: Option<&str>) {
        let Some(text) = text else {
            self.text("null");
            return;
        };
        self.0.push(b'"');
        for c in text.chars() {
            match c {
                '"' => self.text("\\\""),
                '\\' => self.text("\\\\"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => self.text(&format!("\\u{:04x}", c as u32)),
                c => self.text(c.encode_utf8(&mut [0; 4])),
            }
        }
        self.0.push(b'"');
    }
}

/// The bytes written as they are in a quoted field: printable ASCII but the
/// space, `"` and `\`.
const PLAIN: [bool; 256] = {
    let mut plain = [false; 256];
    let mut b = 0x21;
    while b <= 0x7e {
        plain[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    plain
};

/// Calls `f` with the second of `ms` as nginx writes it
/// (`04/Dec/2026:13:20:00 +0000`) and as RFC 3339 without its fraction
/// (`2026-12-04T13:20:00`), made once a second per thread.
fn stamp(ms: i64, f: impl FnOnce(&str, &str)) {
    STAMP.with_borrow_mut(|(second, combined, iso)| {
        let now = ms.div_euclid(1000);
        if *second != now {
            const MONTHS: [&str; 12] =
                ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
            // `2026-12-04T13:20:00.000Z`
            let full = crate::manage::rfc3339(now * 1000);
            let month = full[5..7].parse::<usize>().unwrap_or(1).clamp(1, 12);
            *combined =
                format!("{}/{}/{}:{} +0000", &full[8..10], MONTHS[month - 1], &full[0..4], &full[11..19]);
            *iso = full[..19].to_owned();
            *second = now;
        }
        f(combined, iso);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Line)) -> String {
        let mut line = Line(Vec::new());
        f(&mut line);
        String::from_utf8(line.0).unwrap()
    }

    #[test]
    fn fields_are_escaped_and_dated_as_nginx_does() {
        assert_eq!(text(|l| stamp(0, |combined, _| l.text(combined))), "01/Jan/1970:00:00:00 +0000");
        let ms = 1_796_390_400_123; // 2026-12-04T13:20:00.123Z
        let both = text(|l| stamp(ms, |c, i| l.text(&format!("{c}|{i}"))));
        assert_eq!(both, "04/Dec/2026:13:20:00 +0000|2026-12-04T13:20:00");
        assert_eq!(text(|l| l.quoted(b"a \"b\"\n\\", false)), "a \\\"b\\\"\\x0A\\\\");
        assert_eq!(text(|l| l.quoted(b"/plain/path?q=1 x", false)), "/plain/path?q=1 x");
        assert_eq!(text(|l| l.quoted(b"two words", true)), "two\\x20words");
        assert_eq!(text(|l| l.quoted("ü".as_bytes(), false)), "\\xC3\\xBC");
        assert_eq!(text(|l| l.millis(1_234_567)), "1234.567");
        assert_eq!(text(|l| l.millis(7)), "0.007");
        assert_eq!(text(|l| l.number(u64::MAX)), u64::MAX.to_string());
        for n in [0, 7, 10, 99, 100, 101, 999, 1000, 65_535, 4_294_967_296] {
            assert_eq!(text(|l| l.number(n)), n.to_string());
        }
        let v4 = |ip: [u8; 4]| text(|l| l.client(Client::Peer(ip.into())));
        assert_eq!(v4([127, 0, 0, 1]), "127.0.0.1");
        assert_eq!(v4([203, 0, 113, 255]), "203.0.113.255");
        assert_eq!(text(|l| l.client(Client::Peer("2001:db8::1".parse().unwrap()))), "2001:db8::1");
    }

    #[test]
    fn json_strings_parse_back_to_what_was_written() {
        for s in ["plain", "q\"uote\\d", "tab\tnew\nline\u{1}", "ünïcode ✓"] {
            let json = text(|l| l.json_str(Some(s)));
            assert_eq!(serde_json::from_str::<String>(&json).unwrap(), s, "{json}");
        }
        assert_eq!(text(|l| l.json_str(None)), "null");
    }

    #[test]
    fn targets_parse() {
        use super::super::AccessLogTarget;
        assert_eq!(AccessLogTarget::parse(Some("off")), AccessLogTarget::Off);
        assert_eq!(AccessLogTarget::parse(None), AccessLogTarget::Off);
        assert_eq!(AccessLogTarget::parse(Some("stdout")), AccessLogTarget::Stdout);
        assert_eq!(
            AccessLogTarget::parse(Some("/var/log/a.log")),
            AccessLogTarget::File("/var/log/a.log".into())
        );
    }
}
