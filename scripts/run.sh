#!/usr/bin/env bash
# The main job: installs libtorch if needed (cached), simulates a small
# radar/LiDAR dataset (cached in runs/sim, regenerated if missing or if its
# config changed), then trains the VAE on it with recipes/main_job.toml
# (frames resampled to 2 m voxels) and, beside it on the other core, the
# sparse VAE on the same frames at native resolution
# (recipes/sparse_main_job.toml), each printing validation IoU per epoch
# (the sparse one at the end), and densifies: the direct baseline
# (recipes/main_job_direct.toml: radar latent to target latent in one call)
# on the VAE's latents (cached first), its threshold calibrated on a training scene, then
# `sample` on the held-out scene and `evaluate` printing prediction vs radar
# (IoU, F1, Chamfer) and writing bird's-eye pictures. Each run writes a
# fresh folder under runs/main/ (nothing is overwritten). Extra arguments
# go to train_vae.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/libtorch.sh
cargo build --release --examples
B=target/release/examples
$B/simulate --out runs/sim --scenes 5 --frames 24 --seed 7 --if-missing --no-progress
stamp=$(date +%Y%m%d-%H%M%S)
M="runs/main"
# The sparse VAE runs beside the dense VAE, one core and one libtorch thread
# each (on 2 AVX2 cores 5.5 min for the job against 10 min one after the
# other), its log printed at the end; a failure of either fails the job.
mkdir -p "$M"
RAYON_NUM_THREADS=1 $B/train_sparse_vae --dataset-dir runs/sim/ntu --config recipes/sparse_main_job.toml \
  --out "$M/sparse-vae-$stamp" --no-progress > "$M/sparse-vae-$stamp.log" 2>&1 &
sparse=$!
trap 'kill $sparse 2> /dev/null || true' EXIT
OMP_NUM_THREADS=1 $B/train_vae --dataset-dir runs/sim/ntu --config recipes/main_job.toml --out "$M/vae-$stamp" "$@"
VAE="$M/vae-$stamp/best.safetensors"
D="$M/direct-$stamp"
$B/precompute_latents --vae "$VAE" --dataset-dir runs/sim/ntu --split train --out "$D/latents" --no-progress > /dev/null
$B/train_ldm --vae "$VAE" --dataset-dir runs/sim/ntu --latents "$D/latents" --config recipes/main_job_direct.toml --direct \
  --val-scenes scene03 --out "$D" --no-progress
# best epoch and threshold from a training scene (scene03), scores on the held-out scene04
$B/sample --vae "$VAE" --ldm "$D/best.safetensors" --dataset-dir runs/sim/ntu --scenes scene03 --out "$D/calibration" > /dev/null
th=$($B/evaluate --vae "$VAE" --dataset-dir runs/sim/ntu --scenes scene03 --predictions "$D/calibration" --calibrate |
  sed -n 's/^calibrated threshold \([0-9.]*\).*/\1/p')
$B/sample --vae "$VAE" --ldm "$D/best.safetensors" --dataset-dir runs/sim/ntu --split val --threshold "$th" --out "$D/val" > /dev/null
echo "densified held-out frames (direct baseline, threshold $th from scene03) against the radar alone:"
$B/evaluate --vae "$VAE" --dataset-dir runs/sim/ntu --split val --predictions "$D/val" --threshold "$th"
echo "bird's-eye pictures (radar | prediction | target): $D/val/*.png"
echo "the sparse VAE on the same frames at native resolution, beside it ($M/sparse-vae-$stamp.log):"
if ! wait $sparse; then cat "$M/sparse-vae-$stamp.log"; exit 1; fi
tail -n 2 "$M/sparse-vae-$stamp.log"
