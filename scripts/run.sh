#!/usr/bin/env bash
# The main job: installs libtorch if needed (cached), simulates a small
# radar/LiDAR dataset (cached in runs/sim, regenerated if missing or if its
# config changed), then trains the VAE on it with recipes/main_job.toml
# (frames resampled to 2 m voxels), then the sparse VAE on the same frames
# at native resolution (recipes/sparse_main_job.toml), printing validation
# IoU per epoch. Each run writes a fresh folder under runs/main/ (nothing is
# overwritten). Extra arguments go to train_vae.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/libtorch.sh
cargo run --release --example simulate -- --out runs/sim --scenes 5 --frames 24 --seed 7 --if-missing --no-progress
stamp=$(date +%Y%m%d-%H%M%S)
cargo run --release --example train_vae -- --dataset-dir runs/sim/ntu --config recipes/main_job.toml --out "runs/main/vae-$stamp" "$@"
cargo run --release --example train_sparse_vae -- --dataset-dir runs/sim/ntu --config recipes/sparse_main_job.toml --out "runs/main/sparse-vae-$stamp"
