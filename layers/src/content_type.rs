//! `Content-Type` by file extension, for upstreams that send none.

/// The media type for a file name, by its extension; `application/octet-stream`
/// when unknown.
pub fn guess(file_name: &str) -> &'static str {
    let lower = file_name.to_ascii_lowercase();
    const BY_SUFFIX: &[(&str, &str)] = &[
        (".tar.gz", "application/gzip"),
        (".tgz", "application/gzip"),
        (".gz", "application/gzip"),
        (".tar.xz", "application/x-xz"),
        (".xz", "application/x-xz"),
        (".tar.bz2", "application/x-bzip2"),
        (".bz2", "application/x-bzip2"),
        (".zst", "application/zstd"),
        (".tar", "application/x-tar"),
        (".zip", "application/zip"),
        (".whl", "application/zip"),
        (".jar", "application/java-archive"),
        (".json", "application/json"),
        (".xml", "application/xml"),
        (".yaml", "application/yaml"),
        (".yml", "application/yaml"),
        (".rpm", "application/x-rpm"),
        (".apk", "application/vnd.android.package-archive"),
        (".deb", "application/vnd.debian.binary-package"),
        (".asc", "text/plain"),
        (".sig", "application/pgp-signature"),
        (".txt", "text/plain"),
        (".sha256", "text/plain"),
        (".html", "text/html"),
        (".metadata", "text/plain"),
    ];
    BY_SUFFIX
        .iter()
        .find(|(suffix, _)| lower.ends_with(suffix))
        .map(|(_, media)| *media)
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
}
