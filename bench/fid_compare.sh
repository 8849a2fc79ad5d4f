#!/usr/bin/env bash
# `spade fid` against pytorch-fid 0.3.0 on the CPU: the same two folders, the same weights
# file, whole process, interleaved, with both FIDs printed (BENCHMARKS.md).
#   bench/fid_compare.sh WEIGHTS.pth [N] [RUNS]
# WEIGHTS: pytorch-fid's pt_inception-2015-12-05-6726825d.pth, or any file with its keys
# (the fixtures' random-weight one costs the same). N images per set (default 100, 256x256
# procedural landscapes: seeds 1 and 2). Needs PYTHON (default python3) with torch,
# torchvision, scipy and pytorch-fid==0.3.0, and target/release/spade.
set -euo pipefail
cd "$(dirname "$0")/.."
weights="$(realpath "$1")"
n="${2:-100}"
runs="${3:-3}"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for seed in 1 2; do
  target/release/spade make-dataset landscapes --count "$n" --size 256 --seed "$seed" --out "$work/set$seed" >/dev/null
done
# pytorch-fid finds its weights in the torch hub cache.
mkdir -p "$work/torch/hub/checkpoints"
ln -s "$weights" "$work/torch/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth"
ours=(target/release/spade fid "$work/set1/image" "$work/set2/image" --inception "$weights" --batch-size 50)
theirs=(env TORCH_HOME="$work/torch" "$python" -m pytorch_fid "$work/set1/image" "$work/set2/image" --device cpu --batch-size 50 --num-workers 2)
"${ours[@]}" 2>/dev/null | tail -1
"${theirs[@]}" 2>/dev/null | tail -1
for _ in $(seq "$runs"); do
  for name in ours theirs; do
    declare -n cmd="$name"
    /usr/bin/time -f "$name %e s wall, %M KiB peak" "${cmd[@]}" >/dev/null 2>"$work/time.txt" || true
    tail -1 "$work/time.txt"
  done
done
