//! A toy format with every capability, registered from outside the
//! built-in list: what adding a format takes, and proof that the layers
//! reach each capability through the contract alone.
//!
//! Layout of a toy repository: `index.toy` (a document of links),
//! `pkg/{name}/index.toy` (a package's versions, one file name a line),
//! `pkg/{name}/{name}-{version}.toy` (its files), each vouched for by the
//! `.sha256` beside it; `moved/*` files live where `where.toy` says; `ping`
//! is answered here; `mirror/*` comes from the `toy_mirror_url` option.
//!
//! (Over 400 lines: a format with every capability is most of a real one,
//! and its test walks each capability; split, the example of what adding a
//! format takes would be in pieces.)

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{service_fn, ServiceExt};
use url::Url;

use super::{
    options::{Configured, FormatOptions, KeyReader, Own},
    rewrite_link,
    tests::BUILTIN_MUTABLE,
    version::Scheme,
    Document, Documents, Errors, Format, Formats, Freshness, Groupable, Grouping, Integrity, LinkMap, Listed,
    Negotiated, Part, PathKind, Relocation, Routes, ServedAt, Spec, Versions,
};
use crate::{
    body::{self, ArtifactBody},
    digest::Expected,
    error::BoxError,
    path::ArtifactPath,
    problem::Problem,
    remote::Remote,
    BodyRewriteLayer, Class, Classifier, Decision, PatternGuardLayer, RemoteResolveLayer, Remotes,
};

struct Toy;
struct ToyIndex;

/// The toy's options: where `mirror/*` comes from.
#[derive(Debug)]
struct ToyOptions {
    mirror: Option<Url>,
}

static SPEC: Spec = Spec {
    mutable: &[r"^stable/", r"(^|/)index\.toy$"],
    names_files: true,
    patterns_gate_every_path: false,
    served_at: ServedAt::Api,
    grouping: Groupable::Yes,
    scheme: Scheme::Semver,
    normalize: Some(lower),
    osv_ecosystem: None,
    errors: Errors::Own(toy_error),
    ..Spec::plain("toy")
};

fn lower(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Errors as plain text.
fn toy_error(problem: &Problem<'_>) -> Response<ArtifactBody> {
    let mut res = Response::new(body::full(format!("toy says no: {}", problem.message)));
    *res.status_mut() = problem.status;
    res
}

/// `pkg/{name}/{name}-{version}.toy`: the name and version.
fn file_of(path: &ArtifactPath) -> Option<(&str, &str)> {
    let rest = path.decoded().strip_prefix("pkg/")?;
    let (name, file) = rest.split_once('/')?;
    let version = file.strip_prefix(name)?.strip_prefix('-')?.strip_suffix(".toy")?;
    Some((name, version))
}

fn parse(path: &str) -> ArtifactPath {
    ArtifactPath::parse(path, None).unwrap()
}

impl Format for Toy {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn classify(&self, path: &ArtifactPath) -> PathKind {
        if let Some((name, version)) = file_of(path) {
            return PathKind::file(lower(name), version);
        }
        match path.decoded().strip_prefix("pkg/").and_then(|p| p.strip_suffix("/index.toy")) {
            Some(name) => PathKind::metadata_of(lower(name)),
            None if path.file_name() == "index.toy" || path.decoded().ends_with(".sha256") => {
                PathKind::Metadata(None)
            }
            None => PathKind::Unknown,
        }
    }

    crate::capabilities!(documents, integrity, relocation, routes, freshness, grouping, versions, configured);
}

impl Documents for Toy {
    fn document(&self, path: &ArtifactPath) -> Option<&'static dyn Document> {
        (path.decoded() == "index.toy").then_some(&ToyIndex as &'static dyn Document)
    }

    fn listed_in(&self, lister: &Remote, remote: &Remote, path: &ArtifactPath) -> Option<ArtifactPath> {
        let (name, _) = file_of(path).filter(|_| lister.name == remote.name)?;
        Some(parse(&format!("pkg/{name}/index.toy")))
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

impl Integrity for Toy {
    fn vouched_by(&self, _remote: &Remote, path: &ArtifactPath) -> Vec<ArtifactPath> {
        file_of(path).map(|_| parse(&format!("{}.sha256", path.decoded()))).into_iter().collect()
    }

    fn vouches(&self, record: &[u8], _path: &ArtifactPath) -> Result<Expected, String> {
        let hex = std::str::from_utf8(record).map_err(|_| "not text")?.trim();
        Expected::sha256_hex(hex).ok_or_else(|| format!("{hex:?} is not a SHA-256"))
    }
}

impl Relocation for Toy {
    fn located_by(&self, path: &ArtifactPath) -> Option<ArtifactPath> {
        path.decoded().starts_with("moved/").then(|| parse("where.toy"))
    }

    fn locate(
        &self,
        document: &[u8],
        path: &ArtifactPath,
        _vouched: Option<&Expected>,
    ) -> Result<String, String> {
        let base = std::str::from_utf8(document).map_err(|_| "not text")?.trim();
        Ok(format!("{base}/{}", path.file_name()))
    }
}

impl Routes for Toy {
    fn upstream_path(&self, path: &ArtifactPath) -> Option<ArtifactPath> {
        path.decoded().starts_with("pkg/").then(|| parse(&format!("v1/{}", path.decoded())))
    }

    fn answers_itself(&self, _remote: &Remote, path: &ArtifactPath) -> Option<StatusCode> {
        match path.decoded() {
            "ping" => Some(StatusCode::NO_CONTENT),
            "gone" => Some(StatusCode::GONE),
            _ => None,
        }
    }

    fn fetched_elsewhere<'r>(
        &self,
        remote: &'r Remote,
        path: &ArtifactPath,
    ) -> Option<(&'r Url, ArtifactPath)> {
        let rest = path.decoded().strip_prefix("mirror/")?;
        Some((remote.options::<ToyOptions>()?.mirror.as_ref()?, parse(rest)))
    }
}

impl Freshness for Toy {
    fn new_version_expires_under<'p>(&self, path: &'p ArtifactPath) -> Option<&'p str> {
        (path.decoded() == "stable/index.toy").then_some("stable/")
    }

    fn served_as_long_as(&self, remote: &str, path: &ArtifactPath) -> Vec<String> {
        match path.decoded().strip_prefix("stable/") {
            Some(rest) if rest != "index.toy" => vec![parse("stable/index.toy").cache_key(remote)],
            _ => Vec::new(),
        }
    }

    fn etag_is_md5_of_body(&self, path: &ArtifactPath) -> bool {
        path.decoded().ends_with(".md5etag")
    }
}

