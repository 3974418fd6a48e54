//! UFS operations recorded in the journal before they are done (intent →
//! UFS operation → completion), and the leader's re-drive of those a
//! crashed or deposed leader left unfinished.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_protocol::journal::{ApplyResult, JournalEntry, UfsOp};
use strata_protocol::messages::FileType;
use strata_protocol::ufs::{self as pufs, MountInfo};
use strata_protocol::{now_ms, ErrorCode, ErrorInfo};

use super::super::namespace::UfsIntent;
use super::super::namespace_actor::NamespaceMsg;
use super::{in_ufs, Mounts, MAX_BACKOFF};

/// A UFS operation recorded in the journal (`UfsIntent`) and being carried
/// out by the gateway; dropping it (done, failed or cancelled) hands the
/// intent over to the MountSyncer's re-drive if it is still recorded.
pub struct Pending {
    id: u64,
    op: UfsOp,
    in_flight: Arc<Mutex<HashSet<u64>>>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.in_flight.lock().remove(&self.id);
    }
}

/// What the UFS side of a rename left to do: the intent to complete and the
/// file to re-fingerprint afterwards (a copy on S3 changes it).
#[derive(Default)]
pub struct RenameWork {
    /// The intent to complete with [`Mounts::journal_change`].
    pub pending: Option<Pending>,
    /// The mount and new path of a renamed file, for [`Mounts::after_rename`].
    pub refresh: Option<(MountInfo, String)>,
}

impl Mounts {
    /// Test hook (fault injection, see `nodes/tests/t70_ufs.rs`): with
    /// `STRATA_FAULT=crash-after-ufs-op` in its environment the master aborts
    /// right after a delete's or rename's UFS operation, before the namespace
    /// change is journaled. Never set it outside tests.
    pub(super) fn fault_point(&self) {
        if self.faults.crash_after_ufs_op {
            eprintln!("STRATA_FAULT=crash-after-ufs-op: aborting after the UFS operation");
            std::process::abort();
        }
    }

    /// Journals the intent to do `op` in the UFS (before doing it).
    pub(super) async fn begin(&self, op: UfsOp) -> Result<Pending, ErrorInfo> {
        let id = rand::random::<u64>();
        self.in_flight.lock().insert(id);
        let p = Pending { id, op, in_flight: self.in_flight.clone() };
        self.journal.propose(JournalEntry::UfsIntent { id, op: p.op.clone(), time_ms: now_ms() }).await?;
        Ok(p)
    }

    /// After `ufs_op` of intent `p` ran: on success passes the fault hook and
    /// hands `p` back; on failure forgets the intent (the namespace is left as it
    /// is, as before intents) and answers the UFS error.
    pub(super) async fn after_ufs_op(&self, p: Pending, r: Result<(), ErrorInfo>) -> Result<Pending, ErrorInfo> {
        match r {
            Ok(()) => {
                self.fault_point();
                Ok(p)
            }
            Err(e) => {
                let done = JournalEntry::UfsDone { id: p.id, op: None, time_ms: now_ms() };
                if let Err(e2) = self.journal.propose(done).await {
                    tracing::warn!(id = p.id, error = %e2, "abandoning a UFS intent failed; the leader re-drives it");
                }
                Err(e)
            }
        }
    }

    /// Journals the namespace change `entry` after its UFS operation: with a
    /// pending intent, as its completion (`UfsDone`, which also forgets the
    /// intent) — otherwise (no mount, or nothing in the UFS) as `entry` itself.
    pub async fn journal_change(
        &self,
        pending: Option<Pending>,
        entry: JournalEntry,
    ) -> Result<ApplyResult, ErrorInfo> {
        match pending {
            None => self.journal.propose(entry).await,
            Some(p) => {
                self.journal
                    .propose(JournalEntry::UfsDone { id: p.id, op: Some(p.op.clone()), time_ms: now_ms() })
                    .await
            }
        }
    }

    /// Deletes the UFS counterpart of `path` before the delete is journaled
    /// (`unlink`: the namespace change will be an `Unlink`). When the UFS is
    /// touched, the intent is journaled first and returned: journal the change
    /// with [`journal_change`].
    pub async fn before_delete(&self, path: &str, recursive: bool, unlink: bool) -> Result<Option<Pending>, ErrorInfo> {
        let Some(m) = self.mount_of(path).await? else { return Ok(None) };
        if path == m.path {
            return Err(ErrorInfo::new(ErrorCode::InvalidArgument, format!("{path} is a mount point: unmount it")));
        }
        self.ensure_synced(path, true).await?;
        if let Some(rec) = self.lookup(path).await? {
            let is_dir = rec.attr.file_type == FileType::Directory;
            if is_dir && !recursive && self.non_empty(path).await? {
                return Err(ErrorInfo::new(ErrorCode::DirectoryNotEmpty, format!("{path} is not empty")));
            }
            if in_ufs(&rec) {
                let op = if unlink {
                    UfsOp::Unlink { path: path.to_string() }
                } else {
                    UfsOp::Delete { path: path.to_string(), recursive }
                };
                let p = self.begin(op).await?;
                let r = self.ufs.remove(&m.spec, &pufs::key_of(path, &m.path), is_dir).await;
                return self.after_ufs_op(p, r).await.map(Some);
            }
        }
        Ok(None)
    }

