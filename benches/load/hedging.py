#!/usr/bin/env python3
"""Hedged requests under load: what hedging does to the tail, and what it costs the upstreams.

Run it from the workspace root (after `benches/load/run.py` has built the release binaries, or
without `--skip-build`):

    python3 benches/load/hedging.py --reps 5

Three flaky-upstreams on 127.0.0.1 and one sidecar-lite route balancing over them (retries
off, as a route hedges or retries), with and without `[outbound.hedge]` (`delay = { percentile
= 95, min = "5ms" }`, 2 copies), and with a hedge whose delay no request reaches (`min =
"10s"`: the layer's own cost, no copy sent), in two scenarios: one of the three waits 50 ms more on 10 % of
its requests (the balancer's peak-EWMA already steers most requests away from it; a copy that
wins cancels the slow attempt, so the balancer sees only its time until then and steers less),
and every one waits 50 ms more on 2 % of its requests (nowhere to steer to). Each
variant gets the same fixed-rate load (benches' `loadgen`, 1000 req/s, 32 connections, 5 s),
interleaved, `--reps` times. From the sidecar's `/metrics` it reads the requests served and the
hedged copies sent: the extra load on the upstreams. The route's retry budget (the default:
0.2 per request plus 10 per second) bounds the copies.

It writes benches/load/results/hedging.{md,json}; with `--warm SECONDS`, each run first gets
that long of the same load, unmeasured, so that the balancer has settled (its estimates start
from a default round-trip time of 30 ms and decay over 10 s), and it writes
hedging-warm.{md,json}. It stays on 127.0.0.1, stops only the
processes it started (by PID), and is bounded in time.
"""

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402  (the load harness's helpers: processes, builds, loadgen)

VARIANTS = {
    "plain": "",
    "hedged": '[outbound.hedge]\ndelay = { percentile = 95, min = "5ms" }\nmax_attempts = 2\n',
    "never": '[outbound.hedge]\ndelay = { percentile = 95, min = "10s" }\nmax_attempts = 2\n',
}
SCENARIOS = [
    ("one of three endpoints slow on 10 % of its requests", [None, None, "0.1"]),
    ("every endpoint slow on 2 % of its requests", ["0.02", "0.02", "0.02"]),
]


def route(listen, endpoints, variant):
    listed = ", ".join(f'"127.0.0.1:{port}"' for port in endpoints)
    return (f'[[outbound]]\nname = "app"\nlisten = "127.0.0.1:{listen}"\nendpoints = [{listed}]\n'
            f'timeout = "5s"\nmax_concurrent_requests = 4096\nretry = {{ attempts = 1 }}\n'
            + VARIANTS[variant])


def counter(text, name):
    """The sum of a Prometheus counter's series in `text`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            match = re.search(r"\s([0-9.e+]+)$", line)
            if match:
                total += float(match.group(1))
    return total


def metrics(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as response:
        return response.read().decode()


COUNTERS = {"requests": "sidecar_requests_total{", "hedges": "resilience_hedge_sent_total{",
            "won": "resilience_hedge_won_total{"}


def counters(admin):
    text = metrics(admin)
    return {key: counter(text, name) for key, name in COUNTERS.items()}


def one_run(tmp, endpoints, variant, args):
    listen = harness.free_port()
    proc = harness.start_sidecar(tmp, variant, 1, route(listen, endpoints, variant))
    harness.wait_port(listen, proc)
    try:
        if args.warm:
            # The same load first, unmeasured: the balancer's estimates start from a default
            # round-trip time and take tens of seconds to settle.
            harness.fixed_rate(listen, args.rate, args.warm)
        before = counters(proc.admin)
        fixed = harness.fixed_rate(listen, args.rate, args.seconds)
        after = counters(proc.admin)
        requests, hedges, won = (after[key] - before[key] for key in COUNTERS)
    finally:
        proc.stop()
    return {"p50": fixed["p50_us"], "p99": fixed["p99_us"], "p999": fixed["p999_us"],
            "errors": fixed["errors"], "requests": requests, "hedges": hedges, "won": won,
            "extra_load": hedges / requests if requests else 0.0}


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def report(scenarios, args):
    allowed = 0.2 + 10 / args.rate  # ratio plus min_per_second, per request at this rate
    warm = (f", each after {args.warm:g} s of the same load unmeasured" if args.warm else "")
    command = "python3 benches/load/hedging.py" + (f" --warm {args.warm:g}" if args.warm else "")
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: three upstreams, a slow "
        f"request waiting 50 ms more; fixed {args.rate} req/s over 32 connections, {args.seconds} s"
        f"{warm}; medians of {args.reps} interleaved runs (`{command}`).",
    ]
    for title, runs in scenarios:
        plain, hedged = runs["plain"], runs["hedged"]
        lines += ["", f"**{title}**", "",
                  "| variant | p50 us | p99 us | p99.9 us | copies sent per request | copies that won | failed |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, rs in (("no hedging", plain), ("hedging", hedged),
                         ("hedge layer, no copy due", runs["never"])):
            lines.append(f"| {name} | {median(rs, 'p50'):.0f} | {median(rs, 'p99'):.0f} | "
                         f"{median(rs, 'p999'):.0f} | {median(rs, 'extra_load'):.3f} | "
                         f"{median(rs, 'won'):.0f} | {sum(r['errors'] for r in rs)} |")
        lines += ["", f"Hedging / no hedging: p99 {median(hedged, 'p99') / median(plain, 'p99'):.2f}x, "
                      f"p99.9 {median(hedged, 'p999') / median(plain, 'p999'):.2f}x; extra load on the "
                      f"upstreams {median(hedged, 'extra_load'):.3f} copies per request, where the budget "
                      f"allows {allowed:.3f} (0.2 per request plus 10/s at {args.rate} req/s). "
                      f"The hedge layer with no copy due / no hedging: p99 "
                      f"{median(runs['never'], 'p99') / median(plain, 'p99'):.2f}x."]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warm", type=float, default=0.0,
                        help="seconds of unmeasured load before each run (results in hedging-warm.*)")
    parser.add_argument("--skip-build", action="store_true", help="use the binaries in target/release")
    args = parser.parse_args()
    if not args.skip_build:
        harness.build()
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-hedging-"))
    started = time.monotonic()
    # Bounded in time: half as long again as the runs should take (each with its warm-up),
    # and two minutes for starting and stopping the processes.
    runs = len(SCENARIOS) * len(VARIANTS) * args.reps
    deadline = 120 + 1.5 * runs * (args.seconds + args.warm)
    try:
        scenarios = []
        for title, slow_rates in SCENARIOS:
            endpoints, upstreams = [], []
            for rate in slow_rates:
                port = harness.free_port()
                slow = ["--slow-rate", rate, "--slow-latency", "50ms"] if rate else []
                proc = harness.Proc(f"upstream-{port}", [str(harness.RELEASE / "flaky-upstream"),
                                                         "--listen", f"127.0.0.1:{port}",
                                                         "--worker-threads", "1", *slow],
                                    stdout=harness.subprocess.DEVNULL)
                harness.wait_http_ok(port, what="an upstream", proc=proc)
                endpoints.append(port)
                upstreams.append(proc)
            runs = {variant: [] for variant in VARIANTS}
            for rep in range(args.reps):
                for variant in VARIANTS:  # interleaved
                    if time.monotonic() - started > deadline:
                        harness.log("time is up; stopping early")
                        break
                    result = one_run(tmp, endpoints, variant, args)
                    runs[variant].append(result)
                    harness.log(f"{title[:20]}: rep {rep + 1} {variant:6s} p99 {result['p99']:8.0f} us "
                                f"p99.9 {result['p999']:8.0f} us copies/request {result['extra_load']:.3f}")
            for proc in upstreams:
                proc.stop()
            scenarios.append((title, runs))
        table = report(scenarios, args)
        harness.RESULTS.mkdir(parents=True, exist_ok=True)
        name = "hedging-warm" if args.warm else "hedging"
        (harness.RESULTS / f"{name}.md").write_text(table + "\n")
        (harness.RESULTS / f"{name}.json").write_text(json.dumps(
            [{"scenario": title, "runs": runs} for title, runs in scenarios], indent=1))
        print(table)
    finally:
        harness.stop_all()
        harness.shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
