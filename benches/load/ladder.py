#!/usr/bin/env python3
"""One hop through several sidecar-lite binaries (one built at each step of a series of
changes, say) beside HAProxy and direct, interleaved in one run: each binary's req/s and CPU
per request as ratios to HAProxy's, so that the steps read off one table.

Run it from the workspace root, after building the binaries (run.py's `--baseline` explains
one way: a git worktree per commit):

    python3 benches/load/ladder.py --reps 5 \\
        before=/tmp/before/sidecar-lite now=target/release/sidecar-lite

Each binary serves run.py's one-hop route to the flaky upstream (no faults) with `--threads`
worker threads (one by default). In every repetition each target in turn gets wrk's 32
connections for `--seconds` (req/s, and CPU per request from /proc) and then one connection
for as long (the p50 a hop adds to one request after another). It writes
benches/load/results/ladder.{md,json} (or into `--results`).

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


def measure(targets, args, deadline):
    """Every target once per repetition, in turn: name -> list of its runs."""
    runs = {name: [] for name in targets}
    for rep in range(args.reps):
        for name, (port, procs) in targets.items():
            if time.monotonic() > deadline:
                harness.log("time is up; stopping the measurements early")
                return runs
            pids = [p for proc in procs for p in proc.pids()]
            cpu0 = harness.cpu_seconds(pids)
            rps, total, errors = harness.saturation(port, args.seconds)
            cpu = harness.cpu_seconds(pids) - cpu0
            alone = harness.one_at_a_time(port, args.seconds)
            runs[name].append({
                "rps": rps, "errors": errors + alone["errors"],
                "cpu_per_1000": cpu / total * 1000 if procs and total else None,
                "p50_one": alone["p50_us"],
            })
            harness.log(f"rep {rep + 1} {name:12s} {rps:9.0f} req/s  "
                        f"one connection p50 {alone['p50_us']:6.1f} us")
    return runs


def report(stats, idle, args):
    haproxy, direct = stats["haproxy"], stats["direct"]
    ratio = harness.ratio
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: one hop, "
             f"{args.threads} worker thread(s) per proxy, loopback, HTTP/1.1; medians of "
             f"{args.reps} interleaved runs (min-max). Saturation: wrk, 1 thread, 32 connections, "
             f"{args.seconds} s; one connection: wrk, one request after another.", "",
             "| target | req/s | vs HAProxy | CPU s/1000 req | vs HAProxy "
             "| added p50, one connection | vs HAProxy | RSS idle MiB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    added = {name: s["p50_one"]["median"] - direct["p50_one"]["median"] for name, s in stats.items()}
    for name, s in stats.items():
        vs = f"{added[name] / added['haproxy']:.2f}x" if added["haproxy"] > 0 and name != "direct" else "-"
        lines.append(
            f"| {name} | {harness.fmt(s['rps'])} | {ratio(s['rps'], haproxy['rps'])} "
            f"| {harness.fmt(s['cpu_per_1000'], 3)} | {ratio(s['cpu_per_1000'], haproxy['cpu_per_1000'])} "
            f"| {'-' if name == 'direct' else f'{added[name]:.0f} us'} | {vs} "
            f"| {harness.mib(idle.get(name))} |")
    errors = sum(r["errors"] for name in stats for r in stats[name]["runs"])
    lines += ["", f"Failed requests in these runs (non-2xx, socket errors): {errors}."]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("binaries", nargs="+", metavar="NAME=PATH",
                        help="sidecar-lite binaries, in the order of the table")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", help="where the table goes (default: benches/load/results)")
    args = parser.parse_args()
    binaries = parse_binaries(args.binaries)
    harness.ensure_tools()
    started = time.monotonic()
    # Half as long again as the runs should take (two wrk runs and a second around them per
    # target), and two minutes for starting and stopping the processes.
    deadline = started + 120 + 1.5 * args.reps * (len(binaries) + 2) * (2 * args.seconds + 1)
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-ladder-"))
    try:
        upstream_port, _ = harness.start_upstream_proc()
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
        runs = measure(targets, args, deadline)
        stats = {name: {**{key: harness.summary([r[key] for r in rs])
                           for key in ("rps", "cpu_per_1000", "p50_one")}, "runs": rs}
                 for name, rs in runs.items() if rs}
        table = report(stats, idle, args)
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
