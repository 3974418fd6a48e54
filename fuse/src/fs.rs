//! The filesystem layer behind the FUSE adapter: inode numbers are Strata's
//! own (the root is 1 in both), an inode → path table turns kernel requests
//! into Strata's path-based calls, and each writable open file stages its
//! bytes in a local file until it is flushed.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};
use parking_lot::{Mutex, RwLock};
use strata_client::{Attr, BatchOp, Client, ClientError, ErrorCode, FileReader, Owner, SetAttrs};
use strata_protocol::INLINE_MAX_BYTES;

use crate::errno::errno;
use crate::MountConfig;

mod locks;

/// Result of a filesystem call.
pub type FsResult<T> = Result<T, Errno>;

/// One directory entry as returned by [`StrataFs::readdir`].
#[derive(Clone, Debug)]
pub struct Entry {
    /// Inode.
    pub ino: u64,
    /// Kind.
    pub kind: FileType,
    /// Name.
    pub name: String,
    /// Attributes (none for `.` and `..`).
    pub attr: Option<FileAttr>,
}

struct Staging {
    file: File,
    path: PathBuf,
    dirty: bool,
    /// Attribute changes made while dirty (tar's fchmod, fchown, futimens
    /// between write and close): published with the content, in the same
    /// journal entry for a small file.
    attrs: SetAttrs,
    /// The inode's attributes as the master last answered them (after the
    /// create or the last publish): while the content is dirty this mount
    /// is the writer, and answers attribute calls from here plus the staged
    /// size and deferred changes, without a round trip.
    base: Option<Attr>,
    /// The staging file's ctime when this mount last knew its content. A
    /// passthrough handle's writes reach the file without a FUSE request;
    /// a later ctime is how the mount learns of them (ext4 gives a changed
    /// file a fine-grained ctime once the old one was read).
    stamp: Option<(i64, i64)>,
    /// The kernel wrote the content directly since the last publish: the
    /// pages it cached of the inode for earlier cached opens are stale.
    bypassed: bool,
    /// Which content of the inode the file holds, when clean and published.
    version: Option<Version>,
    /// No content published from here is waiting for its blocks to reach
    /// disk (a flush's or close's blocks are not synced; an fsync's are).
    synced: bool,
    /// The kernel was given the file as a passthrough backing file: a
    /// process may still have it mapped after every handle closed (git
    /// maps pack files and closes them), so it is never emptied for
    /// another inode, only kept as this inode's copy or unlinked.
    backed: bool,
    /// The blocks this mount last published the content as, and what was
    /// written through it since: a publish keeps the blocks nothing
    /// touched. None when that is not known (a new, revived or refilled
    /// staging; a direct write by the kernel; a truncate to empty).
    since: Option<Since>,
}

/// The blocks a staging file's content was last published as (written
/// by this mount, not behind), and the byte ranges written since.
struct Since {
    /// The lease generation the content was published under: only while
    /// the mount still holds it is nobody else able to have replaced the
    /// content (freeing these blocks).
    lease: u64,
    block_size: u64,
    len: u64,
    blocks: Vec<strata_protocol::BlockId>,
    /// Published durably (the blocks were synced on their workers).
    durable: bool,
    changed: Vec<std::ops::Range<u64>>,
}

/// Written ranges a [`Since`] records before it gives up (and the next
/// publish writes every block).
const MAX_CHANGED_RANGES: usize = 4096;

/// The block size of a file first published by an fsync while smaller than
/// [`DURABLE_SMALL_FILE`] (at most the mount's).
const DURABLE_BLOCK_SIZE: u64 = 1 << 20;
const DURABLE_SMALL_FILE: u64 = 16 << 20;

/// A publish's block size and, per block, the id it keeps (None: written).
type Layout = (u64, Vec<Option<strata_protocol::BlockId>>);

