use std::time::Duration;

use artifactapi_layers::{
    format::{go::GoOptions, options::RegistryHosts},
    Class, Decision, RemoteKind,
};

use super::*;

#[test]
fn deeply_nested_collections_are_refused_before_the_scanner_sees_them() {
    let deep = format!("remotes: {}{}", "[".repeat(100_000), "]".repeat(100_000));
    let started = std::time::Instant::now();
    let err = parse(&deep).unwrap_err().to_string();
    assert!(err.contains("nested more than 64 levels deep at line 1"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "refused without parsing");
    // Brackets in quoted patterns and comments are not nesting.
    let text = "# {{{{{{\nremotes:  # [[[[\n  a:\n    base_url: https://e.example\n    immutable_patterns: ['\\[\\[\\[', \"\\\"\\\\[\\\"\"]\n";
    assert!(flow_depth_within(text, 1).is_ok(), "{text}");
    assert!(parse(text).is_ok(), "{text}");
    assert!(flow_depth_within("a: [[[[", 3).is_err());
    assert!(flow_depth_within("a: {b: [c, {d: [e]}]}", 4).is_ok());
}

fn problems(text: &str) -> Vec<String> {
    parse(text).expect_err("should be rejected").problems
}

#[test]
fn the_example_file_compiles() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/remotes.yaml")).unwrap();
    let config = parse(&text).unwrap();
    assert!(config.remotes.iter().count() >= 5);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn registry_hosts_belong_to_docker_remotes() {
    let config = parse(
        "remotes:\n  hub:\n    base_url: https://registry-1.docker.io\n    package: docker\n    registry_hosts: ['Docker.io']\n",
    )
    .unwrap();
    let hub = config.remotes.get("hub").unwrap();
    assert!(RegistryHosts::answers_for(hub, "docker.io"));
    assert!(RegistryHosts::answers_for(hub, "registry-1.docker.io"));
    assert!(!RegistryHosts::answers_for(hub, "quay.io"));
    let problems = problems(
        "remotes:\n  files:\n    base_url: https://github.com\n    registry_hosts: ['github.com']\n  hub:\n    base_url: https://registry-1.docker.io\n    package: docker\n    registry_hosts: ['bad host/x']\n",
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("remotes.files.registry_hosts")));
    assert!(problems.iter().any(|p| p.contains("\"bad host/x\"")));
}

#[test]
fn a_checksum_database_belongs_to_go_remotes() {
    let config =
        parse("remotes:\n  go:\n    base_url: https://proxy.golang.org\n    package: go\n    go_sumdb_url: https://sum.golang.org\n")
            .unwrap();
    let go = config.remotes.get("go").unwrap();
    let sumdb = go.options::<GoOptions>().and_then(|o| o.sumdb.as_ref());
    assert_eq!(sumdb.map(|u| u.as_str()), Some("https://sum.golang.org/"));
    let problems = problems(
        "remotes:\n  files:\n    base_url: https://github.com\n    go_sumdb_url: https://sum.golang.org\n  go:\n    base_url: https://proxy.golang.org\n    package: go\n    go_sumdb_url: ftp://sum.golang.org\n",
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("remotes.files.go_sumdb_url") && p.contains("package go")));
    assert!(problems.iter().any(|p| p.contains("remotes.go.go_sumdb_url") && p.contains("not an http")));
}

#[test]
fn every_seed_key_is_understood() {
    let config = parse(
        r#"
remotes:
  pypi:
    base_url: "https://pypi.example.internal"
    type: "remote"
    package: "pypi"
    description: "Python packages"
    pypi_files_url: "https://files.example.internal"
    pypi_files_remote: "pypi-files"
    check_mutable_updates: true
    username: "u"
    password: "p"
    cache:
      immutable_ttl: 0
      mutable_ttl: 600
      negative_ttl: 5
  pypi-files:
    base_url: "https://files.example.internal"
    immutable_patterns: ['packages/.*\.whl$']
  npm:
    base_url: "https://npm.example.internal"
    package: npm
    npm_files_url: "https://npm.example.internal"
    npm_files_remote: npm
    immutable_patterns: ['\.tgz$']
    mutable_patterns: ['^(?!.*\.tgz$).*']
    cache: { immutable_ttl: 100 }
  local-generic:
    type: local
"#,
    )
    .unwrap();
    let pypi = config.remotes.get("pypi").unwrap();
    assert_eq!(pypi.package.as_str(), "pypi");
    assert!(pypi.check_mutable_updates);
    assert_eq!(pypi.ttl.mutable, Duration::from_secs(600));
    assert_eq!(pypi.ttl.immutable, None, "0 keeps immutable entries forever");
    assert_eq!(pypi.ttl.negative, Duration::from_secs(5));
    assert_eq!(pypi.credentials.as_ref().unwrap().password, "p");
    assert_eq!(pypi.files.as_ref().unwrap().remote, "pypi-files");
    assert_eq!(pypi.classifier.classify("simple/x/"), Decision::Allow(Class::Mutable { builtin: true }));
    let npm = config.remotes.get("npm").unwrap();
    assert_eq!(npm.ttl.immutable, Some(Duration::from_secs(100)));
    assert_eq!(npm.ttl.mutable, Duration::from_secs(3600), "mutable_ttl defaults to an hour");
    assert_eq!(npm.classifier.classify("@babel/core"), Decision::Allow(Class::Mutable { builtin: false }));
    assert_eq!(config.remotes.get("local-generic").unwrap().kind, RemoteKind::Local);
}

