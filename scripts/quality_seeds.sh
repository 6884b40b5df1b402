#!/usr/bin/env bash
# Variants of the quality benchmark over several seeds (not in CI; ~12
# minutes a seed and variant on a 2-core CPU), VARIANTS of
#   plain           the LDM (Heun, 18 steps)
#   direct          the direct baseline (train_ldm --direct: the same UNet
#                   from the condition to the latent in one call)
#   decoded         the LDM with the decoded-space loss (--decoded-loss)
#   direct_decoded  the direct baseline with it
#   encoder         the LDM conditioned by a jointly trained radar encoder
#                   (--radar-encoder) instead of the VAE's radar latent
#   multiscale      the LDM with the condition at every UNet level
#                   (--cond-every-level)
#   direct_multiscale  the direct baseline with it
#   cd              consistency distillation (recipes/quality_cd.toml) of
#                   the same seed's plain LDM, sampled in 1, 2 and 4 calls
#                   (rows cd1, cd2, cd4; needs plain of that seed)
# each trained with SEEDS (default 0 1 2) on the VAE and latent cache
# scripts/quality.sh leaves (run it first; its ldm_plain is the plain LDM's
# seed 0), thresholds calibrated on scene09, scored on scene10-11 beside
# the radar. Table: mean +- std over the seeds in $Q/seeds/table.md
# (scripts/quality_table.py); a variant counts as better only when its mean
# beats the other's by more than both stds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
Q=${QUALITY_DIR:-runs/quality}
SEEDS=${SEEDS:-"0 1 2"}
VARIANTS=${VARIANTS:-"plain direct"}
B=target/release/examples
D="$Q/sim/ntu"
VAE="$Q/vae/best.safetensors"
[ -f "$Q/vae/.done" ] && [ -d "$Q/latents" ] || { echo "run scripts/quality.sh first (its VAE and latents)" >&2; exit 1; }
bash scripts/libtorch.sh
cargo build --release --examples
S="$Q/seeds"
mkdir -p "$S"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$S/timings.txt"; }
ldm_of() { # variant, seed: the LDM checkpoint folder of a diffusion variant
  if [ "$1" = plain ] && [ "$2" = 0 ] && [ -f "$Q/ldm_plain/.done" ]; then echo "$Q/ldm_plain"; else echo "$S/ldm_$1_s$2"; fi
}
score() { # name, checkpoint, sample flags...: calibrate on scene09, score scene10-11
  local name=$1 ckpt=$2; shift 2
  [ -f "$S/$name/evaluate.txt" ] && return
  log "sample + evaluate $name"
  mkdir -p "$S/$name"
  $B/sample --vae "$VAE" --ldm "$ckpt" --dataset-dir "$D" --scenes scene09 --out "$S/$name/cal" "$@" --overwrite \
    > /dev/null 2>&1
  $B/evaluate --vae "$VAE" --dataset-dir "$D" --scenes scene09 --predictions "$S/$name/cal" --taus 2,4 --calibrate \
    > "$S/$name/calibrate.txt"
  local th t1 t2
  th=$(sed -n 's/^calibrated threshold \([0-9.]*\).*/\1/p' "$S/$name/calibrate.txt")
  t1=$(date +%s.%N)
  $B/sample --vae "$VAE" --ldm "$ckpt" --dataset-dir "$D" --scenes scene10,scene11 --out "$S/$name/test" \
    --threshold "$th" "$@" --overwrite > /dev/null 2>&1
  t2=$(date +%s.%N)
  $B/evaluate --vae "$VAE" --dataset-dir "$D" --scenes scene10,scene11 --predictions "$S/$name/test" --taus 2,4 \
    --threshold "$th" > "$S/$name/evaluate.txt"
  echo "$(echo "($t2 - $t1) / 48" | bc -l) s per test frame (sampling), threshold $th" > "$S/$name/test/s_per_frame.txt"
}
rows=()
for variant in $VARIANTS; do
  names=()
  for seed in $SEEDS; do
    if [ "$variant" = cd ]; then
      teacher=$(ldm_of plain "$seed")
      [ -f "$teacher/.done" ] || { echo "cd seed $seed needs the plain LDM of seed $seed (VARIANTS=\"plain cd\")" >&2; exit 1; }
      cd_dir="$S/cd_s$seed"
      if [ ! -f "$cd_dir/.done" ]; then
        log "train cd_s$seed from $teacher"
        $B/train_cd --vae "$VAE" --ldm "$teacher/last.safetensors" --dataset-dir "$D" --latents "$Q/latents" \
          --config recipes/quality_cd.toml --seed "$seed" --val-scenes scene09 --out "$cd_dir" --overwrite \
          --no-progress 2> "$S/cd_s$seed.log"
        touch "$cd_dir/.done"
      fi
      for k in 1 2 4; do score "cd${k}_s$seed" "$cd_dir/last.safetensors" --solver cd --steps "$k"; done
      continue
    fi
    flags=(); sample_flags=(--steps 18 --solver heun)
    case $variant in
      plain) ;;
      direct) flags=(--direct); sample_flags=() ;;
      decoded) flags=(--decoded-loss) ;;
      direct_decoded) flags=(--direct --decoded-loss); sample_flags=() ;;
      encoder) flags=(--radar-encoder) ;;
      multiscale) flags=(--cond-every-level) ;;
      direct_multiscale) flags=(--direct --cond-every-level); sample_flags=() ;;
      *) echo "unknown variant $variant" >&2; exit 2 ;;
    esac
    ldm=$(ldm_of "$variant" "$seed")
    if [ ! -f "$ldm/.done" ]; then
      log "train ${variant}_s$seed"
      $B/train_ldm --vae "$VAE" --dataset-dir "$D" --latents "$Q/latents" --config recipes/quality_ldm.toml \
        "${flags[@]}" --seed "$seed" --val-scenes scene09 --out "$ldm" --overwrite --no-progress \
        2> "$S/${variant}_s$seed.log"
      touch "$ldm/.done"
    fi
    score "${variant}_s$seed" "$ldm/last.safetensors" "${sample_flags[@]}"
  done
done
log "table"
for variant in $VARIANTS; do
  labels=("$variant"); [ "$variant" = cd ] && labels=(cd1 cd2 cd4)
  for label in "${labels[@]}"; do
    dirs=(); for seed in $SEEDS; do dirs+=("$S/${label}_s$seed/test"); done
    rows+=("$label=$(IFS=,; echo "${dirs[*]}")")
  done
done
# at 2 m voxels a tolerance under one voxel is an exact match: F@0.5 m = F@1 m = F1
python3 scripts/quality_table.py --taus 2,4 "${rows[@]}" > "$S/table.md"
cat "$S/table.md"
