#!/usr/bin/env bash
# The long chaos run (see tests/src/chaos.rs): a noop sweep of 2,000 stages
# on two schedulers and three workers while a seeded injector kills workers
# and the leader, restarts Redis empty and the S3 server, and drains workers,
# a fault every 2 s on average until the sweep is done. Prints the counts;
# exits non-zero if an invariant failed. Extra arguments go to the example
# (--seed N, --chains N, --mean-gap-ms N, --keep DIR, ...; --train-steps N makes
# every work stage a checkpointed LoRA fine-tune and adds the compute saved and lost).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bash scripts/setup-services.sh
source scripts/env.sh
cargo build --release --bins
cargo run --release -p subliminal-tests --example chaos -- "$@"
