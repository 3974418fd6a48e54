#!/usr/bin/env bash
# Shared set-up for the run and test scripts: system packages the build
# needs, and a cargo target directory kept outside the clone so a fresh
# checkout does not rebuild RocksDB (10+ minutes) every time.
set -euo pipefail

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"
export DEBIAN_FRONTEND=noninteractive

need=()
for pkg in libclang-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${need[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
