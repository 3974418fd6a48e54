//! Write staging and local copies. The first write, truncate or fallocate
//! of an inode creates a local staging file ([`Staging`]) shared by every
//! handle of the inode in the mount, published on flush, fsync and close;
//! after the last close a clean one is kept as the inode's copy, or
//! emptied for the next writer. [`Stagings`] owns the inode → staging map,
//! the emptied files kept for reuse, the copies and the small files'
//! content, each under its own lock.
//!
//! Lock order: the inode → staging map, then the handles' maps, then an
//! inode's staging (only one nobody else holds a reference to), then the
//! copies. An inode's staging lock is held by the filesystem across a
//! publish, and other locks (this part's copies, pool and inline cache, the
//! path table, the attribute caches, the map) are taken under it: the map
//! only ever locks a staging nobody else references, so that never waits
//! for one held.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use strata_client::{Attr, FileBlocks, SetAttrs};
use strata_protocol::INLINE_MAX_BYTES;

use super::copies::{Copies, Copy, InlineCache};
use super::handles::Handles;
use super::{io_err, FsResult};
use crate::MountConfig;

/// Written ranges a [`Since`] records before it gives up (and the next
/// publish writes every block).
const MAX_CHANGED_RANGES: usize = 4096;

/// Staging files kept for reuse.
const MAX_POOLED: usize = 256;

/// An inode's staging file and what the mount knows of its content.
pub(super) struct Staging {
    pub(super) file: File,
    pub(super) path: PathBuf,
    pub(super) dirty: bool,
    /// Attribute changes made while dirty (tar's fchmod, fchown, futimens
    /// between write and close): published with the content, in the same
    /// journal entry for a small file.
    pub(super) attrs: SetAttrs,
    /// The inode's attributes as the master last answered them (after the
    /// create or the last publish): while the content is dirty this mount
    /// is the writer, and answers attribute calls from here plus the staged
    /// size and deferred changes, without a round trip.
    pub(super) base: Option<Attr>,
    /// The staging file's ctime when this mount last knew its content. A
    /// passthrough handle's writes reach the file without a FUSE request;
    /// a later ctime is how the mount learns of them (ext4 gives a changed
    /// file a fine-grained ctime once the old one was read).
    pub(super) stamp: Option<(i64, i64)>,
    /// The kernel wrote the content directly since the last publish: the
    /// pages it cached of the inode for earlier cached opens are stale.
    pub(super) bypassed: bool,
    /// Which content of the inode the file holds, when clean and published.
    pub(super) version: Option<Version>,
    /// No content published from here is waiting for its blocks to reach
    /// disk (a flush's or close's blocks are not synced; an fsync's are).
    pub(super) synced: bool,
    /// The kernel was given the file as a passthrough backing file: a
    /// process may still have it mapped after every handle closed (git
    /// maps pack files and closes them), so it is never emptied for
    /// another inode, only kept as this inode's copy or unlinked.
    pub(super) backed: bool,
    /// The blocks this mount last published the content as, and what was
    /// written through it since: a publish keeps the blocks nothing
    /// touched. None when that is not known (a new, revived or refilled
    /// staging; a direct write by the kernel; a truncate to empty).
    pub(super) since: Option<Since>,
}

/// The blocks a staging file's content was last published as (written
/// by this mount, not behind), and the byte ranges written since.
pub(super) struct Since {
    /// The lease generation the content was published under: only while
    /// the mount still holds it is nobody else able to have replaced the
    /// content (freeing these blocks).
    pub(super) lease: u64,
    pub(super) block_size: u64,
    pub(super) len: u64,
    pub(super) blocks: Vec<strata_protocol::BlockId>,
    /// Published durably (the blocks were synced on their workers).
    pub(super) durable: bool,
    pub(super) changed: Vec<std::ops::Range<u64>>,
}

impl Since {
    /// For a content of `len` bytes in blocks of `bs`, published under
    /// lease `lease`, durably or not: per block, the id of the last
    /// published block it can keep (none touched since, same length),
    /// None to write it anew.
    pub(super) fn keep(&self, len: u64, bs: u64, lease: u64, durable: bool) -> Vec<Option<strata_protocol::BlockId>> {
        let n = len.div_ceil(bs) as usize;
        // Blocks of a flush are not synced yet: an fsync writes them again.
        if bs != self.block_size || lease != self.lease || (durable && !self.durable) {
            return vec![None; n];
        }
        (0..n)
            .map(|i| {
                let start = i as u64 * bs;
                let (was, now) = ((self.len.saturating_sub(start)).min(bs), (len - start).min(bs));
                let touched = self.changed.iter().any(|r| r.start < start + now.max(was) && start < r.end);
                self.blocks.get(i).copied().filter(|_| was == now && !touched)
            })
            .collect()
    }
}

