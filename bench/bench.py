#!/usr/bin/env python3
"""artifactapi side by side with its peers, on this machine, in one run.

Started by bench/run (which installs the peers and builds the release
binary); writes BENCHMARKS.md. Every ratio divides two figures of the same
run. A measure that compares peers runs in rounds, each round measuring every
peer once, and the order of the peers rotates from round to round (the first
of one round goes last in the next), so that neither a noisy neighbour nor what
the previous peer left behind (dirty pages, a warm CPU cache) always falls on
the same side. How each measure was taken (rounds, the order in each round,
median or single figure) and the machine it ran on are stored in the raw
figures, and the report renders them from there, also when it is re-rendered
elsewhere with --report-from.

Peers: nginx proxy_cache (worker_processes auto) in front of the same origin
nginx; the distribution registry (docker-registry) in proxy mode in front of
the same upstream registry; and a direct download from the origin.
"""

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "artifactapi")
MIB = 1024 * 1024


def log(*args):
    print("==", *args, flush=True)


def run(args, **kw):
    """subprocess.run that says what a failed command printed."""
    done = subprocess.run(args, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=60, context=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


class Procs:
    """Every process started, stopped at the end."""

    def __init__(self):
        self.procs = []

    def start(self, args, log_path, env=None, cwd=None):
        out = open(log_path, "ab")
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            try:
                self.stop(p)
            except ProcessLookupError:
                pass


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- servers


def nginx_conf(work, name, port, body, workers="1"):
    d = os.path.join(work, name)
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    conf = f"""
worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    {body}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return d, path


def start_origin(procs, work, files_dir):
    port = free_port()
    d, conf = nginx_conf(work, "origin", port, f"server {{ listen 127.0.0.1:{port}; root {files_dir}; }}")
    procs.start(["nginx", "-c", conf, "-p", d], os.path.join(d, "stdout.log"))
    wait_http(f"http://127.0.0.1:{port}/small.bin")
    return port, os.path.join(d, "access.log")


def start_nginx_cache(procs, work, origin_port, upstream=None, proxy_extra=""):
    upstream = upstream or f"http://127.0.0.1:{origin_port}"
    port = free_port()
    cache = os.path.join(work, "nginx-cache", "store")
    shutil.rmtree(cache, ignore_errors=True)
    body = f"""
    proxy_cache_path {cache} levels=1:2 keys_zone=bench:16m max_size=20g inactive=1d use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {upstream};
            {proxy_extra}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_valid 200 1d;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10m;
            proxy_max_temp_file_size 0;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}"""
    d, conf = nginx_conf(work, "nginx-cache", port, body, workers="auto")
    p = procs.start(["nginx", "-c", conf, "-p", d], os.path.join(d, "stdout.log"))
    wait_http(f"http://127.0.0.1:{port}/small.bin")
    return port, p


class Artifactapi:
    def __init__(self, procs, work, name, yaml, env=None):
        self.dir = os.path.join(work, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, "remotes.yaml"), "w") as f:
            f.write(yaml)
        self.port = free_port()
        e = dict(os.environ)
        e.update(
            {
                "CONFIG_PATH": os.path.join(self.dir, "remotes.yaml"),
                "DATA_DIR": os.path.join(self.dir, "data"),
                "LISTEN_ADDR": f"127.0.0.1:{self.port}",
            }
        )
        e.update(env or {})
        started = time.monotonic()
        self.proc = procs.start([BINARY, "serve"], os.path.join(self.dir, "log"), env=e)
        wait_http(self.url("/health"))
        self.startup_s = time.monotonic() - started
        self.procs = procs

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.procs.stop(self.proc)

    def wait_cached(self, remote, count, timeout=120):
        """Waits until `count` entries of `remote` are committed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(self.url(f"/artifacts/{remote}")) as r:
                if json.load(r).get("count", 0) >= count:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{remote}: {count} entries were never committed")


class Garage:
    def __init__(self, procs, work):
        self.dir = os.path.join(work, "garage")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        rpc, s3, admin = free_port(), free_port(), free_port()
        token = os.urandom(16).hex()
        conf = os.path.join(self.dir, "garage.toml")
        with open(conf, "w") as f:
            f.write(
                f'metadata_dir = "{self.dir}/meta"\ndata_dir = "{self.dir}/data"\ndb_engine = "sqlite"\n'
                f'replication_factor = 1\nrpc_bind_addr = "127.0.0.1:{rpc}"\nrpc_public_addr = "127.0.0.1:{rpc}"\n'
                f'rpc_secret = "{os.urandom(32).hex()}"\n[s3_api]\ns3_region = "us-east-1"\n'
                f'api_bind_addr = "127.0.0.1:{s3}"\nroot_domain = ".s3.garage.localhost"\n'
                f'[admin]\napi_bind_addr = "127.0.0.1:{admin}"\nadmin_token = "{token}"\n'
            )
        os.chmod(conf, 0o600)
        self.access_key = "GK" + os.urandom(12).hex()
        self.secret_key = os.urandom(32).hex()
        env = dict(os.environ, GARAGE_DEFAULT_ACCESS_KEY=self.access_key, GARAGE_DEFAULT_SECRET_KEY=self.secret_key)
        env["RUST_LOG"] = "warn"
        garage = shutil.which("garage") or os.path.expanduser("~/.cargo/bin/garage")
        procs.start([garage, "-c", conf, "server", "--single-node", "--default-access-key"],
                    os.path.join(self.dir, "log"), env=env)
        wait_http(f"http://127.0.0.1:{admin}/health")
        self.endpoint = f"http://127.0.0.1:{s3}"

    def env(self, bucket):
        return {
            "MINIO_ENDPOINT": self.endpoint,
            "MINIO_ACCESS_KEY": self.access_key,
            "MINIO_SECRET_KEY": self.secret_key,
            "MINIO_BUCKET": bucket,
            "MINIO_REGION": "us-east-1",
        }


# ---------------------------------------------------------------- measures


