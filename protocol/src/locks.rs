//! Byte-range locks as POSIX `fcntl` defines them: each owner holds
//! non-overlapping ranges, a new lock replaces what its owner held in its
//! range (splitting what it cuts), adjacent ranges of one owner and kind
//! merge, and read locks of different owners share. The master keeps one
//! [`LockSet`] per inode for every client; a client keeps one of its own
//! (to give back at a close, and to reclaim from a new leader).
//!
//! `flock` locks arrive from the FUSE mount as whole-file range locks of
//! the open file's owner, as Linux's NFS client sends them: a `flock` and
//! an `fcntl` lock of different owners on one file conflict here.

use rkyv::{Archive, Deserialize, Serialize};

/// Shared or exclusive.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum LockKind {
    /// Shared (`F_RDLCK`, `LOCK_SH`).
    Read,
    /// Exclusive (`F_WRLCK`, `LOCK_EX`).
    Write,
}

/// A range held by one owner: a process's lock owner id on one client.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RangeLock {
    /// The client (mount) session holding it.
    pub client: u64,
    /// The owner on that client (the kernel's lock owner id).
    pub owner: u64,
    /// First byte.
    pub start: u64,
    /// Last byte, inclusive (`u64::MAX`: to the end of any file).
    pub end: u64,
    pub kind: LockKind,
    /// The holder's process id on its host, as `F_GETLK` reports it.
    pub pid: u32,
}

impl RangeLock {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }

    fn owned_by(&self, client: u64, owner: u64) -> bool {
        self.client == client && self.owner == owner
    }
}

/// The locks held on one file.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct LockSet(Vec<RangeLock>);

impl LockSet {
    /// A lock of another owner that keeps `client`/`owner` from taking
    /// `kind` on `start..=end`.
    pub fn conflict(&self, client: u64, owner: u64, start: u64, end: u64, kind: LockKind) -> Option<&RangeLock> {
        self.0.iter().find(|l| {
            !l.owned_by(client, owner)
                && l.overlaps(start, end)
                && (kind == LockKind::Write || l.kind == LockKind::Write)
        })
    }

    /// `client`/`owner` now holds `kind` on `start..=end`, or nothing
    /// there (`None`: an unlock), whatever it held there before.
    pub fn set(&mut self, client: u64, owner: u64, start: u64, end: u64, kind: Option<LockKind>, pid: u32) {
        let mut kept = Vec::with_capacity(self.0.len() + 2);
        for l in self.0.drain(..) {
            if !l.owned_by(client, owner) || !l.overlaps(start, end) {
                kept.push(l);
                continue;
            }
            if l.start < start {
                kept.push(RangeLock { end: start - 1, ..l.clone() });
            }
            if l.end > end {
                kept.push(RangeLock { start: end + 1, ..l });
            }
        }
        if let Some(kind) = kind {
            let mut new = RangeLock { client, owner, start, end, kind, pid };
            // What the owner still holds does not overlap the range: merge
            // the neighbours of the same kind that touch it.
            kept.retain(|l| {
                let touches = l.end.checked_add(1) == Some(new.start) || new.end.checked_add(1) == Some(l.start);
                if l.owned_by(client, owner) && l.kind == kind && touches {
                    new.start = new.start.min(l.start);
                    new.end = new.end.max(l.end);
                    return false;
                }
                true
            });
            kept.push(new);
        }
        self.0 = kept;
    }

    /// Drops every lock `keep` refuses; whether any went.
    pub fn retain(&mut self, keep: impl FnMut(&RangeLock) -> bool) -> bool {
        let n = self.0.len();
        self.0.retain(keep);
        self.0.len() != n
    }

    /// Whether `client`/`owner` holds anything here.
    pub fn holds(&self, client: u64, owner: u64) -> bool {
        self.0.iter().any(|l| l.owned_by(client, owner))
    }

    /// The locks held, in no particular order.
    pub fn held(&self) -> &[RangeLock] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// [`LockSet::set`] on `inode`'s set in `sets`, which holds no empty set.
pub fn set_in(
    sets: &mut std::collections::HashMap<u64, LockSet>,
    inode: u64,
    (client, owner): (u64, u64),
    (start, end): (u64, u64),
    kind: Option<LockKind>,
    pid: u32,
) {
    let set = sets.entry(inode).or_default();
    set.set(client, owner, start, end, kind, pid);
    if set.is_empty() {
        sets.remove(&inode);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LockKind::{Read, Write};

    fn ranges(s: &LockSet, client: u64, owner: u64) -> Vec<(u64, u64, LockKind)> {
        let mut v: Vec<_> =
            s.held().iter().filter(|l| l.owned_by(client, owner)).map(|l| (l.start, l.end, l.kind)).collect();
        v.sort_by_key(|r| r.0);
        v
    }

    #[test]
    fn readers_share_and_a_writer_excludes() {
        let mut s = LockSet::default();
        s.set(1, 10, 0, 99, Some(Read), 5);
        assert!(s.conflict(2, 20, 50, 60, Read).is_none(), "two readers");
        assert_eq!(s.conflict(2, 20, 50, 60, Write).map(|l| l.pid), Some(5));
        assert!(s.conflict(2, 20, 100, u64::MAX, Write).is_none(), "past the range");
        assert!(s.conflict(1, 10, 0, 99, Write).is_none(), "an owner never conflicts with itself");
        assert!(s.conflict(1, 11, 0, 0, Write).is_some(), "another owner on the same client does");
    }

    #[test]
    fn a_new_lock_splits_and_merges_its_owners_ranges() {
        let mut s = LockSet::default();
        s.set(1, 10, 0, 99, Some(Write), 5);
        s.set(1, 10, 40, 59, Some(Read), 5);
        assert_eq!(ranges(&s, 1, 10), vec![(0, 39, Write), (40, 59, Read), (60, 99, Write)]);
        s.set(1, 10, 40, 59, Some(Write), 5);
        assert_eq!(ranges(&s, 1, 10), vec![(0, 99, Write)], "back to one range");
        s.set(1, 10, 10, 19, None, 5);
        assert_eq!(ranges(&s, 1, 10), vec![(0, 9, Write), (20, 99, Write)]);
        s.set(1, 10, 100, u64::MAX, Some(Write), 5);
        assert_eq!(ranges(&s, 1, 10), vec![(0, 9, Write), (20, u64::MAX, Write)], "adjacent: merged");
        s.set(1, 10, 0, u64::MAX, None, 5);
        assert!(s.is_empty());
    }

    #[test]
    fn an_unlock_leaves_other_owners_alone() {
        let mut s = LockSet::default();
        s.set(1, 10, 0, 9, Some(Read), 5);
        s.set(2, 10, 0, 9, Some(Read), 6);
        s.set(1, 10, 0, u64::MAX, None, 5);
        assert!(!s.holds(1, 10));
        assert!(s.holds(2, 10));
        assert!(s.retain(|l| l.client != 2));
        assert!(s.is_empty());
    }
}
