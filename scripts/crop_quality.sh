#!/usr/bin/env bash
# Issue 13's comparison (not in CI; ~1 hour on a 2-core CPU): the same VAE
# recipe (recipes/crop_quality_vae.toml) trained for the same wall-clock
# budget (MINUTES each, default 15, one run at a time, 2 threads) as
#   ultra_resampled  ultra_lightweight on frames resampled to (32, 128, 128)
#   ultra_crops      ultra_lightweight on native (0.2 m) crops (32, 128, 128)
#   seed_crops       seed_baseline on the same native crops
# then scored by the crop_quality bench on held-out simulated frames at
# native resolution (benches/crop_quality.rs says how).
# Needs the quality benchmark's simulated scenes (scripts/quality.sh makes
# them: 12 scenes x 24 frames at the native grid); results in $Q/table.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
Q=${CROP_QUALITY_DIR:-runs/crop_quality}
D=${SIM_DIR:-runs/quality/sim/ntu}
MINUTES=${MINUTES:-15}
bash scripts/libtorch.sh
cargo build --release --examples
B=target/release/examples
[ -d "$D" ] || $B/simulate --out "$(dirname "$D")" --scenes 12 --frames 24 --seed 11 --if-missing --no-progress
mkdir -p "$Q"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$Q/timings.txt"; }
train() { # name, flags...
  local name=$1; shift
  [ -f "$Q/$name/.done" ] && return
  log "train $name for $MINUTES min"
  OMP_NUM_THREADS=2 $B/train_vae --dataset-dir "$D" --config recipes/crop_quality_vae.toml --max-minutes "$MINUTES" \
    --out "$Q/$name" --overwrite --no-progress "$@" 2> "$Q/$name.log"
  touch "$Q/$name/.done"
  log "done $name: $(tail -1 "$Q/$name/train_log.csv" | cut -d, -f1-3)"
}
train ultra_resampled --vae-type ultra_lightweight --resample 32,128,128
train ultra_crops --vae-type ultra_lightweight --crop 32,128,128
train seed_crops --vae-type seed_baseline --crop 32,128,128
if [ "${TRAIN_ONLY:-0}" != 1 ]; then
  log "score"
  CROP_QUALITY_DIR="$Q" SIM_DIR="$D" cargo bench --bench crop_quality | tee "$Q/table.md"
fi
