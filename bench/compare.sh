#!/usr/bin/env bash
# Side by side: `spade bench` and PyTorch eager on the same CPU, interleaved, COCO
# architecture. Installs PyTorch into a venv (bench/.venv) on first use; CI never runs this.
# Usage: bench/compare.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
venv=bench/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch
fi
cargo build --release -q -p spade-cli
for round in $(seq "$rounds"); do
  echo "== round $round"
  for batch in 1 4; do
    ./target/release/spade bench --arch coco --batch "$batch" --iters 3 | tail -1 | sed "s/^/spade batch $batch: /"
  done
  "$venv/bin/python" bench/pytorch_spade.py --batch 1 4 --iters 3
done
