//! The test command's closing line counts every way a test can fail to pass:
//! a real nextest run over a small crate with a passing, a failing, an
//! aborting, a hanging and an ignored test, and one whose test binary cannot
//! even be listed, read by `tools/test_summary.py` as `test.sh` reads the
//! real suite.

use std::{path::Path, process::Command};

const LIB: &str = r#"
#[cfg(test)]
mod tests {
    #[test]
    fn passes() {}
    #[test]
    fn fails() {
        panic!("as it should");
    }
    #[test]
    fn aborts() {
        std::process::abort();
    }
    #[test]
    fn hangs() {
        std::thread::sleep(std::time::Duration::from_secs(120));
    }
    #[test]
    #[ignore = "the fixture's skipped test: the summary counts it as skipped"]
    fn ignored() {}
}
"#;

/// A crate of its own (its own workspace and target directory), with
/// nextest set to end a test after one second.
fn fixture(dir: &Path, unlistable: bool) {
    let mut manifest =
        "[package]\nname = \"summary-fixture\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n"
            .to_owned();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join(".config")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), LIB).unwrap();
    std::fs::write(
        dir.join(".config/nextest.toml"),
        "[profile.default]\nslow-timeout = { period = \"1s\", terminate-after = 1 }\n",
    )
    .unwrap();
    if unlistable {
        // A test binary that answers nextest's `--list` with an error.
        std::fs::create_dir_all(dir.join("tests")).unwrap();
        std::fs::write(dir.join("tests/unlistable.rs"), "fn main() { std::process::exit(1) }\n").unwrap();
        manifest.push_str("\n[[test]]\nname = \"unlistable\"\nharness = false\n");
    }
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
}

/// Runs nextest in `dir` and the summary over its log; answers the
/// summary's output and exit code.
fn nextest_then_summary(dir: &Path) -> (String, i32) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut run = Command::new(cargo);
    run.args(["nextest", "run", "--no-fail-fast"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("RUSTFLAGS");
    // This test runs under nextest itself: its settings are not the fixture's.
    for (key, _) in std::env::vars() {
        if key.starts_with("NEXTEST") || key.starts_with("__NEXTEST") {
            run.env_remove(key);
        }
    }
    let out = run.output().unwrap();
    let log = [out.stdout, out.stderr].concat();
    std::fs::write(dir.join("nextest.log"), &log).unwrap();
    let status = out.status.code().unwrap_or(1);
    assert_ne!(status, 0, "the fixture's run fails: {}", String::from_utf8_lossy(&log));
    let summary = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/test_summary.py"))
        .arg(dir.join("nextest.log"))
        .arg(status.to_string())
        .args(["-", "0"])
        .output()
        .unwrap();
    (String::from_utf8(summary.stdout).unwrap(), summary.status.code().unwrap_or(-1))
}

#[test]
fn timed_out_and_aborted_tests_count_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), false);
    let (out, code) = nextest_then_summary(dir.path());
    assert!(out.ends_with("tests: 1 passed, 3 failed, 1 skipped\n"), "{out}");
    assert!(out.contains("1 test(s) timed out"), "{out}");
    assert_eq!(code, 1);
}

#[test]
fn a_test_binary_that_cannot_be_listed_is_a_failure_not_an_empty_run() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), true);
    let (out, code) = nextest_then_summary(dir.path());
    assert!(out.ends_with("tests: 0 passed, 1 failed, 0 skipped\n"), "{out}");
    assert!(out.contains("could not list the tests of summary-fixture::unlistable"), "{out}");
    assert_eq!(code, 1);
}
