//! `fuser::Filesystem` over [`StrataFs`]: argument conversion and replies
//! only. Every error goes through [`reply_err`], which logs and counts it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    BackingId, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::fs::{Lookup, StrataFs};

/// The adapter.
pub struct Adapter {
    fs: StrataFs,
    /// How the kernel does the I/O of each inode open here. It refuses
    /// (EIO to the opener) a passthrough open of an inode open cached, a
    /// cached open of one open passthrough, and a second backing file for
    /// one inode, so every open of an inode takes the mode of those still
    /// open and shares one backing id. Counted by handles not yet released
    /// here, which the kernel has stopped counting before it sends the
    /// release: the two never disagree in the direction that fails.
    io: parking_lot::Mutex<HashMap<u64, Io>>,
    /// The kernel offered passthrough and registering a backing file works.
    passthrough: AtomicBool,
    /// Errors returned to the kernel, for diagnostics (shared with the
    /// replies that waiting lock requests send later).
    errors: Arc<AtomicU64>,
}

/// The I/O mode of an open inode and its open handles.
enum Io {
    /// Reads and writes come here (reads through the kernel's page cache).
    Cached(usize),
    /// The kernel reads and writes the inode's staging file itself.
    Passthrough(Arc<BackingId>, usize),
}

impl Adapter {
    /// Wraps a filesystem.
    pub fn new(fs: StrataFs) -> Self {
        Adapter { fs, io: Default::default(), passthrough: AtomicBool::new(false), errors: Default::default() }
    }

    /// How many errors were returned to the kernel.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Chooses the I/O mode of new handle `fh` of `ino`: the backing id to
    /// reply with for passthrough, None for cached. EIO (the handle
    /// released) if the inode is open passthrough and the handle has no
    /// staging file, which cannot happen while those handles hold it.
    fn open_io(
        &self,
        ino: u64,
        fh: u64,
        open_backing: impl FnOnce(&std::fs::File) -> io::Result<BackingId>,
    ) -> Result<Option<Arc<BackingId>>, Errno> {
        let mut io = self.io.lock();
        let mode = match io.get_mut(&ino) {
            Some(Io::Passthrough(_, _)) if !self.fs.has_staging(fh) => {
                drop(io);
                let _ = self.fs.release(fh);
                return Err(Errno::EIO);
            }
            Some(mode) => mode,
            None => {
                let backing = if self.passthrough.load(Ordering::Relaxed) {
                    self.fs.with_backing(fh, open_backing)
                } else {
                    None
                };
                let mode = match backing {
                    Some(Ok(id)) => Io::Passthrough(Arc::new(id), 0),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "passthrough refused; reads and writes go through the mount");
                        self.passthrough.store(false, Ordering::Relaxed);
                        Io::Cached(0)
                    }
                    None => Io::Cached(0),
                };
                io.entry(ino).or_insert(mode)
            }
        };
        Ok(match mode {
            Io::Cached(n) => {
                *n += 1;
                None
            }
            Io::Passthrough(id, n) => {
                *n += 1;
                Some(id.clone())
            }
        })
    }

    /// A handle of `ino` was released: the last one ends its I/O mode (and
    /// closes the backing id).
    fn close_io(&self, ino: u64) {
        let mut io = self.io.lock();
        if let Some(Io::Cached(n) | Io::Passthrough(_, n)) = io.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                io.remove(&ino);
            }
        }
    }
}

/// Logs, counts (in `$errors`) and returns an error to the kernel.
macro_rules! reply_err {
    ($errors:expr, $reply:expr, $op:expr, $e:expr) => {{
        let e: Errno = $e;
        $errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(op = $op, errno = e.code(), "fuse error");
        $reply.error(e)
    }};
}

fn to_time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

const GEN: Generation = Generation(0);

