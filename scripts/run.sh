#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, and run a sweep end to end
# on the embedded default (local store in runs/, no services).
#   bash scripts/run.sh [SWEEP.toml] [subliminal run options...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
sweep="${1:-examples/mnist-quick.toml}"
shift || true
bash scripts/setup.sh
# The LLM model only for a sweep that names it.
if grep -qi "smollm2" "$sweep"; then bash scripts/setup-model.sh; fi
source scripts/env.sh
cargo build --release --quiet --bin subliminal
exec "${CARGO_TARGET_DIR:-target}/release/subliminal" run "$sweep" "$@"
