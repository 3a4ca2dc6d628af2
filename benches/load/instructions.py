#!/usr/bin/env python3
"""Instructions per request of one sidecar-lite hop, counted by valgrind's callgrind: the same
figure for the same binary however busy the machine is, so a small data-path change can be
judged where wall-clock runs are too noisy to tell it from chance.

Run it from the workspace root, after `benches/load/run.py` (or `--skip-build` off) has built
the release binaries:

    python3 benches/load/instructions.py                       # this build
    python3 benches/load/instructions.py --baseline /tmp/before/sidecar-lite
    python3 benches/load/instructions.py --haproxy            # and HAProxy's, for the ratio
    python3 benches/load/instructions.py --endpoints 2        # a route with two endpoints
    python3 benches/load/instructions.py --inbound            # the inbound hop of an mTLS pair
    python3 benches/load/instructions.py --traced             # every request a span, exported

It starts the flaky upstream (no faults) and, for each binary, sidecar-lite under callgrind
(one worker, the harness's one-hop route) twice: once for `--warm` requests and once for
`--warm` + `--requests`, each sent one after another on one keep-alive connection. The
difference of the two totals over `--requests` is the cost of a request, without the start-up
and shutdown. That whole-process figure still moves by a few per cent between two runs of the
same binary (timers and housekeeping run by wall time, and valgrind's pace varies; quanta's
clock calibration at start-up, for one, loops for a fixed wall time: 8 to 11 million
instructions under valgrind), so it also
reports the request path alone: the instructions spent inside the tasks that serve the
client's connection and drive the upstream connections, which repeat to within about half a
per cent (two runs of one binary: 47 779 and 48 005 per request) and so can judge a change of
a per cent. It counts user-space instructions only: the kernel's share of a hop (most of the
TCP path) is not in it, so it complements run.py's CPU per request, and does not replace it.
With `--haproxy` it counts HAProxy (one thread, the harness's config) the same way, its
whole process: the user-space side of run.py's CPU ratio (the two make the same system calls
per request: two reads and two writes). With `--traced` every request is a sampled span,
exported to a stand-in collector (run.py's traced route): the whole process then includes the
export thread, the request path the span's work on the worker. With `--endpoints 2` the route
balances over two ports of the one upstream. With `--inbound` the sidecar counted is the
inbound one of an mTLS pair (HTTP/2 from the peer, strict mTLS, the app behind it the
upstream), driven by an outbound sidecar of this build that valgrind does not run; its request
path is the connection's task, each request's HTTP/2 stream task and the app connection's
task. valgrind is installed from Debian's packages when missing.

It stays on 127.0.0.1, stops only the processes it started (by PID), and is bounded in time.
"""

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402  (processes, ports, configs, builds)

REQUEST = b"GET / HTTP/1.1\r\nHost: app\r\n\r\n"
# valgrind runs a program some 50 times slower: generous, and still bounded.
START_S = 120.0
STOP_S = 120.0


