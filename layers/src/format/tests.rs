//! Helpers the formats' tests share, the registry of formats, and a toy
//! format registered from outside the built-in list.

use super::*;
pub(crate) use crate::pattern::{Class, Classifier, Decision, Pattern};

/// A remote of `package` with the user's patterns.
pub(crate) fn classifier(package: &str, immutable: Option<&[&str]>, mutable: &[&str]) -> Classifier {
    let pats = |list: &[&str]| list.iter().map(|p| Pattern::new(p).unwrap()).collect::<Vec<_>>();
    Classifier::new(immutable.map(pats), pats(mutable), Package::parse(package).unwrap())
}

pub(crate) const BUILTIN_MUTABLE: Decision = Decision::Allow(Class::Mutable { builtin: true });

/// What `format` reads off `path`.
pub(crate) fn coordinates_at(format: &dyn Format, path: &str) -> Option<Coordinates> {
    format.coordinates(&ArtifactPath::parse(path, None).unwrap())
}

/// The coordinates of one version of `name`.
pub(crate) fn version_of(name: &str, version: &str) -> Option<Coordinates> {
    Some(Coordinates::new(name, Some(version)))
}

#[test]
fn every_builtin_format_is_named_once_and_its_patterns_compile() {
    let names = Formats::builtin().names();
    assert_eq!(
        names,
        [
            "generic",
            "alpine",
            "rpm",
            "apt",
            "docker",
            "pypi",
            "npm",
            "go",
            "cargo",
            "maven",
            "rubygems",
            "helm",
            "terraform"
        ]
    );
    for format in BUILTIN {
        for p in format.builtin_mutable() {
            Pattern::new(p).unwrap_or_else(|e| panic!("{}: {e}", format.name()));
        }
    }
    assert_eq!(Package::parse("rpm").unwrap().as_str(), "rpm");
    assert!(Package::parse("punchcards").is_none());
    assert_eq!(Package::default(), Package::GENERIC);
}

/// A toy format: files under `stable/` move, `index.toy` is a document
/// whose lines are links.
struct Toy;
struct ToyIndex;

impl Format for Toy {
    fn name(&self) -> &'static str {
        "toy"
    }
    fn builtin_mutable(&self) -> &'static [&'static str] {
        &[r"^stable/"]
    }
    fn document(&self, path: &ArtifactPath) -> Option<&'static dyn Document> {
        (path.file_name() == "index.toy").then_some(&ToyIndex as &'static dyn Document)
    }
}

impl Document for ToyIndex {
    fn negotiate(&self, _accept: Option<&str>) -> Negotiated {
        Negotiated { variant: "toy", accept: "text/plain" }
    }
    fn variants(&self) -> &'static [&'static str] {
        &["toy"]
    }
    fn rewrite(&self, body: &[u8], _json: bool, page: &Url, links: &dyn LinkMap) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(body).map_err(|_| "not text".to_owned())?;
        let lines: Vec<String> = text
            .lines()
            .map(|l| rewrite_link(page, l, None, links).unwrap_or_else(|| l.to_owned()))
            .collect();
        Ok(lines.join("\n").into_bytes())
    }
}

#[tokio::test]
async fn a_toy_format_is_one_registration_away() {
    use std::sync::Arc;

    use http::{Request, Response};
    use http_body_util::BodyExt;
    use tower::{service_fn, ServiceExt};

    use crate::{body, error::BoxError, BodyRewriteLayer, PatternGuardLayer, RemoteResolveLayer, Remotes};

    let mut formats = Formats::builtin();
    assert!(formats.get("toy").is_none());
    formats.register(&Toy);
    let toy = formats.get("toy").expect("registered");

    let mut remote = Remote::proxy("toys", "https://toys.example.com/".parse().unwrap());
    remote.package = toy;
    remote.classifier = Classifier::new(None, vec![], toy);
    assert_eq!(remote.classifier.classify("stable/a.toy"), BUILTIN_MUTABLE);
    assert_eq!(remote.classifier.classify("v1/a.toy"), Decision::Allow(Class::Immutable));

    // The same layers as every remote: the document is rewritten.
    let upstream = service_fn(|_req: Request<()>| async {
        Ok::<_, BoxError>(Response::new(body::full(
            "https://toys.example.com/v1/a.toy\nhttps://else.example.com/b",
        )))
    });
    let stack = tower::ServiceBuilder::new()
        .layer(RemoteResolveLayer::new(Arc::new(Remotes::new([remote]))))
        .layer(PatternGuardLayer::new())
        .layer(BodyRewriteLayer::new(Some("http://proxy.example.com".parse().unwrap()), 1 << 20))
        .service(upstream);
    let res = stack.oneshot(Request::get("/toys/v1/index.toy").body(()).unwrap()).await.unwrap();
    let text = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert_eq!(text, "http://proxy.example.com/api/v1/remote/toys/v1/a.toy\nhttps://else.example.com/b");
}
