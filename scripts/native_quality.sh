#!/usr/bin/env bash
# Native resolution (0.2 m) end to end on the quality benchmark's simulated
# scenes (12 x 24 frames, seed 11: scenes 00-08 train, scene09 calibrates
# and picks checkpoints, scene10-11 are the test). Not in CI: ~100 min on
# a 2-core CPU. Two runs at a time, each pinned to one core (taskset, one
# libtorch and rayon thread), so the pair gets the same compute and the
# same wall clock:
#   1. the sparse VAE (recipes/sparse_quality.toml, whole native frames)
#      beside the dense ultra_lightweight VAE on native (32, 128, 128) crops
#      (recipes/crop_quality_vae.toml), VAE_MINUTES (15) each, copied to
#      *_15min, then resumed to VAE_MINUTES_2 (60) in all;
#   2-3. scripts/native_densify.sh on the sparse VAE: its latents, the LDM
#      beside the direct baseline (recipes/native_ldm.toml; LDM_EPOCHS
#      overrides its epochs), scored with the VAE's own reconstruction
#      (the ceiling) beside the radar;
#   4. the crop benchmark (benches/crop_quality.rs) on every VAE of step 1,
#      the sparse ones also at inference keep threshold SPARSE_KEEP (0.3).
# Tables: $Q/table.md (densification) and $Q/vae_table.md (reconstruction).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
Q=${NATIVE_QUALITY_DIR:-runs/native}
D=${SIM_DIR:-runs/quality/sim/ntu}
VAE_MINUTES=${VAE_MINUTES:-15}
VAE_MINUTES_2=${VAE_MINUTES_2:-60}
bash scripts/libtorch.sh
cargo build --release --examples
B=target/release/examples
[ -d "$D" ] || $B/simulate --out "$(dirname "$D")" --scenes 12 --frames 24 --seed 11 --if-missing --no-progress
mkdir -p "$Q/vae"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$Q/timings.txt"; }
on() { # core, command...: one core, one thread
  local core=$1; shift
  OMP_NUM_THREADS=1 RAYON_NUM_THREADS=1 taskset -c "$core" "$@"
}
vae() { # name, minutes, core, recipe, command...: a new run, or the same run resumed
  local name=$1 minutes=$2 core=$3 recipe=$4; shift 4
  local from=(--config "$recipe")
  [ -f "$Q/vae/$name/last.safetensors" ] && from=(--resume "$Q/vae/$name/last.safetensors")
  on "$core" "$@" "${from[@]}" --dataset-dir "$D" --max-minutes "$minutes" --out "$Q/vae/$name" --no-progress \
    2>> "$Q/vae/$name.log"
}
sparse=(recipes/sparse_quality.toml $B/train_sparse_vae)
dense=(recipes/crop_quality_vae.toml $B/train_vae)
if [ ! -f "$Q/vae/.done_first" ]; then
  log "VAEs: sparse (core 0) beside dense ultra crops (core 1), $VAE_MINUTES min"
  vae sparse "$VAE_MINUTES" 0 "${sparse[@]}" &
  a=$!
  vae ultra_crops "$VAE_MINUTES" 1 "${dense[@]}" --vae-type ultra_lightweight --crop 32,128,128 &
  wait $!; wait $a
  for n in sparse ultra_crops; do
    mkdir -p "$Q/vae/${n}_${VAE_MINUTES}min"
    cp "$Q/vae/$n/last.safetensors" "$Q/vae/$n/train_log.csv" "$Q/vae/${n}_${VAE_MINUTES}min/"
  done
  touch "$Q/vae/.done_first"
fi
if [ ! -f "$Q/vae/.done" ]; then
  log "VAEs: resumed to $VAE_MINUTES_2 min"
  vae sparse "$VAE_MINUTES_2" 0 "${sparse[@]}" &
  a=$!
  vae ultra_crops "$VAE_MINUTES_2" 1 "${dense[@]}" &
  wait $!; wait $a
  touch "$Q/vae/.done"
fi
NATIVE_DENSIFY_DIR=$Q EPOCHS=${LDM_EPOCHS:-} SIM_DIR=$D bash scripts/native_densify.sh "$Q/vae/sparse/last.safetensors"
log "crop benchmark on the VAEs"
SPARSE_KEEP=${SPARSE_KEEP:-0.3} CROP_QUALITY_DIR="$Q/vae" SIM_DIR="$D" cargo bench --bench crop_quality | tee "$Q/vae_table.md"
log "done"