#[test]
fn credentials_can_come_from_the_environment() {
    let yaml = "remotes:\n  hub:\n    base_url: https://registry.example.com\n    username: '${HUB_USER}'\n    password: '${HUB_TOKEN}'\n";
    let env = |name: &str| match name {
        "HUB_USER" => Some("robot".to_owned()),
        "HUB_TOKEN" => Some("t0ken".to_owned()),
        _ => None,
    };
    let config = parse_with_env(yaml, &env).unwrap();
    let creds = config.remotes.get("hub").unwrap().credentials.clone().unwrap();
    assert_eq!((creds.username.as_str(), creds.password.as_str()), ("robot", "t0ken"));
    assert_eq!(
        config.file.remotes["hub"].password.as_deref(),
        Some("${HUB_TOKEN}"),
        "the file keeps the reference"
    );

    let problems = parse_with_env(yaml, &|_| None).unwrap_err().problems;
    assert!(
        problems.iter().any(|p| p == "remotes.hub.password: environment variable HUB_TOKEN is not set"),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| p.contains("HUB_USER")), "{problems:?}");
    let bad =
        "remotes:\n  hub:\n    base_url: https://e.com\n    username: u\n    password: '${1BAD-NAME}'\n";
    assert!(parse_with_env(bad, &|_| None).is_err());
}

#[test]
fn legacy_keys_are_aliases_with_a_warning() {
    let config = parse(
        r#"
remotes:
  old:
    base_url: https://example.com
    include_patterns: ['\.tar\.gz$']
    index_patterns: ['index\.yaml$']
    cache: { file_ttl: 0, index_ttl: 60 }
"#,
    )
    .unwrap();
    let old = config.remotes.get("old").unwrap();
    assert_eq!(old.classifier.classify("a.tar.gz"), Decision::Allow(Class::Immutable));
    assert_eq!(old.classifier.classify("index.yaml"), Decision::Allow(Class::Mutable { builtin: false }));
    assert!(matches!(old.classifier.classify("a.zip"), Decision::Deny(_)));
    assert_eq!(old.ttl.mutable, Duration::from_secs(60));
    assert_eq!(config.warnings.len(), 4, "{:?}", config.warnings);
    assert!(config.warnings[0].contains("legacy"));

    let p = problems(
        "remotes:\n  x:\n    base_url: https://e.com\n    include_patterns: []\n    immutable_patterns: []\n",
    );
    assert!(p[0].contains("both `immutable_patterns` and its legacy name"), "{p:?}");
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let p = problems("remotes:\n  gh:\n    base_url: https://github.com\n    imutable_patterns: ['x']\n");
    assert!(p[0].contains("imutable_patterns"), "{p:?}");
    let p = problems("remotes:\n  gh:\n    base_url: https://github.com\n    cache: { mutable_tll: 3 }\n");
    assert!(p[0].contains("mutable_tll"), "{p:?}");
    let p = problems("remote:\n  gh: {}\n");
    assert!(p[0].contains("remote"), "{p:?}");
}

#[test]
fn double_quoted_regexes_get_a_hint() {
    let p = problems(
        "remotes:\n  npm:\n    base_url: https://e.com\n    immutable_patterns:\n      - \"\\.tgz$\"\n",
    );
    assert!(p[0].contains("single quotes"), "{p:?}");
}

