#!/usr/bin/env python3
"""The load harness: sidecar-lite beside nginx and HAProxy, in one run, on loopback.

Run it from the workspace root (one command; it installs what is missing):

    python3 benches/load/run.py            # or: benches/load/run.py --quick

It installs wrk, nginx and HAProxy from Debian's packages when missing, builds the release
binaries it needs (sidecar-lite, the flaky upstream, the fixed-rate load generator, the bare
proxy), starts an
upstream (the flaky upstream with no faults), and measures each target at 1 and at 2 worker
threads:

  direct          the load generator calls the upstream
  sidecar-1hop    one sidecar-lite, plaintext: an outbound route to the upstream
  sidecar-traced  sidecar-1hop with [tracing] on: every request a sampled span, exported over
                  OTLP/HTTP to a stand-in collector in this script (accepts and discards)
  sidecar-dead-otlp  sidecar-traced whose collector is down (nothing listens): what a dead
                  collector costs requests
  sidecar-access-log  sidecar-1hop with [access_log] on: a JSON line per request to a file
  sidecar-balanced  sidecar-1hop whose route has two endpoints (two ports of the one upstream
                  process): the worker's p2c balancer and a back-pressure breaker per endpoint
  sidecar-mtls    two sidecar-lite: outbound -> mTLS -> inbound -> upstream (HTTP/2 between
                  them, the default)
  sidecar-mtls-http1  sidecar-mtls with HTTP/1.1 between the sidecars (`endpoint_protocol`)
  bare-hyper      the floor: benches' `bare-proxy`, a reverse proxy of hyper and tokio alone on
                  sidecar-lite's runtime model (a current-thread runtime per worker): what is
                  left of a hop once sidecar-lite's own per-request work is taken away
  nginx           nginx as a plain reverse proxy (keep-alive to the upstream)
  haproxy         HAProxy as a plain reverse proxy (keep-alive to the upstream)

Each gets: saturation req/s with 32 connections (wrk); p50, p99 and p99.9 at a fixed
5000 req/s (benches' `loadgen`, wrk2-style, without coordinated omission); p50 and p99 of one
request after another on one connection (wrk, one connection); CPU seconds per
1000 requests during saturation and RSS of the proxy processes (from /proc/PID), and CPU
seconds per 1000 requests of each sidecar of the pair and of the upstream behind each target,
so that the two-sidecar path can be judged hop by hop. Every
measurement runs 3 times, interleaved across targets; the table gives medians with min and
max, and ratios to direct and to HAProxy. It writes benches/load/results/latest.{md,json,svg}.

`--baseline PATH` adds `baseline-1hop`, `baseline-traced`, `baseline-balanced` and
`baseline-mtls`: sidecar-1hop, sidecar-traced, sidecar-balanced and sidecar-mtls run by another
sidecar-lite binary (say
one built from the commit before a change), measured interleaved with the rest, so one change's
cost is a ratio from one run:

    git worktree add /tmp/before HEAD~1 && cargo build --release -p sidecar-lite \
        --manifest-path /tmp/before/Cargo.toml --target-dir target/before
    benches/load/run.py --threads 1 --reps 5 --baseline target/before/release/sidecar-lite \
        --targets sidecar-1hop,baseline-1hop

`--sidecar PATH` runs the sidecar targets with another binary (a PGO build from
`benches/load/pgo.py`, say; `--baseline target/release/sidecar-lite` beside it).

`--targets` measures some of them only (direct and haproxy always, for the ratios), for
example `--targets sidecar-1hop,sidecar-access-log --reps 5` for one change's cost.

It stays on 127.0.0.1, stops only the processes it started (by PID), and is bounded in time.
"""

import argparse
import contextlib
import http.server
import json
import os
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RELEASE = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
RESULTS = ROOT / "benches" / "load" / "results"
TARGETS = ["direct", "baseline-1hop", "sidecar-1hop", "baseline-traced", "sidecar-traced",
           "sidecar-dead-otlp",
           "sidecar-access-log", "baseline-balanced", "sidecar-balanced", "baseline-mtls",
           "sidecar-mtls", "sidecar-mtls-http1", "bare-hyper", "nginx", "haproxy"]
