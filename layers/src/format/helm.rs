//! Helm chart repositories (`package: helm`): `index.yaml` changes with
//! every release; a chart never does.
//!
//! The index is rewritten so that every chart comes back through this
//! proxy: relative URLs and absolute ones into the remote's `base_url` go to
//! the remote, absolute ones into the `base_url` of the files remote named
//! by `helm_files_remote` (charts are often release assets elsewhere) go to
//! that remote; a URL on any other host is left as it is, and logged. A
//! chart is checked against the `digest` its index entry promises, and the
//! index is read through the cache for it when no promise is in memory.

use serde_yaml_ng::Value;
use url::Url;

use super::{
    options::{Configured, FormatOptions, KeyReader, Own},
    rewrite_link, Document, Documents, Format, Groupable, LinkMap, Negotiated, PathKind, Spec,
};
use crate::{
    budget::{DocumentBudget, Exceeded},
    digest::Expected,
    path::ArtifactPath,
    remote::FilesRewrite,
    remote::Remote,
};

/// A chart file's name and version.
fn chart_of(file: &str) -> Option<(&str, &str)> {
    let file = file.strip_suffix(".tgz")?;
    file.match_indices('-').rev().find_map(|(at, _)| {
        let rest = &file[at + 1..];
        let digit = rest.trim_start_matches('v').starts_with(|c: char| c.is_ascii_digit());
        (digit && at > 0).then(|| (&file[..at], rest))
    })
}

/// Helm chart repositories.
pub(super) struct Helm;

/// A repository's `index.yaml`.
struct Index;

const INDEX: &str = "index.yaml";

static SPEC: Spec = Spec {
    mutable: &[r"(^|/)index\.yaml$"],
    names_files: true,
    grouping: Groupable::No("helm remotes cannot be grouped yet: their indexes are not merged"),
    ..Spec::plain("helm")
};

impl Format for Helm {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    /// A chart archive's chart and version (`cert-manager-v1.13.0.tgz`: the
    /// version is the part after the last `-` that a digit, or `v` and a
    /// digit, follows).
    /// `index.yaml` is metadata, and so is a chart's provenance file; a
    /// chart (`{name}-{version}.tgz`, the version the part after the last
    /// `-` that a digit, or `v` and a digit, starts) is its chart's at its
    /// version; anything else is unknown.
    fn classify(&self, path: &ArtifactPath) -> PathKind {
        let file = path.file_name();
        if file == INDEX {
            return PathKind::Metadata(None);
        }
        if let Some(chart) = file.strip_suffix(".prov") {
            return chart_of(chart).map_or(PathKind::Unknown, |(name, _)| PathKind::metadata_of(name));
        }
        chart_of(file).map_or(PathKind::Unknown, |(name, version)| PathKind::file(name, version))
    }

    crate::capabilities!(documents, configured);
}

impl Documents for Helm {
    fn document(&self, path: &ArtifactPath) -> Option<&'static dyn Document> {
        (path.file_name() == INDEX).then_some(&Index as &'static dyn Document)
    }

    /// A chart is listed in the `index.yaml` of the remote that serves it,
    /// or of the remote whose files remote serves it.
    fn listed_in(&self, lister: &Remote, remote: &Remote, path: &ArtifactPath) -> Option<ArtifactPath> {
        let lists =
            lister.name == remote.name || lister.files.as_ref().is_some_and(|f| f.remote == remote.name);
        (lists && path.decoded().ends_with(".tgz")).then(|| ArtifactPath::parse(INDEX, None).ok())?
    }
}

impl Document for Index {
    fn negotiate(&self, _accept: Option<&str>) -> Negotiated {
        Negotiated { variant: "helm-index", accept: "application/x-yaml, text/yaml, */*" }
    }

    fn variants(&self) -> &'static [&'static str] {
        &["helm-index"]
    }

    /// YAML, whose aliases can make a few kilobytes describe gigabytes:
    /// walked with aliases expanded, and refused past the budget before
    /// anything of that size is built.
    fn measure(&self, body: &[u8], budget: &DocumentBudget) -> Result<(), Exceeded> {
        budget.scan_yaml(body)
    }

    /// Every `entries.*[].urls[]` mapped, recording the entry's `digest`.
    fn rewrite(&self, body: &[u8], _json: bool, page: &Url, links: &dyn LinkMap) -> Result<Vec<u8>, String> {
        let mut index: Value =
            serde_yaml_ng::from_slice(body).map_err(|e| format!("not a Helm index: {e}"))?;
        let Some(entries) = index.get_mut("entries").and_then(Value::as_mapping_mut) else {
            return Err("a Helm index has `entries`".into());
        };
        for (_, versions) in entries.iter_mut() {
            for version in versions.as_sequence_mut().into_iter().flatten() {
                let expected = version.get("digest").and_then(Value::as_str).and_then(Expected::sha256_hex);
                let Some(urls) = version.get_mut("urls").and_then(Value::as_sequence_mut) else { continue };
                for url in urls {
                    let Some(link) = url.as_str().map(str::to_owned) else { continue };
                    match rewrite_link(page, &link, expected.clone(), links) {
                        Some(new) => *url = Value::String(new),
                        None => tracing::info!(url = %link, "a chart URL on another host is left as it is"),
                    }
                }
            }
        }
        serde_yaml_ng::to_string(&index).map(String::into_bytes).map_err(|e| e.to_string())
    }
}