def wrk(url, connections, seconds):
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--timeout", "60s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", out)
    unit = {"B": 1, "KB": 1024, "MB": MIB, "GB": 1024 * MIB}
    bps = float(transfer.group(1)) * unit[transfer.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        raise RuntimeError(f"wrk saw failures on {url}:\n{out}")
    return {"rps": rps, "p99_ms": p99_ms, "bps": bps}


def curl_time(url, extra=()):
    out = subprocess.run(
        ["curl", "-sf", "--noproxy", "*", *extra, "-o", "/dev/null", "-w",
         "%{time_starttransfer} %{time_total} %{size_download}", url],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def count_requests(access_log, path):
    with open(access_log) as f:
        return sum(1 for line in f if f'"GET {path} ' in line)


def median(values):
    return statistics.median(values)


def ratio(a, b):
    return a / b if b else float("nan")


def rotations(peers, rounds):
    """The order of `peers` in each of `rounds` rounds: rotated by one each
    round, so that each peer goes first in turn."""
    return [peers[r % len(peers):] + peers[:r % len(peers)] for r in range(rounds)]


def machine_now(date):
    """What the figures are measured on, stored with them."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu,
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "platform": platform.platform(), "date": date}


# ---------------------------------------------------------------- benchmarks


def hits(results, origin_port, nginx_port, embedded, production, local, rounds, seconds):
    targets = {"nginx": f"http://127.0.0.1:{nginx_port}", "embedded": embedded.url("/api/files"),
               "production": production.url("/api/files") if production else None,
               "local": local.url("/api/files") if local else None}
    for name, base in targets.items():
        if base:
            for f in ("small.bin", "large.bin"):
                subprocess.run(["curl", "-sf", "--noproxy", "*", "-o", "/dev/null", f"{base}/{f}"], check=True)
    for a in (embedded, production, local):
        if a:
            a.wait_cached("files", 2)
    peers = [k for k, v in targets.items() if v]
    small = {k: [] for k in peers}
    large = {k: [] for k in peers}
    orders = rotations(peers, rounds)
    for r, order in enumerate(orders):
        for name in order:
            log(f"hits, 4 KiB, 64 connections: {name} round {r + 1}")
            small[name].append(wrk(f"{targets[name]}/small.bin", 64, seconds))
        for name in order:
            log(f"hits, 100 MiB, 8 connections: {name} round {r + 1}")
            large[name].append(wrk(f"{targets[name]}/large.bin", 8, seconds))
    results["small"] = {k: {"rps": median([x["rps"] for x in v]), "p99_ms": median([x["p99_ms"] for x in v])}
                        for k, v in small.items()}
    results["large"] = {k: {"bps": median([x["bps"] for x in v])} for k, v in large.items()}
    note = (f"wrk for {seconds} s per peer and round, every peer warmed by one request first; in each round the "
            "small hits of every peer, then their large hits, in the same order")
    results["how"]["small"] = {"rounds": rounds, "orders": orders, "stat": "median", "note": note,
                               "per_round": {k: [[x["rps"], x["p99_ms"]] for x in v] for k, v in small.items()}}
    results["how"]["large"] = {"rounds": rounds, "orders": orders, "stat": "median", "note": note,
                               "per_round": {k: [x["bps"] for x in v] for k, v in large.items()}}


def access_log_cost(results, procs, work, origin_port, pairs, seconds):
    """What writing an access line per request costs on hits: the same
    binary and store with `ACCESS_LOG` off and on. The two differ by a few
    per cent, less than single runs on a shared two-core machine spread, so
    they are measured in pairs of short runs, one right after the other,
    alternating which goes first; the figure is the median of the pairs'
    ratios, with its quartiles."""
    yaml = f'remotes:\n  files:\n    base_url: "http://127.0.0.1:{origin_port}"\n'
    log_path = os.path.join(work, "access-log-on", "access.log")
    servers = {"off": Artifactapi(procs, work, "access-log-off", yaml),
               "on": Artifactapi(procs, work, "access-log-on", yaml, {"ACCESS_LOG": log_path})}
    for a in servers.values():
        for f in ("small.bin", "large.bin"):
            subprocess.run(["curl", "-sf", "--noproxy", "*", "-o", "/dev/null", a.url(f"/api/files/{f}")], check=True)
        a.wait_cached("files", 2)
    orders = [["off", "on"] if i % 2 == 0 else ["on", "off"] for i in range(pairs)]
    large_pairs = max(4, pairs // 4)
    small, large = [], []
    for i, order in enumerate(orders):
        got = {}
        for name in order:
            log(f"access log, 4 KiB hits, 64 connections: {name}, pair {i + 1} of {pairs}")
            got[name] = wrk(servers[name].url("/api/files/small.bin"), 64, seconds)
        small.append({k: got[k]["rps"] for k in order})
    for i, order in enumerate(orders[:large_pairs]):
        got = {}
        for name in order:
            log(f"access log, 100 MiB hits, 8 connections: {name}, pair {i + 1} of {large_pairs}")
            got[name] = wrk(servers[name].url("/api/files/large.bin"), 8, seconds)
        large.append({k: got[k]["bps"] for k in order})
    for a in servers.values():
        a.stop()
    # The log was really on: one line per request, flushed at shutdown.
    with open(log_path) as f:
        lines = sum(1 for line in f if '"GET /api/files/' in line)

    def summary(measures):
        ratios = sorted(m["on"] / m["off"] for m in measures)
        q1, q2, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        return {"ratio": q2, "q1": q1, "q3": q3, "off": median([m["off"] for m in measures]),
                "on": median([m["on"] for m in measures]), "pairs": measures}

    results["access_log"] = {"small": summary(small), "large": summary(large), "log_lines": lines,
                             "seconds": seconds}
    results["how"]["access_log"] = {
        "rounds": pairs, "orders": orders, "stat": "median of the pairs' ratios", "paired": True,
        "large_pairs": large_pairs,
        "note": f"the same binary and embedded store twice, `ACCESS_LOG` off and on (a file), each warmed by one "
                f"request; wrk for {seconds} s per run, the two runs of a pair one right after the other, "
                f"alternating which went first; {pairs} pairs of 4 KiB runs, then {large_pairs} pairs of 100 MiB "
                f"runs; the log held {lines:,} request lines at the end"}


def cold_miss(results, procs, work, origin_port, rounds):
    """A 1 GiB download straight from the origin, through a new artifactapi
    (empty cache) and through nginx proxy_cache (empty cache), the three in
    rotating order. Each proxy is started, and the page cache flushed, before
    the clock starts, so that no peer pays for what the one before it wrote."""
    yaml = f'remotes:\n  files:\n    base_url: "http://127.0.0.1:{origin_port}"\n'
    peers = ["direct", "artifactapi", "nginx"]
    total = {p: [] for p in peers}
    ttfb = {"direct": [], "artifactapi": []}
    peaks = []

    def timed(url):
        os.sync()
        t0, t1, n = curl_time(url)
        assert n == 1024 * MIB, f"{url}: {n} bytes"
        return t0, t1

    def direct():
        return timed(f"http://127.0.0.1:{origin_port}/huge.bin")

    def artifactapi():
        a = Artifactapi(procs, work, "cold", yaml)
        try:
            t = timed(a.url("/api/files/huge.bin"))
            peaks.append(rss_kib(a.proc.pid, "VmHWM"))
        finally:
            a.stop()
        return t

    def nginx():
        # A fresh cache; the small file answers its readiness probe.
        port, p = start_nginx_cache(procs, work, origin_port)
        try:
            return timed(f"http://127.0.0.1:{port}/huge.bin")
        finally:
            procs.stop(p)

    measure = {"direct": direct, "artifactapi": artifactapi, "nginx": nginx}
    orders = rotations(peers, rounds)
    for r, order in enumerate(orders):
        for peer in order:
            log(f"cold miss, 1 GiB: round {r + 1}: {peer}")
            t0, t1 = measure[peer]()
            total[peer].append(t1)
            if peer in ttfb:
                ttfb[peer].append(t0)
    results["cold"] = {
        "direct_s": median(total["direct"]), "proxied_s": median(total["artifactapi"]),
        "ttfb_direct_ms": median(ttfb["direct"]) * 1e3, "ttfb_proxied_ms": median(ttfb["artifactapi"]) * 1e3,
        "peak_rss_mib": max(peaks) / 1024, "nginx_s": median(total["nginx"]),
    }
    results["how"]["cold"] = {
        "rounds": rounds, "orders": orders, "stat": "median", "stats": {"peak_rss_mib": "largest"},
        "note": "a new artifactapi and an empty nginx cache in every round, started before the clock; "
                "the page cache flushed (sync) before each download",
        "per_round": {"total_s": total, "ttfb_s": ttfb, "peak_rss_kib": peaks},
    }


def make_tls(work):
    """A CA and a certificate for 127.0.0.1 and localhost from it, made
    here for this run; answers their directory."""
    d = os.path.join(work, "tls")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    script = """
set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj /CN=localhost
printf 'basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\nextendedKeyUsage=serverAuth\\nsubjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext
"""
    subprocess.run(["bash", "-c", script], cwd=d, check=True, capture_output=True)
    return d


def tls_cold_miss(results, procs, work, files_dir, rounds):
    """A 1 GiB cold miss from an HTTPS origin (nginx, a certificate from a
    CA made for the run) through a new artifactapi trusting that CA
    (`tls.ca_file`) and through nginx proxy_cache with an empty cache
    verifying it (`proxy_ssl_verify on`), each `rounds` times in rotating
    order, with the download straight from the origin for reference."""
    tls = make_tls(work)
    ca = os.path.join(tls, "ca.pem")
    port = free_port()
    d, conf = nginx_conf(work, "tls-origin", port, f"""server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {tls}/server.pem; ssl_certificate_key {tls}/server.key;
        root {files_dir};
    }}""")
    origin = procs.start(["nginx", "-c", conf, "-p", d], os.path.join(d, "stdout.log"))
    import ssl
    wait_http(f"https://127.0.0.1:{port}/small.bin", context=ssl.create_default_context(cafile=ca))
    yaml = (f'remotes:\n  files:\n    base_url: "https://127.0.0.1:{port}"\n'
            f'    tls:\n      ca_file: "{ca}"\n')
    peers = ["direct", "artifactapi", "nginx"]
    total = {p: [] for p in peers}

    def timed(url, extra=()):
        os.sync()
        t0, t1, n = curl_time(url, extra)
        assert n == 1024 * MIB, f"{url}: {n} bytes"
        return t1

    def direct():
        return timed(f"https://127.0.0.1:{port}/huge.bin", ("--cacert", ca))

    def artifactapi():
        a = Artifactapi(procs, work, "tls-cold", yaml)
        try:
            return timed(a.url("/api/files/huge.bin"))
        finally:
            a.stop()

    def nginx():
        extra = (f"proxy_ssl_trusted_certificate {ca}; proxy_ssl_verify on; proxy_ssl_name localhost; "
                 "proxy_ssl_server_name on;")
        cache_port, p = start_nginx_cache(procs, work, port, upstream=f"https://127.0.0.1:{port}",
                                          proxy_extra=extra)
        try:
            return timed(f"http://127.0.0.1:{cache_port}/huge.bin")
        finally:
            procs.stop(p)

    measure = {"direct": direct, "artifactapi": artifactapi, "nginx": nginx}
    orders = rotations(peers, rounds)
    try:
        for r, order in enumerate(orders):
            for peer in order:
                log(f"cold miss over TLS, 1 GiB: round {r + 1}: {peer}")
                total[peer].append(measure[peer]())
    finally:
        procs.stop(origin)
    results["tls"] = {"direct_s": median(total["direct"]), "proxied_s": median(total["artifactapi"]),
                      "nginx_s": median(total["nginx"])}
    results["how"]["tls"] = {
        "rounds": rounds, "orders": orders, "stat": "median",
        "note": "HTTPS origin (nginx, ECDSA P-256 certificate from a CA made for the run); a new artifactapi "
                "(`tls.ca_file`) and an empty nginx cache (`proxy_ssl_verify on`) in every round; the page cache "
                "flushed (sync) before each download",
        "per_round": {"total_s": total},
    }


def cold_burst(results, procs, work, origin_port, origin_log, clients, rounds):
    """One 100 MiB artifact asked for by `clients` clients at once, through a
    new artifactapi and through nginx proxy_cache with an empty cache, and by
    one client alone through a new artifactapi: each `rounds` times, the three
    in rotating order."""
    yaml = f'remotes:\n  files:\n    base_url: "http://127.0.0.1:{origin_port}"\n'
    expected = hashlib.sha256(open(os.path.join(work, "files", "large.bin"), "rb").read()).hexdigest()

    def fetch_all(url, n):
        procs_ = [subprocess.Popen(["sh", "-c", f"curl -sf --noproxy '*' '{url}' | sha256sum"],
                                   stdout=subprocess.PIPE, text=True) for _ in range(n)]
        digests = [p.communicate()[0].split()[0] for p in procs_]
        return digests

    def measure(peer):
        if peer == "nginx":
            port, p = start_nginx_cache(procs, work, origin_port)
            url, stop = f"http://127.0.0.1:{port}/large.bin", lambda: procs.stop(p)
        else:
            a = Artifactapi(procs, work, "burst-one" if peer == "artifactapi alone" else "burst", yaml)
            url, stop = a.url("/api/files/large.bin"), a.stop
        n = 1 if peer == "artifactapi alone" else clients
        try:
            os.sync()
            before = count_requests(origin_log, "/large.bin")
            started = time.monotonic()
            digests = fetch_all(url, n)
            elapsed = time.monotonic() - started
            upstream = count_requests(origin_log, "/large.bin") - before
        finally:
            stop()
        return elapsed, upstream, len(digests) == n and all(d == expected for d in digests)

    peers = ["artifactapi alone", "artifactapi", "nginx"]
    runs = {p: {"s": [], "upstream_requests": [], "identical": []} for p in peers}
    orders = rotations(peers, rounds)
    for r, order in enumerate(orders):
        for peer in order:
            log(f"cold burst: round {r + 1}: {peer} ({1 if peer == 'artifactapi alone' else clients} client(s))")
            elapsed, upstream, identical = measure(peer)
            if peer == "artifactapi alone":
                assert identical, "the single client's body is wrong"
            runs[peer]["s"].append(elapsed)
            runs[peer]["upstream_requests"].append(upstream)
            runs[peer]["identical"].append(identical)
    a, n = runs["artifactapi"], runs["nginx"]
    results["burst"] = {
        "nginx_s": median(n["s"]), "nginx_upstream_requests": max(n["upstream_requests"]),
        "nginx_identical": all(n["identical"]),
        "clients": clients, "upstream_requests": max(a["upstream_requests"]),
        "identical": all(a["identical"]), "alone_s": median(runs["artifactapi alone"]["s"]),
        "burst_s": median(a["s"]),
    }
    results["how"]["burst"] = {
        "rounds": rounds, "orders": orders, "stat": "median",
        "stats": {"upstream_requests": "largest", "identical": "every round"},
        "note": "a new artifactapi, or nginx with an empty cache, for every measure, started before the clock; "
                "the page cache flushed (sync) before each",
        "per_round": runs,
    }


def idle(results, procs, work, origin_port):
    yaml = f'remotes:\n  files:\n    base_url: "http://127.0.0.1:{origin_port}"\n'
    starts, rss = [], []
    for r in range(3):
        a = Artifactapi(procs, work, "idle", yaml)
        time.sleep(2)
        starts.append(a.startup_s)
        rss.append(rss_kib(a.proc.pid))
        a.stop()
    results["idle"] = {"startup_ms": median(starts) * 1e3, "rss_mib": median(rss) / 1024}
    results["how"]["idle"] = {"rounds": 3, "orders": [["artifactapi"]] * 3, "stat": "median",
                              "note": "a new instance each time, RSS read 2 s after `/health` answered",
                              "per_round": {"startup_s": starts, "rss_kib": rss}}


def images(results, procs, work, layers, layer_mib, rounds):
    reg_dir = os.path.join(work, "registry")
    shutil.rmtree(reg_dir, ignore_errors=True)
    os.makedirs(reg_dir)

    def registry(name, extra=""):
        port = free_port()
        d = os.path.join(reg_dir, name)
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "config.yml")
        with open(conf, "w") as f:
            f.write(
                f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n"
                f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}"
            )
        p = procs.start(["docker-registry", "serve", conf], os.path.join(d, "log"))
        wait_http(f"http://127.0.0.1:{port}/v2/")
        return port, p

    log(f"images: building a {layers}-layer image of {layers * layer_mib} MiB")
    layout = os.path.join(reg_dir, "layout")
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fixtures", "make_oci.py"), layout, "v1",
                    "--layers", str(layers), "--layer-size", str(layer_mib * MIB), "--seed", "bench"],
                   check=True, capture_output=True)
    upstream_port, _ = registry("upstream")
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:v1",
                    f"docker://127.0.0.1:{upstream_port}/bench/app:v1"], check=True)

    def copy(src):
        out = tempfile.mkdtemp(dir=reg_dir)
        started = time.monotonic()
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", src, f"dir:{out}"], check=True)
        elapsed = time.monotonic() - started
        shutil.rmtree(out)
        return elapsed

    times = {k: [] for k in ("direct", "distribution_cold", "distribution_warm", "artifactapi_cold", "artifactapi_warm")}
    yaml = f'remotes:\n  hub:\n    base_url: "http://127.0.0.1:{upstream_port}"\n    package: docker\n'

    def direct(r):
        times["direct"].append(copy(f"docker://127.0.0.1:{upstream_port}/bench/app:v1"))

    def distribution(r):
        shutil.rmtree(os.path.join(reg_dir, f"proxy{r}"), ignore_errors=True)
        proxy_port, proxy = registry(f"proxy{r}", f"proxy:\n  remoteurl: http://127.0.0.1:{upstream_port}\n")
        try:
            times["distribution_cold"].append(copy(f"docker://127.0.0.1:{proxy_port}/bench/app:v1"))
            time.sleep(2)  # distribution stores blobs in the background
            times["distribution_warm"].append(copy(f"docker://127.0.0.1:{proxy_port}/bench/app:v1"))
        finally:
            procs.stop(proxy)

    def artifactapi(r):
        a = Artifactapi(procs, work, "images", yaml)
        try:
            times["artifactapi_cold"].append(copy(f"docker://127.0.0.1:{a.port}/hub/bench/app:v1"))
            time.sleep(1)
            times["artifactapi_warm"].append(copy(f"docker://127.0.0.1:{a.port}/hub/bench/app:v1"))
        finally:
            a.stop()

    measure = {"direct": direct, "distribution": distribution, "artifactapi": artifactapi}
    orders = rotations(["direct", "distribution", "artifactapi"], rounds)
    for r, order in enumerate(orders):
        for peer in order:
            log(f"images: round {r + 1}: {peer}")
            measure[peer](r)
    results["images"] = {k: median(v) for k, v in times.items()}
    results["images"]["mib"] = layers * layer_mib
    results["how"]["images"] = {
        "rounds": rounds, "orders": orders, "stat": "median",
        "note": "a new distribution proxy and a new artifactapi in every round, each warm copy right after its "
                "cold one",
        "per_round": times,
    }


def packages(results, procs, work, rounds, count=20):
    """uv pip install of `count` generated wheels (from pypiserver) and npm ci
    of `count` generated packages (from verdaccio), warm, through artifactapi
    and straight from the upstream. The packages are made here, so nothing is
    downloaded from a public index."""
    venv = os.environ.get("ARTIFACTAPI_TEST_VENV", os.path.expanduser("~/.cache/artifactapi/test-venv"))
    verdaccio_dir = os.environ.get("ARTIFACTAPI_TEST_VERDACCIO", os.path.expanduser("~/.cache/artifactapi/verdaccio"))
    d = os.path.join(work, "packages")
    shutil.rmtree(d, ignore_errors=True)
    wheels = os.path.join(d, "wheels")
    os.makedirs(wheels)
    names = [f"benchpkg{i:02d}" for i in range(count)]
    for i, name in enumerate(names):
        requires = [f"{names[i + 1]}>=1"] if i + 1 < count and i % 4 != 3 else []
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fixtures", "make_wheel.py"), wheels, name, "1.0",
                        *requires], check=True, capture_output=True)
    pypi_port = free_port()
    procs.start([os.path.join(venv, "bin", "pypi-server"), "run", "-i", "127.0.0.1", "-p", str(pypi_port), "-a", ".",
                 "-P", ".", "--disable-fallback", "--server", "paste", "--hash-algo", "sha256", wheels],
                os.path.join(d, "pypiserver.log"))
    wait_http(f"http://127.0.0.1:{pypi_port}/simple/")

    root = os.path.join(d, "npm")
    os.makedirs(root)
    verdaccio_port = free_port()
    with open(os.path.join(root, "verdaccio.yaml"), "w") as f:
        f.write(f"storage: {root}/storage\nauth:\n  htpasswd:\n    file: {root}/htpasswd\nuplinks: {{}}\n"
                "packages:\n  '**':\n    access: $all\n    publish: $all\nmiddlewares:\n  audit:\n    enabled: false\n"
                "web:\n  enable: false\nlog: { type: stdout, format: pretty, level: warn }\n")
    procs.start([os.path.join(verdaccio_dir, "node_modules", ".bin", "verdaccio"), "--config",
                 os.path.join(root, "verdaccio.yaml"), "--listen", f"127.0.0.1:{verdaccio_port}"],
                os.path.join(root, "verdaccio.log"))
    wait_http(f"http://127.0.0.1:{verdaccio_port}/-/ping")

    def npm(registry, args, cwd, cache):
        rc = os.path.join(root, "npmrc")
        host = registry.split("://", 1)[1].rstrip("/")
        with open(rc, "w") as f:
            f.write(f"registry={registry}\n//{host}/:_authToken=bench\nomit-lockfile-registry-resolved=true\n")
        env = dict(os.environ, NO_PROXY="*")
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "npm_config_registry"):
            env.pop(k, None)
        run(["npm", *args, "--userconfig", rc, "--globalconfig", os.path.join(root, "global-npmrc"),
                        "--registry", registry, "--cache", cache, "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=cwd, env=env)

    open(os.path.join(root, "global-npmrc"), "w").close()
    direct_npm = f"http://127.0.0.1:{verdaccio_port}/"
    for i, name in enumerate(names):
        src = os.path.join(root, "src", name)
        os.makedirs(src)
        deps = {names[i + 1]: "^1.0.0"} if i + 1 < count and i % 4 != 3 else {}
        with open(os.path.join(src, "package.json"), "w") as f:
            json.dump({"name": name, "version": "1.0.0", "main": "index.js", "dependencies": deps}, f)
        with open(os.path.join(src, "index.js"), "w") as f:
            f.write(f"module.exports = {json.dumps(name)};\n// " + os.urandom(60000).hex() + "\n")
        npm(direct_npm, ["publish", "--ignore-scripts", "--provenance=false"], src, os.path.join(root, "cache-publish"))
    app = os.path.join(root, "app")
    os.makedirs(app)
    with open(os.path.join(app, "package.json"), "w") as f:
        json.dump({"name": "bench-app", "version": "1.0.0", "private": True,
                   "dependencies": {n: "^1.0.0" for n in names}}, f)
    npm(direct_npm, ["install", "--package-lock-only"], app, os.path.join(root, "cache-lock"))

    yaml = (f'remotes:\n  pypi:\n    base_url: "http://127.0.0.1:{pypi_port}"\n    package: pypi\n'
            f'  npm:\n    base_url: "http://127.0.0.1:{verdaccio_port}"\n    package: npm\n')
    a = Artifactapi(procs, work, "packages-proxy", yaml)

    def uv(index):
        target = tempfile.mkdtemp(dir=d)
        home = tempfile.mkdtemp(dir=d)
        env = dict(os.environ, HOME=home, UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never", NO_PROXY="*",
                   PIP_FIND_LINKS="", PIP_CONFIG_FILE="/dev/null")
        started = time.monotonic()
        run([os.path.join(venv, "bin", "uv"), "pip", "install", "--no-cache", "--python",
                        os.path.join(venv, "bin", "python"), "--index-url", index, "--target", target, *names],
                       env=env)
        elapsed = time.monotonic() - started
        shutil.rmtree(target)
        shutil.rmtree(home)
        return elapsed

    def npm_ci(registry):
        cache = tempfile.mkdtemp(dir=d)
        shutil.rmtree(os.path.join(app, "node_modules"), ignore_errors=True)
        started = time.monotonic()
        npm(registry, ["ci", "--prefer-online"], app, cache)
        elapsed = time.monotonic() - started
        shutil.rmtree(cache)
        return elapsed

    proxied_pypi = a.url("/api/pypi/simple/")
    proxied_npm = a.url("/api/npm/")
    uv(proxied_pypi)  # warm
    npm_ci(proxied_npm)
    time.sleep(1)
    times = {"uv_direct": [], "uv_artifactapi": [], "npm_direct": [], "npm_artifactapi": []}
    installs = {"uv_direct": lambda: uv(f"http://127.0.0.1:{pypi_port}/simple/"),
                "uv_artifactapi": lambda: uv(proxied_pypi),
                "npm_direct": lambda: npm_ci(direct_npm), "npm_artifactapi": lambda: npm_ci(proxied_npm)}
    orders = rotations(["direct", "artifactapi"], rounds)
    for r, order in enumerate(orders):
        log(f"package installs: round {r + 1}: {' then '.join(order)}")
        for tool in ("uv", "npm"):
            for peer in order:
                times[f"{tool}_{peer}"].append(installs[f"{tool}_{peer}"]())
    a.stop()
    results["packages"] = {k: median(v) for k, v in times.items()}
    results["packages"]["count"] = count
    results["how"]["packages"] = {
        "rounds": rounds, "orders": orders, "stat": "median",
        "note": "warm: artifactapi filled by one install of each kind before the rounds; in each round the uv pair, "
                "then the npm pair, in the order given; no client cache",
        "per_round": times,
    }


# ---------------------------------------------------------------- report


def legacy_how(results):
    """How figures without a stored "how" were measured: what bench.py did
    before it stored it (up to 2026-12-01). Each peer measured in the same
    order in every round; the cold burst once per peer, artifactapi first."""
    n = results.get("rounds")

    def same(peers, note, rounds=n, stat="median", stats=None):
        return {"rounds": rounds, "orders": [list(peers)] * (rounds or 1), "stat": stat, "stats": stats or {},
                "note": note, "inferred": True}

    hits_peers = ["nginx", "embedded"] + (["production"] if "production" in results.get("small", {}) else [])
    hits_note = ("wrk for --seconds (not recorded; 10 s by default) per peer and round, every peer warmed by one "
                 "request first; in each round the small hits of every peer, then their large hits")
    return {
        "small": same(hits_peers, hits_note),
        "large": same(hits_peers, hits_note),
        "cold": same(["direct", "artifactapi", "nginx"],
                     "a new artifactapi and an empty nginx cache in every round; nothing flushed between downloads",
                     stats={"peak_rss_mib": "largest"}),
        "burst": same(["artifactapi alone", "artifactapi", "nginx"],
                      "measured once per peer, in this order: a new artifactapi for the one client, another "
                      "for the burst, then nginx with an empty cache; nothing flushed between them",
                      rounds=1, stat="single"),
        "idle": same(["artifactapi"], "a new instance each time, RSS read 2 s after `/health` answered", rounds=3),
        "images": same(["direct", "distribution", "artifactapi"],
                       "a new distribution proxy and a new artifactapi in every round, each warm copy right after "
                       "its cold one"),
        "packages": same(["direct", "artifactapi"],
                         "warm: artifactapi filled by one install of each kind before the rounds; in each round uv "
                         "direct, uv through artifactapi, npm direct, npm through artifactapi; no client cache"),
    }


def how_text(h, field=None):
    """A row's "measured" cell: rounds, the order of the peers, the statistic."""
    if not h:
        return "not recorded"
    n = h.get("rounds")
    if h.get("paired"):
        n = h.get("large_pairs", n) if field == "large" else n
        return f"{n} pairs, alternating which went first; median of the pairs' ratios"
    orders = h.get("orders") or []
    peers = orders[0] if orders else []
    stat = (h.get("stats") or {}).get(field, h.get("stat", "median"))
    if n == 1:
        return "once" if len(peers) < 2 else "once per peer, in the order " + " → ".join(peers)
    text = f"{n} rounds" if n else "rounds not recorded"
    if len(peers) > 1:
        if all(o == peers for o in orders):
            text += ", same order in each: " + " → ".join(peers)
        else:
            text += ", first in turn: " + ", ".join(o[0] for o in orders)
    words = {"median": "; median", "largest": "; largest", "every round": "; in every round"}
    return text + words.get(stat, f"; {stat}")


