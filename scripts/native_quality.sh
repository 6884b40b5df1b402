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
#   2. the sparse VAE's latents cached; the LDM beside the direct baseline
#      (train_ldm --direct), recipes/native_ldm.toml, LDM_MINUTES (20) each;
#   3. LDM (Heun, STEPS = 8), direct and the VAE's own reconstruction
#      (the ceiling): threshold calibrated on scene09, scored on
#      scene10-11 beside the radar (evaluate, taus 0.5 and 1 m);
#   4. the crop benchmark (benches/crop_quality.rs) on every VAE of step 1,
#      the sparse ones also at inference keep threshold SPARSE_KEEP (0.3).
# Tables: $Q/table.md (densification) and $Q/vae_table.md (reconstruction).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
Q=${NATIVE_QUALITY_DIR:-runs/native}
D=${SIM_DIR:-runs/quality/sim/ntu}
VAE_MINUTES=${VAE_MINUTES:-15}
VAE_MINUTES_2=${VAE_MINUTES_2:-60}
LDM_MINUTES=${LDM_MINUTES:-20}
STEPS=${STEPS:-8}
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
  vae ultra_crops "$VAE_MINUTES" 1 "${dense[@]}" --vae-type ultra_lightweight --crop 32,128,128 &
  wait
  for n in sparse ultra_crops; do
    mkdir -p "$Q/vae/${n}_${VAE_MINUTES}min"
    cp "$Q/vae/$n/last.safetensors" "$Q/vae/$n/train_log.csv" "$Q/vae/${n}_${VAE_MINUTES}min/"
  done
  touch "$Q/vae/.done_first"
fi
if [ ! -f "$Q/vae/.done" ]; then
  log "VAEs: resumed to $VAE_MINUTES_2 min"
  vae sparse "$VAE_MINUTES_2" 0 "${sparse[@]}" &
  vae ultra_crops "$VAE_MINUTES_2" 1 "${dense[@]}" &
  wait
  touch "$Q/vae/.done"
fi
VAE=$Q/vae/sparse/last.safetensors
if [ ! -f "$Q/latents/cache.json" ]; then
  log "cache latents"
  $B/precompute_latents --vae "$VAE" --dataset-dir "$D" --out "$Q/latents" --no-progress
fi
ldm() { # name, core, flags...
  local name=$1 core=$2; shift 2
  [ -f "$Q/$name/.done" ] && return
  on "$core" $B/train_ldm --vae "$VAE" --dataset-dir "$D" --latents "$Q/latents" --config recipes/native_ldm.toml \
    --val-scenes scene09 --max-minutes "$LDM_MINUTES" --out "$Q/$name" --overwrite --no-progress "$@" 2> "$Q/$name.log"
  touch "$Q/$name/.done"
}
log "LDM (core 0) beside the direct baseline (core 1), $LDM_MINUTES min"
ldm ldm 0 &
ldm direct 1 --direct &
wait
score() { # name, core, sample flags...: calibrate on scene09, score scene10-11
  local name=$1 core=$2; shift 2
  local out=$Q/scores/$name
  [ -f "$out/test/metrics.csv" ] && return
  mkdir -p "$out"
  on "$core" $B/sample --vae "$VAE" --dataset-dir "$D" --scenes scene09 --out "$out/cal" --overwrite "$@" > /dev/null
  on "$core" $B/evaluate --vae "$VAE" --dataset-dir "$D" --scenes scene09 --predictions "$out/cal" --calibrate \
    --no-regions > "$out/calibrate.txt"
  local th t0 t1
  th=$(sed -n 's/^calibrated threshold \([0-9.]*\).*/\1/p' "$out/calibrate.txt")
  t0=$(date +%s.%N)
  on "$core" $B/sample --vae "$VAE" --dataset-dir "$D" --scenes scene10,scene11 --out "$out/test" --threshold "$th" \
    --overwrite "$@" > /dev/null
  t1=$(date +%s.%N)
  on "$core" $B/evaluate --vae "$VAE" --dataset-dir "$D" --scenes scene10,scene11 --predictions "$out/test" \
    --threshold "$th" > "$out/evaluate.txt"
  echo "$(echo "($t1 - $t0) / 48" | bc -l) s per test frame (sampling, one core), threshold $th" > "$out/test/s_per_frame.txt"
}
log "sample and score: LDM (core 0); direct, then the VAE's reconstruction (core 1)"
score ldm 0 --ldm "$Q/ldm/last.safetensors" --steps "$STEPS" --solver heun &
{ score direct 1 --ldm "$Q/direct/last.safetensors"; score vae_ceiling 1 --reconstruct; } &
wait
python3 scripts/quality_table.py "LDM (Heun, $STEPS steps)=$Q/scores/ldm/test" "direct=$Q/scores/direct/test" \
  "VAE reconstruction (ceiling)=$Q/scores/vae_ceiling/test" | tee "$Q/table.md"
log "crop benchmark on the VAEs"
SPARSE_KEEP=${SPARSE_KEEP:-0.3} CROP_QUALITY_DIR="$Q/vae" SIM_DIR="$D" cargo bench --bench crop_quality | tee "$Q/vae_table.md"
log "done"
