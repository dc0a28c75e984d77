//! What a policy reads of a PyPI project's pages: the versions its files
//! name, their upload times (PEP 700), and the page with some hidden.

use super::*;

impl Versions for Pypi {
    fn publish_times(&self) -> bool {
        true
    }

    /// A project's page (not the root list of projects).
    fn lists_versions(&self, path: &ArtifactPath) -> bool {
        matches!(self.classify(path), PathKind::Metadata(Some(_))) && self.merges(path)
    }

    /// The versions of the files the page lists, and how many files have
    /// a name this format cannot read a version from.
    fn listed_versions(&self, _path: &ArtifactPath, body: &[u8], json: bool) -> Option<Listed> {
        let mut listed = Listed::default();
        for file in merge::file_names(body, json) {
            match distribution_of(&file).and_then(|c| c.version) {
                Some(version) => listed.versions.push(version),
                None => listed.unversioned += 1,
            }
        }
        listed.versions.sort();
        listed.versions.dedup();
        Some(listed)
    }

    /// Files of hidden versions leave the page (and `versions`); a file
    /// whose version cannot be read is asked about as `None`.
    fn filter_versions(
        &self,
        _path: &ArtifactPath,
        body: &[u8],
        json: bool,
        keep: &dyn Fn(Option<&str>) -> bool,
    ) -> Result<Vec<u8>, String> {
        let kept = |file: &str| keep(distribution_of(file).and_then(|c| c.version).as_deref());
        merge::filter(body, json, &kept, &|version| keep(Some(version)))
    }

    /// PEP 691 JSON pages give each file's `upload-time`.
    fn times_document(
        &self,
        path: &ArtifactPath,
        _version: Option<&str>,
    ) -> Option<(ArtifactPath, &'static str)> {
        Some((self.owner_document(path)?, accept_for(JSON)))
    }

    /// A version's time is its earliest file's `upload-time`.
    fn publish_times_in(&self, body: &[u8]) -> Vec<(String, i64)> {
        let Ok(doc) = serde_json::from_slice::<Value>(body) else { return Vec::new() };
        let mut times: Vec<(String, i64)> = Vec::new();
        for file in doc.get("files").and_then(Value::as_array).into_iter().flatten() {
            let version = file["filename"].as_str().and_then(distribution_of).and_then(|c| c.version);
            let time = file["upload-time"].as_str().and_then(crate::format::time::parse_rfc3339);
            if let (Some(version), Some(time)) = (version, time) {
                match times.iter_mut().find(|(v, _)| *v == version) {
                    Some((_, t)) => *t = (*t).min(time),
                    None => times.push((version, time)),
                }
            }
        }
        times
    }

    fn latest_list(&self, _path: &ArtifactPath) -> Option<ArtifactPath> {
        None
    }
}
