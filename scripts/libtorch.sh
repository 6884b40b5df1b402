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
torch_dir=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
ln -sfn "$torch_dir" "$root/.libtorch"
rm -f "$root/.venv-python"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$venv/bin/python" >"$root/.venv-python"
chmod +x "$root/.venv-python"