impl Grouping for Toy {
    fn owner_document(&self, path: &ArtifactPath) -> Option<ArtifactPath> {
        let name = Format::classify(self, path).coordinates()?.name;
        Some(parse(&format!("pkg/{name}/index.toy")))
    }

    fn merges(&self, path: &ArtifactPath) -> bool {
        matches!(Format::classify(self, path), PathKind::Metadata(Some(_)))
    }

    fn merge(&self, _path: &ArtifactPath, parts: &[Part<'_>]) -> Result<Vec<u8>, String> {
        let mut lines: Vec<&str> = Vec::new();
        for part in parts {
            for line in std::str::from_utf8(part.body).map_err(|_| "not text")?.lines() {
                if !lines.contains(&line) {
                    lines.push(line);
                }
            }
        }
        Ok(lines.join("\n").into_bytes())
    }
}

impl Versions for Toy {
    fn lists_versions(&self, path: &ArtifactPath) -> bool {
        matches!(Format::classify(self, path), PathKind::Metadata(Some(_)))
    }

    fn listed_versions(&self, path: &ArtifactPath, body: &[u8], _json: bool) -> Option<Listed> {
        let dir = path.decoded().strip_suffix("index.toy")?;
        let mut listed = Listed::default();
        for line in std::str::from_utf8(body).ok()?.lines() {
            match file_of(&parse(&format!("{dir}{line}"))) {
                Some((_, version)) => listed.versions.push(version.to_owned()),
                None => listed.unversioned += 1,
            }
        }
        Some(listed)
    }

    fn filter_versions(
        &self,
        path: &ArtifactPath,
        body: &[u8],
        _json: bool,
        keep: &dyn Fn(Option<&str>) -> bool,
    ) -> Result<Vec<u8>, String> {
        let dir = path.decoded().strip_suffix("index.toy").ok_or("not a package index")?;
        let text = std::str::from_utf8(body).map_err(|_| "not text")?;
        let kept: Vec<&str> =
            text.lines().filter(|l| keep(file_of(&parse(&format!("{dir}{l}"))).map(|(_, v)| v))).collect();
        Ok(kept.join("\n").into_bytes())
    }

