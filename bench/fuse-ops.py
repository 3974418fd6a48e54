#!/usr/bin/env python3
"""Per-call latency of the small-file calls tar and rsync make, on any
directory (a Strata mount, bindfs, a plain directory): create, write,
fchmod, futimens, close, utime by path, stat, read, listdir, unlink.
Usage: bench/fuse-ops.py DIR [FILES]   (prints ms per call, averaged)."""
import os, sys, time
d = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
os.makedirs(d, exist_ok=True)
T = {}
def t(k, f):
    s = time.perf_counter(); f(); T[k] = T.get(k, 0) + time.perf_counter() - s
for i in range(n):
    p = f"{d}/f{i}"
    fd = [None]
    t("create", lambda: fd.__setitem__(0, os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)))
    t("write", lambda: os.write(fd[0], b"x" * 3000))
    t("fchmod", lambda: os.fchmod(fd[0], 0o644))
    t("futimens", lambda: os.utime(fd[0], (1, 2)))
    t("close", lambda: os.close(fd[0]))
    t("utime", lambda: os.utime(p, (3, 4)))
    t("stat", lambda: os.stat(p))
for i in range(n):
    t("read", lambda: open(f"{d}/f{i}", "rb").read())
t("listdir", lambda: os.listdir(d))
for i in range(n):
    t("unlink", lambda: os.unlink(f"{d}/f{i}"))
for k, v in T.items():
    print(f"{k:10s} {v / n * 1e3:8.3f} ms")
