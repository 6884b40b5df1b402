#!/usr/bin/env bash
# The rescan ceiling of the quality benchmark (not in CI, ~5 min): how well
# can any model that knows the scene exactly, but not the scan's draw,
# predict a simulated LiDAR frame? Simulates K (8) rescans of the
# benchmark's root (simulate --lidar-rescan k: the same scenes, poses and
# radar; another rosette pass, dropout and range noise), votes them into
# predictions (examples/rescan_oracle.rs): one other scan (K = 1) and the
# vote of all K (~ the per-voxel hit probability), threshold calibrated
# (IoU) on scene09, scored on scene10-11 by evaluate beside the radar, on
# the grid of the VAE checkpoint given (a sparse VAE: native 0.2 m; the
# coarse benchmark's VAE: 2 m; there TAUS=2,4 as quality.sh scores).
#   bash scripts/rescan_ceiling.sh runs/native/vae/sparse/last.safetensors
#   TAUS=2,4 bash scripts/rescan_ceiling.sh runs/quality/vae/best.safetensors
# Table: $O/table.md (O = runs/rescan_ceiling/<checkpoint's grid>).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -eq 1 ] || { echo "usage: $0 VAE_CHECKPOINT (its layout sets the grid)" >&2; exit 2; }
VAE=$1
D=${SIM_DIR:-runs/quality/sim/ntu}
R=${RESCAN_DIR:-runs/quality/rescan}
K=${K:-8}
taus=(${TAUS:+--taus "$TAUS"})
bash scripts/libtorch.sh
cargo build --release --examples
B=target/release/examples
[ -d "$D" ] || $B/simulate --out "$(dirname "$D")" --scenes 12 --frames 24 --seed 11 --if-missing --no-progress
O=${RESCAN_CEILING_DIR:-runs/rescan_ceiling/$(basename "$(dirname "$VAE")")}
mkdir -p "$O"
roots=()
for k in $(seq 1 "$K"); do
  $B/simulate --out "$R/r$k" --scenes 12 --frames 24 --seed 11 --lidar-rescan "$k" --if-missing --no-progress > /dev/null
  roots+=("$R/r$k/ntu")
done
score() { # name, rescan roots...
  local name=$1; shift
  local out=$O/$name
  $B/rescan_oracle --dataset-dir "$D" --rescans "$@" --scenes scene09 --vae "$VAE" --out "$out/cal" --overwrite --no-progress
  $B/evaluate --vae "$VAE" --dataset-dir "$D" --scenes scene09 --predictions "$out/cal" --calibrate --objective iou \
    --no-regions "${taus[@]}" > "$out/calibrate.txt"
  local th
  th=$(sed -n 's/^calibrated threshold \([0-9.]*\).*/\1/p' "$out/calibrate.txt")
  $B/rescan_oracle --dataset-dir "$D" --rescans "$@" --scenes scene10,scene11 --vae "$VAE" --out "$out/test" \
    --overwrite --no-progress
  $B/evaluate --vae "$VAE" --dataset-dir "$D" --scenes scene10,scene11 --predictions "$out/test" --threshold "$th" \
    "${taus[@]}" > "$out/evaluate.txt"
}
score one_scan "${roots[0]}"
score "vote_$K" "${roots[@]}"
python3 scripts/quality_table.py "${taus[@]}" "another scan of the scene=$O/one_scan/test" "vote of $K scans=$O/vote_$K/test" |
  tee "$O/table.md"
