#!/usr/bin/env bash
# Data-parallel step cost on this CPU (not in CI): at the real sizes, one rank
# with 2 threads accumulating 2 micro-batches against 2 ranks (Gloo, torchrun)
# with 1 thread each, the same frames per optimizer step:
#   - VAE seed_baseline on native-resolution crops 32x128x128 (the whole
#     (96, 608, 224) frame needs 20.7 GiB per rank even for ultra: two do not fit 24 GB);
#   - LDM (default UNet) on whole-frame latents (4, 48, 152, 56) of the ultra VAE.
# Prints each run's seconds per optimizer step (steps 2..N, from train_log.csv)
# and the all-reduce seconds and MiB per step (the log's partial-epoch line).
# Usage: bash scripts/dist_bench.sh [work dir, default runs/dist_bench]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/libtorch.sh
cargo build --release --quiet --examples
work=${1:-runs/dist_bench}
ex=target/release/examples
torchrun=$(sed -n 's/^exec "\(.*\)\/python" .*/\1/p' .venv-python)/torchrun
steps=5
mkdir -p "$work"
grep -o 'avx512_bf16\|amx_bf16\|avx2' /proc/cpuinfo | sort | uniq -c | sed 's/^/cpu flags: /'

$ex/simulate --out "$work/sim" --scenes 2 --frames 8 --seed 3 --if-missing --no-progress >/dev/null

# seconds per step over steps 2..N, and the all-reduce line
report() { # name out log
  python3 - "$2/train_log.csv" "$1" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
t = [float(r["elapsed_s"]) for r in rows]
per = (t[-1] - t[0]) / (len(t) - 1)
print(f"{sys.argv[2]}: {per:.2f} s/step over steps 2..{len(t)}")
EOF
  grep -o 'all-reduce [0-9.]* s/step ([0-9.]* MiB)' "$3" | tail -1 | sed "s/^/$1: /" || true
}

run_pair() { # name exe args...
  local name=$1 exe=$2
  shift 2
  OMP_NUM_THREADS=2 "$ex/$exe" "$@" --grad-accum 2 --max-steps $steps --out "$work/$name-1x2" --overwrite \
    2>"$work/$name-1x2.log" >/dev/null
  report "$name 1 rank x 2 threads" "$work/$name-1x2" "$work/$name-1x2.log"
  OMP_NUM_THREADS=1 "$torchrun" --no-python --nproc-per-node 2 --master-port 29591 "$ex/$exe" "$@" --grad-accum 1 \
    --max-steps $steps --out "$work/$name-2x1" --overwrite 2>"$work/$name-2x1.log" >/dev/null
  report "$name 2 ranks x 1 thread" "$work/$name-2x1" "$work/$name-2x1.log"
}

common=(--dataset-dir "$work/sim/ntu" --batch-size 1 --epochs 1 --device cpu --no-amp --no-progress)
run_pair vae train_vae "${common[@]}" --crop 32,128,128 --vae-type seed_baseline

# latents of whole frames (ultra VAE, one step of training is enough for timing)
if [ ! -f "$work/latents/cache.json" ]; then
  OMP_NUM_THREADS=2 $ex/train_vae "${common[@]}" --crop 32,128,128 --max-steps 1 --out "$work/vae" --overwrite \
    2>/dev/null >/dev/null
  OMP_NUM_THREADS=2 $ex/precompute_latents --vae "$work/vae/last.safetensors" --dataset-dir "$work/sim/ntu" \
    --split train --out "$work/latents" --device cpu --no-progress
fi
run_pair ldm train_ldm "${common[@]}" --vae "$work/vae/last.safetensors" --latents "$work/latents"

# the all-reduce alone (no compute to wait for), at the two steps' sizes
for mib in 29.2 17.5; do
  OMP_NUM_THREADS=1 "$torchrun" --no-python --nproc-per-node 2 --master-port 29592 "$ex/dist_check" --device cpu \
    --mib $mib 2>/dev/null | sed 's/^/dist_check: /'
done
