#!/usr/bin/env python3
"""System calls per request of one hop, sidecar-lite against HAProxy: the kernel's side of
run.py's CPU ratio, as instructions.py is the user-space side.

Run it from the workspace root, after `benches/load/run.py` has built the release binaries:

    python3 benches/load/syscalls.py
    python3 benches/load/syscalls.py --binary /tmp/before/sidecar-lite --seconds 4 --reps 3

It starts the flaky upstream (no faults), sidecar-lite (one worker, the harness's one-hop
route) and HAProxy (one thread, the harness's config), and for each, `--reps` times in turn,
counts the proxy's system calls with `perf stat` on the syscall tracepoints while `wrk -t1
-c32` runs for `--seconds`: all of them, and the most frequent by name, per request served.

Needs root (tracepoints) and perf, wrk and HAProxy (installed from Debian's packages when
missing). It stays on 127.0.0.1, stops only the processes it started (by PID), and is bounded
in time.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402  (processes, ports, configs, wrk)

CALLS = ["read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
         "epoll_wait", "epoll_pwait", "epoll_ctl", "futex", "sched_yield", "clock_gettime",
         "accept4", "setsockopt", "mmap", "munmap", "madvise", "brk"]
EVENTS = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{call}" for call in CALLS]


def count(pid, port, seconds):
    """Requests served, and system calls of `pid` by name ("all" for every one), while wrk
    loads `port`."""
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
    return requests, calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=str(harness.RELEASE / "sidecar-lite"))
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    harness.ensure_tools({"perf": "linux-perf", "wrk": "wrk", "haproxy": "haproxy"})
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-syscalls-"))
    try:
        upstream = harness.start_upstream()
        port = harness.free_port()
        sidecar = harness.start_sidecar(tmp, "syscalls", 1, harness.route(port, upstream, False),
                                        binary=args.binary)
        harness.wait_http_ok(port, what="sidecar-lite", proc=sidecar)
        haproxy_port, haproxy = harness.start_haproxy(tmp, "haproxy", 1, upstream)
        for _ in range(args.reps):
            for name, target, proc in (("sidecar-lite", port, sidecar),
                                       ("HAProxy", haproxy_port, haproxy)):
                harness.saturation(target, 1)  # warm: connections open, pools filled
                requests, calls = count(proc.pid, target, args.seconds)
                named = sorted(((n, call) for call, n in calls.items() if call != "all" and n),
                               reverse=True)
                print(f"{name:12} {requests / args.seconds:8.0f} req/s  "
                      f"{calls.get('all', 0) / requests:.2f} system calls per request: "
                      + ", ".join(f"{call} {n / requests:.2f}" for n, call in named[:6]))
    finally:
        harness.stop_all()


if __name__ == "__main__":
    main()
