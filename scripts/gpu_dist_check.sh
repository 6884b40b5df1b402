#!/usr/bin/env bash
# The NCCL path on a GPU host that has PyTorch but no Rust (the `device`
# tool's machines), with every GPU it has (a single GPU: world size 1, still
# through an NCCL process group).
#
#   here:  bash scripts/gpu_dist_check.sh build   # target/gpu/{dist_check,train_vae,simulate}
#   there: bash scripts/gpu_dist_check.sh run     # carry target/gpu; ~2 min
#
# `run` (1) joins an NCCL group of all GPUs and checks broadcast and
# all-reduce, timing a 25 MiB all-reduce; (2) trains the VAE for 6 optimizer
# steps data-parallel on all GPUs (NCCL from 2 GPUs on; one GPU trains alone)
# and prints the log. Output under $OUT (or target/gpu/out).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-run}" in
build)
  bash scripts/libtorch.sh >/dev/null
  cargo build --release --example dist_check --example train_vae --example simulate
  mkdir -p target/gpu
  for e in dist_check train_vae simulate; do
    cp "target/release/examples/$e" target/gpu/ && strip "target/gpu/$e"
  done
  ls -la target/gpu
  ;;
run)
  python=${TORCH_PYTHON:-/opt/torch/.venv/bin/python}
  bin=$(dirname "$python")
  lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  export LD_LIBRARY_PATH="$lib"
  out=${OUT:-target/gpu/out}
  mkdir -p "$out"
  gpus=$(nvidia-smi -L | wc -l)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  "$bin/torchrun" --no-python --nproc-per-node "$gpus" target/gpu/dist_check --device cuda | tee "$out/dist_check.txt"
  target/gpu/simulate --out "$out/sim" --scenes 3 --frames 8 --seed 3 --no-progress
  "$bin/torchrun" --no-python --nproc-per-node "$gpus" target/gpu/train_vae --dataset-dir "$out/sim/ntu" \
    --config recipes/main_job.toml --device cuda --max-steps 6 --no-progress --out "$out/vae" --overwrite \
    2>&1 | tee "$out/train_vae.txt"
  cat "$out/vae/train_log.csv"
  ;;
*)
  echo "usage: $0 build|run" >&2
  exit 2
  ;;
esac