/// Which content of an inode a clean staging file holds: what the inode
/// has while the client holds the lease of this generation over it
/// (nobody else can change it meanwhile), or while it has these blocks (a
/// change by anyone gives it new ones).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Version {
    pub(super) lease: Option<u64>,
    pub(super) blocks: Vec<strata_protocol::BlockId>,
}

impl Version {
    /// Whether the inode still has this content: under lease generation
    /// `lease` now, or with `blocks` now.
    pub(super) fn holds(&self, lease: Option<u64>, file: Option<&FileBlocks>) -> bool {
        let same_blocks = |f: &FileBlocks| f.blocks.iter().map(|b| b.block_id).eq(self.blocks.iter().copied());
        (self.lease.is_some() && self.lease == lease) || (!self.blocks.is_empty() && file.is_some_and(same_blocks))
    }
}

impl Staging {
    fn new(file: File, path: PathBuf) -> Staging {
        let mut s = Staging {
            file,
            path,
            dirty: false,
            attrs: SetAttrs::default(),
            base: None,
            stamp: None,
            bypassed: false,
            version: None,
            synced: true,
            backed: false,
            since: None,
        };
        s.restamp();
        s
    }

    /// Records that `range` of the content was written through this mount.
    pub(super) fn touch(&mut self, range: std::ops::Range<u64>) {
        if let Some(since) = self.since.as_mut() {
            if !range.is_empty() {
                since.changed.push(range);
            }
            if since.changed.len() > MAX_CHANGED_RANGES {
                self.since = None;
            }
        }
    }

    fn ctime(&self) -> Option<(i64, i64)> {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().ok().map(|m| (m.ctime(), m.ctime_nsec()))
    }

    /// Takes the file's present content as known (after this mount wrote it).
    /// Only a backing file can change without a request (mappings of a
    /// cached-mode file write back through FUSE too), so only its ctime is
    /// tracked; [`Self::back`] takes the stamp when it becomes one.
    pub(super) fn restamp(&mut self) {
        if self.backed {
            self.stamp = self.ctime();
        }
    }

    /// Marks the file as given to the kernel as a backing file.
    pub(super) fn back(&mut self) {
        self.backed = true;
        self.restamp();
    }

    /// Whether the content differs from what was last published: written
    /// through FUSE, or directly by the kernel since the last stamp (which
    /// sets the mtime anew, as a FUSE write does).
    pub(super) fn is_dirty(&mut self) -> bool {
        if !self.backed {
            return self.dirty;
        }
        let now = self.ctime();
        if now != self.stamp {
            self.stamp = now;
            self.dirty = true;
            self.bypassed = true;
            self.attrs.mtime_ms = None;
            self.since = None; // what the kernel wrote is not known
        }
        self.dirty
    }
}

/// The first `len` bytes of `file`.
pub(super) fn read_whole(file: &File, len: u64) -> std::io::Result<Vec<u8>> {
    let mut data = vec![0u8; len as usize];
    file.read_exact_at(&mut data, 0)?;
    Ok(data)
}

/// Cuts or extends staging `s` to `size` bytes: the range that changed.
pub(super) fn set_len(s: &mut Staging, size: u64) -> FsResult<((), std::ops::Range<u64>)> {
    let len = s.file.metadata().map_err(io_err)?.len();
    s.file.set_len(size).map_err(io_err)?;
    Ok(((), len.min(size)..len.max(size)))
}

/// The staging if its content is dirty.
pub(super) fn dirty(s: Option<&mut Staging>) -> Option<&mut Staging> {
    s.and_then(|s| s.is_dirty().then_some(s))
}

