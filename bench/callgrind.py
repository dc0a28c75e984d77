#!/usr/bin/env python3
"""User-space instructions per request, by crate, under callgrind.

Started by bench/callgrind (which installs valgrind and builds the release
binary). The proxy runs under `valgrind --tool=callgrind` with instrumentation
off; each workload is warmed up first (its miss filled and committed, then
`--warmup` hits), then instrumentation goes on, the counters are zeroed, the
workload's `--requests` requests are made one after another on one keep-alive
connection, and the counters are dumped. Instructions are counted in the
proxy's process only (the client is this script), so the figures repeat from
run to run within a fraction of a percent and two builds compare on a machine
whose wall-clock figures spread by ±10 %.

Workloads:
- `hit_4k`: GET of a 4 KiB file on a generic remote, a fresh hit;
- `metadata_hit`: GET of a PyPI simple page (60 files listed) whose cached
  upstream document is fresh; the page is rewritten for each answer.

Per crate: each function's own instructions (not those of what it calls),
summed by the first path segment of its demangled name (`tokio`, `hyper`,
`artifactapi_layers`, ...); functions without one (libc, the allocator)
count under their object file's name.

--save FILE writes the figures as JSON; --compare FILE prints the change
against a saved run, per workload and per crate.
"""

import argparse
import glob
import hashlib
import http.client
import http.server
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(*args):
    print("==", *args, flush=True)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def origin_tree(root):
    """The origin's files: a 4 KiB file and a simple page listing 60 wheels."""
    rng = random.Random(4096)
    os.makedirs(os.path.join(root, "simple", "demo"))
    with open(os.path.join(root, "small.bin"), "wb") as f:
        f.write(bytes(rng.getrandbits(8) for _ in range(4096)))
    links = []
    for i in range(60):
        name = f"demo-1.{i}.0-py3-none-any.whl"
        digest = hashlib.sha256(name.encode()).hexdigest()
        links.append(f'<a href="/files/{name}#sha256={digest}" data-requires-python="&gt;=3.8">{name}</a><br/>')
    page = "<!DOCTYPE html>\n<html><body>\n<h1>Links for demo</h1>\n" + "\n".join(links) + "\n</body></html>\n"
    with open(os.path.join(root, "simple", "demo", "index.html"), "w") as f:
        f.write(page)


