#!/usr/bin/env bash
# Native resolution end to end (not in CI; ~45 min on a 2-core CPU): the
# sparse VAE trained on whole 0.2 m frames of the quality benchmark's
# simulated scenes (12 x 24 frames, seed 11: scenes 00-08 train, 09-11 val)
# for MINUTES (default 15), its latents cached, the LDM trained on them for
# LDM_MINUTES (default 10), then `sample` on the held-out scenes 10-11
# (Heun, STEPS default 8) and the VAE's own reconstruction, each reported
# beside the radar alone (report.md, metrics.csv). Then the crop benchmark
# scores every run under the folder (SPARSE_QUALITY_DIR, default
# runs/sparse_quality): put a dense run there (scripts/crop_quality.sh's
# ultra_crops) to compare the families on the same boxes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
Q=${SPARSE_QUALITY_DIR:-runs/sparse_quality}
D=${SIM_DIR:-runs/quality/sim/ntu}
MINUTES=${MINUTES:-15}
LDM_MINUTES=${LDM_MINUTES:-10}
STEPS=${STEPS:-8}
bash scripts/libtorch.sh
cargo build --release --examples
B=target/release/examples
mkdir -p "$Q"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$Q/timings.txt"; }
[ -d "$D" ] || $B/simulate --out "$(dirname "$D")" --scenes 12 --frames 24 --seed 11 --if-missing --no-progress
if [ ! -f "$Q/sparse_vae/.done" ]; then
  log "train the sparse VAE for $MINUTES min"
  $B/train_sparse_vae --dataset-dir "$D" --config recipes/sparse_quality.toml --max-minutes "$MINUTES" \
    --out "$Q/sparse_vae" --overwrite --no-progress 2> "$Q/sparse_vae.log"
  touch "$Q/sparse_vae/.done"
fi
VAE=${VAE:-$Q/sparse_vae/last.safetensors}
if [ ! -f "$Q/latents/cache.json" ]; then
  log "cache latents"
  $B/precompute_latents --vae "$VAE" --dataset-dir "$D" --out "$Q/latents" --no-progress
fi
if [ ! -f "$Q/ldm/.done" ]; then
  log "train the LDM for $LDM_MINUTES min"
  $B/train_ldm --vae "$VAE" --dataset-dir "$D" --latents "$Q/latents" --config recipes/quality_ldm.toml \
    --val-scenes scene09 --max-minutes "$LDM_MINUTES" --out "$Q/ldm" --overwrite --no-progress 2> "$Q/ldm.log"
  touch "$Q/ldm/.done"
fi
TEST=scene10,scene11
log "sample the held-out scenes"
$B/sample --vae "$VAE" --ldm "$Q/ldm/last.safetensors" --dataset-dir "$D" --scenes $TEST --steps "$STEPS" \
  --solver heun --out "$Q/ldm_test" > "$Q/ldm_test.txt"
log "reconstruct the held-out scenes"
$B/sample --vae "$VAE" --dataset-dir "$D" --scenes $TEST --reconstruct --out "$Q/recon_test" > "$Q/recon_test.txt"
log "score every run on the crop benchmark's boxes"
CROP_QUALITY_DIR="$Q" SIM_DIR="$D" cargo bench --bench crop_quality | tee "$Q/table.md"
log "done"
