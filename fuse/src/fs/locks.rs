//! `getlk`, `setlk` and the unlocks at a close: byte-range locks kept by
//! the master for every mount, so a lock taken through one mount holds
//! against every other (see `strata_protocol::locks`). The kernel sends
//! `flock` locks here too, as whole-file ranges of the open file's owner.

use std::future::Future;

use fuser::Errno;
use strata_client::{ErrorCode, LockKind, LockRequest};

use super::{FsResult, StrataFs};
use crate::errno::errno;

/// `l_type` of a lock, as `fcntl` numbers them (the same on every Linux
/// architecture).
const F_RDLCK: i32 = 0;
const F_WRLCK: i32 = 1;
const F_UNLCK: i32 = 2;

fn kind_of(typ: i32) -> FsResult<Option<LockKind>> {
    match typ {
        F_RDLCK => Ok(Some(LockKind::Read)),
        F_WRLCK => Ok(Some(LockKind::Write)),
        F_UNLCK => Ok(None),
        _ => Err(Errno::EINVAL),
    }
}

/// Whether thread `tid` has a signal pending that it does not block and
/// that will run a handler or kill it: the kernel would have interrupted
/// its wait for a lock (it cannot tell us, fuser answers its interrupt
/// requests ENOSYS), so the wait ends with EINTR and the signal is
/// delivered. (A handler installed with `SA_RESTART` sees EINTR too,
/// where a local lock would restart.) An unreadable status (the thread is
/// gone) counts as interrupted; tid 0 (a caller in another pid
/// namespace) as not: it waits for the lock.
fn signal_pending(tid: u32) -> bool {
    tid != 0 && std::fs::read_to_string(format!("/proc/{tid}/status")).map_or(true, |s| unblocked_pending(&s))
}

/// Whether a `/proc/*/status` text shows a pending signal that is not
/// blocked and is caught or kills (a signal whose default action kills
/// shows as SIGKILL once sent; one ignored or stopping does not count).
fn unblocked_pending(status: &str) -> bool {
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    const SIGKILL_BIT: u64 = 1 << 8;
    (mask("SigPnd:") | mask("ShdPnd:")) & !mask("SigBlk:") & (mask("SigCgt:") | SIGKILL_BIT) != 0
}

impl StrataFs {
    /// `getlk`: the lock another owner holds that keeps `owner` from taking
    /// `typ` on `start..=end`, as (start, end, type, pid); `F_UNLCK` if none.
    pub fn getlk(&self, ino: u64, owner: u64, start: u64, end: u64, typ: i32) -> FsResult<(u64, u64, i32, u32)> {
        let kind = kind_of(typ)?.ok_or(Errno::EINVAL)?;
        match self.block_on(self.client.test_lock(ino, owner, (start, end), kind)) {
            Ok(None) => Ok((start, end, F_UNLCK, 0)),
            Ok(Some(l)) => {
                let typ = if l.kind == LockKind::Write { F_WRLCK } else { F_RDLCK };
                // The kernel refuses (EIO) an end past OFFSET_MAX; a client
                // of the library may lock to u64::MAX.
                Ok((l.start, l.end.min(i64::MAX as u64), typ, l.pid))
            }
            Err(e) => Err(errno(&e)),
        }
    }

    /// `setlk` without waiting (`F_SETLK`, `LOCK_NB`) through handle `fh`:
    /// EAGAIN if another owner holds a conflicting lock.
    #[allow(clippy::too_many_arguments)]
    pub fn setlk(&self, ino: u64, fh: u64, owner: u64, start: u64, end: u64, typ: i32, pid: u32) -> FsResult<()> {
        let r = LockRequest { inode: ino, owner, start, end, kind: kind_of(typ)?, pid };
        self.locking_through(fh, owner, r.kind);
        self.block_on(self.client.lock(r, false)).map_err(|e| errno(&e))
    }

    /// Notes that `owner` locks through handle `fh`, for its release.
    fn locking_through(&self, fh: u64, owner: u64, kind: Option<LockKind>) {
        if kind.is_some() {
            self.handles.locking_through(fh, owner);
        }
    }

    /// Handle `fh` of `ino` is released: the owners that locked through it
    /// lose their locks there (a read-only handle's close sent no flush).
    pub fn unlock_handle(&self, ino: u64, fh: u64) -> FsResult<()> {
        let owners = self.handles.take_lock_owners(fh);
        owners.into_iter().map(|o| self.unlock_owner(ino, o)).fold(Ok(()), Result::and)
    }

    /// `setlk` that waits (`F_SETLKW`, `flock` without `LOCK_NB`), to be
    /// run off the request threads: asks the master again each time it
    /// held the request without a grant, until the lock is granted or
    /// thread `tid` (the caller) has a signal to take (EINTR).
    #[allow(clippy::too_many_arguments)]
    pub fn setlk_wait(
        &self,
        ino: u64,
        fh: u64,
        owner: u64,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        tid: u32,
    ) -> FsResult<impl Future<Output = FsResult<()>> + Send + 'static> {
        let r = LockRequest { inode: ino, owner, start, end, kind: kind_of(typ)?, pid };
        self.locking_through(fh, owner, r.kind);
        let client = self.client.clone();
        Ok(async move {
            loop {
                match client.lock(r, true).await {
                    Err(e) if e.code() == ErrorCode::WouldBlock => {
                        if signal_pending(tid) {
                            return Err(Errno::EINTR);
                        }
                    }
                    other => return other.map_err(|e| errno(&e)),
                }
            }
        })
    }

    /// Runs `f` on the mount's runtime (a reply that waits).
    pub fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        self.rt.spawn(f);
    }

    /// Drops every lock `owner` holds on `ino` (a close: POSIX locks go
    /// with any of the process's descriptors of the file, `flock` locks
    /// with the open file); asks the master only if this mount holds one.
    pub fn unlock_owner(&self, ino: u64, owner: u64) -> FsResult<()> {
        if !self.client.holds_lock(ino, owner) {
            return Ok(());
        }
        let r = LockRequest { inode: ino, owner, start: 0, end: u64::MAX, kind: None, pid: 0 };
        self.block_on(self.client.lock(r, false)).map_err(|e| errno(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_signal_interrupts_unless_blocked() {
        let status = |pnd: &str, shd: &str, blk: &str, cgt: &str| {
            format!("Name:\tx\nSigPnd:\t{pnd}\nShdPnd:\t{shd}\nSigBlk:\t{blk}\nSigIgn:\t0\nSigCgt:\t{cgt}\n")
        };
        assert!(!unblocked_pending(&status("0", "0", "0", "ffffffffffffffff")));
        // SIGALRM (14: bit 13) to the process, caught, not blocked.
        assert!(unblocked_pending(&status("0", "2000", "0", "2000")));
        assert!(!unblocked_pending(&status("0", "2000", "2000", "2000")), "blocked");
        // SIGTSTP (20: bit 19), not caught: it stops the process, the wait goes on.
        assert!(!unblocked_pending(&status("80000", "0", "0", "0")));
        // SIGKILL (bit 8) to the thread, whatever else is blocked.
        assert!(unblocked_pending(&status("100", "0", "fffffffffffffeff", "0")));
        // This thread, as /proc shows it, and one that is gone.
        let me = std::fs::read_link("/proc/thread-self").unwrap();
        let tid: u32 = me.file_name().unwrap().to_str().unwrap().parse().unwrap();
        assert!(!signal_pending(tid));
        assert!(signal_pending(u32::MAX));
        assert!(!signal_pending(0), "a caller from another pid namespace waits");
    }
}
