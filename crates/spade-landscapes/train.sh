#!/usr/bin/env bash
# Regenerates the bundled landscapes model from nothing: the dataset, the training run and
# the converted half-precision file (docs/landscapes.md). About two hours on 2 CPU cores;
# not run in CI.
#   bash crates/spade-landscapes/train.sh [WORK_DIR]
# Environment: SAMPLES (default 1500, the shipped model's: iterations x batch size 2),
# GPU_IDS (default -1: CPU).
set -euo pipefail
cd "$(dirname "$0")/../.."
work="${1:-landscapes-work}"
samples="${SAMPLES:-1500}"

cargo build --release --locked -p spade-cli -p spade-model --bin spade --bin trainer
target/release/spade make-dataset landscapes --count 3000 --size 256 --seed 1 --out "$work/data"

# One pass over the first SAMPLES pairs at batch size 2 is SAMPLES / 2 iterations.
target/release/trainer --name landscapes --checkpoints_dir "$work/checkpoints" --gpu_ids "${GPU_IDS:--1}" \
  --dataset_mode custom --label_dir "$work/data/label" --image_dir "$work/data/image" \
  --label_nc 12 --no_instance --crop_size 256 --load_size 256 --preprocess_mode resize_and_crop \
  --ngf 12 --ndf 32 --use_vae --batchSize 2 --no_vgg_loss \
  --niter 1 --max_dataset_size "$samples" --print_freq 50 --display_freq 200 \
  --save_latest_freq 250 --seed 1

target/release/spade convert --checkpoint "$work/checkpoints/landscapes" --half \
  --classes "$work/data/classes.txt" --out crates/spade-landscapes/model/landscapes.safetensors
echo "quality: cargo run --release -p spade-landscapes --example quality"