#[test]
fn bad_values_name_remote_key_and_reason() {
    let p = problems(
        r#"
remotes:
  a: { base_url: "not a url" }
  b: { base_url: "ftp://e.com" }
  c: { base_url: "https://u:p@e.com" }
  d: { base_url: "https://e.com", immutable_patterns: ['ok', '([a-z]'] }
  e: { type: local, base_url: "https://e.com" }
  f: { base_url: "https://e.com", package: pypi, pypi_files_url: "https://f.com", pypi_files_remote: nowhere }
  g: { type: remote }
  h: { base_url: "https://e.com", package: punchcards }
  i: { base_url: "https://e.com", username: u }
  "bad name": { base_url: "https://e.com" }
"#,
    );
    let all = p.join("\n");
    for expected in [
        "remotes.a.base_url: \"not a url\" is not a valid URL",
        "remotes.b.base_url: \"ftp://e.com\" is not an http or https URL",
        "remotes.c.base_url: credentials in the URL",
        "remotes.d.immutable_patterns[1]: pattern \"([a-z]\" does not compile",
        "remotes.e.base_url: a local repository",
        "remotes.f.pypi_files_remote: names no remote: \"nowhere\"",
        "remotes.g.base_url: a remote of type `remote` needs a base_url",
        "remotes.h.package: \"punchcards\" is not one of",
        "remotes.i.password: `username` is set without `password`",
        "remotes.bad name: a remote name",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in\n{all}");
    }
}

#[test]
fn a_file_that_is_not_yaml_or_not_there_is_an_error() {
    assert!(!problems("remotes: [").is_empty());
    assert!(load(Path::new("/nonexistent/remotes.yaml")).is_err());
}

#[test]
fn a_group_names_members_of_its_package_type_with_name_filters() {
    let config = parse(
        "remotes:\n  internal: { type: local, package: npm }\n  public: { base_url: 'https://npm.example.internal', package: npm }\n  \
         npm-all:\n    type: group\n    package: npm\n    resolve: merge\n    members:\n      - internal\n      \
         - { remote: public, except_names: ['@acme/.*', 'acme-utils'] }\n",
    )
    .unwrap();
    let RemoteKind::Group(group) = &config.remotes.get("npm-all").unwrap().kind else { panic!("a group") };
    assert_eq!(group.resolve, artifactapi_layers::remote::Resolve::Merge);
    let names: Vec<&str> = group.members.iter().map(|m| m.remote.as_str()).collect();
    assert_eq!(names, ["internal", "public"]);
    let public = &group.members[1];
    assert!(public.allows(Some("left-pad")) && public.allows(None));
    assert!(!public.allows(Some("@acme/utils")) && !public.allows(Some("acme-utils")));
    assert!(public.allows(Some("acme-utils-extra")), "a name filter matches the whole name");
    let only = parse(
        "remotes:\n  a: { base_url: 'https://a.example', package: go }\n  g:\n    type: group\n    package: go\n    \
         members: [{ remote: a, only_names: ['example\\.com/.*'] }]\n",
    )
    .unwrap();
    let RemoteKind::Group(group) = &only.remotes.get("g").unwrap().kind else { panic!("a group") };
    assert!(group.members[0].allows(Some("example.com/x")) && !group.members[0].allows(Some("golang.org/x")));
}

