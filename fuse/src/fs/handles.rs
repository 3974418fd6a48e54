//! Open handles: files (sharing their inode's staging), directory
//! listings, the lock owners of each file handle, and the inodes unlinked
//! while open here. Handle numbers come from one counter (which also names
//! new staging files). Each map has its own lock, held for single
//! operations only: no other lock is taken under them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use fuser::Errno;
use parking_lot::Mutex;
use strata_client::{Attr, FileBlocks, FileReader};

use super::staging::SharedStaging;
use super::{Entry, FsResult};

/// An open file handle.
pub(super) struct OpenFile {
    pub(super) ino: u64,
    pub(super) writable: bool,
    pub(super) reader: tokio::sync::Mutex<Option<FileReader>>,
    /// The file as a read-only open found it: reads inside one local block
    /// (or of an inline file) are served from it on the request thread,
    /// without the reader's lock, so the kernel's parallel read-ahead
    /// requests run in parallel.
    pub(super) snapshot: OnceLock<Arc<FileBlocks>>,
    /// The inode's staging file, shared by every handle of the inode in this
    /// mount; created on the first write or truncate (seeded with the
    /// current content).
    pub(super) staging: SharedStaging,
    /// A write through this handle has dropped the file's capabilities
    /// (`security.capability`) if it had any: once per handle.
    pub(super) caps_dropped: AtomicBool,
}

impl OpenFile {
    /// A handle state for `ino` over the inode's `staging`.
    pub(super) fn new(ino: u64, writable: bool, staging: SharedStaging) -> Self {
        OpenFile {
            ino,
            writable,
            reader: tokio::sync::Mutex::new(None),
            snapshot: Default::default(),
            staging,
            caps_dropped: Default::default(),
        }
    }
}

/// The handles part of [`super::StrataFs`].
pub(super) struct Handles {
    next: AtomicU64,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<Entry>>>>,
    /// Files unlinked while open here: their bytes live on in the handles'
    /// staging files until the last one closes (POSIX unlink-while-open).
    orphans: Mutex<HashMap<u64, Attr>>,
    /// The lock owners that took a lock through each handle: its release
    /// drops their locks on the inode. The kernel sends no flush (which
    /// carries the closing process's owner) at the close of a read-only
    /// handle (`FOPEN_NOFLUSH`), so a lock taken through one would
    /// otherwise outlive its process.
    lock_owners: Mutex<HashMap<u64, Vec<u64>>>,
}

impl Handles {
    pub(super) fn new() -> Self {
        Handles {
            next: AtomicU64::new(1),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            orphans: Mutex::new(HashMap::new()),
            lock_owners: Mutex::new(HashMap::new()),
        }
    }

    /// A number no handle (or staging file) had.
    pub(super) fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers open file `f`: its handle number.
    pub(super) fn add(&self, f: OpenFile) -> u64 {
        let fh = self.next_id();
        self.files.lock().insert(fh, Arc::new(f));
        fh
    }

    /// Open file `fh`.
    pub(super) fn get(&self, fh: u64) -> FsResult<Arc<OpenFile>> {
        self.files.lock().get(&fh).cloned().ok_or(Errno::EBADF)
    }

    /// Forgets open file `fh` (released).
    pub(super) fn take(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.files.lock().remove(&fh)
    }

    /// Whether a handle of `ino` is open.
    pub(super) fn is_open(&self, ino: u64) -> bool {
        self.files.lock().values().any(|f| f.ino == ino)
    }

    /// Whether a handle is open of an inode `pred` holds for, asked under
    /// the handles' lock.
    pub(super) fn any_open(&self, pred: impl Fn(u64) -> bool) -> bool {
        self.files.lock().values().any(|f| pred(f.ino))
    }

    /// The open handles of `ino`.
    pub(super) fn open_of(&self, ino: u64) -> Vec<Arc<OpenFile>> {
        self.files.lock().values().filter(|f| f.ino == ino).cloned().collect()
    }

    /// Registers a directory listing: its handle number.
    pub(super) fn add_dir(&self, entries: Vec<Entry>) -> u64 {
        let fh = self.next_id();
        self.dirs.lock().insert(fh, Arc::new(entries));
        fh
    }

    /// Directory handle `fh`'s listing.
    pub(super) fn dir(&self, fh: u64) -> FsResult<Arc<Vec<Entry>>> {
        self.dirs.lock().get(&fh).cloned().ok_or(Errno::EBADF)
    }

    /// Forgets directory handle `fh`.
    pub(super) fn remove_dir(&self, fh: u64) {
        self.dirs.lock().remove(&fh);
    }

    /// `ino` was unlinked while open here; `gone` is what it is answered as
    /// until its last handle closes.
    pub(super) fn orphan(&self, ino: u64, gone: Attr) {
        self.orphans.lock().insert(ino, gone);
    }

    /// The attributes of orphan `ino`.
    pub(super) fn orphan_attr(&self, ino: u64) -> Option<Attr> {
        self.orphans.lock().get(&ino).cloned()
    }

    /// Whether `ino` is an orphan.
    pub(super) fn is_orphan(&self, ino: u64) -> bool {
        self.orphans.lock().contains_key(&ino)
    }

    /// `ino`'s last handle closed: whether it was an orphan.
    pub(super) fn take_orphan(&self, ino: u64) -> bool {
        self.orphans.lock().remove(&ino).is_some()
    }

    /// Notes that `owner` locks through handle `fh`, for its release.
    pub(super) fn locking_through(&self, fh: u64, owner: u64) {
        let mut owners = self.lock_owners.lock();
        let v = owners.entry(fh).or_default();
        if !v.contains(&owner) {
            v.push(owner);
        }
    }

    /// The owners that locked through handle `fh` (released).
    pub(super) fn take_lock_owners(&self, fh: u64) -> Vec<u64> {
        self.lock_owners.lock().remove(&fh).unwrap_or_default()
    }
}
