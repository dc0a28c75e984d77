//! Go's `h1:` directory hash, as the checksum database records it for a
//! module version: the SHA-256 of the lines `"{sha256 hex}  {name}\n"`,
//! sorted by name, over the files of the module's zip (named
//! `{module}@{version}/...`), base64-encoded; for a `.mod`, the same over
//! one file named `go.mod`.
//!
//! A zip is read from its central directory with positioned reads (from
//! memory, or from the spool file of a fill) and each file inflated in
//! chunks: memory stays a few buffers whatever the size of the zip.
//!
//! Over 400 lines with its tests (from line 296): the zip's checks before
//! inflating (Go's limits, shared or repeated entries) belong with the
//! reader they guard.

use std::{fs::File, os::unix::fs::FileExt};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use miniz_oxide::{
    inflate::stream::{inflate, InflateState},
    DataFormat, MZFlush, MZStatus,
};
use sha2::{Digest, Sha256};

use crate::budget::{Cancel, Exceeded, ZipBudget};

/// The size of each read and inflate buffer.
const CHUNK: usize = 64 << 10;

/// The most central directory read into memory (65 535 entries of long
/// names; Go's own limit on a module zip is 500 MB).
const MAX_DIRECTORY: usize = 64 << 20;

/// The `h1:` hash of a module zip in memory, or why the bytes are not a zip
/// this reads (zip64, an encrypted or unknown compression method, a name
/// with a newline, a size that does not match) or are past Go's own limits
/// on a module zip.
pub fn zip(bytes: &[u8]) -> Result<String, String> {
    zip_sum(bytes, bytes.len() as u64, &ZipBudget::default(), &Cancel::default()).map(|sum| shown(&sum))
}

/// The `h1:` hash (its 32 bytes) of the module zip in the first `len`
/// bytes of `file`, within `budget`; stops at its next chunk once `cancel`
/// is set.
pub fn zip_file(file: &File, len: u64, budget: &ZipBudget, cancel: &Cancel) -> Result<[u8; 32], String> {
    zip_sum(file, len, budget, cancel)
}

/// The `h1:` hash of a `go.mod` file.
pub fn go_mod(bytes: &[u8]) -> String {
    shown(&go_mod_sum(Sha256::digest(bytes).into()))
}

/// The `h1:` hash (its 32 bytes) of a `go.mod` file whose SHA-256 is `sha256`.
pub fn go_mod_sum(sha256: [u8; 32]) -> [u8; 32] {
    summary([("go.mod", &sha256)])
}

/// `h1:` and the base64 of a hash's 32 bytes, as go.sum writes it.
pub fn shown(sum: &[u8]) -> String {
    format!("h1:{}", STANDARD.encode(sum))
}

/// The 32 bytes of an `h1:` hash as go.sum writes it.
pub fn parse(h1: &str) -> Option<[u8; 32]> {
    STANDARD.decode(h1.strip_prefix("h1:")?).ok()?.try_into().ok()
}

fn summary<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8; 32])>) -> [u8; 32] {
    let mut h = Sha256::new();
    for (name, sum) in files {
        h.update(format!("{}  {name}\n", hex::encode(sum)));
    }
    h.finalize().into()
}

/// Bytes read at an offset: a slice, or a file.
trait ReadAt {
    fn read_at_exact(&self, at: u64, buf: &mut [u8]) -> Result<(), String>;
}

impl ReadAt for [u8] {
    fn read_at_exact(&self, at: u64, buf: &mut [u8]) -> Result<(), String> {
        let at = usize::try_from(at).map_err(|_| "truncated zip")?;
        let src = self.get(at..at.saturating_add(buf.len())).ok_or("truncated zip")?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for File {
    fn read_at_exact(&self, at: u64, buf: &mut [u8]) -> Result<(), String> {
        FileExt::read_exact_at(self, buf, at).map_err(|e| format!("reading the zip: {e}"))
    }
}

fn read_vec(src: &(impl ReadAt + ?Sized), at: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0; len];
    src.read_at_exact(at, &mut buf)?;
    Ok(buf)
}

fn u16_at(b: &[u8], at: usize) -> Result<usize, String> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]) as usize).ok_or_else(|| "truncated zip".into())
}