    fn times_document(
        &self,
        _path: &ArtifactPath,
        _version: Option<&str>,
    ) -> Option<(ArtifactPath, &'static str)> {
        None
    }

    fn publish_times(&self) -> bool {
        false
    }

    fn publish_times_in(&self, _body: &[u8]) -> Vec<(String, i64)> {
        Vec::new()
    }

    fn latest_list(&self, _path: &ArtifactPath) -> Option<ArtifactPath> {
        None
    }
}

impl Configured for Toy {
    fn keys(&self) -> &'static [&'static str] {
        &["toy_mirror_url"]
    }

    fn remote_keys(&self) -> &'static [&'static str] {
        &[]
    }

    fn read(&self, keys: &mut dyn KeyReader) -> Own {
        let mirror = keys.string("toy_mirror_url").and_then(|url| keys.url("toy_mirror_url", &url));
        Own { options: FormatOptions::new(ToyOptions { mirror }), files: None }
    }
}

/// Keys as a configuration check would hand them over.
#[derive(Default)]
struct Written {
    values: std::collections::BTreeMap<String, serde_yaml_ng::Value>,
    problems: Vec<String>,
}

impl KeyReader for Written {
    fn value(&self, key: &str) -> Option<&serde_yaml_ng::Value> {
        self.values.get(key)
    }
    fn url(&mut self, key: &str, value: &str) -> Option<Url> {
        let url = Url::parse(value).ok().filter(|u| matches!(u.scheme(), "http" | "https"));
        if url.is_none() {
            self.problems.push(format!("{key}: {value:?} is not an http or https URL"));
        }
        url
    }
    fn base_url_of(&self, _name: &str) -> Option<Option<String>> {
        None
    }
    fn problem(&mut self, key: &str, reason: String) {
        self.problems.push(format!("{key}: {reason}"));
    }
}

/// A remote of the toy format, registered at run time, with `mirror` read
/// from its own key.
fn toy_remote() -> Remote {
    let mut formats = Formats::builtin();
    assert!(formats.get("toy").is_none());
    formats.register(&Toy);
    let toy = formats.get("toy").expect("registered");
    assert_eq!(formats.owners_of("toy_mirror_url"), ["toy"]);

    let mut remote = Remote::proxy("toys", "https://toys.example.com/".parse().unwrap());
    remote.package = toy;
    remote.classifier = Classifier::new(None, vec![], toy);
    let mut written = Written::default();
    written.values.insert("toy_mirror_url".into(), "https://mirror.example.com/m/".into());
    let own = toy.format().configured().expect("configured").read(&mut written);
    assert!(written.problems.is_empty(), "{:?}", written.problems);
    remote.format_options = own.options;
    remote
}

