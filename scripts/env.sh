# Sourced by the project's scripts: points the build at the project's
# PyTorch (tch links the libtorch inside it) and at the MNIST folder.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SUBLIMINAL_ROOT="$_root"
export VIRTUAL_ENV="${SUBLIMINAL_VENV:-$_root/.venv}"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
export SUBLIMINAL_DATA="${SUBLIMINAL_DATA:-$_root/data}"
unset _root
export SUBLIMINAL_TOOLS="${SUBLIMINAL_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/subliminal/tools}"
export S3S_FS="${S3S_FS:-$SUBLIMINAL_TOOLS/bin/s3s-fs}"
export MDBOOK="${MDBOOK:-$SUBLIMINAL_TOOLS/bin/mdbook}"
