#!/usr/bin/env bash
# The test command: installs libtorch if needed (cached), then runs every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/libtorch.sh
cargo test "$@"
