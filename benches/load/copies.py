#!/usr/bin/env python3
"""Bytes copied by memcpy, or heap allocations, per request of one sidecar-lite hop, by call
site: what the futures and requests moved through the layers cost, and what allocates.

Run it from the workspace root, after `benches/load/run.py` has built the release binaries:

    python3 benches/load/copies.py                      # memcpy/memmove, this build
    python3 benches/load/copies.py --allocations        # malloc
    python3 benches/load/copies.py --binary /tmp/before/sidecar-lite

A perf uprobe on glibc's memmove (memcpy is the same code) or malloc (and on jemalloc's
`_rjem_malloc` and `_rjem_mallocx` in the binary, which allocates with jemalloc by default)
reads each call's size and return address while `--requests` requests go one after another, on one keep-alive
connection, through the harness's one-hop route (one worker). Each call site is named by
addr2line: with LTO's inlining, that is the function the copy or allocation was inlined into,
so read it as a place to look, not a verdict. Large moves are futures (a layer's future holds
its inner one, and a box is filled by a copy); `cargo +nightly rustc -p sidecar-lite --lib
--release -- -Zprint-type-sizes` says what is inside them.

Needs root (uprobes) and perf (installed from Debian's packages when missing). It stays on
127.0.0.1, stops only the processes it started (by PID), removes its probes, and is bounded in
time.
"""

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import instructions  # noqa: E402  (the request sender)
import run as harness  # noqa: E402  (processes, ports, configs)

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
GROUP = "sidecar_copies"
# glibc picks one of these for memcpy and memmove by the CPU; a probe goes on each that exists.
MEMMOVES = ("__memmove_avx512_unaligned_erms", "__memmove_evex_unaligned_erms",
            "__memmove_avx_unaligned_erms", "__memmove_sse2_unaligned_erms")
RECORD_S = 120.0


def add_probes(allocations, binary):
    """Adds the uprobes; returns their event names. Size: memmove's third argument, malloc's
    first; the return address is on top of the stack at entry."""
    if allocations:
        targets = [(LIBC, "malloc", "%di"), (binary, "_rjem_malloc", "%di"),
                   (binary, "_rjem_mallocx", "%di")]
    else:
        targets = [(LIBC, name, "%dx") for name in MEMMOVES]
    events = []
    for i, (path, function, size) in enumerate(targets):
        event = f"{GROUP}:p{i}"
        added = subprocess.run(["perf", "probe", "-q", "-x", str(path), "-a",
                                f"{event}={function} size={size}:u64 ret=+0(%sp):x64"],
                               capture_output=True, text=True)
        if added.returncode == 0:
            events.append(event)
    if not events:
        sys.exit("could not place a uprobe (root and uprobes are needed)")
    return events


def remove_probes():
    subprocess.run(["perf", "probe", "-q", "-d", f"{GROUP}:*"], capture_output=True)


def executable_segments(pid, binary):
    """(start, end, file offset) of the binary's mappings in process `pid`."""
    segments = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and Path(fields[5]).name == Path(binary).name:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            segments.append((start, end, int(fields[2], 16)))
    return segments


def record(tmp, binary, upstream, events, requests):
    """perf's samples of `events` while `requests` go through a one-hop sidecar, and the
    sidecar's mappings."""
    listen = harness.free_port()
    sidecar = harness.start_sidecar(tmp, "copies", 1, harness.route(listen, upstream, False),
                                    binary=binary)
    instructions.send(listen, 300)  # connections and pools warm
    data = tmp / "perf.data"
    argv = ["perf", "record", "-q", "-o", str(data), "-p", str(sidecar.pid)]
    for event in events:
        argv += ["-e", event]
    perf = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # perf attached
        instructions.send(listen, requests)
        time.sleep(0.5)
    finally:
        perf.send_signal(2)
        perf.wait(timeout=RECORD_S)
    segments = executable_segments(sidecar.pid, binary)
    sidecar.stop()
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "trace"],
                            capture_output=True, text=True, timeout=RECORD_S).stdout
    return script, segments


def load_segments(binary):
    """(file offset, virtual address, size) of each of the binary's LOAD segments."""
    out = subprocess.run(["readelf", "-lW", str(binary)], capture_output=True, text=True,
                         check=True, timeout=RECORD_S).stdout
    return [(int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16))
            for m in re.finditer(r"^\s*LOAD\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+\S+\s+(0x[0-9a-f]+)",
                                 out, re.M)]


def to_address(segments, offset):
    """The virtual address addr2line wants for a file offset: a code segment is often loaded a
    page further than its place in the file, so the two differ."""
    for file_offset, address, size in segments:
        if file_offset <= offset < file_offset + size:
            return offset - file_offset + address
    return offset


def name_sites(binary, offsets):
    """addr2line's function name for each offset in `binary`."""
    if not offsets:
        return {}
    segments = load_segments(binary)
    # The return address is the instruction after the call: one byte back is inside the call.
    addresses = [hex(to_address(segments, o) - 1) for o in offsets]
    out = subprocess.run(["addr2line", "-f", "-C", "-e", str(binary)] + addresses,
                         capture_output=True, text=True, timeout=RECORD_S).stdout.splitlines()
    return {o: out[2 * i] for i, o in enumerate(offsets) if 2 * i < len(out)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=str(harness.RELEASE / "sidecar-lite"))
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--allocations", action="store_true", help="malloc instead of memcpy")
    parser.add_argument("--top", type=int, default=25, help="call sites to list")
    args = parser.parse_args()
    harness.ensure_tools({"perf": "linux-perf", "addr2line": "binutils"})
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-copies-"))
    remove_probes()
    events = add_probes(args.allocations, args.binary)
    try:
        port = harness.start_upstream()
        script, segments = record(tmp, args.binary, port, events, args.requests)
    finally:
        harness.stop_all()
        remove_probes()
        shutil.rmtree(tmp, ignore_errors=True)

    total = collections.Counter()
    sizes = collections.defaultdict(collections.Counter)
    calls = 0
    for line in script.splitlines():
        found = re.search(r"size=(\d+) ret=0x([0-9a-f]+)", line)
        if not found:
            continue
        size, ret = int(found.group(1)), int(found.group(2), 16)
        site = next((ret - start + offset for start, end, offset in segments
                     if start <= ret < end), None)  # None: a library's call
        total[site] += size
        sizes[site][size] += 1
        calls += 1
    n = args.requests
    what = "allocated" if args.allocations else "copied"
    print(f"{sum(total.values()) / n:.0f} bytes {what} per request in {calls / n:.1f} calls "
          f"({args.binary}, {n} requests)")
    top = [site for site, _ in total.most_common(args.top)]
    names = name_sites(args.binary, [s for s in top if s is not None])
    for site in top:
        common = ", ".join(f"{size} B x{count / n:.2f}"
                           for size, count in sizes[site].most_common(3))
        print(f"{total[site] / n:8.0f} B/request  [{common}]  "
              f"{names.get(site, 'in a shared library')[:140]}")


if __name__ == "__main__":
    main()