# The sidecar-lite binary of the sidecar targets; `--sidecar` sets another (a PGO build, say).
SIDECAR = RELEASE / "sidecar-lite"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg):
    print(f"[load] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- tools and builds


def ensure_tools(wanted=None):
    """Installs from Debian's packages the tools (name -> package) that are missing."""
    wanted = wanted or {"wrk": "wrk", "nginx": "nginx-light", "haproxy": "haproxy"}
    missing = [pkg for tool, pkg in wanted.items() if shutil.which(tool) is None]
    if missing:
        log(f"installing {' '.join(missing)} from Debian's packages")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    for tool in wanted:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is still missing after the install")


def build():
    log("building release binaries (sidecar-lite, flaky-upstream, loadgen, bare-proxy)")
    subprocess.run(
        ["cargo", "build", "--release", "-p", "sidecar-lite", "-p", "example-flaky-upstream",
         "-p", "benches", "--bin", "sidecar-lite", "--bin", "flaky-upstream", "--bin", "loadgen",
         "--bin", "bare-proxy"],
        cwd=ROOT, check=True)


# ---------------------------------------------------------------- processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A process this harness started; stopped by its PID, never by name."""

    started = []

    def __init__(self, name, argv, admin=None, **kw):
        self.name = name
        self.admin = admin  # sidecar-lite's admin port, for /metrics
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        Proc.started.append(self)

    @property
    def pid(self):
        return self.popen.pid

    def pids(self):
        """This process and its children (nginx's workers)."""
        pids = [self.pid]
        try:
            for task in os.listdir(f"/proc/{self.pid}/task"):
                with open(f"/proc/{self.pid}/task/{task}/children") as f:
                    pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        return pids

    def stop(self, timeout=5):
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait()
        if self in Proc.started:
            Proc.started.remove(self)


def stop_all():
    for proc in list(reversed(Proc.started)):
        proc.stop()


def wait_port(port, proc, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.popen.poll() is not None:
            sys.exit(f"{proc.name} exited at start with {proc.popen.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{proc.name} did not listen on {port} within {timeout}s")


def wait_http_ok(port, path="/", timeout=10.0, what="a target", proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.popen.poll() is not None:
            sys.exit(f"{what} exited at start with {proc.popen.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"{what}: 127.0.0.1:{port}{path} did not answer 200 within {timeout}s")


def start_upstream():
    """The release flaky upstream (no faults, one worker) on a free port, answering; its port."""
    return start_upstream_proc()[0]


def start_upstream_proc():
    """The same upstream; its port and its process (whose CPU the report gives per hop)."""
    ports, upstream = start_upstream_ports(1)
    return ports[0], upstream


def start_upstream_ports(count):
    """The same upstream, one process and thread listening on `count` ports: the ports and the
    process."""
    ports = [free_port() for _ in range(count)]
    listens = [arg for port in ports for arg in ("--listen", f"127.0.0.1:{port}")]
    upstream = Proc("upstream", [str(RELEASE / "flaky-upstream"), *listens, "--worker-threads", "1"],
                    stdout=subprocess.DEVNULL)
    for port in ports:
        wait_http_ok(port, what="the upstream", proc=upstream)
    return ports, upstream


def proc_stat(pid):
    """The fields of `/proc/PID/stat` after the command's name, from the state on: [7] minor
    page faults, [11] user and [12] system time in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = proc_stat(pid)
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / CLK_TCK


def memory_kib(pids, key):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


# ---------------------------------------------------------------- targets


def sidecar_config(tmp, name, threads, body):
    admin = free_port()
    text = (f"[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[runtime]\nworker_threads = {threads}\n\n"
            f"[log]\nfilter = \"error\"\n\n{body}")
    path = tmp / f"{name}-{threads}.toml"
    path.write_text(text)
    return path, admin


def make_certs(tmp):
    """A dev CA and the two workloads' certificates in `tmp`, as `identity` names them."""
    subprocess.run([str(RELEASE / "sidecar-lite"), "certs", "--out", str(tmp),
                    "--workload", "ns/load/sa/app", "--workload", "ns/load/sa/client"],
                   check=True, stdout=subprocess.DEVNULL)


def identity(tmp, name):
    return (f"[identity]\ncert = \"{tmp}/{name}.pem\"\nkey = \"{tmp}/{name}-key.pem\"\n"
            f"trust = \"{tmp}/ca.pem\"\n\n")


def start_sidecar(tmp, name, threads, body, binary=None):
    path, admin = sidecar_config(tmp, name, threads, body)
    binary = binary or SIDECAR
    proc = Proc(f"{name}-{threads}", [str(binary), "run", "--config", str(path)],
                admin=admin, stdout=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="error"))
    wait_http_ok(admin, "/ready", what=proc.name, proc=proc)
    proc.admin = admin
    return proc


class OtlpSink:
    """A stand-in OTLP/HTTP collector on 127.0.0.1: answers every export with 200 (an empty
    ExportTraceServiceResponse) and counts requests and bytes. It runs in this script, so its
    CPU is not counted as the sidecar's."""

    def __init__(self):
        sink = self
        self.requests = 0
        self.bytes = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("content-length", 0))
                self.rfile.read(n)
                sink.requests += 1
                sink.bytes += n
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def span_counts(proc):
    """The traced sidecar's span counters, from its /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{proc.admin}/metrics", timeout=5).read().decode()
    counts = {"exported": 0, "queue-full": 0, "export-failed": 0}
    for line in text.splitlines():
        if line.startswith("sidecar_spans_exported_total"):
            counts["exported"] += int(float(line.split()[-1]))
        elif line.startswith("sidecar_spans_dropped_total"):
            for reason in ("queue-full", "export-failed"):
                if f'reason="{reason}"' in line:
                    counts[reason] += int(float(line.split()[-1]))
    return counts


def access_log_counts(proc):
    """The access-logging sidecar's dropped lines, from its /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{proc.admin}/metrics", timeout=5).read().decode()
    dropped = sum(int(float(line.split()[-1])) for line in text.splitlines()
                  if line.startswith("sidecar_access_log_dropped_total"))
    return {"dropped": dropped}


def route(listen, endpoint, mtls):
    """An outbound route on `listen` to the port `endpoint` (or to each port of a list)."""
    server = "server_identity = \"spiffe://example.org/ns/load/sa/app\"\n" if mtls else ""
    ports = endpoint if isinstance(endpoint, list) else [endpoint]
    endpoints = ", ".join(f"\"127.0.0.1:{port}\"" for port in ports)
    return (f"[[outbound]]\nname = \"app\"\nlisten = \"127.0.0.1:{listen}\"\n"
            f"endpoints = [{endpoints}]\n{server}timeout = \"5s\"\n"
            f"max_concurrent_requests = 4096\n")


def haproxy_config(tmp, name, threads, port, upstream):
    """HAProxy as a plain reverse proxy on `port` (keep-alive to the upstream); the file."""
    conf = tmp / f"{name}.cfg"
    conf.write_text(f"""
global
    nbthread {threads}
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always
frontend in
    bind 127.0.0.1:{port}
    default_backend app
backend app
    server app 127.0.0.1:{upstream}
""")
    return conf


def start_haproxy(tmp, name, threads, upstream):
    """HAProxy (the config of `haproxy_config`) on a free port, answering; its port and process."""
    port = free_port()
    conf = haproxy_config(tmp, name, threads, port, upstream)
    haproxy = Proc(name, ["haproxy", "-f", str(conf), "-db"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_http_ok(port, what="haproxy", proc=haproxy)
    return port, haproxy


def start_bare_proxy(threads, upstream):
    """benches' `bare-proxy` (hyper and tokio alone) in front of `upstream`: its port and
    process."""
    port = free_port()
    bare = Proc(f"bare-hyper-{threads}",
                [str(RELEASE / "bare-proxy"), "--listen", f"127.0.0.1:{port}",
                 "--upstream", f"127.0.0.1:{upstream}", "--threads", str(threads)],
                stdout=subprocess.DEVNULL)
    wait_http_ok(port, what="bare-proxy", proc=bare)
    return port, bare


def inbound_config(tmp, listen, app):
    """The inbound sidecar of the mTLS pair: strict mTLS on port `listen`, the app at port
    `app`, the client's identity allowed in."""
    return (identity(tmp, "app") + f"[inbound]\nlisten = \"127.0.0.1:{listen}\"\n"
            f"app = \"127.0.0.1:{app}\"\nmtls = \"strict\"\nmax_concurrent_requests = 4096\n"
            "allow = [\"spiffe://example.org/ns/load/sa/client\"]\n")


def start_mtls_pair(tmp, name, threads, upstream, route_extra="", binary=None):
    """Two sidecars (`binary`, else this build's), outbound -> mTLS -> inbound -> upstream, the
    outbound route with `route_extra`: the port to call and the two processes (outbound
    first)."""
    inbound_port = free_port()
    inbound = start_sidecar(tmp, f"{name}-inbound", threads,
                            inbound_config(tmp, inbound_port, upstream), binary=binary)
    port = free_port()
    outbound = start_sidecar(tmp, f"{name}-outbound", threads,
                             identity(tmp, "client") + route(port, inbound_port, True) + route_extra,
                             binary=binary)
    return port, [outbound, inbound]


@contextlib.contextmanager
def one_hop_targets(prefix, args):
    """The one-hop comparisons' targets, one worker each in front of a fresh upstream:
    sidecar-lite (`args.binary`, the harness's one-hop route), with `args.baseline` a second
    sidecar-lite, HAProxy and bare-hyper, as a list of (name, port, process), with the
    directory of their files; perf, wrk and HAProxy installed first when missing, and every
    process stopped at the end."""
    ensure_tools({"perf": "linux-perf", "wrk": "wrk", "haproxy": "haproxy"})
    tmp = Path(tempfile.mkdtemp(prefix=f"sidecar-{prefix}-"))
    try:
        upstream = start_upstream()
        targets = []
        for name, path in (("sidecar-lite", args.binary), ("baseline", args.baseline)):
            if path:
                port = free_port()
                proc = start_sidecar(tmp, f"{prefix}-{name}", 1, route(port, upstream, False),
                                     binary=path)
                wait_http_ok(port, what=name, proc=proc)
                targets.append((name, port, proc))
        haproxy_port, haproxy = start_haproxy(tmp, "haproxy", 1, upstream)
        targets.append(("HAProxy", haproxy_port, haproxy))
        bare_port, bare = start_bare_proxy(1, upstream)
        targets.append(("bare-hyper", bare_port, bare))
        yield tmp, targets
    finally:
        stop_all()


def one_hop_arguments(parser):
    """The arguments of the one-hop comparisons: `--binary`, `--baseline`."""
    parser.add_argument("--binary", default=str(RELEASE / "sidecar-lite"))
    parser.add_argument("--baseline", help="another sidecar-lite binary, measured in the same "
                        "turns as `baseline`")


def interleaved(targets, reps):
    """`targets` `reps` times in turn, each turn in the other order, so that a slow spell of
    the shared machine falls on every target alike."""
    for rep in range(reps):
        yield from (targets if rep % 2 == 0 else targets[::-1])


def spans_line(name, spans):
    """What became of the spans of the traced target `name`."""
    return (f"Spans of {name}: {spans['exported']} exported, {spans['queue-full']} dropped on a "
            f"full queue, {spans['export-failed']} in failed exports.")


def traced_route(port, upstream, sink):
    """The one-hop route with every request a sampled span, exported to `sink`."""
    return (route(port, upstream, False) + f"\n[tracing]\notlp_endpoint = "
            f"\"http://127.0.0.1:{sink.port}/v1/traces\"\nsampling_ratio = 1.0\n")


def start_targets(tmp, threads, upstreams, sink, baseline=None):
    """Every target at `threads` workers, in front of the first of `upstreams` (ports of the
    upstream; sidecar-balanced balances over the first two): name -> (port, [procs whose CPU
    and RSS count])."""
    upstream = upstreams[0]
    targets = {"direct": (upstream, [])}

    if baseline:
        port = free_port()
        before = start_sidecar(tmp, "baseline-1hop", threads, route(port, upstream, False),
                               binary=baseline)
        targets["baseline-1hop"] = (port, [before])
        port = free_port()
        before = start_sidecar(tmp, "baseline-traced", threads, traced_route(port, upstream, sink),
                               binary=baseline)
        targets["baseline-traced"] = (port, [before])
        port = free_port()
        before = start_sidecar(tmp, "baseline-balanced", threads, route(port, upstreams[:2], False),
                               binary=baseline)
        targets["baseline-balanced"] = (port, [before])
        targets["baseline-mtls"] = start_mtls_pair(tmp, "baseline", threads, upstream,
                                                   binary=baseline)

    port = free_port()
    one = start_sidecar(tmp, "sidecar-1hop", threads, route(port, upstream, False))
    targets["sidecar-1hop"] = (port, [one])

    port = free_port()
    traced = start_sidecar(tmp, "sidecar-traced", threads, traced_route(port, upstream, sink))
    targets["sidecar-traced"] = (port, [traced])

    port = free_port()
    dead = start_sidecar(
        tmp, "sidecar-dead-otlp", threads,
        route(port, upstream, False) + f"\n[tracing]\notlp_endpoint = "
        f"\"http://127.0.0.1:{free_port()}/v1/traces\"\nsampling_ratio = 1.0\n")
    targets["sidecar-dead-otlp"] = (port, [dead])

    port = free_port()
    logged = start_sidecar(
        tmp, "sidecar-access-log", threads,
        route(port, upstream, False) + f"\n[access_log]\npath = \"{tmp}/access-{threads}.log\"\n"
        "format = \"json\"\n")
    targets["sidecar-access-log"] = (port, [logged])

    port = free_port()
    balanced = start_sidecar(tmp, "sidecar-balanced", threads, route(port, upstreams[:2], False))
    targets["sidecar-balanced"] = (port, [balanced])

    targets["sidecar-mtls"] = start_mtls_pair(tmp, "sidecar", threads, upstream)
    targets["sidecar-mtls-http1"] = start_mtls_pair(tmp, "sidecar-http1", threads, upstream,
                                                    "endpoint_protocol = \"http1\"\n")

    # The floor: hyper and tokio alone, on sidecar-lite's runtime model.
    port, bare = start_bare_proxy(threads, upstream)
    targets["bare-hyper"] = (port, [bare])

    port = free_port()
    conf = tmp / f"nginx-{threads}.conf"
    conf.write_text(f"""
daemon off;
master_process on;
worker_processes {threads};
pid {tmp}/nginx-{threads}.pid;
error_log {tmp}/nginx-{threads}-error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    keepalive_requests 1000000;
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 256; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    nginx = Proc(f"nginx-{threads}", ["nginx", "-p", str(tmp), "-c", str(conf)],
                 stdout=subprocess.DEVNULL)
    wait_http_ok(port, what="nginx", proc=nginx)
    targets["nginx"] = (port, [nginx])

    port, haproxy = start_haproxy(tmp, f"haproxy-{threads}", threads, upstream)
    targets["haproxy"] = (port, [haproxy])
    return targets


# ---------------------------------------------------------------- measurements


def wrk(port, connections, seconds, latency=False):
    """wrk's output for `connections` connections over `seconds`, and the failures in it."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
         *(["--latency"] if latency else []), f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=seconds + 30).stdout
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return out, errors


def saturation(port, seconds):
    """req/s, requests and failures of wrk's 32 connections."""
    out, errors = wrk(port, 32, seconds)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return rps, total, errors


def one_at_a_time(port, seconds):
    """p50 and p99 of requests sent one after another on one connection, each as soon as the
    previous answer is in (wrk, one connection): a hop's own latency, with nothing queued and
    no process left idle long enough to be woken from sleep."""
    out, errors = wrk(port, 1, seconds, latency=True)
    units = {"us": 1.0, "ms": 1e3, "s": 1e6}

    def percentile(p):
        found = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)$", out, re.M)
        return float(found.group(1)) * units[found.group(2)]

    return {"p50_us": percentile(50), "p99_us": percentile(99), "errors": errors}


def fixed_rate(port, rate, seconds):
    out = subprocess.run(
        [str(RELEASE / "loadgen"), "--addr", f"127.0.0.1:{port}", "--rate", str(rate),
         "--connections", "32", "--seconds", str(seconds), "--warmup", "0.5"],
        capture_output=True, text=True, timeout=seconds + 30)
    if out.returncode != 0:
        sys.exit(f"loadgen failed: {out.stderr}")
    return json.loads(out.stdout)


def wanted_targets(args):
    """The targets to measure: `--targets` and the two every ratio needs, or all."""
    if not args.targets:
        return [name for name in TARGETS if not name.startswith("baseline-") or args.baseline]
    wanted = {"direct", "haproxy", *args.targets.split(",")}
    unknown = wanted - set(TARGETS)
    if unknown:
        sys.exit(f"unknown targets: {', '.join(sorted(unknown))}; known: {', '.join(TARGETS)}")
    return [name for name in TARGETS if name in wanted]


def seconds_per_target(args):
    """How long `measure` should take for one target in one repetition: wrk at 32
    connections, the fixed rate and its warm-up, wrk on one connection, a second around them."""
    return 2 * args.saturation_seconds + args.rate_seconds + 0.5 + 1


def time_bound(args):
    """How long the measurements may take in all: half as long again as they should, for
    every target, rep and thread count, and at least six minutes."""
    planned = (len(args.threads.split(",")) * args.reps * len(wanted_targets(args))
               * seconds_per_target(args))
    return max(360, 1.5 * planned)


def measure(targets, args, deadline, upstream):
    """Every target once per repetition, in turn, until `deadline`: name -> its runs."""
    runs = {name: [] for name in targets}
    for rep in range(args.reps):
        for name, (port, procs) in targets.items():  # interleaved: every target once per rep
            if time.monotonic() > deadline:
                log("time is up; stopping the measurements early")
                return runs
            pids = [p for proc in procs for p in proc.pids()]
            each0 = [cpu_seconds(proc.pids()) for proc in procs]
            cpu0, upstream0 = cpu_seconds(pids), cpu_seconds([upstream.pid])
            rps, total, errors = saturation(port, args.saturation_seconds)
            cpu = cpu_seconds(pids) - cpu0
            upstream_cpu = cpu_seconds([upstream.pid]) - upstream0
            # Each process on its own (the two sidecars of sidecar-mtls: outbound, inbound).
            each = [cpu_seconds(proc.pids()) - c0 for proc, c0 in zip(procs, each0)]
            fixed = fixed_rate(port, args.rate, args.rate_seconds)
            alone = one_at_a_time(port, args.saturation_seconds)
            runs[name].append({
                "rps": rps, "requests": total,
                "errors": errors + fixed["errors"] + alone["errors"],
                "cpu_per_1000": cpu / total * 1000 if procs and total else None,
                "cpu_each_per_1000": [c / total * 1000 for c in each] if total else [],
                "cpu_upstream_per_1000": upstream_cpu / total * 1000 if total else None,
                "p50": fixed["p50_us"], "p99": fixed["p99_us"], "p999": fixed["p999_us"],
                "achieved": fixed["achieved_rps"],
                "p50_one": alone["p50_us"], "p99_one": alone["p99_us"],
            })
            log(f"rep {rep + 1} {name:13s} {rps:9.0f} req/s  p50 {fixed['p50_us']:7.1f} us  "
                f"p99 {fixed['p99_us']:7.1f} us  p99.9 {fixed['p999_us']:7.1f} us  "
                f"one connection p50 {alone['p50_us']:6.1f} us")
    return runs


def metrics_rss_kib(procs):
    """RSS as the sidecars report it on their admin /metrics, summed; None for other proxies."""
    admins = [proc.admin for proc in procs if proc.admin]
    if not admins:
        return None
    total = 0
    for admin in admins:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
            text = r.read().decode()
        found = re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M)
        if not found:
            raise RuntimeError(f"no process_resident_memory_bytes on :{admin}/metrics")
        total += float(found.group(1))
    return int(total / 1024)


def rss_at_256(targets):
    """RSS of each proxy while 256 connections are open, then its peak."""
    out = {}
    for name, (port, procs) in targets.items():
        if not procs:
            continue
        pids = [p for proc in procs for p in proc.pids()]
        proc = subprocess.Popen(["wrk", "-t1", "-c256", "-d2s", f"http://127.0.0.1:{port}/"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        during = memory_kib(pids, "VmRSS")
        reported = metrics_rss_kib(procs)
        proc.wait(timeout=30)
        out[name] = {"rss_256_kib": during, "peak_kib": memory_kib(pids, "VmHWM"),
                     "metrics_256_kib": reported}
    return out


# ---------------------------------------------------------------- report


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summaries(runs, keys):
    """Each target's runs (name -> runs) summed up: name -> key -> `summary`, for the targets
    that ran."""
    return {name: {key: summary([r[key] for r in rs]) for key in keys}
            for name, rs in runs.items() if rs}


def fmt(s, digits=0):
    if s is None:
        return "-"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def ratio(a, b):
    if a is None or b is None or not b["median"]:
        return "-"
    return f"{a['median'] / b['median']:.2f}x"


def ratios(a, b):
    """Target `a` against target `b`: req/s, p99 and CPU per request, as ratios."""
    return (f"req/s {ratio(a['rps'], b['rps'])}, p99 {ratio(a['p99'], b['p99'])}, "
            f"CPU per request {ratio(a['cpu_per_1000'], b['cpu_per_1000'])}")


def one_connection(stats):
    """What each target adds over direct to the latency of one request at a time on one
    connection (p50 and p99), and the sidecar's added p50 against HAProxy's; None when the
    run has no such figures."""
    direct = stats["direct"]
    if not direct.get("p50_one"):
        return None
    added = {name: {key: stats[name][key]["median"] - direct[key]["median"]
                    for key in ("p50_one", "p99_one")}
             for name in ("sidecar-1hop", "baseline-1hop", "sidecar-mtls", "sidecar-mtls-http1",
                          "bare-hyper", "nginx", "haproxy")
             if name in stats and stats[name].get("p50_one") and stats[name].get("p99_one")}
    line = (f"One connection, one request after another (wrk -c1): direct p50 "
            f"{direct['p50_one']['median']:.1f} us, p99 {direct['p99_one']['median']:.1f} us; added "
            "over direct, p50 / p99: "
            + ", ".join(f"{name} {a['p50_one']:.1f} / {a['p99_one']:.1f} us" for name, a in added.items()))
    one, haproxy = added.get("sidecar-1hop"), added.get("haproxy")
    if one and haproxy and haproxy["p50_one"] > 0:
        line += f". Added p50, sidecar-1hop / HAProxy: {one['p50_one'] / haproxy['p50_one']:.2f}x"
    return line + "."


def mib(kib):
    return f"{kib / 1024:.1f}" if kib else "-"


def memory_table(memory):
    """RSS in MiB, from /proc and as the sidecars report it on /metrics."""
    lines = ["| target | RSS idle | idle, /metrics | RSS 256 conns | 256 conns, /metrics | peak RSS |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name in TARGETS:
        mem = memory.get(name)
        if mem:
            lines.append(f"| {name} | {mib(mem.get('idle_kib'))} | {mib(mem.get('metrics_idle_kib'))} "
                         f"| {mib(mem.get('rss_256_kib'))} | {mib(mem.get('metrics_256_kib'))} "
                         f"| {mib(mem.get('peak_kib'))} |")
    return lines


def report(results, machine):
    lines = [f"Measured {machine['date']} on {machine['cpu']} ({machine['cores']} cores), "
             f"loopback, HTTP/1.1; wrk {machine['wrk']}, {machine['nginx']}, {machine['haproxy']}.",
             f"Medians of {machine['reps']} interleaved runs (min-max). Saturation: wrk, 1 thread, 32 connections. "
             "Latency: fixed 5000 req/s over 32 connections. RSS in MiB (all processes of the "
             "target; two for sidecar-mtls).", ""]
    if not any(data["stats"] for data in results.values()):
        lines[1] = ("RSS in MiB of all processes of each target (two for sidecar-mtls): idle, and while "
                    "wrk holds 256 connections (1 thread, 2 s); from /proc and from each sidecar's "
                    "/metrics (process_resident_memory_bytes).")
    for threads, data in results.items():
        lines += [f"### {threads} worker thread{'s' if threads != '1' else ''} per proxy", "",
                  "| target | req/s | vs direct | vs HAProxy | p50 us | p99 us | p99.9 us | p99 vs HAProxy "
                  "| CPU s/1000 req | vs HAProxy | RSS idle | RSS 256 conns | peak RSS |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        stats = data["stats"]
        if not stats:
            lines[-2:] = memory_table(data["memory"]) + [""]
            continue
        for name in TARGETS:
            if name not in stats:
                continue
            s, h, d = stats[name], stats.get("haproxy"), stats["direct"]
            mem = data["memory"].get(name, {})
            lines.append(
                f"| {name} | {fmt(s['rps'])} | {ratio(s['rps'], d['rps'])} | {ratio(s['rps'], h['rps'])} "
                f"| {fmt(s['p50'], 1)} | {fmt(s['p99'], 1)} | {fmt(s['p999'], 1)} | {ratio(s['p99'], h['p99'])} "
                f"| {fmt(s['cpu_per_1000'], 3)} | {ratio(s['cpu_per_1000'], h['cpu_per_1000'])} "
                f"| {mib(mem.get('idle_kib'))} | {mib(mem.get('rss_256_kib'))} | {mib(mem.get('peak_kib'))} |")
        errors = sum(r["errors"] for rs in data["runs"].values() for r in rs)
        lines.append("")
        lines.append(f"Failed requests in these runs (non-2xx, socket errors, loadgen failures): {errors}.")
        alone = one_connection(stats)
        if alone:
            lines += ["", alone]
        one, mtls = stats.get("sidecar-1hop"), stats.get("sidecar-mtls")
        traced, spans = stats.get("sidecar-traced"), data.get("spans")
        if one and traced:
            lines.append("")
            lines.append(f"Tracing on (every request sampled and exported) / off, one hop: "
                         f"{ratios(traced, one)}.")
            if spans:
                lines.append(spans_line("sidecar-traced", spans))
        dead, dead_spans = stats.get("sidecar-dead-otlp"), data.get("dead_spans")
        if one and dead:
            lines.append(f"Collector down / tracing off, one hop: {ratios(dead, one)}.")
            if dead_spans:
                lines.append(spans_line("sidecar-dead-otlp", dead_spans))
        balanced = stats.get("sidecar-balanced")
        if one and balanced:
            lines.append("")
            lines.append(f"Two endpoints behind the balancer / one endpoint, one hop: "
                         f"{ratios(balanced, one)}.")
        bare = stats.get("bare-hyper")
        if one and bare:
            lines.append("")
            lines.append(f"One hop / bare-hyper (hyper and tokio alone, the same runtime model): "
                         f"{ratios(one, bare)}.")
        before = stats.get("baseline-1hop")
        if one and before:
            lines.append("")
            lines.append(f"This build / the baseline binary, one hop: {ratios(one, before)}.")
        before, before_spans = stats.get("baseline-traced"), data.get("baseline_spans")
        if traced and before:
            lines.append(f"This build / the baseline binary, one hop with tracing on: "
                         f"{ratios(traced, before)}.")
            if before_spans:
                lines.append(spans_line("baseline-traced", before_spans))
        before = stats.get("baseline-balanced")
        if balanced and before:
            lines.append(f"This build / the baseline binary, two endpoints behind the balancer: "
                         f"{ratios(balanced, before)}.")
        before = stats.get("baseline-mtls")
        if mtls and before:
            each = {name: pair_cpu_each(data, name) for name in ("sidecar-mtls", "baseline-mtls")}
            hops = ""
            if all(each.values()):
                (out, inb), (out_before, inb_before) = each["sidecar-mtls"], each["baseline-mtls"]
                hops = (f"; CPU per request of the outbound sidecar {out / out_before:.2f}x, "
                        f"of the inbound {inb / inb_before:.2f}x")
            lines.append(f"This build / the baseline binary, the mTLS pair: "
                         f"{ratios(mtls, before)}{hops}.")
        logged, access_log = stats.get("sidecar-access-log"), data.get("access_log")
        if one and logged:
            lines.append("")
            lines.append(f"Access log on (a JSON line per request to a file) / off, one hop: "
                         f"{ratios(logged, one)}.")
            if access_log:
                lines.append(f"Access-log lines dropped on a full queue: {access_log['dropped']}.")
        if one and mtls:
            added = [f"{name} {stats[key]['p99']['median'] - stats['direct']['p99']['median']:.1f} us"
                     for name, key in (("sidecar-1hop", "sidecar-1hop"), ("HAProxy", "haproxy"),
                                       ("nginx", "nginx")) if key in stats]
            lines.append("")
            lines.append(f"Two-sidecar mTLS / one-hop plaintext req/s: {ratio(mtls['rps'], one['rps'])}; "
                         f"CPU per request, the pair / one hop: "
                         f"{ratio(mtls['cpu_per_1000'], one['cpu_per_1000'])}. "
                         f"Added p99 over direct: {', '.join(added)}.")
            each = pair_cpu_each(data, "sidecar-mtls")
            if each:
                lines.append(f"CPU s/1000 req of each sidecar of the pair (medians): outbound "
                             f"{each[0]:.3f}, inbound {each[1]:.3f}.")
        http1 = stats.get("sidecar-mtls-http1")
        if mtls and http1:
            lines.append("")
            lines.append(f"HTTP/1.1 / HTTP/2 between the two sidecars (`endpoint_protocol`), the mTLS "
                         f"pair: {ratios(http1, mtls)}; RSS at 256 connections "
                         f"{mib(data['memory'].get('sidecar-mtls-http1', {}).get('rss_256_kib'))} / "
                         f"{mib(data['memory'].get('sidecar-mtls', {}).get('rss_256_kib'))} MiB.")
        upstream = {name: statistics.median(u) for name, rs in data["runs"].items()
                    if (u := [r["cpu_upstream_per_1000"] for r in rs
                              if r.get("cpu_upstream_per_1000") is not None])}
        if upstream:
            lines.append("CPU s/1000 req of the upstream behind each target (medians): "
                         + ", ".join(f"{name} {cpu:.3f}" for name, cpu in upstream.items()) + ".")
        lines.append("")
    return "\n".join(lines)


def pair_cpu_each(data, name):
    """The median CPU s/1000 req of each sidecar of the pair `name` (outbound, inbound), or
    None when the runs did not record it."""
    each = [r.get("cpu_each_per_1000") for r in data["runs"].get(name, [])]
    each = [e for e in each if e and len(e) == 2]
    if not each:
        return None
    return statistics.median(e[0] for e in each), statistics.median(e[1] for e in each)


def svg_chart(results):
    """Grouped bars: p50, p99, p99.9 at 5000 req/s per target, one panel per thread count."""
    colors = {"p50": "#4e79a7", "p99": "#f28e2b", "p999": "#e15759"}
    labels = {"p50": "p50", "p99": "p99", "p999": "p99.9"}
    panels = list(results.items())
    width, panel_h, left, top = 760, 260, 70, 50
    height = top + panel_h * len(panels) + 40
    top_value = max(results[t]["stats"][n][k]["median"]
                    for t in results for n in results[t]["stats"] for k in colors)
    scale_max = 10 ** len(str(int(top_value)))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15">Latency at 5000 req/s '
           f'(median of 3 runs, microseconds, log scale)</text>']
    for i, (key, label) in enumerate(labels.items()):
        out.append(f'<rect x="{left + i * 80}" y="30" width="12" height="12" fill="{colors[key]}"/>'
                   f'<text x="{left + i * 80 + 16}" y="40">{label}</text>')
    import math
    lo = 10.0
    for p, (threads, data) in enumerate(panels):
        y0 = top + p * panel_h + 20
        plot_h = panel_h - 60
        ypos = lambda v: y0 + plot_h - plot_h * (math.log10(max(v, lo)) - math.log10(lo)) / (
            math.log10(scale_max) - math.log10(lo))
        out.append(f'<text x="{left}" y="{y0 - 4}" font-weight="bold">{threads} worker thread(s) per proxy</text>')
        tick = lo
        while tick <= scale_max:
            y = ypos(tick)
            out.append(f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                       f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
            tick *= 10
        names = [n for n in TARGETS if n in data["stats"]]
        group_w = (width - left - 20) / len(names)
        for g, name in enumerate(names):
            gx = left + g * group_w
            for b, key in enumerate(colors):
                v = data["stats"][name][key]["median"]
                bx = gx + 12 + b * (group_w - 24) / 3
                bw = (group_w - 24) / 3 - 4
                y = ypos(v)
                out.append(f'<rect x="{bx:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{y0 + plot_h - y:.1f}" '
                           f'fill="{colors[key]}"><title>{name} {labels[key]}: {v:.1f} us</title></rect>'
                           f'<text x="{bx + bw / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" font-size="9">{v:.0f}</text>')
            out.append(f'<text x="{gx + group_w / 2:.1f}" y="{y0 + plot_h + 16}" text-anchor="middle">{name}</text>')
    out.append("</svg>")
    return "\n".join(out)


def machine_info():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    version = lambda argv: (subprocess.run(argv, capture_output=True, text=True).stderr
                            + subprocess.run(argv, capture_output=True, text=True).stdout).strip().splitlines()[0]
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu,
            "cores": os.cpu_count(),
            "wrk": version(["wrk", "-v"]).split()[1] if version(["wrk", "-v"]).startswith("wrk") else "?",
            "nginx": version(["nginx", "-v"]).replace("nginx version: ", ""),
            "haproxy": " ".join(version(["haproxy", "-v"]).split()[:3])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2", help="worker threads per proxy, comma-separated")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--saturation-seconds", type=int, default=2)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--rate-seconds", type=float, default=2.5)
    parser.add_argument("--skip-build", action="store_true", help="use the binaries in target/release")
    parser.add_argument("--baseline", help="another sidecar-lite binary, measured as baseline-1hop, "
                        "baseline-traced, baseline-balanced and baseline-mtls")
    parser.add_argument("--results", help="where the tables go (default: benches/load/results)")
    parser.add_argument("--sidecar", help="the sidecar-lite binary of the sidecar targets "
                        "(default: target/release/sidecar-lite)")
    parser.add_argument("--targets", help="measure only these (comma-separated); direct and haproxy always")
    parser.add_argument("--quick", action="store_true", help="1 thread count, 1 rep, 1 s each: a smoke test")
    parser.add_argument("--memory-only", action="store_true",
                        help="only RSS idle and under 256 connections, from /proc and from /metrics")
    args = parser.parse_args()
    if args.quick:
        args.threads, args.reps, args.saturation_seconds, args.rate_seconds = "1", 1, 1, 1.0

    ensure_tools()
    if not args.skip_build:
        build()
    if args.sidecar:
        global SIDECAR
        SIDECAR = Path(args.sidecar)
    started = time.monotonic()
    deadline = started + time_bound(args)
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-load-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        make_certs(tmp)
        sink = OtlpSink()
        # Two ports: sidecar-balanced balances over both, the rest call the first.
        upstream_ports, upstream = start_upstream_ports(2)
        results = {}
        for threads in args.threads.split(","):
            log(f"starting every target with {threads} worker thread(s)")
            targets = start_targets(tmp, int(threads), upstream_ports, sink, args.baseline)
            time.sleep(0.5)
            idle = {name: (memory_kib([p for proc in procs for p in proc.pids()], "VmRSS"),
                           metrics_rss_kib(procs))
                    for name, (_, procs) in targets.items() if procs}
            wanted = {name: target for name, target in targets.items()
                      if name in wanted_targets(args)}
            runs = {} if args.memory_only else measure(wanted, args, deadline, upstream)
            memory = rss_at_256(targets)
            for name, (kib, reported) in idle.items():
                memory.setdefault(name, {}).update(idle_kib=kib, metrics_idle_kib=reported)
            stats = summaries(runs, ("rps", "p50", "p99", "p999", "cpu_per_1000", "p50_one",
                                     "p99_one"))
            results[threads] = {"runs": runs, "stats": stats, "memory": memory}
            for name, key, counts in (("sidecar-traced", "spans", span_counts),
                                      ("baseline-traced", "baseline_spans", span_counts),
                                      ("sidecar-dead-otlp", "dead_spans", span_counts),
                                      ("sidecar-access-log", "access_log", access_log_counts)):
                if name not in targets:
                    continue
                try:
                    results[threads][key] = counts(targets[name][1][0])
                except OSError as e:
                    log(f"cannot read the counters of {name}: {e}")
            for name, (_, procs) in targets.items():
                for proc in procs:
                    proc.stop()
        machine = machine_info()
        machine["reps"] = args.reps
        table = report(results, machine)
        out = Path(args.results) if args.results else RESULTS
        out.mkdir(parents=True, exist_ok=True)
        stem = "memory" if args.memory_only else "latest"
        if args.targets and not args.memory_only:
            # A partial run does not replace the full table.
            stem = "targets-" + args.targets.replace(",", "-")
        (out / f"{stem}.md").write_text(table + "\n")
        (out / f"{stem}.json").write_text(json.dumps({"machine": machine, "results": results}, indent=1))
        if stem == "latest":
            (out / "latest.svg").write_text(svg_chart(results))
        print(table)
        log(f"wrote {out}/{stem}.* in {time.monotonic() - started:.0f} s")
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
