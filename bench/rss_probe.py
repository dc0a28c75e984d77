#!/usr/bin/env python3
"""Where the embedded backend's peak RSS goes at each size (issue 19): fills
an SQLite index as bench/scale.py does, starts the release binary, and reads
/proc/PID/status (VmHWM, RssAnon, Threads) and SQLite's own heap
(sqlite3_memory_used and its high-water mark, read with gdb attached) at
ready, after the start-up clean-up and after 2 000 hits. With QUIET_CLEANUP=1
no hits run during the clean-up (bench/scale.py sends about 100 a second).

    python3 bench/rss_probe.py 10000 1000000 10000000

Needs the release binary (bench/scale builds it) and gdb.
"""

import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scale as S  # noqa: E402


def sqlite_heap_mib(pid):
    out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "print (long long) sqlite3_memory_used()",
                          "-ex", "print (long long) sqlite3_memory_highwater(0)"],
                         capture_output=True, text=True).stdout
    return [round(int(v) / 2**20, 1) for v in re.findall(r"\$\d+ = (\d+)", out)]


def status(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon"):
            out[key + " MiB"] = round(int(value.split()[0]) / 1024, 1)
        elif key == "Threads":
            out[key] = int(value)
    return out


def report(n, stage, proxy):
    used, high = sqlite_heap_mib(proxy.proc.pid) or [None, None]
    print(f"{n:>10} {stage:<16} {status(proxy.proc.pid)} sqlite heap {used} MiB (high {high})", flush=True)


def probe(n, work):
    blobs = S.blob_files()
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "data", "blobs", "cas", "sha256"))
    with open(os.path.join(work, "remotes.yaml"), "w") as f:
        f.write(S.CONFIG)
    for key, size in blobs:
        with open(os.path.join(work, "data", "blobs", key), "wb") as f:
            f.write(b"\x5a" * size)
    env = {"CLEANUP_INTERVAL": "0", "CACHE_EVICT_INTERVAL": "3600"}
    p = S.Proxy(work, env)
    p.wait_ready()
    p.stop()
    now_ms = int(time.time() * 1000)
    S.fill_sqlite(os.path.join(work, "data", "index.db"), n, blobs, now_ms)
    p = S.Proxy(work, env)
    p.wait_ready()
    rng = random.Random(n)
    paths = [S.url_path(e[1], e[2]) for e in (S.entry(rng.randrange(n), blobs, now_ms) for _ in range(2000))]
    report(n, "ready", p)
    if os.environ.get("QUIET_CLEANUP"):
        p.wait_log(r"clean-up (found nothing|removed)")
    else:
        S.hits_until(p.port, paths, r"clean-up (found nothing|removed)", p)
    report(n, "after clean-up", p)
    S.timed_gets(p.port, paths)
    report(n, "after 2000 hits", p)
    p.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        for size in map(int, sys.argv[1:] or ["10000"]):
            probe(size, os.path.join(tmp, str(size)))
