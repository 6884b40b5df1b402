#!/usr/bin/env bash
# The voxel map insertion benchmark (not in CI): streaming insertion of
# ray-cast point clouds into radvox's voxel map beside OctoMap's OcTree on
# the same frames (benches/map_insert.rs writes the points file and runs
# benches/map/octomap_insert.cpp on it). Both sides on one thread; only the
# insertion calls are timed. OctoMap uses its default sensor model (hit 0.7,
# miss 0.4, clamping 0.1192/0.971), full rays (no max range), no lazy
# evaluation, no discretisation.
#
# Installs Debian's liboctomap-dev once (needs root/apt), builds the OctoMap
# driver into target/map_bench/octomap_insert when its source changed, then
# runs the Rust bench; extra arguments go to the bench (after `--`).
#
# Threads: OctoMap's ray casting is header template code that only runs in
# parallel when the including program is compiled with -fopenmp (Debian's
# liboctomap1.9 itself does not link libgomp); the driver is built without
# it, and OMP_NUM_THREADS=1 is exported in case anyone changes that.
#
# OctoMap is slow on long rays: ~2-3k points/s (~0.8M voxel updates/s) at
# 0.2 m with 20-100 m ranges on a 2-core CPU, and ~1.6 GB of tree for 20
# frames x 15k such points, so keep the frame counts modest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# `dpkg -s` alone succeeds for a removed package that left its record behind.
octomap_installed() {
  dpkg-query -W -f='${Status}' liboctomap-dev 2>/dev/null | grep -q 'install ok installed' &&
    [ -f /usr/include/octomap/OcTree.h ]
}
if ! octomap_installed; then
  echo "radvox: installing liboctomap-dev for the OctoMap comparison" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends liboctomap-dev; then
    apt-get update
    apt-get install -y --no-install-recommends liboctomap-dev
  fi
fi

SRC=benches/map/octomap_insert.cpp
BIN=target/map_bench/octomap_insert
if [ ! -x "$BIN" ] || [ "$SRC" -nt "$BIN" ]; then
  # The headers define no version macro; take the package's.
  OCTOMAP_VERSION=$(dpkg-query -W -f='${Version}' liboctomap-dev 2>/dev/null || echo unknown)
  mkdir -p "$(dirname "$BIN")"
  echo "radvox: building $BIN (OctoMap $OCTOMAP_VERSION)" >&2
  g++ -O3 -march=native -std=c++17 -DRADVOX_OCTOMAP_VERSION="\"$OCTOMAP_VERSION\"" \
    "$SRC" -o "$BIN.tmp" -loctomap -loctomath
  mv "$BIN.tmp" "$BIN"
fi

export OMP_NUM_THREADS=1
bash scripts/libtorch.sh
RADVOX_OCTOMAP="$PWD/$BIN" cargo bench --bench map_insert -- "$@"