def send(port, count):
    """`count` GETs one after another on one connection, each read to the end of its body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        for _ in range(count):
            conn.sendall(REQUEST)
            data = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    raise RuntimeError("the sidecar closed the connection")
                data += chunk
                head, sep, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if sep and length and len(body) >= int(length.group(1)):
                    break
                if sep and not length:
                    raise RuntimeError(f"an answer without content-length: {head[:200]!r}")


# The tasks a request runs in: the one serving the client's connection (the edge and the stack
# are polled inside it) and the ones driving upstream connections. Inclusive counts of these
# functions leave out timers and housekeeping.
REQUEST_PATH = (
    r"sidecar_lite::proxy::listener::serve::\{\{closure\}\}::\{\{closure\}\} \[",
    r"sidecar_lite::transport::pool::Shared<C,B>::connect::\{\{closure\}\}::\{\{closure\}\} \[",
)
# Tasks a request runs in only in older builds: the queue (tower's `Buffer`) in front of the
# balancer of a route with several endpoints, before each worker had a balancer of its own
# (c1c8c9d); counted so that such a build can be the baseline.
REQUEST_PATH_IF_ANY = (
    r"<tower::buffer::worker::Worker<T,Request> as core::future::future::Future>::poll \[",
)


# The inbound sidecar's: its connection's task (TLS and the HTTP/2 connection), the task hyper
# gives each HTTP/2 stream (the edge and the stack are polled inside it; since c6bfe2c spawned
# by the listener's `StreamTasks`, which counts them, in a `Counted` future that may hold
# hyper's `poll` inlined), and the app connection's task.
INBOUND_PATH = (
    REQUEST_PATH[0],
    r"(<hyper::proto::h2::server::H2Stream<F,B,Ex> as core::future::future::Future>::poll"
    r"|<sidecar_lite::proxy::stream_tasks::Counted<F> as core::future::future::Future>::poll)"
    r" \[",
    REQUEST_PATH[1],
)


def request_path(out, patterns):
    """Instructions inside the request path's tasks (`patterns`), from a callgrind output
    file."""
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)],
                               capture_output=True, text=True, check=True).stdout
    total = 0
    for pattern in patterns + REQUEST_PATH_IF_ANY:
        line = next((l for l in annotated.splitlines() if re.search(pattern, l)), None)
        if line is None and pattern in patterns:
            raise RuntimeError(f"no function matching {pattern} in {out}")
        total += int(line.split()[0].replace(",", "")) if line else 0
    return total


def callgrind(tmp, name, argv, listen, count, drive=send, **kw):
    """Runs `argv` under callgrind until it listens on `listen`, sends it `count` requests
    (`drive(listen, count)`) and stops it; its total instructions and its callgrind output
    file."""
    out = tmp / f"{name}.callgrind"
    proc = harness.Proc(name, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                               *argv],
                        stdout=subprocess.DEVNULL, stderr=open(tmp / f"{name}.log", "w"), **kw)
    try:
        harness.wait_port(listen, proc, timeout=START_S)
    except SystemExit:
        sys.stderr.write((tmp / f"{name}.log").read_text()[-2000:])
        raise
    drive(listen, count)
    proc.stop(timeout=STOP_S)
    totals = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
    if not totals:
        raise RuntimeError(f"no totals in {out}")
    return int(totals.group(1)), out


def instructions(tmp, binary, upstreams, count, sink=None):
    """Total instructions of a sidecar-lite run that served `count` requests, and those of
    its request path; its route balances over the ports `upstreams`, and with a `sink` (an
    `OtlpSink`) every request is a span exported to it."""
    listen = harness.free_port()
    name = f"cg-{Path(binary).parent.name}-{count}"
    body = (harness.traced_route(listen, upstreams, sink) if sink
            else harness.route(listen, upstreams, False))
    path, _ = harness.sidecar_config(tmp, name, 1, body)
    total, out = callgrind(tmp, name, [str(binary), "run", "--config", str(path)], listen, count,
                           env=dict(harness.os.environ, RUST_LOG="error"))
    return total, request_path(out, REQUEST_PATH)


def inbound_instructions(tmp, binary, upstreams, count):
    """Total instructions of an inbound sidecar-lite run that served `count` requests from an
    outbound sidecar over mTLS, and those of its request path; the app is `upstreams[0]`."""
    listen = harness.free_port()
    name = f"cg-inbound-{Path(binary).parent.name}-{count}"
    path, _ = harness.sidecar_config(tmp, name, 1,
                                     harness.inbound_config(tmp, listen, upstreams[0]))

    def through_a_peer(inbound, count):
        port = harness.free_port()
        driver = harness.start_sidecar(tmp, f"{name}-driver", 1, harness.identity(tmp, "client")
                                       + harness.route(port, inbound, True))
        send(port, count)
        driver.stop()

    total, out = callgrind(tmp, name, [str(binary), "run", "--config", str(path)], listen, count,
                           drive=through_a_peer, env=dict(harness.os.environ, RUST_LOG="error"))
    return total, request_path(out, INBOUND_PATH)


def per_request(tmp, binary, upstreams, args, sink=None):
    """Instructions per request: the whole process's, and the request path's."""
    if args.inbound:
        count = inbound_instructions
    else:
        def count(tmp, binary, upstreams, requests):
            return instructions(tmp, binary, upstreams, requests, sink)
    warm = count(tmp, binary, upstreams, args.warm)
    full = count(tmp, binary, upstreams, args.warm + args.requests)
    return tuple((f - w) / args.requests for f, w in zip(full, warm))


def haproxy_instructions(tmp, upstream, count):
    """Total instructions of an HAProxy run (one thread, the harness's config) that served
    `count` requests."""
    listen = harness.free_port()
    name = f"cg-haproxy-{count}"
    conf = harness.haproxy_config(tmp, name, 1, listen, upstream)
    total, _ = callgrind(tmp, name, ["haproxy", "-f", str(conf), "-db"], listen, count)
    return total


def haproxy_per_request(tmp, upstream, args):
    """HAProxy's instructions per request, its whole process (it has no tasks to single out)."""
    warm = haproxy_instructions(tmp, upstream, args.warm)
    full = haproxy_instructions(tmp, upstream, args.warm + args.requests)
    return (full - warm) / args.requests


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=500, help="requests of the shorter run")
    parser.add_argument("--binary", default=str(harness.RELEASE / "sidecar-lite"),
                        help="the sidecar-lite binary to count (default: this build)")
    parser.add_argument("--baseline", help="another sidecar-lite binary, counted the same way")
    parser.add_argument("--haproxy", action="store_true",
                        help="also count HAProxy's (whole process), for the ratio")
    parser.add_argument("--endpoints", type=int, default=1,
                        help="the route's endpoints: ports of the one upstream (2: the balancer)")
    parser.add_argument("--inbound", action="store_true",
                        help="count the inbound sidecar of an mTLS pair instead of one hop")
    parser.add_argument("--traced", action="store_true",
                        help="every request a span, exported to a stand-in collector (run.py's "
                             "traced route)")
    parser.add_argument("--skip-build", action="store_true", help="use the binaries in target/release")
    args = parser.parse_args()
    if args.traced and args.inbound:
        parser.error("--traced counts the outbound hop: not with --inbound")
    harness.ensure_tools({"valgrind": "valgrind", **({"haproxy": "haproxy"} if args.haproxy else {})})
    if not args.skip_build:
        harness.build()
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-instructions-"))
    try:
        if args.inbound:
            harness.make_certs(tmp)
        ports, _ = harness.start_upstream_ports(args.endpoints)
        sink = harness.OtlpSink() if args.traced else None
        port = ports[0]
        binaries = [("this build", Path(args.binary))]
        if args.baseline:
            binaries.append(("baseline", Path(args.baseline)))
        counts = {}
        for label, binary in binaries:
            counts[label] = per_request(tmp, binary, ports, args, sink)
            whole, path = counts[label]
            print(f"{label} ({binary}): {whole:.0f} instructions per request, "
                  f"{path:.0f} in the request path")
        if args.baseline:
            (whole, path), (base_whole, base_path) = counts["this build"], counts["baseline"]
            print(f"this build / baseline: {whole / base_whole:.3f}x, "
                  f"request path {path / base_path:.4f}x")
        if args.haproxy:
            haproxy = haproxy_per_request(tmp, port, args)
            whole, _ = counts["this build"]
            print(f"HAProxy (one thread): {haproxy:.0f} instructions per request; "
                  f"this build's whole process / HAProxy's: {whole / haproxy:.2f}x")
    finally:
        harness.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
