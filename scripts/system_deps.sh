#!/usr/bin/env bash
# Debian packages the full test suite needs: Chromium (browser tests), PostgreSQL (store tests against a real
# server) and Fashion-MNIST's IDX files. Installs what is missing when it can (root and apt-get); otherwise it
# says what is missing and exits 0, and the tests that need it fail with their own message.
set -euo pipefail

missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
else
  echo "warning: missing Debian packages (${missing[*]}); install them with:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
fi
