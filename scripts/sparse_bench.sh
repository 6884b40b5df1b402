#!/usr/bin/env bash
# The sparse benchmarks (not in CI): installs spconv's CPU build (PyPI
# `spconv`) into the project's PyTorch environment once, then times one
# sparse convolution against it on the same sites (benches/sparse_conv.rs)
# and a sparse VAE training step against the dense VAE's
# (benches/sparse_step.rs). Tables on stdout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/libtorch.sh
if ! ./.venv-python -c "import spconv.pytorch" 2>/dev/null; then
  echo "radvox: installing spconv (CPU build) for the comparison" >&2
  ./.venv-python -m pip install -q --disable-pip-version-check "spconv==2.3.8"
fi
cargo bench --bench sparse_conv
cargo bench --bench sparse_step
