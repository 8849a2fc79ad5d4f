#!/usr/bin/env bash
# Side by side: `spade bench` and PyTorch eager (NCHW and channels_last) on the same CPU,
# interleaved round by round, COCO architecture, batch 1 and 4; prints each round's numbers
# and the ratios of the medians over rounds. Installs PyTorch into a venv (bench/.venv) on
# first use; CI never runs this.
# Usage: bench/compare.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
venv=bench/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch
fi
cargo build --release -q -p spade-cli
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for round in $(seq "$rounds"); do
  echo "== round $round"
  for batch in 1 4; do
    ./target/release/spade bench --arch coco --batch "$batch" --iters 3 | tail -1 |
      sed "s/^/spade batch $batch: /" | tee -a "$log"
    "$venv/bin/python" bench/pytorch_spade.py --batch "$batch" --iters 3 | grep images/s | tee -a "$log"
  done
done
# Median images/s per (implementation, batch), then spade over each PyTorch layout.
awk '
  /^spade batch/ { key = "spade " $3 }
  /^pytorch/     { key = $4 " " $6 }
  {
    sub(":", "", key)
    match($0, /[0-9.]+ images\/s/)
    vals[key] = vals[key] " " substr($0, RSTART, RLENGTH - 9)
  }
  END {
    for (k in vals) {
      n = split(substr(vals[k], 2), a, " ")
      for (i = 2; i <= n; i++)
        for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
      med[k] = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    print "== medians over rounds (images/s) and spade / PyTorch"
    for (b = 1; b <= 4; b *= 4) {
      s = med["spade " b]
      printf "batch %d: spade %.3f, nchw %.3f (%.2fx), channels_last %.3f (%.2fx)\n", b, s,
        med["nchw " b], s / med["nchw " b], med["channels_last " b], s / med["channels_last " b]
    }
  }' "$log"
