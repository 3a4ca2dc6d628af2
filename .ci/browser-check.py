#!/usr/bin/env python3
"""Browser test of sidecar-lite's status page, run by .ci/run after the tests.

Starts upstreams (python's http.server) and a sidecar-lite (the debug binary the tests built)
on 127.0.0.1, and sends traffic with known outcomes, one route each: successes (balanced over
two endpoints); 503s that are retried and then succeed; refused connects that open a breaker;
requests that time out. Then
it loads the admin status page in headless Chromium (letting its script poll /status.json and
draw the charts) and checks that it reports no console errors, that each listener's figures
match the traffic sent, and that they agree with /metrics, /breakers and /status.json. Saves a
screenshot to target/status-page.png. Stops only the processes it started, by PID. Exits
non-zero on any mismatch.
"""

import html
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tests built the binary wherever cargo puts its output.
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
BINARY = os.path.join(TARGET, "debug", "sidecar-lite")
SCREENSHOT = os.path.join(ROOT, "target", "status-page.png")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
OK, RETRIED, BROKEN, SLOW = 30, 10, 3, 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream(http.server.BaseHTTPRequestHandler):
    """/flaky answers 503 to a first attempt and 200 to a retry; /slow answers after 3 s;
    anything else 200."""

    def do_GET(self):
        if self.path.startswith("/flaky") and not self.headers.get("x-retry-attempt"):
            status = 503
        else:
            status = 200
        if self.path.startswith("/slow"):
            time.sleep(3)
        body = b"ok\n"
        try:
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the sidecar gave up on a slow one

    def log_message(self, *args):
        pass


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def fail(message):
    print(f"browser check FAILED: {message}")
    sys.exit(1)


def main():
    if not os.path.exists(BINARY):
        fail(f"{BINARY} is missing; run the tests first")
    upstreams = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream) for _ in range(2)]
    for upstream in upstreams:
        threading.Thread(target=upstream.serve_forever, daemon=True).start()
    healthy, second = (f"127.0.0.1:{u.server_address[1]}" for u in upstreams)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: connects are refused
    admin = free_port()
    ports = {name: free_port() for name in ("orders", "flaky", "broken", "slow")}
    # One endpoint per route but orders, so which breaker opens does not depend on a balancer.
    config = f"""
[admin]
listen = "127.0.0.1:{admin}"
[[outbound]]
name = "orders"
listen = "127.0.0.1:{ports['orders']}"
endpoints = ["{healthy}", "{second}"]
[[outbound]]
name = "flaky"
listen = "127.0.0.1:{ports['flaky']}"
endpoints = ["{healthy}"]
retry = {{ on = ["gateway-error"], backoff = {{ base = "1ms", max = "2ms" }} }}
# Half the attempts fail (each first one): the breaker stays closed below 90 %.
breaker = {{ failure_rate = 0.9 }}
[[outbound]]
name = "broken"
listen = "127.0.0.1:{ports['broken']}"
endpoints = ["{dead}"]
retry = {{ attempts = 4, backoff = {{ base = "1ms", max = "2ms" }} }}
breaker = {{ minimum_calls = 2, window = {{ calls = 10 }}, open_for = "60s" }}
[[outbound]]
name = "slow"
listen = "127.0.0.1:{ports['slow']}"
endpoints = ["{healthy}"]
timeout = "300ms"
[log]
filter = "warn"
"""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sidecar.toml")
        with open(path, "w") as f:
            f.write(config)
        sidecar = subprocess.Popen([BINARY, "run", "--config", path])
        try:
            check(admin, ports, dead, (healthy, second), tmp)
        finally:
            sidecar.terminate()
            try:
                sidecar.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sidecar.kill()
            for upstream in upstreams:
                upstream.shutdown()
    print("browser check passed")


def send(port, path, n):
    """`n` GETs of `path`; their statuses and x-sidecar-error flags."""
    answers = [get(f"http://127.0.0.1:{port}{path}/{i}") for i in range(n)]
    return [status for status, _, _ in answers], [h.get("x-sidecar-error") for _, h, _ in answers]


