#!/usr/bin/env bash
# Installs libtorch (the PyPI wheel torch==2.11.0, which tch 0.24 binds) into a
# cache outside the checkout and links it as `.libtorch` in the checkout, where
# `.cargo/config.toml` points LIBTORCH. Idempotent: a finished install is reused.
set -euo pipefail
TORCH_VERSION=2.11.0
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${RADVOX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/radvox}
venv="$cache/torch-$TORCH_VERSION"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
  echo "radvox: installing torch==$TORCH_VERSION (libtorch) into $venv (once, ~4 GB)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" "numpy>=1.26" safetensors
  touch "$venv/.complete"
fi
# The CUDA headers c10d's ProcessGroupNCCL.hpp needs beyond the wheel's own
# (crt/, nv/target): with them build.rs compiles the NCCL process group,
# without them radvox builds Gloo only (CPU training is unaffected).
if [ ! -f "$venv/.nccl-headers" ]; then
  if "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
      "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*"; then
    touch "$venv/.nccl-headers"
  else
    echo "radvox: could not install the CUDA headers for NCCL; building with Gloo only" >&2
  fi
fi
torch_dir=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
ln -sfn "$torch_dir" "$root/.libtorch"
rm -f "$root/.venv-python"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$venv/bin/python" >"$root/.venv-python"
chmod +x "$root/.venv-python"
