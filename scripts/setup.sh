#!/usr/bin/env bash
# Shared set-up for the run and test scripts: system packages the build and
# the tests need, the POSIX test tools, and a cargo target directory kept
# outside the clone so a fresh checkout does not rebuild RocksDB (10+
# minutes) every time.
set -euo pipefail

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"
export DEBIAN_FRONTEND=noninteractive
export PATH="$HOME/.cargo/bin:$PATH"

# libclang-dev: RocksDB bindings. fuse3: fusermount for non-root users.
# rsync, bc, git: the workload script. bindfs, fio: benchmarks.
need=()
for pkg in libclang-dev fuse3 rsync bc git bindfs fio; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${need[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

install_tool() { # name version
  if ! "$HOME/.cargo/bin/$1" --version 2>/dev/null | grep -q "$2"; then
    echo "installing $1 $2 (cargo install)" >&2
    cargo install "$1" --version "$2" --locked --quiet
  fi
}
if [ "${STRATA_SKIP_TOOLS:-0}" != 1 ]; then
  install_tool pjdfstest 0.2.2
  install_tool fsx 0.3.2
fi

# A real S3 server on loopback for the UFS tests: moto's server (PyPI).
if [ "${STRATA_SKIP_TOOLS:-0}" != 1 ] && ! command -v moto_server >/dev/null 2>&1; then
  echo "installing moto[server] (pip)" >&2
  python3 -m pip install --quiet 'moto[server]' 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'moto[server]'
fi
