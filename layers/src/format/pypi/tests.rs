//! The PyPI format's tests: pages of both kinds rewritten, negotiation, file
//! names read as coordinates, listings.

use super::*;

/// Upstream `https://pypi.example.internal/` and files
/// `https://files.example.internal/` map to the proxy's two remotes.
struct Map;
impl LinkMap for Map {
    fn map(&self, u: &Url, _expected: Option<Expected>) -> Option<String> {
        let s = u.as_str();
        if let Some(rest) = s.strip_prefix("https://files.example.internal/") {
            return Some(format!("http://proxy:8000/api/v1/remote/pypi-files/{rest}"));
        }
        s.strip_prefix("https://pypi.example.internal/")
            .map(|rest| format!("http://proxy:8000/api/v1/remote/pypi/{rest}"))
    }
}

fn page() -> Url {
    "https://pypi.example.internal/simple/requests/".parse().unwrap()
}

#[test]
fn rewrites_absolute_root_relative_and_relative_links_keeping_attributes() {
    let html = r#"<!DOCTYPE html><html><body>
<a href="https://files.example.internal/packages/ab/cd/requests-2.0-py3-none-any.whl#sha256=0011" data-requires-python="&gt;=3.8" data-dist-info-metadata="sha256=22" data-core-metadata="sha256=22">requests-2.0-py3-none-any.whl</a><br/>
<a href="/packages/requests-1.0.tar.gz#sha256=aa" data-yanked="broken">requests-1.0.tar.gz</a>
<a href='../../packages/requests-0.9.zip#sha256=bb'>requests-0.9.zip</a>
<a href="https://elsewhere.example.com/x.whl">x</a>
<A HREF="/packages/a.whl?x=1&amp;y=2">a</A>
</body></html>"#;
    let out = rewrite_html(html, &page(), &Map);
    assert!(out.contains(r#"href="http://proxy:8000/api/v1/remote/pypi-files/packages/ab/cd/requests-2.0-py3-none-any.whl#sha256=0011" data-requires-python="&gt;=3.8" data-dist-info-metadata="sha256=22" data-core-metadata="sha256=22""#), "{out}");
    assert!(out.contains(r#"href="http://proxy:8000/api/v1/remote/pypi/packages/requests-1.0.tar.gz#sha256=aa" data-yanked="broken""#), "{out}");
    assert!(
        out.contains(r#"href='http://proxy:8000/api/v1/remote/pypi/packages/requests-0.9.zip#sha256=bb'"#),
        "{out}"
    );
    assert!(out.contains(r#"href="https://elsewhere.example.com/x.whl""#), "links elsewhere stay: {out}");
    assert!(
        out.contains(r#"HREF="http://proxy:8000/api/v1/remote/pypi/packages/a.whl?x=1&amp;y=2""#),
        "{out}"
    );
    assert!(out.ends_with("</body></html>"));
}

#[test]
fn rewrites_pep_691_file_urls_only() {
    let json = br#"{"meta":{"api-version":"1.1"},"name":"requests","versions":["2.0"],
      "files":[{"filename":"requests-2.0-py3-none-any.whl","url":"https://files.example.internal/packages/r.whl",
                "hashes":{"sha256":"0011"},"requires-python":">=3.8","core-metadata":{"sha256":"22"},"yanked":false},
               {"filename":"requests-1.0.tar.gz","url":"../../packages/requests-1.0.tar.gz","hashes":{}}]}"#;
    let out: Value = serde_json::from_slice(&rewrite_json(json, &page(), &Map).unwrap()).unwrap();
    assert_eq!(out["files"][0]["url"], "http://proxy:8000/api/v1/remote/pypi-files/packages/r.whl");
    assert_eq!(out["files"][1]["url"], "http://proxy:8000/api/v1/remote/pypi/packages/requests-1.0.tar.gz");
    assert_eq!(out["files"][0]["hashes"]["sha256"], "0011");
    assert_eq!(out["files"][0]["core-metadata"]["sha256"], "22");
    assert_eq!(out["meta"]["api-version"], "1.1");
    assert!(rewrite_json(b"<html>", &page(), &Map).is_err());
}

/// A page of `links` anchors, as a large project's simple page looks.
fn simple_page(links: usize) -> String {
    let mut html = String::from("<!DOCTYPE html><html><body>\n");
    for i in 0..links {
        html.push_str(&format!(
            "<a href=\"https://files.example.internal/packages/{i:02x}/project-{i}.0-py3-none-any.whl#sha256=00{i:x}\" data-requires-python=\"&gt;=3.8\">project-{i}.0-py3-none-any.whl</a><br/>\n"
        ));
    }
    html.push_str("</body></html>");
    html
}

/// The fastest of `runs` rewrites of `page`, per link.
fn time_per_link(page: &str, links: usize, runs: usize) -> f64 {
    (0..runs)
        .map(|_| {
            let started = std::time::Instant::now();
            let out = rewrite_html(page, &self::page(), &Map);
            let elapsed = started.elapsed().as_secs_f64();
            assert_eq!(out.matches("/api/v1/remote/pypi-files/").count(), links);
            elapsed
        })
        .fold(f64::INFINITY, f64::min)
        / links as f64
}

#[test]
fn a_page_of_many_thousands_of_links_costs_the_same_per_link_as_a_small_one() {
    // A ratio of two measurements in one run, not a wall-clock limit:
    // linear work keeps it near 1; scanning the rest of the page once
    // per link (as this did) made it about 100 (20 000 links against 200).
    let (small, large) = (200, 20_000);
    let (small_page, large_page) = (simple_page(small), simple_page(large));
    assert!(large_page.len() > 2_000_000, "{}", large_page.len());
    let per_link_small = time_per_link(&small_page, small, 30);
    let per_link_large = time_per_link(&large_page, large, 3);
    let ratio = per_link_large / per_link_small;
    assert!(ratio < 8.0, "a link on a page of {large} costs {ratio:.1}x one on a page of {small}");
}

fn at(path: &str) -> Option<Coordinates> {
    crate::format::tests::coordinates_at(&Pypi, path)
}

fn file(name: &str, version: &str) -> Option<Coordinates> {
    Some(Coordinates::new(name, Some(version)))
}

#[test]
fn normalizes_names_as_pep_503_does() {
    assert_eq!(normalize("Foo_Bar").as_deref(), Some("foo-bar"));
    assert_eq!(normalize("zope.interface").as_deref(), Some("zope-interface"));
    assert_eq!(normalize("a-_.-b__c").as_deref(), Some("a-b-c"));
    assert_eq!(normalize("_private.").as_deref(), Some("-private-"));
    assert_eq!(normalize("---").as_deref(), Some("-"));
    assert_eq!(normalize(""), None);
}

#[test]
fn finds_the_project_and_version_of_a_file() {
    let of = |f: &str| distribution_of(f);
    assert_eq!(of("Foo_Bar-1.0-py3-none-any.whl"), file("foo-bar", "1.0"));
    assert_eq!(of("zope.interface-6.0.tar.gz"), file("zope-interface", "6.0"));
    assert_eq!(of("alpha-1.0-py3-none-any.whl.metadata"), None);
    assert_eq!(of("README"), None);
}

#[test]
fn a_simple_page_names_its_normalized_project() {
    assert_eq!(at("simple/requests/"), Some(Coordinates::new("requests", None)));
    assert_eq!(at("simple/Django/"), Some(Coordinates::new("django", None)));
    assert_eq!(at("simple/Foo__Bar.baz/"), Some(Coordinates::new("foo-bar-baz", None)));
    assert_eq!(at("simple/requests"), Some(Coordinates::new("requests", None)));
    for path in ["simple", "simple/", "simple/requests/extra/", "simple/a/b", "simplex/"] {
        assert_eq!(at(path), None, "{path}");
    }
}

#[test]
fn a_distribution_file_names_its_project_and_version() {
    assert_eq!(at("packages/ab/cd/requests-2.31.0.tar.gz"), file("requests", "2.31.0"));
    assert_eq!(at("packages/requests-2.31.0-py3-none-any.whl"), file("requests", "2.31.0"));
    assert_eq!(
        at("packages/numpy-1.26.4-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
        file("numpy", "1.26.4")
    );
    // A build tag.
    assert_eq!(at("p/Foo_Bar-2.0-1build-py3-none-any.whl"), file("foo-bar", "2.0"));
    // Old sdists: a name with `-`, a version with `-`, a `.zip`, a `.tar.bz2`.
    assert_eq!(at("p/python-dateutil-2.8.2.tar.gz"), file("python-dateutil", "2.8.2"));
    assert_eq!(at("p/Foo-1.0-beta.tar.gz"), file("foo", "1.0-beta"));
    assert_eq!(at("p/foo-bar-v1.0.zip"), file("foo-bar", "v1.0"));
    assert_eq!(at("p/pytz-2013b.tar.bz2"), file("pytz", "2013b"));
    assert_eq!(at("p/web3-2-1.0.tar.gz"), file("web3-2", "1.0"));
    assert_eq!(at("p/setuptools-0.6c11-py2.7.egg"), file("setuptools", "0.6c11"));
    assert_eq!(at("p/zope.interface-6.0-py3.8-linux-x86_64.egg"), file("zope-interface", "6.0"));
    // At the root too, even when the name starts like the API's.
    assert_eq!(at("simplejson-3.19.2.tar.gz"), file("simplejson", "3.19.2"));
}

#[test]
fn other_files_and_odd_names_have_no_coordinates() {
    for path in [
        "packages/",
        "packages/README",
        "p/.whl",
        "p/-.whl",
        "p/requests.whl",
        "p/requests-2.0.whl",
        "p/requests-2.0-py3-none.whl",
        "p/a-b-c-d-e-f-g.whl",
        "p/-2.0-py3-none-any.whl",
        "p/requests--py3-none-any.whl",
        "p/.tar.gz",
        "p/requests.tar.gz",
        "p/requests-.tar.gz",
        "p/-1.0.tar.gz",
        "p/-.zip",
        "p/requests.egg",
        "p/a.egg",
        "p/-1.egg",
        "p/a-.egg",
    ] {
        assert_eq!(at(path), None, "{path}");
    }
}

#[test]
fn negotiates_like_pip_and_uv() {
    let pip =
        "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1, text/html;q=0.01";
    assert_eq!(negotiate(Some(pip)), JSON);
    assert_eq!(negotiate(Some("text/html")), HTML);
    assert_eq!(negotiate(None), HTML);
    assert_eq!(negotiate(Some("*/*")), HTML);
    assert_eq!(negotiate(Some("application/vnd.pypi.simple.v1+json;q=0.2, text/html")), HTML);
}

#[test]
fn simple_pages_are_mutable_documents_and_files_immutable() {
    use crate::format::tests::{classifier, BUILTIN_MUTABLE};
    use crate::pattern::{Class, Decision};
    let pypi = classifier("pypi", None, &[]);
    assert_eq!(pypi.classify("simple/requests/"), BUILTIN_MUTABLE);
    assert_eq!(pypi.classify("simple"), BUILTIN_MUTABLE);
    assert_eq!(pypi.classify("packages/x.whl"), Decision::Allow(Class::Immutable));
    let doc = |p: &str| Pypi.document(&ArtifactPath::parse(p, None).unwrap()).is_some();
    assert!(doc("simple") && doc("simple/requests/"));
    assert!(!doc("packages/requests-2.0.tar.gz") && !doc("simplex/y"));
}

#[test]
fn a_new_file_expires_its_project_page_on_every_index_that_lists_it() {
    let mut index = Remote::proxy("pypi", "https://pypi.example.internal/".parse().unwrap());
    index.files = Some(crate::remote::FilesRewrite {
        url: "https://files.example.internal/".into(),
        remote: "files".into(),
    });
    let files = Remote::proxy("files", "https://files.example.internal/".parse().unwrap());
    let other = Remote::proxy("other", "https://other.example.internal/".parse().unwrap());
    let wheel = ArtifactPath::parse("packages/ab/Foo_Bar-1.0-py3-none-any.whl", None).unwrap();
    let listed = |lister: &Remote, remote: &Remote, path: &ArtifactPath| {
        Pypi.listed_in(lister, remote, path).map(|p| p.decoded().to_owned())
    };
    assert_eq!(listed(&index, &files, &wheel).as_deref(), Some("simple/foo-bar/"));
    assert_eq!(listed(&other, &files, &wheel), None, "another index does not list it");
    assert!(listed(&other, &other, &wheel).is_some(), "an index serving its own files");
    let page = ArtifactPath::parse("simple/foo-bar/", None).unwrap();
    assert_eq!(listed(&index, &index, &page), None, "pages list files, not pages");
    let root = ArtifactPath::parse("simplejson-3.19.2.tar.gz", None).unwrap();
    assert_eq!(listed(&other, &other, &root).as_deref(), Some("simple/simplejson/"));
    // Both variants of the page on the index, none elsewhere.
    let mut index = index;
    index.package = crate::format::Package::parse("pypi").unwrap();
    let remotes = crate::remote::Remotes::new([index, files.clone(), other]);
    let keys = crate::format::listing_keys(&crate::format::listed_in(&files, &wheel, &remotes));
    let base = ArtifactPath::parse("simple/foo-bar/", None).unwrap().cache_key("pypi");
    let sep = crate::path::KEY_SEPARATOR;
    assert_eq!(keys, [format!("{base}{sep}{JSON}"), format!("{base}{sep}{HTML}")]);
}