/// `a` with the size, times and deferred changes of `staged` (dirty
/// staged content) over it.
pub(super) fn overlay(mut a: Attr, staged: Option<&mut Staging>) -> Attr {
    let Some(s) = staged else { return a };
    if let Ok(m) = s.file.metadata() {
        a.size = m.len();
        if let Ok(t) = m.modified().and_then(|t| t.duration_since(UNIX_EPOCH).map_err(std::io::Error::other)) {
            a.mtime_ms = a.mtime_ms.max(t.as_millis() as i64);
            a.ctime_ms = a.ctime_ms.max(a.mtime_ms);
        }
    }
    let p = &s.attrs;
    a.mode = p.mode.unwrap_or(a.mode);
    a.uid = p.uid.unwrap_or(a.uid);
    a.gid = p.gid.unwrap_or(a.gid);
    a.atime_ms = p.atime_ms.unwrap_or(a.atime_ms);
    a.mtime_ms = p.mtime_ms.unwrap_or(a.mtime_ms);
    a
}

/// An inode's staging, shared by its handles (None until the first write).
pub(super) type SharedStaging = Arc<Mutex<Option<Staging>>>;

/// The staging part of [`super::StrataFs`] (see the module's lock order).
pub(super) struct Stagings {
    dir: PathBuf,
    copy_bytes: u64,
    /// Staging per inode with open handles.
    staged: Mutex<HashMap<u64, SharedStaging>>,
    /// Emptied staging files kept for the next writer: making an ext4
    /// inode for every file written (and unlinking it after) was a sixth
    /// of the mount's CPU time in a small-file workload.
    pool: Mutex<Vec<(File, PathBuf)>>,
    /// Clean copies of bigger files this mount wrote, by inode.
    copies: Mutex<Copies>,
    /// The content of small files this mount published under a lease (with
    /// its generation), and the bytes held: a read-only open of one while
    /// the lease is held needs no round trip.
    inline: Mutex<InlineCache>,
}

