//! The filesystem layer behind the FUSE adapter: inode numbers are Strata's
//! own (the root is 1 in both), an inode → path table turns kernel requests
//! into Strata's path-based calls, and each writable open file stages its
//! bytes in a local file until it is flushed.
//!
//! [`StrataFs`] runs the FUSE operations over parts that each own their
//! lock and the invariants of their data:
//!
//! - [`paths::PathTable`]: the path each inode is reached by, the inode at
//!   each path, the names known in each directory;
//! - [`attrs`]: the master's last attributes of each inode
//!   ([`attrs::AttrCache`]), extended attribute lists, and the version of
//!   each file whose pages the kernel may hold;
//! - [`staging::Stagings`]: the staging file of each inode with open
//!   handles, emptied ones kept for reuse, and copies of files written
//!   here (on disk, or small ones in memory);
//! - [`lease::LeaseView`]: the directories this mount knows every entry of
//!   under a lease its client holds, and the negative entries it gave the
//!   kernel there;
//! - [`handles::Handles`]: open files and directories, their lock owners,
//!   and inodes unlinked while open.
//!
//! This file has the namespace operations (lookup, attributes, creates,
//! renames, unlinks, listings, xattrs); [`io`] those of open files (open,
//! read, write, staging, flush, release); [`publish`] those that send a
//! dirty staging file to the master (with the UFS mount table they
//! consult); [`locks`] those of byte-range locks.
//!
//! Lock order, where one is taken under another: an inode's staging (held
//! across a publish) before every other lock, the staging map's too (the
//! map locks a staging only when nobody else references it, so it never
//! waits for one held; see [`staging`]); the staging map before the
//! handles and the copies; the path table before the attribute cache, the
//! handles and the copies. The attribute caches and the handles take no
//! other lock under theirs; the lease view asks the client about its
//! leases under its negative entries' lock.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};
use strata_client::{Attr, BatchOp, Client, Owner, SetAttrs};
use strata_protocol::INLINE_MAX_BYTES;

use crate::errno::errno;
use crate::MountConfig;

mod attrs;
mod copies;
mod handles;
mod io;
mod lease;
mod locks;
mod paths;
mod publish;
mod staging;

use attrs::{AttrCache, PageVersions, XattrCache, Xattrs};
use handles::{Handles, OpenFile};
use lease::LeaseView;
use paths::{join, split, PathTable};
use publish::UfsMounts;
use staging::{dirty, overlay, set_len, SharedStaging, Staging, Stagings};

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