    /// Renames the UFS counterpart of `src` before the rename is journaled.
    pub async fn before_rename(&self, src: &str, dst: &str) -> Result<RenameWork, ErrorInfo> {
        let (ms, md) = (self.mount_of(src).await?, self.mount_of(dst).await?);
        let m = match (ms, md) {
            (None, None) => return Ok(RenameWork::default()),
            (Some(a), Some(b)) if a.path == b.path => a,
            _ => {
                return Err(ErrorInfo::new(
                    ErrorCode::CrossMount,
                    format!("{src} and {dst} are not in the same mount: copy instead"),
                ))
            }
        };
        if src == m.path || dst == m.path {
            return Err(ErrorInfo::new(ErrorCode::InvalidArgument, "a mount point cannot be renamed"));
        }
        self.ensure_synced(src, false).await?;
        self.ensure_synced(dst, false).await?;
        let Some(rec) = self.lookup(src).await? else { return Ok(RenameWork::default()) };
        let (skey, dkey) = (pufs::key_of(src, &m.path), pufs::key_of(dst, &m.path));
        let is_dir = rec.attr.file_type == FileType::Directory;
        if let Some(old) = self.lookup(dst).await? {
            if old.attr.file_type == FileType::Directory && self.non_empty(dst).await? {
                return Err(ErrorInfo::new(ErrorCode::DirectoryNotEmpty, format!("{dst} is not empty")));
            }
        }
        if in_ufs(&rec) {
            let p = self.begin(UfsOp::Rename { src: src.to_string(), dst: dst.to_string() }).await?;
            let r = async {
                if let Some(old) = self.lookup(dst).await? {
                    if in_ufs(&old) && old.attr.file_type != FileType::Directory {
                        self.ufs.remove(&m.spec, &dkey, false).await?;
                    }
                }
                self.ufs.rename(&m.spec, &skey, &dkey, is_dir).await
            }
            .await;
            let p = self.after_ufs_op(p, r).await?;
            let refresh = (!is_dir).then(|| (m, dst.to_string()));
            return Ok(RenameWork { pending: Some(p), refresh });
        }
        Ok(RenameWork::default())
    }

    /// Frees what an applied delete, unlink or rename released.
    pub(super) fn free_applied(&self, r: ApplyResult) {
        match r {
            ApplyResult::Freed { blocks } | ApplyResult::Replaced { freed: blocks, .. } => self.workers.free(blocks),
            _ => {}
        }
    }

