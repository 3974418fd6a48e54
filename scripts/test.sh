#!/usr/bin/env bash
# Runs the whole test suite: unit, property, integration (real processes on
# 127.0.0.1) and openraft's storage suite. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo build --release --workspace --all-targets
cargo test --release --workspace "$@"