async fn text(res: Response<ArtifactBody>) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn a_toy_format_is_one_registration_away_and_the_layers_reach_every_capability() {
    let remote = toy_remote();
    let format = remote.package.format();

    // Spec: built-in patterns, names compared its way.
    assert_eq!(remote.classifier.classify("stable/a.toy"), BUILTIN_MUTABLE);
    assert_eq!(remote.classifier.classify("v1/a.toy"), Decision::Allow(Class::Immutable));
    assert_eq!(format.spec().normalize("Cool"), "cool");
    assert_eq!(format.coordinates(&parse("pkg/Cool/Cool-1.0.toy")).unwrap().name, "cool");

    // Options: read by the format, read back from the remote.
    let mirror = remote.options::<ToyOptions>().and_then(|o| o.mirror.clone());
    assert_eq!(mirror.unwrap().as_str(), "https://mirror.example.com/m/");
    let routes = format.routes().unwrap();
    let (base, there) = routes.fetched_elsewhere(&remote, &parse("mirror/x.toy")).unwrap();
    assert_eq!((base.as_str(), there.decoded()), ("https://mirror.example.com/m/", "x.toy"));
    assert_eq!(routes.upstream_path(&parse("pkg/a/a-1.toy")).unwrap().decoded(), "v1/pkg/a/a-1.toy");

    // Through the front door and the rewriter, as every remote's requests go.
    let upstream_calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls = upstream_calls.clone();
    let upstream = service_fn(move |_req: Request<()>| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async {
            Ok::<_, BoxError>(Response::new(body::full(
                "https://toys.example.com/v1/a.toy\nhttps://else.example.com/b",
            )))
        }
    });
    let stack = tower::ServiceBuilder::new()
        .layer(RemoteResolveLayer::new(Arc::new(Remotes::new([remote.clone()]))))
        .layer(PatternGuardLayer::new())
        .layer(BodyRewriteLayer::new(Some("http://proxy.example.com".parse().unwrap()), 1 << 20))
        .service(upstream);
    // Documents: rewritten so that the links come back here.
    let res = stack.clone().oneshot(Request::get("/toys/index.toy").body(()).unwrap()).await.unwrap();
    assert_eq!(
        text(res).await,
        "http://proxy.example.com/api/v1/remote/toys/v1/a.toy\nhttps://else.example.com/b"
    );
    assert_eq!(upstream_calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Routes: answered at the door, upstream never asked; a refusal in the
    // format's own error shape.
    let res = stack.clone().oneshot(Request::get("/toys/ping").body(()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let e = stack.clone().oneshot(Request::get("/toys/gone").body(()).unwrap()).await.unwrap_err();
    let answer = crate::rescue::answer(&*e, "toys", "gone");
    assert_eq!(answer.status(), StatusCode::GONE);
    assert!(text(answer).await.starts_with("toy says no: "));
    assert_eq!(upstream_calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Documents: which document lists a file (expired when a new one comes).
    let listing = super::listed_in(&remote, &parse("pkg/a/a-1.0.toy"), &Remotes::new([remote.clone()]));
    assert_eq!(listing.len(), 1);
    assert_eq!(listing[0].1.decoded(), "pkg/a/index.toy");

    // Integrity: the record beside the file, and what it says.
    let integrity = format.integrity().unwrap();
    assert_eq!(
        integrity.vouched_by(&remote, &parse("pkg/a/a-1.0.toy"))[0].decoded(),
        "pkg/a/a-1.0.toy.sha256"
    );
    let digest = "ab".repeat(32);
    assert_eq!(integrity.vouches(digest.as_bytes(), &parse("pkg/a/a-1.0.toy")).unwrap().hex(), digest);
    assert!(integrity.vouches(b"nonsense", &parse("pkg/a/a-1.0.toy")).is_err());

    // Relocation: where the document says.
    let relocation = format.relocation().unwrap();
    assert_eq!(relocation.located_by(&parse("moved/b.toy")).unwrap().decoded(), "where.toy");
    assert_eq!(
        relocation.locate(b"https://cdn.example.com/x\n", &parse("moved/b.toy"), None).unwrap(),
        "https://cdn.example.com/x/b.toy"
    );

    // Freshness: what a new index expires, what an expired file waits on,
    // the header it owns.
    let freshness = format.freshness().unwrap();
    assert_eq!(freshness.new_version_expires_under(&parse("stable/index.toy")), Some("stable/"));
    assert_eq!(
        freshness.served_as_long_as("toys", &parse("stable/a.toy")),
        vec![parse("stable/index.toy").cache_key("toys")]
    );
    assert!(freshness.etag_is_md5_of_body(&parse("a.md5etag")));

    // Grouping: the owner of a name, and merging.
    let grouping = format.grouping().unwrap();
    assert_eq!(grouping.owner_document(&parse("pkg/a/a-1.0.toy")).unwrap().decoded(), "pkg/a/index.toy");
    let parts = [
        Part { body: b"a-1.0.toy\na-2.0.toy", json: false },
        Part { body: b"a-2.0.toy\na-3.0.toy", json: false },
    ];
    assert!(grouping.merges(&parse("pkg/a/index.toy")));
    assert_eq!(
        grouping.merge(&parse("pkg/a/index.toy"), &parts).unwrap(),
        b"a-1.0.toy\na-2.0.toy\na-3.0.toy"
    );

    // Versions: what a policy reads and hides.
    let versions = format.versions().unwrap();
    let index = parse("pkg/a/index.toy");
    let listed = versions.listed_versions(&index, b"a-1.0.toy\na-2.0.toy\nreadme", false).unwrap();
    assert_eq!((listed.versions, listed.unversioned), (vec!["1.0".to_owned(), "2.0".to_owned()], 1));
    let kept =
        versions.filter_versions(&index, b"a-1.0.toy\na-2.0.toy", false, &|v| v != Some("2.0")).unwrap();
    assert_eq!(kept, b"a-1.0.toy");
    assert!(!versions.publish_times());
}
