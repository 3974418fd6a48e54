//! How each journal entry changes the namespace: [`Tx::apply`] dispatches an
//! entry to the method of its kind, which reads the committed state,
//! validates and collects the entry's writes in the transaction's batch. An
//! `Err(NsError::Ns)` rejects the entry (the caller discards the batch).

use std::collections::HashSet;

use strata_protocol::journal::{ApplyResult, JournalEntry, UfsOp};
use strata_protocol::messages::{Attr, FileType, Replicas, SetAttrs, MAX_REPLICAS};
use strata_protocol::ufs::{self, FileTtl, Fingerprint, MountInfo, UfsEntry};
use strata_protocol::{path, BlockId, ErrorCode, InodeId, ROOT_INODE};

use super::{
    cf, encode, handle, intent_key, is_inline, length_fits, mount_key, ns, InodeRecord, NsError, Tx, UfsMeta,
    DECOMMISSION_PREFIX, LEASE_TERM, TTL_USED,
};

impl Tx<'_> {
    /// Applies `entry` to this transaction: its result, or the error that
    /// rejects it.
    pub(super) fn apply(&mut self, entry: &JournalEntry) -> Result<ApplyResult, NsError> {
        match entry {
            // Its ops are applied one by one by `Namespace::apply`; this is its bookkeeping.
            JournalEntry::Batch { .. } | JournalEntry::ClientBatch { .. } => Ok(ApplyResult::Done),
            JournalEntry::Mkdir { path: p, recursive, mode, uid, gid, time_ms } => {
                self.mkdir(p, *recursive, *mode, *uid, *gid, *time_ms)
            }
            JournalEntry::CreateFile { path: p, mode, uid, gid, block_size, overwrite, complete, time_ms } => {
                self.create_file(p, *mode, *uid, *gid, *block_size, *overwrite, *complete, *time_ms)
            }
            JournalEntry::LeaseTerm { term, .. } => self.lease_term(*term),
            JournalEntry::ReserveInodes { count, .. } => self.reserve_inodes(*count),
            JournalEntry::ReserveBlocks { count, .. } => self.reserve_blocks(*count),
            JournalEntry::SetContent { inode, blocks, length, block_size, attrs, time_ms } => {
                self.set_content(*inode, blocks, *length, *block_size, attrs, *time_ms)
            }
            JournalEntry::CreateInode { path: p, inode, kind, mode, uid, gid, block_size, time_ms } => {
                self.create_inode(p, *inode, *kind, *mode, *uid, *gid, *block_size, *time_ms)
            }
            JournalEntry::AddBlock { inode, time_ms } => self.add_block(*inode, *time_ms),
            JournalEntry::CompleteFile { inode, length, time_ms } => self.complete_file(*inode, *length, *time_ms),
            JournalEntry::Rename { src, dst, time_ms } => self.rename(src, dst, *time_ms),
            JournalEntry::Delete { path: p, recursive, time_ms } => {
                let (_, freed) = self.delete(p, Some(*recursive), *time_ms)?;
                Ok(ApplyResult::Freed { blocks: freed })
            }
            JournalEntry::Unlink { path: p, time_ms } => {
                let (attr, freed) = self.delete(p, None, *time_ms)?;
                Ok(ApplyResult::Replaced { attr, freed })
            }
            JournalEntry::SetAttr { path: p, attrs, time_ms } => self.set_attr(p, attrs, *time_ms),
            JournalEntry::Mknod { path: p, kind, mode, rdev, uid, gid, time_ms } => {
                self.mknod(p, *kind, *mode, *rdev, *uid, *gid, *time_ms)
            }
            JournalEntry::Link { target, link, time_ms } => self.link(target, link, *time_ms),
            JournalEntry::CreateDetached { mode, uid, gid, block_size, time_ms } => {
                self.create_detached(*mode, *uid, *gid, *block_size, *time_ms)
            }
            JournalEntry::SwapContent { from, to, length, time_ms } => self.swap_content(*from, *to, *length, *time_ms),
            JournalEntry::Symlink { target, link, uid, gid, time_ms } => {
                self.symlink(target, link, *uid, *gid, *time_ms)
            }
            JournalEntry::WriteInline { inode, data, attrs, time_ms } => {
                self.write_inline_at(*inode, data, attrs, *time_ms)
            }
            JournalEntry::SetXattr { path: p, name, value, flags, time_ms } => {
                self.set_xattr(p, name, value.as_deref(), *flags, *time_ms)
            }
            JournalEntry::Mount { info, time_ms } => self.mount(info, *time_ms),
            JournalEntry::Unmount { path: p, time_ms } => self.unmount(p, *time_ms),
            JournalEntry::UfsSync { dir, entries, time_ms } => {
                self.ufs_sync(dir, entries, (None, None), true, *time_ms)
            }
            JournalEntry::UfsSyncPart { dir, entries, after, last, time_ms } => {
                let upto = if *last { None } else { entries.last().map(|e| e.name.as_str()) };
                self.ufs_sync(dir, entries, (after.as_deref(), upto), *last, *time_ms)
            }
            JournalEntry::ForgetClients { before_ms, time_ms: _ } => self.forget_clients(*before_ms),
            JournalEntry::Persisted { inode, blocks, fingerprint, time_ms: _ } => {
                self.persisted(*inode, blocks, fingerprint)
            }
            JournalEntry::SetPin { path: p, pinned, time_ms: _ } => self.set_pin(p, *pinned),
            JournalEntry::SetTtl { path: p, ttl, time_ms: _ } => self.set_ttl(p, *ttl),
            JournalEntry::SetReplicas { path: p, replicas, recursive, time_ms: _ } => {
                self.set_replicas(p, *replicas, *recursive)
            }
            JournalEntry::Decommission { worker_id, on, time_ms: _ } => {
                let key = [DECOMMISSION_PREFIX, &worker_id.to_be_bytes()].concat();
                let meta = handle(&self.ns.db, cf::SM_META);
                if *on {
                    self.batch.put_cf(meta, key, []);
                } else {
                    self.batch.delete_cf(meta, key);
                }
                Ok(ApplyResult::Done)
            }
            JournalEntry::UfsIntent { id, op, time_ms } => self.ufs_intent(*id, op, *time_ms),
            JournalEntry::UfsDone { id: _, op, time_ms } => match op {
                // The intent row is removed by `Namespace::apply_one`.
                Some(op) => self.apply(&op.entry(*time_ms)),
                None => Ok(ApplyResult::Done),
            },
        }
    }

    /// `Mkdir`: makes directory `p`, with `recursive` also its missing
    /// parents (and then an existing directory `p` is no error). Answers
    /// `Attr` of `p`.
    fn mkdir(
        &mut self,
        p: &str,
        recursive: bool,
        mode: u32,
        uid: u32,
        gid: u32,
        time_ms: i64,
    ) -> Result<ApplyResult, NsError> {
        let comps = path::components(p)?;
        if comps.is_empty() {
            return if recursive {
                Ok(ApplyResult::Attr(self.ns.resolve_components(&[])?.attr))
            } else {
                Err(ns(ErrorCode::AlreadyExists, "/ already exists"))
            };
        }
        let mut cur = self.ns.resolve_components(&[])?;
        let mut created_under: Option<InodeRecord> = None;
        for (i, name) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let existing = match &created_under {
                Some(_) => None, // a directory created in this entry has no children yet
                None => self.child_record(cur.attr.inode, name)?,
            };
            match existing {
                Some(rec) => {
                    if rec.attr.file_type != FileType::Directory {
                        return Err(ns(
                            ErrorCode::NotADirectory,
                            format!("{} is not a directory", path::join(&comps[..=i])),
                        ));
                    }
                    if last && !recursive {
                        return Err(ns(ErrorCode::AlreadyExists, format!("{p} already exists")));
                    }
                    cur = rec;
                }
                None => {
                    if !last && !recursive {
                        return Err(ns(ErrorCode::NotFound, format!("{} does not exist", path::join(&comps[..=i]))));
                    }
                    let id = self.next_inode();
                    let attr = Attr::new(id, FileType::Directory, mode, uid, gid, time_ms).created_in(&cur.attr, 0);
                    let rec = InodeRecord { attr, blocks: vec![], ufs: None };
                    self.add_child(cur, name, &rec, time_ms);
                    created_under = Some(rec.clone());
                    cur = rec;
                }
            }
        }
        Ok(ApplyResult::Attr(cur.attr))
    }

    /// `CreateFile`: makes file `p`, replacing a file of that name with
    /// `overwrite`. Answers `Created` with the blocks of the file replaced.
    #[allow(clippy::too_many_arguments)]
    fn create_file(
        &mut self,
        p: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        block_size: u64,
        overwrite: bool,
        complete: bool,
        time_ms: i64,
    ) -> Result<ApplyResult, NsError> {
        let (parent, name) = self.parent_of(p)?;
        let mut freed = Vec::new();
        if let Some(old) = self.child_record(parent.attr.inode, name)? {
            match old.attr.file_type {
                FileType::Directory => return Err(ns(ErrorCode::IsADirectory, format!("{p} is a directory"))),
                _ if !overwrite => return Err(ns(ErrorCode::AlreadyExists, format!("{p} already exists"))),
                _ => freed = self.unlink_inode(&old, time_ms),
            }
        }
        let id = self.next_inode();
        let mut attr = Attr::new(id, FileType::File, mode, uid, gid, time_ms).created_in(&parent.attr, block_size);
        attr.complete = complete;
        let rec = InodeRecord { attr, blocks: vec![], ufs: None };
        self.add_child(parent, name, &rec, time_ms);
        Ok(ApplyResult::Created { attr: rec.attr, freed })
    }

    /// `LeaseTerm`: records that the leader of `term` granted a directory
    /// lease. Answers `Done`.
    fn lease_term(&mut self, term: u64) -> Result<ApplyResult, NsError> {
        let h = handle(&self.ns.db, cf::SM_META);
        self.batch.put_cf(h, LEASE_TERM, term.to_be_bytes());
        Ok(ApplyResult::Done)
    }

    /// `ReserveInodes`: takes `count` inode numbers for a client's
    /// `CreateInode`s. Answers `Reserved` with the first.
    fn reserve_inodes(&mut self, count: u64) -> Result<ApplyResult, NsError> {
        let first = reserve(&mut self.counters.0, count, "inode numbers")?;
        Ok(ApplyResult::Reserved { first })
    }

    /// `ReserveBlocks`: takes `count` block ids for a client's `SetContent`
    /// (remembered as reserved recently). Answers `Reserved` with the first.
    fn reserve_blocks(&mut self, count: u64) -> Result<ApplyResult, NsError> {
        let first = reserve(&mut self.counters.1, count, "block ids")?;
        self.ns.reserved.lock().push((std::time::Instant::now(), first..self.counters.1));
        Ok(ApplyResult::Reserved { first })
    }

    /// `SetContent`: makes `blocks` (reserved and owned by no inode, or
    /// kept from the file's present content) the whole content of file
    /// `inode`, `length` bytes in blocks of `block_size`, sealed, with
    /// `attrs` applied after. Answers `Replaced` with the blocks it dropped.
    fn set_content(
        &mut self,
        inode: InodeId,
        blocks: &[BlockId],
        length: u64,
        block_size: u64,
        attrs: &SetAttrs,
        time_ms: i64,
    ) -> Result<ApplyResult, NsError> {
        let mut rec = self.file(inode)?;
        if !(strata_protocol::MIN_BLOCK_SIZE..=strata_protocol::MAX_BLOCK_SIZE).contains(&block_size)
            || !length_fits(blocks.len() as u64, block_size, length)
        {
            return Err(ns(
                ErrorCode::InvalidArgument,
                format!("length {length} does not fit {} blocks of {block_size} bytes", blocks.len()),
            ));
        }
        // Only ids reserved and owned by no inode, or blocks of this
        // file's present content it keeps (a writer's fsync that
        // changed some blocks); none named twice.
        let hb = handle(&self.ns.db, cf::BLOCKS);
        let own: HashSet<BlockId> = rec.blocks.iter().copied().collect();
        let mut named = HashSet::with_capacity(blocks.len());
        for b in blocks {
            if !named.insert(*b)
                || !(own.contains(b) || (*b < self.counters.1 && self.ns.db.get_cf(hb, b.to_be_bytes())?.is_none()))
            {
                return Err(ns(ErrorCode::InvalidArgument, format!("block {b} is not reserved and unused")));
            }
        }
        let old = std::mem::replace(&mut rec.blocks, blocks.to_vec());
        let freed: Vec<BlockId> = old.into_iter().filter(|b| !named.contains(b)).collect();
        self.drop_inline(&rec);
        self.unmap_blocks(&freed);
        self.map_blocks(blocks, inode);
        rec.ufs = None; // new content: not in the UFS yet
        rec.attr.block_size = block_size;
        rec.attr.write_inline(length, attrs, time_ms);
        self.put_inode(&rec);
        Ok(ApplyResult::Replaced { attr: rec.attr, freed })
    }

    /// `CreateInode`: makes file (empty, sealed) or directory `p` as the
    /// client-numbered `inode`, which must be reserved and unused. Answers
    /// `Attr` of the new inode.
    #[allow(clippy::too_many_arguments)]
    fn create_inode(
        &mut self,
        p: &str,
        inode: InodeId,
        kind: FileType,
        mode: u32,
        uid: u32,
        gid: u32,
        block_size: u64,
        time_ms: i64,
    ) -> Result<ApplyResult, NsError> {
        let (parent, name) = self.parent_of(p)?;
        if !matches!(kind, FileType::File | FileType::Directory) {
            return Err(ns(ErrorCode::InvalidArgument, format!("{p}: only files and directories")));
        }
        // A number the client did not reserve, or used already, is refused.
        if inode <= ROOT_INODE || inode >= self.counters.0 || self.ns.inode(inode)?.is_some() {
            return Err(ns(ErrorCode::InvalidArgument, format!("inode {inode} is not reserved and unused")));
        }
        self.ensure_free(&parent, name, p)?;
        let attr = Attr::new(inode, kind, mode, uid, gid, time_ms).created_in(&parent.attr, block_size);
        let rec = InodeRecord { attr, blocks: vec![], ufs: None };
        self.add_child(parent, name, &rec, time_ms);
        Ok(ApplyResult::Attr(rec.attr))
    }

    /// `AddBlock`: gives the incomplete file `inode` one more block, with a
    /// new id. Answers `Block` with it.
    fn add_block(&mut self, inode: InodeId, time_ms: i64) -> Result<ApplyResult, NsError> {
        let mut rec = self.open_for_write(inode)?;
        let block_id = self.next_block();
        rec.blocks.push(block_id);
        rec.attr.mtime_ms = time_ms;
        self.put_inode(&rec);
        self.map_blocks(&[block_id], inode);
        Ok(ApplyResult::Block { block_id, replicas: rec.attr.replicas, block_size: rec.attr.block_size })
    }

    /// `CompleteFile`: seals the incomplete file `inode` at `length` bytes,
    /// which its blocks must fit. Answers `Attr` of the file.
    fn complete_file(&mut self, inode: InodeId, length: u64, time_ms: i64) -> Result<ApplyResult, NsError> {
        let mut rec = self.open_for_write(inode)?;
        let n = rec.blocks.len() as u64;
        let bs = rec.attr.block_size;
        if !length_fits(n, bs, length) {
            return Err(ns(
                ErrorCode::InvalidArgument,
                format!("length {length} does not fit {n} blocks of {bs} bytes"),
            ));
        }
        rec.attr.size = length;
        rec.attr.complete = true;
        rec.ufs = None;
        rec.attr.mtime_ms = time_ms;
        rec.attr.ctime_ms = time_ms;
        self.put_inode(&rec);
        Ok(ApplyResult::Attr(rec.attr))
    }

    /// `SetAttr`: applies `attrs` to `p`. Answers `Attr` of `p`.
    fn set_attr(&mut self, p: &str, attrs: &SetAttrs, time_ms: i64) -> Result<ApplyResult, NsError> {
        let mut rec = self.ns.resolve(p)?;
        attrs.apply(&mut rec.attr, time_ms);
        self.put_inode(&rec);
        Ok(ApplyResult::Attr(rec.attr))
    }

    /// `Mknod`: makes the FIFO, socket or device `p`. Answers `Attr` of it.
    #[allow(clippy::too_many_arguments)]
    fn mknod(
        &mut self,
        p: &str,
        kind: FileType,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
        time_ms: i64,
    ) -> Result<ApplyResult, NsError> {
        if matches!(kind, FileType::File | FileType::Directory | FileType::Symlink) {
            return Err(ns(ErrorCode::InvalidArgument, "mknod makes FIFOs, sockets and devices only"));
        }
        let (parent, name) = self.new_name(p)?;
        let id = self.next_inode();
        let mut attr = Attr::new(id, kind, mode, uid, gid, time_ms);
        attr.rdev = rdev;
        let rec = InodeRecord { attr, blocks: vec![], ufs: None };
        self.add_child(parent, name, &rec, time_ms);
        Ok(ApplyResult::Attr(rec.attr))
    }

    /// `Link`: adds the name `link` for the inode at `target` (not a
    /// directory). Answers `Attr` of the inode.
    fn link(&mut self, target: &str, link: &str, time_ms: i64) -> Result<ApplyResult, NsError> {
        let mut rec = self.ns.resolve(target)?;
        if rec.attr.file_type == FileType::Directory {
            return Err(ns(ErrorCode::PermissionDenied, format!("{target} is a directory: no hard links")));
        }
        let (parent, name) = self.new_name(link)?;
        rec.attr.nlink += 1;
        rec.attr.ctime_ms = time_ms;
        self.add_child(parent, name, &rec, time_ms);
        Ok(ApplyResult::Attr(rec.attr))
    }

    /// `CreateDetached`: makes an incomplete file with no name. Answers
    /// `Created` (nothing freed).
    fn create_detached(
        &mut self,
        mode: u32,
        uid: u32,
        gid: u32,
        block_size: u64,
        time_ms: i64,
    ) -> Result<ApplyResult, NsError> {
        let id = self.next_inode();
        let mut attr = Attr::new(id, FileType::File, mode, uid, gid, time_ms);
        attr.block_size = block_size;
        attr.nlink = 0;
        let rec = InodeRecord { attr, blocks: vec![], ufs: None };
        self.put_inode(&rec);
        Ok(ApplyResult::Created { attr: rec.attr, freed: vec![] })
    }

    /// `SwapContent`: gives file `to` the content of the complete, detached
    /// file `from` (sealed first at `length` if given), which disappears.
    /// Answers `Freed` with `to`'s old blocks.
    fn swap_content(
        &mut self,
        from: InodeId,
        to: InodeId,
        length: Option<u64>,
        time_ms: i64,
    ) -> Result<ApplyResult, NsError> {
        let mut src = self.record(from)?;
        let mut dst = self.record(to)?;
        if src.attr.file_type != FileType::File || dst.attr.file_type != FileType::File {
            return Err(ns(ErrorCode::IsADirectory, "content can only move between files"));
        }
        if let (false, Some(l)) = (src.attr.complete, length) {
            if !length_fits(src.blocks.len() as u64, src.attr.block_size, l) {
                return Err(ns(ErrorCode::InvalidArgument, format!("length {l} does not fit inode {from}'s blocks")));
            }
            src.attr.size = l;
            src.attr.complete = true;
        }
        if !src.attr.complete || src.attr.nlink != 0 || from == to {
            return Err(ns(ErrorCode::InvalidState, format!("inode {from} is not a complete detached file")));
        }
        let freed = dst.blocks.clone();
        self.drop_inline(&dst);
        if is_inline(&src.attr, &src.blocks) {
            // Inline content moves with the rest.
            if let Some(data) = self.ns.inline(from)? {
                self.batch.put_cf(handle(&self.ns.db, cf::INLINE), to.to_be_bytes(), data);
            }
            self.drop_inline(&src);
        }
        self.unmap_blocks(&freed);
        self.map_blocks(&src.blocks, to);
        dst.blocks = src.blocks.clone();
        dst.ufs = None; // new content: not in the UFS yet
        dst.attr.size = src.attr.size;
        dst.attr.block_size = src.attr.block_size;
        dst.attr.complete = true;
        dst.attr.mtime_ms = time_ms;
        dst.attr.ctime_ms = time_ms;
        self.put_inode(&dst);
        let hi = handle(&self.ns.db, cf::INODES);
        self.batch.delete_cf(hi, from.to_be_bytes());
        Ok(ApplyResult::Freed { blocks: freed })
    }

    /// `Symlink`: makes the symbolic link `link` to `target`. Answers `Attr`
    /// of the link.
    fn symlink(&mut self, target: &str, link: &str, uid: u32, gid: u32, time_ms: i64) -> Result<ApplyResult, NsError> {
        if target.is_empty() || target.len() > path::MAX_PATH_BYTES || target.contains('\0') {
            return Err(ns(ErrorCode::InvalidArgument, "symlink target must be 1..4096 bytes without NUL"));
        }
        let (parent, name) = self.new_name(link)?;
        let id = self.next_inode();
        let mut attr = Attr::new(id, FileType::Symlink, 0o777, uid, gid, time_ms);
        attr.size = target.len() as u64;
        attr.symlink_target = Some(target.to_owned());
        let rec = InodeRecord { attr, blocks: vec![], ufs: None };
        self.add_child(parent, name, &rec, time_ms);
        Ok(ApplyResult::Attr(rec.attr))
    }

    /// `WriteInline`: makes `data` the whole content of file `inode`, kept
    /// inline, with `attrs` applied after. Answers `Replaced` with the
    /// blocks it had.
    fn write_inline_at(
        &mut self,
        inode: InodeId,
        data: &[u8],
        attrs: &SetAttrs,
        time_ms: i64,
    ) -> Result<ApplyResult, NsError> {
        let mut rec = self.file(inode)?;
        let freed = self.write_inline(&mut rec, data, attrs, time_ms)?;
        Ok(ApplyResult::Replaced { attr: rec.attr, freed })
    }

    /// `SetXattr`: sets (`value` Some) or removes extended attribute `name`
    /// of `p`; `flags` 1 creates only, 2 replaces only. Answers `Done`.
    fn set_xattr(
        &mut self,
        p: &str,
        name: &str,
        value: Option<&[u8]>,
        flags: u32,
        time_ms: i64,
    ) -> Result<ApplyResult, NsError> {
        if name.is_empty() || name.len() > 255 || value.is_some_and(|v| v.len() > 64 * 1024) {
            return Err(ns(ErrorCode::InvalidArgument, "xattr names are 1..255 bytes, values at most 64 KiB"));
        }
        let mut rec = self.ns.resolve(p)?;
        let h = handle(&self.ns.db, cf::XATTRS);
        let key = [&rec.attr.inode.to_be_bytes()[..], name.as_bytes()].concat();
        let exists = self.ns.db.get_cf(h, &key)?.is_some();
        match (value, exists) {
            (Some(_), true) if flags & 1 != 0 => {
                return Err(ns(ErrorCode::AlreadyExists, format!("{p} already has {name}")))
            }
            (_, false) if value.is_none() || flags & 2 != 0 => {
                return Err(ns(ErrorCode::NoAttribute, format!("{p} has no {name}")))
            }
            (Some(v), _) => self.batch.put_cf(h, &key, v),
            (None, _) => self.batch.delete_cf(h, &key),
        }
        rec.attr.ctime_ms = time_ms;
        self.put_inode(&rec);
        Ok(ApplyResult::Done)
    }

    /// `Unmount`: removes the mount at `p` and its subtree (the UFS is
    /// untouched). Answers `Freed` with the subtree's cached blocks.
    fn unmount(&mut self, p: &str, time_ms: i64) -> Result<ApplyResult, NsError> {
        let meta = handle(&self.ns.db, cf::SM_META);
        let key = mount_key(p);
        if self.ns.db.get_cf(meta, &key)?.is_none() {
            return Err(ns(ErrorCode::NotFound, format!("nothing is mounted at {p}")));
        }
        let (parent, name) = self.parent_of(p)?;
        let mut freed = Vec::new();
        if let Some(rec) = self.child_record(parent.attr.inode, name)? {
            self.delete_edge(parent.attr.inode, name);
            freed = self.drop_tree(&rec, time_ms)?;
            self.adjust_dir(parent, -1, time_ms);
        }
        self.batch.delete_cf(meta, key);
        Ok(ApplyResult::Freed { blocks: freed })
    }

    /// `ForgetClients`: drops the `batch_seen` rows last written before
    /// `before_ms` (rows of earlier builds carry no time: dropped too).
    fn forget_clients(&mut self, before_ms: i64) -> Result<ApplyResult, NsError> {
        let meta = handle(&self.ns.db, cf::SM_META);
        for (key, seen) in self.ns.clients_seen()? {
            if seen.time_ms < before_ms {
                self.batch.delete_cf(meta, key);
            }
        }
        Ok(ApplyResult::Done)
    }

    /// `Persisted`: marks file `inode` as in the UFS as `fingerprint`,
    /// refused unless it is complete and still made of exactly `blocks`.
    /// Answers `Done`.
    fn persisted(
        &mut self,
        inode: InodeId,
        blocks: &[BlockId],
        fingerprint: &Fingerprint,
    ) -> Result<ApplyResult, NsError> {
        let mut rec = self.record(inode)?;
        if rec.blocks != blocks || !rec.attr.complete {
            return Err(ns(ErrorCode::InvalidState, format!("inode {inode} changed while it was persisted")));
        }
        rec.ufs = Some(UfsMeta::file(fingerprint.clone()));
        self.put_inode(&rec);
        Ok(ApplyResult::Done)
    }

    /// `SetPin`: sets the pinned flag of `p` and of everything below it.
    /// Answers `Attr` of `p`.
    fn set_pin(&mut self, p: &str, pinned: bool) -> Result<ApplyResult, NsError> {
        self.set_in_tree(p, |a| {
            let changed = a.pinned != pinned;
            a.pinned = pinned;
            changed
        })
    }

    /// `SetTtl`: sets (Some, longer than 0) or clears the TTL of `p` and of
    /// everything below it. Answers `Attr` of `p`.
    fn set_ttl(&mut self, p: &str, ttl: Option<FileTtl>) -> Result<ApplyResult, NsError> {
        if ttl.is_some_and(|t| t.ttl_ms == 0) {
            return Err(ns(ErrorCode::InvalidArgument, "a TTL must be longer than 0"));
        }
        if ttl.is_some() {
            self.batch.put_cf(handle(&self.ns.db, cf::SM_META), TTL_USED, [1u8]);
        }
        self.set_in_tree(p, |a| {
            let changed = a.ttl != ttl;
            a.ttl = ttl;
            changed
        })
    }

    /// `SetReplicas`: sets the replica counts of `p` and, with
    /// `recursive`, of everything below it. Answers `Attr` of `p`.
    fn set_replicas(&mut self, p: &str, replicas: Replicas, recursive: bool) -> Result<ApplyResult, NsError> {
        if replicas.min > MAX_REPLICAS || replicas.max > MAX_REPLICAS {
            return Err(ns(ErrorCode::InvalidArgument, format!("at most {MAX_REPLICAS} copies")));
        }
        if replicas.max != 0 && replicas.max < replicas.min {
            return Err(ns(ErrorCode::InvalidArgument, "the maximum is below the minimum"));
        }
        if !recursive {
            let mut rec = self.ns.resolve(p)?;
            rec.attr.replicas = replicas;
            self.put_inode(&rec);
            return Ok(ApplyResult::Attr(rec.attr));
        }
        self.set_in_tree(p, |a| {
            let changed = a.replicas != replicas;
            a.replicas = replicas;
            changed
        })
    }

    /// `UfsIntent`: records that the leader is about to do `op` in a UFS,
    /// until the `UfsDone` of `id`. Answers `Done`.
    fn ufs_intent(&mut self, id: u64, op: &UfsOp, time_ms: i64) -> Result<ApplyResult, NsError> {
        self.batch.put_cf(handle(&self.ns.db, cf::SM_META), intent_key(id), encode(&(op, time_ms)));
        Ok(ApplyResult::Done)
    }

    /// The parent directory of `p` and `p`'s last name.
    fn parent_of<'p>(&self, p: &'p str) -> Result<(InodeRecord, &'p str), NsError> {
        let comps = path::components(p)?;
        self.ns.resolve_parent(&comps, p)
    }

    /// Refuses `p`, named `name` in `parent`, if it exists.
    fn ensure_free(&self, parent: &InodeRecord, name: &str, p: &str) -> Result<(), NsError> {
        if self.ns.child(parent.attr.inode, name)?.is_some() {
            return Err(ns(ErrorCode::AlreadyExists, format!("{p} already exists")));
        }
        Ok(())
    }

    /// The parent directory of `p`, which must not exist yet, and its name.
    fn new_name<'p>(&self, p: &'p str) -> Result<(InodeRecord, &'p str), NsError> {
        let (parent, name) = self.parent_of(p)?;
        self.ensure_free(&parent, name, p)?;
        Ok((parent, name))
    }

    /// The record named `name` in directory `parent`, if there is one.
    fn child_record(&self, parent: InodeId, name: &str) -> Result<Option<InodeRecord>, NsError> {
        match self.ns.child(parent, name)? {
            Some(id) => Ok(Some(self.ns.inode(id)?.ok_or_else(|| ns(ErrorCode::Internal, "dangling edge"))?)),
            None => Ok(None),
        }
    }

    /// Names `rec` (new, or a new link to it) `name` in directory `parent`,
    /// whose times (and link count, for a directory `rec`) follow.
    fn add_child(&mut self, parent: InodeRecord, name: &str, rec: &InodeRecord, time_ms: i64) {
        self.put_edge(parent.attr.inode, name, rec.attr.inode);
        self.put_inode(rec);
        let subdir = i32::from(rec.attr.file_type == FileType::Directory);
        self.adjust_dir(parent, subdir, time_ms);
    }

    /// Inode `inode`'s record.
    fn record(&self, inode: InodeId) -> Result<InodeRecord, NsError> {
        self.ns.inode(inode)?.ok_or_else(|| ns(ErrorCode::NotFound, format!("inode {inode} does not exist")))
    }

    /// Applies `set` to the attributes of `p` and of every inode below it,
    /// writing those it changed; answers `p`'s attributes (pin, TTL).
    fn set_in_tree(&mut self, p: &str, set: impl Fn(&mut Attr) -> bool) -> Result<ApplyResult, NsError> {
        let mut top = None;
        for (_, mut rec) in self.ns.walk(p)? {
            if set(&mut rec.attr) {
                self.put_inode(&rec);
            }
            top.get_or_insert(rec.attr); // `walk` yields `p` first
        }
        Ok(ApplyResult::Attr(top.ok_or_else(|| ns(ErrorCode::Internal, "walk yielded nothing"))?))
    }

    /// Removes `p`: a directory only with `recursive` Some (and non-empty
    /// ones only when it is true); None is unlink(2), refusing directories.
    /// Returns the removed inode's attributes and the blocks freed.
    fn delete(&mut self, p: &str, recursive: Option<bool>, time_ms: i64) -> Result<(Attr, Vec<BlockId>), NsError> {
        let comps = path::components(p)?;
        let (parent, name) = self.ns.resolve_parent(&comps, p)?;
        let id = self
            .ns
            .child(parent.attr.inode, name)?
            .ok_or_else(|| ns(ErrorCode::NotFound, format!("{p} does not exist")))?;
        let rec = self.ns.inode(id)?.ok_or_else(|| ns(ErrorCode::Internal, "dangling edge"))?;
        let is_dir = rec.attr.file_type == FileType::Directory;
        match recursive {
            None if is_dir => return Err(ns(ErrorCode::IsADirectory, format!("{p} is a directory"))),
            Some(false) if is_dir && self.ns.has_children(id)? => {
                return Err(ns(ErrorCode::DirectoryNotEmpty, format!("{p} is not empty")))
            }
            _ => {}
        }
        self.delete_edge(parent.attr.inode, name);
        let freed = self.drop_tree(&rec, time_ms)?;
        self.adjust_dir(parent, if is_dir { -1 } else { 0 }, time_ms);
        Ok((rec.attr, freed))
    }

    fn mount(&mut self, info: &MountInfo, time_ms: i64) -> Result<ApplyResult, NsError> {
        let comps = path::components(&info.path)?;
        if comps.is_empty() {
            return Err(ns(ErrorCode::InvalidArgument, "a UFS cannot be mounted at /"));
        }
        for m in self.ns.mounts()?.iter() {
            if ufs::is_under(&info.path, &m.path) || ufs::is_under(&m.path, &info.path) {
                return Err(ns(ErrorCode::AlreadyExists, format!("{} overlaps the mount at {}", info.path, m.path)));
            }
        }
        let mut rec = match self.ns.resolve_components(&comps) {
            Ok(rec) => {
                if rec.attr.file_type != FileType::Directory {
                    return Err(ns(ErrorCode::NotADirectory, format!("{} is not a directory", info.path)));
                }
                if self.ns.has_children(rec.attr.inode)? {
                    return Err(ns(ErrorCode::DirectoryNotEmpty, format!("{} is not empty", info.path)));
                }
                rec
            }
            Err(NsError::Ns(e)) if e.code == ErrorCode::NotFound => {
                let mkdir = JournalEntry::Mkdir {
                    path: info.path.clone(),
                    recursive: true,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    time_ms,
                };
                match self.apply(&mkdir)? {
                    ApplyResult::Attr(attr) => InodeRecord { attr, blocks: vec![], ufs: None },
                    other => return Err(ns(ErrorCode::Internal, format!("mkdir for the mount gave {other:?}"))),
                }
            }
            Err(e) => return Err(e),
        };
        rec.ufs = Some(UfsMeta::dir());
        self.put_inode(&rec);
        self.batch.put_cf(handle(&self.ns.db, cf::SM_META), mount_key(&info.path), encode(info));
        Ok(ApplyResult::Attr(rec.attr))
    }

    /// New block ids for a file of `size` bytes, mapped to `inode`.
    fn alloc_blocks(&mut self, inode: InodeId, size: u64, bs: u64) -> Vec<BlockId> {
        let blocks: Vec<BlockId> = (0..size.div_ceil(bs)).map(|_| self.next_block()).collect();
        self.map_blocks(&blocks, inode);
        blocks
    }

    /// Whether a subtree holds anything not in the UFS (files written here
    /// and not persisted, directories made here).
    fn has_unpersisted(&self, rec: &InodeRecord) -> Result<bool, NsError> {
        let mut stack = vec![rec.clone()];
        while let Some(cur) = stack.pop() {
            if !cur.is_persisted() {
                return Ok(true);
            }
            if cur.attr.file_type == FileType::Directory {
                for (_, child) in self.ns.children(cur.attr.inode)? {
                    if let Some(c) = self.ns.inode(child)? {
                        stack.push(c);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Reconciles the children of `dir` whose names are in `range` (after
    /// the first, up to and including the second; None: unbounded) with
    /// `entries`; `finish` marks the directory synced.
    fn ufs_sync(
        &mut self,
        dir: &str,
        entries: &[UfsEntry],
        range: (Option<&str>, Option<&str>),
        finish: bool,
        time_ms: i64,
    ) -> Result<ApplyResult, NsError> {
        let m = self
            .ns
            .mount_of(dir)?
            .ok_or_else(|| ns(ErrorCode::InvalidArgument, format!("{dir} is not under a mount")))?;
        let mut d = self.ns.resolve(dir)?;
        if d.attr.file_type != FileType::Directory {
            return Err(ns(ErrorCode::NotADirectory, format!("{dir} is not a directory")));
        }
        let bs = m.options.block_size;
        let existing: std::collections::HashMap<String, InodeId> =
            self.ns.children_in(d.attr.inode, range)?.into_iter().collect();
        let listed: std::collections::HashSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let mut freed = Vec::new();
        let mut subdirs = 0i32;
        let mut changed = false;
        for e in entries {
            let valid = !e.name.is_empty()
                && e.name != "."
                && e.name != ".."
                && !e.name.contains('/')
                && !e.name.contains('\0')
                && e.name.len() <= path::MAX_NAME_BYTES;
            if !valid {
                continue;
            }
            let fp = &e.fingerprint;
            let mtime = if fp.mtime_ms > 0 { fp.mtime_ms } else { time_ms };
            match existing.get(&e.name) {
                None => {
                    let id = self.next_inode();
                    let rec = if e.is_dir {
                        subdirs += 1;
                        let attr = Attr::new(id, FileType::Directory, 0o755, 0, 0, time_ms);
                        InodeRecord { attr, blocks: vec![], ufs: Some(UfsMeta::dir()) }
                    } else {
                        let mut attr = Attr::new(id, FileType::File, 0o644, 0, 0, mtime);
                        attr.size = fp.size;
                        attr.block_size = bs;
                        attr.complete = true;
                        let blocks = self.alloc_blocks(id, fp.size, bs);
                        InodeRecord { attr, blocks, ufs: Some(UfsMeta::file(fp.clone())) }
                    };
                    let mut rec = rec;
                    rec.attr.inherit(&d.attr);
                    self.put_edge(d.attr.inode, &e.name, id);
                    self.put_inode(&rec);
                    changed = true;
                }
                Some(id) => {
                    let Some(mut rec) = self.ns.inode(*id)? else { continue };
                    let stale = rec.attr.file_type == FileType::File
                        && !e.is_dir
                        && rec.ufs.as_ref().is_some_and(|u| u.persisted && u.fingerprint != *fp);
                    if stale {
                        // Changed behind Strata's back: drop the cached blocks.
                        self.unmap_blocks(&rec.blocks);
                        freed.extend(rec.blocks.iter().copied());
                        let bsz = if rec.attr.block_size > 0 { rec.attr.block_size } else { bs };
                        rec.blocks = self.alloc_blocks(rec.attr.inode, fp.size, bsz);
                        rec.attr.size = fp.size;
                        rec.attr.mtime_ms = mtime;
                        rec.attr.ctime_ms = time_ms;
                        rec.ufs = Some(UfsMeta::file(fp.clone()));
                        self.put_inode(&rec);
                    }
                }
            }
        }
        for (name, id) in &existing {
            if listed.contains(name.as_str()) {
                continue;
            }
            let Some(rec) = self.ns.inode(*id)? else { continue };
            // Gone from the UFS: drop it unless it holds data the UFS never had.
            if rec.is_persisted() && !self.has_unpersisted(&rec)? {
                self.delete_edge(d.attr.inode, name);
                freed.extend(self.drop_tree(&rec, time_ms)?);
                if rec.attr.file_type == FileType::Directory {
                    subdirs -= 1;
                }
                changed = true;
            }
        }
        if finish {
            d.ufs = Some(UfsMeta { synced_ms: time_ms, ..UfsMeta::dir() });
        }
        if changed {
            self.adjust_dir(d, subdirs, time_ms);
        } else {
            self.put_inode(&d);
        }
        Ok(ApplyResult::Freed { blocks: freed })
    }

    /// File `inode`'s record.
    fn file(&self, inode: InodeId) -> Result<InodeRecord, NsError> {
        let rec = self.record(inode)?;
        if rec.attr.file_type != FileType::File {
            return Err(ns(ErrorCode::IsADirectory, format!("inode {inode} is not a file")));
        }
        Ok(rec)
    }

    /// Incomplete file `inode`'s record.
    fn open_for_write(&self, inode: InodeId) -> Result<InodeRecord, NsError> {
        let rec = self.file(inode)?;
        if rec.attr.complete {
            return Err(ns(ErrorCode::InvalidState, format!("inode {inode} is already complete")));
        }
        Ok(rec)
    }

    fn rename(&mut self, src: &str, dst: &str, time_ms: i64) -> Result<ApplyResult, NsError> {
        let s = path::components(src)?;
        let d = path::components(dst)?;
        if s.is_empty() || d.is_empty() {
            return Err(ns(ErrorCode::InvalidArgument, "cannot rename the root directory"));
        }
        let (sparent, sname) = self.ns.resolve_parent(&s, src)?;
        let sid = self
            .ns
            .child(sparent.attr.inode, sname)?
            .ok_or_else(|| ns(ErrorCode::NotFound, format!("{src} does not exist")))?;
        let mut srec = self.ns.inode(sid)?.ok_or_else(|| ns(ErrorCode::Internal, "dangling edge"))?;
        if s == d {
            return Ok(ApplyResult::Freed { blocks: vec![] });
        }
        if srec.attr.file_type == FileType::Directory && d.len() > s.len() && d[..s.len()] == s[..] {
            return Err(ns(ErrorCode::InvalidArgument, format!("cannot move {src} into itself ({dst})")));
        }
        let (dparent, dname) = self.ns.resolve_parent(&d, dst)?;
        let mut freed = Vec::new();
        let mut replaced_dir = false;
        if let Some(did) = self.ns.child(dparent.attr.inode, dname)? {
            let drec = self.ns.inode(did)?.ok_or_else(|| ns(ErrorCode::Internal, "dangling edge"))?;
            match (srec.attr.file_type == FileType::Directory, drec.attr.file_type == FileType::Directory) {
                (true, true) => {
                    if self.ns.has_children(did)? {
                        return Err(ns(ErrorCode::DirectoryNotEmpty, format!("{dst} is not empty")));
                    }
                }
                (true, false) => return Err(ns(ErrorCode::NotADirectory, format!("{dst} is not a directory"))),
                (false, true) => return Err(ns(ErrorCode::IsADirectory, format!("{dst} is a directory"))),
                (false, false) => {}
            }
            if drec.attr.inode == sid {
                // Two names of one inode: rename does nothing (POSIX).
                return Ok(ApplyResult::Freed { blocks: vec![] });
            }
            replaced_dir = drec.attr.file_type == FileType::Directory;
            freed = self.unlink_inode(&drec, time_ms);
        }
        self.delete_edge(sparent.attr.inode, sname);
        self.put_edge(dparent.attr.inode, dname, sid);
        srec.attr.ctime_ms = time_ms;
        self.put_inode(&srec);
        // Link counts: a moved directory leaves its old parent and joins the
        // new one; a replaced empty directory leaves the new parent.
        let moved_dir = i32::from(srec.attr.file_type == FileType::Directory);
        let replaced_dir = i32::from(replaced_dir);
        if sparent.attr.inode == dparent.attr.inode {
            self.adjust_dir(sparent, -replaced_dir, time_ms);
        } else {
            self.adjust_dir(sparent, -moved_dir, time_ms);
            self.adjust_dir(dparent, moved_dir - replaced_dir, time_ms);
        }
        Ok(ApplyResult::Freed { blocks: freed })
    }
}

/// Takes `count` numbers from the counter `next`; the first of them.
fn reserve(next: &mut u64, count: u64, what: &str) -> Result<u64, NsError> {
    let first = *next;
    *next = first.checked_add(count).ok_or_else(|| ns(ErrorCode::InvalidArgument, format!("{what} exhausted")))?;
    Ok(first)
}
