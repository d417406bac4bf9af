#!/usr/bin/env bash
# The tests on a fresh machine: set up (the main job's set-up, the LLM model,
# the packages the tests compare against or talk to, the servers and
# Chromium), then every test of the workspace
# (unit tests and the integration tests in tests/, which run the real
# binaries on the real MNIST files with real libtorch, against a real
# redis-server and a real S3 server started on loopback ports).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bash scripts/setup-model.sh
bash scripts/setup-reference.sh
bash scripts/setup-services.sh
source scripts/env.sh
# The integration tests run the real binaries: build them first.
cargo build --release --bins
cargo test --release --workspace "$@"
