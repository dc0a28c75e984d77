//! Go's `h1:` directory hash, as the checksum database records it for a
//! module version: the SHA-256 of the lines `"{sha256 hex}  {name}\n"`,
//! sorted by name, over the files of the module's zip (named
//! `{module}@{version}/...`), base64-encoded; for a `.mod`, the same over
//! one file named `go.mod`.
//!
//! A zip is read from its central directory with positioned reads (from
//! memory, or from the spool file of a fill) and each file inflated in
//! chunks: memory stays a few buffers whatever the size of the zip.

use std::{fs::File, os::unix::fs::FileExt};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use miniz_oxide::{
    inflate::stream::{inflate, InflateState},
    DataFormat, MZFlush, MZStatus,
};
use sha2::{Digest, Sha256};

/// The size of each read and inflate buffer.
const CHUNK: usize = 64 << 10;

/// The most central directory read into memory (65 535 entries of long
/// names; Go's own limit on a module zip is 500 MB).
const MAX_DIRECTORY: usize = 64 << 20;

/// The `h1:` hash of a module zip in memory, or why the bytes are not a zip
/// this reads (zip64, an encrypted or unknown compression method, a name
/// with a newline, a size that does not match).
pub fn zip(bytes: &[u8]) -> Result<String, String> {
    zip_sum(bytes, bytes.len() as u64).map(|sum| shown(&sum))
}

/// The `h1:` hash (its 32 bytes) of the module zip in the first `len`
/// bytes of `file`.
pub fn zip_file(file: &File, len: u64) -> Result<[u8; 32], String> {
    zip_sum(file, len)
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
fn zip_sum(src: &(impl ReadAt + ?Sized), len: u64) -> Result<[u8; 32], String> {
    let mut files = entries(src, len)?;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(summary(files.iter().map(|(name, sum)| (name.as_str(), sum))))
}

/// Each file's name and the SHA-256 of its contents, from the central
/// directory.
fn entries(src: &(impl ReadAt + ?Sized), len: u64) -> Result<Vec<(String, [u8; 32])>, String> {
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
    if size as usize > MAX_DIRECTORY || at + size > len {
        return Err("the central directory is out of bounds".into());
    }
    let dir = read_vec(src, at, size as usize)?;
    let mut out = Vec::with_capacity(count);
    let mut at = 0usize;
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
        let header = read_vec(src, local, 30).map_err(|e| format!("{name}: {e}"))?;
        if header[..4] != [0x50, 0x4b, 0x03, 0x04] {
            return Err(format!("{name}: bad local header"));
        }
        let data = local + 30 + (u16_at(&header, 26)? + u16_at(&header, 28)?) as u64;
        if data + packed > len {
            return Err(format!("{name}: truncated zip"));
        }
        let sum = match method {
            0 if packed == size => stored(src, data, size)?,
            0 => return Err(format!("{name}: stored, yet {packed} bytes packed for {size}")),
            8 => inflated(src, data, packed, size).map_err(|e| format!("{name}: {e}"))?,
            m => return Err(format!("{name}: compression method {m} is not read")),
        };
        out.push((name, sum));
        at += 46 + name_len + extra + comment;
    }
    Ok(out)
}

/// The SHA-256 of `size` stored bytes at `data`.
fn stored(src: &(impl ReadAt + ?Sized), data: u64, size: u64) -> Result<[u8; 32], String> {
    let (mut h, mut buf, mut done) = (Sha256::new(), vec![0; CHUNK], 0u64);
    while done < size {
        let n = (size - done).min(CHUNK as u64) as usize;
        src.read_at_exact(data + done, &mut buf[..n])?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(h.finalize().into())
}

/// The SHA-256 of the `packed` deflated bytes at `data`, inflated in
/// chunks, which must come to `size` bytes.
fn inflated(src: &(impl ReadAt + ?Sized), data: u64, packed: u64, size: u64) -> Result<[u8; 32], String> {
    let mut state = InflateState::new_boxed(DataFormat::Raw);
    let (mut input, mut output) = (vec![0; CHUNK], vec![0; CHUNK]);
    let (mut read, mut start, mut end) = (0u64, 0usize, 0usize);
    let (mut h, mut total) = (Sha256::new(), 0u64);
    loop {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let packed = if method == 8 { miniz_oxide::deflate::compress_to_vec(body, 6) } else { body.to_vec() };
        let fixed = |sig: u32| {
            let mut h = sig.to_le_bytes().to_vec();
            h.extend_from_slice(&20u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&method.to_le_bytes());
            h.extend_from_slice(&[0; 8]); // time, date, crc (not read)
            h.extend_from_slice(&(packed.len() as u32).to_le_bytes());
            h.extend_from_slice(&(body.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h
        };
        let mut out = fixed(0x0403_4b50);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&packed);
        let at = out.len() as u32;
        let mut central = 0x0201_4b50u32.to_le_bytes().to_vec();
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&fixed(0)[4..]);
        central.extend_from_slice(&[0; 14]); // comment, disk, attributes, local header at 0
        central.extend_from_slice(name.as_bytes());
        let size = central.len() as u32;
        out.extend(central);
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }

    #[test]
    fn stored_and_deflated_files_hash_alike_in_chunks() {
        // Bigger than several buffers, so inflating takes many rounds.
        let body: Vec<u8> = (0..5 * CHUNK as u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let expect = summary([("m@v1.0.0/a", &Sha256::digest(&body).into())]);
        for method in [0, 8] {
            let zip = one_file("m@v1.0.0/a", &body, method);
            assert_eq!(zip_sum(&zip[..], zip.len() as u64), Ok(expect), "method {method}");
            let mut file = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut file, &zip).unwrap();
            assert_eq!(zip_file(&file, zip.len() as u64), Ok(expect), "from a file, method {method}");
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
        assert!(zip_sum(&cut[..], cut.len() as u64).is_err());
        // A directory pointing past the end.
        assert!(zip_sum(&zip[..zip.len() - 5], zip.len() as u64 - 5).is_err());
        // Unknown compression.
        assert!(zip_sum(&one_file("a", b"x", 12)[..], one_file("a", b"x", 12).len() as u64).is_err());
    }
}
