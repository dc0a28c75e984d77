//! Blocklists from OSV records (as OSV exports them: one JSON record per
//! file, or a directory of them): the affected versions of each package of
//! the remote's ecosystem, listed and in ranges, become denials named by
//! the record's id. Withdrawn records are ignored.

use std::path::Path;

use serde_json::Value;

use super::{Denial, Range, Versions};

/// The denials the records at `path` (a file or a directory of `.json`
/// files) make for `ecosystem`, names normalized by `normalize`.
pub fn load(path: &Path, ecosystem: &str, normalize: &dyn Fn(&str) -> String) -> Result<Vec<Denial>, String> {
    let mut files = Vec::new();
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?.path();
            if entry.extension().is_some_and(|e| e == "json") {
                files.push(entry);
            }
        }
        files.sort();
    } else {
        files.push(path.to_owned());
    }
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let record: Value = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not an OSV record: {e}", file.display()))?;
        out.extend(denials(&record, ecosystem, normalize));
    }
    Ok(out)
}

/// One record's denials for `ecosystem`.
pub fn denials(record: &Value, ecosystem: &str, normalize: &dyn Fn(&str) -> String) -> Vec<Denial> {
    if record.get("withdrawn").is_some_and(|w| !w.is_null()) {
        return Vec::new();
    }
    let id = record.get("id").and_then(Value::as_str).unwrap_or("osv").to_owned();
    let mut out = Vec::new();
    for affected in record.get("affected").and_then(Value::as_array).into_iter().flatten() {
        let package = &affected["package"];
        if package["ecosystem"].as_str() != Some(ecosystem) {
            continue;
        }
        let Some(name) = package["name"].as_str() else { continue };
        let name = normalize(name);
        let listed: Vec<String> = affected
            .get("versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        if !listed.is_empty() {
            out.push(Denial { name: name.clone(), versions: Versions::Listed(listed), rule: id.clone() });
        }
        let mut ranges = Vec::new();
        for range in affected.get("ranges").and_then(Value::as_array).into_iter().flatten() {
            if range["type"].as_str() == Some("GIT") {
                continue;
            }
            let mut introduced: Option<String> = None;
            for event in range.get("events").and_then(Value::as_array).into_iter().flatten() {
                let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_owned);
                if let Some(start) = text("introduced") {
                    if let Some(open) = introduced.take() {
                        ranges.push(Range::between(&open, None, None));
                    }
                    introduced = Some(start);
                } else if let Some(fixed) = text("fixed") {
                    ranges.push(Range::between(
                        introduced.take().as_deref().unwrap_or("0"),
                        Some(&fixed),
                        None,
                    ));
                } else if let Some(last) = text("last_affected") {
                    ranges.push(Range::between(
                        introduced.take().as_deref().unwrap_or("0"),
                        None,
                        Some(&last),
                    ));
                }
            }
            if let Some(open) = introduced {
                ranges.push(Range::between(&open, None, None));
            }
        }
        if !ranges.is_empty() {
            out.push(Denial { name, versions: Versions::Ranges(ranges), rule: id.clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Scheme;

    #[test]
    fn ranges_and_lists_of_the_ecosystem_only() {
        let record = serde_json::json!({
            "id": "GHSA-test-0001",
            "affected": [
                {"package": {"ecosystem": "Example", "name": "evil"},
                 "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.0.0"}, {"fixed": "1.2.0"}, {"introduced": "2.0.0"}]}],
                 "versions": ["0.9.0"]},
                {"package": {"ecosystem": "Other", "name": "Evil_Py"},
                 "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"last_affected": "1.4"}]}]}
            ]
        });
        let same = |n: &str| n.to_owned();
        let example = denials(&record, "Example", &same);
        assert_eq!(example.len(), 2);
        let covered = |v: &str| example.iter().any(|d| d.covers(Scheme::Semver, v));
        for (v, inside) in [
            ("0.9.0", true),
            ("1.0.0", true),
            ("1.1.9", true),
            ("1.2.0", false),
            ("2.5.0", true),
            ("0.8.0", false),
        ] {
            assert_eq!(covered(v), inside, "{v}");
        }
        let lower = |n: &str| n.to_ascii_lowercase().replace('_', "-");
        let other = denials(&record, "Other", &lower);
        assert_eq!(other[0].name, "evil-py");
        assert!(other[0].covers(Scheme::Pep440, "1.4") && !other[0].covers(Scheme::Pep440, "1.5"));
        let mut withdrawn = record.clone();
        withdrawn["withdrawn"] = "2024-01-01T00:00:00Z".into();
        assert!(denials(&withdrawn, "Example", &same).is_empty());
    }
}
