//! The Go format's tests: its patterns, classification, checksum database
//! routes and the records that vouch for its files.

use super::*;
use crate::format::tests::*;

fn class(path: &str) -> Decision {
    classifier("go", None, &[]).classify(path)
}

#[test]
fn lists_latest_and_queries_move_versions_do_not() {
    for path in [
        "golang.org/x/text/@v/list",
        "golang.org/x/text/@latest",
        "github.com/!azure/azure-sdk-for-go/@v/list",
        "golang.org/x/text/@v/master.info",
        "golang.org/x/text/@v/v1.2.info",
        "golang.org/x/text/@v/4c2f7d1a.info",
        "sumdb/sum.golang.org/latest",
        "sumdb/sum.golang.org/supported",
    ] {
        assert_eq!(class(path), BUILTIN_MUTABLE, "{path}");
    }
    for path in [
        "golang.org/x/text/@v/v0.14.0.info",
        "golang.org/x/text/@v/v0.14.0.mod",
        "golang.org/x/text/@v/v0.14.0.zip",
        "golang.org/x/text/@v/v0.0.0-20191109021931-daa7c04131f5.info",
        "github.com/!burnt!sushi/toml/@v/v1.3.2.zip",
        "example.com/inc/@v/v2.0.0+incompatible.info",
        "example.com/pre/@v/v1.0.0-rc.1.info",
        "sumdb/sum.golang.org/lookup/golang.org/x/text@v0.14.0",
        "sumdb/sum.golang.org/tile/8/0/x123/456",
    ] {
        assert_ne!(class(path), BUILTIN_MUTABLE, "{path}");
    }
}

#[test]
fn module_paths_are_decoded_in_coordinates() {
    let at = |path: &str| coordinates_at(&Go, path);
    assert_eq!(
        at("github.com/!burnt!sushi/toml/@v/v1.3.2.zip"),
        version_of("github.com/BurntSushi/toml", "v1.3.2")
    );
    assert_eq!(at("golang.org/x/text/@v/v0.14.0.info"), version_of("golang.org/x/text", "v0.14.0"));
    assert_eq!(at("golang.org/x/text/@v/list"), Some(Coordinates::new("golang.org/x/text", None)));
    assert_eq!(at("golang.org/x/text/@latest"), Some(Coordinates::new("golang.org/x/text", None)));
    for path in
        ["sumdb/sum.golang.org/supported", "golang.org/x/text/@v/v1.0.0.tar", "golang.org/X/text/@v/list"]
    {
        assert_eq!(at(path), None, "{path}");
    }
}

#[test]
fn a_version_file_is_vouched_for_by_its_lookup_record() {
    let path = |p: &str| ArtifactPath::parse(p, None).unwrap();
    let mut remote = Remote::proxy("go", "http://proxy.example/".parse().unwrap());
    let zip = path("github.com/!burnt!sushi/toml/@v/v1.3.2.zip");
    assert!(Go.vouched_by(&remote, &zip).is_empty(), "no database, no record");
    remote.format_options =
        FormatOptions::new(GoOptions { sumdb: Some("https://sum.golang.org".parse().unwrap()) });
    let record = path("sumdb/sum.golang.org/lookup/github.com/!burnt!sushi/toml@v1.3.2");
    assert_eq!(Go.vouched_by(&remote, &zip), vec![record.clone()]);
    assert_eq!(Go.vouched_by(&remote, &path("github.com/!burnt!sushi/toml/@v/v1.3.2.mod")), vec![record]);
    for other in [
        "github.com/!burnt!sushi/toml/@v/v1.3.2.info",
        "github.com/!burnt!sushi/toml/@v/master.zip",
        "github.com/!burnt!sushi/toml/@v/list",
        "sumdb/sum.golang.org/lookup/a@v1.0.0",
    ] {
        assert!(Go.vouched_by(&remote, &path(other)).is_empty(), "{other}");
    }

    let (zip_h1, mod_h1) = (h1::go_mod(b"z"), h1::go_mod(b"m"));
    let record = format!(
        "42\ngithub.com/BurntSushi/toml v1.3.2 {zip_h1}\ngithub.com/BurntSushi/toml v1.3.2/go.mod {mod_h1}\n\n\
         go.sum database tree\n43\nROOT=\n\n\u{2014} sum.golang.org SIG=\n"
    );
    let vouched = Go.vouches(record.as_bytes(), &zip).unwrap();
    assert_eq!((vouched.algorithm, h1::shown(&vouched.digest)), (crate::digest::Algorithm::GoZipH1, zip_h1));
    let vouched = Go.vouches(record.as_bytes(), &path("github.com/!burnt!sushi/toml/@v/v1.3.2.mod")).unwrap();
    assert_eq!((vouched.algorithm, h1::shown(&vouched.digest)), (crate::digest::Algorithm::GoModH1, mod_h1));
    let other = path("github.com/!burnt!sushi/toml/@v/v1.3.3.zip");
    assert!(Go.vouches(record.as_bytes(), &other).unwrap_err().contains("no line"));
    assert!(Go.vouches(b"1\ngithub.com/BurntSushi/toml v1.3.2 h1:short\n", &zip).is_err());
}

#[test]
fn lists_merge_and_every_path_of_a_module_has_its_list() {
    let path = |p: &str| ArtifactPath::parse(p, None).unwrap();
    let list = Some(path("example.com/!upper/greet/@v/list"));
    for p in [
        "example.com/!upper/greet/@v/v1.2.0.zip",
        "example.com/!upper/greet/@latest",
        "example.com/!upper/greet/@v/list",
    ] {
        assert_eq!(Go.owner_document(&path(p)), list, "{p}");
    }
    assert_eq!(Go.owner_document(&path("sumdb/sum.golang.org/lookup/a@v1.0.0")), None);
    let (a, b) = (b"v1.0.0\nv1.1.0\n".as_slice(), b"v1.1.0\nv2.0.0\n".as_slice());
    let parts = [Part { body: a, json: false }, Part { body: b, json: false }];
    assert_eq!(Go.merge(&path("m/@v/list"), &parts).unwrap(), b"v1.0.0\nv1.1.0\nv2.0.0\n");
}

#[test]
fn case_encoding() {
    assert_eq!(decode("github.com/!burnt!sushi/toml").as_deref(), Some("github.com/BurntSushi/toml"));
    assert_eq!(decode("golang.org/x/text").as_deref(), Some("golang.org/x/text"));
    for bad in ["github.com/BurntSushi", "a/!", "a/!1", "a/!!b", ""] {
        assert_eq!(decode(bad), None, "{bad}");
    }
}
