#!/usr/bin/env python3
"""How long one hop holds a request on its way, one request at a time: the proxy's two legs,
sidecar-lite against HAProxy and bare-hyper. The added p50 of run.py's one-connection runs is
these legs plus the kernel's path, which every proxy takes alike; wrk's p50 moves by more
than a leg takes from run to run, the legs by a few percent.

Run it from the workspace root, after `benches/load/run.py` has built the release binaries:

    python3 benches/load/legs.py
    python3 benches/load/legs.py --binary NEW --baseline OLD --reps 5

It starts the flaky upstream (no faults), sidecar-lite (one worker, the harness's one-hop
route), with `--baseline` a second sidecar-lite, HAProxy (one thread, the harness's config)
and bare-hyper (benches' `bare-proxy`, one worker), and for each, `--reps` times in turn (each
turn in the other order), records the proxy's reads and writes (`perf record` on the syscall
tracepoints) while `wrk -t1 -c1` sends one request after another. The request leg runs from
the end of the read that brought a caller's request to the start of the write that sends it
upstream, the response leg from the end of the read of the upstream's answer to the start of
the write to the caller; a read is the caller's or the upstream's by its size (the harness's
request is about 40 bytes, its answer about 100). Each line is the median over a run's
requests; at the end, each target's median over the runs.

Needs root (tracepoints) and perf, wrk and HAProxy (installed from Debian's packages when
missing). It stays on 127.0.0.1, stops only the processes it started (by PID), and is bounded
in time.
"""

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402  (processes, ports, configs, wrk)

READS = ["read", "recvfrom"]
WRITES = ["write", "writev", "sendto"]
EVENTS = ([f"syscalls:sys_exit_{call}" for call in READS]
          + [f"syscalls:sys_enter_{call}" for call in WRITES])
# Reads shorter than this are a caller's request, longer ones the upstream's answer.
REQUEST_AT_MOST = 80
RECORD_S = 1.5
EVENT_LINE = re.compile(r"\s*([\d.]+):\s+\S+:(sys_\w+):\s*(.*)")


def record(pid, port, out):
    """Records `pid`'s reads and writes for `RECORD_S` seconds while wrk sends one request
    after another to `port`; the events as (seconds, name, arguments)."""
    wrk = subprocess.Popen(["wrk", "-t1", "-c1", f"-d{RECORD_S + 1.5:.0f}",
                            f"http://127.0.0.1:{port}/"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # wrk's connection open and warm
        argv = ["perf", "record", "-q", "-o", str(out), "-p", str(pid)]
        for event in EVENTS:
            argv += ["-e", event]
        subprocess.run(argv + ["--", "sleep", str(RECORD_S)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        wrk.wait(timeout=30)
    script = subprocess.run(["perf", "script", "--ns", "-i", str(out), "-F", "time,event,trace"],
                            capture_output=True, text=True, check=True).stdout
    return [(float(m.group(1)), m.group(2), m.group(3))
            for m in map(EVENT_LINE.match, script.splitlines()) if m]


def legs(events):
    """The request legs and the response legs in `events`, in microseconds."""
    request, response = [], []
    read = None  # (when it ended, how many bytes)
    for when, name, arguments in events:
        if name.startswith("sys_exit_"):
            returned = int(arguments.split()[-1], 16)
            if 0 < returned < 1 << 32:  # not an error, not EAGAIN
                read = (when, returned)
        elif read is not None:
            (request if read[1] <= REQUEST_AT_MOST else response).append((when - read[0]) * 1e6)
            read = None
    return request, response


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.one_hop_arguments(parser)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with harness.one_hop_targets("legs", args) as (tmp, targets):
        runs = {name: [] for name, _, _ in targets}
        for name, port, proc in harness.interleaved(targets, args.reps):
            request, response = legs(record(proc.pid, port, tmp / "legs.data"))
            if not request or not response:
                sys.exit(f"{name}: no legs recorded (is perf allowed to trace syscalls?)")
            run = (statistics.median(request), statistics.median(response))
            runs[name].append(run)
            print(f"{name:12} request leg {run[0]:5.2f} us, response leg {run[1]:5.2f} us "
                  f"({len(request)} requests)")
        print(f"\nMedians of {args.reps} interleaved runs, us (both legs, ratio to HAProxy's):")
        both = {name: statistics.median(r + s for r, s in per_run) for name, per_run in runs.items()}
        for name, per_run in runs.items():
            request = statistics.median(run[0] for run in per_run)
            response = statistics.median(run[1] for run in per_run)
            print(f"{name:12} request {request:5.2f}, response {response:5.2f}, "
                  f"both {both[name]:5.2f} ({both[name] / both['HAProxy']:.2f}x)")


if __name__ == "__main__":
    main()
