#!/usr/bin/env bash
# Densification at native resolution (0.2 m) on a sparse VAE's latents (not
# in CI; ~1.5 hours a seed on a 2-core CPU, ~2 with CD=1): the latents
# cached, then per seed of SEEDS (0) the LDM and per seed of DIRECT_SEEDS
# (default SEEDS) the direct baseline (train_ldm --direct,
# recipes/native_ldm.toml, EPOCHS overrides its epochs; either list may be
# set empty); one worker per core of CORES ("0 1"), each pinned to its core
# with one thread, the workers take every training, then every scoring
# job, in order; thresholds calibrated on scene09, scored on scene10-11
# beside the radar (evaluate, taus 0.5 and 1 m): the LDM in Heun STEPS (8)
# steps, and as the probability of SAMPLES (4) samples (`sample
# --samples`; SAMPLES=1 leaves the row out), at each temperature
# of TEMPERATURES (none; `sample --temperature`) and from each start of
# SIGMA_MAXES (none; `sample --sigma-max`), the direct baseline (and with
# LIVE=1 its live weights, `sample --live-weights`, and the LDM's), the VAE's reconstruction
# (ceiling), and the rescan ceiling's rows when RESCAN_CEILING_DIR (default
# runs/rescan_ceiling/quality) holds scripts/rescan_ceiling.sh's output.
# CD=1 adds per seed the consistency distillation of that seed's LDM
# (recipes/quality_cd.toml for CD_EPOCHS epochs, default 1), sampled in 1,
# 2 and 4 calls.
#   bash scripts/native_densify.sh runs/native/vae/sparse/last.safetensors
# KEEPS: the sparse decoder's keep thresholds tried on the calibration
# scene for each variant (sample --keep-threshold; default "checkpoint 0.3
# 0.2": the checkpoint's 0.5 and two lower); the F1-best is used on the test.
# SIM_DIR: the root (default the quality benchmark's, runs/quality/sim/ntu;
# runs/quality/sim48/ntu holds the same scenes and 36 more); TRAIN_SCENES:
# the train split (default the root's). Table: $Q/table.md (Q = NATIVE_DENSIFY_DIR,
# default runs/native_densify/<VAE's folder>).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -eq 1 ] || { echo "usage: $0 SPARSE_VAE_CHECKPOINT" >&2; exit 2; }
VAE=$1
D=${SIM_DIR:-runs/quality/sim/ntu}
Q=${NATIVE_DENSIFY_DIR:-runs/native_densify/$(basename "$(dirname "$VAE")")}
SEEDS=${SEEDS-0}
DIRECT_SEEDS=${DIRECT_SEEDS-$SEEDS}
STEPS=${STEPS:-8}
SAMPLES=${SAMPLES:-4}
TEMPERATURES=${TEMPERATURES:-}
SIGMA_MAXES=${SIGMA_MAXES:-}
bash scripts/libtorch.sh
cargo build --release --examples
B=target/release/examples
mkdir -p "$Q"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$Q/timings.txt"; }
on() { # core, command...: one core, one thread
  local core=$1; shift
  OMP_NUM_THREADS=1 RAYON_NUM_THREADS=1 taskset -c "$core" "$@"
}
KEEPS=${KEEPS:-"checkpoint 0.3 0.2"}
splits=(--val-scenes scene09 ${TRAIN_SCENES:+--train-scenes "$TRAIN_SCENES"})
train=("${splits[@]}" ${EPOCHS:+--epochs "$EPOCHS"})
if [ ! -f "$Q/latents/cache.json" ]; then
  log "cache latents"
  $B/precompute_latents --vae "$VAE" --dataset-dir "$D" --out "$Q/latents" --no-progress > /dev/null