    /// Finishes a recorded UFS operation that no gateway is carrying out (its
    /// leader crashed or lost leadership between the intent and the
    /// completion), idempotently: the UFS side is brought to the operation's
    /// result (what is already done is not redone; a missing object is fine),
    /// then the namespace change is journaled if it still applies, with the
    /// completion. Any UFS error leaves the intent for a later retry.
    pub(super) async fn redrive(&self, intent: &UfsIntent) -> Result<(), ErrorInfo> {
        let id = intent.id;
        let done = |op: Option<UfsOp>| JournalEntry::UfsDone { id, op, time_ms: now_ms() };
        let anchor = match &intent.op {
            UfsOp::Delete { path, .. } | UfsOp::Unlink { path } => path.clone(),
            UfsOp::Rename { src, .. } => src.clone(),
        };
        let Some(m) = self.mount_of(&anchor).await? else {
            // Unmounted since: nothing to do in a UFS Strata no longer knows.
            self.journal.propose(done(None)).await?;
            return Ok(());
        };
        match &intent.op {
            UfsOp::Delete { path, .. } | UfsOp::Unlink { path } => {
                let rec = self.lookup(path).await?;
                let key = pufs::key_of(path, &m.path);
                match &rec {
                    Some(r) => self.ufs.remove(&m.spec, &key, r.attr.file_type == FileType::Directory).await?,
                    None => {
                        self.ufs.remove(&m.spec, &key, false).await?;
                        if matches!(intent.op, UfsOp::Delete { recursive: true, .. }) {
                            self.ufs.remove(&m.spec, &key, true).await?;
                        }
                    }
                }
                let r = self.journal.propose(done(rec.is_some().then(|| intent.op.clone()))).await;
                tracing::info!(id, path = %path, result = ?r, "re-drove a recorded UFS delete");
                if let Ok(r) = r {
                    self.free_applied(r);
                }
            }
            UfsOp::Rename { src, dst } => {
                if self.mount_of(dst).await?.is_none_or(|d| d.path != m.path) {
                    self.journal.propose(done(None)).await?;
                    return Ok(());
                }
                let (skey, dkey) = (pufs::key_of(src, &m.path), pufs::key_of(dst, &m.path));
                let rec = match self.lookup(src).await? {
                    Some(r) => Some(r),
                    None => self.lookup(dst).await?,
                };
                let is_dir = rec.as_ref().is_some_and(|r| r.attr.file_type == FileType::Directory);
                let step = if is_dir {
                    if self.ufs.dir_exists(&m.spec, &skey).await? {
                        self.ufs.rename(&m.spec, &skey, &dkey, true).await?;
                        "directory rename redone"
                    } else {
                        "directory already renamed"
                    }
                } else {
                    match (self.ufs.stat(&m.spec, &skey).await?, self.ufs.stat(&m.spec, &dkey).await?) {
                        (Some(_), None) => {
                            self.ufs.rename(&m.spec, &skey, &dkey, false).await?;
                            "rename redone"
                        }
                        (Some(s), Some(d)) if s.size == d.size && s.etag.is_some() && s.etag == d.etag => {
                            // A copy + delete rename (S3) stopped after the copy: finish the delete.
                            self.ufs.remove(&m.spec, &skey, false).await?;
                            "copied, source deleted"
                        }
                        (Some(_), Some(_)) => {
                            // Nothing was done yet (the old target is still there): do it all.
                            self.ufs.remove(&m.spec, &dkey, false).await?;
                            self.ufs.rename(&m.spec, &skey, &dkey, false).await?;
                            "target replaced, rename redone"
                        }
                        _ => "already renamed",
                    }
                };
                let apply = self.lookup(src).await?.is_some();
                let r = self.journal.propose(done(apply.then(|| intent.op.clone()))).await;
                tracing::info!(id, src = %src, dst = %dst, ufs = step, result = ?r, "re-drove a recorded UFS rename");
                if let Ok(r) = r {
                    self.free_applied(r);
                    if !is_dir {
                        self.after_rename(&m, dst).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Re-drives every recorded UFS operation this master is not carrying out
    /// itself and that is due (retries back off as the async persists do).
    pub(super) async fn redrive_all(&self, retry: &mut HashMap<u64, (u32, Instant)>) -> Result<(), ErrorInfo> {
        let intents = self.ns.call(NamespaceMsg::UfsIntents).await??;
        retry.retain(|id, _| intents.iter().any(|i| i.id == *id));
        let now = Instant::now();
        for intent in intents {
            if self.in_flight.lock().contains(&intent.id) {
                continue;
            }
            if retry.get(&intent.id).is_some_and(|(_, at)| *at > now) {
                continue;
            }
            if self.redrive_disabled() {
                continue;
            }
            if let Err(e) = self.redrive(&intent).await {
                let (attempts, at) = retry.entry(intent.id).or_insert((0, now));
                *attempts += 1;
                let backoff = Duration::from_millis(200u64 << (*attempts).min(8)).min(MAX_BACKOFF);
                *at = Instant::now() + backoff;
                tracing::warn!(id = intent.id, op = ?intent.op, attempts = *attempts, ?backoff, error = %e,
                    "re-driving a recorded UFS operation failed; retrying");
            }
        }
        Ok(())
    }

    /// Test hook: `STRATA_FAULT=no-ufs-redrive` turns the re-drive off, to
    /// check that the crash test fails without it. Never set it outside tests.
    pub(super) fn redrive_disabled(&self) -> bool {
        self.faults.no_ufs_redrive
    }

    /// After a UFS rename: record the renamed object's new version, so the next
    /// sync does not take it for a change behind Strata's back.
    pub async fn after_rename(&self, m: &MountInfo, dst: &str) {
        let r: Result<(), ErrorInfo> = async {
            let Some(rec) = self.lookup(dst).await? else { return Ok(()) };
            if let Some(fp) = self.ufs.stat(&m.spec, &pufs::key_of(dst, &m.path)).await? {
                let blocks = rec.blocks.clone();
                self.journal
                    .propose(JournalEntry::Persisted {
                        inode: rec.attr.inode,
                        blocks,
                        fingerprint: fp,
                        time_ms: now_ms(),
                    })
                    .await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            tracing::debug!(path = dst, error = %e, "re-fingerprinting a renamed file failed; the next sync reloads it");
        }
    }
}
