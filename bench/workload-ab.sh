#!/usr/bin/env bash
# The realistic workload (bench/workload.sh), cold, N times on bindfs and on
# Strata alternately, each run on a fresh mount right after dropping the
# caches; prints every run and the median per step. One run of each (as in
# bench/fuse.sh) swings by 10-30% on a shared machine; alternating
# several gives both the same conditions.
# Usage: bench/workload-ab.sh [N]   (needs root and bindfs; run from the repo)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5}
. bench/strata-lib.sh
root=$(mktemp -d /var/tmp/strata-ab.XXXXXX)
scratch="$root/scratch"; out="$root/runs"
cleanup() {
  for m in "$root"/m.*; do fusermount -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || true; done
  [ -n "${spid:-}" ] && kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT

run() { # target index
  local mnt="$root/m.$1.$2" plain="$root/p.$1.$2" steps
  mkdir -p "$mnt" "$plain"
  spid=
  if [ "$1" = bindfs ]; then
    bindfs "$plain" "$mnt"
  else
    start_strata "$root/s.$2" "$mnt" 8192
  fi
  sync; echo 3 >/proc/sys/vm/drop_caches
  steps=$(bash bench/workload.sh "$mnt" "$scratch")
  awk -v t="$1" '{print t, $1, $2}' <<<"$steps" | tee -a "$out" | paste -sd' ' >&2
  if [ "$1" = bindfs ]; then
    fusermount -u "$mnt" || umount "$mnt"
  else
    kill "$spid"; wait "$spid" 2>/dev/null || true
    umount "$mnt" 2>/dev/null || true
  fi
  rm -rf "$plain" "$root/s.$2"
}

bash bench/workload.sh "$root/warmup" "$scratch" >/dev/null # builds the reference tree
for i in $(seq "$n"); do
  run bindfs "$i"
  run strata "$i"
done
python3 - "$out" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t, step, v = line.split()
    d[(t, step)].append(float(v))
print(f"{'median of ' + str(len(d[('strata', 'total')])) + ' (s)':<20}{'bindfs':>10}{'strata':>10}{'strata/bindfs':>15}")
for step in ["tar", "rsync", "git", "sqlite", "rm", "total"]:
    b, s = statistics.median(d[("bindfs", step)]), statistics.median(d[("strata", step)])
    print(f"{step:<20}{b:>10.2f}{s:>10.2f}{b / s:>15.2f}")
print("(ratio > 1: strata is faster)")
PY
