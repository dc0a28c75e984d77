#!/usr/bin/env python3
"""The test command's closing line, from nextest's and rustdoc's logs.

    test_summary.py NEXTEST_LOG NEXTEST_STATUS DOCTEST_LOG DOCTEST_STATUS

Prints `tests: N passed, N failed, N skipped` and exits 1 when anything
failed, 0 otherwise. Every way a test can fail to pass counts as failed:
nextest's `failed`, `exec failed` (the test could not be started) and
`timed out`, tests a cancelled run never ran (`3/10 tests run`), test
binaries nextest could not list (nothing ran at all), and doc tests that
failed or did not compile. A runner that exited non-zero with nothing
counted as failed counts as one failure, so a red run never prints
`0 failed`. Ignored tests and doc tests count as skipped.
"""

import re
import sys


def nextest(log: str, status: int):
    """(passed, failed, skipped, notes) from nextest's output."""
    notes = []
    summaries = [line for line in log.splitlines() if re.match(r"^\s*Summary \[", line)]
    if not summaries:
        unlisted = sorted(set(re.findall(r"for `([^`]+)`, command .* --list", log)))
        for binary in unlisted:
            notes.append(f"nextest could not list the tests of {binary}: no test ran")
        failed = len(unlisted)
        if status != 0 and failed == 0:
            notes.append(f"nextest exited with {status} before running any test")
            failed = 1
        return 0, failed, 0, notes
    summary = summaries[-1]

    def count(word: str) -> int:
        found = re.search(r"(\d+) " + word, summary)
        return int(found.group(1)) if found else 0

    passed = count("passed")
    failed = count("failed")  # not "2 exec failed": the number must stand right before the word
    exec_failed = count("exec failed")
    timed_out = count("timed out")
    skipped = count("skipped")
    not_run = 0
    run = re.search(r"(\d+)/(\d+) tests? run", summary)
    if run:
        not_run = int(run.group(2)) - int(run.group(1))
    if exec_failed:
        notes.append(f"{exec_failed} test(s) could not be started")
    if timed_out:
        notes.append(f"{timed_out} test(s) timed out")
    if not_run:
        notes.append(f"{not_run} test(s) never ran (the run was cancelled)")
    failed_all = failed + exec_failed + timed_out + not_run
    if status != 0 and failed_all == 0:
        notes.append(f"nextest exited with {status} though its summary counts no failure")
        failed_all = 1
    return passed, failed_all, skipped, notes


def doctests(log: str, status: int):
    """(passed, failed, skipped, notes) from `cargo test --doc`'s output."""
    passed = failed = skipped = 0
    for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", log):
        passed += int(m.group(1))
        failed += int(m.group(2))
        skipped += int(m.group(3))
    notes = []
    if status != 0 and failed == 0:
        notes.append(f"the doc tests exited with {status} (a crate did not build?)")
        failed = 1
    return passed, failed, skipped, notes


def main(argv):
    if len(argv) != 5:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    read = lambda path: open(path, errors="replace").read() if path != "-" else ""
    parts = [nextest(read(argv[1]), int(argv[2])), doctests(read(argv[3]), int(argv[4]))]
    passed = sum(p[0] for p in parts)
    failed = sum(p[1] for p in parts)
    skipped = sum(p[2] for p in parts)
    for part in parts:
        for note in part[3]:
            print(f"note: {note}")
    print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
