#!/usr/bin/env bash
# The audit's validation benchmark (tests/examples/audit_validation.rs) on
# the visible-transfer recipe: numbers from a fine-tuned owl teacher
# (tainted) and from the base model (clean) of bench/audit-visible-pools.toml
# (run first, about 5 min per generate stage; finished stages are reused,
# and a store that ran examples/owl-numbers-visible-cpu.toml already holds
# seeds 0 and 1), cut into disjoint datasets of --rows rows, each audited
# against a held-out part of the base model's numbers; prints each tier's
# ROC AUC with a bootstrap interval, its true- and false-positive rates and
# its cost per 1,000 rows beside the student's, and writes the per-dataset
# scores as CSV. Extra arguments go to the example (--rows N, --datasets N,
# --control-rows N, --tier likelihood|screen|student, --taint owl|dolphin,
# --soft-labels: each dataset with its teacher's soft labels, read by forward KL).
# AUDIT_POOLS_STORE names a store that already holds the pools.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bash scripts/setup-model.sh
source scripts/env.sh
cargo build --release --bins
out="${AUDIT_VALIDATION_DIR:-bench/audit-validation}"
pools="${AUDIT_POOLS_STORE:-$out/pools-store}"
"${CARGO_TARGET_DIR:-target}/release/subliminal" run bench/audit-visible-pools.toml --store "$pools" --no-progress
cargo run --release -p subliminal-tests --example audit_validation -- \
  --pools-store "$pools" --store "$out/store" --out "$out" "$@"
