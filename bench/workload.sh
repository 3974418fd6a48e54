#!/usr/bin/env bash
# A realistic small-file workload, every step checked byte-exact:
#   tar   extract a tarball of a few thousand source files
#   rsync copy the tree with rsync -a
#   git   clone a repository of the tree and check out a second commit
#   sqlite build a database in WAL mode, then PRAGMA integrity_check
#   rm    rm -rf everything
# Usage: workload.sh DIR [SCRATCH]   (DIR: where to run, e.g. a Strata mount;
# SCRATCH: local dir for the reference copies, default a fresh mktemp -d).
# Prints one line per step: "<step> <seconds>", then "total <seconds>".
set -euo pipefail
dir=$1
scratch=${2:-$(mktemp -d)}
files=${WORKLOAD_FILES:-3000}
mkdir -p "$dir" "$scratch"
work="$dir/workload.$$"
mkdir "$work"

now() { date +%s.%N; }
step() { printf '%-7s %.2f\n' "$1" "$(echo "$(now) - $2" | bc)"; }

# The reference tree: Rust sources from the cargo registry (always present
# where Strata was built), the first $files of them, deterministic order.
if [ ! -f "$scratch/src.tar" ]; then
  for reg in "$HOME"/.cargo/registry/src/*/; do break; done
  mkdir -p "$scratch/ref"
  (cd "$reg" && find . -type f \( -name '*.rs' -o -name '*.toml' -o -name '*.md' \) | LC_ALL=C sort >"$scratch/all.txt")
  sed -n "1,${files}p" "$scratch/all.txt" >"$scratch/list.txt"
  (cd "$reg" && tar -cf "$scratch/src.tar" -T "$scratch/list.txt")
  tar -xf "$scratch/src.tar" -C "$scratch/ref"
  git init -q "$scratch/repo"
  cp -r "$scratch/ref/." "$scratch/repo/"
  git -C "$scratch/repo" add -A
  git -C "$scratch/repo" -c user.name=w -c user.email=w@localhost commit -qm one
  find "$scratch/repo" -name '*.md' -not -path '*/.git/*' | LC_ALL=C sort >"$scratch/md.txt"
  sed -n '1,200p' "$scratch/md.txt" | xargs rm -f
  git -C "$scratch/repo" add -A
  git -C "$scratch/repo" -c user.name=w -c user.email=w@localhost commit -qm two
fi
total=$(now)

t=$(now)
mkdir "$work/tar"
tar -xf "$scratch/src.tar" -C "$work/tar"
diff -r "$scratch/ref" "$work/tar" >/dev/null
step tar "$t"

t=$(now)
rsync -a "$work/tar/" "$work/rsync/"
diff -r "$scratch/ref" "$work/rsync" >/dev/null
step rsync "$t"

t=$(now)
git clone -q "$scratch/repo" "$work/git"
git -C "$work/git" checkout -q HEAD~1
git -C "$work/git" fsck --no-progress 2>/dev/null
diff -r --exclude=.git "$scratch/ref" "$work/git" >/dev/null
step git "$t"

t=$(now)
python3 - "$work/db.sqlite" <<'PY'
import sqlite3, sys, hashlib
db = sqlite3.connect(sys.argv[1])
assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
for batch in range(20):
    db.executemany("INSERT INTO t (k, v) VALUES (?, ?)",
                   [(f"k{batch}-{i}", hashlib.sha256(f"{batch}-{i}".encode()).digest() * 8) for i in range(500)])
    db.commit()
db.execute("CREATE INDEX tk ON t (k)")
db.execute("DELETE FROM t WHERE id % 7 = 0")
db.commit()
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
n = db.execute("SELECT count(*) FROM t").fetchone()[0]
assert n == 10000 - 10000 // 7, n
db.close()
db = sqlite3.connect(sys.argv[1])
assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
PY
step sqlite "$t"

t=$(now)
rm -rf "$work"
[ ! -e "$work" ]
step rm "$t"

step total "$total"
