#!/usr/bin/env python3
"""One hop through several sidecar-lite binaries (one built at each step of a series of
changes, say) beside HAProxy and direct, interleaved in one run: each binary's req/s and CPU
per request as ratios to HAProxy's, so that the steps read off one table.

Run it from the workspace root, after building the binaries (run.py's `--baseline` explains
one way: a git worktree per commit) and once run.py (which builds the flaky upstream and the
load generator this uses):

    python3 benches/load/ladder.py --reps 5 \\
        before=/tmp/before/sidecar-lite now=target/release/sidecar-lite

Each binary serves run.py's one-hop route to the flaky upstream (no faults) with `--threads`
worker threads (one by default), and is measured as run.py measures its targets (its
`measure`): in every repetition each target in turn gets wrk's 32 connections (req/s, and CPU
per request from /proc), the fixed rate (the p99 a hop adds) and one connection (the p50 a hop
adds to one request after another). It writes benches/load/results/ladder.{md,json} (or into
`--results`).

It stays on 127.0.0.1, stops only the processes it started (by PID), and is bounded in time.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402  (processes, ports, configs, wrk)


def parse_binaries(specs):
    """`NAME=PATH` arguments, in order; each PATH must exist."""
    binaries = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            sys.exit(f"{spec!r}: expected NAME=PATH")
        if name in binaries or name in ("direct", "haproxy"):
            sys.exit(f"{spec!r}: the name {name!r} is taken")
        if not Path(path).is_file():
            sys.exit(f"{spec!r}: no file at {path}")
        binaries[name] = Path(path)
    return binaries


def report(runs, stats, idle, args):
    haproxy, direct = stats["haproxy"], stats["direct"]
    ratio = harness.ratio
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: one hop, "
             f"{args.threads} worker thread(s) per proxy, loopback, HTTP/1.1; medians of "
             f"{args.reps} interleaved runs (min-max). Saturation: wrk, 1 thread, 32 connections, "
             f"{args.saturation_seconds} s; p99 at a fixed {args.rate} req/s over 32 connections; "
             "one connection: wrk, one request after another.", "",
             "| target | req/s | vs HAProxy | CPU s/1000 req | vs HAProxy "
             f"| added p99 at {args.rate} req/s | vs HAProxy "
             "| added p50, one connection | vs HAProxy | RSS idle MiB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def added(key):
        """What each target adds over direct to `key`, and as a ratio to what HAProxy adds."""
        over = {name: s[key]["median"] - direct[key]["median"] for name, s in stats.items()}
        return {name: ("-", "-") if name == "direct" else (
                    f"{value:.0f} us",
                    f"{value / over['haproxy']:.2f}x" if over["haproxy"] > 0 else "-")
                for name, value in over.items()}

    p99, p50 = added("p99"), added("p50_one")
    for name, s in stats.items():
        lines.append(
            f"| {name} | {harness.fmt(s['rps'])} | {ratio(s['rps'], haproxy['rps'])} "
            f"| {harness.fmt(s['cpu_per_1000'], 3)} | {ratio(s['cpu_per_1000'], haproxy['cpu_per_1000'])} "
            f"| {' | '.join(p99[name])} | {' | '.join(p50[name])} "
            f"| {harness.mib(idle.get(name))} |")
    errors = sum(r["errors"] for rs in runs.values() for r in rs)
    lines += ["", f"Failed requests in these runs (non-2xx, socket errors, loadgen failures): "
                  f"{errors}."]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("binaries", nargs="+", metavar="NAME=PATH",
                        help="sidecar-lite binaries, in the order of the table")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--saturation-seconds", type=int, default=2)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--rate-seconds", type=float, default=2.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", help="where the table goes (default: benches/load/results)")
    args = parser.parse_args()
    binaries = parse_binaries(args.binaries)
    harness.ensure_tools()
    started = time.monotonic()
    # Half as long again as the runs should take, and two minutes for starting and stopping
    # the processes.
    deadline = (started + 120
                + 1.5 * args.reps * (len(binaries) + 2) * harness.seconds_per_target(args))
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-ladder-"))
    try:
        upstream_port, upstream = harness.start_upstream_proc()
        targets = {"direct": (upstream_port, [])}
        for name, binary in binaries.items():
            port = harness.free_port()
            proc = harness.start_sidecar(tmp, name, args.threads,
                                         harness.route(port, upstream_port, False), binary=binary)
            targets[name] = (port, [proc])
        port, haproxy = harness.start_haproxy(tmp, "haproxy", args.threads, upstream_port)
        targets["haproxy"] = (port, [haproxy])
        time.sleep(0.5)
        idle = {name: harness.memory_kib([p for proc in procs for p in proc.pids()], "VmRSS")
                for name, (_, procs) in targets.items() if procs}
        runs = harness.measure(targets, args, deadline, upstream)
        stats = harness.summaries(runs, ("rps", "cpu_per_1000", "p99", "p50_one"))
        table = report(runs, stats, idle, args)
        out = Path(args.results) if args.results else harness.RESULTS
        out.mkdir(parents=True, exist_ok=True)
        (out / "ladder.md").write_text(table + "\n")
        (out / "ladder.json").write_text(json.dumps(
            {"binaries": {name: str(path) for name, path in binaries.items()},
             "threads": args.threads, "idle_kib": idle, "runs": runs}, indent=1))
        print(table)
        harness.log(f"wrote {out}/ladder.* in {time.monotonic() - started:.0f} s")
    finally:
        harness.stop_all()


if __name__ == "__main__":
    main()
