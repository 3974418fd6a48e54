#!/usr/bin/env bash
# Builds Strata and runs a local cluster (master + worker in one process) on
# the embedded default data dir (~/.strata, or $STRATA_HOME). Extra
# arguments go to `strata local`. Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
STRATA_SKIP_TOOLS=1 . scripts/setup.sh
cargo build --release --bin strata
exec "$CARGO_TARGET_DIR/release/strata" local "$@"
