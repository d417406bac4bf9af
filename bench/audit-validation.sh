#!/usr/bin/env bash
# The audit's validation benchmark (tests/examples/audit_validation.rs):
# numbers from an owl teacher and from the control teacher
# (bench/audit-pools.toml, run first; finished stages are reused), cut into
# disjoint datasets of --rows rows, each audited against a held-out part of
# the control teacher's numbers; prints each tier's ROC AUC at telling
# tainted from clean and its cost in seconds per 1,000 rows, and writes the
# per-dataset scores as CSV. Extra arguments go to the example (--rows N,
# --datasets N, --tier screen|student, --samples N).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bash scripts/setup-model.sh
source scripts/env.sh
cargo build --release --bins
out="${AUDIT_VALIDATION_DIR:-bench/audit-validation}"
"${CARGO_TARGET_DIR:-target}/release/subliminal" run bench/audit-pools.toml --store "$out/pools-store" --no-progress
cargo run --release -p subliminal-tests --example audit_validation -- \
  --pools-store "$out/pools-store" --store "$out/store" --out "$out" "$@"
