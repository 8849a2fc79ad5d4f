#!/usr/bin/env bash
# Regenerates the bundled landscapes model from nothing: the dataset, the two training
# stages and the converted half-precision file (docs/landscapes.md). About 2.6 hours on
# 2 CPU cores; not run in CI.
#   bash crates/spade-landscapes/train.sh [WORK_DIR]
# Environment: STEPS (default 3098: the shipped model's samples seen, i.e. iterations x
# batch size 2), GPU_IDS (default -1: CPU).
set -euo pipefail
cd "$(dirname "$0")/../.."
work="${1:-landscapes-work}"
steps="${STEPS:-3098}"

cargo build --release --locked -p spade-cli -p spade-model --bin spade --bin trainer
target/release/spade make-dataset landscapes --count 3000 --size 256 --seed 1 --out "$work/data"

options=(--name landscapes --checkpoints_dir "$work/checkpoints" --gpu_ids "${GPU_IDS:--1}"
  --dataset_mode custom --label_dir "$work/data/label" --image_dir "$work/data/image"
  --label_nc 12 --no_instance --crop_size 256 --load_size 256 --preprocess_mode resize_and_crop
  --ngf 12 --ndf 32 --use_vae --batchSize 2 --no_vgg_loss
  --print_freq 50 --display_freq 200 --save_latest_freq 250 --seed 1)
# Stage 1: the official losses (GAN, feature matching, KLD) for 1,562 samples.
target/release/trainer "${options[@]}" --niter 100 --max_total_steps 1562
# Stage 2: resumed with an L1 loss to the real photo, which the style encoder needs without
# a VGG loss; runs to STEPS samples in all.
target/release/trainer "${options[@]}" --niter 100 --continue_train --lambda_l1 10 \
  --max_total_steps "$steps"

target/release/spade convert --checkpoint "$work/checkpoints/landscapes" --half \
  --classes "$work/data/classes.txt" --out crates/spade-landscapes/model/landscapes.safetensors
echo "quality: cargo run --release -p spade-landscapes --example quality"
