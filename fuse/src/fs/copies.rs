//! What the mount keeps of files it wrote after their last close: clean
//! staging files of bigger files on disk ([`Copies`]) and the content of
//! small ones in memory ([`InlineCache`]). Both belong to the staging part
//! ([`super::staging::Stagings`]), which keeps each under its own lock.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use super::staging::Version;

/// Copies kept beyond this many are dropped, least recently kept first.
const MAX_COPIES: usize = 16_384;

/// Bytes of small-file content kept for opens under a lease (all dropped
/// when full: the master has them too).
const MAX_INLINE_CACHE: usize = 64 << 20;

/// Clean staging files kept after their inode's last handle closed (what
/// this mount wrote, as it published it), least recently kept first: an
/// open that finds the inode still at that version starts from the file
/// instead of the cluster, and the kernel reads it directly (passthrough).
/// `bytes` is the sum of the kept files' lengths; `order` may name copies
/// taken or replaced since (their `seq` differs), skipped when met.
#[derive(Default)]
pub(super) struct Copies {
    bytes: u64,
    files: HashMap<u64, Copy>,
    order: VecDeque<(u64, u64)>,
    next: u64,
}

/// A kept copy: a closed staging file (reopened when used).
pub(super) struct Copy {
    pub(super) path: PathBuf,
    pub(super) len: u64,
    pub(super) seq: u64,
    pub(super) version: Version,
    pub(super) stamp: Option<(i64, i64)>,
    pub(super) backed: bool,
    pub(super) synced: bool,
}

impl Copies {
    /// `ino`'s copy.
    pub(super) fn get(&self, ino: u64) -> Option<&Copy> {
        self.files.get(&ino)
    }

    /// Whether `ino` has a copy.
    pub(super) fn contains(&self, ino: u64) -> bool {
        self.files.contains_key(&ino)
    }

    /// Takes `ino`'s copy out (its file is the caller's).
    pub(super) fn remove(&mut self, ino: u64) -> Option<Copy> {
        let c = self.files.remove(&ino);
        self.bytes -= c.as_ref().map_or(0, |c| c.len);
        c
    }

    /// Keeps `c` as `ino`'s copy, dropping the least recently kept ones
    /// beyond `budget` bytes or [`MAX_COPIES`] files: the files of the
    /// copies dropped (or replaced), to be removed.
    pub(super) fn keep(&mut self, ino: u64, mut c: Copy, budget: u64) -> Vec<PathBuf> {
        let mut dropped = Vec::new();
        let seq = self.next;
        self.next += 1;
        c.seq = seq;
        let len = c.len;
        if let Some(old) = self.files.insert(ino, c) {
            self.bytes -= old.len;
            dropped.push(old.path);
        }
        self.bytes += len;
        self.order.push_back((ino, seq));
        while self.bytes > budget || self.files.len() > MAX_COPIES {
            let Some((i, seq)) = self.order.pop_front() else { break };
            if self.files.get(&i).is_some_and(|c| c.seq == seq) {
                let c = self.files.remove(&i).expect("present");
                self.bytes -= c.len;
                dropped.push(c.path);
            }
        }
        // Entries of copies taken or replaced since are skipped above;
        // keep the queue from growing without bound meanwhile.
        if self.order.len() > 2 * MAX_COPIES {
            let live: VecDeque<_> =
                self.order.iter().filter(|(i, q)| self.files.get(i).is_some_and(|c| c.seq == *q)).copied().collect();
            self.order = live;
        }
        dropped
    }

    /// Every kept copy's file (the mount goes).
    pub(super) fn drain(&mut self) -> impl Iterator<Item = PathBuf> + '_ {
        self.files.drain().map(|(_, c)| c.path)
    }
}

/// Small files' content by inode, with the lease generation it was
/// published under, and the bytes held.
#[derive(Default)]
pub(super) struct InlineCache {
    bytes: usize,
    files: HashMap<u64, (u64, Arc<Vec<u8>>)>,
}

impl InlineCache {
    /// Keeps (`Some`) or forgets the content of small file `ino` as
    /// published here under lease generation `g`.
    pub(super) fn keep(&mut self, ino: u64, kept: Option<(u64, Arc<Vec<u8>>)>) {
        if let Some((_, old)) = self.files.remove(&ino) {
            self.bytes -= old.len();
        }
        let Some((g, data)) = kept else { return };
        if self.bytes + data.len() > MAX_INLINE_CACHE {
            self.files.clear();
            self.bytes = 0;
        }
        self.bytes += data.len();
        self.files.insert(ino, (g, data));
    }

    /// `ino`'s content if published under lease generation `g` and `size`
    /// bytes long.
    pub(super) fn get(&self, ino: u64, g: u64, size: u64) -> Option<Vec<u8>> {
        let (at, data) = self.files.get(&ino)?;
        (*at == g && data.len() as u64 == size).then(|| data.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(name: &str, len: u64) -> Copy {
        let version = Version { lease: Some(1), blocks: Vec::new() };
        Copy { path: name.into(), len, seq: 0, version, stamp: None, backed: false, synced: true }
    }

    #[test]
    fn copies_beyond_the_budget_go_least_recently_kept_first() {
        let mut c = Copies::default();
        assert!(c.keep(1, copy("one", 40), 100).is_empty());
        assert!(c.keep(2, copy("two", 40), 100).is_empty());
        // A newer copy of 1 replaces the old one (whose file goes) and is
        // now the most recently kept.
        assert_eq!(c.keep(1, copy("one'", 40), 100), vec![PathBuf::from("one")]);
        assert_eq!(c.keep(3, copy("three", 40), 100), vec![PathBuf::from("two")]);
        assert!(c.contains(1) && c.contains(3) && !c.contains(2));
        assert_eq!(c.remove(1).map(|c| c.path), Some(PathBuf::from("one'")));
        assert_eq!(c.keep(4, copy("four", 60), 100), Vec::<PathBuf>::new());
        assert_eq!(c.drain().count(), 2);
    }

    #[test]
    fn small_files_are_kept_per_lease_generation() {
        let mut c = InlineCache::default();
        c.keep(1, Some((7, Arc::new(b"abc".to_vec()))));
        assert_eq!(c.get(1, 7, 3), Some(b"abc".to_vec()));
        assert_eq!(c.get(1, 8, 3), None, "another generation");
        assert_eq!(c.get(1, 7, 4), None, "another size");
        c.keep(1, None);
        assert_eq!(c.get(1, 7, 3), None);
    }
}
