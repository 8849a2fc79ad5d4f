#!/usr/bin/env bash
# Load benchmark of spade-server on loopback with oha (`cargo install oha`): throughput and
# latency percentiles against concurrency, with dynamic batching on and off.
# Usage: bench/load.sh [MODEL_DIR] [LABEL_PNG] [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures=${SPADE_FIXTURES:-../shared/fixtures}
model=${1:-$fixtures/gen_coco_eval}
label=${2:-$fixtures/gen_coco_eval/label_0.png}
requests=${3:-200}
port=18181
command -v oha >/dev/null || { echo "oha not found: cargo install oha" >&2; exit 1; }
cargo build --release -q -p spade-server

run_server() { # max_batch_size
  ./target/release/spade-server --model "m=$model" --listen "127.0.0.1:$port" \
    --max-batch-size "$1" --max-batch-delay-ms 5 --max-queue 1024 >/dev/null 2>&1 &
  server=$!
  for _ in $(seq 600); do
    curl -sf "127.0.0.1:$port/readyz" >/dev/null && return
    sleep 0.1
  done
  echo "server did not become ready" >&2; exit 1
}

echo "| batching | concurrency | requests/s | p50 ms | p99 ms | mean batch |"
echo "|---|---|---|---|---|---|"
for batch in 8 1; do
  run_server "$batch"
  for c in 1 4 16; do
    before=$(curl -s "127.0.0.1:$port/metrics" | awk '/^spade_batch_size_(sum|count)/ {print $2}' | paste -sd' ')
    out=$(oha -n "$requests" -c "$c" -m POST -H 'Content-Type: image/png' -D "$label" \
      --no-tui --output-format json "http://127.0.0.1:$port/v1/synthesize")
    after=$(curl -s "127.0.0.1:$port/metrics" | awk '/^spade_batch_size_(sum|count)/ {print $2}' | paste -sd' ')
    python3 - "$out" "$before" "$after" "$batch" "$c" <<'PY'
import json, sys
out, before, after, batch, c = sys.argv[1:]
r = json.loads(out)
s0, n0 = map(float, before.split()); s1, n1 = map(float, after.split())
ok = r["statusCodeDistribution"].get("200", 0)
p = r["latencyPercentiles"]
print(f"| {'on (8)' if batch == '8' else 'off (1)'} | {c} | {r['summary']['requestsPerSec']:.1f} | "
      f"{p['p50'] * 1e3:.1f} | {p['p99'] * 1e3:.1f} | {(s1 - s0) / max(n1 - n0, 1):.2f} | "
      + ("" if ok == sum(r["statusCodeDistribution"].values()) else f"non-200: {r['statusCodeDistribution']}"))
PY
  done
  kill "$server"; wait "$server" 2>/dev/null || true
done
