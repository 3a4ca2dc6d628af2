#!/usr/bin/env python3
"""One hop for HTTP/2 clients: h2load against sidecar-lite and HAProxy, plaintext HTTP/2 with
prior knowledge (h2c) from the client, HTTP/1.1 on to the upstream, in one run.

Run it from the workspace root, after `benches/load/run.py` has built the release binaries:

    python3 benches/load/h2c.py                 # 5 interleaved runs, 5 s each
    python3 benches/load/h2c.py --baseline /tmp/before/sidecar-lite --reps 7
    python3 benches/load/h2c.py --quick         # 1 run of 1 s: a smoke test (and PGO training)

The targets: `direct` (h2load against the flaky upstream, which serves h2c itself),
`sidecar-1hop` (one sidecar-lite, one worker, the load harness's one-hop route), `haproxy`
(one thread, the load harness's config: HAProxy takes the HTTP/2 preface on the same plaintext
port), and with `--baseline PATH`, `baseline-1hop`: the same route run by another binary. Each
run of each target, interleaved: `h2load -c32 -m1` (32 connections, one stream in flight on
each, the HTTP/1.1 table's load) for `--seconds`, and the CPU time of the proxy's process over
the run (`/proc/PID/stat`); each target is warmed by one second of the same load first. The table gives medians with min and
max, and ratios to HAProxy. It writes benches/load/results/h2c.{md,json} (`--results DIR`
elsewhere).

It installs h2load (Debian's nghttp2-client) and HAProxy when missing, stays on 127.0.0.1,
stops only the processes it started (by PID), and is bounded in time.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402  (processes, ports, configs, CPU from /proc)


def h2load(port, seconds):
    """Requests per second and requests served: `h2load -c32 -m1` for `seconds` against `port`;
    exits on failed requests."""
    out = subprocess.run(
        ["h2load", "-c32", "-m1", "-t1", f"-D{seconds}", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=seconds + 30).stdout
    found = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed",
                     out)
    if not found or not done:
        sys.exit(f"h2load gave no figures against 127.0.0.1:{port}:\n{out}")
    if int(done.group(3)):
        sys.exit(f"h2load: {done.group(3)} requests failed against 127.0.0.1:{port}:\n{out}")
    return float(found.group(1)), int(done.group(2))


def start_targets(tmp, upstream, sidecar, baseline):
    """name -> (port, the process whose CPU counts, or None)."""
    targets = {"direct": (upstream, None)}
    if baseline:
        port = harness.free_port()
        before = harness.start_sidecar(tmp, "baseline-1hop", 1,
                                       harness.route(port, upstream, False), binary=baseline)
        targets["baseline-1hop"] = (port, before)
    port = harness.free_port()
    one = harness.start_sidecar(tmp, "sidecar-1hop", 1, harness.route(port, upstream, False),
                                binary=sidecar)
    targets["sidecar-1hop"] = (port, one)
    targets["haproxy"] = harness.start_haproxy(tmp, "haproxy", 1, upstream)
    for name, (port, proc) in targets.items():
        harness.wait_http_ok(port, what=name, proc=proc)
        h2load(port, 1)  # warm: the upstream connections open, the pools filled
    return targets


def measure(targets, args):
    runs = {name: [] for name in targets}
    deadline = time.monotonic() + 600
    for rep in range(args.reps):
        for name, (port, proc) in targets.items():
            if time.monotonic() > deadline:
                sys.exit("h2c.py ran past its 600 s bound")
            pids = proc.pids() if proc else []
            cpu_before = harness.cpu_seconds(pids)
            rps, served = h2load(port, args.seconds)
            cpu = harness.cpu_seconds(pids) - cpu_before
            per_request_us = cpu / served * 1e6 if pids else None
            runs[name].append({"rps": rps, "cpu_us": per_request_us})
            cpu_text = f"  CPU {per_request_us:5.1f} us/request" if per_request_us else ""
            harness.log(f"rep {rep + 1} {name:14} {rps:8.0f} req/s{cpu_text}")
    return runs


def report(runs, args):
    stats = harness.summaries(runs, ("rps", "cpu_us"))
    haproxy = stats["haproxy"]
    command = ("python3 benches/load/h2c.py"
               + (f" --sidecar {args.sidecar}" if args.sidecar != str(harness.SIDECAR) else "")
               + (f" --baseline {args.baseline}" if args.baseline else ""))
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: h2c from the "
             f"client (`h2load -c32 -m1`, {args.seconds} s), HTTP/1.1 to "
             f"the upstream, one worker per proxy; medians of {args.reps} interleaved runs "
             f"(min-max) (`{command}`).", "",
             "| target | req/s | vs HAProxy | CPU us/request | vs HAProxy |",
             "| --- | --- | --- | --- | --- |"]
    for name, s in stats.items():
        rps, cpu = s["rps"], s["cpu_us"]
        rps_text = f"{rps['median']:.0f} ({rps['min']:.0f}-{rps['max']:.0f})"
        cpu_text = (f"{cpu['median']:.1f} ({cpu['min']:.1f}-{cpu['max']:.1f})" if cpu else "-")
        cpu_ratio = (f"{cpu['median'] / haproxy['cpu_us']['median']:.2f}x" if cpu else "-")
        lines.append(f"| {name} | {rps_text} | {rps['median'] / haproxy['rps']['median']:.2f}x "
                     f"| {cpu_text} | {cpu_ratio} |")
    return "\n".join(lines) + "\n", stats


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--sidecar", default=str(harness.SIDECAR),
                        help="the sidecar-lite binary of sidecar-1hop")
    parser.add_argument("--baseline", help="another sidecar-lite binary, measured as baseline-1hop")
    parser.add_argument("--results", help="where the tables go (default: benches/load/results)")
    parser.add_argument("--quick", action="store_true", help="1 run of 1 s: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.seconds = 1, 1
    harness.ensure_tools({"h2load": "nghttp2-client", "haproxy": "haproxy"})
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-h2c-"))
    try:
        upstream = harness.start_upstream()
        targets = start_targets(tmp, upstream, args.sidecar, args.baseline)
        table, stats = report(measure(targets, args), args)
    finally:
        harness.stop_all()
    print(table)
    out = Path(args.results) if args.results else harness.RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "h2c.md").write_text(table)
    (out / "h2c.json").write_text(json.dumps({"stats": stats, "reps": args.reps,
                                              "seconds": args.seconds}, indent=2) + "\n")
    harness.log(f"wrote {out}/h2c.md and h2c.json")


if __name__ == "__main__":
    main()
