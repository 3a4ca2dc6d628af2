#!/usr/bin/env python3
"""A CPU flame graph of one sidecar-lite hop with tracing on, every request a span exported to
a stand-in collector, with the samples of each of the sidecar's threads under its own root (a
worker, and `otlp-export`): where the export's work runs, and what it costs.

    python3 benches/load/flamegraph_traced.py [BINARY] [OUT.svg]

BINARY defaults to target/release/sidecar-lite, OUT to
benches/load/results/flamegraph-one-hop-traced.svg. It starts the harness's upstream, its
stand-in OTLP collector (run.py's `OtlpSink`) and the sidecar (one worker, run.py's traced
route) on 127.0.0.1, drives them with wrk (1 thread, 32 connections, 9 s), samples the sidecar
with perf (499 Hz, 5 s, DWARF stacks: no frame-pointer build needed) and renders with inferno;
the collapsed stacks are kept beside the SVG (`.folded`). perf, wrk and inferno as
flamegraph.sh installs them. It stops only the processes it started.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402


def main():
    binary = Path(sys.argv[1] if len(sys.argv) > 1 else harness.RELEASE / "sidecar-lite")
    out = Path(sys.argv[2] if len(sys.argv) > 2
               else harness.RESULTS / "flamegraph-one-hop-traced.svg")
    tmp = Path(tempfile.mkdtemp())
    sink = harness.OtlpSink()
    wrk = None
    try:
        upstream = harness.start_upstream()
        port = harness.free_port()
        sidecar = harness.start_sidecar(tmp, "traced", 1, harness.traced_route(port, upstream, sink),
                                        binary=binary)
        wrk = subprocess.Popen(["wrk", "-t1", "-c32", "-d9s", f"http://127.0.0.1:{port}/"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        samples = tmp / "perf.data"
        subprocess.run(["perf", "record", "-F", "499", "--call-graph", "dwarf,32768",
                        "-p", str(sidecar.pid), "-o", str(samples), "--", "sleep", "5"],
                       stderr=subprocess.DEVNULL, check=True)
        print(next((line for line in wrk.communicate()[0].splitlines()
                    if "Requests/sec" in line), "wrk: no result"))
        script = subprocess.run(["perf", "script", "-i", str(samples)], capture_output=True,
                                text=True, check=True).stdout
        folded = subprocess.run(["inferno-collapse-perf"], input=script, capture_output=True,
                                text=True, check=True).stdout
        out.with_suffix(".folded").write_text(folded)
        title = f"sidecar-lite, one hop, tracing on, wrk -t1 -c32 ({binary.name})"
        out.write_text(subprocess.run(["inferno-flamegraph", "--title", title], input=folded,
                                      capture_output=True, text=True, check=True).stdout)
        print(f"flame graph: {out}")
    finally:
        if wrk and wrk.poll() is None:
            wrk.kill()
        sink.stop()
        harness.stop_all()


if __name__ == "__main__":
    main()
