//! Packument versions across sources: merged for groups, filtered for
//! policy.

use serde_json::Value;

use crate::format::Part;

/// See [`Npm::merge`](super::Npm): `modified` is the latest of the members'.
pub(super) fn merge_packuments(parts: &[Part<'_>]) -> Result<Vec<u8>, String> {
    let mut docs = parts.iter().map(|p| serde_json::from_slice::<Value>(p.body));
    let mut merged = docs.next().ok_or("nothing to merge")?.map_err(|e| format!("not a packument: {e}"))?;
    for doc in docs {
        let doc = doc.map_err(|e| format!("not a packument: {e}"))?;
        let versions: Vec<String> = doc
            .get("versions")
            .and_then(Value::as_object)
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default();
        for version in versions {
            let known = merged.pointer(&format!("/versions/{}", pointer_escape(&version))).is_some();
            if known {
                continue;
            }
            insert(&mut merged, "versions", &version, doc["versions"][&version].clone());
            if let Some(time) = doc.get("time").and_then(|t| t.get(&version)) {
                insert(&mut merged, "time", &version, time.clone());
            }
        }
        if let Some(tags) = doc.get("dist-tags").and_then(Value::as_object) {
            for (tag, version) in tags {
                if merged.pointer(&format!("/dist-tags/{}", pointer_escape(tag))).is_none() {
                    insert(&mut merged, "dist-tags", tag, version.clone());
                }
            }
        }
        for at in ["/modified", "/time/modified"] {
            if let (Some(theirs), ours) = (doc.pointer(at).and_then(Value::as_str), merged.pointer(at)) {
                if ours.and_then(Value::as_str).is_none_or(|ours| ours < theirs) {
                    let (object, key) = at.rsplit_once('/').unwrap_or_default();
                    let target =
                        if object.is_empty() { Some(&mut merged) } else { merged.pointer_mut(object) };
                    if let Some(Value::Object(target)) = target {
                        target.insert(key.to_owned(), Value::String(theirs.to_owned()));
                    }
                }
            }
        }
    }
    serde_json::to_vec(&merged).map_err(|e| e.to_string())
}

/// See `Npm::filter_versions`.
pub(super) fn filter_packument(body: &[u8], keep: &dyn Fn(&str) -> bool) -> Result<Vec<u8>, String> {
    let mut doc: Value = serde_json::from_slice(body).map_err(|e| format!("not a packument: {e}"))?;
    let scheme = crate::format::version::Scheme::Semver;
    let mut left: Vec<String> = Vec::new();
    if let Some(versions) = doc.get_mut("versions").and_then(Value::as_object_mut) {
        versions.retain(|v, _| keep(v));
        left = versions.keys().cloned().collect();
    }
    if let Some(times) = doc.get_mut("time").and_then(Value::as_object_mut) {
        times.retain(|v, _| matches!(v.as_str(), "created" | "modified") || keep(v));
    }
    left.sort_by(|a, b| scheme.compare(a, b));
    let newest_release = left.iter().rev().find(|v| !v.contains('-')).or(left.last()).cloned();
    if let Some(tags) = doc.get_mut("dist-tags").and_then(Value::as_object_mut) {
        let hidden: Vec<String> = tags
            .iter()
            .filter(|(_, v)| v.as_str().is_some_and(|v| !keep(v)))
            .map(|(t, _)| t.clone())
            .collect();
        for tag in hidden {
            match (&newest_release, tag.as_str()) {
                (Some(newest), "latest") => {
                    tags.insert(tag, Value::String(newest.clone()));
                }
                _ => {
                    tags.remove(&tag);
                }
            }
        }
    }
    serde_json::to_vec(&doc).map_err(|e| e.to_string())
}

/// `doc[object][key] = value`, making `doc[object]` an object if need be.
fn insert(doc: &mut Value, object: &str, key: &str, value: Value) {
    let Some(root) = doc.as_object_mut() else { return };
    let entry = root.entry(object).or_insert_with(|| Value::Object(Default::default()));
    if !entry.is_object() {
        *entry = Value::Object(Default::default());
    }
    if let Some(map) = entry.as_object_mut() {
        map.insert(key.to_owned(), value);
    }
}

/// A JSON pointer segment for `key` (RFC 6901).
fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::Npm;
    use crate::{format::Versions, path::ArtifactPath};

    /// The keys of `doc[field]`, sorted.
    fn keys(doc: &Value, field: &str) -> Vec<String> {
        let mut keys: Vec<String> =
            doc[field].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
        keys.sort();
        keys
    }

    #[test]
    fn a_withheld_version_leaves_versions_time_and_dist_tags() {
        let packument = json!({
            "name": "acme-utils",
            "dist-tags": {"latest": "2.0.0", "stable": "1.1.0", "next": "3.0.0-rc.1", "beta": "2.0.0"},
            "versions": {"1.0.0": {"v": 1}, "1.1.0": {"v": 2}, "2.0.0": {"v": 3}, "3.0.0-rc.1": {"v": 4}},
            "time": {"created": "2020-01-01T00:00:00.000Z", "modified": "2025-01-01T00:00:00.000Z",
                     "1.0.0": "2020-01-01T00:00:00.000Z", "1.1.0": "2021-01-01T00:00:00.000Z",
                     "2.0.0": "2025-01-01T00:00:00.000Z", "3.0.0-rc.1": "2025-01-01T00:00:00.000Z"}
        });
        let withheld = ["2.0.0", "3.0.0-rc.1"];
        let keep = |v: Option<&str>| v.is_some_and(|v| !withheld.contains(&v));
        let path = ArtifactPath::parse("acme-utils", None).unwrap();
        let body = serde_json::to_vec(&packument).unwrap();
        let filtered: Value =
            serde_json::from_slice(&Npm.filter_versions(&path, &body, true, &keep).unwrap()).unwrap();

        assert_eq!(keys(&filtered, "versions"), ["1.0.0", "1.1.0"]);
        assert_eq!(filtered["versions"]["1.1.0"], json!({"v": 2}), "what is kept is kept whole");
        assert_eq!(keys(&filtered, "time"), ["1.0.0", "1.1.0", "created", "modified"]);
        // `latest` falls back to the newest release left; other tags of a
        // withheld version go.
        assert_eq!(filtered["dist-tags"], json!({"latest": "1.1.0", "stable": "1.1.0"}));
        assert_eq!(filtered["name"], "acme-utils");

        let all = |_: Option<&str>| true;
        let unfiltered: Value =
            serde_json::from_slice(&Npm.filter_versions(&path, &body, true, &all).unwrap()).unwrap();
        assert_eq!(unfiltered, packument, "nothing withheld, nothing changed");
    }
}
