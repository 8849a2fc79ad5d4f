#!/usr/bin/env bash
# Side by side: our `trainer` and the official training loop (NVlabs/SPADE `train.py`, the
# official Pix2PixTrainer on the CPU with --gpu_ids -1), same options and the same data:
# custom layout, label_nc 12, no instance maps, 128x128, ngf 16, ndf 32, batch 2, no VGG
# loss, one epoch of 48 pairs = 24 iterations. Whole process, interleaved round by round,
# timed by /usr/bin/time -v (wall seconds and peak RSS). CI never runs this.
#
# Needs a checkout of the official code with its submodule (models/networks/sync_batchnorm):
#   SPADE_OFFICIAL=/path/to/SPADE bench/train_compare.sh [ROUNDS]
# Installs PyTorch and the official code's requirements into a venv (bench/.venv) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
official=${SPADE_OFFICIAL:?set SPADE_OFFICIAL to a checkout of NVlabs/SPADE}
venv=bench/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch torchvision dominate dill scikit-image scipy pillow numpy
fi
cargo build --release -q -p spade-model --bin trainer
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" bench/make_train_dataset.py "$work/data" --count 48 --size 128 --classes 12
common=(--dataset_mode custom --label_dir "$work/data/label" --image_dir "$work/data/image"
  --label_nc 12 --no_instance --load_size 128 --crop_size 128 --ngf 16 --ndf 32
  --batchSize 2 --no_vgg_loss --gpu_ids -1 --niter 1 --niter_decay 0
  --print_freq 1000000 --display_freq 1000000 --save_latest_freq 1000000
  --save_epoch_freq 1000000)
timed() { # label, command...
  local label=$1
  shift
  /usr/bin/time -f "$label %e s %M KiB" "$@" >/dev/null 2>"$work/time.log" || {
    cat "$work/time.log" >&2
    exit 1
  }
  tail -1 "$work/time.log"
}
for round in $(seq "$rounds"); do
  echo "== round $round"
  rm -rf "$work/ckpt"
  timed ours ./target/release/trainer --name bench --checkpoints_dir "$work/ckpt" "${common[@]}"
  rm -rf "$work/ckpt"
  (cd "$official" && timed official "$OLDPWD/$venv/bin/python" train.py --name bench \
    --checkpoints_dir "$work/ckpt" --no_html --nThreads 0 "${common[@]}")
done | tee "$work/all.log"
awk '
  / s .* KiB$/ { t[$1] = t[$1] " " $2; m[$1] = m[$1] " " $4 }
  function median(list,   a, n, i, j, x) {
    n = split(substr(list, 2), a, " ")
    for (i = 2; i <= n; i++)
      for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { x = a[j]; a[j] = a[j - 1]; a[j - 1] = x }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    to = median(t["ours"]); tf = median(t["official"])
    mo = median(m["ours"]) / 1024; mf = median(m["official"]) / 1024
    printf "medians: ours %.1f s, %.0f MiB; official %.1f s, %.0f MiB; speed %.2fx, memory %.2fx\n",
      to, mo, tf, mf, tf / to, mo / mf
  }' "$work/all.log"
