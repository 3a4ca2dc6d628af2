#!/usr/bin/env bash
# A CPU flame graph of one sidecar-lite hop under load, for judging a data-path change:
#
#   benches/load/flamegraph.sh [BINARY] [OUT.svg]
#
# BINARY defaults to target/release/sidecar-lite; OUT to benches/load/results/flamegraph.svg.
# With FOLDED=PATH set, the collapsed stacks are kept there too. With ENDPOINTS=2 the route
# balances over two ports of the one upstream (the p2c balancer's path) instead of calling one.
# It starts the release flaky-upstream (no faults) and the sidecar (1 worker thread) on
# 127.0.0.1, drives them with wrk (1 thread, 32 connections, 8 s), samples the sidecar with
# `perf record -g` (999 Hz, 5 s) and renders with inferno. It installs perf, wrk and inferno
# when missing, and stops only the processes it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
binary=${1:-target/release/sidecar-lite}
out=${2:-benches/load/results/flamegraph.svg}
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf; }
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v inferno-flamegraph >/dev/null || cargo install --locked inferno
[ -x target/release/flaky-upstream ] || cargo build --release -p example-flaky-upstream

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
listen=$(port); admin=$(port)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

listens=(); endpoints=()
for _ in $(seq "${ENDPOINTS:-1}"); do
    upstream_port=$(port)
    listens+=(--listen "127.0.0.1:$upstream_port")
    endpoints+=("\"127.0.0.1:$upstream_port\"")
done
target/release/flaky-upstream "${listens[@]}" --worker-threads 1 >/dev/null &
pids+=($!)
cat > "$work/sidecar.toml" <<TOML
[admin]
listen = "127.0.0.1:$admin"
[runtime]
worker_threads = 1
[log]
filter = "error"
[[outbound]]
name = "app"
listen = "127.0.0.1:$listen"
endpoints = [$(IFS=,; echo "${endpoints[*]}")]
timeout = "5s"
max_concurrent_requests = 4096
TOML
"$binary" run --config "$work/sidecar.toml" >/dev/null &
sidecar=$!
pids+=("$sidecar")
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
wrk -t1 -c32 -d8s "http://127.0.0.1:$listen/" >"$work/wrk.txt" &
pids+=($!)
sleep 2
perf record -F 999 -g -p "$sidecar" -o "$work/perf.data" -- sleep 5 2>/dev/null
wait "${pids[-1]}" || true
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf >"$work/folded"
# FOLDED=path keeps the collapsed stacks, for reading the profile as text.
[ -n "${FOLDED:-}" ] && cp "$work/folded" "$FOLDED"
inferno-flamegraph <"$work/folded" --title "sidecar-lite, one hop, wrk -t1 -c32 ($(basename "$binary"))" >"$out"
grep -E "Requests/sec" "$work/wrk.txt" || true
echo "flame graph: $out"
