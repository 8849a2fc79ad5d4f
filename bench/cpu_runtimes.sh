#!/usr/bin/env bash
# Side by side on this CPU, full COCO architecture at 256x256, the same weights everywhere
# (bench/cpu_runtimes.py exports PyTorch's model as ONNX and as an official checkpoint
# folder): `spade` in f32 and bf16 against OpenVINO in its default setting (bf16 where the
# CPU has AMX or AVX512-BF16) and with f32 forced, and ONNX Runtime. Interleaved round by
# round:
#   steady  seconds per forward at batch 1 and 4 after a warm-up (`spade bench --checkpoint`,
#           `cpu_runtimes.py steady`), with each runtime's output error against PyTorch f32;
#   whole   one process each, as a user runs it: load, one forward at batch 1 or 4, write
#           the output (`spade synthesize --semantics`, `cpu_runtimes.py once`), wall time and
#           peak RSS from /usr/bin/time; spade's outputs are checked against PyTorch too.
# Installs torch, onnx, openvino and onnxruntime into bench/.venv on first use; CI never
# runs this. Usage: bench/cpu_runtimes.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
venv=bench/.venv
if ! "$venv/bin/python" -c "import torch, onnx, openvino, onnxruntime" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch onnx openvino onnxruntime
fi
py="$venv/bin/python bench/cpu_runtimes.py"
model=${TMPDIR:-/tmp}/spade_coco_runtimes.onnx
export SPADE_FIXTURES=${SPADE_FIXTURES:-../shared/fixtures}
$py export --model "$model"
cargo build --release -q -p spade-cli
spade=./target/release/spade
grep -o -w -E 'avx512f|avx512_bf16|amx_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' '
echo "($(nproc) CPUs)"
whole() { # NAME COMMAND...: one line with wall seconds and peak RSS
  local name=$1
  shift
  /usr/bin/time -f "whole $name: %e s, peak RSS %M KB" "$@" >/dev/null 2>"$model.time" ||
    { cat "$model.time"; return 1; }
  tail -1 "$model.time"
}
for round in $(seq "$rounds"); do
  echo "== round $round"
  for batch in 1 4; do
    for dtype in f32 bf16; do
      $spade bench --checkpoint "$model.checkpoint" --batch "$batch" --iters 3 --dtype "$dtype" |
        tail -1 | sed "s/^/spade-$dtype batch $batch: /"
    done
  done
  $py steady --model "$model" --iters 3 2>/dev/null
  for batch in 1 4; do
    for dtype in f32 bf16; do
      out=$model.spade-$dtype-$batch.npy
      whole "spade-$dtype batch $batch" $spade synthesize --checkpoint "$model.checkpoint" \
        --semantics "$model.semantics$batch.npy" --out-npy "$out" --dtype "$dtype"
      $py error --model "$model" --out "$out" --batch "$batch"
    done
    for runtime in openvino-default openvino-f32 onnxruntime; do
      whole "$runtime batch $batch" $py once --model "$model" --runtimes "$runtime" --batch "$batch"
    done
  done
done
