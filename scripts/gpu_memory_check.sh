#!/usr/bin/env bash
# Predicted vs measured CUDA allocator peaks (AMP off and on) on a GPU host
# that has PyTorch but no Rust (the `device` tool's machines).
#
#   here:  bash scripts/gpu_memory_check.sh build   # builds target/gpu/memory_plan (~25 MB)
#   there: bash scripts/gpu_memory_check.sh run     # carry target/gpu; < 10 min on one H100
#
# The run writes $OUT/memory_cuda.csv (or target/gpu/memory_cuda.csv) and prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-run}" in
build)
  bash scripts/libtorch.sh >/dev/null
  exe=$(cargo bench --bench memory_plan --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable") and "memory_plan" in m["executable"]][-1])')
  mkdir -p target/gpu && cp "$exe" target/gpu/memory_plan && strip target/gpu/memory_plan
  ls -la target/gpu/memory_plan
  ;;
run)
  python=${TORCH_PYTHON:-/opt/torch/.venv/bin/python}
  lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  out=${OUT:-target/gpu}
  mkdir -p "$out"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  LD_LIBRARY_PATH="$lib" RADVOX_MEMORY_DEVICE=cuda RADVOX_MEMORY_FULL=1 \
    RADVOX_BENCH_DATA="${TMPDIR:-/tmp}/radvox-bench-data" RADVOX_MEMORY_CSV="$out/memory_cuda.csv" \
    target/gpu/memory_plan
  ;;
*)
  echo "usage: $0 build|run" >&2
  exit 2
  ;;
esac