fn u32_at(b: &[u8], at: usize) -> Result<u64, String> {
    b.get(at..at + 4)
        .map(|s| u64::from(u32::from_le_bytes([s[0], s[1], s[2], s[3]])))
        .ok_or_else(|| "truncated zip".into())
}

/// The `h1:` hash of the zip in the first `len` bytes of `src`.
fn zip_sum(
    src: &(impl ReadAt + ?Sized),
    len: u64,
    budget: &ZipBudget,
    cancel: &Cancel,
) -> Result<[u8; 32], String> {
    let listed = directory(src, len, budget)?;
    let mut files = Vec::with_capacity(listed.len());
    let mut left = budget.inflated_bytes;
    for file in listed {
        cancel.check()?;
        let sum = match file.method {
            0 => stored(src, file.data, file.size, cancel)?,
            _ => inflated(src, file.data, file.packed, file.size, cancel)
                .map_err(|e| format!("{}: {e}", file.name))?,
        };
        // Each entry inflates to no more than it declares, and the
        // declarations fit the budget; counted again all the same.
        left = left.checked_sub(file.size).ok_or_else(|| too_big(budget))?;
        files.push((file.name, sum));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(summary(files.iter().map(|(name, sum)| (name.as_str(), sum))))
}

fn too_big(budget: &ZipBudget) -> String {
    let what = format!("the zip inflates to more than {} bytes", budget.inflated_bytes);
    Exceeded::new("INTEGRITY_MAX_INFLATED_BYTES", what).to_string()
}

/// One file of a zip, as its central directory and local header place it.
struct Listed {
    name: String,
    method: usize,
    packed: u64,
    size: u64,
    /// Where its local header starts.
    local: u64,
    /// Where its data starts.
    data: u64,
}

/// The files of the zip, checked before any is inflated: no more than the
/// budget's entries and inflated bytes (as declared; inflating checks each
/// declaration), no name twice, and no two files sharing bytes — a zip
/// whose entries all point at one stream is malformed, not a small zip.
fn directory(src: &(impl ReadAt + ?Sized), len: u64, budget: &ZipBudget) -> Result<Vec<Listed>, String> {
    const END: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    // The end record (22 bytes) is within the last 64 KiB, after its comment.
    let tail_from = len.saturating_sub(22 + 0xFFFF);
    let tail = read_vec(src, tail_from, (len - tail_from) as usize)?;
    let end = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == END)
        .ok_or("no end of central directory: not a zip")?;
    let (count, size, at) = (u16_at(&tail, end + 10)?, u32_at(&tail, end + 12)?, u32_at(&tail, end + 16)?);
    if count == 0xFFFF || at == 0xFFFF_FFFF || size == 0xFFFF_FFFF {
        return Err("zip64 is not read".into());
    }
    if count > budget.entries {
        let what = format!("the zip has {count} entries, more than {}", budget.entries);
        return Err(Exceeded::new("INTEGRITY_MAX_ENTRIES", what).to_string());
    }
    if size as usize > MAX_DIRECTORY || at + size > len {
        return Err("the central directory is out of bounds".into());
    }
    let dir = read_vec(src, at, size as usize)?;
    let mut out = Vec::with_capacity(count);
    let (mut at, mut declared) = (0usize, 0u64);
    let mut names = std::collections::HashSet::with_capacity(count);
    for _ in 0..count {
        if dir.get(at..at + 4) != Some(&[0x50, 0x4b, 0x01, 0x02]) {
            return Err("bad central directory entry".into());
        }
        let (flags, method) = (u16_at(&dir, at + 8)?, u16_at(&dir, at + 10)?);
        let (packed, size) = (u32_at(&dir, at + 20)?, u32_at(&dir, at + 24)?);
        let (name_len, extra, comment) =
            (u16_at(&dir, at + 28)?, u16_at(&dir, at + 30)?, u16_at(&dir, at + 32)?);
        let local = u32_at(&dir, at + 42)?;
        let name = dir.get(at + 46..at + 46 + name_len).ok_or("truncated zip")?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| "a file name is not UTF-8")?;
        if name.contains('\n') {
            return Err(format!("file name {name:?} has a newline"));
        }
        if flags & 1 != 0 {
            return Err(format!("{name} is encrypted"));
        }
        match method {
            0 if packed != size => {
                return Err(format!("{name}: stored, yet {packed} bytes packed for {size}"))
            }
            0 | 8 => {}
            m => return Err(format!("{name}: compression method {m} is not read")),
        }
        declared = declared.saturating_add(size);
        if declared > budget.inflated_bytes {
            return Err(too_big(budget));
        }
        if !names.insert(name.clone()) {
            return Err(format!("{name} is in the zip twice: a malformed zip"));
        }
        out.push(Listed { name, method, packed, size, local, data: 0 });
        at += 46 + name_len + extra + comment;
    }
    for file in &mut out {
        let header = read_vec(src, file.local, 30).map_err(|e| format!("{}: {e}", file.name))?;
        if header[..4] != [0x50, 0x4b, 0x03, 0x04] {
            return Err(format!("{}: bad local header", file.name));
        }
        file.data = file.local + 30 + (u16_at(&header, 26)? + u16_at(&header, 28)?) as u64;
        if file.data + file.packed > len {
            return Err(format!("{}: truncated zip", file.name));
        }
    }
    // Each file's bytes, from its local header to the end of its data, are
    // its own.
    let mut spans: Vec<(u64, u64, &str)> =
        out.iter().map(|f| (f.local, f.data + f.packed, f.name.as_str())).collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(format!("{} and {} overlap: a malformed zip", pair[0].2, pair[1].2));
        }
    }
    Ok(out)
}

