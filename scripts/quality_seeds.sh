#!/usr/bin/env bash
# Variants of the quality benchmark over several seeds (not in CI; ~12
# minutes a seed on a 2-core CPU): the LDM (Heun, 18 steps) and the direct
# baseline (train_ldm --direct: the same UNet from the condition to the
# latent in one call), each trained with SEEDS (default 0 1 2) on the VAE
# and latent cache scripts/quality.sh leaves (run it first; its ldm_plain is
# the plain LDM's seed 0), thresholds calibrated on scene09, scored on
# scene10-11 beside the radar. Table: mean +- std over the seeds in
# $Q/seeds/table.md; a variant counts as better only when its mean beats
# the other's by more than both stds.
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
for variant in $VARIANTS; do
  for seed in $SEEDS; do
    name="${variant}_s$seed"
    ldm="$S/ldm_$name"
    flags=(); sample_flags=(--steps 18 --solver heun)
    [ "$variant" = direct ] && { flags=(--direct); sample_flags=(); }
    if [ "$variant" = plain ] && [ "$seed" = 0 ] && [ -f "$Q/ldm_plain/.done" ]; then
      ldm="$Q/ldm_plain"
    elif [ ! -f "$ldm/.done" ]; then
      log "train $name"
      $B/train_ldm --vae "$VAE" --dataset-dir "$D" --latents "$Q/latents" --config recipes/quality_ldm.toml \
        "${flags[@]}" --seed "$seed" --val-scenes scene09 --out "$ldm" --overwrite --no-progress 2> "$S/$name.log"
      touch "$ldm/.done"
    fi
    [ -f "$S/$name/evaluate.txt" ] && continue
    log "sample + evaluate $name"
    mkdir -p "$S/$name"
    t0=$(date +%s.%N)
    $B/sample --vae "$VAE" --ldm "$ldm/last.safetensors" --dataset-dir "$D" --scenes scene09 --out "$S/$name/cal" \
      "${sample_flags[@]}" --overwrite > /dev/null 2>&1
    $B/evaluate --vae "$VAE" --dataset-dir "$D" --scenes scene09 --predictions "$S/$name/cal" --taus 2,4 --calibrate \
      > "$S/$name/calibrate.txt"
    th=$(sed -n 's/^calibrated threshold \([0-9.]*\).*/\1/p' "$S/$name/calibrate.txt")
    t1=$(date +%s.%N)
    $B/sample --vae "$VAE" --ldm "$ldm/last.safetensors" --dataset-dir "$D" --scenes scene10,scene11 --out "$S/$name/test" \
      --threshold "$th" "${sample_flags[@]}" --overwrite > /dev/null 2>&1
    t2=$(date +%s.%N)
    $B/evaluate --vae "$VAE" --dataset-dir "$D" --scenes scene10,scene11 --predictions "$S/$name/test" --taus 2,4 \
      --threshold "$th" > "$S/$name/evaluate.txt"
    echo "$th $(echo "($t2 - $t1) / 48" | bc -l)" > "$S/$name/threshold_and_s_per_frame.txt"
  done
done
log "table"
python3 - "$S" "$VARIANTS" "$SEEDS" > "$S/table.md" <<'PY'
import statistics as st, sys, pathlib
S, variants, seeds = pathlib.Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()
def rows(name):
    lines = (S / name / "evaluate.txt").read_text().split("\n")
    get = lambda tag: [float(v) for v in next(l for l in lines if l.startswith(tag)).split()[1:]]
    return get("prediction"), get("radar")
cols = ["IoU", "F1", "Chamfer (m)", "F@2 m"]
print("| variant | seeds | " + " | ".join(cols) + " | s / frame (test sampling) |")
print("|---|---|" + "---|" * (len(cols) + 1))
radar = None
for v in variants:
    got = [rows(f"{v}_s{s}") for s in seeds]
    radar = got[0][1]
    pred = list(zip(*[g[0] for g in got]))
    secs = [float((S / f"{v}_s{s}" / "threshold_and_s_per_frame.txt").read_text().split()[1]) for s in seeds]
    cells = [f"{st.mean(c):.3f} +- {st.stdev(c) if len(c) > 1 else 0:.3f}" for c in pred]
    print(f"| {v} | {' '.join(seeds)} | " + " | ".join(cells) + f" | {st.mean(secs):.2f} |")
print("| radar only | - | " + " | ".join(f"{x:.3f}" for x in radar) + " | - |")
PY
cat "$S/table.md"
