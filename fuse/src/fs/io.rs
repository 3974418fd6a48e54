//! The operations of open files: open (from the cluster, a lease or a
//! kept copy), create, read, write and fallocate through the inode's
//! staging file, flush, fsync and release (which publish it).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fuser::{Errno, FileAttr};
use strata_client::{Attr, ClientError, ErrorCode, FileReader, Owner};
use strata_protocol::INLINE_MAX_BYTES;

use super::attrs::Xattrs;
use super::handles::OpenFile;
use super::staging::{Staging, Version};
use super::{file_attr, io_err, FsResult, StrataFs};
use crate::errno::errno;

impl StrataFs {
    /// `open` (O_TRUNC comes as a setattr of the size after it).
    pub fn open(&self, ino: u64, writable: bool) -> FsResult<u64> {
        let path = self.path(ino)?;
        let f = self.open_file(ino, writable);
        let fresh = if let Some(a) = self.open_leased(ino, &path, writable, &f) {
            a
        } else if writable && self.stagings.has_copy(ino) {
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
        self.attrs.fresh(&fresh);
        self.revalidate(ino, &fresh);
        Ok(self.handles.add(f))
    }

    /// Runs `op` on the staging file of handle `fh`'s inode if it is one
    /// the kernel should do the handle's reads and writes on directly (FUSE
    /// passthrough): one already given to the kernel, or a bigger file's
    /// (a kept copy, or content staged by another handle). Small and new
    /// files stay with the mount: a backing file can be mapped past its
    /// last close, so it is never reused for another inode, and an ext4
    /// inode per small file costs more than the requests it saves.
    pub fn with_backing<R>(&self, fh: u64, op: impl FnOnce(&File) -> R) -> Option<R> {
        let f = self.handles.get(fh).ok()?;
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
        self.handles.get(fh).is_ok_and(|f| f.staging.lock().is_some())
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
            size => self.stagings.inline_content(ino, g, size)?,
        };
        let file = strata_client::FileBlocks { attr: a.clone(), blocks: Vec::new(), ufs: None, inline: Some(data) };
        let _ = f.snapshot.set(Arc::new(file));
        Some(a)
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
                *guard = self
                    .stagings
                    .revive(f.ino, lease, file, base.size)
                    .map(|s| Staging { base: Some(base.clone()), ..s })
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
        self.xattrs.put(a.inode, Xattrs::default());
        let fa = file_attr(&a);
        let s = self.new_staging(false)?;
        let f = self.open_file(a.inode, true);
        *f.staging.lock() = Some(Staging { base: Some(a), ..s });
        Ok((fa, self.handles.add(f)))
    }

    /// An empty staging file (see [`Stagings::new_staging`]), named anew
    /// from the handle counter if none is kept for reuse.
    fn new_staging(&self, stamp: bool) -> FsResult<Staging> {
        self.stagings.new_staging(stamp, || self.handles.next_id())
    }

    /// Makes the inode's staged content empty and dirty without reading
    /// the old content (an O_TRUNC open of a writer).
    pub(super) fn truncate_to_empty(&self, f: &OpenFile) -> FsResult<()> {
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

    /// Runs `op` on the handle's staging file, creating it first from the
    /// file's current content, and marks it dirty in the same critical
    /// section: a publish by another handle of the inode (a release) either
    /// sees the change and publishes it, or runs before it and leaves it
    /// dirty for the next flush. (Marking it dirty before the change let a
    /// racing release publish the old bytes and clear the flag, losing the
    /// write: seen as a rare append failure in CI.)
    /// `op` answers the byte range it changed.
    pub(super) fn with_staging<R>(
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
    pub(super) fn ensure_staging(&self, f: &OpenFile, dirty: bool) -> FsResult<()> {
        let mut guard = f.staging.lock();
        if guard.is_none() {
            let path = self.path(f.ino)?;
            let known = self.cached_attr(f.ino).map(|a| a.size);
            let leased = known.and_then(|size| self.stagings.revive(f.ino, self.client.lease_of(&path), None, size));
            let s = match leased {
                Some(s) => s,
                None => {
                    let r = self.block_on(self.client.open(&path)).map_err(|e| errno(&e))?;
                    match self.stagings.revive(f.ino, None, Some(r.file()), r.attr().size) {
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

    /// `read`.
    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let f = self.handles.get(fh)?;
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
        let f = self.handles.get(fh)?;
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
        let f = self.handles.get(fh)?;
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

    /// `flush`: publish pending writes (blocks in the workers' page cache,
    /// as a local file's close leaves them).
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let f = self.handles.get(fh)?;
        self.publish(&f, false)
    }

    /// `fsync`: publish pending writes with their blocks on disk, and wait
    /// for this mount's queued changes.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let f = self.handles.get(fh)?;
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
        let Some(f) = self.handles.take(fh) else { return Ok(()) };
        let r = self.publish(&f, false);
        let ino = f.ino;
        drop(f);
        self.forget_staging_if_unused(ino);
        r
    }
}
