//! Simple pages merged across a group's members: files by file name (PEP
//! 503 anchors, PEP 691 `files`), projects by name on the root page; the
//! earliest member wins a name they share.

use std::collections::HashSet;

use serde_json::Value;

use super::normalize;
use crate::format::Part;

/// The members' pages merged, in the first member's representation.
pub(super) fn merge(parts: &[Part<'_>]) -> Result<Vec<u8>, String> {
    let first = parts.first().ok_or("nothing to merge")?;
    if first.json {
        json(parts)
    } else {
        Ok(html(parts).into_bytes())
    }
}

/// PEP 691: `files` by `filename` (or `projects` by name), `versions`
/// (PEP 700) in order of appearance; the rest is the first member's. A
/// member that answered HTML has its anchors read as files.
fn json(parts: &[Part<'_>]) -> Result<Vec<u8>, String> {
    let mut docs = Vec::new();
    for part in parts {
        docs.push(if part.json {
            serde_json::from_slice::<Value>(part.body).map_err(|e| format!("not a PEP 691 page: {e}"))?
        } else {
            let page = std::str::from_utf8(part.body).map_err(|_| "an HTML page is not text")?;
            html_as_json(page)
        });
    }
    let mut merged = docs.first().cloned().ok_or("no JSON page to merge")?;
    for (list, key) in [("files", "filename"), ("projects", "name")] {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for doc in &docs {
            for item in doc.get(list).and_then(Value::as_array).into_iter().flatten() {
                let name = item.get(key).and_then(Value::as_str).unwrap_or_default();
                let name =
                    if list == "projects" { normalize(name).unwrap_or_default() } else { name.to_owned() };
                if seen.insert(name) {
                    out.push(item.clone());
                }
            }
        }
        if merged.get(list).is_some() {
            merged[list] = Value::Array(out);
        }
    }
    if merged.get("versions").is_some() {
        let mut seen = HashSet::new();
        let versions: Vec<Value> = docs
            .iter()
            .flat_map(|d| d.get("versions").and_then(Value::as_array).cloned().unwrap_or_default())
            .filter(|v| seen.insert(v.to_string()))
            .collect();
        merged["versions"] = Value::Array(versions);
    }
    serde_json::to_vec(&merged).map_err(|e| e.to_string())
}

/// PEP 503: every member's anchors, by the file (or project) they name,
/// each kept byte for byte; the first member's page around them. A member
/// that answered PEP 691 JSON has its files written as anchors.
fn html(parts: &[Part<'_>]) -> String {
    let Some(first) = parts.first().and_then(|p| std::str::from_utf8(p.body).ok()) else {
        return String::new();
    };
    let mut seen = HashSet::new();
    let mut anchors: Vec<std::borrow::Cow<'_, str>> = Vec::new();
    for part in parts {
        let theirs: Vec<std::borrow::Cow<'_, str>> = if part.json {
            let doc: Value = serde_json::from_slice(part.body).unwrap_or_default();
            json_as_anchors(&doc).into_iter().map(Into::into).collect()
        } else {
            let page = std::str::from_utf8(part.body).unwrap_or_default();
            anchors_of(page).into_iter().map(Into::into).collect()
        };
        for anchor in theirs {
            if seen.insert(anchor_name(&anchor)) {
                anchors.push(anchor);
            }
        }
    }
    let own = anchors_of(first);
    let (start, end) = match (own.first(), own.last()) {
        (Some(a), Some(b)) => (offset(first, a), offset(first, b) + b.len()),
        // No anchor of its own: the others go before the body's end.
        _ => {
            let at = first.to_ascii_lowercase().rfind("</body>").unwrap_or(first.len());
            (at, at)
        }
    };
    let mut out = String::with_capacity(first.len() * parts.len());
    out.push_str(&first[..start]);
    out.push_str(&anchors.join("\n"));
    out.push_str(&first[end..]);
    out
}

fn offset(page: &str, part: &str) -> usize {
    part.as_ptr() as usize - page.as_ptr() as usize
}

/// A PEP 503 page read as PEP 691: each anchor a file (its text the file
/// name; the `#sha256=` fragment, `data-requires-python`, `data-yanked` and
/// the core metadata attributes carried over).
fn html_as_json(page: &str) -> Value {
    let files: Vec<Value> = anchors_of(page)
        .into_iter()
        .map(|anchor| {
            let attributes = attributes(anchor);
            let attr = |name: &str| attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
            let href = attr("href").unwrap_or_default();
            let (url, fragment) = href.split_once('#').unwrap_or((href, ""));
            let mut file = serde_json::json!({"filename": anchor_name(anchor), "url": url, "hashes": {}});
            if let Some((algorithm, digest)) = fragment.split_once('=') {
                file["hashes"][algorithm] = digest.into();
            }
            if let Some(requires) = attr("data-requires-python") {
                file["requires-python"] = requires.into();
            }
            if let Some(yanked) = attr("data-yanked") {
                file["yanked"] = if yanked.is_empty() { true.into() } else { yanked.into() };
            }
            if let Some(metadata) = attr("data-core-metadata").or_else(|| attr("data-dist-info-metadata")) {
                let value: Value = match metadata.split_once('=') {
                    Some((algorithm, digest)) => serde_json::json!({ algorithm: digest }),
                    None => true.into(),
                };
                file["core-metadata"] = value.clone();
                file["dist-info-metadata"] = value;
            }
            file
        })
        .collect();
    serde_json::json!({"meta": {"api-version": "1.0"}, "files": files})
}

/// A PEP 691 page's files (or projects) written as PEP 503 anchors.
fn json_as_anchors(doc: &Value) -> Vec<String> {
    let escape =
        |s: &str| s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;");
    let mut out = Vec::new();
    for file in doc.get("files").and_then(Value::as_array).into_iter().flatten() {
        let (Some(name), Some(url)) = (file["filename"].as_str(), file["url"].as_str()) else { continue };
        let mut href = url.to_owned();
        if let Some(sha) = file.pointer("/hashes/sha256").and_then(Value::as_str) {
            href = format!("{href}#sha256={sha}");
        }
        let mut anchor = format!("<a href=\"{}\"", escape(&href));
        if let Some(requires) = file["requires-python"].as_str() {
            anchor.push_str(&format!(" data-requires-python=\"{}\"", escape(requires)));
        }
        match &file["yanked"] {
            Value::String(why) => anchor.push_str(&format!(" data-yanked=\"{}\"", escape(why))),
            Value::Bool(true) => anchor.push_str(" data-yanked=\"\""),
            _ => {}
        }
        let metadata = file.get("core-metadata").or_else(|| file.get("dist-info-metadata"));
        let metadata = match metadata {
            Some(Value::Object(hashes)) => {
                hashes.get("sha256").and_then(Value::as_str).map(|h| format!("sha256={h}"))
            }
            Some(Value::Bool(true)) => Some("true".to_owned()),
            _ => None,
        };
        if let Some(metadata) = metadata {
            anchor.push_str(&format!(
                " data-dist-info-metadata=\"{metadata}\" data-core-metadata=\"{metadata}\""
            ));
        }
        anchor.push_str(&format!(">{}</a>", escape(name)));
        out.push(anchor);
    }
    for project in doc.get("projects").and_then(Value::as_array).into_iter().flatten() {
        if let Some(name) = project["name"].as_str() {
            let normalized = normalize(name).unwrap_or_default();
            out.push(format!("<a href=\"{}/\">{}</a>", escape(&normalized), escape(name)));
        }
    }
    out
}

/// The attributes of an anchor's opening tag, values unescaped.
fn attributes(anchor: &str) -> Vec<(String, String)> {
    let tag = anchor.split_once('>').map(|(t, _)| t).unwrap_or(anchor);
    let tag = tag.get(2..).unwrap_or_default();
    let mut out = Vec::new();
    let mut rest = tag;
    while let Some(eq) = rest.find('=') {
        let name =
            rest[..eq].trim().rsplit(char::is_whitespace).next().unwrap_or_default().to_ascii_lowercase();
        let after = rest[eq + 1..].trim_start();
        let (value, next) = match after.chars().next() {
            Some(q @ ('"' | '\'')) => match after[1..].find(q) {
                Some(end) => (&after[1..1 + end], &after[end + 2..]),
                None => (&after[1..], ""),
            },
            _ => {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        let value =
            value.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&");
        out.push((name, value));
        rest = next;
    }
    out
}

/// The file names a page lists.
pub(super) fn file_names(body: &[u8], json: bool) -> Vec<String> {
    if json {
        let doc: Value = serde_json::from_slice(body).unwrap_or_default();
        doc.get("files")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| f["filename"].as_str().map(str::to_owned))
            .collect()
    } else {
        anchors_of(std::str::from_utf8(body).unwrap_or_default()).into_iter().map(anchor_name).collect()
    }
}

/// The page with only the files `keep_file` keeps (and, in JSON, the
/// `versions` `keep_version` keeps).
pub(super) fn filter(
    body: &[u8],
    json: bool,
    keep_file: &dyn Fn(&str) -> bool,
    keep_version: &dyn Fn(&str) -> bool,
) -> Result<Vec<u8>, String> {
    if json {
        let mut doc: Value = serde_json::from_slice(body).map_err(|e| format!("not a PEP 691 page: {e}"))?;
        if let Some(files) = doc.get_mut("files").and_then(Value::as_array_mut) {
            files.retain(|f| f["filename"].as_str().is_none_or(keep_file));
        }
        if let Some(versions) = doc.get_mut("versions").and_then(Value::as_array_mut) {
            versions.retain(|v| v.as_str().is_none_or(keep_version));
        }
        return serde_json::to_vec(&doc).map_err(|e| e.to_string());
    }
    let page = std::str::from_utf8(body).map_err(|_| "an HTML page is not text")?;
    let mut out = String::with_capacity(page.len());
    let mut at = 0;
    for anchor in anchors_of(page) {
        let start = offset(page, anchor);
        out.push_str(&page[at..start]);
        if keep_file(&anchor_name(anchor)) {
            out.push_str(anchor);
        }
        at = start + anchor.len();
    }
    out.push_str(&page[at..]);
    Ok(out.into_bytes())
}

/// The `<a ...>...</a>` elements of a page, as slices of it.
fn anchors_of(page: &str) -> Vec<&str> {
    let lower = page.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = lower[from..].find("<a") {
        let start = from + i;
        let next = lower.as_bytes().get(start + 2).copied().unwrap_or(b'>');
        if !(next.is_ascii_whitespace() || next == b'>') {
            from = start + 2;
            continue;
        }
        let Some(close) = lower[start..].find("</a>") else { break };
        let end = start + close + 4;
        out.push(&page[start..end]);
        from = end;
    }
    out
}

/// What an anchor names: its text (a file name, or a project), trimmed;
/// projects compared normalized.
fn anchor_name(anchor: &str) -> String {
    let text = anchor.split_once('>').map(|(_, t)| t).unwrap_or_default();
    let text = text.rsplit_once("</").map(|(t, _)| t).unwrap_or(text).trim();
    const FILES: [&str; 8] = [".whl", ".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".egg", ".exe"];
    if FILES.iter().any(|ending| text.ends_with(ending)) {
        text.to_owned()
    } else {
        normalize(text).unwrap_or_else(|| text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(body: &str, json: bool) -> Part<'_> {
        Part { body: body.as_bytes(), json }
    }

    #[test]
    fn html_pages_merge_by_file_name_the_earliest_member_winning() {
        let a = "<!DOCTYPE html><html><body><h1>Links</h1>\n<a href=\"/api/a/x-1.0.whl#sha256=1\">x-1.0.whl</a>\n</body></html>";
        let b = "<html><body><a href=\"/api/b/x-1.0.whl#sha256=2\">x-1.0.whl</a><a href=\"/api/b/x-2.0.whl\" data-requires-python=\"&gt;=3\">x-2.0.whl</a></body></html>";
        let merged = String::from_utf8(merge(&[part(a, false), part(b, false)]).unwrap()).unwrap();
        assert!(merged.starts_with("<!DOCTYPE html><html><body><h1>Links</h1>\n"), "{merged}");
        assert!(merged.contains("/api/a/x-1.0.whl#sha256=1"), "{merged}");
        assert!(!merged.contains("/api/b/x-1.0.whl"), "{merged}");
        assert!(merged.contains("<a href=\"/api/b/x-2.0.whl\" data-requires-python=\"&gt;=3\">x-2.0.whl</a>"));
        assert!(merged.ends_with("\n</body></html>"), "{merged}");
    }

    #[test]
    fn json_pages_merge_files_and_versions() {
        let a = r#"{"meta":{"api-version":"1.1"},"name":"x","versions":["1.0"],"files":[{"filename":"x-1.0.whl","url":"a"}]}"#;
        let b = r#"{"meta":{"api-version":"1.0"},"name":"x","versions":["1.0","2.0"],"files":[{"filename":"x-1.0.whl","url":"b"},{"filename":"x-2.0.whl","url":"b2"}]}"#;
        let merged: Value = serde_json::from_slice(&merge(&[part(a, true), part(b, true)]).unwrap()).unwrap();
        assert_eq!(merged["meta"]["api-version"], "1.1");
        assert_eq!(merged["versions"], serde_json::json!(["1.0", "2.0"]));
        let urls: Vec<&str> =
            merged["files"].as_array().unwrap().iter().map(|f| f["url"].as_str().unwrap()).collect();
        assert_eq!(urls, ["a", "b2"]);
        assert!(merge(&[part("{", true)]).is_err());
    }

    #[test]
    fn html_and_json_members_merge_into_the_first_members_representation() {
        let html_page = "<html><body><a href=\"/api/a/x-1.0.whl#sha256=aa\" data-requires-python=\"&gt;=3.8\">x-1.0.whl</a></body></html>";
        let json_page = r#"{"meta":{"api-version":"1.1"},"name":"x","files":[{"filename":"x-1.0.whl","url":"/api/b/x-1.0.whl","hashes":{}},{"filename":"x-2.0.whl","url":"/api/b/x-2.0.whl","hashes":{"sha256":"bb"},"core-metadata":{"sha256":"cc"},"yanked":"bad"}]}"#;
        let merged =
            String::from_utf8(merge(&[part(html_page, false), part(json_page, true)]).unwrap()).unwrap();
        assert!(merged.contains("/api/a/x-1.0.whl#sha256=aa"), "{merged}");
        assert!(!merged.contains("/api/b/x-1.0.whl"), "{merged}");
        assert!(merged.contains("<a href=\"/api/b/x-2.0.whl#sha256=bb\" data-yanked=\"bad\" data-dist-info-metadata=\"sha256=cc\" data-core-metadata=\"sha256=cc\">x-2.0.whl</a>"), "{merged}");
        let merged: Value =
            serde_json::from_slice(&merge(&[part(json_page, true), part(html_page, false)]).unwrap())
                .unwrap();
        let names: Vec<&str> =
            merged["files"].as_array().unwrap().iter().map(|f| f["filename"].as_str().unwrap()).collect();
        assert_eq!(names, ["x-1.0.whl", "x-2.0.whl"]);
        let merged: Value = serde_json::from_slice(
            &merge(&[part("{\"meta\":{},\"files\":[]}", true), part(html_page, false)]).unwrap(),
        )
        .unwrap();
        assert_eq!(merged["files"][0]["url"], "/api/a/x-1.0.whl");
        assert_eq!(merged["files"][0]["hashes"]["sha256"], "aa");
        assert_eq!(merged["files"][0]["requires-python"], ">=3.8");
    }

    #[test]
    fn root_pages_merge_projects() {
        let a = r#"{"meta":{"api-version":"1.0"},"projects":[{"name":"Foo_Bar"}]}"#;
        let b = r#"{"meta":{"api-version":"1.0"},"projects":[{"name":"foo-bar"},{"name":"baz"}]}"#;
        let merged: Value = serde_json::from_slice(&merge(&[part(a, true), part(b, true)]).unwrap()).unwrap();
        assert_eq!(merged["projects"], serde_json::json!([{"name": "Foo_Bar"}, {"name": "baz"}]));
        let a = "<html><body><a href=\"/simple/foo-bar/\">foo-bar</a></body></html>";
        let b = "<html><body><a href=\"/simple/foo-bar/\">Foo_Bar</a><a href=\"/simple/baz/\">baz</a></body></html>";
        let merged = String::from_utf8(merge(&[part(a, false), part(b, false)]).unwrap()).unwrap();
        assert_eq!(merged.matches("<a ").count(), 2, "{merged}");
    }
}