fi
ldm() { # name, core, seed, flags...
  local name=$1 core=$2 seed=$3; shift 3
  [ -f "$Q/$name/.done" ] && return
  log "train $name on core $core"
  on "$core" $B/train_ldm --vae "$VAE" --dataset-dir "$D" --latents "$Q/latents" --config recipes/native_ldm.toml \
    "${train[@]}" --seed "$seed" --out "$Q/$name" --overwrite --no-progress "$@" 2> "$Q/$name.log"
  touch "$Q/$name/.done"
}
score() { # name, core, sample flags...: keep and occupancy thresholds calibrated on scene09, scored on scene10-11
  local name=$1 core=$2; shift 2
  local out=$Q/scores/$name
  [ -f "$out/test/metrics.csv" ] && return
  log "score $name on core $core"
  mkdir -p "$out"
  local best="" best_f1=-1 keep f1
  for keep in $KEEPS; do # the decoder's keep threshold: the calibration scene's F1-best
    local k=(); [ "$keep" = checkpoint ] || k=(--keep-threshold "$keep")
    on "$core" $B/sample --vae "$VAE" --dataset-dir "$D" --scenes scene09 --out "$out/cal_$keep" --overwrite "$@" \
      "${k[@]}" > /dev/null
    on "$core" $B/evaluate --vae "$VAE" --dataset-dir "$D" --scenes scene09 --predictions "$out/cal_$keep" --calibrate \
      --no-regions > "$out/calibrate_$keep.txt"
    f1=$(sed -n 's/^calibrated threshold [0-9.]* (Micro F1 \([0-9.]*\)).*/\1/p' "$out/calibrate_$keep.txt")
    if python3 -c "import sys; sys.exit(not float('$f1') > float('$best_f1'))"; then best=$keep best_f1=$f1; fi
  done
  local th t0 t1 k=()
  [ "$best" = checkpoint ] || k=(--keep-threshold "$best")
  th=$(sed -n 's/^calibrated threshold \([0-9.]*\).*/\1/p' "$out/calibrate_$best.txt")
  t0=$(date +%s.%N)
  on "$core" $B/sample --vae "$VAE" --dataset-dir "$D" --scenes scene10,scene11 --out "$out/test" --threshold "$th" \
    --overwrite "$@" "${k[@]}" > /dev/null
  t1=$(date +%s.%N)
  on "$core" $B/evaluate --vae "$VAE" --dataset-dir "$D" --scenes scene10,scene11 --predictions "$out/test" \
    --threshold "$th" > "$out/evaluate.txt"
  echo "$(echo "($t1 - $t0) / 48" | bc -l) s per test frame (sampling, one core), threshold $th, keep $best" \
    > "$out/test/s_per_frame.txt"
}
# The workers, one a core, take the jobs below in order: every training
# first (seed by seed), then the scoring, the ceiling after the first
# seed's (a job that needs a trained model waits for its .done, so no
# worker idles on a score while a training is still queued); every job
# skips what is already done.
has() { case " $1 " in *" $2 "*) return 0 ;; *) return 1 ;; esac; } # list, word
jobs=()
all_seeds=$(printf '%s\n' $SEEDS $DIRECT_SEEDS | awk '!seen[$0]++')
for seed in $all_seeds; do
  if has "$SEEDS" "$seed"; then jobs+=("ldm $seed"); fi
  if has "$DIRECT_SEEDS" "$seed"; then jobs+=("direct $seed"); fi
done
for seed in $all_seeds; do
  if has "$DIRECT_SEEDS" "$seed"; then jobs+=("score_direct $seed"); fi
  if has "$DIRECT_SEEDS" "$seed" && [ -n "${LIVE:-}" ]; then jobs+=("score_direct_live $seed"); fi
  if has "$SEEDS" "$seed"; then
    if [ -n "${CD:-}" ]; then jobs+=("cd $seed"); fi
    jobs+=("score_ldm $seed")
    if [ -n "${LIVE:-}" ]; then jobs+=("score_ldm_live $seed"); fi
    for t in $TEMPERATURES; do jobs+=("score_ldm_t $seed $t"); done
    for s in $SIGMA_MAXES; do jobs+=("score_ldm_sm $seed $s"); done
    if [ "$SAMPLES" -gt 1 ]; then jobs+=("score_ldm_k $seed"); fi
    if [ -n "${CD:-}" ]; then jobs+=("score_cd $seed"); fi
  fi
  has "${jobs[*]}" "score_ceiling" || jobs+=("score_ceiling 0") # after the first seed's
