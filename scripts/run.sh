#!/usr/bin/env bash
# The main job: installs libtorch if needed (cached), then trains the
# ultra-lightweight VAE on the bundled fixtures (extra args go to train_vae).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/libtorch.sh
cargo run --release --example train_vae -- "$@"