impl Configured for Helm {
    fn keys(&self) -> &'static [&'static str] {
        &["helm_files_remote"]
    }

    fn remote_keys(&self) -> &'static [&'static str] {
        &["helm_files_remote"]
    }

    /// Absolute chart URLs into the `helm_files_remote`'s base URL go to it.
    fn read(&self, keys: &mut dyn KeyReader) -> Own {
        let target = keys.string("helm_files_remote");
        let files = target.and_then(|target| match keys.base_url_of(&target).flatten() {
            Some(url) => Some(FilesRewrite { url, remote: target }),
            None => {
                keys.problem("helm_files_remote", format!("names no remote with a base_url: {target:?}"));
                None
            }
        });
        Own { options: FormatOptions::default(), files }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::*;

    #[test]
    fn the_index_moves_charts_do_not() {
        let class = |p: &str| classifier("helm", None, &[]).classify(p);
        assert_eq!(class("index.yaml"), BUILTIN_MUTABLE);
        assert_eq!(class("stable/index.yaml"), BUILTIN_MUTABLE);
        assert_ne!(class("charts/nginx-15.0.0.tgz"), BUILTIN_MUTABLE);
        let at = |p: &str| coordinates_at(&Helm, p);
        assert_eq!(at("charts/cert-manager-v1.13.0.tgz"), version_of("cert-manager", "v1.13.0"));
        assert_eq!(at("nginx-ingress-4.8.3.tgz"), version_of("nginx-ingress", "4.8.3"));
        assert_eq!(at("index.yaml"), None);
    }

    struct Map;
    impl LinkMap for Map {
        fn map(&self, u: &Url, expected: Option<Expected>) -> Option<String> {
            let rest = u.as_str().strip_prefix("https://charts.example/")?;
            Some(format!(
                "http://proxy/api/v1/remote/helm/{rest}#{}",
                expected.map(|e| e.hex()).unwrap_or_default()
            ))
        }
    }

    #[test]
    fn chart_urls_are_rewritten_with_their_digests_and_others_kept() {
        let digest = "ab".repeat(32);
        let index = format!(
            "apiVersion: v1\nentries:\n  a:\n  - name: a\n    version: 1.0.0\n    digest: {digest}\n    urls:\n    - charts/a-1.0.0.tgz\n    \
             - https://elsewhere.example/a-1.0.0.tgz\n"
        );
        let page = Url::parse("https://charts.example/index.yaml").unwrap();
        let out = String::from_utf8(Index.rewrite(index.as_bytes(), false, &page, &Map).unwrap()).unwrap();
        assert!(
            out.contains(&format!("http://proxy/api/v1/remote/helm/charts/a-1.0.0.tgz#{digest}")),
            "{out}"
        );
        assert!(out.contains("https://elsewhere.example/a-1.0.0.tgz"), "{out}");
        assert!(Index.rewrite(b"not: [yaml", false, &page, &Map).is_err());
    }

    #[test]
    fn an_index_of_aliases_is_measured_expanded_and_refused() {
        let mut index = String::from("apiVersion: v1\nentries:\n  a: &a0\n  - name: a\n    version: 1.0.0\n    urls: [charts/a-1.0.0.tgz]\n");
        for i in 1..=8 {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            index.push_str(&format!("  a{i}: &a{i} [{refs}]\n"));
        }
        let over = Index.measure(index.as_bytes(), &DocumentBudget::default()).unwrap_err();
        assert!(over.setting.starts_with("METADATA_MAX_"), "{over}");
        let plain = "apiVersion: v1\nentries:\n  a:\n  - name: a\n    urls: [charts/a-1.0.0.tgz]\n";
        assert_eq!(Index.measure(plain.as_bytes(), &DocumentBudget::default()), Ok(()));
    }
}