/// The attributes of a negative entry (the kernel reads only the node id).
const ABSENT: fuser::FileAttr = fuser::FileAttr {
    ino: INodeNo(0),
    size: 0,
    blocks: 0,
    atime: SystemTime::UNIX_EPOCH,
    mtime: SystemTime::UNIX_EPOCH,
    ctime: SystemTime::UNIX_EPOCH,
    crtime: SystemTime::UNIX_EPOCH,
    kind: fuser::FileType::RegularFile,
    perm: 0,
    nlink: 0,
    uid: 0,
    gid: 0,
    rdev: 0,
    blksize: 0,
    flags: 0,
};

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        let want = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_CACHE_SYMLINKS
            // Set-id bits and capabilities are dropped here (`StrataFs::
            // drop_privileges`): the kernel then skips its getattr before a
            // chown and its getxattr of `security.capability` before every
            // write (6.6k of tar's 50k requests).
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2
            // Locks go to the master (`StrataFs::setlk`): they hold across mounts.
            | InitFlags::FUSE_POSIX_LOCKS
            | InitFlags::FUSE_FLOCK_LOCKS;
        // Not FUSE_ATOMIC_O_TRUNC: with it the kernel opens an O_RDONLY |
        // O_TRUNC file through us and sets its size to 0 before it checks
        // that the file is not being executed (ETXTBSY), so a program
        // still loading saw a truncated image and crashed (pjdfstest's
        // open::etxtbsy, intermittently). The kernel truncates with a
        // setattr after its checks instead.
        // Not FUSE_AUTO_INVAL_DATA: with it the kernel checks attributes
        // before every cached read (4k random reads 48k → 31k IOPS); `open`
        // revalidates the pages instead.
        let _ = config.add_capabilities(want & config.capabilities());
        // Passthrough: the kernel reads and writes a handle's staging file
        // itself (no request per read or write). Backing files are on a
        // plain filesystem: depth 1.
        if config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH)
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            Ok(Lookup::Found(a)) => reply.entry(&self.fs.attr_ttl(a.ino.0), &a, GEN),
            // Node id 0: a negative entry the kernel keeps for `ttl`.
            Ok(Lookup::Absent(ttl)) if !ttl.is_zero() => reply.entry(&ttl, &ABSENT, GEN),
            Ok(Lookup::Absent(_)) => reply_err!(self.errors, reply, "lookup", Errno::ENOENT),
            Err(e) => reply_err!(self.errors, reply, "lookup", e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&self.fs.attr_ttl(a.ino.0), &a),
            Err(e) => reply_err!(self.errors, reply, "getattr", e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The kernel no longer drops set-id bits itself (HANDLE_KILLPRIV_V2);
        // whether the caller could keep them (CAP_FSETID) is not sent with
        // a truncate: root could.
        let unprivileged = req.uid() != 0;
        let (atime, mtime, fh) = (atime.map(to_time), mtime.map(to_time), fh.map(|f| f.0));
        match self.fs.setattr(ino.0, mode, uid, gid, size, atime, mtime, fh, unprivileged) {
            Ok(a) => reply.attr(&self.fs.attr_ttl(a.ino.0), &a),
            Err(e) => reply_err!(self.errors, reply, "setattr", e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply_err!(self.errors, reply, "readlink", e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        match self.fs.mkdir(parent.0, name, mode & !umask, req.uid(), req.gid()) {
            Ok(a) => reply.entry(&self.fs.attr_ttl(a.ino.0), &a, GEN),
            Err(e) => reply_err!(self.errors, reply, "mkdir", e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let mode = (mode & libc::S_IFMT) | (mode & 0o7777 & !umask);
        match self.fs.mknod(parent.0, name, mode, rdev, req.uid(), req.gid()) {
            Ok(a) => reply.entry(&self.fs.attr_ttl(a.ino.0), &a, GEN),
            Err(e) => reply_err!(self.errors, reply, "mknod", e),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        match self.fs.link(ino.0, newparent.0, newname) {
            Ok(a) => reply.entry(&self.fs.attr_ttl(a.ino.0), &a, GEN),
            Err(e) => reply_err!(self.errors, reply, "link", e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(self.errors, reply, "unlink", e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(self.errors, reply, "rmdir", e),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        match self.fs.symlink(parent.0, link_name, target, req.uid(), req.gid()) {
            Ok(a) => reply.entry(&self.fs.attr_ttl(a.ino.0), &a, GEN),
            Err(e) => reply_err!(self.errors, reply, "symlink", e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply_err!(self.errors, reply, "rename", Errno::EINVAL);
        }
        match self.fs.rename(parent.0, name, newparent.0, newname, flags.contains(RenameFlags::RENAME_NOREPLACE)) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(self.errors, reply, "rename", e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        // A read-only open keeps the kernel's cached pages: `open` has
        // already dropped them if the file changed since this mount last
        // saw it (close-to-open), so a re-read needs no request.
        // Nor does its close need a flush request: it has nothing to
        // publish (a writable handle of the inode publishes its own).
        let keep =
            if writable { FopenFlags::empty() } else { FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH };
        let fh = match self.fs.open(ino.0, writable) {
            Ok(fh) => fh,
            Err(e) => return reply_err!(self.errors, reply, "open", e),
        };
        match self.open_io(ino.0, fh, |file| reply.open_backing(file)) {
            Ok(Some(id)) => reply.opened_passthrough(FileHandle(fh), keep & FopenFlags::FOPEN_NOFLUSH, &id),
            Ok(None) => reply.opened(FileHandle(fh), keep),
            Err(e) => reply_err!(self.errors, reply, "open", e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let (a, fh) = match self.fs.create(parent.0, name, mode & !umask, req.uid(), req.gid()) {
            Ok(r) => r,
            Err(e) => return reply_err!(self.errors, reply, "create", e),
        };
        let ttl = self.fs.attr_ttl(a.ino.0);
        match self.open_io(a.ino.0, fh, |file| reply.open_backing(file)) {
            Ok(Some(id)) => reply.created_passthrough(&ttl, &a, GEN, FileHandle(fh), FopenFlags::empty(), &id),
            Ok(None) => reply.created(&ttl, &a, GEN, FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply_err!(self.errors, reply, "create", e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(ino.0, fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply_err!(self.errors, reply, "read", e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.fs.write(ino.0, fh.0, offset, data, kill) {
            Ok(n) => reply.written(n),
            Err(e) => reply_err!(self.errors, reply, "write", e),
        }
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        // Published before the process's locks on the file go, so the next
        // holder reads what it wrote under them.
        let published = self.fs.flush(fh.0);
        match published.and(self.fs.unlock_owner(ino.0, lock_owner.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(self.errors, reply, "flush", e),
        }
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.fs.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(self.errors, reply, "fsync", e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // First: the release may recycle the staging file a backing id of
        // the inode refers to; an open after it registers a new one.
        self.close_io(ino.0);
        // The open file's `flock` lock goes after its writes are published.
        let published = self.fs.release(fh.0);
        let flock = lock_owner.map_or(Ok(()), |o| self.fs.unlock_owner(ino.0, o.0));
        match published.and(flock).and(self.fs.unlock_handle(ino.0, fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(self.errors, reply, "release", e),
        }
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        match self.fs.getlk(ino.0, lock_owner.0, start, end, typ) {
            Ok((start, end, typ, pid)) => reply.locked(start, end, typ, pid),
            Err(e) => reply_err!(self.errors, reply, "getlk", e),
        }
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        if !sleep {
            return match self.fs.setlk(ino.0, fh.0, lock_owner.0, start, end, typ, pid) {
                Ok(()) => reply.ok(),
                Err(e) => reply_err!(self.errors, reply, "setlk", e),
            };
        }
        // A wait may be long: the request thread goes on, the reply waits.
        match self.fs.setlk_wait(ino.0, fh.0, lock_owner.0, start, end, typ, pid, req.pid()) {
            Ok(wait) => {
                let errors = self.errors.clone();
                self.fs.spawn(async move {
                    match wait.await {
                        Ok(()) => reply.ok(),
                        Err(e) => reply_err!(errors, reply, "setlkw", e),
                    }
                })
            }
            Err(e) => reply_err!(self.errors, reply, "setlkw", e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.fs.fallocate(fh.0, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(self.errors, reply, "fallocate", e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply_err!(self.errors, reply, "opendir", e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match self.fs.readdir(fh.0) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(e.ino), (i + 1) as u64, e.kind, &e.name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply_err!(self.errors, reply, "readdir", e),
        }
    }

    fn readdirplus(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        match self.fs.readdir(fh.0) {
            Ok(entries) => {
                let ttl = self.fs.ttl();
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    let full = match &e.attr {
                        Some(a) => reply.add(INodeNo(e.ino), (i + 1) as u64, &e.name, &ttl, a, GEN),
                        // `.` and `..`: attributes are fetched when needed.
                        None => match self.fs.getattr(e.ino) {
                            Ok(a) => {
                                reply.add(INodeNo(e.ino), (i + 1) as u64, &e.name, &std::time::Duration::ZERO, &a, GEN)
                            }
                            Err(_) => continue,
                        },
                    };
                    if full {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply_err!(self.errors, reply, "readdirplus", e),
        }
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.fs.sync_queued() {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(self.errors, reply, "fsyncdir", e),
        }
    }

    fn destroy(&mut self) {
        let _ = self.fs.sync_queued();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.fs.releasedir(fh.0);
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok((total, free, inodes)) => {
                let bs = 4096u64;
                reply.statfs(total / bs, free / bs, free / bs, inodes, u32::MAX as u64, bs as u32, 255, bs as u32)
            }
            Err(e) => reply_err!(self.errors, reply, "statfs", e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(ino.0, name) {
            Ok(v) => reply_sized(reply, &v, size),
            Err(e) => reply_err!(self.errors, reply, "getxattr", e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(v) => reply_sized(reply, &v, size),
            Err(e) => reply_err!(self.errors, reply, "listxattr", e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match self.fs.setxattr(ino.0, name, Some(value), flags as u32) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(self.errors, reply, "setxattr", e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.setxattr(ino.0, name, None, 0) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(self.errors, reply, "removexattr", e),
        }
    }
}

/// An xattr reply: the size when asked for it (`size` 0), the bytes if they
/// fit, else ERANGE.
fn reply_sized(reply: ReplyXattr, v: &[u8], size: u32) {
    if size == 0 {
        reply.size(v.len() as u32)
    } else if v.len() > size as usize {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(v)
    }
}
