#!/usr/bin/env bash
# GPU validation on a host that has PyTorch 2.11 but no Rust (the `device`
# tool's machines): everything is built here, carried as target/gpu, and run
# there against that host's libtorch.
#
#   here:  bash scripts/gpu_check.sh build        # target/gpu/bin (stripped, ~40 MB)
#   there: bash scripts/gpu_check.sh run [STAGE..] # carry target/gpu; < 10 min on one H200
#
# Stages (all by default, in the order tests e2e dist sparse ldm vae memory; each has its own time limit, and a
# failing one does not stop the rest):
#   tests   tests/cuda.rs: a forced f16 overflow (step skipped, scale halved,
#           training goes on), dense and sparse VAE on CUDA = on the CPU
#   e2e     --device cuda end to end on a small simulated root: train_vae,
#           precompute_latents, train_ldm, sample; train_sparse_vae
#   dist    NCCL: dist_check on every GPU, then train_vae data-parallel
#   memory  the planner vs the caching allocator's peaks (benches/memory_plan,
#           AMP off and on, the full grid included)
#   sparse  sparse VAE vs dense ultra on whole native frames (benches/sparse_step)
#   ldm     the LDM step at the real latent, f32 and f16 (benches/ldm_step)
#   vae     the dense VAE step vs the PyTorch reference at the full grid (benches/vae_step)
# Logs and CSVs go to $OUT (or target/gpu/out); the summary lists each stage's status.
# GPU_CHECK_DEVICE=cpu TORCH_PYTHON=... runs the tests/e2e/dist stages here on
# the CPU (a dry run of the script before spending device time).
set -uo pipefail
cd "$(dirname "$0")/.."
G=target/gpu
EXAMPLES="simulate train_vae precompute_latents train_ldm sample train_sparse_vae dist_check"
BENCHES="memory_plan sparse_step ldm_step vae_step"

executable() { # cargo's JSON messages on stdin -> the executable of target $1
  python3 -c 'import json,sys
name = sys.argv[1]
for m in map(json.loads, sys.stdin):
    if m.get("executable") and m["target"]["name"] == name:
        print(m["executable"])' "$1" | tail -1
}

build() {
  set -e
  bash scripts/libtorch.sh >/dev/null
  rm -rf "$G" && mkdir -p "$G/bin"
  # shellcheck disable=SC2046
  cargo build --release $(printf -- '--example %s ' $EXAMPLES)
  for e in $EXAMPLES; do cp "target/release/examples/$e" "$G/bin/"; done
  for b in $BENCHES; do
    cp "$(cargo bench --bench "$b" --no-run --message-format=json 2>/dev/null | executable "$b")" "$G/bin/$b"
  done
  cp "$(cargo test --release --test cuda --no-run --message-format=json 2>/dev/null | executable cuda)" "$G/bin/cuda_tests"
  strip "$G"/bin/*
  du -sh "$G/bin"
}

stage() { # stage NAME SECONDS COMMAND...: runs with a limit, logs, records the status
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date +%T), limit ${limit}s)"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$out/$name.log"
  echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$out/summary.txt"
}

run_e2e() {
  set -e
  local d=$out/e2e
  rm -rf "$d"
  $B/simulate --out "$d/sim" --scenes 3 --frames 8 --seed 3 --no-progress
  $B/train_vae --dataset-dir "$d/sim/ntu" --config recipes/main_job.toml --device $DEV --max-steps 8 \
    --no-progress --out "$d/vae"
  $B/precompute_latents --vae "$d/vae/last.safetensors" --dataset-dir "$d/sim/ntu" --out "$d/latents" \
    --device $DEV --no-progress
  $B/train_ldm --vae "$d/vae/last.safetensors" --dataset-dir "$d/sim/ntu" --latents "$d/latents" \
    --device $DEV --max-steps 8 --no-progress --out "$d/ldm"
  $B/sample --vae "$d/vae/last.safetensors" --ldm "$d/ldm/last.safetensors" --dataset-dir "$d/sim/ntu" \
    --steps 4 --device $DEV --out "$d/samples"
  $B/train_sparse_vae --dataset-dir "$d/sim/ntu" --config recipes/sparse_main_job.toml --device $DEV \
    --max-steps 8 --no-progress --out "$d/sparse_vae"
  tail -n 3 "$d/vae/train_log.csv" "$d/ldm/train_log.csv" "$d/sparse_vae/train_log.csv"
}

run_dist() {
  set -e
  local gpus
  gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
  [ "$gpus" -gt 0 ] || gpus=1
  "$TORCH_BIN/torchrun" --no-python --nproc-per-node "$gpus" $B/dist_check --device $DEV
  [ -d "$out/e2e/sim/ntu" ] || $B/simulate --out "$out/e2e/sim" --scenes 3 --frames 8 --seed 3 --no-progress
  "$TORCH_BIN/torchrun" --no-python --nproc-per-node "$gpus" $B/train_vae --dataset-dir "$out/e2e/sim/ntu" \
    --config recipes/main_job.toml --device $DEV --max-steps 6 --no-progress --out "$out/dist_vae" --overwrite
  cat "$out/dist_vae/train_log.csv"
}

run() {
  python=${TORCH_PYTHON:-/opt/torch/.venv/bin/python}
  TORCH_BIN=$(dirname "$python")
  lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') || exit 1
  export DEV=${GPU_CHECK_DEVICE:-cuda}
  export LD_LIBRARY_PATH="$lib" RADVOX_TORCH_PYTHON="$python" RADVOX_BENCH_DEVICE=$DEV TORCH_BIN
  export RADVOX_BENCH_DATA="${TMPDIR:-/tmp}/radvox-bench-data"
  export out=${OUT:-$G/out}
  mkdir -p "$out"
  : >"$out/summary.txt"
  export B=$PWD/$G/bin
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt" || true
  nproc | sed 's/^/host cores: /' | tee -a "$out/gpu.txt"
  local stages=("$@")
  [ ${#stages[@]} -gt 0 ] || stages=(tests e2e dist sparse ldm vae memory)
  for s in "${stages[@]}"; do
    case $s in
    tests) stage tests 60 $B/cuda_tests --test-threads 1 --nocapture ;;
    e2e) stage e2e 100 bash -c run_e2e ;;
    dist) stage dist 50 bash -c run_dist ;;
    memory)
      stage memory 150 env RADVOX_MEMORY_DEVICE=$DEV RADVOX_MEMORY_FULL=1 \
        RADVOX_MEMORY_CSV="$out/memory_cuda.csv" $B/memory_plan
      ;;
    sparse)
      stage sparse 100 env RADVOX_DENSE_CROP=full RADVOX_STEPS=6 \
        RADVOX_SPARSE_PRESETS=sparse_small,sparse_base,sparse_wide $B/sparse_step
      ;;
    ldm) stage ldm 60 $B/ldm_step ;;
    vae) stage vae 100 env RADVOX_GRID=96,608,224 RADVOX_STEPS=3 $B/vae_step ;;
    *) echo "unknown stage $s" | tee -a "$out/summary.txt" ;;
    esac
  done
  cat "$out/summary.txt"
}

case "${1:-run}" in
build) build ;;
run)
  shift || true
  export -f run_e2e run_dist
  run "$@"
  ;;
*)
  echo "usage: $0 build | run [tests e2e dist memory sparse ldm vae]" >&2
  exit 2
  ;;
esac
