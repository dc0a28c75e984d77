//! Go modules for the tests: module zips, a static `GOPROXY` tree, and the
//! go command with no configuration from this machine.

use std::{path::Path, process::Command};

/// CRC-32 (IEEE), as a zip entry needs it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// A zip of `files`, deflated as module zips are.
pub fn zip(files: &[(String, &str)]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, body) in files {
        let packed = miniz_oxide::deflate::compress_to_vec(body.as_bytes(), 6);
        let (offset, crc) = (out.len() as u32, crc32(body.as_bytes()));
        let fixed = |sig: u32| {
            let mut h = sig.to_le_bytes().to_vec();
            h.extend_from_slice(&20u16.to_le_bytes()); // version needed
            h.extend_from_slice(&[0, 0, 8, 0, 0, 0, 0, 0]); // flags, method (deflate), time, date
            for v in [crc, packed.len() as u32, body.len() as u32] {
                h.extend_from_slice(&v.to_le_bytes());
            }
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            h
        };
        out.extend(fixed(0x0403_4b50));
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&packed);
        let mut c = 0x0201_4b50u32.to_le_bytes().to_vec();
        c.extend_from_slice(&20u16.to_le_bytes()); // version made by
        c.extend_from_slice(&fixed(0)[4..]);
        c.extend_from_slice(&[0; 10]); // comment length, disk, attributes
        c.extend_from_slice(&offset.to_le_bytes());
        c.extend_from_slice(name.as_bytes());
        central.extend(c);
    }
    let (at, size, n) = (out.len() as u32, central.len() as u32, files.len() as u16);
    out.extend(central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for v in [n, n] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [size, at] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// The go command's case-encoding of a module path.
pub fn encode(module: &str) -> String {
    module
        .chars()
        .map(|c| if c.is_ascii_uppercase() { format!("!{}", c.to_ascii_lowercase()) } else { c.into() })
        .collect()
}

/// Publishes `module@version` in the static tree under `www`: its `.info`,
/// `.mod` (`go_mod`) and `.zip` (`files`, with `go.mod` unless the version
/// is `+incompatible`), and adds it to `@v/list`.
pub fn publish(www: &Path, module: &str, version: &str, go_mod: &str, files: &[(&str, &str)]) {
    let dir = www.join(encode(module)).join("@v");
    std::fs::create_dir_all(&dir).unwrap();
    let info = format!(r#"{{"Version":"{version}","Time":"2024-01-02T03:04:05Z"}}"#);
    std::fs::write(dir.join(format!("{version}.info")), info).unwrap();
    std::fs::write(dir.join(format!("{version}.mod")), go_mod).unwrap();
    let mut entries: Vec<(String, &str)> =
        files.iter().map(|(name, body)| (format!("{module}@{version}/{name}"), *body)).collect();
    if !version.ends_with("+incompatible") {
        entries.push((format!("{module}@{version}/go.mod"), go_mod));
    }
    std::fs::write(dir.join(format!("{version}.zip")), zip(&entries)).unwrap();
    let list = dir.join("list");
    let mut versions = std::fs::read_to_string(&list).unwrap_or_default();
    versions.push_str(&format!("{version}\n"));
    std::fs::write(list, versions).unwrap();
}

/// Runs the go command in `dir` with `modcache` as its module cache.
pub async fn go(dir: &Path, work: &Path, goproxy: &str, modcache: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("go");
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", work)
        .env("GOPATH", work.join("gopath"))
        .env("GOCACHE", work.join("gocache"))
        .env("GOMODCACHE", work.join(modcache))
        .env("GOPROXY", goproxy)
        .env("GOSUMDB", "off")
        .env("GOFLAGS", "-mod=mod -modcacherw")
        .env("GO111MODULE", "on")
        .env("CGO_ENABLED", "0");
    let out = tokio::task::spawn_blocking(move || {
        cmd.output().expect("go runs (the test command installs golang-go)")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}
