//! What the mount remembers of inodes' attributes: the master's last
//! answers ([`AttrCache`]), extended attribute lists ([`XattrCache`]), and
//! the version of each file whose pages the kernel may hold
//! ([`PageVersions`]). Each has its own lock, held for single operations
//! only: no other lock is taken under it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_client::Attr;

/// Cached attribute entries beyond this many are dropped.
const MAX_CACHED_ATTRS: usize = 65_536;

/// Cached xattr lists beyond this many are dropped (oldest reads first go
/// stale anyway after one TTL).
const MAX_CACHED_XATTRS: usize = 65_536;

/// Each inode's attributes as the master last answered them, and when:
/// a `getattr` within the TTL of that answer is served from here, which
/// is what the kernel's own attribute cache would have done had it not
/// dropped its copy (it does after every write, setattr and open that
/// revalidates; 60k of the workload's 67k getattrs came within a TTL of
/// an answer). Every change made through this mount replaces or drops
/// the entries it affects, so this mount reads its own writes.
pub(super) struct AttrCache {
    ttl: Duration,
    map: Mutex<HashMap<u64, (Instant, Attr)>>,
}

impl AttrCache {
    /// An empty cache whose answers count as fresh for `ttl`.
    pub(super) fn new(ttl: Duration) -> Self {
        AttrCache { ttl, map: Mutex::new(HashMap::new()) }
    }

    /// Records the master's answer for `a.inode`.
    pub(super) fn fresh(&self, a: &Attr) {
        let mut cache = self.map.lock();
        if cache.len() >= MAX_CACHED_ATTRS {
            cache.clear();
        }
        cache.insert(a.inode, (Instant::now(), a.clone()));
    }

    /// Drops the cached attributes of inodes a change here touched.
    pub(super) fn stale(&self, inos: &[u64]) {
        let mut cache = self.map.lock();
        for ino in inos {
            cache.remove(ino);
        }
    }

    /// `ino`'s cached attributes and when the master answered them.
    pub(super) fn get(&self, ino: u64) -> Option<(Instant, Attr)> {
        self.map.lock().get(&ino).cloned()
    }

    /// When the master answered `ino`'s cached attributes.
    pub(super) fn answered_at(&self, ino: u64) -> Option<Instant> {
        self.map.lock().get(&ino).map(|(at, _)| *at)
    }

    /// For each `(name, inode)`, the inode's cached attributes and whether
    /// they are within the TTL, read under one lock; None if one is missing.
    pub(super) fn all(&self, named: Vec<(String, u64)>) -> Option<Vec<(String, u64, bool, Attr)>> {
        let attrs = self.map.lock();
        named
            .into_iter()
            .map(|(name, ino)| {
                let (at, a) = attrs.get(&ino)?;
                Some((name, ino, at.elapsed() < self.ttl, a.clone()))
            })
            .collect()
    }

    /// A change in directory `dir` moved its times to `time_ms` and its link
    /// count by `links`: the cached attributes say so if within the TTL or
    /// `leased`, or are dropped.
    pub(super) fn touched_dir(&self, dir: u64, time_ms: i64, links: i32, leased: bool) {
        let mut cache = self.map.lock();
        match cache.get_mut(&dir).filter(|(at, _)| leased || at.elapsed() < self.ttl) {
            Some((_, a)) => {
                a.mtime_ms = a.mtime_ms.max(time_ms);
                a.ctime_ms = a.ctime_ms.max(time_ms);
                a.nlink = (i64::from(a.nlink) + i64::from(links)).max(2) as u32;
            }
            None => {
                cache.remove(&dir);
            }
        }
    }
}

/// An inode's extended attributes as last read, by name.
pub(super) type Xattrs = Arc<Vec<(String, Vec<u8>)>>;

/// Extended attributes per inode and when they were read (or, for a file
/// created here, known empty). The kernel asks for `security.capability`
/// before every write and chown (to drop file capabilities): answered
/// from here within the attribute TTL, and while this mount is the
/// file's writer, instead of costing a master round trip each time.
#[derive(Default)]
pub(super) struct XattrCache {
    map: Mutex<HashMap<u64, (Instant, Xattrs)>>,
}

impl XattrCache {
    /// Keeps `x` as `ino`'s list, read now.
    pub(super) fn put(&self, ino: u64, x: Xattrs) {
        let mut cache = self.map.lock();
        if cache.len() >= MAX_CACHED_XATTRS {
            cache.clear();
        }
        cache.insert(ino, (Instant::now(), x));
    }

    /// `ino`'s list and when it was read.
    pub(super) fn get(&self, ino: u64) -> Option<(Instant, Xattrs)> {
        self.map.lock().get(&ino).cloned()
    }

    /// Forgets `ino`'s list (changed here).
    pub(super) fn forget(&self, ino: u64) {
        self.map.lock().remove(&ino);
    }
}

/// Size and mtime of each file as of its last open or publish here: the
/// version whose pages the kernel may hold (read-only opens keep them).
/// An open that finds the file changed since invalidates the kernel's
/// cached attributes and pages (close-to-open consistency across
/// mounts). Attributes the kernel gets in between (a getattr) do not
/// count: its pages are still of this version.
#[derive(Default)]
pub(super) struct PageVersions {
    map: Mutex<HashMap<u64, (u64, i64)>>,
}

impl PageVersions {
    /// The kernel's pages of `ino` are of `now` from here on; whether that
    /// differs from the version they were of.
    pub(super) fn replace(&self, ino: u64, now: (u64, i64)) -> bool {
        self.map.lock().insert(ino, now) != Some(now)
    }

    /// `ino`'s version moved from `before` to `after` without a change of
    /// content (a queued attribute change): pages of `before` are of
    /// `after`.
    pub(super) fn moved(&self, ino: u64, before: (u64, i64), after: (u64, i64)) {
        let mut seen = self.map.lock();
        if seen.get(&ino) == Some(&before) {
            seen.insert(ino, after);
        }
    }

    /// The kernel's pages of `ino` are of `now`, or (None) of no known version.
    pub(super) fn set(&self, ino: u64, now: Option<(u64, i64)>) {
        match now {
            Some(v) => {
                self.map.lock().insert(ino, v);
            }
            None => {
                self.map.lock().remove(&ino);
            }
        }
    }
}
