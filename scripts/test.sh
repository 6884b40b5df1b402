#!/usr/bin/env bash
# The test command: installs libtorch if needed (cached), runs every Rust
# test, then builds the Python package into the project's PyTorch
# environment and runs its tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/libtorch.sh
cargo test "$@"
bash scripts/python.sh
./.venv/bin/python -m pytest -q python/tests