/// The SHA-256 of `size` stored bytes at `data`.
fn stored(src: &(impl ReadAt + ?Sized), data: u64, size: u64, cancel: &Cancel) -> Result<[u8; 32], String> {
    let (mut h, mut buf, mut done) = (Sha256::new(), vec![0; CHUNK], 0u64);
    while done < size {
        cancel.check()?;
        let n = (size - done).min(CHUNK as u64) as usize;
        src.read_at_exact(data + done, &mut buf[..n])?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(h.finalize().into())
}

/// The SHA-256 of the `packed` deflated bytes at `data`, inflated in
/// chunks, which must come to `size` bytes.
fn inflated(
    src: &(impl ReadAt + ?Sized),
    data: u64,
    packed: u64,
    size: u64,
    cancel: &Cancel,
) -> Result<[u8; 32], String> {
    let mut state = InflateState::new_boxed(DataFormat::Raw);
    let (mut input, mut output) = (vec![0; CHUNK], vec![0; CHUNK]);
    let (mut read, mut start, mut end) = (0u64, 0usize, 0usize);
    let (mut h, mut total) = (Sha256::new(), 0u64);
    loop {
        cancel.check()?;
        if start == end && read < packed {
            end = (packed - read).min(CHUNK as u64) as usize;
            src.read_at_exact(data + read, &mut input[..end])?;
            (start, read) = (0, read + end as u64);
        }
        let r = inflate(&mut state, &input[start..end], &mut output, MZFlush::None);
        start += r.bytes_consumed;
        total += r.bytes_written as u64;
        if total > size {
            return Err(format!("inflates to more than the {size} bytes the directory says"));
        }
        h.update(&output[..r.bytes_written]);
        match r.status {
            Ok(MZStatus::StreamEnd) => break,
            Ok(_) if r.bytes_consumed + r.bytes_written > 0 => {}
            _ if start == end && read == packed => return Err("the deflated data is cut short".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("cannot inflate: {e:?}")),
        }
    }
    if total != size {
        return Err(format!("{total} bytes, the directory says {size}"));
    }
    Ok(h.finalize().into())
}

/// A module zip with files in a subdirectory, listed out of name order, and
/// the `h1:` the go command computed for it (`testdata/README.md` says how).
#[cfg(test)]
pub(crate) mod fixture {
    /// The zip of `example.com/h1fixture@v1.0.0`.
    pub(crate) const ZIP: &[u8] = include_bytes!("testdata/h1fixture-v1.0.0.zip");
    /// What `go mod download -json` (go1.19.8) printed as its `Sum`.
    pub(crate) const H1: &str = "h1:ce3CBbG79u5ehrFpfdNdX1L4nM06o4xrtNSB0mjmVpM=";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_file_zip_hashes_as_the_go_command_hashes_it() {
        assert_eq!(zip(fixture::ZIP).as_deref(), Ok(fixture::H1));
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, fixture::ZIP).unwrap();
        let len = fixture::ZIP.len() as u64;
        let sum = zip_file(&file, len, &ZipBudget::default(), &Cancel::default()).map(|s| shown(&s));
        assert_eq!(sum.as_deref(), Ok(fixture::H1), "from a file");
    }

    #[test]
    fn a_go_mod_hash_is_over_one_file_named_go_mod() {
        // Recomputed by hand: sha256("module m\n") is the line's hash.
        let line = format!("{}  go.mod\n", hex::encode(Sha256::digest(b"module m\n")));
        assert_eq!(go_mod(b"module m\n"), format!("h1:{}", STANDARD.encode(Sha256::digest(line.as_bytes()))));
        assert_eq!(parse(&go_mod(b"module m\n")), Some(go_mod_sum(Sha256::digest(b"module m\n").into())));
        assert_eq!(parse("h1:AAAA"), None, "not 32 bytes");
        assert_eq!(parse("h2:AAAA"), None);
    }

    #[test]
    fn not_a_zip_is_an_error() {
        assert!(zip(b"PK not really").is_err());
        assert!(zip(&[]).is_err());
    }

    /// A one-file zip, `method` 0 (stored) or 8 (deflated).
    fn one_file(name: &str, body: &[u8], method: u16) -> Vec<u8> {
        build(&[(name, body)], method, None)
    }

    /// A zip of `files`, each `method` 0 (stored) or 8 (deflated); with
    /// `shared`, every directory entry points at the local header of file
    /// `shared` (declaring its sizes) instead of its own.
    fn build(files: &[(&str, &[u8])], method: u16, shared: Option<usize>) -> Vec<u8> {
        let fixed = |sig: u32, name: &str, packed: usize, size: usize| {
            let mut h = sig.to_le_bytes().to_vec();
            h.extend_from_slice(&20u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&method.to_le_bytes());
            h.extend_from_slice(&[0; 8]); // time, date, crc (not read)
            h.extend_from_slice(&(packed as u32).to_le_bytes());
            h.extend_from_slice(&(size as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h
        };
        let (mut out, mut locals) = (Vec::new(), Vec::new());
        for (name, body) in files {
            let packed =
                if method == 8 { miniz_oxide::deflate::compress_to_vec(body, 6) } else { body.to_vec() };
            locals.push((out.len() as u32, packed.len(), body.len()));
            out.extend(fixed(0x0403_4b50, name, packed.len(), body.len()));
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&packed);
        }
        let at = out.len() as u32;
        let mut central = Vec::new();
        for (i, (name, _)) in files.iter().enumerate() {
            let (local, packed, size) = locals[shared.unwrap_or(i)];
            central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            central.extend_from_slice(&20u16.to_le_bytes());
            central.extend_from_slice(&fixed(0, name, packed, size)[4..]);
            central.extend_from_slice(&[0; 10]); // comment, disk, attributes
            central.extend_from_slice(&local.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let size = central.len() as u32;
        out.extend(central);
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(files.len() as u16).to_le_bytes());
        out.extend_from_slice(&(files.len() as u16).to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }

    fn sum(zip: &[u8]) -> Result<[u8; 32], String> {
        zip_sum(zip, zip.len() as u64, &ZipBudget::default(), &Cancel::default())
    }

    fn sum_within(zip: &[u8], budget: ZipBudget) -> Result<[u8; 32], String> {
        zip_sum(zip, zip.len() as u64, &budget, &Cancel::default())
    }

    #[test]
    fn stored_and_deflated_files_hash_alike_in_chunks() {
        // Bigger than several buffers, so inflating takes many rounds.
        let body: Vec<u8> = (0..5 * CHUNK as u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let expect = summary([("m@v1.0.0/a", &Sha256::digest(&body).into())]);
        for method in [0, 8] {
            let zip = one_file("m@v1.0.0/a", &body, method);
            assert_eq!(sum(&zip), Ok(expect), "method {method}");
            let mut file = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut file, &zip).unwrap();
            let within = zip_file(&file, zip.len() as u64, &ZipBudget::default(), &Cancel::default());
            assert_eq!(within, Ok(expect), "from a file, method {method}");
        }
    }

    #[test]
    fn a_damaged_zip_is_an_error_not_a_hash() {
        let body = b"package a\n".repeat(1000);
        let zip = one_file("m@v1.0.0/a.go", &body, 8);
        // Deflated data cut in the middle (the directory still says the size).
        let data = 30 + "m@v1.0.0/a.go".len();
        let mut cut = zip.clone();
        cut[data + 10] ^= 0xFF;
        assert!(sum(&cut).is_err());
        // A directory pointing past the end.
        assert!(sum(&zip[..zip.len() - 5]).is_err());
        // Unknown compression.
        assert!(sum(&one_file("a", b"x", 12)).is_err());
    }

    #[test]
    fn the_inflated_total_is_limited_before_anything_is_inflated() {
        let (a, b) = (vec![0u8; 300_000], vec![1u8; 300_000]);
        let zip = build(&[("m@v1/a", &a), ("m@v1/b", &b)], 8, None);
        assert!(sum(&zip).is_ok());
        let budget = ZipBudget { inflated_bytes: 599_999, ..ZipBudget::default() };
        let e = sum_within(&zip, budget).unwrap_err();
        assert!(e.contains("INTEGRITY_MAX_INFLATED_BYTES"), "{e}");
        assert!(
            sum_within(&zip, ZipBudget { inflated_bytes: 600_000, ..budget }).is_ok(),
            "up to it is fine"
        );
    }

    #[test]
    fn the_entry_count_is_limited() {
        let files: Vec<(String, Vec<u8>)> = (0..5).map(|i| (format!("m@v1/{i}"), vec![b'x'; 10])).collect();
        let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        let zip = build(&files, 0, None);
        let e = sum_within(&zip, ZipBudget { entries: 4, ..ZipBudget::default() }).unwrap_err();
        assert!(e.contains("INTEGRITY_MAX_ENTRIES"), "{e}");
        assert!(sum_within(&zip, ZipBudget { entries: 5, ..ZipBudget::default() }).is_ok());
    }

    #[test]
    fn entries_that_share_bytes_are_a_malformed_zip() {
        // Every entry points at the first one's header and stream: each
        // would inflate it again.
        let body = vec![0u8; 100_000];
        let files = [("m@v1/a", &body[..]), ("m@v1/b", &body[..]), ("m@v1/c", &body[..])];
        assert!(sum(&build(&files, 8, None)).is_ok());
        let e = sum(&build(&files, 8, Some(0))).unwrap_err();
        assert!(e.contains("overlap"), "{e}");
        // A stream that starts inside another file's data.
        let mut zip = build(&[("m@v1/a", b"0123456789"), ("m@v1/b", b"x")], 0, None);
        let second = zip.len() - 22 - (46 + 6) + 42;
        zip[second..second + 4].copy_from_slice(&5u32.to_le_bytes());
        assert!(sum(&zip).is_err());
    }

    #[test]
    fn a_name_twice_is_a_malformed_zip() {
        let zip = build(&[("m@v1/a", b"one"), ("m@v1/a", b"two")], 0, None);
        let e = sum(&zip).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn a_cancelled_check_stops_at_its_next_chunk() {
        let body = vec![7u8; 4 * CHUNK];
        let zip = build(&[("m@v1/a", &body)], 8, None);
        let cancel = Cancel::default();
        cancel.cancel();
        let e = zip_sum(&zip[..], zip.len() as u64, &ZipBudget::default(), &cancel).unwrap_err();
        assert!(e.contains("no client waits"), "{e}");
    }
}
