#!/usr/bin/env bash
# Training data at the quality benchmark's coarse grid (not in CI; ~3 hours
# on a 2-core CPU). The benchmark trains on 9 scenes (216 frames). The
# simulator makes more for free: seed 11 with 48 scenes reproduces the
# benchmark's scenes 00-11 byte for byte (a scene depends on the seed and
# its index only) and adds scenes 12-47. Two pipelines side by side, each
# pinned to one core with one thread (taskset), every stage the
# benchmark's recipe:
#   small  trains on scene00-08 (the benchmark's 9 scenes),
#   large  trains on scene00-08 + scene12-47 (45 scenes, 1,080 frames);
# the VAE (recipes/quality_vae.toml, the same epochs: 5x the steps for
# large), its latents, then per seed of SEEDS (0 1 2) the LDM and the
# direct baseline (recipes/quality_ldm.toml; large runs LARGE_LDM_EPOCHS,
# default 6 = the small runs' 30 epochs in optimizer steps: the same
# compute on more scenes). Both validate and pick checkpoints on scene09
# only; thresholds calibrated on scene09; scored on the benchmark's
# held-out scene10-11 beside the radar (evaluate --taus 2,4), with the VAE's
# reconstruction as the ceiling. Table: $Q/table.md (mean +- std over the
# seeds, scripts/quality_table.py). EXTRA=1 adds per seed the plain LDM as
# the probability of 8 samples (sample --samples 8) and its consistency
# distillation (recipes/quality_cd.toml; large: LARGE_CD_EPOCHS, default 3
# = the small runs' 15 epochs in steps) sampled in 1, 2 and 4 calls
# (EXTRA=cd: the distillation alone); BEST=1 scores the LDM's and the
# direct baseline's best.safetensors too (val F1 on scene09, the
# calibration scene) beside last.safetensors; SIZES
# (default "small large") picks the pipelines that run (the table shows
# both).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
Q=${QUALITY_DATA_DIR:-runs/quality_data}
SEEDS=${SEEDS:-"0 1 2"}
LARGE_LDM_EPOCHS=${LARGE_LDM_EPOCHS:-6}
LARGE_CD_EPOCHS=${LARGE_CD_EPOCHS:-3}
SIZES=${SIZES:-"small large"}
bash scripts/libtorch.sh
cargo build --release --examples
B=target/release/examples
S=${SIM48_DIR:-runs/quality/sim48}
$B/simulate --out "$S" --scenes 48 --frames 24 --seed 11 --if-missing --no-progress > /dev/null
D=$S/ntu
mkdir -p "$Q"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$Q/timings.txt"; }
on() { # core, command...: one core, one thread
  local core=$1; shift
  OMP_NUM_THREADS=1 RAYON_NUM_THREADS=1 taskset -c "$core" "$@"
}
scenes() { # first, last: scene names, comma-separated
  seq -f 'scene%02g' "$1" "$2" | paste -sd, -
}
declare -A TRAIN=([small]=$(scenes 0 8) [large]=$(scenes 0 8),$(scenes 12 47))
declare -A CORE=([small]=0 [large]=1)
splits() { echo --train-scenes "${TRAIN[$1]}" --val-scenes scene09; }
score() { # size, name, core, sample flags...: calibrate on scene09, score scene10-11
  local size=$1 name=$2 core=$3; shift 3
  local out=$Q/$size/scores/$name vae=$Q/$size/vae/best.safetensors
  [ -f "$out/evaluate.txt" ] && return
  mkdir -p "$out"
  on "$core" $B/sample --vae "$vae" --dataset-dir "$D" --scenes scene09 --out "$out/cal" --overwrite "$@" > /dev/null
  on "$core" $B/evaluate --vae "$vae" --dataset-dir "$D" --scenes scene09 --predictions "$out/cal" --taus 2,4 \
    --calibrate > "$out/calibrate.txt"
  local th t1 t2
  th=$(sed -n 's/^calibrated threshold \([0-9.]*\).*/\1/p' "$out/calibrate.txt")
  t1=$(date +%s.%N)
  on "$core" $B/sample --vae "$vae" --dataset-dir "$D" --scenes scene10,scene11 --out "$out/test" --threshold "$th" \
    --overwrite "$@" > /dev/null
  t2=$(date +%s.%N)
  on "$core" $B/evaluate --vae "$vae" --dataset-dir "$D" --scenes scene10,scene11 --predictions "$out/test" \
    --taus 2,4 --threshold "$th" > "$out/evaluate.txt"
  echo "$(echo "($t2 - $t1) / 48" | bc -l) s per test frame (sampling, one core), threshold $th" \
    > "$out/test/s_per_frame.txt"
}
pipeline() { # size: VAE, latents, then the LDM and the direct baseline per seed
  local size=$1 core=${CORE[$1]} P=$Q/$1
  mkdir -p "$P"
  # shellcheck disable=SC2046 # splits gives flags
  if [ ! -f "$P/vae/.done" ]; then
    log "$size: VAE on core $core"
    on "$core" $B/train_vae --dataset-dir "$D" --config recipes/quality_vae.toml $(splits "$size") --out "$P/vae" \
      --overwrite --no-progress 2> "$P/vae.log"
    touch "$P/vae/.done"
  fi
  local vae=$P/vae/best.safetensors
  [ -f "$P/latents/cache.json" ] ||
    on "$core" $B/precompute_latents --vae "$vae" --dataset-dir "$D" --out "$P/latents" --no-progress > /dev/null
  score "$size" vae_ceiling "$core" --reconstruct
  local epochs=()
  [ "$size" = large ] && epochs=(--epochs "$LARGE_LDM_EPOCHS")
  for seed in $SEEDS; do
    for variant in plain direct; do
      local name=${variant}_s$seed flags=() sample_flags=(--steps 18 --solver heun)
      [ "$variant" = direct ] && flags=(--direct) && sample_flags=()
      if [ ! -f "$P/$name/.done" ]; then
        log "$size: $name on core $core"
        # shellcheck disable=SC2046
        on "$core" $B/train_ldm --vae "$vae" --dataset-dir "$D" --latents "$P/latents" --config recipes/quality_ldm.toml \
          "${epochs[@]}" "${flags[@]}" --seed "$seed" $(splits "$size") --out "$P/$name" --overwrite --no-progress \
          2> "$P/$name.log"
        touch "$P/$name/.done"
      fi
      score "$size" "$name" "$core" --ldm "$P/$name/last.safetensors" "${sample_flags[@]}"
      [ -z "${BEST:-}" ] ||
        score "$size" "${variant}_best_s$seed" "$core" --ldm "$P/$name/best.safetensors" "${sample_flags[@]}"
    done
    [ -n "${EXTRA:-}" ] || continue
    # the plain LDM as the probability of 8 samples, and its consistency distillation in 1, 2 and 4 calls
    [ "$EXTRA" = cd ] ||
      score "$size" "plain_k8_s$seed" "$core" --ldm "$P/plain_s$seed/last.safetensors" --steps 18 --solver heun --samples 8
    if [ ! -f "$P/cd_s$seed/.done" ]; then
      log "$size: cd_s$seed on core $core"
      local cd_epochs=(); [ "$size" = large ] && cd_epochs=(--epochs "$LARGE_CD_EPOCHS")
      # shellcheck disable=SC2046
      on "$core" $B/train_cd --vae "$vae" --ldm "$P/plain_s$seed/last.safetensors" --dataset-dir "$D" --latents "$P/latents" \
        --config recipes/quality_cd.toml "${cd_epochs[@]}" --seed "$seed" $(splits "$size") --out "$P/cd_s$seed" \
        --overwrite --no-progress 2> "$P/cd_s$seed.log"
      touch "$P/cd_s$seed/.done"
    fi
    for k in 1 2 4; do score "$size" "cd${k}_s$seed" "$core" --ldm "$P/cd_s$seed/last.safetensors" --solver cd --steps "$k"; done
  done
  log "$size: done"
}
pids=()
for size in $SIZES; do
  pipeline "$size" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done # a failure stops the script
rows=()
for size in small large; do
  rows+=("$size VAE reconstruction (ceiling)=$Q/$size/scores/vae_ceiling/test")
  for variant in plain plain_best direct direct_best plain_k8 cd1 cd2 cd4; do # the rows every seed has
    missing=0; for seed in $SEEDS; do [ -f "$Q/$size/scores/${variant}_s$seed/evaluate.txt" ] || missing=1; done
    [ $missing = 0 ] || continue
    dirs=(); for seed in $SEEDS; do dirs+=("$Q/$size/scores/${variant}_s$seed/test"); done
    rows+=("$size $variant=$(IFS=,; echo "${dirs[*]}")")
  done
done
python3 scripts/quality_table.py --taus 2,4 "${rows[@]}" | tee "$Q/table.md"
