#!/usr/bin/env python3
"""System calls, CPU time in user space and in the kernel, page faults and context switches per
request of one hop, sidecar-lite against HAProxy and bare-hyper: the kernel's side of run.py's
CPU ratio, as instructions.py is the user-space side.

Run it from the workspace root, after `benches/load/run.py` has built the release binaries:

    python3 benches/load/syscalls.py
    python3 benches/load/syscalls.py --binary /tmp/before/sidecar-lite --seconds 4 --reps 3
    python3 benches/load/syscalls.py --binary NEW --baseline OLD --reps 8

It starts the flaky upstream (no faults), sidecar-lite (one worker, the harness's one-hop
route), with `--baseline` a second sidecar-lite, HAProxy (one thread, the harness's config)
and bare-hyper (benches' `bare-proxy`, one worker), and for each, `--reps` times in turn (each
turn in the other order), counts the proxy's system calls with `perf stat` on the syscall
tracepoints while `wrk -t1 -c32` runs for `--seconds`: all of them, and the most frequent by
name, per request served; and from `/proc`, over the same seconds, its user and system CPU
time, its minor page faults and its context switches (voluntary and not) per request. At the
end, each target's median user and system time per request.

Needs root (tracepoints) and perf, wrk and HAProxy (installed from Debian's packages when
missing). It stays on 127.0.0.1, stops only the processes it started (by PID), and is bounded
in time.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402  (processes, ports, configs, wrk)

CALLS = ["read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
         "epoll_wait", "epoll_pwait", "epoll_ctl", "futex", "sched_yield", "clock_gettime",
         "accept4", "setsockopt", "mmap", "munmap", "madvise", "brk"]
EVENTS = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{call}" for call in CALLS]


def process_counters(pid):
    """`pid`'s user and system CPU seconds, minor page faults, and context switches so far."""
    fields = harness.proc_stat(pid)
    counters = {"user": int(fields[11]) / harness.CLK_TCK, "system": int(fields[12]) / harness.CLK_TCK,
                "faults": int(fields[7])}
    with open(f"/proc/{pid}/status") as f:
        switches = [int(line.split()[1]) for line in f if "ctxt_switches" in line]
    counters["switches"] = sum(switches)
    return counters


def count(pid, port, seconds):
    """Requests served, system calls of `pid` by name ("all" for every one), and its
    `process_counters` over the run, while wrk loads `port`."""
    before = process_counters(pid)
    perf = subprocess.Popen(["perf", "stat", "-x,", "-e", ",".join(EVENTS), "-p", str(pid)],
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.2)  # perf attached before the load starts
        _, requests, _ = harness.saturation(port, seconds)
    finally:
        perf.send_signal(subprocess.signal.SIGINT)
        _, err = perf.communicate(timeout=30)
    calls = {}
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            event = fields[2].split(":")[-1]
            calls["all" if event == "sys_enter" else event.removeprefix("sys_enter_")] = int(fields[0])
    after = process_counters(pid)
    return requests, calls, {key: after[key] - before[key] for key in after}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.one_hop_arguments(parser)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    with harness.one_hop_targets("syscalls", args) as (_, targets):
        runs = {name: [] for name, _, _ in targets}
        for name, target, proc in harness.interleaved(targets, args.reps):
            harness.saturation(target, 1)  # warm: connections open, pools filled
            requests, calls, counters = count(proc.pid, target, args.seconds)
            named = sorted(((n, call) for call, n in calls.items() if call != "all" and n),
                           reverse=True)
            per = {key: value / requests for key, value in counters.items()}
            runs[name].append(per)
            print(f"{name:12} {requests / args.seconds:8.0f} req/s  "
                  f"user {per['user'] * 1e6:5.2f} us, system {per['system'] * 1e6:5.2f} us, "
                  f"{per['faults']:.3f} page faults, {per['switches']:.3f} context switches, "
                  f"{calls.get('all', 0) / requests:.2f} system calls per request: "
                  + ", ".join(f"{call} {n / requests:.2f}" for n, call in named[:6]))
        print(f"\nMedians of {args.reps} interleaved runs, CPU us per request (ratio to HAProxy's):")
        haproxy_cpu = {key: statistics.median(run[key] for run in runs["HAProxy"])
                       for key in ("user", "system")}
        for name, per_run in runs.items():
            cpu = {key: statistics.median(run[key] for run in per_run) for key in ("user", "system")}
            total = statistics.median(run["user"] + run["system"] for run in per_run)
            print(f"{name:12} user {cpu['user'] * 1e6:5.2f} ({cpu['user'] / haproxy_cpu['user']:.2f}x), "
                  f"system {cpu['system'] * 1e6:5.2f} ({cpu['system'] / haproxy_cpu['system']:.2f}x), "
                  f"both {total * 1e6:5.2f}")


if __name__ == "__main__":
    main()