def check(admin, ports, dead, healthy, tmp):
    """`healthy`: the two endpoints that answer."""
    base = f"http://127.0.0.1:{admin}"
    for _ in range(100):  # at most 10 s
        try:
            if get(f"{base}/ready")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        fail("the sidecar did not become ready")

    statuses, _ = send(ports["orders"], "/item", OK)
    if statuses != [200] * OK:
        fail(f"orders: {statuses}")
    statuses, _ = send(ports["flaky"], "/flaky", RETRIED)
    if statuses != [200] * RETRIED:
        fail(f"flaky (each 503 retried once): {statuses}")
    statuses, broken_flags = send(ports["broken"], "", BROKEN)
    if not all(s in (502, 503) for s in statuses) or "breaker-open" not in broken_flags:
        fail(f"broken: {statuses} {broken_flags}")
    statuses, slow_flags = send(ports["slow"], "/slow", SLOW)
    if statuses != [504] * SLOW or slow_flags != ["timeout"] * SLOW:
        fail(f"slow: {statuses} {slow_flags}")
    expected = {
        # listener: (requests, success rate, rejected by reason, retried share)
        "outbound/orders": (OK, "100.0%", {}, "0.0%"),
        "outbound/flaky": (RETRIED, "100.0%", {}, "100.0%"),
        "outbound/broken": (BROKEN, "0.0%", count(broken_flags), None),
        "outbound/slow": (SLOW, "0.0%", {"timeout": SLOW}, "0.0%"),
    }

    status = json.loads(get(f"{base}/status.json")[2])
    metrics = get(f"{base}/metrics")[2]
    breakers = {(b["route"], b["endpoint"]): b["state"]
                for b in json.loads(get(f"{base}/breakers")[2])}
    expected_breakers = {("orders", healthy[0]): "closed", ("orders", healthy[1]): "closed",
                         ("flaky", healthy[0]): "closed", ("broken", dead): "open",
                         ("slow", healthy[0]): "closed"}
    if breakers != expected_breakers:
        fail(f"unexpected breaker states: {breakers}")

    profile = os.path.join(tmp, "profile")
    run = subprocess.run(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=5000", "--dump-dom", f"{base}/"],
        capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        fail(f"chromium failed: {run.stderr[-2000:]}")
    dom = run.stdout
    console_errors = [l for l in run.stderr.splitlines() if "CONSOLE" in l and "ERROR" in l.upper()]
    if console_errors:
        fail(f"console errors: {console_errors}")

    listeners = {l["name"]: l for l in status["listeners"]}
    for name, (requests, success, rejected, retried) in expected.items():
        row = re.search(rf'<tr data-listener="{re.escape(name)}">(.*?)</tr>', dom)
        if not row:
            fail(f"no row for {name}")
        cells = dict(re.findall(r'data-field="([a-z_0-9]+)">([^<]*)<', row.group(1)))
        shown = (int(cells["requests"]), cells["success_rate"], parse_rejected(cells["rejected"]))
        if shown != (requests, success, rejected):
            fail(f"{name}: the page shows {shown}, the traffic was {(requests, success, rejected)}")
        if retried is not None and cells["retried_share"] != retried:
            fail(f"{name}: retried {cells['retried_share']}, expected {retried}")
        window = listeners[name]["window"]
        if window["requests"] != requests:
            fail(f"{name}: /status.json counts {window['requests']} requests, the traffic {requests}")
        by_metrics = sum(int(n) for n in re.findall(
            rf'sidecar_requests_total{{listener="{re.escape(name)}",class="\dxx"}} (\d+)', metrics))
        if by_metrics != requests:
            fail(f"{name}: /metrics counts {by_metrics} requests, the page {requests}")
        # The chart was drawn by the script, from /status.json.
        if not re.search(rf'<figure data-listener="{re.escape(name)}"><svg[^>]*data-drawn="status.json"', dom):
            fail(f"{name}: the chart was not drawn from /status.json")
    if listeners["outbound/flaky"]["window"]["retries_per_second"] <= 0:
        fail("flaky: no retries per second")
    slow_p99 = listeners["outbound/slow"]["window"]["p99_ms"]
    if slow_p99 is None or not 300 <= slow_p99 <= 300 * 1.25 + 50:
        fail(f"slow: p99 {slow_p99} ms, each request took the 300 ms timeout")
    local = dict(re.findall(r'sidecar_local_responses_total\{reason="([a-z-]+)"\} (\d+)', metrics))
    total = {}
    for _, _, rejected, _ in expected.values():
        for reason, n in rejected.items():
            total[reason] = total.get(reason, 0) + n
    if {k: int(v) for k, v in local.items()} != total:
        fail(f"/metrics local responses {local}, the page {total}")

    for (route, endpoint), state in breakers.items():
        row = re.search(rf'<tr data-route="{route}" data-endpoint="{re.escape(endpoint)}">(.*?)</tr>', dom)
        shown = row and re.search(r'<td class="([a-z-]+)">', row.group(1))
        if not shown or shown.group(1) != state:
            fail(f"the page shows {shown and shown.group(1)} for {route} {endpoint}, "
                 f"/breakers says {state}")
        load = re.findall(r'<td class="n">([^<]*)</td>', row.group(1))[-1]
        # Only a route of several endpoints has a balancer, and so a load estimate.
        if (route == "orders") != load.endswith(" us"):
            fail(f"{route} {endpoint}: balancer load {load!r}")
        if route == "broken" and "closed -&gt; open" not in row.group(1):
            fail(f"the open breaker's transition is not shown: {row.group(1)}")
    if status["process"]["worker_threads"] < 1 or not status["process"]["rss_bytes"]:
        fail(f"process figures missing: {status['process']}")

    os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
    shot = subprocess.run(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1300,900",
         "--virtual-time-budget=5000", f"--screenshot={SCREENSHOT}", f"{base}/"],
        capture_output=True, text=True, timeout=120)
    if shot.returncode != 0 or not os.path.exists(SCREENSHOT):
        fail(f"no screenshot: {shot.stderr[-2000:]}")
    print(f"status page matches the traffic, /status.json, /metrics and /breakers; "
          f"screenshot in {SCREENSHOT}")


def count(flags):
    counts = {}
    for flag in flags:
        if flag:
            counts[flag] = counts.get(flag, 0) + 1
    return counts


def parse_rejected(cell):
    """'breaker-open 2, connect 1' -> {'breaker-open': 2, 'connect': 1}; '-' -> {}."""
    cell = html.unescape(cell).strip()
    if cell == "-":
        return {}
    return {reason: int(n) for reason, n in (part.rsplit(" ", 1) for part in cell.split(", "))}


if __name__ == "__main__":
    main()
