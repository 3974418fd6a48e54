//! Publishing: how a dirty staging file reaches the master. A small file
//! goes in one journal entry with its content inline; a bigger one as
//! blocks the mount writes to a worker, then one entry that makes them the
//! inode's content (under a lease, both may be queued, the blocks written
//! in the background); under a UFS mount as a detached file swapped into
//! the inode. Every way keeps the inode number; the staging's version,
//! the attribute cache and the kernel's page version follow the publish.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_client::{Attr, BatchOp, ErrorCode, SetAttrs};
use strata_protocol::INLINE_MAX_BYTES;

use super::handles::OpenFile;
use super::staging::{read_whole, Since, Version};
use super::{io_err, FsResult, StrataFs};
use crate::errno::errno;

/// The block size of a file first published by an fsync while smaller than
/// [`DURABLE_SMALL_FILE`] (at most the mount's).
const DURABLE_BLOCK_SIZE: u64 = 1 << 20;
const DURABLE_SMALL_FILE: u64 = 16 << 20;

/// A publish's block size and, per block, the id it keeps (None: written).
type Layout = (u64, Vec<Option<strata_protocol::BlockId>>);

/// Files up to this size publish under a lease with their blocks written
/// in the background (the close waits for neither the worker nor the
/// master; anyone who looks waits for both).
const MAX_BEHIND_FILE: u64 = 4 << 20;

/// The UFS mount points as last read, and when.
#[derive(Default)]
pub(super) struct UfsMounts(Mutex<(Option<Instant>, Vec<String>)>);

impl UfsMounts {
    /// The mount points if read in the last 10 s.
    fn fresh(&self) -> Option<Vec<String>> {
        let m = self.0.lock();
        m.0.filter(|at| at.elapsed() < Duration::from_secs(10)).map(|_| m.1.clone())
    }

    /// The mount points as just read.
    fn set(&self, mounts: Vec<String>) {
        *self.0.lock() = (Some(Instant::now()), mounts);
    }

    /// Read them again next time.
    fn expire(&self) {
        self.0.lock().0 = None;
    }
}

impl StrataFs {
    /// Publishes a dirty staging file with its deferred attribute changes:
    /// a small file in one journal entry with its content inline, a bigger
    /// one (or one under a UFS mount) as new blocks in a detached file, then
    /// an atomic swap into the inode.
    pub(super) fn publish(&self, f: &OpenFile, durable: bool) -> FsResult<()> {
        if self.handles.is_orphan(f.ino) {
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
                    self.stagings.keep_inline(f.ino, Some((g, kept)));
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
                self.stagings.keep_inline(f.ino, None);
                self.publish_now(f.ino, &path, &s.file, len, attrs, durable)?
            }
        };
        s.version = Some(version).filter(|v| v.lease.is_some() || !v.blocks.is_empty());
        self.attrs.fresh(&a);
        // This mount's kernel already has these bytes, unless it wrote
        // them past its page cache; don't invalidate on the next open.
        self.seen.set(f.ino, (!s.bypassed).then_some((a.size, a.mtime_ms)));
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
        let mounts = match self.ufs_mounts.fresh() {
            Some(m) => m,
            None => {
                let m: Vec<String> = match self.client.mounts().await {
                    Ok(m) => m.into_iter().map(|m| m.path).collect(),
                    Err(_) => return true, // unknown: the way that works everywhere
                };
                self.ufs_mounts.set(m.clone());
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
                    Err(e) if e.code() == ErrorCode::InlineRefused => self.ufs_mounts.expire(),
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
        let (a, blocks) = r.inspect_err(|_| self.attrs.stale(&[ino])).map_err(|e| errno(&e))?;
        Ok((a, Version { lease: self.client.lease_of(path), blocks }))
    }
}