done
needs() { # model folder: wait until it is trained (or a worker has failed)
  until [ -f "$Q/$1/.done" ]; do
    [ -f "$Q/.failed" ] && exit 1
    sleep 10
  done
}
ldm_score() { # core, seed, name, sample flags...: that seed's LDM in Heun STEPS steps
  local core=$1 seed=$2 name=$3; shift 3
  needs "ldm_s$seed"
  score "$name" "$core" --ldm "$Q/ldm_s$seed/last.safetensors" --steps "$STEPS" --solver heun "$@"
}
run_job() { # core, kind, seed[, temperature or sigma_max]
  local core=$1 kind=$2 seed=$3 v=${4:-}
  case $kind in
    ldm) ldm "ldm_s$seed" "$core" "$seed" ;;
    direct) ldm "direct_s$seed" "$core" "$seed" --direct ;;
    cd)
      needs "ldm_s$seed"
      [ -f "$Q/cd_s$seed/.done" ] && return
      log "train cd_s$seed on core $core"
      on "$core" $B/train_cd --vae "$VAE" --ldm "$Q/ldm_s$seed/last.safetensors" --dataset-dir "$D" --latents "$Q/latents" \
        --config recipes/quality_cd.toml --epochs "${CD_EPOCHS:-1}" "${splits[@]}" --seed "$seed" \
        --out "$Q/cd_s$seed" --overwrite --no-progress 2> "$Q/cd_s$seed.log"
      touch "$Q/cd_s$seed/.done" ;;
    score_direct) needs "direct_s$seed"; score "direct_s$seed" "$core" --ldm "$Q/direct_s$seed/last.safetensors" ;;
    score_direct_live)
      needs "direct_s$seed"
      score "direct_live_s$seed" "$core" --ldm "$Q/direct_s$seed/last.safetensors" --live-weights ;;
    score_ldm) ldm_score "$core" "$seed" "ldm_s$seed" ;;
    score_ldm_live) ldm_score "$core" "$seed" "ldm_live_s$seed" --live-weights ;;
    score_ldm_k) ldm_score "$core" "$seed" "ldm_k${SAMPLES}_s$seed" --samples "$SAMPLES" ;;
    score_ldm_t) ldm_score "$core" "$seed" "ldm_t${v}_s$seed" --temperature "$v" ;;
    score_ldm_sm) ldm_score "$core" "$seed" "ldm_sm${v}_s$seed" --sigma-max "$v" ;;
    score_cd)
      needs "cd_s$seed"
      for k in 1 2 4; do score "cd${k}_s$seed" "$core" --ldm "$Q/cd_s$seed/last.safetensors" --solver cd --steps "$k"; done ;;
    score_ceiling) KEEPS=checkpoint score vae_ceiling "$core" --reconstruct ;;
  esac
}
echo 0 > "$Q/.next"
rm -f "$Q/.failed"
worker() { # core: take the next job until none is left; a failure tells the other worker
  trap '[ $? -eq 0 ] || touch "$Q/.failed"' EXIT
  local core=$1 i
  while true; do
    i=$(flock "$Q/.next" sh -c 'i=$(cat "$1"); echo $((i + 1)) > "$1"; echo "$i"' _ "$Q/.next")
    [ "$i" -lt "${#jobs[@]}" ] || return 0
    # shellcheck disable=SC2086
    run_job "$core" ${jobs[$i]}
  done
}
pids=()
for core in ${CORES:-0 1}; do
  worker "$core" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done # a failure stops the script
rows=()
names=("ldm:LDM (Heun, $STEPS steps)")
[ -n "${LIVE:-}" ] && names+=("ldm_live:LDM (Heun, $STEPS steps), live weights")
[ "$SAMPLES" -gt 1 ] && names+=("ldm_k${SAMPLES}:LDM, probability of $SAMPLES samples")
for t in $TEMPERATURES; do names+=("ldm_t$t:LDM (Heun, $STEPS steps) at temperature $t"); done
for s in $SIGMA_MAXES; do names+=("ldm_sm$s:LDM (Heun, $STEPS steps) from sigma $s"); done
names+=("direct:direct")
[ -n "${LIVE:-}" ] && names+=("direct_live:direct, live weights")
[ -n "${CD:-}" ] && names+=("cd1:CD, 1 call" "cd2:CD, 2 calls" "cd4:CD, 4 calls")
for name in "${names[@]}"; do
  seeds=$SEEDS; [ "${name%%:*}" = direct ] && seeds=$DIRECT_SEEDS
  dirs=(); for seed in $seeds; do dirs+=("$Q/scores/${name%%:*}_s$seed/test"); done
  [ ${#dirs[@]} -gt 0 ] || continue # SEEDS= or DIRECT_SEEDS= (empty): no such model
  rows+=("${name#*:}=$(IFS=,; echo "${dirs[*]}")")
done
rows+=("VAE reconstruction (ceiling)=$Q/scores/vae_ceiling/test")
C=${RESCAN_CEILING_DIR:-runs/rescan_ceiling/quality}
[ -f "$C/vote_8/test/metrics.csv" ] && rows+=("another scan (rescan ceiling)=$C/one_scan/test" "vote of 8 scans (rescan ceiling)=$C/vote_8/test")
python3 scripts/quality_table.py "${rows[@]}" | tee "$Q/table.md"
