//! `Content-Type` by file extension, for upstreams that send none.
//!
//! The general table is `mime_guess`'s. Its entries come from web servers
//! and browsers, and for package formats some are wrong or missing: `.rpm`
//! is `audio/x-pn-realaudio-plugin` there, `.deb` is `application/octet-stream`,
//! `.tgz` is `application/x-compressed`, `.mod` (a Go module file) is
//! `video/mpeg`, and `.whl` or `.zst` are unknown. So the extensions of the
//! formats artifactapi proxies are looked up in `ARTIFACTS` first.

/// Extensions of artifact formats where `mime_guess` answers otherwise, and
/// the media types their registries and package managers use.
const ARTIFACTS: &[(&str, &str)] = &[
    ("tgz", "application/gzip"),
    ("zst", "application/zstd"),
    ("whl", "application/zip"),
    // RFC 7303 prefers `application/xml` to `text/xml`.
    ("xml", "application/xml"),
    ("yaml", "application/yaml"),
    ("yml", "application/yaml"),
    ("rpm", "application/x-rpm"),
    ("deb", "application/vnd.debian.binary-package"),
    // Armoured signatures and checksum files, readable in a browser.
    ("asc", "text/plain"),
    ("sha256", "text/plain"),
    // PEP 658 wheel metadata, Go module files.
    ("metadata", "text/plain"),
    ("mod", "text/plain"),
];

/// The media type for a file name, by its extension; `application/octet-stream`
/// when unknown.
pub fn guess(file_name: &str) -> &'static str {
    let Some((_, extension)) = file_name.rsplit_once('.') else {
        return "application/octet-stream";
    };
    ARTIFACTS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(extension))
        .map(|(_, media)| *media)
        .or_else(|| mime_guess::from_ext(extension).first_raw())
        .unwrap_or("application/octet-stream")
}

#[cfg(test)]
mod tests {
    use super::guess;

    #[test]
    fn guesses_by_extension() {
        assert_eq!(guess("a.tar.gz"), "application/gzip");
        assert_eq!(guess("core-7.21.0.TGZ"), "application/gzip");
        assert_eq!(guess("t.zip"), "application/zip");
        assert_eq!(guess("x-1.0-py3-none-any.whl"), "application/zip");
        assert_eq!(guess("repomd.xml"), "application/xml");
        assert_eq!(guess("p.rpm"), "application/x-rpm");
        assert_eq!(guess("p.deb"), "application/vnd.debian.binary-package");
        assert_eq!(guess("binary"), "application/octet-stream");
    }

    #[test]
    fn artifact_formats_keep_their_registries_types() {
        for (name, media) in [
            ("a.tar.xz", "application/x-xz"),
            ("a.xz", "application/x-xz"),
            ("a.tar.bz2", "application/x-bzip2"),
            ("a.bz2", "application/x-bzip2"),
            ("a.tar.zst", "application/zstd"),
            ("a.tar", "application/x-tar"),
            ("a.jar", "application/java-archive"),
            ("package.json", "application/json"),
            ("index.yaml", "application/yaml"),
            ("a.yml", "application/yaml"),
            ("a.apk", "application/vnd.android.package-archive"),
            ("a.tar.gz.asc", "text/plain"),
            ("a.sig", "application/pgp-signature"),
            ("NOTES.txt", "text/plain"),
            ("a.tar.gz.sha256", "text/plain"),
            ("index.html", "text/html"),
            ("x-1.0-py3-none-any.whl.metadata", "text/plain"),
            ("v1.2.3.mod", "text/plain"),
        ] {
            assert_eq!(guess(name), media, "{name}");
        }
    }

    #[test]
    fn other_files_get_the_general_table() {
        for (name, media) in [
            ("manual.PDF", "application/pdf"),
            ("logo.png", "image/png"),
            ("module.wasm", "application/wasm"),
            ("v1.2.3.info", "application/octet-stream"),
            (".hidden", "application/octet-stream"),
            ("trailing.", "application/octet-stream"),
        ] {
            assert_eq!(guess(name), media, "{name}");
        }
    }
}
