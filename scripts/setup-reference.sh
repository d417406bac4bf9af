#!/usr/bin/env bash
# The test set-up's Python packages, pinned, in the project's virtualenv (so
# they run on the same torch as the code they check): the LLM parity tests
# and benchmark compare against transformers, gguf, accelerate and peft; the
# statistics tests against scipy; the sharing tests read Parquet with pandas
# (pyarrow) and log to MLflow's own tracking server. The main job needs none
# of them. Idempotent: a second run checks the versions and skips.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

REFERENCE_PACKAGES=(transformers==5.23.0 gguf==0.19.0 accelerate==1.12.0 peft==0.21.2 scipy==1.17.1
  pandas==3.1.1 pyarrow==25.0.1 mlflow==3.17.2)

reference_ok() {
  "$VIRTUAL_ENV/bin/python" - "${REFERENCE_PACKAGES[@]}" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(0 if all(version(p.split("==")[0]) == p.split("==")[1] for p in sys.argv[1:]) else 1)
PY
}

if reference_ok; then
  echo "setup: reference packages present (${REFERENCE_PACKAGES[*]})"
else
  echo "setup: installing ${REFERENCE_PACKAGES[*]} into $VIRTUAL_ENV"
  "$VIRTUAL_ENV/bin/python" -m pip install --disable-pip-version-check --quiet "${REFERENCE_PACKAGES[@]}"
  reference_ok || { echo "setup: ${REFERENCE_PACKAGES[*]} do not import from $VIRTUAL_ENV" >&2; exit 1; }
fi

