//! Go's `h1:` directory hash, as the checksum database records it for a
//! module version: the SHA-256 of the lines `"{sha256 hex}  {name}\n"`,
//! sorted by name, over the files of the module's zip (named
//! `{module}@{version}/...`), base64-encoded; for a `.mod`, the same over
//! one file named `go.mod`.
//!
//! Not yet checked on fills (issue 20): this computes the hash from bytes
//! already in memory.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use sha2::{Digest, Sha256};

/// The `h1:` hash of a module zip, or why the bytes are not a zip this
/// reads (zip64, an encrypted or unknown compression method, a name with a
/// newline, a size that does not match).
pub fn zip(bytes: &[u8]) -> Result<String, String> {
    let mut files = entries(bytes)?;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(hash(files.iter().map(|(name, sum)| (name.as_str(), sum))))
}

/// The `h1:` hash of a `go.mod` file.
pub fn go_mod(bytes: &[u8]) -> String {
    hash([("go.mod", &Sha256::digest(bytes).into())])
}

fn hash<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8; 32])>) -> String {
    let mut h = Sha256::new();
    for (name, sum) in files {
        h.update(format!("{}  {name}\n", hex::encode(sum)));
    }
    format!("h1:{}", STANDARD.encode(h.finalize()))
}

fn u16_at(b: &[u8], at: usize) -> Result<usize, String> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]) as usize).ok_or_else(|| "truncated zip".into())
}

fn u32_at(b: &[u8], at: usize) -> Result<usize, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
        .ok_or_else(|| "truncated zip".into())
}

/// Each file's name and the SHA-256 of its contents, from the central
/// directory.
fn entries(b: &[u8]) -> Result<Vec<(String, [u8; 32])>, String> {
    const END: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    let from = b.len().saturating_sub(22 + 0xFFFF);
    let end = (from..b.len().saturating_sub(21))
        .rev()
        .find(|&i| b[i..i + 4] == END)
        .ok_or("no end of central directory: not a zip")?;
    let (count, mut at) = (u16_at(b, end + 10)?, u32_at(b, end + 16)?);
    if count == 0xFFFF || at == 0xFFFF_FFFF {
        return Err("zip64 is not read".into());
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        if b.get(at..at + 4) != Some(&[0x50, 0x4b, 0x01, 0x02]) {
            return Err("bad central directory entry".into());
        }
        let (flags, method) = (u16_at(b, at + 8)?, u16_at(b, at + 10)?);
        let (packed, size) = (u32_at(b, at + 20)?, u32_at(b, at + 24)?);
        let (name_len, extra, comment) = (u16_at(b, at + 28)?, u16_at(b, at + 30)?, u16_at(b, at + 32)?);
        let local = u32_at(b, at + 42)?;
        let name = b.get(at + 46..at + 46 + name_len).ok_or("truncated zip")?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| "a file name is not UTF-8")?;
        if name.contains('\n') {
            return Err(format!("file name {name:?} has a newline"));
        }
        if flags & 1 != 0 {
            return Err(format!("{name} is encrypted"));
        }
        if b.get(local..local + 4) != Some(&[0x50, 0x4b, 0x03, 0x04]) {
            return Err(format!("{name}: bad local header"));
        }
        let data = local + 30 + u16_at(b, local + 26)? + u16_at(b, local + 28)?;
        let data = b.get(data..data + packed).ok_or("truncated zip")?;
        let contents = match method {
            0 => data.to_vec(),
            8 => miniz_oxide::inflate::decompress_to_vec_with_limit(data, size)
                .map_err(|e| format!("{name}: cannot inflate: {e:?}"))?,
            m => return Err(format!("{name}: compression method {m} is not read")),
        };
        if contents.len() != size {
            return Err(format!("{name}: {} bytes, the directory says {size}", contents.len()));
        }
        out.push((name, Sha256::digest(&contents).into()));
        at += 46 + name_len + extra + comment;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_go_mod_hash_is_over_one_file_named_go_mod() {
        // Recomputed by hand: sha256("module m\n") is the line's hash.
        let line = format!("{}  go.mod\n", hex::encode(Sha256::digest(b"module m\n")));
        assert_eq!(go_mod(b"module m\n"), format!("h1:{}", STANDARD.encode(Sha256::digest(line.as_bytes()))));
    }

    #[test]
    fn not_a_zip_is_an_error() {
        assert!(zip(b"PK not really").is_err());
        assert!(zip(&[]).is_err());
    }
}