def machine_text(m):
    if not m:
        return "unknown (not stored with these figures)"
    text = f"{m.get('cores', '?')} cores" + (f" ({m['cpu']})" if m.get("cpu") else "")
    text += f", {m.get('memory_gib', '?')} GiB, {m.get('platform', '?')}"
    if m.get("source"):
        text += f" ({m['source']})"
    return text


def machine_from_header(text):
    """The machine as the header of a page rendered before bench.py stored it
    with the figures stated it (that header was written by the run itself)."""
    m = re.search(r"^Generated by `bench/run` on ([^.]*)\. Machine: (\d+) cores, (\d+) GiB, ([^;\n]+);", text, re.M)
    if not m:
        return None
    return {"date": m.group(1), "cores": int(m.group(2)), "memory_gib": int(m.group(3)), "platform": m.group(4),
            "source": "as the page's former header gave it; bench.py did not yet store the machine with the figures"}


SCALE_START = "<!-- scale:start -->"
SCALE_END = "<!-- scale:end -->"


def report(results, out, args):
    def check(value, target, better):
        if value != value:  # NaN
            return "–"
        ok = value >= target if better == "higher" else value <= target
        return "met" if ok else "**missed**"

    if not results.get("how"):
        results["how"] = legacy_how(results)
    how = results["how"]
    lines = []
    w = lines.append

    def row(text, section, field=None):
        w(f"{text} {how_text(how.get(section), field)} |")

    w("# Benchmarks")
    w("")
    measured = results.get("generated") or "an unknown date"
    w(f"Measured by `bench/run` on {measured}. Machine: {machine_text(results.get('machine'))}; everything on "
      "loopback, the load generator on the same cores. Each ratio is the artifactapi figure over the peer figure "
      "on its row, both from that run. The last column says how the row was measured: the number of rounds (a "
      "round measures each peer once), the order of the peers within a round (\"first in turn\": the order "
      "rotated by one from round to round, and these peers went first), and whether the figure is the median of "
      "the rounds, the largest, or a single measure. The notes under the table say what was fresh for each "
      "measure.")
    if any(h.get("inferred") for h in how.values()):
        w("")
        w("These figures were measured before bench.py stored how it measured them; the last column and the notes "
          "give what bench.py did at the time, with each peer in the same order in every round and the cold burst "
          "measured once.")
    if any(h.get("measured_on") for h in how.values()):
        w("")
        w("`bench/run --update` measured only some sections on that date; the others keep the figures of an "
          "earlier run, and their notes below say which.")
    if args.report_from:
        w("")
        w("Rendered with `bench.py --report-from` from the raw figures at the end of this page; the figures, the "
          "date and the machine are those of the run.")
    w("")
    w("| # | measure | artifactapi | peer | ratio | target | | measured |")
    w("|---|---|---|---|---|---|---|---|")
    if "small" in results:
        s, l = results["small"], results["large"]
        r1 = ratio(s["embedded"]["rps"], s["nginx"]["rps"])
        row(f"| 1 | hits, 4 KiB, 64 connections: requests/s (p99) | embedded {s['embedded']['rps']:,.0f} "
            f"({s['embedded']['p99_ms']:.2f} ms) | nginx proxy_cache {s['nginx']['rps']:,.0f} "
            f"({s['nginx']['p99_ms']:.2f} ms) | {r1:.2f}× | ≥ 1.0× | {check(r1, 1.0, 'higher')} |", "small")
        if "production" in s:
            r = ratio(s["production"]["rps"], s["nginx"]["rps"])
            row(f"| 1 | … S3 + PostgreSQL + Redis | {s['production']['rps']:,.0f} ({s['production']['p99_ms']:.2f} ms) "
                f"| nginx {s['nginx']['rps']:,.0f} | {r:.2f}× | – | |", "small")
        r2 = ratio(l["embedded"]["bps"], l["nginx"]["bps"])
        row(f"| 2 | hits, 100 MiB, 8 connections: throughput | embedded {l['embedded']['bps'] / MIB:,.0f} MiB/s "
            f"| nginx {l['nginx']['bps'] / MIB:,.0f} MiB/s | {r2:.2f}× | ≥ 0.9× | {check(r2, 0.9, 'higher')} |",
            "large")
        if "production" in l:
            r = ratio(l["production"]["bps"], l["nginx"]["bps"])
            row(f"| 2 | … S3 + PostgreSQL + Redis | {l['production']['bps'] / MIB:,.0f} MiB/s "
                f"| nginx {l['nginx']['bps'] / MIB:,.0f} MiB/s | {r:.2f}× | – | |", "large")
        if "access_log" in l and "access_log" not in results:
            ra = ratio(s["access_log"]["rps"], s["embedded"]["rps"])
            row(f"| 1 | … 4 KiB hits with `ACCESS_LOG` on (a file) | {s['access_log']['rps']:,.0f} "
                f"({s['access_log']['p99_ms']:.2f} ms) | embedded without it {s['embedded']['rps']:,.0f} | {ra:.2f}× "
                f"| ≥ 0.95× | {check(ra, 0.95, 'higher')} |", "small")
            rl = ratio(l["access_log"]["bps"], l["embedded"]["bps"])
            row(f"| 2 | … 100 MiB hits with `ACCESS_LOG` on | {l['access_log']['bps'] / MIB:,.0f} MiB/s "
                f"| embedded without it {l['embedded']['bps'] / MIB:,.0f} MiB/s | {rl:.2f}× | ≥ 0.95× "
                f"| {check(rl, 0.95, 'higher')} |", "large")
        if "local" in l:
            r = ratio(l["local"]["bps"], l["embedded"]["bps"])
            row(f"| 2 | … S3 + PostgreSQL + Redis with the local disk tier (`CACHE_LOCAL_DIR`) "
                f"| {l['local']['bps'] / MIB:,.0f} MiB/s | embedded {l['embedded']['bps'] / MIB:,.0f} MiB/s "
                f"| {r:.2f}× | ≥ 0.8× | {check(r, 0.8, 'higher')} |", "large")
            rs = ratio(s["local"]["rps"], s["production"]["rps"])
            row(f"| 1 | … 4 KiB hits with the local disk tier | {s['local']['rps']:,.0f} ({s['local']['p99_ms']:.2f} ms) "
                f"| S3 + PostgreSQL + Redis without it {s['production']['rps']:,.0f} | {rs:.2f}× "
                f"| ≥ 0.9× (unchanged) | {check(rs, 0.9, 'higher')} |", "small")
    if "access_log" in results:
        a = results["access_log"]
        sm, lg = a["small"], a["large"]
        row(f"| 1 | … 4 KiB hits with `ACCESS_LOG` on (a file), paired with the same binary without it "
            f"| {sm['on']:,.0f} | without it {sm['off']:,.0f} | {sm['ratio']:.2f}× "
            f"(quartiles {sm['q1']:.2f}–{sm['q3']:.2f}) | ≥ 0.95× | {check(sm['ratio'], 0.95, 'higher')} |",
            "access_log")
        row(f"| 2 | … 100 MiB hits with `ACCESS_LOG` on, paired | {lg['on'] / MIB:,.0f} MiB/s "
            f"| without it {lg['off'] / MIB:,.0f} MiB/s | {lg['ratio']:.2f}× "
            f"(quartiles {lg['q1']:.2f}–{lg['q3']:.2f}) | ≥ 0.95× | {check(lg['ratio'], 0.95, 'higher')} |",
            "access_log", "large")
    if "cold" in results:
        c = results["cold"]
        r3 = ratio(c["proxied_s"], c["direct_s"])
        row(f"| 3 | cold miss, 1 GiB: total time (first byte) | {c['proxied_s']:.2f} s ({c['ttfb_proxied_ms']:.1f} ms) "
            f"| direct {c['direct_s']:.2f} s ({c['ttfb_direct_ms']:.1f} ms) | {r3:.2f}× | ≤ 1.1× "
            f"| {check(r3, 1.1, 'lower')} |", "cold")
        row(f"| 3 | … the same cold miss through nginx proxy_cache | {c['proxied_s']:.2f} s "
            f"| nginx {c['nginx_s']:.2f} s "
            f"| {ratio(c['proxied_s'], c['nginx_s']):.2f}× | – | |", "cold")
        row(f"| 3 | cold miss, 1 GiB: peak RSS of the proxy | {c['peak_rss_mib']:.1f} MiB | – | – | < 64 MiB "
            f"| {check(c['peak_rss_mib'], 64, 'lower')} |", "cold", "peak_rss_mib")
    if "tls" in results:
        t = results["tls"]
        row(f"| 3 | cold miss, 1 GiB, from an HTTPS upstream with a private CA: total time | {t['proxied_s']:.2f} s "
            f"| nginx proxy_cache {t['nginx_s']:.2f} s (direct {t['direct_s']:.2f} s) "
            f"| {ratio(t['proxied_s'], t['nginx_s']):.2f}× | – | |", "tls")
    if "burst" in results:
        b = results["burst"]
        r4 = ratio(b["burst_s"], b["alone_s"])
        row(f"| 4 | cold burst, {b['clients']} clients, one 100 MiB artifact: upstream requests "
            f"| {b['upstream_requests']} | – | – | 1 | {'met' if b['upstream_requests'] == 1 else '**missed**'} |",
            "burst", "upstream_requests")
        row(f"| 4 | … all bodies identical (sha256) | {'yes' if b['identical'] else '**no**'} | – | – | yes | "
            f"{'met' if b['identical'] else '**missed**'} |", "burst", "identical")
        row(f"| 4 | … completion, all clients vs one alone | {b['burst_s']:.2f} s | {b['alone_s']:.2f} s "
            f"| {r4:.2f}× | – | |", "burst")
        row(f"| 4 | … completion vs nginx proxy_cache (proxy_cache_lock on; {b['nginx_upstream_requests']} upstream "
            f"request(s)) | {b['burst_s']:.2f} s | nginx {b['nginx_s']:.2f} s "
            f"| {ratio(b['burst_s'], b['nginx_s']):.2f}× "
            f"| – | |", "burst")
    if "images" in results:
        im = results["images"]
        rw = ratio(im["artifactapi_warm"], im["distribution_warm"])
        rc = ratio(im["artifactapi_cold"], im["direct"])
        row(f"| 5 | skopeo copy, {im['mib']} MiB image, warm | {im['artifactapi_warm']:.2f} s "
            f"| distribution proxy {im['distribution_warm']:.2f} s | {rw:.2f}× | ≤ 1.0× | {check(rw, 1.0, 'lower')} |",
            "images")
        row(f"| 5 | … cold | {im['artifactapi_cold']:.2f} s | direct {im['direct']:.2f} s "
            f"(distribution proxy cold {im['distribution_cold']:.2f} s) | {rc:.2f}× | ≤ 1.1× "
            f"| {check(rc, 1.1, 'lower')} |", "images")
    if "packages" in results:
        pk = results["packages"]
        row(f"| 6 | uv pip install, {pk['count']} packages, warm | {pk['uv_artifactapi']:.2f} s "
            f"| direct from pypiserver {pk['uv_direct']:.2f} s | {ratio(pk['uv_artifactapi'], pk['uv_direct']):.2f}× "
            f"| – | |", "packages")
        row(f"| 6 | npm ci, {pk['count']} packages, warm | {pk['npm_artifactapi']:.2f} s "
            f"| direct from verdaccio {pk['npm_direct']:.2f} s | {ratio(pk['npm_artifactapi'], pk['npm_direct']):.2f}× "
            f"| – | |", "packages")
    if "idle" in results:
        i = results["idle"]
        row(f"| 7 | idle: RSS, start-up to `/health` | {i['rss_mib']:.1f} MiB, {i['startup_ms']:.0f} ms "
            "| – | – | – | |",
            "idle")
    for name, error in results["errors"].items():
        w(f"| – | {name}: **failed** | {error.splitlines()[0][:200]} | | | | | |")
    notes = [(num, how.get(key) or how.get(alt)) for num, key, alt in
             (("1–2", "small", "large"), ("1–2 (access log)", "access_log", None), ("3", "cold", None), ("3 (TLS)", "tls", None), ("4", "burst", None), ("5", "images", None),
              ("6", "packages", None), ("7", "idle", None))]
    notes = [(num, h["note"]) for num, h in notes if h and h.get("note")]
    if notes:
        w("")
        w("What was fresh, and what ran in which order, per measure:")
        w("")
        for num, note in notes:
            w(f"- {num}: {note}.")
    analysis = os.path.join(ROOT, "bench", "analysis.md")
    if os.path.exists(analysis):
        w("")
        with open(analysis) as f:
            w(f.read().rstrip())
    w("")
    w("Raw figures (JSON):")
    w("")
    w("```json")
    w(json.dumps(results, indent=1, sort_keys=True))
    w("```")
    # The scale bench's part (bench/scale) is its own to regenerate: kept.
    kept = ""
    if os.path.exists(out):
        old = open(out).read()
        start, end = old.find(SCALE_START), old.find(SCALE_END)
        if 0 <= start < end:
            kept = "\n" + old[start:end + len(SCALE_END)] + "\n"
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n" + kept)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.environ.get("BENCH_DIR", "/tmp/artifactapi-bench"))
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--burst-clients", type=int, default=100)
    ap.add_argument("--pairs", type=int, default=20, help="pairs of runs for the access log's cost")
    ap.add_argument("--pair-seconds", type=int, default=3, help="seconds per run of a pair")
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out, and/or production")
    ap.add_argument("--only", default="",
                    help="comma-separated: hits,access_log,cold,tls,burst,idle,images,packages")
    ap.add_argument("--update", action="store_true",
                    help="measure only the sections asked for (--only) and keep the other sections' figures, "
                         "dates and machine from OUT's raw figures; each kept section says when it was measured")
    ap.add_argument("--report-from", default="",
                    help="re-render OUT from this file's raw figures (a BENCHMARKS.md or a JSON file) and "
                         "bench/analysis.md, measuring nothing; the machine and how each measure was taken come "
                         "from the figures too (for a page older than that: the machine from its header)")
    args = ap.parse_args()
    if args.report_from:
        with open(args.report_from) as f:
            text = f.read()
        page = "```json" in text
        results = json.loads(text.rsplit("```json", 1)[1].split("```", 1)[0] if page else text)
        if "machine" not in results:
            # Figures from before the machine was stored with them: the
            # header of their page, which the run itself wrote, or unknown.
            results["machine"] = machine_from_header(text) if page else None
        report(results, args.out, args)
        return
    skip = set(filter(None, args.skip.split(",")))
    work = args.work
    os.makedirs(work, exist_ok=True)
    files = os.path.join(work, "files")
    os.makedirs(files, exist_ok=True)
    for name, size in (("small.bin", 4096), ("large.bin", 100 * MIB), ("huge.bin", 1024 * MIB)):
        path = os.path.join(files, name)
        if not os.path.exists(path) or os.path.getsize(path) != size:
            log(f"writing {name}")
            with open(path, "wb") as f:
                left = size
                while left:
                    chunk = min(left, 16 * MIB)
                    f.write(os.urandom(chunk))
                    left -= chunk
    procs = Procs()
    generated = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    results = {"errors": {}, "generated": generated, "rounds": args.rounds, "machine": machine_now(generated),
               "how": {}}
    only = set(filter(None, args.only.split(","))) or {"hits", "access_log", "cold", "tls", "burst", "idle", "images",
                                                       "packages"}
    only -= skip

    def section(name, fn, *a, **kw):
        if name not in only:
            return
        try:
            fn(results, *a, **kw)
        except Exception as e:  # reported, and the other sections still run
            log(f"{name} failed: {e}")
            results["errors"][name] = str(e)[:2000]

    if args.update and os.path.exists(args.out):
        with open(args.out) as f:
            text = f.read()
        old = json.loads(text.rsplit("```json", 1)[1].split("```", 1)[0]) if "```json" in text else {}
        if not old.get("how"):
            old["how"] = legacy_how(old)
        measured = {"hits": ("small", "large"), "access_log": ("access_log",), "cold": ("cold",), "tls": ("tls",), "burst": ("burst",), "idle": ("idle",),
                    "images": ("images",), "packages": ("packages",)}
        for name, keys in measured.items():
            if name in only:
                continue
            for key in keys:
                if key in old:
                    results[key] = old[key]
                    how = dict(old["how"].get(key) or {})
                    when = how.get("measured_on") or old.get("generated", "an earlier run")
                    how["measured_on"] = when
                    note = re.sub(r"( \(kept from the run of [^)]*\))+$", "", how.get("note", ""))
                    how["note"] = (note + f" (kept from the run of {when})").strip()
                    results["how"][key] = how
    try:
        origin_port, origin_log = start_origin(procs, work, files)
        if "hits" in only:
            nginx_port, nginx = start_nginx_cache(procs, work, origin_port)
            yaml = f'remotes:\n  files:\n    base_url: "http://127.0.0.1:{origin_port}"\n'
            embedded = Artifactapi(procs, work, "embedded", yaml)
            production = local = None
            if "production" not in skip:
                garage = Garage(procs, work)
                db = f"artifactapi_bench_{os.getpid()}"
                run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {db}"])
                env = garage.env(f"bench-{os.getpid()}")
                env.update({"DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}",
                            "REDIS_URL": "redis://127.0.0.1:6379", "REDIS_PREFIX": f"artifactapi-bench-{os.getpid()}:"})
                production = Artifactapi(procs, work, "production", yaml, env)
                # The same backends with the local disk tier: a bucket, a
                # database and a Redis prefix of its own.
                run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {db}_local"])
                local_env = garage.env(f"bench-local-{os.getpid()}")
                local_env.update({"DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}_local",
                                  "REDIS_URL": "redis://127.0.0.1:6379",
                                  "REDIS_PREFIX": f"artifactapi-bench-local-{os.getpid()}:",
                                  "CACHE_LOCAL_DIR": os.path.join(work, "local-tier"),
                                  "CACHE_LOCAL_BYTES": "1G"})
                shutil.rmtree(os.path.join(work, "local-tier"), ignore_errors=True)
                local = Artifactapi(procs, work, "local", yaml, local_env)
            section("hits", hits, origin_port, nginx_port, embedded, production, local, args.rounds,
                    args.seconds)
            procs.stop(nginx)
            embedded.stop()
            if production:
                production.stop()
                local.stop()
                for name in (db, f"{db}_local"):
                    run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE {name} WITH (FORCE)"])
        section("access_log", access_log_cost, procs, work, origin_port, args.pairs, args.pair_seconds)
        section("cold", cold_miss, procs, work, origin_port, args.rounds)
        section("tls", tls_cold_miss, procs, work, files, args.rounds)
        section("burst", cold_burst, procs, work, origin_port, origin_log, args.burst_clients, args.rounds)
        section("idle", idle, procs, work, origin_port)
        section("images", images, procs, work, layers=5, layer_mib=48, rounds=args.rounds)
        section("packages", packages, procs, work, rounds=args.rounds)
    finally:
        procs.stop_all()
    report(results, args.out, args)
    with open(args.out) as f:
        print(f.read())


if __name__ == "__main__":
    main()
