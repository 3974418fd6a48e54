# Sourced by the bench scripts (from the repo root): the set-up, the strata
# binary ($bin), and a local cluster mounted for a run.
. scripts/setup.sh
cargo build --release --bin strata >/dev/null 2>&1
bin="$CARGO_TARGET_DIR/release/strata"

# start_strata DATA_DIR MOUNT TIER_MIB: `strata local` on DATA_DIR with one
# SSD tier of TIER_MIB, mounted at MOUNT (its output in DATA_DIR.out and
# DATA_DIR.log); sets spid; returns once the mount is up.
start_strata() {
  "$bin" local --data-dir "$1" --rpc-port 0 --data-port 0 --mesh-port 0 \
    --tier "SSD:$1/ssd:${3}MiB" --mount "$2" >"$1.out" 2>"$1.log" &
  spid=$!
  for _ in $(seq 100); do grep -q '^mount:' "$1.out" 2>/dev/null && break; sleep 0.2; done
  grep -q '^mount:' "$1.out" || { cat "$1.log" >&2; return 1; }
}