impl Since {
    /// For a content of `len` bytes in blocks of `bs`, published under
    /// lease `lease`, durably or not: per block, the id of the last
    /// published block it can keep (none touched since, same length),
    /// None to write it anew.
    fn keep(&self, len: u64, bs: u64, lease: u64, durable: bool) -> Vec<Option<strata_protocol::BlockId>> {
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
struct Version {
    lease: Option<u64>,
    blocks: Vec<strata_protocol::BlockId>,
}

impl Version {
    /// Whether the inode still has this content: under lease generation
    /// `lease` now, or with `blocks` now.
    fn holds(&self, lease: Option<u64>, file: Option<&strata_client::FileBlocks>) -> bool {
        let same_blocks =
            |f: &strata_client::FileBlocks| f.blocks.iter().map(|b| b.block_id).eq(self.blocks.iter().copied());
        (self.lease.is_some() && self.lease == lease) || (!self.blocks.is_empty() && file.is_some_and(same_blocks))
    }
}

/// Clean staging files kept after their inode's last handle closed (what
/// this mount wrote, as it published it), least recently kept first: an
/// open that finds the inode still at that version starts from the file
/// instead of the cluster, and the kernel reads it directly (passthrough).
#[derive(Default)]
struct Copies {
    bytes: u64,
    files: HashMap<u64, Copy>,
    order: std::collections::VecDeque<(u64, u64)>,
    next: u64,
}

/// A kept copy: a closed staging file (reopened when used).
struct Copy {
    path: PathBuf,
    len: u64,
    seq: u64,
    version: Version,
    stamp: Option<(i64, i64)>,
    backed: bool,
    synced: bool,
}

/// Files up to this size publish under a lease with their blocks written
/// in the background (the close waits for neither the worker nor the
/// master; anyone who looks waits for both).
const MAX_BEHIND_FILE: u64 = 4 << 20;

/// Copies kept beyond this many are dropped, least recently kept first.
const MAX_COPIES: usize = 16_384;

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
    fn touch(&mut self, range: std::ops::Range<u64>) {
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
    fn restamp(&mut self) {
        if self.backed {
            self.stamp = self.ctime();
        }
    }

    /// Marks the file as given to the kernel as a backing file.
    fn back(&mut self) {
        self.backed = true;
        self.restamp();
    }

    /// Whether the content differs from what was last published: written
    /// through FUSE, or directly by the kernel since the last stamp (which
    /// sets the mtime anew, as a FUSE write does).
    fn is_dirty(&mut self) -> bool {
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
fn read_whole(file: &File, len: u64) -> std::io::Result<Vec<u8>> {
    let mut data = vec![0u8; len as usize];
    file.read_exact_at(&mut data, 0)?;
    Ok(data)
}

/// Cuts or extends staging `s` to `size` bytes: the range that changed.
fn set_len(s: &mut Staging, size: u64) -> FsResult<((), std::ops::Range<u64>)> {
    let len = s.file.metadata().map_err(io_err)?.len();
    s.file.set_len(size).map_err(io_err)?;
    Ok(((), len.min(size)..len.max(size)))
}

/// The staging if its content is dirty.
fn dirty(s: Option<&mut Staging>) -> Option<&mut Staging> {
    s.and_then(|s| s.is_dirty().then_some(s))
}

type SharedStaging = Arc<Mutex<Option<Staging>>>;

/// An inode's extended attributes as last read, by name.
type Xattrs = Arc<Vec<(String, Vec<u8>)>>;

/// Cached xattr lists beyond this many are dropped (oldest reads first go
/// stale anyway after one TTL).
const MAX_CACHED_XATTRS: usize = 65_536;

struct OpenFile {
    ino: u64,
    writable: bool,
    reader: tokio::sync::Mutex<Option<FileReader>>,
    /// The file as a read-only open found it: reads inside one local block
    /// (or of an inline file) are served from it on the request thread,
    /// without the reader's lock, so the kernel's parallel read-ahead
    /// requests run in parallel.
    snapshot: std::sync::OnceLock<Arc<strata_client::FileBlocks>>,
    /// The inode's staging file, shared by every handle of the inode in this
    /// mount; created on the first write or truncate (seeded with the
    /// current content).
    staging: SharedStaging,
    /// A write through this handle has dropped the file's capabilities
    /// (`security.capability`) if it had any: once per handle.
    caps_dropped: std::sync::atomic::AtomicBool,
}

/// The path this mount reaches each inode by (the name it was last looked
/// up, created or renamed to), the inode at each such path, and the names
/// known in each directory.
#[derive(Default)]
struct PathMap {
    by_ino: HashMap<u64, String>,
    by_path: HashMap<String, u64>,
    names: HashMap<String, BTreeSet<String>>,
}

/// A path's directory and name.
fn split(path: &str) -> (&str, &str) {
    let dir = strata_protocol::path::parent(path);
    (dir, path[dir.len()..].trim_start_matches('/'))
}

impl PathMap {
    fn get(&self, ino: u64) -> Option<&String> {
        self.by_ino.get(&ino)
    }

    /// The inode last known at `path`.
    fn ino_at(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// The names known in directory `dir`.
    fn names_in(&self, dir: &str) -> impl Iterator<Item = &String> {
        self.names.get(dir).into_iter().flatten()
    }

    fn link_path(&mut self, path: String, ino: u64) {
        let (dir, name) = split(&path);
        self.names.entry(dir.to_string()).or_default().insert(name.to_string());
        self.by_path.insert(path, ino);
    }

    /// Forgets the name `path` (whatever inode it had).
    fn unlink_path(&mut self, path: &str) {
        if self.by_path.remove(path).is_some() {
            let (dir, name) = split(path);
            if let Some(set) = self.names.get_mut(dir) {
                set.remove(name);
                if set.is_empty() {
                    self.names.remove(dir);
                }
            }
        }
    }

    fn insert(&mut self, ino: u64, path: String) {
        if let Some(before) = self.by_ino.insert(ino, path.clone()) {
            if before != path && self.by_path.get(&before) == Some(&ino) {
                self.unlink_path(&before);
            }
        }
        self.link_path(path, ino);
    }

    fn remove(&mut self, ino: u64) {
        if let Some(p) = self.by_ino.remove(&ino) {
            if self.by_path.get(&p) == Some(&ino) {
                self.unlink_path(&p);
            }
        }
    }

    /// `src` was renamed to `dst` (the inode `ino`): it and everything known
    /// below it move.
    fn rename(&mut self, src: &str, dst: &str, ino: u64) {
        // Everything known below `src`, through the names index.
        let mut moved: Vec<(u64, String)> = Vec::new();
        let mut dirs = vec![src.to_string()];
        while let Some(dir) = dirs.pop() {
            for name in self.names_in(&dir) {
                let p = join(&dir, name);
                if let Some(i) = self.ino_at(&p) {
                    moved.push((i, p.clone()));
                    dirs.push(p);
                }
            }
        }
        for (i, p) in moved {
            self.remove(i);
            self.insert(i, format!("{dst}{}", &p[src.len()..]));
        }
        self.remove(ino);
        self.unlink_path(dst);
        self.insert(ino, dst.to_string());
    }
}

/// The filesystem.
pub struct StrataFs {
    /// Size and mtime of each file as of its last open or publish here: the
    /// version whose pages the kernel may hold (read-only opens keep them).
    /// An open that finds the file changed since invalidates the kernel's
    /// cached attributes and pages (close-to-open consistency across
    /// mounts). Attributes the kernel gets in between (a getattr) do not
    /// count: its pages are still of this version.
    seen: Mutex<HashMap<u64, (u64, i64)>>,
    /// Set once the session exists.
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// Negative entries the kernel holds of leased directories (git and
    /// rsync look a name up again before creating or renaming to it: 14k
    /// of the workload's 32k failed lookups were repeats). Nothing can
    /// appear there but through this mount while the lease holds; a
    /// recall drops them from the kernel before the lease is released,
    /// and none outlives the lease's validity (which ends before the
    /// master may give the directory to anyone else).
    negatives: Negatives,
    /// Files unlinked while open here: their bytes live on in the handles'
    /// staging files until the last one closes (POSIX unlink-while-open).
    orphans: Mutex<HashMap<u64, Attr>>,
    client: Client,
    rt: tokio::runtime::Handle,
    cfg: MountConfig,
    paths: RwLock<PathMap>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    /// Staging per inode with open handles.
    staged: Mutex<HashMap<u64, SharedStaging>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<Entry>>>>,
    /// Extended attributes per inode and when they were read (or, for a file
    /// created here, known empty). The kernel asks for `security.capability`
    /// before every write and chown (to drop file capabilities): answered
    /// from here within the attribute TTL, and while this mount is the
    /// file's writer, instead of costing a master round trip each time.
    xattrs: Mutex<HashMap<u64, (Instant, Xattrs)>>,
    /// Each inode's attributes as the master last answered them, and when:
    /// a `getattr` within the TTL of that answer is served from here, which
    /// is what the kernel's own attribute cache would have done had it not
    /// dropped its copy (it does after every write, setattr and open that
    /// revalidates; 60k of the workload's 67k getattrs came within a TTL of
    /// an answer). Every change made through this mount replaces or drops
    /// the entries it affects, so this mount reads its own writes.
    attrs: Mutex<HashMap<u64, (Instant, Attr)>>,
    /// Directories whose every entry this mount knows (names in `paths`,
    /// attributes in `attrs`), with the generation of the lease under
    /// which it learnt them: while the client holds that lease, lookups,
    /// listings and creates there are answered here and the changes
    /// queued (see [`Client::lease`]).
    known: Mutex<HashMap<u64, u64>>,
    /// The content of small files this mount published under a lease (with
    /// its generation), and the bytes held: a read-only open of one while
    /// the lease is held needs no round trip.
    inline: Mutex<InlineCache>,
    /// Clean copies of bigger files this mount wrote, by inode.
    copies: Mutex<Copies>,
    /// The UFS mount points as last read, and when.
    ufs_mounts: Mutex<(Option<Instant>, Vec<String>)>,
    /// Emptied staging files kept for the next writer: making an ext4
    /// inode for every file written (and unlinking it after) was a sixth
    /// of the mount's CPU time in a small-file workload.
    pool: Mutex<Vec<(File, PathBuf)>>,
    next_fh: AtomicU64,
    /// The lock owners that took a lock through each handle: its release
    /// drops their locks on the inode. The kernel sends no flush (which
    /// carries the closing process's owner) at the close of a read-only
    /// handle (`FOPEN_NOFLUSH`), so a lock taken through one would
    /// otherwise outlive its process.
    lock_owners: Mutex<HashMap<u64, Vec<u64>>>,
}

/// Small files' content by inode, with the lease generation it was
/// published under, and the bytes held.
#[derive(Default)]
struct InlineCache {
    bytes: usize,
    files: HashMap<u64, (u64, Arc<Vec<u8>>)>,
}

/// Bytes of small-file content kept for opens under a lease (all dropped
/// when full: the master has them too).
const MAX_INLINE_CACHE: usize = 64 << 20;

/// Staging files kept for reuse.
const MAX_POOLED: usize = 256;

impl Drop for StrataFs {
    fn drop(&mut self) {
        for (_, path) in self.pool.get_mut().drain(..) {
            let _ = std::fs::remove_file(path);
        }
        for (_, c) in self.copies.get_mut().files.drain() {
            let _ = std::fs::remove_file(c.path);
        }
    }
}

/// Cached attribute entries beyond this many are dropped.
const MAX_CACHED_ATTRS: usize = 65_536;

/// Negative entries handed to the kernel and not yet expired beyond this
/// many: lookups are answered without one (a plain ENOENT).
const MAX_NEGATIVES: usize = 65_536;

/// How long after its TTL a negative entry is still invalidated at a recall.
const NEGATIVE_MARGIN: Duration = Duration::from_millis(100);

/// Names this mount told the kernel are absent from a leased directory,
/// with when the kernel's negative entry expires and the directory's inode.
type Negatives = Arc<Mutex<VecDeque<(Instant, u64, OsString)>>>;

/// Drops from the kernel every negative entry this mount gave it that may
/// still be in use (leases were recalled: the names may appear elsewhere).
fn forget_negatives(negatives: &Negatives, notifier: &std::sync::OnceLock<fuser::Notifier>) {
    let gone = std::mem::take(&mut *negatives.lock());
    let Some(n) = notifier.get() else { return };
    let now = Instant::now();
    for (until, parent, name) in gone {
        // The kernel's expiry counts from when it took the reply, a little
        // after `until` was set.
        if until + NEGATIVE_MARGIN > now {
            let _ = n.inval_entry(INodeNo(parent), &name);
        }
    }
}

/// `a` with the size, times and deferred changes of `staged` (dirty
/// staged content) over it.
fn overlay(mut a: Attr, staged: Option<&mut Staging>) -> Attr {
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

/// What a lookup found.
pub enum Lookup {
    /// The entry.
    Found(FileAttr),
    /// Nothing, and for how long the kernel may take that as the answer.
    Absent(Duration),
}

fn time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Converts Strata attributes to the kernel's.
pub fn file_attr(a: &Attr) -> FileAttr {
    let kind = match a.file_type {
        strata_client::FileType::Directory => FileType::Directory,
        strata_client::FileType::Symlink => FileType::Symlink,
        strata_client::FileType::File => FileType::RegularFile,
        strata_client::FileType::Fifo => FileType::NamedPipe,
        strata_client::FileType::Socket => FileType::Socket,
        strata_client::FileType::CharDevice => FileType::CharDevice,
        strata_client::FileType::BlockDevice => FileType::BlockDevice,
    };
    FileAttr {
        ino: INodeNo(a.inode),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: time(a.atime_ms),
        mtime: time(a.mtime_ms),
        ctime: time(a.ctime_ms),
        crtime: time(a.ctime_ms),
        kind,
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 1 << 20,
        flags: 0,
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

fn name_str(name: &std::ffi::OsStr) -> FsResult<&str> {
    let n = name.to_str().ok_or(Errno::EINVAL)?;
    if n.len() > strata_protocol::path::MAX_NAME_BYTES {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(n)
}

fn io_err(e: std::io::Error) -> Errno {
    Errno::from(e)
}

impl StrataFs {
    /// A filesystem over `client`; async calls run on `rt`.
    pub fn new(
        client: Client,
        rt: tokio::runtime::Handle,
        cfg: MountConfig,
        notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    ) -> Self {
        let mut paths = PathMap::default();
        paths.insert(1, "/".to_string());
        let negatives = Negatives::default();
        let (neg, n) = (negatives.clone(), notifier.clone());
        client.on_recall(Arc::new(move || forget_negatives(&neg, &n)));
        StrataFs {
            seen: Mutex::new(HashMap::new()),
            negatives,
            notifier,
            orphans: Mutex::new(HashMap::new()),
            client,
            rt,
            cfg,
            paths: RwLock::new(paths),
            files: Mutex::new(HashMap::new()),
            staged: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            xattrs: Mutex::new(HashMap::new()),
            attrs: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            inline: Mutex::new(InlineCache::default()),
            copies: Mutex::new(Copies::default()),
            ufs_mounts: Mutex::new((None, Vec::new())),
            pool: Mutex::new(Vec::new()),
            next_fh: AtomicU64::new(1),
            lock_owners: Mutex::new(HashMap::new()),
        }
    }

    /// The attribute/entry TTL.
    pub fn ttl(&self) -> Duration {
        self.cfg.ttl
    }

    /// How long the kernel may cache `ino`'s attributes: not at all while
    /// the kernel reads and writes its staging file itself (passthrough:
    /// stores through a mapping move its times with no request here), else
    /// the mount's TTL. A staging written through the mount needs no
    /// exception: the kernel moves the size itself at each write and
    /// forgets the times, and a truncate's reply carries the new size.
    /// (Expiring them at once cost a GETATTR at every open of a new file,
    /// from the kernel's permission check.)
    pub fn attr_ttl(&self, ino: u64) -> Duration {
        let shared = self.staged.lock().get(&ino).cloned();
        if shared.is_some_and(|s| s.try_lock().is_none_or(|g| g.as_ref().is_some_and(|s| s.backed))) {
            return Duration::ZERO;
        }
        // What is left of the TTL of the master's answer the attributes come
        // from: served from the mount's cache, they are never older than a
        // TTL in the kernel either.
        let at = self.attrs.lock().get(&ino).map(|(at, _)| *at);
        if at.is_some_and(|at| at.elapsed() >= self.cfg.ttl) && self.leased(ino) {
            return self.cfg.ttl;
        }
        at.map_or(self.cfg.ttl, |at| self.cfg.ttl.saturating_sub(at.elapsed()))
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn path(&self, ino: u64) -> FsResult<String> {
        self.paths.read().get(ino).cloned().ok_or(Errno::ESTALE)
    }

    fn child_path(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<String> {
        Ok(join(&self.path(parent)?, name_str(name)?))
    }

    /// Records the master's answer for the inode at `path`.
    fn remember(&self, path: String, a: &Attr) {
        self.fresh(a);
        self.paths.write().insert(a.inode, path);
    }

    /// `a` was made at `path` in directory `parent`: the master moved the
    /// parent's times to the new inode's ctime (one journal entry, one
    /// time) and counted a new subdirectory in its links.
    fn made(&self, parent: u64, path: String, a: &Attr) {
        let links = i32::from(a.file_type == strata_client::FileType::Directory);
        self.touched_dir(parent, a.ctime_ms, links);
        self.remember(path, a);
    }

    /// The attributes at `path`: the cached answer for the inode this mount
    /// knows there while within the TTL (what the kernel's own entry cache
    /// would have answered), else the master's.
    fn attr_at(&self, path: &str) -> FsResult<Attr> {
        let known = self.paths.read().ino_at(path);
        if let Some(a) = known.and_then(|ino| self.cached_attr(ino)) {
            return Ok(a);
        }
        let a = self.stat_path(path)?;
        self.remember(path.to_string(), &a);
        Ok(a)
    }

    /// `ino`'s cached attributes if within the TTL, or while this mount
    /// holds a lease over it (nothing there changes but through here).
    fn cached_attr(&self, ino: u64) -> Option<Attr> {
        let (at, a) = self.attrs.lock().get(&ino).cloned()?;
        (at.elapsed() < self.cfg.ttl || self.leased(ino)).then_some(a)
    }

    /// Whether the client holds a lease over the path this mount knows `ino` by.
    fn leased(&self, ino: u64) -> bool {
        self.paths.read().get(ino).is_some_and(|p| self.client.lease_of(p).is_some())
    }

    /// The lease generation under which this mount knows every entry of
    /// directory `dir` (at `path`), if the client still holds that lease.
    fn known_dir(&self, dir: u64, path: &str) -> Option<u64> {
        let g = *self.known.lock().get(&dir)?;
        (self.client.lease_of(path) == Some(g)).then_some(g)
    }

    /// Asks for the lease on the directory `dir` at `path` (just made here):
    /// granted, its entries are known from then on.
    fn try_lease(&self, dir: u64, path: &str) {
        let granted = match self.block_on(self.client.lease(path)) {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!(path, error = %e, "no lease");
                None
            }
        };
        let Some((g, entries)) = granted else { return };
        {
            let mut paths = self.paths.write();
            let stale: Vec<String> = paths
                .names_in(path)
                .filter(|n| !entries.iter().any(|e| &e.name == *n))
                .map(|n| join(path, n))
                .collect();
            for p in stale {
                paths.unlink_path(&p);
            }
            for e in &entries {
                self.fresh(&e.attr);
                paths.insert(e.attr.inode, join(path, &e.name));
            }
        }
        self.known.lock().insert(dir, g);
    }

    /// Records the master's answer for `a.inode`.
    fn fresh(&self, a: &Attr) {
        let mut cache = self.attrs.lock();
        if cache.len() >= MAX_CACHED_ATTRS {
            cache.clear();
        }
        cache.insert(a.inode, (Instant::now(), a.clone()));
    }

    /// Drops the cached attributes of inodes a change here touched.
    fn stale(&self, inos: &[u64]) {
        let mut cache = self.attrs.lock();
        for ino in inos {
            cache.remove(ino);
        }
    }

    /// A change in directory `dir` moved its times to `time_ms` (the
    /// master's, or this mount's clock for a queued change) and its link
    /// count by `links`: the cached attributes say so (the kernel asks for
    /// them before the next change in it, to check permissions: dropping
    /// them cost a round trip per create), or are dropped if too old.
    fn touched_dir(&self, dir: u64, time_ms: i64, links: i32) {
        let leased = self.leased(dir);
        let mut cache = self.attrs.lock();
        match cache.get_mut(&dir).filter(|(at, _)| leased || at.elapsed() < self.cfg.ttl) {
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

    /// `ino`'s attributes from the master, answered within the TTL.
    fn master_attr(&self, ino: u64) -> FsResult<Attr> {
        if let Some(a) = self.cached_attr(ino) {
            return Ok(a);
        }
        let a = self.stat_path(&self.path(ino)?)?;
        self.fresh(&a);
        Ok(a)
    }

    /// Drops the kernel's cached attributes and pages of `ino` if the file
    /// changed since the version its pages may hold (another mount wrote it).
    fn revalidate(&self, ino: u64, fresh: &Attr) {
        let changed = {
            let mut seen = self.seen.lock();
            let now = (fresh.size, fresh.mtime_ms);
            seen.insert(ino, now) != Some(now)
        };
        let Some(n) = self.notifier.get().cloned().filter(|_| changed) else { return };
        // Invalidation is a write to the FUSE device: do it off this request
        // thread and wait briefly, so the kernel sees fresh attributes before
        // the open returns but a busy inode can never deadlock the handler.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = n.inval_inode(INodeNo(ino), 0, 0);
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(Duration::from_millis(200));
    }

    fn stat_path(&self, path: &str) -> FsResult<Attr> {
        self.block_on(self.client.stat(path)).map_err(|e| errno(&e))
    }

    /// Attributes, with the size and times of a dirty open file taken from its staging file.
    fn with_staged_size(&self, a: Attr) -> Attr {
        let shared = self.staged.lock().get(&a.inode).cloned();
        match shared {
            Some(shared) => overlay(a, dirty(shared.lock().as_mut())),
            None => a,
        }
    }

    /// `lookup`: the attributes of `name` in `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Lookup> {
        let dir = self.path(parent)?;
        let path = join(&dir, name_str(name)?);
        // Every name in a known directory is in the path map; its
        // attributes are then answered from the cache below.
        if let Some(g) = self.known_dir(parent, &dir) {
            if self.paths.read().ino_at(&path).is_none() {
                return Ok(Lookup::Absent(self.absent(parent, name, &dir, g)));
            }
        }
        let a = self.attr_at(&path)?;
        // An inode staged here: read under its staging's lock (see `attr_now`).
        let a = if self.staged.lock().contains_key(&a.inode) { self.attr_now(a.inode)? } else { a };
        Ok(Lookup::Found(file_attr(&a)))
    }

    /// How long the kernel may keep `name` in `parent` (at `dir`, known
    /// under lease generation `g`) as absent: what is left of the TTL and
    /// of the lease's validity. Checked and recorded under one lock, which
    /// a recall's [`forget_negatives`] takes after the lease stopped being
    /// used: a negative entry made under the lease is either in the list
    /// it invalidates or made after, and then not made at all.
    fn absent(&self, parent: u64, name: &OsStr, dir: &str, g: u64) -> Duration {
        let mut neg = self.negatives.lock();
        let now = Instant::now();
        while neg.front().is_some_and(|(until, _, _)| *until + NEGATIVE_MARGIN <= now) {
            neg.pop_front();
        }
        let Some(left) = self.client.lease_left(dir).filter(|(lg, _)| *lg == g).map(|(_, left)| left) else {
            return Duration::ZERO;
        };
        if neg.len() >= MAX_NEGATIVES {
            return Duration::ZERO;
        }
        let ttl = left.min(self.cfg.ttl);
        neg.push_back((now + ttl, parent, name.to_owned()));
        ttl
    }

    /// `getattr`.
    pub fn getattr(&self, ino: u64) -> FsResult<FileAttr> {
        Ok(file_attr(&self.attr_now(ino)?))
    }

    /// `ino`'s attributes as this mount answers them: an orphan's, or a
    /// dirty staging's base with its size, times and deferred changes, or
    /// the master's (within the TTL).
    fn attr_now(&self, ino: u64) -> FsResult<Attr> {
        let orphan = self.orphans.lock().get(&ino).cloned();
        if let Some(a) = orphan {
            return Ok(self.with_staged_size(a));
        }
        // Under the staging's lock throughout: a publish (a release's,
        // beside this) cleaning it in between would leave a base older
        // than the staging it no longer overlays.
        let shared = self.staged.lock().get(&ino).cloned();
        let mut guard = shared.as_ref().map(|s| s.lock());
        let staged = guard.as_mut().and_then(|g| dirty(g.as_mut()));
        let base = staged.as_ref().and_then(|s| s.base.clone());
        let a = match base {
            Some(a) => a,
            None => self.master_attr(ino)?,
        };
        Ok(overlay(a, staged))
    }

    /// The mode `ino` takes when its privileges are dropped (the kernel
    /// leaves that to the filesystem: `FUSE_HANDLE_KILLPRIV_V2`), as a
    /// local filesystem does on a chown, or a write or truncate by a caller
    /// without `CAP_FSETID`: no set-user-ID bit, no set-group-ID bit if
    /// group members may execute it; None when nothing changes (or it is
    /// a directory). File capabilities go too.
    fn drop_privileges(&self, ino: u64) -> FsResult<Option<u32>> {
        let a = self.attr_now(ino)?;
        if a.file_type == strata_client::FileType::Directory {
            return Ok(None);
        }
        self.drop_capabilities(ino)?;
        let mut mode = a.mode & 0o7777;
        mode &= !0o4000;
        if mode & 0o010 != 0 {
            mode &= !0o2000;
        }
        Ok((mode != a.mode & 0o7777).then_some(mode))
    }

    /// Removes `security.capability` from `ino` if it has one.
    fn drop_capabilities(&self, ino: u64) -> FsResult<()> {
        const CAPS: &str = "security.capability";
        if self.xattrs_of(ino)?.iter().any(|(n, _)| n == CAPS) {
            match self.setxattr(ino, OsStr::new(CAPS), None, 0) {
                Err(e) if e != Errno::NO_XATTR => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// The master's last attributes of an inode whose staged content is dirty here.
    fn dirty_base(&self, ino: u64) -> Option<Attr> {
        let shared = self.staged.lock().get(&ino).cloned()?;
        let mut guard = shared.lock();
        dirty(guard.as_mut()).and_then(|s| s.base.clone())
    }

    /// `setattr`: mode, owner, times and size.
    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
        fh: Option<u64>,
        unprivileged: bool,
    ) -> FsResult<FileAttr> {
        let path = self.path(ino)?;
        // A chown, and a truncate by a caller without CAP_FSETID, drop the
        // file's privileges.
        let mut mode = mode;
        if uid.is_some() || gid.is_some() || (size.is_some() && unprivileged) {
            mode = self.drop_privileges(ino)?.or(mode);
        }
        if let Some(size) = size {
            match fh.and_then(|fh| self.files.lock().get(&fh).cloned()) {
                // O_TRUNC: nothing of the old content is needed.
                Some(f) if f.writable && size == 0 => self.truncate_to_empty(&f)?,
                Some(f) if f.writable => {
                    self.with_staging(&f, |s| set_len(s, size))?;
                }
                _ => {
                    // truncate(2) on a path: stage, cut, publish.
                    let f = self.open_file(ino, true);
                    self.with_staging(&f, |s| set_len(s, size))?;
                    let r = self.publish(&f, false);
                    drop(f);
                    self.forget_staging_if_unused(ino);
                    r?;
                }
            }
        }
        let ms = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        };
        let attrs =
            SetAttrs { mode: mode.map(|m| m & 0o7777), uid, gid, atime_ms: atime.map(ms), mtime_ms: mtime.map(ms) };
        if attrs != SetAttrs::default() && self.defer_attrs(ino, &attrs)? {
            return Ok(file_attr(&self.attr_now(ino)?));
        }
        if attrs != SetAttrs::default() && size.is_none() {
            if let Some(a) = self.set_attr_later(ino, &path, &attrs)? {
                return Ok(file_attr(&a));
            }
        }
        // The master's answer and what is staged over it, both under the
        // staging's lock: a publish in between (a release's, beside this)
        // would leave the answer older than the staging it no longer
        // overlays (pjdfstest's ftruncate::shrink_not_empty, now and then,
        // once the kernel kept these attributes).
        let shared = self.staged.lock().get(&ino).cloned();
        let mut staging = shared.as_ref().map(|s| s.lock());
        let a = if attrs != SetAttrs::default() {
            let a = self.block_on(self.client.set_attr(&path, attrs));
            a.inspect_err(|_| self.stale(&[ino])).map_err(|e| errno(&e))?
        } else {
            self.stat_path(&path)?
        };
        self.fresh(&a);
        Ok(file_attr(&overlay(a, staging.as_mut().and_then(|g| dirty(g.as_mut())))))
    }

    /// Queues a change of mode, owner or times when the mount can tell the
    /// result itself: no handle here stages dirty content of the inode. The
    /// answer is the inode's attributes from the master (cached within the
    /// TTL, else asked for) with the change applied at this mount's time,
    /// which the queued op carries so the master records the same ctime.
    /// None: do it now.
    fn set_attr_later(&self, ino: u64, path: &str, attrs: &SetAttrs) -> FsResult<Option<Attr>> {
        if self.orphans.lock().contains_key(&ino) {
            return Ok(None);
        }
        // A clean staging (a close published it; the release is on its way:
        // rsync's utimes right after close) takes the change into its base.
        let shared = self.staged.lock().get(&ino).cloned();
        let mut staging = shared.as_ref().map(|s| s.lock());
        if staging.as_mut().is_some_and(|g| g.as_mut().is_some_and(|s| s.is_dirty())) {
            return Ok(None);
        }
        // Not cached (tar's and rsync's directory times, set at the end): a
        // stat and a queued change cost less than a commit waited for.
        let mut a = self.master_attr(ino)?;
        let t = strata_protocol::now_ms().max(a.ctime_ms);
        self.block_on(self.client.set_attr_later(path, attrs.clone(), t)).map_err(|e| errno(&e))?;
        let before = (a.size, a.mtime_ms);
        attrs.apply(&mut a, t);
        {
            // Pages the kernel holds of the content are still that content.
            let mut seen = self.seen.lock();
            if seen.get(&ino) == Some(&before) {
                seen.insert(ino, (a.size, a.mtime_ms));
            }
        }
        if let Some(base) = staging.as_mut().and_then(|g| g.as_mut()).and_then(|s| s.base.as_mut()) {
            attrs.apply(base, t);
        }
        self.fresh(&a);
        Ok(Some(a))
    }

    /// Queues a rename when the mount can tell the result itself: the
    /// source is a non-directory whose attributes it has within the TTL;
    /// the target is a non-directory with one link it knows likewise, not
    /// open here, or a name it does not know (the kernel just looked it up
    /// and found nothing). The source may be open, or its last handle's
    /// release still on its way (rsync renames right after close): its
    /// staging is held while the rename is queued, so a publish after it
    /// names the new path. False: do it now.
    fn rename_later(&self, parent: u64, src: &str, newparent: u64, dst: &str) -> FsResult<bool> {
        use strata_client::FileType::Directory;
        let (ino, replaced) = {
            let paths = self.paths.read();
            (paths.ino_at(src), paths.ino_at(dst))
        };
        let Some(ino) = ino else { return Ok(false) };
        // The staging first: a publish (a release's) refreshes the cached
        // attributes under it, which this then reads after, not before.
        let shared = self.staged.lock().get(&ino).cloned();
        let mut staging = shared.as_ref().map(|s| s.lock());
        let Some(mut a) = self.cached_attr(ino).filter(|a| a.file_type != Directory) else { return Ok(false) };
        if let Some(r) = replaced {
            // A replaced inode with other names changes under them (nlink,
            // ctime); one open here would have to live on as an orphan.
            let open = self.files.lock().values().any(|f| f.ino == r)
                || self.staged.lock().contains_key(&r)
                || self.orphans.lock().contains_key(&r);
            if open || r == ino || self.cached_attr(r).is_none_or(|ra| ra.file_type == Directory || ra.nlink > 1) {
                return Ok(false);
            }
        }
        let t = strata_protocol::now_ms().max(a.ctime_ms);
        self.block_on(self.client.rename_later(src, dst, t)).map_err(|e| errno(&e))?;
        a.ctime_ms = t;
        self.fresh(&a);
        if let Some(base) = staging.as_mut().and_then(|g| g.as_mut()).and_then(|s| s.base.as_mut()) {
            base.ctime_ms = t;
        }
        self.touched_dir(parent, t, 0);
        self.touched_dir(newparent, t, 0);
        let mut paths = self.paths.write();
        if let Some(r) = replaced {
            self.drop_copy(r);
            self.stale(&[r]);
            paths.remove(r);
        }
        paths.rename(src, dst, ino);
        Ok(true)
    }

    /// Records attribute changes to publish with the inode's staged
    /// content; false if nothing is staged (apply them now).
    /// A clean staging file of a small file (rsync's `fchmod` right after
    /// its create) is marked dirty for it: republishing it is one entry.
    fn defer_attrs(&self, ino: u64, attrs: &SetAttrs) -> FsResult<bool> {
        let Some(shared) = self.staged.lock().get(&ino).cloned() else { return Ok(false) };
        if !self.mark_attrs(&shared, attrs) {
            return Ok(false);
        }
        // A release (the kernel sends it after `close` returned; a chmod by
        // path can come before it is handled) may have published before
        // the mark and would then let the dirty staging go; the reference
        // held here keeps it until it is published here instead.
        if !self.files.lock().values().any(|o| o.ino == ino) {
            let f = self.open_file(ino, true);
            drop(shared);
            let r = self.publish(&f, false);
            drop(f);
            self.forget_staging_if_unused(ino);
            r?;
        }
        Ok(true)
    }

    fn mark_attrs(&self, shared: &SharedStaging, attrs: &SetAttrs) -> bool {
        let mut guard = shared.lock();
        let small = |s: &Staging| s.file.metadata().is_ok_and(|m| m.len() <= INLINE_MAX_BYTES);
        let Some(s) = guard.as_mut().and_then(|s| (s.is_dirty() || (s.base.is_some() && small(s))).then_some(s)) else {
            return false;
        };
        s.dirty = true;
        let p = &mut s.attrs;
        p.mode = attrs.mode.or(p.mode);
        p.uid = attrs.uid.or(p.uid);
        p.gid = attrs.gid.or(p.gid);
        p.atime_ms = attrs.atime_ms.or(p.atime_ms);
        p.mtime_ms = attrs.mtime_ms.or(p.mtime_ms);
        true
    }

    /// `readlink`.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let a = self.master_attr(ino)?;
        a.symlink_target.map(|t| t.into_bytes()).ok_or(Errno::EINVAL)
    }

    /// `mkdir`.
    pub fn mkdir(&self, parent: u64, name: &std::ffi::OsStr, mode: u32, uid: u32, gid: u32) -> FsResult<FileAttr> {
        let path = self.child_path(parent, name)?;
        let owner = Owner { mode: mode & 0o7777, uid, gid };
        if let Some((a, g)) = self.make_leased(parent, &path, strata_client::FileType::Directory, owner)? {
            self.known.lock().insert(a.inode, g);
            return Ok(file_attr(&a));
        }
        let a = self.block_on(self.client.mkdir_as(&path, false, owner)).map_err(|e| errno(&e))?;
        self.made(parent, path.clone(), &a);
        match self.client.lease_of(&path) {
            // Made by this client under its lease: empty, and nobody else's.
            Some(g) => {
                self.known.lock().insert(a.inode, g);
            }
            None => self.try_lease(a.inode, &path),
        }
        Ok(file_attr(&a))
    }

    /// Makes `path` in directory `parent` here when this mount knows every
    /// entry there under a lease the client still holds: the create is
    /// queued with an inode number the client reserved and this mount's
    /// time, and answered at once. The new inode's attributes and the
    /// lease generation; None: do it synchronously.
    fn make_leased(
        &self,
        parent: u64,
        path: &str,
        kind: strata_client::FileType,
        owner: Owner,
    ) -> FsResult<Option<(Attr, u64)>> {
        let Some(g) = self.known_dir(parent, split(path).0) else { return Ok(None) };
        if self.paths.read().ino_at(path).is_some() {
            return Err(Errno::EEXIST);
        }
        let Some(dir) = self.cached_attr(parent) else { return Ok(None) };
        let inode = self.block_on(self.client.reserve_inode()).map_err(|e| errno(&e))?;
        let t = strata_protocol::now_ms();
        let block_size = self.cfg.block_size;
        let a = Attr::new(inode, kind, owner.mode, owner.uid, owner.gid, t).created_in(&dir, block_size);
        let Owner { mode, uid, gid } = owner;
        let op = BatchOp::CreateInode { path: path.into(), inode, kind, mode, uid, gid, block_size, time_ms: t };
        if !self.client.queue_leased(g, path, op) {
            return Ok(None);
        }
        self.made(parent, path.to_string(), &a);
        Ok(Some((a, g)))
    }

    /// `unlink` (files and symlinks).
    pub fn unlink(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<()> {
        let path = self.child_path(parent, name)?;
        // Every name the kernel unlinks came from a lookup or create here,
        // which recorded it for its inode: a name no open handle's inode
        // has is not open in this mount, and goes in one call.
        let busy = {
            let paths = self.paths.read();
            self.files.lock().values().any(|f| paths.get(f.ino) == Some(&path))
        };
        if !busy {
            // Known here (the kernel looked it up) with one link: queued, no
            // round trip. An inode with other names changes (nlink, ctime)
            // under them, which the mount would answer wrongly meanwhile.
            let known = self.paths.read().ino_at(&path);
            if let Some(ino) = known.filter(|&i| self.cached_attr(i).is_some_and(|a| a.nlink <= 1)) {
                self.block_on(self.client.unlink_later(&path)).map_err(|e| errno(&e))?;
                self.drop_copy(ino);
                self.stale(&[ino]);
                self.touched_dir(parent, strata_protocol::now_ms(), 0);
                self.forget_name(ino, &path);
                return Ok(());
            }
            tracing::debug!(path, ?known, "unlink: not queued");
            let r = self.block_on(self.client.unlink(&path));
            self.stale(&[parent]);
            let a = r.map_err(|e| errno(&e))?;
            self.drop_copy(a.inode);
            self.stale(&[a.inode]);
            self.forget_name(a.inode, &path);
            return Ok(());
        }
        let a = self.stat_path(&path)?;
        if a.file_type == strata_client::FileType::Directory {
            return Err(Errno::EISDIR);
        }
        let open: Vec<Arc<OpenFile>> = self.files.lock().values().filter(|f| f.ino == a.inode).cloned().collect();
        if a.nlink <= 1 && !open.is_empty() {
            // Keep the bytes for the open handles, then let the name go.
            for f in &open {
                self.ensure_staging(f, false)?;
            }
            let mut gone = a.clone();
            gone.nlink = 0;
            self.orphans.lock().insert(a.inode, gone);
        }
        let r = self.block_on(self.client.delete(&path, false));
        self.stale(&[parent, a.inode]);
        r.map_err(|e| errno(&e))?;
        self.forget_name(a.inode, &path);
        Ok(())
    }

    /// Forgets that `ino` is reachable at `path` (it was unlinked there); a
    /// file with other names stays reachable through them.
    fn forget_name(&self, ino: u64, path: &str) {
        let mut paths = self.paths.write();
        if paths.get(ino).is_some_and(|p| p == path) {
            paths.remove(ino);
        }
        if paths.ino_at(path) == Some(ino) {
            paths.unlink_path(path);
        }
    }

    /// `mknod`: FIFOs, sockets and devices.
    pub fn mknod(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<FileAttr> {
        let path = self.child_path(parent, name)?;
        let kind = match mode & libc::S_IFMT {
            libc::S_IFIFO => strata_client::FileType::Fifo,
            libc::S_IFSOCK => strata_client::FileType::Socket,
            libc::S_IFCHR => strata_client::FileType::CharDevice,
            libc::S_IFBLK => strata_client::FileType::BlockDevice,
            libc::S_IFREG | 0 => {
                let (a, fh) = self.create(parent, name, mode, uid, gid)?;
                self.release(fh)?;
                return Ok(a);
            }
            _ => return Err(Errno::EINVAL),
        };
        let a = self
            .block_on(self.client.mknod(&path, kind, rdev, Owner { mode: mode & 0o7777, uid, gid }))
            .map_err(|e| errno(&e))?;
        self.made(parent, path, &a);
        Ok(file_attr(&a))
    }

    /// `link`: a new name for `ino`.
    pub fn link(&self, ino: u64, newparent: u64, newname: &std::ffi::OsStr) -> FsResult<FileAttr> {
        let target = self.path(ino)?;
        let path = self.child_path(newparent, newname)?;
        let r = self.block_on(self.client.link(&target, &path));
        let a = r.inspect_err(|_| self.stale(&[newparent, ino])).map_err(|e| errno(&e))?;
        self.touched_dir(newparent, a.ctime_ms, 0);
        // The path map keeps one name per inode: the directory's names are
        // no longer all known here.
        self.known.lock().remove(&newparent);
        self.fresh(&a);
        Ok(file_attr(&a))
    }

    /// `rmdir`.
    pub fn rmdir(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<()> {
        let path = self.child_path(parent, name)?;
        let known = self.paths.read().ino_at(&path);
        if let Some((ino, g)) = known.and_then(|i| Some((i, self.known_dir(i, &path)?))) {
            // Known here, under the lease: empty or not is known too.
            if self.paths.read().names_in(&path).next().is_some() {
                return Err(Errno::ENOTEMPTY);
            }
            if self.client.queue_leased(g, &path, BatchOp::Delete { path: path.clone() }) {
                self.touched_dir(parent, strata_protocol::now_ms(), -1);
                self.stale(&[ino]);
                self.known.lock().remove(&ino);
                self.paths.write().remove(ino);
                return Ok(());
            }
        }
        let a = self.attr_at(&path)?;
        if a.file_type != strata_client::FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        let r = self.block_on(self.client.delete(&path, false));
        self.stale(&[parent, a.inode]);
        r.map_err(|e| errno(&e))?;
        self.paths.write().remove(a.inode);
        Ok(())
    }

    /// `symlink`.
    pub fn symlink(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        target: &std::path::Path,
        uid: u32,
        gid: u32,
    ) -> FsResult<FileAttr> {
        let path = self.child_path(parent, name)?;
        let target = target.to_str().ok_or(Errno::EINVAL)?;
        let a = self.block_on(self.client.symlink_as(target, &path, uid, gid)).map_err(|e| errno(&e))?;
        self.made(parent, path, &a);
        Ok(file_attr(&a))
    }

    /// `rename`; `noreplace` fails if the target exists.
    pub fn rename(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        newparent: u64,
        newname: &std::ffi::OsStr,
        noreplace: bool,
    ) -> FsResult<()> {
        let src = self.child_path(parent, name)?;
        let dst = self.child_path(newparent, newname)?;
        if !noreplace && self.rename_later(parent, &src, newparent, &dst)? {
            return Ok(());
        }
        let a = self.attr_at(&src)?;
        if noreplace && self.stat_path(&dst).is_ok() {
            return Err(Errno::EEXIST);
        }
        let r = self.block_on(self.client.rename(&src, &dst));
        // The moved inode's ctime, both parents, and an inode it replaced.
        let replaced = self.paths.read().ino_at(&dst);
        self.stale(&[a.inode, parent, newparent, replaced.unwrap_or(a.inode)]);
        r.map_err(|e| errno(&e))?;
        if let Some(gone) = replaced.filter(|&i| i != a.inode) {
            self.drop_copy(gone);
        }
        // Re-point the moved inode and, for a directory, everything below it.
        self.paths.write().rename(&src, &dst, a.inode);
        Ok(())
    }

    fn new_handle(&self, f: OpenFile) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.lock().insert(fh, Arc::new(f));
        fh
    }

    /// A handle state for `ino`, sharing the inode's staging.
    fn open_file(&self, ino: u64, writable: bool) -> OpenFile {
        let staging = self.staged.lock().entry(ino).or_default().clone();
        OpenFile {
            ino,
            writable,
            reader: tokio::sync::Mutex::new(None),
            snapshot: Default::default(),
            staging,
            caps_dropped: Default::default(),
        }
    }

    /// Drops the inode's staging once no handle uses it.
    /// Callers drop their own `OpenFile` first: a handle that holds the
    /// staging (even one still being opened, not yet in `files`) keeps it.
    fn forget_staging_if_unused(&self, ino: u64) {
        let (discard, dropped) = {
            let mut staged = self.staged.lock();
            let in_use = staged.get(&ino).is_some_and(|shared| Arc::strong_count(shared) > 1);
            if in_use || self.files.lock().values().any(|o| o.ino == ino) {
                return;
            }
            let orphan = self.orphans.lock().remove(&ino).is_some();
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

    /// `open` (O_TRUNC comes as a setattr of the size after it).
    pub fn open(&self, ino: u64, writable: bool) -> FsResult<u64> {
        let path = self.path(ino)?;
        let f = self.open_file(ino, writable);
        let fresh = if let Some(a) = self.open_leased(ino, &path, writable, &f) {
            a
        } else if writable && self.copies.lock().files.contains_key(&ino) {
            // One call tells the attributes and whether the copy is current.
            match self.block_on(self.client.open(&path)) {
                Ok(r) => {
                    self.install_copy(&f, None, Some(r.file()), r.attr());
                    r.attr().clone()
                }
                Err(_) => self.stat_path(&path)?,
            }
        } else if writable {
            self.stat_path(&path)?
        } else {
            // A reader needs the block list anyway: one call answers both
            // (a file still being written by a client opens; reads fail).
            match self.block_on(self.client.open(&path)) {
                Ok(r) => {
                    let a = r.attr().clone();
                    self.install_copy(&f, None, Some(r.file()), &a);
                    let _ = f.snapshot.set(Arc::new(r.file().clone()));
                    *f.reader.try_lock().expect("a new handle is not shared") = Some(r);
                    a
                }
                Err(e) if e.code() == ErrorCode::InvalidState => self.stat_path(&path)?,
                Err(e) => return Err(errno(&e)),
            }
        };
        self.fresh(&fresh);
        self.revalidate(ino, &fresh);
        Ok(self.new_handle(f))
    }

    /// Runs `op` on the staging file of handle `fh`'s inode if it is one
    /// the kernel should do the handle's reads and writes on directly (FUSE
    /// passthrough): one already given to the kernel, or a bigger file's
    /// (a kept copy, or content staged by another handle). Small and new
    /// files stay with the mount: a backing file can be mapped past its
    /// last close, so it is never reused for another inode, and an ext4
    /// inode per small file costs more than the requests it saves.
    pub fn with_backing<R>(&self, fh: u64, op: impl FnOnce(&File) -> R) -> Option<R> {
        let f = self.handle(fh).ok()?;
        let mut guard = f.staging.lock();
        let s = guard.as_mut()?;
        if !s.backed && s.file.metadata().ok()?.len() <= INLINE_MAX_BYTES {
            return None;
        }
        if !s.backed {
            s.back();
        }
        Some(op(&s.file))
    }

    /// Whether handle `fh`'s inode has a staging file (see [`Self::with_backing`]).
    pub fn has_staging(&self, fh: u64) -> bool {
        self.handle(fh).is_ok_and(|f| f.staging.lock().is_some())
    }

    /// Opens `ino` without a round trip when the client holds a lease over
    /// it and this mount has what the open needs: the attributes, and for a
    /// reader the content (an empty file, or one written here under the
    /// lease: a small one's bytes, a bigger one's copy). The attributes, or
    /// None: ask the master.
    fn open_leased(&self, ino: u64, path: &str, writable: bool, f: &OpenFile) -> Option<Attr> {
        let g = self.client.lease_of(path)?;
        let a = self.cached_attr(ino)?;
        let copy = self.install_copy(f, Some(g), None, &a);
        if writable || copy {
            return Some(a);
        }
        if a.file_type != strata_client::FileType::File || !a.complete {
            return None;
        }
        let data = match a.size {
            0 => Vec::new(),
            size => {
                let cache = self.inline.lock();
                let (at, data) = cache.files.get(&ino)?;
                (*at == g && data.len() as u64 == size).then(|| data.to_vec())?
            }
        };
        let file = strata_client::FileBlocks { attr: a.clone(), blocks: Vec::new(), ufs: None, inline: Some(data) };
        let _ = f.snapshot.set(Arc::new(file));
        Some(a)
    }

    /// Keeps (`Some`) or forgets the content of small file `ino` as
    /// published here under lease generation `g`.
    fn keep_inline(&self, ino: u64, kept: Option<(u64, Arc<Vec<u8>>)>) {
        let mut cache = self.inline.lock();
        if let Some((_, old)) = cache.files.remove(&ino) {
            cache.bytes -= old.len();
        }
        let Some((g, data)) = kept else { return };
        if cache.bytes + data.len() > MAX_INLINE_CACHE {
            cache.files.clear();
            cache.bytes = 0;
        }
        cache.bytes += data.len();
        cache.files.insert(ino, (g, data));
    }

    /// Gives handle `f` the inode's kept copy as its staging if the inode
    /// still has that content (see [`Version::holds`]). True if the handle
    /// has a staging now (this copy, or another handle's staging).
    fn install_copy(
        &self,
        f: &OpenFile,
        lease: Option<u64>,
        file: Option<&strata_client::FileBlocks>,
        base: &Attr,
    ) -> bool {
        let mut guard = f.staging.lock();
        match guard.as_mut() {
            None => {
                *guard = self.revive(f.ino, lease, file, base.size).map(|s| Staging { base: Some(base.clone()), ..s })
            }
            // Another handle's clean copy (a reader holding it open) the
            // cluster's content has moved past: refilled in place (the
            // kernel keeps the file as the inode's backing file).
            Some(s) => {
                let stale = |s: &mut Staging| {
                    let fb = file?;
                    let len = s.file.metadata().ok()?.len();
                    let clean = !s.is_dirty();
                    let v = s.version.as_ref()?;
                    (clean && !(v.holds(lease, Some(fb)) && len == fb.attr.size)).then_some(())
                };
                if stale(s).is_some() {
                    if let Err(e) = self.refill(s, f.ino) {
                        tracing::warn!(ino = f.ino, errno = e.code(), "a stale copy could not be refilled");
                    }
                }
            }
        }
        guard.is_some()
    }

    /// Makes clean staging `s` of `ino` hold the inode's current content.
    fn refill(&self, s: &mut Staging, ino: u64) -> FsResult<()> {
        let path = self.path(ino)?;
        let r = self.block_on(self.client.open(&path)).map_err(|e| errno(&e))?;
        let blocks = r.file().blocks.iter().map(|b| b.block_id).collect();
        s.file.set_len(0).map_err(io_err)?;
        s.since = None;
        self.block_on(self.seed(&s.file, r)).map_err(|e| errno(&e))?;
        s.version = Some(Version { lease: None, blocks });
        s.restamp();
        s.bypassed = true; // the kernel's pages, if any, are of the old content
        Ok(())
    }

    /// Takes `ino`'s copy out of the kept ones if the inode still has its
    /// content (and `size`), reopened as a clean staging. A copy the blocks
    /// show stale (or that was changed on disk) is deleted.
    fn revive(
        &self,
        ino: u64,
        lease: Option<u64>,
        file: Option<&strata_client::FileBlocks>,
        size: u64,
    ) -> Option<Staging> {
        let c = {
            let mut copies = self.copies.lock();
            let c = copies.files.get(&ino)?;
            let holds = c.version.holds(lease, file) && c.len == size;
            if !holds && file.is_none() {
                return None; // a lease alone cannot tell it stale
            }
            let c = copies.files.remove(&ino)?;
            copies.bytes -= c.len;
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
        let version = s.version.take().filter(|_| !orphan && len > INLINE_MAX_BYTES && len <= self.cfg.copy_bytes);
        let Some(version) = version.filter(|_| !s.is_dirty()) else { return (Some(s), Vec::new()) };
        // What a later revive compares: a write through a mapping left
        // after close changes it.
        s.stamp = s.ctime();
        let mut dropped = Vec::new();
        {
            let mut copies = self.copies.lock();
            let seq = copies.next;
            copies.next += 1;
            let c =
                Copy { path: s.path.clone(), len, seq, version, stamp: s.stamp, backed: s.backed, synced: s.synced };
            if let Some(old) = copies.files.insert(ino, c) {
                copies.bytes -= old.len;
                dropped.push(old.path);
            }
            copies.bytes += len;
            copies.order.push_back((ino, seq));
            while copies.bytes > self.cfg.copy_bytes || copies.files.len() > MAX_COPIES {
                let Some((i, seq)) = copies.order.pop_front() else { break };
                if copies.files.get(&i).is_some_and(|c| c.seq == seq) {
                    let c = copies.files.remove(&i).expect("present");
                    copies.bytes -= c.len;
                    dropped.push(c.path);
                }
            }
            // Entries of copies taken or replaced since are skipped above;
            // keep the queue from growing without bound meanwhile.
            if copies.order.len() > 2 * MAX_COPIES {
                let live: std::collections::VecDeque<_> = copies
                    .order
                    .iter()
                    .filter(|(i, q)| copies.files.get(i).is_some_and(|c| c.seq == *q))
                    .copied()
                    .collect();
                copies.order = live;
            }
        }
        (None, dropped)
    }

    /// Drops `ino`'s kept copy (the inode was unlinked or replaced).
    fn drop_copy(&self, ino: u64) {
        let c = {
            let mut copies = self.copies.lock();
            let c = copies.files.remove(&ino);
            copies.bytes -= c.as_ref().map_or(0, |c| c.len);
            c
        };
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

    /// `create`: a new empty file, opened.
    pub fn create(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<(FileAttr, u64)> {
        let path = self.child_path(parent, name)?;
        let owner = Owner { mode: mode & 0o7777, uid, gid };
        let a = match self.make_leased(parent, &path, strata_client::FileType::File, owner)? {
            Some((a, _)) => a,
            None => {
                let a = self.block_on(self.client.create_empty_as(&path, self.cfg.block_size, owner));
                let a = a.map_err(|e| errno(&e))?;
                self.made(parent, path, &a);
                a
            }
        };
        self.cache_xattrs(a.inode, Xattrs::default());
        let fa = file_attr(&a);
        let s = self.new_staging(false)?;
        let f = self.open_file(a.inode, true);
        *f.staging.lock() = Some(Staging { base: Some(a), ..s });
        Ok((fa, self.new_handle(f)))
    }

    /// An empty staging file; `stamp`: its mtime made now (it stands for
    /// the staged content's, as an O_TRUNC open's). A new file's needs
    /// none: the attributes shown take the later of the master's mtime
    /// and the staging file's, and every write moves the latter.
    fn new_staging(&self, stamp: bool) -> FsResult<Staging> {
        let pooled = self.pool.lock().pop();
        if let Some((file, path)) = pooled {
            if stamp {
                file.set_modified(SystemTime::now()).map_err(io_err)?;
            }
            return Ok(Staging::new(file, path));
        }
        let path = self.cfg.staging_dir.join(format!(
            "stage-{}-{}",
            std::process::id(),
            self.next_fh.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io_err)?;
        Ok(Staging::new(file, path))
    }

    /// Makes the inode's staged content empty and dirty without reading
    /// the old content (an O_TRUNC open of a writer).
    fn truncate_to_empty(&self, f: &OpenFile) -> FsResult<()> {
        let mut guard = f.staging.lock();
        if let Some(s) = guard.as_mut() {
            s.is_dirty();
            s.file.set_len(0).map_err(io_err)?;
            s.dirty = true;
            s.since = None;
            s.restamp();
            return Ok(());
        }
        let s = self.new_staging(true)?;
        let base = self.cached_attr(f.ino);
        *guard = Some(Staging { dirty: true, base, ..s });
        Ok(())
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

    /// Runs `op` on the handle's staging file, creating it first from the
    /// file's current content, and marks it dirty in the same critical
    /// section: a publish by another handle of the inode (a release) either
    /// sees the change and publishes it, or runs before it and leaves it
    /// dirty for the next flush. (Marking it dirty before the change let a
    /// racing release publish the old bytes and clear the flag, losing the
    /// write: seen as a rare append failure in CI.)
    /// `op` answers the byte range it changed.
    fn with_staging<R>(
        &self,
        f: &OpenFile,
        op: impl FnOnce(&mut Staging) -> FsResult<(R, std::ops::Range<u64>)>,
    ) -> FsResult<R> {
        self.ensure_staging(f, false)?;
        let mut guard = f.staging.lock();
        let s = guard.as_mut().ok_or(Errno::EIO)?;
        s.is_dirty(); // direct writes before this one
                      // A failed change may have written part of its range.
        let (r, changed) = op(s).inspect_err(|_| s.since = None)?;
        s.touch(changed);
        s.dirty = true;
        s.restamp();
        Ok(r)
    }

    /// Creates the handle's staging file from the file's content if it has none.
    fn ensure_staging(&self, f: &OpenFile, dirty: bool) -> FsResult<()> {
        let mut guard = f.staging.lock();
        if guard.is_none() {
            let path = self.path(f.ino)?;
            let known = self.cached_attr(f.ino).map(|a| a.size);
            let leased = known.and_then(|size| self.revive(f.ino, self.client.lease_of(&path), None, size));
            let s = match leased {
                Some(s) => s,
                None => {
                    let r = self.block_on(self.client.open(&path)).map_err(|e| errno(&e))?;
                    match self.revive(f.ino, None, Some(r.file()), r.attr().size) {
                        Some(s) => s,
                        None => {
                            let mut s = self.new_staging(true)?;
                            self.block_on(self.seed(&s.file, r)).map_err(|e| errno(&e))?;
                            s.restamp();
                            s
                        }
                    }
                }
            };
            *guard = Some(s);
        }
        let s = guard.as_mut().expect("created above");
        s.dirty |= dirty;
        Ok(())
    }

    /// Copies the file's current content into a staging file.
    async fn seed(&self, file: &File, mut r: FileReader) -> Result<(), ClientError> {
        let mut buf = vec![0u8; 8 << 20];
        let mut off = 0u64;
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            file.write_all_at(&buf[..n], off)?;
            off += n as u64;
        }
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<OpenFile>> {
        self.files.lock().get(&fh).cloned().ok_or(Errno::EBADF)
    }

    /// `read`.
    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let f = self.handle(fh)?;
        if let Some(s) = f.staging.lock().as_ref() {
            let len = s.file.metadata().map_err(io_err)?.len();
            let n = (size as u64).min(len.saturating_sub(offset)) as usize;
            let mut buf = vec![0u8; n];
            s.file.read_exact_at(&mut buf, offset).map_err(io_err)?;
            return Ok(buf);
        }
        if let Some(data) = f.snapshot.get().and_then(|fb| self.client.try_read_local(fb, offset, size as u64)) {
            return Ok(data);
        }
        let path = self.path(ino)?;
        self.block_on(async {
            let mut guard = f.reader.lock().await;
            if guard.is_none() {
                *guard = Some(self.client.open(&path).await?);
            }
            let r = guard.as_mut().expect("opened above");
            r.seek(offset);
            let mut out = vec![0u8; size as usize];
            let mut filled = 0;
            while filled < out.len() {
                let n = r.read(&mut out[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            out.truncate(filled);
            Ok::<_, ClientError>(out)
        })
        .map_err(|e| errno(&e))
    }

    /// `write`.
    /// `kill_suidgid`: the kernel says the writer lacks CAP_FSETID and the
    /// file has set-id bits to drop.
    pub fn write(&self, ino: u64, fh: u64, offset: u64, data: &[u8], kill_suidgid: bool) -> FsResult<u32> {
        let f = self.handle(fh)?;
        if !f.writable {
            return Err(Errno::EBADF);
        }
        if kill_suidgid {
            if let Some(mode) = self.drop_privileges(ino)? {
                self.setattr(ino, Some(mode), None, None, None, None, None, Some(fh), false)?;
            }
        } else if !f.caps_dropped.swap(true, Ordering::Relaxed) {
            self.drop_capabilities(ino)?;
        }
        self.with_staging(&f, |s| {
            s.file.write_all_at(data, offset).map_err(io_err)?;
            s.attrs.mtime_ms = None; // a write after futimens sets the time anew
            Ok(((), offset..offset + data.len() as u64))
        })?;
        Ok(data.len() as u32)
    }

    /// `fallocate` (mode 0): make sure `offset + length` bytes exist.
    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        if mode != 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        let f = self.handle(fh)?;
        if !f.writable {
            return Err(Errno::EBADF);
        }
        let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
        self.with_staging(&f, |s| {
            let len = s.file.metadata().map_err(io_err)?.len();
            if end > len {
                s.file.set_len(end).map_err(io_err)?;
            }
            Ok(((), len..end.max(len)))
        })
    }

    /// Publishes a dirty staging file with its deferred attribute changes:
    /// a small file in one journal entry with its content inline, a bigger
    /// one (or one under a UFS mount) as new blocks in a detached file, then
    /// an atomic swap into the inode.
    fn publish(&self, f: &OpenFile, durable: bool) -> FsResult<()> {
        if self.orphans.lock().contains_key(&f.ino) {
            return Ok(()); // unlinked: nothing to publish to
        }
        let mut guard = f.staging.lock();
        // Writeback write-protects a mapping's pages: a store after it
        // faults and moves the ctime (one into a page already dirty
        // would not).
        if let Some(s) = guard.as_mut().filter(|s| s.backed) {
            let _ = s.file.sync_data();
        }
        // An fsync also republishes content whose blocks went out without
        // being synced to disk (by a flush or close).
        let Some(s) = guard.as_mut().and_then(|s| (s.is_dirty() || (durable && !s.synced)).then_some(s)) else {
            return Ok(());
        };
        let len = s.file.metadata().map_err(io_err)?.len();
        let path = self.path(f.ino).unwrap_or_default();
        let lease = self.client.lease_of(&path);
        // A file with other names may change through one outside the
        // lease: its blocks are all written anew.
        let since = s.since.take().filter(|_| s.base.as_ref().is_some_and(|a| a.nlink <= 1));
        let layout = self.layout(since, len, lease, durable);
        let (file, attrs) = (&s.file, s.attrs.clone());
        let leased = match (len <= INLINE_MAX_BYTES, s.base.clone(), lease) {
            // Under a lease: queued, answered with what the master will record.
            (true, Some(mut a), Some(g)) => {
                let data = read_whole(file, len).map_err(io_err)?;
                let t = strata_protocol::now_ms();
                a.write_inline(len, &attrs, t);
                let kept = Arc::new(data.clone());
                let op =
                    BatchOp::WriteInlineAt { inode: f.ino, path: path.clone(), data, attrs: attrs.clone(), time_ms: t };
                let version = Version { lease: Some(g), blocks: Vec::new() };
                self.client.queue_leased(g, &path, op).then(|| {
                    self.keep_inline(f.ino, Some((g, kept)));
                    (a, version)
                })
            }
            // A bigger one: its blocks written, the content change queued.
            (false, Some(a), Some(g)) => {
                let r = self.queue_content(f.ino, &path, file, len, &attrs, a, g, durable, &layout)?;
                r.map(|(a, version, now)| {
                    // Blocks written now (not behind) are this content's
                    // for as long as the lease holds: the next publish
                    // keeps those it does not change.
                    s.since = now.then(|| Since {
                        lease: g,
                        block_size: layout.0,
                        len,
                        blocks: version.blocks.clone(),
                        durable,
                        changed: Vec::new(),
                    });
                    (a, version)
                })
            }
            _ => None,
        };
        let (a, version) = match leased {
            Some(r) => r,
            None => {
                self.keep_inline(f.ino, None);
                self.publish_now(f.ino, &path, &s.file, len, attrs, durable)?
            }
        };
        s.version = Some(version).filter(|v| v.lease.is_some() || !v.blocks.is_empty());
        self.fresh(&a);
        // This mount's kernel already has these bytes, unless it wrote
        // them past its page cache; don't invalidate on the next open.
        if s.bypassed {
            self.seen.lock().remove(&f.ino);
        } else {
            self.seen.lock().insert(f.ino, (a.size, a.mtime_ms));
        }
        s.dirty = false;
        s.bypassed = false;
        s.synced = durable || len <= INLINE_MAX_BYTES; // inline content is in the journal
        s.attrs = SetAttrs::default();
        s.base = Some(a);
        // Readers of this handle must see the new content.
        if let Ok(mut r) = f.reader.try_lock() {
            *r = None;
        }
        Ok(())
    }

    /// The block size and the blocks to keep (per block: an id, or None
    /// to write it) for publishing `len` bytes: those of the last publish
    /// (`since`) still under lease `lease`; otherwise the mount's block
    /// size, or [`DURABLE_BLOCK_SIZE`] for a small file made durable (a
    /// database's or log's fsyncs then write only the blocks they change).
    fn layout(&self, since: Option<Since>, len: u64, lease: Option<u64>, durable: bool) -> Layout {
        match (since, lease) {
            (Some(since), Some(g)) if since.lease == g => {
                (since.block_size, since.keep(len, since.block_size, g, durable))
            }
            _ => {
                let bs = match durable && len < DURABLE_SMALL_FILE {
                    true => self.cfg.block_size.min(DURABLE_BLOCK_SIZE),
                    false => self.cfg.block_size,
                };
                (bs, vec![None; len.div_ceil(bs) as usize])
            }
        }
    }

    /// Publishes the `len` bytes of staged `file` of inode `ino` under
    /// lease generation `g`: its blocks written (in the background if the
    /// file is not big and no fsync waits; those `layout` keeps not at
    /// all), the `SetContentAt` queued; the attributes (from `a`) and
    /// version it makes, and whether the blocks were written now (not
    /// behind). None: publish now.
    #[allow(clippy::too_many_arguments)]
    fn queue_content(
        &self,
        ino: u64,
        path: &str,
        file: &File,
        len: u64,
        attrs: &SetAttrs,
        mut a: Attr,
        g: u64,
        durable: bool,
        layout: &Layout,
    ) -> FsResult<Option<(Attr, Version, bool)>> {
        let (bs, keep) = (layout.0, &layout.1);
        let behind = if !durable && len <= MAX_BEHIND_FILE && keep.iter().all(Option::is_none) {
            let data = read_whole(file, len).map_err(io_err)?;
            self.block_on(self.client.write_blocks_behind(data, bs))
        } else {
            Ok(None)
        };
        let written = match behind {
            Ok(Some(blocks)) => Ok((blocks, true)),
            Ok(None) => self.block_on(self.client.write_blocks(file, len, bs, durable, keep)).map(|b| (b, false)),
            Err(e) => Err(e),
        };
        let (blocks, behind) = match written {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(path, error = %e, "blocks not written ahead; publishing the slow way");
                return Ok(None);
            }
        };
        let t = strata_protocol::now_ms();
        a.block_size = bs;
        a.write_inline(len, attrs, t);
        let first = blocks[0];
        let op = BatchOp::SetContentAt {
            inode: ino,
            path: path.to_string(),
            blocks: blocks.clone(),
            length: len,
            block_size: bs,
            attrs: attrs.clone(),
            time_ms: t,
        };
        let queued = self.client.queue_leased(g, path, op);
        if !queued && behind {
            self.client.abandon_behind(first);
        }
        Ok(queued.then_some((a, Version { lease: Some(g), blocks }, !behind)))
    }

    /// Whether `path` is under a UFS mount, by the mount table as read in
    /// the last 10 s (a file there is written block by block, each placed
    /// by the master, for its write type).
    async fn under_ufs_mount(&self, path: &str) -> bool {
        let fresh = {
            let m = self.ufs_mounts.lock();
            m.0.filter(|at| at.elapsed() < Duration::from_secs(10)).map(|_| m.1.clone())
        };
        let mounts = match fresh {
            Some(m) => m,
            None => {
                let m: Vec<String> = match self.client.mounts().await {
                    Ok(m) => m.into_iter().map(|m| m.path).collect(),
                    Err(_) => return true, // unknown: the way that works everywhere
                };
                *self.ufs_mounts.lock() = (Some(Instant::now()), m.clone());
                m
            }
        };
        mounts.iter().any(|m| strata_protocol::path::is_under(path, m))
    }

    /// Publishes `len` bytes of `file` with `attrs` to the master now: the
    /// inode's attributes and content version after it.
    fn publish_now(
        &self,
        ino: u64,
        path: &str,
        file: &File,
        len: u64,
        attrs: SetAttrs,
        durable: bool,
    ) -> FsResult<(Attr, Version)> {
        let r = self.block_on(async {
            if len <= INLINE_MAX_BYTES {
                let data = read_whole(file, len)?;
                match self.client.write_inline(ino, path, data, attrs.clone()).await {
                    Err(e) if e.code() == ErrorCode::InlineRefused => {}
                    r => return r.map(|a| (a, Vec::new())),
                }
            } else if !self.under_ufs_mount(path).await {
                // Blocks first, then one journal entry makes them the content.
                let bs = self.cfg.block_size;
                let blocks = self.client.write_blocks(file, len, bs, durable, &[]).await?;
                let r = self.client.set_content(ino, path, blocks.clone(), len, bs, attrs.clone()).await;
                match r {
                    Err(e) if e.code() == ErrorCode::InlineRefused => self.ufs_mounts.lock().0 = None,
                    r => return r.map(|a| (a, blocks)),
                }
            }
            let mut w = self.client.create_detached(self.cfg.block_size, path).await?;
            let mut buf = vec![0u8; 8 << 20];
            let mut off = 0u64;
            while off < len {
                let n = ((len - off) as usize).min(buf.len());
                file.read_exact_at(&mut buf[..n], off)?;
                w.write(&buf[..n]).await?;
                off += n as u64;
            }
            let blocks = w.close_into(ino, path).await?;
            let a = if attrs != SetAttrs::default() {
                self.client.set_attr(path, attrs).await?
            } else {
                self.client.stat(path).await?
            };
            Ok((a, blocks))
        });
        let (a, blocks) = r.inspect_err(|_| self.stale(&[ino])).map_err(|e| errno(&e))?;
        Ok((a, Version { lease: self.client.lease_of(path), blocks }))
    }

    /// `flush`: publish pending writes (blocks in the workers' page cache,
    /// as a local file's close leaves them).
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let f = self.handle(fh)?;
        self.publish(&f, false)
    }

    /// `fsync`: publish pending writes with their blocks on disk, and wait
    /// for this mount's queued changes.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let f = self.handle(fh)?;
        self.publish(&f, true)?;
        self.sync_queued()
    }

    /// Waits for this mount's queued changes (fsyncdir, unmount); EIO if the
    /// master refused one since the last wait.
    pub fn sync_queued(&self) -> FsResult<()> {
        self.block_on(self.client.flush_queued()).map_err(|e| {
            tracing::warn!(error = %e, "a queued change failed");
            Errno::EIO
        })
    }

    /// `release`: publish and forget the handle.
    pub fn release(&self, fh: u64) -> FsResult<()> {
        let Some(f) = self.files.lock().remove(&fh) else { return Ok(()) };
        let r = self.publish(&f, false);
        let ino = f.ino;
        drop(f);
        self.forget_staging_if_unused(ino);
        r
    }

    /// `opendir`: snapshots the listing so offsets stay stable.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let path = self.path(ino)?;
        let (list, known) = match self.known_listing(ino, &path) {
            Some(list) => (list, true),
            None => (self.block_on(self.client.list(&path)).map_err(|e| errno(&e))?, false),
        };
        let parent = match ino {
            1 => 1,
            _ => {
                let up = strata_protocol::path::parent(&path);
                let known = if up == "/" { Some(1) } else { self.paths.read().ino_at(up) };
                known.unwrap_or_else(|| self.stat_path(up).map(|a| a.inode).unwrap_or(1))
            }
        };
        let mut entries = vec![
            Entry { ino, kind: FileType::Directory, name: ".".into(), attr: None },
            Entry { ino: parent, kind: FileType::Directory, name: "..".into(), attr: None },
        ];
        // A listing from the master is remembered; one this mount knew
        // already is (every entry in the path map, its attributes cached).
        let mut paths = (!known).then(|| self.paths.write());
        for e in list {
            let fa = file_attr(&e.attr);
            if let Some(paths) = paths.as_mut() {
                self.fresh(&e.attr);
                paths.insert(e.attr.inode, join(&path, &e.name));
            }
            entries.push(Entry { ino: e.attr.inode, kind: fa.kind, name: e.name, attr: Some(fa) });
        }
        drop(paths);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().insert(fh, Arc::new(entries));
        Ok(fh)
    }

    /// The entries of a directory this mount knows under a lease, if it
    /// has every entry's attributes.
    fn known_listing(&self, dir: u64, path: &str) -> Option<Vec<strata_client::DirEntry>> {
        self.known_dir(dir, path)?;
        let named: Vec<(String, u64)> = {
            let paths = self.paths.read();
            paths.names_in(path).map(|n| Some((n.clone(), paths.ino_at(&join(path, n))?))).collect::<Option<_>>()?
        };
        // `cached_attr`'s test, with one lock for all: an answer within the
        // TTL, or one for an inode this mount knows under a lease (one also
        // named outside the directory — a hard link — may not be).
        let found: Vec<(String, u64, bool, Attr)> = {
            let attrs = self.attrs.lock();
            named
                .into_iter()
                .map(|(name, ino)| {
                    let (at, a) = attrs.get(&ino)?;
                    Some((name, ino, at.elapsed() < self.cfg.ttl, a.clone()))
                })
                .collect::<Option<_>>()?
        };
        found
            .into_iter()
            .map(|(name, ino, fresh, attr)| {
                (fresh || self.leased(ino)).then_some(strata_client::DirEntry { name, attr })
            })
            .collect()
    }

    /// The snapshot taken at `opendir`.
    pub fn readdir(&self, fh: u64) -> FsResult<Arc<Vec<Entry>>> {
        self.dirs.lock().get(&fh).cloned().ok_or(Errno::EBADF)
    }

    /// `releasedir`.
    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().remove(&fh);
    }

    fn cache_xattrs(&self, ino: u64, x: Xattrs) {
        let mut cache = self.xattrs.lock();
        if cache.len() >= MAX_CACHED_XATTRS {
            cache.clear();
        }
        cache.insert(ino, (Instant::now(), x));
    }

    /// `ino`'s extended attributes: cached within the TTL or while the inode
    /// has unpublished writes here, else read from the master.
    fn xattrs_of(&self, ino: u64) -> FsResult<Xattrs> {
        let cached = self.xattrs.lock().get(&ino).cloned();
        if let Some((at, x)) = cached {
            if at.elapsed() < self.cfg.ttl || self.dirty_base(ino).is_some() {
                return Ok(x);
            }
        }
        let x: Xattrs = Arc::new(self.block_on(self.client.xattrs(&self.path(ino)?)).map_err(|e| errno(&e))?);
        self.cache_xattrs(ino, x.clone());
        Ok(x)
    }

    /// `getxattr`: the value of `name`.
    pub fn getxattr(&self, ino: u64, name: &std::ffi::OsStr) -> FsResult<Vec<u8>> {
        let name = name.to_str().ok_or(Errno::EINVAL)?;
        self.xattrs_of(ino)?.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).ok_or(Errno::NO_XATTR)
    }

    /// `listxattr`: the names, each NUL-terminated.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        Ok(self.xattrs_of(ino)?.iter().flat_map(|(n, _)| n.bytes().chain([0])).collect())
    }

    /// `setxattr` (`value` Some, `flags` XATTR_CREATE=1 / XATTR_REPLACE=2) and `removexattr` (None).
    pub fn setxattr(&self, ino: u64, name: &std::ffi::OsStr, value: Option<&[u8]>, flags: u32) -> FsResult<()> {
        let name = name.to_str().ok_or(Errno::EINVAL)?;
        let path = self.path(ino)?;
        let r = self.block_on(self.client.set_xattr(&path, name, value.map(<[u8]>::to_vec), flags));
        // After the call: a list read while it ran may hold the old value.
        self.xattrs.lock().remove(&ino);
        self.stale(&[ino]);
        r.map_err(|e| errno(&e))
    }

    /// `statfs`: (total bytes, free bytes, inodes).
    pub fn statfs(&self) -> FsResult<(u64, u64, u64)> {
        let r = self.block_on(self.client.report()).map_err(|e| errno(&e))?;
        let (mut cap, mut used) = (0u64, 0u64);
        for w in r.workers.iter().filter(|w| w.live) {
            for t in &w.tiers {
                cap += t.capacity_bytes;
                used += t.used_bytes;
            }
        }
        Ok((cap, cap.saturating_sub(used), r.inodes))
    }
}
