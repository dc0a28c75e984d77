//! The command line: `check-config` validates like start-up does.

use std::process::Command;

fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("remotes.yaml");
    std::fs::write(&file, text).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_artifactapi")).arg("check-config").arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_config_accepts_the_example_and_names_what_is_wrong() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/remotes.yaml")).unwrap();
    let (ok, text) = check_config(&example);
    assert!(ok, "{text}");
    assert!(text.contains("ok"), "{text}");

    let (ok, text) =
        check_config("remotes:\n  gh:\n    base_url: https://github.com\n    immutable_patterns: ['(']\n");
    assert!(!ok);
    assert!(text.contains("remotes.gh.immutable_patterns[0]"), "{text}");

    let (ok, text) =
        check_config("remotes:\n  gh:\n    base_url: https://github.com\n    imutable_patterns: ['x']\n");
    assert!(!ok);
    assert!(text.contains("imutable_patterns"), "{text}");

    let (ok, text) =
        check_config("remotes:\n  a:\n    base_url: https://e.com\n    include_patterns: ['x']\n");
    assert!(ok, "{text}");
    assert!(text.contains("legacy"), "{text}");
}

#[test]
fn serve_refuses_to_start_on_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("remotes.yaml");
    std::fs::write(&file, "remotes:\n  x:\n    type: local\n    base_url: https://e.com\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_artifactapi"))
        .env("CONFIG_PATH", &file)
        .env("DATA_DIR", dir.path().join("data"))
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("remotes.x.base_url"), "{text}");
}
