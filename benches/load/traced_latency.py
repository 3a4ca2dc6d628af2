#!/usr/bin/env python3
"""Latency of one hop with tracing on, every request a span exported to a stand-in collector,
for two or more sidecar-lite binaries interleaved: the fixed-rate load of run.py (5 000 req/s
over 32 connections, loadgen, evenly paced) without its saturation runs, so that more
repetitions fit in the time and a tail that moves by a factor shows through the noise.

    python3 benches/load/traced_latency.py REPS BINARY [BINARY...]

For each binary (one worker, run.py's traced route), the medians over REPS runs of 3 s of p50,
p99 and p99.9 in microseconds, and the process's CPU time per request (at this rate, idle time
included); and each run's p99. Loopback only; it stops only the processes it started.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def main():
    reps, binaries = int(sys.argv[1]), [Path(b) for b in sys.argv[2:]]
    tmp = Path(tempfile.mkdtemp())
    sink = harness.OtlpSink()
    try:
        upstream = harness.start_upstream()
        targets = []
        for i, binary in enumerate(binaries):
            port = harness.free_port()
            proc = harness.start_sidecar(tmp, f"traced-{i}", 1,
                                         harness.traced_route(port, upstream, sink), binary=binary)
            targets.append((f"{i}: {binary}", port, proc))
        rows = {name: [] for name, _, _ in targets}
        for name, port, proc in harness.interleaved(targets, reps):
            before = cpu_seconds(proc.pids())
            out = json.loads(subprocess.run(
                [str(harness.RELEASE / "loadgen"), "--addr", f"127.0.0.1:{port}", "--rate", "5000",
                 "--connections", "32", "--seconds", "3", "--warmup", "0.5"],
                capture_output=True, text=True, timeout=60, check=True).stdout)
            used = cpu_seconds(proc.pids()) - before
            requests = out.get("requests") or out.get("completed") or 1
            rows[name].append((out["p50_us"], out["p99_us"], out.get("p999_us", 0),
                               used / requests * 1e6))
        for name, runs in rows.items():
            def median(i):
                return statistics.median(run[i] for run in runs)
            print(f"{name}: p50 {median(0):.1f} p99 {median(1):.1f} p99.9 {median(2):.1f} us, "
                  f"CPU {median(3):.1f} us/request; p99 of each run {[round(r[1]) for r in runs]}")
    finally:
        sink.stop()
        harness.stop_all()


if __name__ == "__main__":
    main()
