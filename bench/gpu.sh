#!/usr/bin/env bash
# GPU side by side, for a machine with an NVIDIA GPU (H100/H200 class) and network access:
# `spade bench` (candle CUDA) and PyTorch CUDA eager on the full COCO-Stuff generator, batch
# 1, 8 and 32, in f32 and bf16, interleaved; then training iterations (`spade bench-train` on
# CUDA against bench/pytorch_train_step.py on CUDA) at the landscape and COCO configs. Builds the cuda feature (CUDA_COMPUTE_CAP=80 with
# Debian's CUDA 11.8; set it to 90 with CUDA 12) and installs PyTorch into bench/.venv.
# Usage: bench/gpu.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}
venv=bench/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch
fi
cargo build --release -q -p spade-cli --features cuda
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for round in $(seq "$rounds"); do
  echo "== round $round"
  for dtype in f32 bf16; do
    for batch in 1 8 32; do
      ./target/release/spade bench --arch coco --device cuda:0 --dtype "$dtype" --batch "$batch" --iters 5 \
        | tail -1 | sed "s/^/spade cuda $dtype batch $batch: /"
    done
    "$venv/bin/python" bench/pytorch_spade.py --device cuda --dtype "$dtype" --layout nchw channels_last \
      --batch 1 8 32 --iters 5
  done
done
echo "== training (s/iteration, f32)"
for round in $(seq "$rounds"); do
  for config in landscape:2 landscape:8 coco:1 coco:4; do
    name=${config%%:*} batch=${config##*:}
    ./target/release/spade bench-train --config "$name" --batch "$batch" --iters 5 --device cuda:0 \
      | tail -1 | sed "s/^/spade cuda $name batch $batch: /"
    "$venv/bin/python" bench/pytorch_train_step.py --config "$name" --batch "$batch" --iters 5 --device cuda
  done
done
