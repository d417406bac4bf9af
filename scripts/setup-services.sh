#!/usr/bin/env bash
# Idempotent set-up of the real servers that the integration tests start on
# loopback ports: redis-server 7 (Debian package) and s3s-fs 0.14.1 (crates.io,
# built once into $SUBLIMINAL_TOOLS, default ~/.cache/subliminal/tools), and
# Prometheus and promtool (Debian package prometheus): the server scrapes the
# daemons in the dashboard test, promtool checks metrics and deploy files;
# headless Chromium (Debian package chromium) that opens the HTML report; and
# mdBook 0.5.4 (crates.io, built once into $SUBLIMINAL_TOOLS without its
# server and search features), which builds the guide in docs/.
#
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

# apt_install WHAT PACKAGE...: Debian packages, quietly, as root or through sudo.
apt_install() {
  echo "setup: installing $1 (Debian package)"
  shift
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
  echo "setup: $(redis-server --version | cut -d' ' -f1-3) present"
else
  apt_install redis-server redis-server redis-tools
fi

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  echo "setup: $(promtool --version 2>&1 | head -1 | cut -d' ' -f1-3) present"
else
  apt_install "prometheus and promtool" prometheus
fi

if command -v chromium >/dev/null 2>&1; then
  echo "setup: $(chromium --version 2>/dev/null | head -1) present"
else
  apt_install chromium chromium
fi

if [ -x "$S3S_FS" ] && "$S3S_FS" --version 2>/dev/null | grep -q "0.14.1"; then
  echo "setup: s3s-fs 0.14.1 present in $SUBLIMINAL_TOOLS"
else
  echo "setup: building s3s-fs 0.14.1 into $SUBLIMINAL_TOOLS (one time, a few minutes)"
  cargo install --quiet s3s-fs@0.14.1 --features binary --locked --root "$SUBLIMINAL_TOOLS"
fi

if [ -x "$MDBOOK" ] && "$MDBOOK" --version 2>/dev/null | grep -q "v0.5.4"; then
  echo "setup: mdbook 0.5.4 present in $SUBLIMINAL_TOOLS"
else
  echo "setup: building mdbook 0.5.4 into $SUBLIMINAL_TOOLS (one time, about two minutes)"
  cargo install --quiet mdbook@0.5.4 --no-default-features --locked --root "$SUBLIMINAL_TOOLS"
fi
