#!/usr/bin/env bash
# The map evaluation on the quality benchmark's held-out scenes (not in CI,
# ~1 minute after the builds): maps streamed from the radar alone and from
# densified predictions, each scored after every frame against the map of
# the LiDAR targets built with the same poses (build_map --compare-to
# target), per range band from the ego. At the benchmark's coarse grid
# (8, 64, 32) on 2 m map voxels, for the radar and a `sample` predictions
# folder (PRED, default the K = 8 LDM run of scripts/quality.sh), log-odds
# and Dempster-Shafer; and at native 0.2 m for the radar. Tables in
# $M/table.md.
#
#   PRED=runs/quality/k8/test PRED_TH=0.35 bash scripts/map_quality.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
M=${MAP_DIR:-runs/map}
PRED=${PRED:-runs/quality/k8/test}
PRED_TH=${PRED_TH:-0.35}
bash scripts/libtorch.sh
cargo build --release --example simulate --example build_map
B=target/release/examples
$B/simulate --out "$M/sim" --scenes 12 --frames 24 --seed 11 --if-missing --no-progress > /dev/null
R="$M/sim/ntu"
TEST=scene10,scene11
table="$M/table.md"
mkdir -p "$M"
printf '# Maps on %s (reference: the targets'"'"' map, same poses)\n\n' "$TEST" > "$table"
run() { # name, tol, build_map flags...
  local name=$1 tol=$2; shift 2
  $B/build_map --dataset-dir "$R" --scenes $TEST --compare-to target --tol "$tol" --out "$M/$name" --no-progress "$@" > "$M/$name.txt"
  local all near ins
  all=$(grep '^| all |' "$M/$name.txt"); near=$(grep '^| 0-20 m |' "$M/$name.txt")
  ins=$(sed -n 's/^insertion: .* in \([0-9.]*\) s: \([0-9.]*\) M points\/s.*worst frame \([0-9.]*\) ms.*/\1 s, \2 M points\/s, worst \3 ms/p' "$M/$name.txt")
  echo "| $name | $tol | ${all#| all |} ${near#| 0-20 m |*|*|} $ins |" >> "$table"
}
{
  echo "| map | tol (voxels) | reference voxels | map voxels | recall | precision | F1 | false occupied in free | DEM error (m) | 0-20 m: recall | precision | F1 | false free | DEM | insertion |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
} >> "$table"
COARSE=(--resample 8,64,32 --voxel 2)
for tol in 0 1; do
  run "coarse_radar_t$tol" $tol --source radar "${COARSE[@]}"
  run "coarse_pred_t$tol" $tol --source "$PRED" --min-probability "$PRED_TH" "${COARSE[@]}"
done
run coarse_radar_ds_t0 0 --source radar --model ds "${COARSE[@]}"
run coarse_pred_ds_t0 0 --source "$PRED" --min-probability "$PRED_TH" --model ds "${COARSE[@]}"
for tol in 0 1 5; do
  run "native_radar_t$tol" $tol --source radar
done
cat "$table"