/// The filesystem.
pub struct StrataFs {
    /// Set once the session exists.
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    client: Client,
    rt: tokio::runtime::Handle,
    cfg: MountConfig,
    paths: PathTable,
    attrs: AttrCache,
    xattrs: XattrCache,
    /// The version of each file whose pages the kernel may hold.
    seen: PageVersions,
    leases: LeaseView,
    stagings: Stagings,
    handles: Handles,
    /// The UFS mount points as last read, and when.
    ufs_mounts: UfsMounts,
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
        let leases = LeaseView::new(&client, cfg.ttl, notifier.clone());
        StrataFs {
            notifier,
            client,
            rt,
            paths: PathTable::new(),
            attrs: AttrCache::new(cfg.ttl),
            xattrs: XattrCache::default(),
            seen: PageVersions::default(),
            leases,
            stagings: Stagings::new(&cfg),
            handles: Handles::new(),
            ufs_mounts: UfsMounts::default(),
            cfg,
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
        let shared = self.stagings.get(ino);
        if shared.is_some_and(|s| s.try_lock().is_none_or(|g| g.as_ref().is_some_and(|s| s.backed))) {
            return Duration::ZERO;
        }
        // What is left of the TTL of the master's answer the attributes come
        // from: served from the mount's cache, they are never older than a
        // TTL in the kernel either.
        let at = self.attrs.answered_at(ino);
        if at.is_some_and(|at| at.elapsed() >= self.cfg.ttl) && self.leased(ino) {
            return self.cfg.ttl;
        }
        at.map_or(self.cfg.ttl, |at| self.cfg.ttl.saturating_sub(at.elapsed()))
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn path(&self, ino: u64) -> FsResult<String> {
        self.paths.path(ino).ok_or(Errno::ESTALE)
    }

    fn child_path(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<String> {
        Ok(join(&self.path(parent)?, name_str(name)?))
    }

    /// Records the master's answer for the inode at `path`.
    fn remember(&self, path: String, a: &Attr) {
        self.attrs.fresh(a);
        self.paths.insert(a.inode, path);
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
        let known = self.paths.ino_at(path);
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
        let (at, a) = self.attrs.get(ino)?;
        (at.elapsed() < self.cfg.ttl || self.leased(ino)).then_some(a)
    }

    /// Whether the client holds a lease over the path this mount knows `ino` by.
    fn leased(&self, ino: u64) -> bool {
        self.paths.read().get(ino).is_some_and(|p| self.client.lease_of(p).is_some())
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
        self.paths.learn_all(path, &entries, &self.attrs);
        self.leases.know(dir, g);
    }

    /// A change in directory `dir` moved its times to `time_ms` (the
    /// master's, or this mount's clock for a queued change) and its link
    /// count by `links`: the cached attributes say so (the kernel asks for
    /// them before the next change in it, to check permissions: dropping
    /// them cost a round trip per create), or are dropped if too old.
    fn touched_dir(&self, dir: u64, time_ms: i64, links: i32) {
        let leased = self.leased(dir);
        self.attrs.touched_dir(dir, time_ms, links, leased);
    }

    /// `ino`'s attributes from the master, answered within the TTL.
    fn master_attr(&self, ino: u64) -> FsResult<Attr> {
        if let Some(a) = self.cached_attr(ino) {
            return Ok(a);
        }
        let a = self.stat_path(&self.path(ino)?)?;
        self.attrs.fresh(&a);
        Ok(a)
    }

    /// Drops the kernel's cached attributes and pages of `ino` if the file
    /// changed since the version its pages may hold (another mount wrote it).
    fn revalidate(&self, ino: u64, fresh: &Attr) {
        let changed = self.seen.replace(ino, (fresh.size, fresh.mtime_ms));
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
        let shared = self.stagings.get(a.inode);
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
        if let Some(g) = self.leases.known_dir(parent, &dir) {
            if self.paths.ino_at(&path).is_none() {
                return Ok(Lookup::Absent(self.leases.absent(parent, name, &dir, g)));
            }
        }
        let a = self.attr_at(&path)?;
        // An inode staged here: read under its staging's lock (see `attr_now`).
        let a = if self.stagings.contains(a.inode) { self.attr_now(a.inode)? } else { a };
        Ok(Lookup::Found(file_attr(&a)))
    }

    /// `getattr`.
    pub fn getattr(&self, ino: u64) -> FsResult<FileAttr> {
        Ok(file_attr(&self.attr_now(ino)?))
    }

    /// `ino`'s attributes as this mount answers them: an orphan's, or a
    /// dirty staging's base with its size, times and deferred changes, or
    /// the master's (within the TTL).
    fn attr_now(&self, ino: u64) -> FsResult<Attr> {
        let orphan = self.handles.orphan_attr(ino);
        if let Some(a) = orphan {
            return Ok(self.with_staged_size(a));
        }
        // Under the staging's lock throughout: a publish (a release's,
        // beside this) cleaning it in between would leave a base older
        // than the staging it no longer overlays.
        let shared = self.stagings.get(ino);
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
        let shared = self.stagings.get(ino)?;
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
            match fh.and_then(|fh| self.handles.get(fh).ok()) {
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
        let shared = self.stagings.get(ino);
        let mut staging = shared.as_ref().map(|s| s.lock());
        let a = if attrs != SetAttrs::default() {
            let a = self.block_on(self.client.set_attr(&path, attrs));
            a.inspect_err(|_| self.attrs.stale(&[ino])).map_err(|e| errno(&e))?
        } else {
            self.stat_path(&path)?
        };
        self.attrs.fresh(&a);
        Ok(file_attr(&overlay(a, staging.as_mut().and_then(|g| dirty(g.as_mut())))))
    }

    /// Queues a change of mode, owner or times when the mount can tell the
    /// result itself: no handle here stages dirty content of the inode. The
    /// answer is the inode's attributes from the master (cached within the
    /// TTL, else asked for) with the change applied at this mount's time,
    /// which the queued op carries so the master records the same ctime.
    /// None: do it now.
    fn set_attr_later(&self, ino: u64, path: &str, attrs: &SetAttrs) -> FsResult<Option<Attr>> {
        if self.handles.is_orphan(ino) {
            return Ok(None);
        }
        // A clean staging (a close published it; the release is on its way:
        // rsync's utimes right after close) takes the change into its base.
        let shared = self.stagings.get(ino);
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
        // Pages the kernel holds of the content are still that content.
        self.seen.moved(ino, before, (a.size, a.mtime_ms));
        if let Some(base) = staging.as_mut().and_then(|g| g.as_mut()).and_then(|s| s.base.as_mut()) {
            attrs.apply(base, t);
        }
        self.attrs.fresh(&a);
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
        let shared = self.stagings.get(ino);
        let mut staging = shared.as_ref().map(|s| s.lock());
        let Some(mut a) = self.cached_attr(ino).filter(|a| a.file_type != Directory) else { return Ok(false) };
        if let Some(r) = replaced {
            // A replaced inode with other names changes under them (nlink,
            // ctime); one open here would have to live on as an orphan.
            let open = self.handles.is_open(r) || self.stagings.contains(r) || self.handles.is_orphan(r);
            if open || r == ino || self.cached_attr(r).is_none_or(|ra| ra.file_type == Directory || ra.nlink > 1) {
                return Ok(false);
            }
        }
        let t = strata_protocol::now_ms().max(a.ctime_ms);
        self.block_on(self.client.rename_later(src, dst, t)).map_err(|e| errno(&e))?;
        a.ctime_ms = t;
        self.attrs.fresh(&a);
        if let Some(base) = staging.as_mut().and_then(|g| g.as_mut()).and_then(|s| s.base.as_mut()) {
            base.ctime_ms = t;
        }
        self.touched_dir(parent, t, 0);
        self.touched_dir(newparent, t, 0);
        self.paths.rename_over(src, dst, ino, replaced, |r| {
            self.stagings.drop_copy(r);
            self.attrs.stale(&[r]);
        });
        Ok(true)
    }

    /// Records attribute changes to publish with the inode's staged
    /// content; false if nothing is staged (apply them now).
    /// A clean staging file of a small file (rsync's `fchmod` right after
    /// its create) is marked dirty for it: republishing it is one entry.
    fn defer_attrs(&self, ino: u64, attrs: &SetAttrs) -> FsResult<bool> {
        let Some(shared) = self.stagings.get(ino) else { return Ok(false) };
        if !self.mark_attrs(&shared, attrs) {
            return Ok(false);
        }
        // A release (the kernel sends it after `close` returned; a chmod by
        // path can come before it is handled) may have published before
        // the mark and would then let the dirty staging go; the reference
        // held here keeps it until it is published here instead.
        if !self.handles.is_open(ino) {
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
            self.leases.know(a.inode, g);
            return Ok(file_attr(&a));
        }
        let a = self.block_on(self.client.mkdir_as(&path, false, owner)).map_err(|e| errno(&e))?;
        self.made(parent, path.clone(), &a);
        match self.client.lease_of(&path) {
            // Made by this client under its lease: empty, and nobody else's.
            Some(g) => {
                self.leases.know(a.inode, g);
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
        let Some(g) = self.leases.known_dir(parent, split(path).0) else { return Ok(None) };
        if self.paths.ino_at(path).is_some() {
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
            self.handles.any_open(|ino| paths.get(ino) == Some(&path))
        };
        if !busy {
            // Known here (the kernel looked it up) with one link: queued, no
            // round trip. An inode with other names changes (nlink, ctime)
            // under them, which the mount would answer wrongly meanwhile.
            let known = self.paths.ino_at(&path);
            if let Some(ino) = known.filter(|&i| self.cached_attr(i).is_some_and(|a| a.nlink <= 1)) {
                self.block_on(self.client.unlink_later(&path)).map_err(|e| errno(&e))?;
                self.stagings.drop_copy(ino);
                self.attrs.stale(&[ino]);
                self.touched_dir(parent, strata_protocol::now_ms(), 0);
                self.paths.forget_name(ino, &path);
                return Ok(());
            }
            tracing::debug!(path, ?known, "unlink: not queued");
            let r = self.block_on(self.client.unlink(&path));
            self.attrs.stale(&[parent]);
            let a = r.map_err(|e| errno(&e))?;
            self.stagings.drop_copy(a.inode);
            self.attrs.stale(&[a.inode]);
            self.paths.forget_name(a.inode, &path);
            return Ok(());
        }
        let a = self.stat_path(&path)?;
        if a.file_type == strata_client::FileType::Directory {
            return Err(Errno::EISDIR);
        }
        let open = self.handles.open_of(a.inode);
        if a.nlink <= 1 && !open.is_empty() {
            // Keep the bytes for the open handles, then let the name go.
            for f in &open {
                self.ensure_staging(f, false)?;
            }
            let mut gone = a.clone();
            gone.nlink = 0;
            self.handles.orphan(a.inode, gone);
        }
        let r = self.block_on(self.client.delete(&path, false));
        self.attrs.stale(&[parent, a.inode]);
        r.map_err(|e| errno(&e))?;
        self.paths.forget_name(a.inode, &path);
        Ok(())
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
        let a = r.inspect_err(|_| self.attrs.stale(&[newparent, ino])).map_err(|e| errno(&e))?;
        self.touched_dir(newparent, a.ctime_ms, 0);
        // The path map keeps one name per inode: the directory's names are
        // no longer all known here.
        self.leases.unknow(newparent);
        self.attrs.fresh(&a);
        Ok(file_attr(&a))
    }

    /// `rmdir`.
    pub fn rmdir(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<()> {
        let path = self.child_path(parent, name)?;
        let known = self.paths.ino_at(&path);
        if let Some((ino, g)) = known.and_then(|i| Some((i, self.leases.known_dir(i, &path)?))) {
            // Known here, under the lease: empty or not is known too.
            if self.paths.has_names_in(&path) {
                return Err(Errno::ENOTEMPTY);
            }
            if self.client.queue_leased(g, &path, BatchOp::Delete { path: path.clone() }) {
                self.touched_dir(parent, strata_protocol::now_ms(), -1);
                self.attrs.stale(&[ino]);
                self.leases.unknow(ino);
                self.paths.remove(ino);
                return Ok(());
            }
        }
        let a = self.attr_at(&path)?;
        if a.file_type != strata_client::FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        let r = self.block_on(self.client.delete(&path, false));
        self.attrs.stale(&[parent, a.inode]);
        r.map_err(|e| errno(&e))?;
        self.paths.remove(a.inode);
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
        let replaced = self.paths.ino_at(&dst);
        self.attrs.stale(&[a.inode, parent, newparent, replaced.unwrap_or(a.inode)]);
        r.map_err(|e| errno(&e))?;
        if let Some(gone) = replaced.filter(|&i| i != a.inode) {
            self.stagings.drop_copy(gone);
        }
        // Re-point the moved inode and, for a directory, everything below it.
        self.paths.rename(&src, &dst, a.inode);
        Ok(())
    }

    /// A handle state for `ino`, sharing the inode's staging.
    fn open_file(&self, ino: u64, writable: bool) -> OpenFile {
        OpenFile::new(ino, writable, self.stagings.shared(ino))
    }

    /// Drops the inode's staging once no handle uses it (see
    /// [`Stagings::forget_if_unused`]).
    fn forget_staging_if_unused(&self, ino: u64) {
        self.stagings.forget_if_unused(ino, &self.handles);
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
                let known = if up == "/" { Some(1) } else { self.paths.ino_at(up) };
                known.unwrap_or_else(|| self.stat_path(up).map(|a| a.inode).unwrap_or(1))
            }
        };
        let mut entries = vec![
            Entry { ino, kind: FileType::Directory, name: ".".into(), attr: None },
            Entry { ino: parent, kind: FileType::Directory, name: "..".into(), attr: None },
        ];
        // A listing from the master is remembered; one this mount knew
        // already is (every entry in the path map, its attributes cached).
        if !known {
            self.paths.learn(&path, &list, &self.attrs);
        }
        for e in list {
            let fa = file_attr(&e.attr);
            entries.push(Entry { ino: e.attr.inode, kind: fa.kind, name: e.name, attr: Some(fa) });
        }
        Ok(self.handles.add_dir(entries))
    }

    /// The entries of a directory this mount knows under a lease, if it
    /// has every entry's attributes.
    fn known_listing(&self, dir: u64, path: &str) -> Option<Vec<strata_client::DirEntry>> {
        self.leases.known_dir(dir, path)?;
        let named = self.paths.entries_in(path)?;
        // `cached_attr`'s test, with one lock for all: an answer within the
        // TTL, or one for an inode this mount knows under a lease (one also
        // named outside the directory — a hard link — may not be).
        let found = self.attrs.all(named)?;
        found
            .into_iter()
            .map(|(name, ino, fresh, attr)| {
                (fresh || self.leased(ino)).then_some(strata_client::DirEntry { name, attr })
            })
            .collect()
    }

    /// The snapshot taken at `opendir`.
    pub fn readdir(&self, fh: u64) -> FsResult<Arc<Vec<Entry>>> {
        self.handles.dir(fh)
    }

    /// `releasedir`.
    pub fn releasedir(&self, fh: u64) {
        self.handles.remove_dir(fh);
    }

    /// `ino`'s extended attributes: cached within the TTL or while the inode
    /// has unpublished writes here, else read from the master.
    fn xattrs_of(&self, ino: u64) -> FsResult<Xattrs> {
        let cached = self.xattrs.get(ino);
        if let Some((at, x)) = cached {
            if at.elapsed() < self.cfg.ttl || self.dirty_base(ino).is_some() {
                return Ok(x);
            }
        }
        let x: Xattrs = Arc::new(self.block_on(self.client.xattrs(&self.path(ino)?)).map_err(|e| errno(&e))?);
        self.xattrs.put(ino, x.clone());
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
        self.xattrs.forget(ino);
        self.attrs.stale(&[ino]);
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
