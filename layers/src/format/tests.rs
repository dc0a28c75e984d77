//! Helpers the formats' tests share, and the registry of formats.

pub(crate) use super::Coordinates;
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
        for p in format.spec().mutable {
            Pattern::new(p).unwrap_or_else(|e| panic!("{}: {e}", format.name()));
        }
    }
    assert_eq!(Package::parse("rpm").unwrap().as_str(), "rpm");
    assert!(Package::parse("punchcards").is_none());
    assert_eq!(Package::default(), Package::GENERIC);
}

/// What each format makes of a path, with the query as the client sent it:
/// metadata (`M`, of the package when named), a file of a version (`F`), or
/// unknown (`?`), which a policy refuses. Every case of issue 38's bypasses
/// is here, so a format that stops naming one fails without a client.
#[test]
fn every_format_classifies_metadata_files_and_what_it_cannot_name() {
    use PathKind::{Metadata as M, Unknown as U};
    let f = |name: &str, version: &str| PathKind::file(name, version);
    let m = |name: &str| PathKind::metadata_of(name);
    let cases: &[(&str, &str, Option<&str>, PathKind)] = &[
        // generic names nothing: a policy there is refused by check-config.
        ("generic", "tool-1.0.tgz", None, U),
        ("alpine", "v3.20/main/x86_64/APKINDEX.tar.gz", None, M(None)),
        ("alpine", "v3.20/main/x86_64/py3-requests-2.31.0-r0.apk", None, f("py3-requests", "2.31.0-r0")),
        ("alpine", "v3.20/main/x86_64/evil.tar.gz", None, U),
        ("rpm", "9/BaseOS/x86_64/os/repodata/repomd.xml", None, M(None)),
        ("rpm", "9/BaseOS/x86_64/os/repodata/abc-primary.xml.gz", None, M(None)),
        ("rpm", "9/BaseOS/x86_64/os/Packages/bash-5.1.8-6.el9.x86_64.rpm", None, f("bash", "5.1.8-6.el9")),
        ("rpm", "9/BaseOS/x86_64/os/images/install.img", None, U),
        ("apt", "dists/bookworm/InRelease", None, M(None)),
        ("apt", "dists/bookworm/main/binary-amd64/Packages.xz", None, M(None)),
        ("apt", "dists/bookworm/main/binary-amd64/by-hash/SHA256/0a1b", None, M(None)),
        ("apt", "pool/main/h/hello/hello_2.10-3_amd64.deb", None, f("hello", "2.10-3")),
        ("apt", "pool/main/h/hello/hello.bin", None, U),
        ("docker", "library/nginx/manifests/1.27", None, f("library/nginx", "1.27")),
        ("docker", "library/nginx/tags/list", None, m("library/nginx")),
        ("docker", "library/nginx/other", None, U),
        // PyPI: every suffix pip accepts, files in static layouts under
        // simple/{name}/, sidecars as metadata, anything else unknown.
        ("pypi", "simple/", None, M(None)),
        ("pypi", "simple/Cool_Pkg/", None, m("cool-pkg")),
        ("pypi", "simple/cool/index.html", None, m("cool")),
        ("pypi", "simple/bad/bad-1.0.tar.gz", None, f("bad", "1.0")),
        ("pypi", "simple/bad/bad-1.0-py3-none-any.whl", None, f("bad", "1.0")),
        ("pypi", "simple/bad-1.0.tar.gz", None, f("bad", "1.0")),
        ("pypi", "packages/cool-2.0.tgz", None, f("cool", "2.0")),
        ("pypi", "packages/cool-2.0.tar.xz", None, f("cool", "2.0")),
        ("pypi", "packages/cool-2.0.txz", None, f("cool", "2.0")),
        ("pypi", "packages/cool-2.0.tbz", None, f("cool", "2.0")),
        ("pypi", "packages/cool-2.0.tlz", None, f("cool", "2.0")),
        ("pypi", "packages/cool-2.0.tar.lz", None, f("cool", "2.0")),
        ("pypi", "packages/cool-2.0.tar.lzma", None, f("cool", "2.0")),
        ("pypi", "packages/cool-2.0.tar", None, f("cool", "2.0")),
        ("pypi", "packages/cool-2.0.zip", None, f("cool", "2.0")),
        ("pypi", "packages/cool-2.0.tar.bz2", None, f("cool", "2.0")),
        ("pypi", "packages/cool-2.0-py3.11.egg", None, f("cool", "2.0")),
        ("pypi", "packages/cool-2.0-py3-none-any.whl.metadata", None, m("cool")),
        ("pypi", "packages/cool-2.0.tar.gz.asc", None, m("cool")),
        ("pypi", "packages/cool-2.0.rpm", None, U),
        ("pypi", "simple/cool/README", None, U),
        // npm: both of verdaccio's tarball routes, anything after `/-/`.
        ("npm", "cool", None, m("cool")),
        ("npm", "@acme%2futils", None, m("@acme/utils")),
        ("npm", "cool/1.0.0", None, m("cool")),
        ("npm", "-/v1/search", Some("text=x"), M(None)),
        ("npm", "cool/-/cool-1.1.0.tgz", None, f("cool", "1.1.0")),
        ("npm", "@acme%2futils/-/@acme/utils-1.0.0.tgz", None, f("@acme/utils", "1.0.0")),
        ("npm", "@acme/utils/-/utils-1.0.0.tgz", None, f("@acme/utils", "1.0.0")),
        ("npm", "cool/-/anything/cool-1.1.0.tgz", None, f("cool", "1.1.0")),
        ("npm", "cool/-/other-1.1.0.tgz", None, U),
        ("npm", "cool/-/cool.zip", None, U),
        ("npm", "-/cool-1.1.0.tgz", None, U),
        ("npm", "a/b/c", None, U),
        // Go: the query never moves a path out of its class.
        ("go", "example.com/m/@v/list", None, m("example.com/m")),
        ("go", "example.com/m/@v/list", Some("x"), m("example.com/m")),
        ("go", "example.com/m/@latest", Some("x"), m("example.com/m")),
        ("go", "example.com/m/@v/v1.1.0.zip", Some("x"), f("example.com/m", "v1.1.0")),
        ("go", "example.com/!m/@v/v1.1.0.info", None, f("example.com/M", "v1.1.0")),
        ("go", "sumdb/sum.example/lookup/example.com/m@v1.1.0", None, M(None)),
        ("go", "example.com/m/@v/", None, U),
        ("go", "example.com/m/other", None, U),
        ("cargo", "config.json", None, M(None)),
        ("cargo", "se/rd/serde", None, m("serde")),
        ("cargo", "dl/serde/1.0.0/download", Some("x"), f("serde", "1.0.0")),
        ("cargo", "se/rd/serde-1.0.0.crate", None, U),
        ("maven", "org/ex/lib/maven-metadata.xml", None, m("org.ex:lib")),
        ("maven", "org/ex/lib/1.0/lib-1.0.jar", None, f("org.ex:lib", "1.0")),
        ("maven", "org/ex/lib/1.0/lib-1.0.jar.sha1", None, m("org.ex:lib")),
        ("maven", "org/ex/lib/1.0/lib-1.0.pom.asc", None, m("org.ex:lib")),
        ("maven", "org/ex/lib/1.0/other-1.0.jar", None, U),
        ("maven", "archetype-catalog.xml", None, U),
        ("rubygems", "versions", None, M(None)),
        ("rubygems", "info/rails", None, m("rails")),
        ("rubygems", "gems/rails-7.1.0.gem", None, f("rails", "7.1.0")),
        ("rubygems", "gems/nokogiri-1.15.4-x86_64-linux.gem", None, f("nokogiri", "1.15.4")),
        ("rubygems", "quick/Marshal.4.8/rails-7.1.0.gemspec.rz", None, f("rails", "7.1.0")),
        // Two readings (`a` 1 on platform `2`, or `a-1` 2): unknown.
        ("rubygems", "gems/a-1-2.gem", None, U),
        ("rubygems", "gems/rails.gem", None, U),
        ("helm", "index.yaml", None, M(None)),
        ("helm", "charts/nginx-15.1.0.tgz", None, f("charts/nginx".rsplit('/').next().unwrap(), "15.1.0")),
        ("helm", "nginx-15.1.0.tgz.prov", None, m("nginx")),
        ("helm", "nginx.tgz", None, U),
        ("terraform", ".well-known/terraform.json", None, M(None)),
        ("terraform", "registry.example/hashicorp/null/index.json", None, m("hashicorp/null")),
        ("terraform", "registry.example/hashicorp/null/3.2.1.json", None, f("hashicorp/null", "3.2.1")),
        (
            "terraform",
            "registry.example/hashicorp/null/3.2.1/linux_amd64/terraform-provider-null_3.2.1_linux_amd64.zip",
            None,
            f("hashicorp/null", "3.2.1"),
        ),
        ("terraform", "v1/providers/hashicorp/null/versions", None, m("hashicorp/null")),
        ("terraform", "registry.example/hashicorp/null/a/b", None, U),
    ];
    for (package, path, query, expected) in cases {
        let format = Package::parse(package).unwrap().format();
        let path = ArtifactPath::parse(path, *query).unwrap();
        assert_eq!(&format.classify(&path), expected, "{package} {}", path.display());
    }
    for format in BUILTIN {
        assert_eq!(format.spec().names_files, format.name() != "generic", "{}", format.name());
    }
}
