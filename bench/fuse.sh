#!/usr/bin/env bash
# FUSE benchmarks, all in one run on the same disk: fio (1 MiB sequential
# write and read, 4 KiB random read) and the realistic workload
# (bench/workload.sh) on
#   plain   a directory on the local filesystem,
#   bindfs  a FUSE passthrough (bindfs) of that directory,
#   strata  a Strata mount (strata local, one SSD tier on the same disk).
# Prints a table and the ratios strata/bindfs and strata/plain.
# Usage: bench/fuse.sh [SIZE_MiB]   (needs root, fio, bindfs; run from the repo)
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-512}
. bench/strata-lib.sh
root=$(mktemp -d /var/tmp/strata-bench.XXXXXX)
plain="$root/plain"; bind="$root/bindfs"; smnt="$root/strata-mnt"
mkdir -p "$plain" "$bind" "$smnt"
cleanup() {
  fusermount -u "$bind" 2>/dev/null || umount "$bind" 2>/dev/null || true
  [ -n "${spid:-}" ] && kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null || true
  umount "$smnt" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT
bindfs "$plain" "$bind"
start_strata "$root/strata" "$smnt" $((4 * size + 8192))

fio_bw() { # dir rw bs -> MiB/s (or IOPS for randread)
  local out
  out=$(fio --name=b --directory="$1" --rw="$2" --bs="$3" --size="${size}M" --ioengine=psync \
        --end_fsync=1 --numjobs=1 --group_reporting --output-format=json --filename=fio.dat 2>/dev/null)
  python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; k="write" if j["write"]["io_bytes"] else "read"; print(round(j[k]["iops"]) if sys.argv[1]=="randread" else round(j[k]["bw_bytes"]/1048576))' "$2" <<<"$out"
}

declare -A r
# The workload runs twice on each: right after dropping the caches (cold:
# the sources are read from disk) and at once again (warm). The two differ
# for more than the sources: ext4 makes a new inode slowly while it still
# caches the inode table blocks of many recently deleted ones (its
# `recently_deleted` check), so bindfs's creates (a real ext4 file each)
# cost ~50 us cold but 250-600 us in the warm run, after the cold run's
# rm -rf; Strata's staging files are reused.
workload() { # target run dir
  local steps k
  steps=$(bash bench/workload.sh "$3" "$root/scratch")
  r[$1,$2]=$(awk '$1=="total"{print $2}' <<<"$steps")
  for k in tar rsync git sqlite rm; do r[$1,$2.$k]=$(awk -v k=$k '$1==k{print $2}' <<<"$steps"); done
}
for t in plain bind strata; do
  case $t in plain) d=$plain;; bind) d=$bind;; strata) d=$smnt;; esac
  r[$t,write]=$(fio_bw "$d" write 1M)
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  r[$t,read]=$(fio_bw "$d" read 1M)
  r[$t,randread]=$(fio_bw "$d" randread 4k)
  rm -f "$d/fio.dat"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  workload $t cold "$d"
  workload $t warm "$d"
done
row() { # label key higher-is-better
  local p=${r[plain,$2]} b=${r[bind,$2]} s=${r[strata,$2]}
  if [ "$3" = 1 ]; then
    printf '%-24s %10s %10s %10s %14.2f %14.2f\n' "$1" "$p" "$b" "$s" "$(echo "$s/$b" | bc -l)" "$(echo "$s/$p" | bc -l)"
  else
    printf '%-24s %10s %10s %10s %14.2f %14.2f\n' "$1" "$p" "$b" "$s" "$(echo "$b/$s" | bc -l)" "$(echo "$p/$s" | bc -l)"
  fi
}
printf '%-24s %10s %10s %10s %14s %14s\n' test plain bindfs strata strata/bindfs strata/plain
row "write (MiB/s)" write 1
row "read (MiB/s)" read 1
row "randread (IOPS)" randread 1
for run in cold warm; do
  row "workload $run (s)" $run 0
  for k in tar rsync git sqlite rm; do row "  $k (s)" $run.$k 0; done
done
echo "(ratios: >1 means strata is faster; workload times: lower is better; size ${size} MiB)"
