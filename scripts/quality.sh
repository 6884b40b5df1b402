#!/usr/bin/env bash
# The quality benchmark (not in CI; ~1.5 hours on a 2-core CPU): simulate 12
# scenes, train the VAE, cache its latents, train the latent diffusion model
# in three variants (as is; latents normalised to sigma_data; condition from
# a jointly trained radar encoder instead of the VAE's encoding of the radar),
# distil one of them (CD_TEACHER, default plain) into a consistency model
# sampled in 1, 2 and 4 calls, densify held-out scenes and score them
# beside the radar-only baseline.
#
# Scenes: scene00-08 train; scene09 calibrates each model's threshold
# (F1-best); scene10-11 are the test set, never seen before scoring.
# Results: $Q/table.md (and each run's metrics.csv / report.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
Q=${QUALITY_DIR:-runs/quality}
bash scripts/libtorch.sh
cargo build --release --examples
B=target/release/examples
mkdir -p "$Q"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$Q/timings.txt"; }
t0=$(date +%s)
log "simulate"
$B/simulate --out "$Q/sim" --scenes 12 --frames 24 --seed 11 --if-missing --no-progress > "$Q/simulate.txt"
D="$Q/sim/ntu"
if [ ! -f "$Q/vae/.done" ]; then
  log "train VAE"
  $B/train_vae --dataset-dir "$D" --config recipes/quality_vae.toml --out "$Q/vae" --overwrite --no-progress 2> "$Q/vae.log"
  touch "$Q/vae/.done"
fi
VAE="$Q/vae/best.safetensors"
log "cache latents"
$B/precompute_latents --vae "$VAE" --dataset-dir "$D" --out "$Q/latents" --no-progress > /dev/null
CAL=scene09
TEST=scene10,scene11
evaluate_run() { # name, extra sample flags...
  local name=$1; shift
  log "sample + evaluate $name"
  $B/sample --vae "$VAE" --dataset-dir "$D" --scenes $CAL --out "$Q/$name/cal" "$@" > /dev/null
  $B/evaluate --vae "$VAE" --dataset-dir "$D" --scenes $CAL --predictions "$Q/$name/cal" --taus 2,4 --calibrate ${STORE:+--store-in "$STORE"} > "$Q/$name/calibrate.txt"
  local th; th=$(sed -n 's/^calibrated threshold \([0-9.]*\).*/\1/p' "$Q/$name/calibrate.txt")
  $B/sample --vae "$VAE" --dataset-dir "$D" --scenes $TEST --out "$Q/$name/test" --threshold "$th" "$@" > /dev/null
  $B/evaluate --vae "$VAE" --dataset-dir "$D" --scenes $TEST --predictions "$Q/$name/test" --taus 2,4 --threshold "$th" > "$Q/$name/evaluate.txt"
}
mkdir -p "$Q/vae_recon"
STORE="" evaluate_run vae_recon --reconstruct
for variant in plain normalized encoder; do
  flags=()
  case $variant in
    normalized) flags=(--normalize-latents) ;;
    encoder) flags=(--radar-encoder) ;;
  esac
  if [ ! -f "$Q/ldm_$variant/.done" ]; then
    log "train LDM $variant"
    $B/train_ldm --vae "$VAE" --dataset-dir "$D" --latents "$Q/latents" --config recipes/quality_ldm.toml "${flags[@]}" \
      --val-scenes "$CAL" --out "$Q/ldm_$variant" --overwrite --no-progress 2> "$Q/ldm_$variant.log"
    touch "$Q/ldm_$variant/.done"
  fi
  mkdir -p "$Q/$variant"
  STORE="$Q/ldm_$variant/last.safetensors" evaluate_run "$variant" --ldm "$Q/ldm_$variant/last.safetensors" --steps 18 --solver heun
done
# consistency distillation of one LDM variant, sampled in 1, 2 and 4 calls
T=${CD_TEACHER:-plain}
if [ ! -f "$Q/cd/.done" ]; then
  log "train CD from ldm_$T"
  $B/train_cd --vae "$VAE" --ldm "$Q/ldm_$T/last.safetensors" --dataset-dir "$D" --latents "$Q/latents" \
    --config recipes/quality_cd.toml --out "$Q/cd" --overwrite --no-progress 2> "$Q/cd.log"
  touch "$Q/cd/.done"
fi
for k in 1 2 4; do
  mkdir -p "$Q/cd$k"
  STORE="" evaluate_run "cd$k" --ldm "$Q/cd/last.safetensors" --solver cd --steps $k
done
log "table"
{
  echo "| model | threshold | IoU | F1 | Chamfer (m) | F@2 m |"
  echo "|---|---|---|---|---|---|"
  radar=""
  for name in vae_recon plain normalized encoder cd1 cd2 cd4; do
    f="$Q/$name/evaluate.txt"
    th=$(sed -n 's/^calibrated threshold \([0-9.]*\).*/\1/p' "$Q/$name/calibrate.txt")
    read -r _ iou f1 ch f05 < <(grep '^prediction' "$f")
    echo "| $name | $th | $iou | $f1 | $ch | $f05 |"
    radar=$(grep '^radar' "$f")
  done
  read -r _ iou f1 ch f05 <<< "$radar"
  echo "| radar only (baseline) | - | $iou | $f1 | $ch | $f05 |"
} > "$Q/table.md"
cat "$Q/table.md"
log "done in $(( $(date +%s) - t0 )) s"