impl Drop for Stagings {
    fn drop(&mut self) {
        for (_, path) in self.pool.get_mut().drain(..) {
            let _ = std::fs::remove_file(path);
        }
        for path in self.copies.get_mut().drain() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Stagings {
    /// Staging files in `cfg.staging_dir`, copies up to `cfg.copy_bytes`.
    pub(super) fn new(cfg: &MountConfig) -> Self {
        Stagings {
            dir: cfg.staging_dir.clone(),
            copy_bytes: cfg.copy_bytes,
            staged: Mutex::new(HashMap::new()),
            pool: Mutex::new(Vec::new()),
            copies: Mutex::new(Copies::default()),
            inline: Mutex::new(InlineCache::default()),
        }
    }

    /// `ino`'s staging, made (empty) if the inode has none: shared by every
    /// handle that takes it.
    pub(super) fn shared(&self, ino: u64) -> SharedStaging {
        self.staged.lock().entry(ino).or_default().clone()
    }

    /// `ino`'s staging if a handle has taken it.
    pub(super) fn get(&self, ino: u64) -> Option<SharedStaging> {
        self.staged.lock().get(&ino).cloned()
    }

    /// Whether a handle has taken `ino`'s staging.
    pub(super) fn contains(&self, ino: u64) -> bool {
        self.staged.lock().contains_key(&ino)
    }

    /// Drops the inode's staging once no handle uses it.
    /// Callers drop their own `OpenFile` first: a handle that holds the
    /// staging (even one still being opened, not yet in `handles`) keeps it.
    pub(super) fn forget_if_unused(&self, ino: u64, handles: &Handles) {
        let (discard, dropped) = {
            let mut staged = self.staged.lock();
            let in_use = staged.get(&ino).is_some_and(|shared| Arc::strong_count(shared) > 1);
            if in_use || handles.is_open(ino) {
                return;
            }
            let orphan = handles.take_orphan(ino);
            // Kept as the copy under the lock: an open of the inode right
            // after finds it (or a newer copy is not replaced by this one).
            match staged.remove(&ino).and_then(|shared| shared.lock().take()) {
                Some(s) => self.retire(ino, s, orphan),
                None => (None, Vec::new()),
            }
        };
        // Emptied for reuse and unlinked (file system calls) outside the
        // map's lock: every getattr takes it, and waited behind the
        // truncates of the releases running beside it.
        if let Some(s) = discard {
            self.discard(s);
        }
        for p in dropped {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Whether `ino` has a kept copy.
    pub(super) fn has_copy(&self, ino: u64) -> bool {
        self.copies.lock().contains(ino)
    }

    /// Takes `ino`'s copy out of the kept ones if the inode still has its
    /// content (and `size`), reopened as a clean staging. A copy the blocks
    /// show stale (or that was changed on disk) is deleted.
    pub(super) fn revive(&self, ino: u64, lease: Option<u64>, file: Option<&FileBlocks>, size: u64) -> Option<Staging> {
        let c = {
            let mut copies = self.copies.lock();
            let c = copies.get(ino)?;
            let holds = c.version.holds(lease, file) && c.len == size;
            if !holds && file.is_none() {
                return None; // a lease alone cannot tell it stale
            }
            let c = copies.remove(ino)?;
            if !holds {
                drop(copies);
                let _ = std::fs::remove_file(&c.path);
                return None;
            }
            c
        };
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&c.path).ok();
        let mut s =
            Staging { version: Some(c.version), backed: c.backed, synced: c.synced, ..Staging::new(file?, c.path) };
        s.stamp = s.ctime();
        if s.stamp != c.stamp {
            // Changed since it was kept (a write through a mapping left
            // after close): not what was published.
            let _ = std::fs::remove_file(&s.path);
            return None;
        }
        Some(s)
    }

    /// Keeps clean staging `s` of a published version as `ino`'s copy
    /// (dropping the least recently kept ones beyond the mount's budget),
    /// or hands it back to be let go (`discard`); and the files of the
    /// copies it dropped, to be removed. The caller does that file system
    /// work after its locks.
    fn retire(&self, ino: u64, mut s: Staging, orphan: bool) -> (Option<Staging>, Vec<PathBuf>) {
        let len = s.file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        // Small files are kept in memory (`inline`); a file on disk for
        // each would cost an ext4 inode per file written.
        let version = s.version.take().filter(|_| !orphan && len > INLINE_MAX_BYTES && len <= self.copy_bytes);
        let Some(version) = version.filter(|_| !s.is_dirty()) else { return (Some(s), Vec::new()) };
        // What a later revive compares: a write through a mapping left
        // after close changes it.
        s.stamp = s.ctime();
        let c = Copy { path: s.path.clone(), len, seq: 0, version, stamp: s.stamp, backed: s.backed, synced: s.synced };
        let dropped = self.copies.lock().keep(ino, c, self.copy_bytes);
        (None, dropped)
    }

    /// Drops `ino`'s kept copy (the inode was unlinked or replaced).
    pub(super) fn drop_copy(&self, ino: u64) {
        let c = self.copies.lock().remove(ino);
        if let Some(c) = c {
            let _ = std::fs::remove_file(c.path);
        }
    }

    /// Lets a staging file go: emptied for the next writer, unless the
    /// kernel had it as a backing file (it may still be mapped).
    fn discard(&self, s: Staging) {
        if s.backed {
            let _ = std::fs::remove_file(&s.path);
        } else {
            self.recycle(s);
        }
    }

    /// Empties a staging file no handle uses any more for the next writer.
    fn recycle(&self, s: Staging) {
        if s.file.set_len(0).is_ok() {
            let mut pool = self.pool.lock();
            if pool.len() < MAX_POOLED {
                pool.push((s.file, s.path));
                return;
            }
        }
        let _ = std::fs::remove_file(&s.path);
    }

    /// An empty staging file; `stamp`: its mtime made now (it stands for
    /// the staged content's, as an O_TRUNC open's). A new file's needs
    /// none: the attributes shown take the later of the master's mtime
    /// and the staging file's, and every write moves the latter. A file
    /// made anew is named with `id()`.
    pub(super) fn new_staging(&self, stamp: bool, id: impl FnOnce() -> u64) -> FsResult<Staging> {
        let pooled = self.pool.lock().pop();
        if let Some((file, path)) = pooled {
            if stamp {
                file.set_modified(SystemTime::now()).map_err(io_err)?;
            }
            return Ok(Staging::new(file, path));
        }
        let path = self.dir.join(format!("stage-{}-{}", std::process::id(), id()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io_err)?;
        Ok(Staging::new(file, path))
    }

    /// Keeps (`Some`) or forgets the content of small file `ino` as
    /// published here under lease generation `g`.
    pub(super) fn keep_inline(&self, ino: u64, kept: Option<(u64, Arc<Vec<u8>>)>) {
        self.inline.lock().keep(ino, kept);
    }

    /// The content of small file `ino` if it was published here under
    /// lease generation `g` and is `size` bytes long.
    pub(super) fn inline_content(&self, ino: u64, g: u64, size: u64) -> Option<Vec<u8>> {
        self.inline.lock().get(ino, g, size)
    }
}