#[test]
fn group_mistakes_name_the_key() {
    let all = problems(
        "remotes:\n  n: { base_url: 'https://n.example', package: npm }\n  p: { base_url: 'https://p.example', package: pypi }\n  \
         d: { base_url: 'https://d.example', package: docker }\n  \
         g1: { type: group, package: npm, members: [n, p, nowhere, n] }\n  \
         g2: { type: group, package: npm, members: [g1], resolve: newest }\n  \
         g3: { type: group, package: npm, base_url: 'https://x.example', members: [n] }\n  \
         g4: { type: group, package: npm }\n  \
         g5: { type: group, package: docker, members: [d] }\n  \
         g6: { type: group, package: npm, members: [{ remote: n, only_names: ['(['] }] }\n  \
         r: { base_url: 'https://r.example', package: rubygems }\n  \
         g7: { type: group, package: rubygems, members: [r] }\n  \
         plain: { base_url: 'https://x.example', members: [n], resolve: first }\n",
    )
    .join("\n");
    for expected in [
        "remotes.g1.members[1]: \"p\" is a `pypi` remote, the group is `npm`",
        "remotes.g1.members[2]: names no remote: \"nowhere\"",
        "remotes.g1.members[3]: \"n\" is a member twice",
        "remotes.g2.members[0]: \"g1\" is a group; groups do not nest",
        "remotes.g2.resolve: \"newest\" is not `first` or `merge`",
        "remotes.g3.base_url: a group answers from its members",
        "remotes.g4.members: a group needs at least one member",
        "remotes.g5.type: registry remotes cannot be grouped",
        "remotes.g6.members[0].only_names[0]:",
        "remotes.g7.type: rubygems remotes cannot be grouped yet",
        "remotes.plain.members: only a remote of `type: group` has members",
        "remotes.plain.resolve: only a remote of `type: group` has `resolve`",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

#[test]
fn a_policy_is_checked_against_its_format() {
    let config = parse(
        "remotes:\n  py:\n    base_url: https://py.example\n    package: pypi\n    policy:\n      min_release_age: 36h\n      \
         allow: [Foo_Bar]\n      deny: ['evil', 'Bad.Pkg@<2.0,>=1.0', 'x@1.0']\n      mode: report\n",
    )
    .unwrap();
    let policy = config.remotes.get("py").unwrap().policy.clone().unwrap();
    assert_eq!(policy.min_release_age, Some(Duration::from_secs(36 * 3600)));
    assert_eq!(policy.allow[0].name, "foo-bar", "names compare as the format normalizes them");
    assert_eq!(policy.deny[1].name, "bad-pkg");
    assert_eq!(policy.mode, artifactapi_layers::policy::Mode::Report);
    let all = problems(
        "remotes:\n  c: { base_url: 'https://c.example', package: cargo, policy: { min_release_age: 7d } }\n  \
         n: { base_url: 'https://n.example', package: npm, policy: { min_release_age: soon, deny: ['x@~>1'], mode: loud, unclassified: maybe } }\n  \
         g: { base_url: 'https://g.example', package: generic, policy: { deny_file: /nowhere } }\n  \
         m: { base_url: 'https://m.example', package: npm, policy: { deny_file: /nowhere/at/all.json } }\n",
    )
    .join("\n");
    for expected in [
        "remotes.c.policy.min_release_age: `cargo` metadata gives no publish times",
        "remotes.n.policy.min_release_age: \"soon\" is not a duration",
        "remotes.n.policy.deny[0]:",
        "remotes.n.policy.mode: \"loud\" is not `enforce` or `report`",
        "remotes.g.policy.deny_file: `generic` has no OSV ecosystem",
        "remotes.m.policy.deny_file: /nowhere/at/all.json",
        "remotes.g.policy: `generic` files name no package version",
        "remotes.n.policy.unclassified: \"maybe\" is not `refuse` or `allow`",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

#[test]
fn a_group_policy_that_a_member_lacks_is_a_warning() {
    let config = parse(
        "remotes:\n  a: { base_url: 'https://a.example', package: npm, policy: { deny: [x] } }\n  \
         b: { base_url: 'https://b.example', package: npm }\n  \
         g: { type: group, package: npm, members: [a, b], policy: { deny: [x], unclassified: allow } }\n  \
         h: { type: group, package: npm, members: [a, b] }\n",
    )
    .unwrap();
    let group = config.remotes.get("g").unwrap().policy.clone().unwrap();
    assert_eq!(group.unclassified, artifactapi_layers::policy::Unclassified::Allow);
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0].contains("remotes.g") && config.warnings[0].contains("\"b\""),
        "{:?}",
        config.warnings
    );
}

#[test]
fn a_helm_files_remote_is_a_remote_with_a_base_url() {
    let config = parse(
        "remotes:\n  charts: { base_url: 'https://charts.example/', package: helm, helm_files_remote: gh }\n  \
         gh: { base_url: 'https://github.example/' }\n",
    )
    .unwrap();
    let files = config.remotes.get("charts").unwrap().files.clone().unwrap();
    assert_eq!((files.url.as_str(), files.remote.as_str()), ("https://github.example/", "gh"));
    let all = problems(
        "remotes:\n  a: { base_url: 'https://a.example/', package: helm, helm_files_remote: nowhere }\n  \
         b: { base_url: 'https://b.example/', helm_files_remote: a }\n",
    )
    .join("\n");
    assert!(
        all.contains("remotes.a.helm_files_remote: names no remote with a base_url: \"nowhere\""),
        "{all}"
    );
    assert!(all.contains("remotes.b.helm_files_remote: only a remote of package helm"), "{all}");
}
