# Sourced by the project's scripts: points the build at the project's
# PyTorch (tch links the libtorch inside it) and at the MNIST folder.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SUBLIMINAL_ROOT="$_root"
export VIRTUAL_ENV="${SUBLIMINAL_VENV:-$_root/.venv}"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
export SUBLIMINAL_DATA="${SUBLIMINAL_DATA:-$_root/data}"
unset _root