class Quiet(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass


def start_origin(root):
    port = free_port()
    handler = lambda *a, **kw: Quiet(*a, directory=root, **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


def wait_http(url, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                r.read()
                return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def control(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, text=True)


def requests(port, path, n):
    """`n` GETs of `path` on one keep-alive connection; every answer a 200 hit."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(n):
        conn.request("GET", path)
        res = conn.getresponse()
        body = res.read()
        status = res.getheader("x-cache-status")
        if res.status != 200 or status != "HIT":
            raise RuntimeError(f"{path}: {res.status} {status}, not a 200 hit: {body[:200]!r}")
    conn.close()


CRATE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)::")


def crate_of(function, obj):
    name = function.lstrip("<&*_ ")
    # `<impl X for Y>` style names keep the first segment of the first path.
    m = CRATE.search(name)
    if m:
        return m.group(1)
    return f"({os.path.basename(obj) or 'other'})"


def per_function(dump):
    """(object, function) -> own instructions, read from a callgrind dump."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", "--show-percs=no", dump],
                         check=True, capture_output=True, text=True).stdout
    costs = {}
    total = None
    for line in out.splitlines():
        line = line.strip()
        m = re.match(r"^([\d,]+)\s+\(?[^)]*\)?\s*PROGRAM TOTALS", line)
        if m:
            total = int(m.group(1).replace(",", ""))
            continue
        m = re.match(r"^([\d,]+)\s+(\S.*?):(.*)$", line)
        if m and not line.endswith("PROGRAM TOTALS"):
            ir = int(m.group(1).replace(",", ""))
            obj = m.group(2).split(" ")[-1]
            fn = m.group(3).split(" [")[0]
            costs[(obj, fn)] = costs.get((obj, fn), 0) + ir
    if total is None:
        raise RuntimeError(f"no totals in {dump}:\n{out[:2000]}")
    return total, costs


def measure(binary, work, n, warmup):
    files = os.path.join(work, "origin")
    origin_tree(files)
    server, origin = start_origin(files)
    port = free_port()
    yaml = (
        "remotes:\n"
        f'  files:\n    base_url: "http://127.0.0.1:{origin}"\n'
        f'  pypi:\n    base_url: "http://127.0.0.1:{origin}"\n    package: pypi\n'
        f'    pypi_files_url: "http://127.0.0.1:{origin}/files/"\n    pypi_files_remote: files\n'
    )
    with open(os.path.join(work, "remotes.yaml"), "w") as f:
        f.write(yaml)
    env = dict(os.environ, CONFIG_PATH=os.path.join(work, "remotes.yaml"), DATA_DIR=os.path.join(work, "data"),
               LISTEN_ADDR=f"127.0.0.1:{port}", RUST_LOG="warn")
    out_pattern = os.path.join(work, "callgrind.out.%p")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_pattern}", binary, "serve"],
        env=env, stdout=open(os.path.join(work, "proxy.log"), "w"), stderr=subprocess.STDOUT)
    workloads = {"hit_4k": "/api/files/small.bin", "metadata_hit": "/api/pypi/simple/demo/"}
    results = {}
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        for name, path in workloads.items():
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}").read()  # the miss
            deadline = time.monotonic() + 60
            while True:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as r:
                    r.read()
                    if r.headers.get("x-cache-status") == "HIT":
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{path} never became a hit")
                time.sleep(0.2)
            requests(port, path, warmup)
            control(proc.pid, "-i", "on")
            control(proc.pid, "-z")
            requests(port, path, n)
            control(proc.pid, "--dump=" + name)
            control(proc.pid, "-i", "off")
            dumps = sorted(glob.glob(os.path.join(work, f"callgrind.out.{proc.pid}.*")), key=os.path.getmtime)
            total, costs = per_function(dumps[-1])
            crates = {}
            for (obj, fn), ir in costs.items():
                c = crate_of(fn, obj)
                crates[c] = crates.get(c, 0) + ir
            results[name] = {
                "per_request": round(total / n),
                "by_crate": {c: round(ir / n) for c, ir in sorted(crates.items(), key=lambda kv: -kv[1])
                             if ir / n >= 50},
            }
            log(f"{name}: {results[name]['per_request']} instructions per request")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.shutdown()
    return results


def commit():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return "unknown"


def report(results, baseline=None):
    for name, r in results.items():
        print(f"\n{name}: {r['per_request']} instructions per request", end="")
        if baseline and name in baseline["workloads"]:
            before = baseline["workloads"][name]["per_request"]
            print(f" (was {before} at {baseline['commit']}: {100 * (r['per_request'] - before) / before:+.1f} %)",
                  end="")
        print()
        old = baseline["workloads"].get(name, {}).get("by_crate", {}) if baseline else {}
        for crate, ir in list(r["by_crate"].items())[:15]:
            line = f"  {crate:<32} {ir:>8}"
            if crate in old:
                line += f"  ({ir - old[crate]:+d})"
            print(line)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "artifactapi"))
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--save", help="write the figures here as JSON")
    p.add_argument("--compare", help="a file written by --save to compare with")
    args = p.parse_args()
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (bench/callgrind installs valgrind)")
    work = tempfile.mkdtemp(prefix="artifactapi-callgrind-")
    try:
        results = measure(args.binary, work, args.requests, args.warmup)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    saved = {"commit": commit(), "date": time.strftime("%Y-%m-%d"), "requests": args.requests,
             "warmup": args.warmup, "workloads": results}
    baseline = None
    if args.compare:
        with open(args.compare) as f:
            baseline = json.load(f)
    report(results, baseline)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(saved, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
