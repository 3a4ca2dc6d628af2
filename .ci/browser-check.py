#!/usr/bin/env python3
"""Browser test of sidecar-lite's status page, run by .ci/run after the tests.

Starts an upstream (python's http.server) and a sidecar-lite (the debug binary the tests
built) on 127.0.0.1, sends traffic that opens one endpoint's breaker, then loads the admin
status page in headless Chromium and checks that it reports no console errors and shows the
breaker states and request counters that /breakers and /metrics report. Saves a screenshot
to target/status-page.png. Stops only the processes it started, by PID. Exits non-zero on
any mismatch.
"""

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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def fail(message):
    print(f"browser check FAILED: {message}")
    sys.exit(1)


def main():
    if not os.path.exists(BINARY):
        fail(f"{BINARY} is missing; run the tests first")
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    healthy = f"127.0.0.1:{upstream.server_address[1]}"
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: connects are refused
    admin, listen, broken = free_port(), free_port(), free_port()
    # One endpoint per route, so which breaker opens does not depend on the balancer.
    config = f"""
[admin]
listen = "127.0.0.1:{admin}"
[[outbound]]
name = "orders"
listen = "127.0.0.1:{listen}"
endpoints = ["{healthy}"]
[[outbound]]
name = "broken"
listen = "127.0.0.1:{broken}"
endpoints = ["{dead}"]
retry = {{ attempts = 4, backoff = {{ base = "1ms", max = "2ms" }} }}
breaker = {{ minimum_calls = 2, window = {{ calls = 10 }}, open_for = "60s" }}
[log]
filter = "warn"
"""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sidecar.toml")
        with open(path, "w") as f:
            f.write(config)
        sidecar = subprocess.Popen([BINARY, "run", "--config", path])
        try:
            check(admin, listen, broken, dead, healthy, tmp)
        finally:
            sidecar.terminate()
            try:
                sidecar.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sidecar.kill()
            upstream.shutdown()
    print("browser check passed")


def check(admin, listen, broken, dead, healthy, tmp):
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
    statuses = [get(f"http://127.0.0.1:{listen}/item/{i}")[0] for i in range(30)]
    if statuses.count(200) != 30:
        fail(f"traffic through the sidecar failed: {statuses}")
    # Refused connects open the broken route's breaker within its first request's attempts.
    status = get(f"http://127.0.0.1:{broken}/")[0]
    if status not in (502, 503):
        fail(f"the broken route answered {status}")

    breakers = json.loads(get(f"{base}/breakers")[1])
    states = {b["endpoint"]: b["state"] for b in breakers}
    if states != {dead: "open", healthy: "closed"}:
        fail(f"unexpected breaker states: {states}")
    metrics = get(f"{base}/metrics")[1]

    profile = os.path.join(tmp, "profile")
    run = subprocess.run(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
         "--v=0", "--dump-dom", f"{base}/"],
        capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        fail(f"chromium failed: {run.stderr[-2000:]}")
    dom = run.stdout
    console_errors = [l for l in run.stderr.splitlines() if "CONSOLE" in l and "ERROR" in l.upper()]
    if console_errors:
        fail(f"console errors: {console_errors}")

    for endpoint, state in states.items():
        row = re.search(rf'data-endpoint="{re.escape(endpoint)}">.*?<td class="([a-z-]+)">', dom)
        if not row or row.group(1) != state:
            fail(f"the page shows {row and row.group(1)} for {endpoint}, /breakers says {state}")
        gauge = re.search(rf'resilience_breaker_state{{name="[a-z]+/{re.escape(endpoint)}"}} (\d+)', metrics)
        expected = {"closed": "0", "open": "1", "half-open": "2"}[state]
        if not gauge or gauge.group(1) != expected:
            fail(f"/metrics breaker gauge for {endpoint} is {gauge and gauge.group(1)}")

    counters = re.findall(r'sidecar_requests_total\{listener="([^"]+)",class="(\dxx)"\} (\d+)', metrics)
    shown = 0
    for listener, klass, count in counters:
        if count == "0":
            continue
        cell = re.search(rf'data-listener="{re.escape(listener)}" data-class="{klass}">.*?<td>(\d+)</td></tr>', dom)
        if not cell or cell.group(1) != count:
            fail(f"the page shows {cell and cell.group(1)} {klass} for {listener}, /metrics says {count}")
        shown += 1
    if shown == 0:
        fail("no request counters on the page")

    os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
    shot = subprocess.run(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1000,700",
         f"--screenshot={SCREENSHOT}", f"{base}/"],
        capture_output=True, text=True, timeout=120)
    if shot.returncode != 0 or not os.path.exists(SCREENSHOT):
        fail(f"no screenshot: {shot.stderr[-2000:]}")
    print(f"status page matches /breakers and /metrics; screenshot in {SCREENSHOT}")


if __name__ == "__main__":
    main()
