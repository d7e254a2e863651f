#!/usr/bin/env bash
# A real browser for tests/test_browser.py: Debian's chromium and chromium-driver (from the package registry), once.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi
if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
  echo "ERROR: installing chromium and chromium-driver needs root (apt-get); install them, or run as root" >&2; exit 1; fi
echo "== installing chromium and chromium-driver (apt) =="
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
chromium --version
