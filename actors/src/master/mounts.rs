//! UFS mounts on the master: loading UFS metadata into the namespace (with
//! the mount's sync policy), forwarding namespace changes under a mount to
//! its UFS before they are journaled, persisting files through a worker as
//! their write type says, and the MountSyncer that persists async-through
//! files in the background, with retries and back-off.
//!
//! Every change lands in the namespace as a journal entry (`Mount`,
//! `UfsSync`, `Persisted`, …), so followers and a new leader see the same
//! mount table and persistence state. The master never carries file bytes:
//! a worker reads blocks and writes the UFS object (`DataRequest::Persist`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use strata_protocol::frame::{read_frame, write_frame, FrameKind};
use strata_protocol::journal::{ApplyResult, JournalEntry, UfsOp};
use strata_protocol::messages::{DataRequest, DataResponse, FileType, WorkerAddr};
use strata_protocol::ufs::{self as pufs, Fingerprint, MountInfo, WriteType};
use strata_protocol::{now_ms, ErrorCode, ErrorInfo};
use tokio::io::AsyncWriteExt;

use super::gateway::{free, ns_call, propose, wm_call};
use super::journal;
use super::namespace::{InodeRecord, MountCache, NEVER_SYNCED};
use super::namespace_actor::NamespaceMsg;
use super::workers::{self, BlockList, PlaceRequest, WorkerManagerMsg};
use crate::mesh::Wire;
use crate::ufs;

/// The namespace's mount-table cache, registered by the NamespaceActor.
static TABLE: Mutex<Option<Arc<MountCache>>> = Mutex::new(None);

/// Lets the request path read the mount table from `cache` (held by the
/// namespace, dropped on every applied mount change) instead of asking the
/// NamespaceActor on every request.
pub fn use_cache(cache: Arc<MountCache>) {
    *TABLE.lock() = Some(cache);
}

async fn table() -> Result<Arc<Vec<MountInfo>>, ErrorInfo> {
    let cached = TABLE.lock().as_ref().and_then(|c| c.get());
    match cached {
        Some(t) => Ok(t),
        None => ns_call(NamespaceMsg::Mounts).await?,
    }
}

/// The mount table.
pub async fn mounts() -> Result<Vec<MountInfo>, ErrorInfo> {
    Ok(table().await?.as_ref().clone())
}

/// The mount `path` is under, if any.
pub async fn mount_of(path: &str) -> Result<Option<MountInfo>, ErrorInfo> {
    Ok(table().await?.iter().find(|m| pufs::is_under(path, &m.path)).cloned())
}

/// The inode at `path`, `None` if there is none.
async fn lookup(path: &str) -> Result<Option<InodeRecord>, ErrorInfo> {
    match ns_call(|r| NamespaceMsg::File(path.to_string(), r)).await? {
        Ok(rec) => Ok(Some(rec)),
        Err(e) if e.code == ErrorCode::NotFound || e.code == ErrorCode::NotADirectory => Ok(None),
        Err(e) => Err(e),
    }
}

fn needs_sync(rec: &InodeRecord, interval_ms: i64, now: i64) -> bool {
    let synced = rec.ufs.as_ref().map(|u| u.synced_ms).unwrap_or(NEVER_SYNCED);
    if synced == NEVER_SYNCED {
        return true;
    }
    match interval_ms {
        i if i < 0 => false,
        0 => true,
        i => now.saturating_sub(synced) >= i,
    }
}

/// One sync at a time per directory: concurrent misses wait for it.
fn sync_lock(dir: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS.get_or_init(Default::default).lock();
    if locks.len() > 4096 {
        locks.retain(|_, l| Arc::strong_count(l) > 1);
    }
    locks.entry(dir.to_string()).or_default().clone()
}

/// Brings the namespace up to date with the UFS for an access to `path`:
/// every directory from the mount point down to `path`'s parent (and `path`
/// itself when `list`) is listed from the UFS if the mount's sync policy
/// says it is due. A UFS that cannot be reached leaves already loaded
/// metadata in place (logged) and fails only what was never loaded.
pub async fn ensure_synced(path: &str, list: bool) -> Result<(), ErrorInfo> {
    let Some(m) = mount_of(path).await? else { return Ok(()) };
    let rel = pufs::key_of(path, &m.path);
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let n = if list { comps.len() } else { comps.len().saturating_sub(1) };
    let mut dirs = vec![m.path.clone()];
    for i in 0..n {
        dirs.push(format!("{}/{}", m.path, comps[..=i].join("/")));
    }
    for dir in dirs {
        let Some(rec) = lookup(&dir).await? else { return Ok(()) };
        if rec.attr.file_type != FileType::Directory {
            return Ok(());
        }
        let now = now_ms();
        if !needs_sync(&rec, m.options.sync_interval_ms, now) {
            continue;
        }
        let lock = sync_lock(&dir);
        let _g = lock.lock().await;
        let Some(rec) = lookup(&dir).await? else { return Ok(()) };
        if !needs_sync(&rec, m.options.sync_interval_ms, now) {
            continue; // another access synced it while this one waited
        }
        let entries = match ufs::list_dir(&m.spec, &pufs::key_of(&dir, &m.path)).await {
            Ok(e) => e,
            Err(e) if e.code == ErrorCode::NotFound => Vec::new(),
            Err(e) => {
                let loaded = rec.ufs.as_ref().is_some_and(|u| u.synced_ms != NEVER_SYNCED);
                if loaded {
                    tracing::warn!(dir = %dir, error = %e, "UFS listing failed; serving loaded metadata");
                    continue;
                }
                return Err(e);
            }
        };
        if let ApplyResult::Freed { blocks } = propose(JournalEntry::UfsSync { dir, entries, time_ms: now }).await? {
            free(blocks);
        }
    }
    Ok(())
}

/// Checks that a UFS answers before it is mounted: a bad endpoint,
/// credentials or bucket fail the mount with the backend's error.
pub async fn mount(info: MountInfo) -> Result<(), ErrorInfo> {
    if !(strata_protocol::MIN_BLOCK_SIZE..=strata_protocol::MAX_BLOCK_SIZE).contains(&info.options.block_size) {
        return Err(ErrorInfo::new(ErrorCode::InvalidArgument, "mount block size out of range"));
    }
    ufs::list_dir(&info.spec, "").await?;
    propose(JournalEntry::Mount { info, time_ms: now_ms() }).await.map(|_| ())
}

/// The mount table with secret options hidden.
pub async fn redacted_mounts() -> Result<Vec<MountInfo>, ErrorInfo> {
    let mut ms = mounts().await?;
    for m in &mut ms {
        for (k, v) in &mut m.spec.options {
            if ufs::SECRET_OPTIONS.contains(&k.as_str()) {
                *v = "***".into();
            }
        }
    }
    Ok(ms)
}

/// What the gateway must do in the UFS before journaling a mkdir.
pub async fn before_mkdir(path: &str) -> Result<(), ErrorInfo> {
    if let Some(m) = mount_of(path).await? {
        ensure_synced(path, false).await?;
        ufs::mkdir(&m.spec, &pufs::key_of(path, &m.path)).await?;
    }
    Ok(())
}

/// Whether the inode has a counterpart in the UFS.
fn in_ufs(rec: &InodeRecord) -> bool {
    rec.attr.file_type == FileType::Directory || rec.ufs.as_ref().is_some_and(|u| u.persisted)
}

/// Whether a directory has entries.
async fn non_empty(path: &str) -> Result<bool, ErrorInfo> {
    Ok(!ns_call(|r| NamespaceMsg::List(path.to_string(), r)).await??.is_empty())
}

/// Intents being carried out by this master's gateway right now: the
/// MountSyncer's re-drive leaves them alone.
static IN_FLIGHT: Mutex<Option<std::collections::HashSet<u64>>> = Mutex::new(None);

/// A UFS operation recorded in the journal (`UfsIntent`) and being carried
/// out by the gateway; dropping it (done, failed or cancelled) hands the
/// intent over to the MountSyncer's re-drive if it is still recorded.
pub struct Pending {
    id: u64,
    op: UfsOp,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(s) = IN_FLIGHT.lock().as_mut() {
            s.remove(&self.id);
        }
    }
}

/// Test hook (fault injection, see `nodes/tests/t70_ufs.rs`): with
/// `STRATA_FAULT=crash-after-ufs-op` in its environment the master aborts
/// right after a delete's or rename's UFS operation, before the namespace
/// change is journaled. Never set it outside tests.
fn fault_point() {
    static FAULT: OnceLock<bool> = OnceLock::new();
    if *FAULT.get_or_init(|| std::env::var("STRATA_FAULT").is_ok_and(|v| v == "crash-after-ufs-op")) {
        eprintln!("STRATA_FAULT=crash-after-ufs-op: aborting after the UFS operation");
        std::process::abort();
    }
}

/// Journals the intent to do `op` in the UFS (before doing it).
async fn begin(op: UfsOp) -> Result<Pending, ErrorInfo> {
    let id = rand::random::<u64>();
    IN_FLIGHT.lock().get_or_insert_with(Default::default).insert(id);
    let p = Pending { id, op };
    propose(JournalEntry::UfsIntent { id, op: p.op.clone(), time_ms: now_ms() }).await?;
    Ok(p)
}

/// After `ufs_op` of intent `p` ran: on success passes the fault hook and
/// hands `p` back; on failure forgets the intent (the namespace is left as it
/// is, as before intents) and answers the UFS error.
async fn after_ufs_op(p: Pending, r: Result<(), ErrorInfo>) -> Result<Pending, ErrorInfo> {
    match r {
        Ok(()) => {
            fault_point();
            Ok(p)
        }
        Err(e) => {
            let done = JournalEntry::UfsDone { id: p.id, op: None, time_ms: now_ms() };
            if let Err(e2) = propose(done).await {
                tracing::warn!(id = p.id, error = %e2, "abandoning a UFS intent failed; the leader re-drives it");
            }
            Err(e)
        }
    }
}

/// Journals the namespace change `entry` after its UFS operation: with a
/// pending intent, as its completion (`UfsDone`, which also forgets the
/// intent) — otherwise (no mount, or nothing in the UFS) as `entry` itself.
pub async fn journal_change(pending: Option<Pending>, entry: JournalEntry) -> Result<ApplyResult, ErrorInfo> {
    match pending {
        None => propose(entry).await,
        Some(p) => propose(JournalEntry::UfsDone { id: p.id, op: Some(p.op.clone()), time_ms: now_ms() }).await,
    }
}

/// Deletes the UFS counterpart of `path` before the delete is journaled
/// (`unlink`: the namespace change will be an `Unlink`). When the UFS is
/// touched, the intent is journaled first and returned: journal the change
/// with [`journal_change`].
pub async fn before_delete(path: &str, recursive: bool, unlink: bool) -> Result<Option<Pending>, ErrorInfo> {
    let Some(m) = mount_of(path).await? else { return Ok(None) };
    if path == m.path {
        return Err(ErrorInfo::new(ErrorCode::InvalidArgument, format!("{path} is a mount point: unmount it")));
    }
    ensure_synced(path, true).await?;
    if let Some(rec) = lookup(path).await? {
        let is_dir = rec.attr.file_type == FileType::Directory;
        if is_dir && !recursive && non_empty(path).await? {
            return Err(ErrorInfo::new(ErrorCode::DirectoryNotEmpty, format!("{path} is not empty")));
        }
        if in_ufs(&rec) {
            let op = if unlink {
                UfsOp::Unlink { path: path.to_string() }
            } else {
                UfsOp::Delete { path: path.to_string(), recursive }
            };
            let p = begin(op).await?;
            let r = ufs::remove(&m.spec, &pufs::key_of(path, &m.path), is_dir).await;
            return after_ufs_op(p, r).await.map(Some);
        }
    }
    Ok(None)
}

/// What the UFS side of a rename left to do: the intent to complete and the
/// file to re-fingerprint afterwards (a copy on S3 changes it).
#[derive(Default)]
pub struct RenameWork {
    /// The intent to complete with [`journal_change`].
    pub pending: Option<Pending>,
    /// The mount and new path of a renamed file, for [`after_rename`].
    pub refresh: Option<(MountInfo, String)>,
}

/// Renames the UFS counterpart of `src` before the rename is journaled.
pub async fn before_rename(src: &str, dst: &str) -> Result<RenameWork, ErrorInfo> {
    let (ms, md) = (mount_of(src).await?, mount_of(dst).await?);
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
    ensure_synced(src, false).await?;
    ensure_synced(dst, false).await?;
    let Some(rec) = lookup(src).await? else { return Ok(RenameWork::default()) };
    let (skey, dkey) = (pufs::key_of(src, &m.path), pufs::key_of(dst, &m.path));
    let is_dir = rec.attr.file_type == FileType::Directory;
    if let Some(old) = lookup(dst).await? {
        if old.attr.file_type == FileType::Directory && non_empty(dst).await? {
            return Err(ErrorInfo::new(ErrorCode::DirectoryNotEmpty, format!("{dst} is not empty")));
        }
    }
    if in_ufs(&rec) {
        let p = begin(UfsOp::Rename { src: src.to_string(), dst: dst.to_string() }).await?;
        let r = async {
            if let Some(old) = lookup(dst).await? {
                if in_ufs(&old) && old.attr.file_type != FileType::Directory {
                    ufs::remove(&m.spec, &dkey, false).await?;
                }
            }
            ufs::rename(&m.spec, &skey, &dkey, is_dir).await
        }
        .await;
        let p = after_ufs_op(p, r).await?;
        let refresh = (!is_dir).then(|| (m, dst.to_string()));
        return Ok(RenameWork { pending: Some(p), refresh });
    }
    Ok(RenameWork::default())
}

/// Frees what an applied delete, unlink or rename released.
fn free_applied(r: ApplyResult) {
    match r {
        ApplyResult::Freed { blocks } | ApplyResult::Replaced { freed: blocks, .. } => free(blocks),
        _ => {}
    }
}

/// Finishes a recorded UFS operation that no gateway is carrying out (its
/// leader crashed or lost leadership between the intent and the
/// completion), idempotently: the UFS side is brought to the operation's
/// result (what is already done is not redone; a missing object is fine),
/// then the namespace change is journaled if it still applies, with the
/// completion. Any UFS error leaves the intent for a later retry.
async fn redrive(intent: &super::namespace::UfsIntent) -> Result<(), ErrorInfo> {
    let id = intent.id;
    let done = |op: Option<UfsOp>| JournalEntry::UfsDone { id, op, time_ms: now_ms() };
    let anchor = match &intent.op {
        UfsOp::Delete { path, .. } | UfsOp::Unlink { path } => path.clone(),
        UfsOp::Rename { src, .. } => src.clone(),
    };
    let Some(m) = mount_of(&anchor).await? else {
        // Unmounted since: nothing to do in a UFS Strata no longer knows.
        propose(done(None)).await?;
        return Ok(());
    };
    match &intent.op {
        UfsOp::Delete { path, .. } | UfsOp::Unlink { path } => {
            let rec = lookup(path).await?;
            let key = pufs::key_of(path, &m.path);
            match &rec {
                Some(r) => ufs::remove(&m.spec, &key, r.attr.file_type == FileType::Directory).await?,
                None => {
                    ufs::remove(&m.spec, &key, false).await?;
                    if matches!(intent.op, UfsOp::Delete { recursive: true, .. }) {
                        ufs::remove(&m.spec, &key, true).await?;
                    }
                }
            }
            let r = propose(done(rec.is_some().then(|| intent.op.clone()))).await;
            tracing::info!(id, path = %path, result = ?r, "re-drove a recorded UFS delete");
            if let Ok(r) = r {
                free_applied(r);
            }
        }
        UfsOp::Rename { src, dst } => {
            if mount_of(dst).await?.is_none_or(|d| d.path != m.path) {
                propose(done(None)).await?;
                return Ok(());
            }
            let (skey, dkey) = (pufs::key_of(src, &m.path), pufs::key_of(dst, &m.path));
            let rec = match lookup(src).await? {
                Some(r) => Some(r),
                None => lookup(dst).await?,
            };
            let is_dir = rec.as_ref().is_some_and(|r| r.attr.file_type == FileType::Directory);
            let step = if is_dir {
                if ufs::dir_exists(&m.spec, &skey).await? {
                    ufs::rename(&m.spec, &skey, &dkey, true).await?;
                    "directory rename redone"
                } else {
                    "directory already renamed"
                }
            } else {
                match (ufs::stat(&m.spec, &skey).await?, ufs::stat(&m.spec, &dkey).await?) {
                    (Some(_), None) => {
                        ufs::rename(&m.spec, &skey, &dkey, false).await?;
                        "rename redone"
                    }
                    (Some(s), Some(d)) if s.size == d.size && s.etag.is_some() && s.etag == d.etag => {
                        // A copy + delete rename (S3) stopped after the copy: finish the delete.
                        ufs::remove(&m.spec, &skey, false).await?;
                        "copied, source deleted"
                    }
                    (Some(_), Some(_)) => {
                        // Nothing was done yet (the old target is still there): do it all.
                        ufs::remove(&m.spec, &dkey, false).await?;
                        ufs::rename(&m.spec, &skey, &dkey, false).await?;
                        "target replaced, rename redone"
                    }
                    _ => "already renamed",
                }
            };
            let apply = lookup(src).await?.is_some();
            let r = propose(done(apply.then(|| intent.op.clone()))).await;
            tracing::info!(id, src = %src, dst = %dst, ufs = step, result = ?r, "re-drove a recorded UFS rename");
            if let Ok(r) = r {
                free_applied(r);
                if !is_dir {
                    after_rename(&m, dst).await;
                }
            }
        }
    }
    Ok(())
}

/// Re-drives every recorded UFS operation this master is not carrying out
/// itself and that is due (retries back off as the async persists do).
async fn redrive_all(retry: &mut HashMap<u64, (u32, Instant)>) -> Result<(), ErrorInfo> {
    let intents = ns_call(NamespaceMsg::UfsIntents).await??;
    retry.retain(|id, _| intents.iter().any(|i| i.id == *id));
    let now = Instant::now();
    for intent in intents {
        if IN_FLIGHT.lock().as_ref().is_some_and(|s| s.contains(&intent.id)) {
            continue;
        }
        if retry.get(&intent.id).is_some_and(|(_, at)| *at > now) {
            continue;
        }
        if redrive_disabled() {
            continue;
        }
        if let Err(e) = redrive(&intent).await {
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
fn redrive_disabled() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| std::env::var("STRATA_FAULT").is_ok_and(|v| v == "no-ufs-redrive"))
}

/// After a UFS rename: record the renamed object's new version, so the next
/// sync does not take it for a change behind Strata's back.
pub async fn after_rename(m: &MountInfo, dst: &str) {
    let r: Result<(), ErrorInfo> = async {
        let Some(rec) = lookup(dst).await? else { return Ok(()) };
        if let Some(fp) = ufs::stat(&m.spec, &pufs::key_of(dst, &m.path)).await? {
            let blocks = rec.blocks.clone();
            propose(JournalEntry::Persisted { inode: rec.attr.inode, blocks, fingerprint: fp, time_ms: now_ms() })
                .await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = r {
        tracing::debug!(path = dst, error = %e, "re-fingerprinting a renamed file failed; the next sync reloads it");
    }
}

/// Sends one request to a worker's data port and waits for its answer.
async fn worker_request(w: &WorkerAddr, req: &DataRequest, patience: Duration) -> Result<DataResponse, ErrorInfo> {
    let addr = format!("{}:{}", w.host, w.data_port);
    let io = |e: std::io::Error| ErrorInfo::new(ErrorCode::Unavailable, format!("worker {addr}: {e}"));
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.map_err(io)?;
        write_frame(&mut s, FrameKind::Request, req)
            .await
            .map_err(|e| ErrorInfo::new(ErrorCode::Unavailable, e.to_string()))?;
        s.flush().await.map_err(io)?;
        match read_frame::<_, DataResponse>(&mut s, 64 * 1024).await {
            Ok(Some((_, r))) => Ok(r),
            Ok(None) => Err(ErrorInfo::new(ErrorCode::Unavailable, format!("worker {addr} closed the connection"))),
            Err(e) => Err(ErrorInfo::new(ErrorCode::Unavailable, format!("worker {addr}: {e}"))),
        }
    };
    tokio::time::timeout(patience, fut)
        .await
        .map_err(|_| ErrorInfo::new(ErrorCode::Timeout, format!("worker {addr} did not answer in {patience:?}")))?
}

/// Writes a complete file to its UFS through a worker and journals it as
/// persisted. Returns the blocks that are now clean.
pub async fn persist_file(m: &MountInfo, path: &str, rec: &InodeRecord) -> Result<Vec<u64>, ErrorInfo> {
    if !rec.attr.complete {
        return Err(ErrorInfo::new(ErrorCode::InvalidState, format!("{path} is still being written")));
    }
    if rec.ufs.as_ref().is_some_and(|u| u.persisted) {
        return Ok(Vec::new());
    }
    let blocks = super::gateway::file_blocks(rec.clone()).await?.blocks;
    if let Some(b) = blocks.iter().find(|b| b.workers.is_empty()) {
        return Err(ErrorInfo::new(
            ErrorCode::BlockNotFound,
            format!("block {:016x} of {path} has no live copy to persist", b.block_id),
        ));
    }
    let mut candidates: Vec<WorkerAddr> = blocks.first().map(|b| b.workers.clone()).unwrap_or_default();
    if candidates.is_empty() {
        let placed =
            wm_call(|r| WorkerManagerMsg::Place(Wire(PlaceRequest { client_host: String::new(), length: 0 }), r))
                .await?
                .0;
        candidates = placed.0;
    }
    let req = DataRequest::Persist {
        spec: m.spec.clone(),
        key: pufs::key_of(path, &m.path),
        blocks: blocks.clone(),
        length: rec.attr.size,
    };
    let patience = Duration::from_secs(60) + Duration::from_millis(rec.attr.size / (1 << 20) * 100);
    let mut last = ErrorInfo::new(ErrorCode::NoWorkers, "no live worker to persist through");
    let mut fp: Option<Fingerprint> = None;
    for w in candidates.iter().take(3) {
        match worker_request(w, &req, patience).await {
            Ok(DataResponse::Persisted(f)) => {
                fp = Some(f);
                break;
            }
            Ok(DataResponse::Error(e)) => last = e,
            Ok(other) => last = ErrorInfo::new(ErrorCode::Protocol, format!("unexpected answer {other:?}")),
            Err(e) => last = e,
        }
    }
    let fingerprint = fp.ok_or(last)?;
    let ids: Vec<u64> = rec.blocks.clone();
    propose(JournalEntry::Persisted { inode: rec.attr.inode, blocks: ids.clone(), fingerprint, time_ms: now_ms() })
        .await?;
    if let Some(wm) = workers::actor() {
        let _ = wm.cast(WorkerManagerMsg::Clean(Wire(BlockList(ids.clone()))));
    }
    Ok(ids)
}

/// Drops the cached copies of blocks whose data is safe in the UFS.
pub fn evict(blocks: Vec<u64>) {
    if !blocks.is_empty() {
        if let Some(wm) = workers::actor() {
            let _ = wm.cast(WorkerManagerMsg::Evict(Wire(BlockList(blocks))));
        }
    }
}

/// What a completed write under a mount needs before it is acknowledged.
/// A file renamed or replaced meanwhile (`path` no longer names `inode`) is
/// left to whoever wrote the new one.
pub async fn after_write(path: &str, inode: u64) -> Result<(), ErrorInfo> {
    let Some(m) = mount_of(path).await? else { return Ok(()) };
    let Some(rec) = lookup(path).await?.filter(|r| r.attr.inode == inode) else { return Ok(()) };
    match m.options.write_type {
        WriteType::Cache => Ok(()),
        WriteType::CacheThrough => persist_file(&m, path, &rec).await.map(|_| ()),
        WriteType::Through => {
            let blocks = persist_file(&m, path, &rec).await?;
            evict(blocks);
            Ok(())
        }
        WriteType::AsyncThrough => {
            if let Some(s) = syncer() {
                let _ = s.cast(SyncerMsg::Enqueue(path.to_string()));
            }
            Ok(())
        }
    }
}

/// Persists every complete, unpersisted file at or below `path`.
pub async fn persist_tree(path: &str) -> Result<u64, ErrorInfo> {
    let m = mount_of(path)
        .await?
        .ok_or_else(|| ErrorInfo::new(ErrorCode::InvalidArgument, format!("{path} is not under a mount")))?;
    let mut n = 0;
    for (p, rec) in ns_call(|r| NamespaceMsg::Walk(path.to_string(), r)).await?? {
        if rec.attr.file_type == FileType::File && rec.attr.complete && !rec.ufs.as_ref().is_some_and(|u| u.persisted) {
            persist_file(&m, &p, &rec).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Drops cached copies of the persisted files at or below `path`; files
/// not in the UFS keep theirs (they are the only copy), and so do pinned
/// files (unpin them first).
pub async fn free_tree(path: &str) -> Result<u64, ErrorInfo> {
    mount_of(path)
        .await?
        .ok_or_else(|| ErrorInfo::new(ErrorCode::InvalidArgument, format!("{path} is not under a mount")))?;
    let mut blocks = Vec::new();
    let mut files = 0;
    for (_, rec) in ns_call(|r| NamespaceMsg::Walk(path.to_string(), r)).await?? {
        if rec.attr.file_type == FileType::File && !rec.attr.pinned && rec.ufs.as_ref().is_some_and(|u| u.persisted) {
            blocks.extend(rec.blocks.iter().copied());
            files += 1;
        }
    }
    evict(blocks);
    Ok(files)
}

/// Registered name of the MountSyncer.
pub const SYNCER: &str = "strata.mountsyncer";

/// The local MountSyncer.
pub fn syncer() -> Option<ActorRef<SyncerMsg>> {
    ractor::registry::where_is(SYNCER).map(ActorRef::from)
}

/// Messages to the MountSyncer.
#[derive(RactorMessage)]
pub enum SyncerMsg {
    /// A file under an async-through mount was written.
    Enqueue(String),
    /// Periodic work.
    Tick,
}

/// The MountSyncer: persists async-through files on the leader. Its queue
/// is soft state: on becoming leader (and every `RESCAN` after) it scans the
/// async-through mounts for complete files not yet persisted, so nothing is
/// forgotten across a failover or a restart.
pub struct MountSyncer;

/// State.
pub struct SyncerState {
    queue: BTreeMap<String, (u32, Instant)>,
    leader: bool,
    last_scan: Option<Instant>,
    last_ttl: Option<Instant>,
    last_intents: Option<Instant>,
    intent_retry: HashMap<u64, (u32, Instant)>,
}

/// How often the leader looks for files whose TTL expired.
const TTL_CHECK: Duration = Duration::from_secs(1);
/// How often the leader looks for recorded UFS operations left unfinished.
const INTENT_CHECK: Duration = Duration::from_secs(2);

const RESCAN: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Actor for MountSyncer {
    type Msg = SyncerMsg;
    type State = SyncerState;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, _: ()) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(Duration::from_millis(500), || SyncerMsg::Tick);
        Ok(SyncerState {
            queue: BTreeMap::new(),
            leader: false,
            last_scan: None,
            last_ttl: None,
            last_intents: None,
            intent_retry: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SyncerMsg::Enqueue(p) => {
                st.queue.insert(p, (0, Instant::now()));
            }
            SyncerMsg::Tick => {
                let leader = journal::read_barrier().await.is_ok();
                if !leader {
                    st.leader = false;
                    st.queue.clear();
                    st.intent_retry.clear();
                    return Ok(());
                }
                if !st.leader || st.last_intents.is_none_or(|t| t.elapsed() >= INTENT_CHECK) {
                    // First thing as a new leader: finish what a crashed one left.
                    st.last_intents = Some(Instant::now());
                    if let Err(e) = redrive_all(&mut st.intent_retry).await {
                        tracing::warn!(error = %e, "re-driving recorded UFS operations failed");
                    }
                }
                if !st.leader || st.last_scan.is_none_or(|t| t.elapsed() > RESCAN) {
                    st.leader = true;
                    st.last_scan = Some(Instant::now());
                    if let Err(e) = scan(&mut st.queue).await {
                        tracing::warn!(error = %e, "scanning async-through mounts failed");
                    }
                }
                if st.last_ttl.is_none_or(|t| t.elapsed() >= TTL_CHECK) {
                    st.last_ttl = Some(Instant::now());
                    if let Err(e) = ttl_pass().await {
                        tracing::warn!(error = %e, "TTL pass failed");
                    }
                }
                let now = Instant::now();
                let due: Vec<String> =
                    st.queue.iter().filter(|(_, (_, at))| *at <= now).map(|(p, _)| p.clone()).collect();
                for p in due {
                    match persist_path(&p).await {
                        Ok(()) => {
                            st.queue.remove(&p);
                        }
                        Err(e) => {
                            let Some((attempts, at)) = st.queue.get_mut(&p) else { continue };
                            *attempts += 1;
                            let backoff = Duration::from_millis(200u64 << (*attempts).min(8)).min(MAX_BACKOFF);
                            *at = Instant::now() + backoff;
                            tracing::warn!(path = %p, attempts = *attempts, ?backoff, error = %e, "async persist failed; retrying");
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Applies TTLs: a file's own TTL (`strata ttl`, `Attr.ttl`) or else the
/// TTL of the mount it is under, to each complete file not modified for
/// that long. The pass walks every mount with a TTL, and the whole
/// namespace once a per-inode TTL has ever been set. Free skips pinned and
/// unpersisted files (evicting blocks no worker holds any more is a no-op,
/// so a freed file costs nothing on later passes); delete goes through the
/// UFS first when the file is under a mount, like a client's delete;
/// persist writes files not in the UFS yet. A directory with its own
/// delete TTL is removed once it is empty and unchanged for its TTL.
async fn ttl_pass() -> Result<(), ErrorInfo> {
    let now = now_ms();
    let ms = mounts().await?;
    let roots: Vec<String> = if ns_call(NamespaceMsg::TtlUsed).await?? {
        vec!["/".to_string()]
    } else {
        ms.iter().filter(|m| m.options.ttl_ms > 0).map(|m| m.path.clone()).collect()
    };
    for root in roots {
        let mut evicted = Vec::new();
        for (p, rec) in ns_call(|r| NamespaceMsg::Walk(root.clone(), r)).await?? {
            let m = ms.iter().find(|m| pufs::is_under(&p, &m.path));
            let (ttl_ms, action) = match (rec.attr.ttl, m) {
                (Some(t), _) => (t.ttl_ms, t.action),
                (None, Some(m)) if m.options.ttl_ms > 0 => (m.options.ttl_ms, m.options.ttl_action),
                _ => continue,
            };
            if now.saturating_sub(rec.attr.mtime_ms) < ttl_ms as i64 {
                continue;
            }
            match rec.attr.file_type {
                FileType::File if rec.attr.complete => {}
                FileType::Directory
                    if rec.attr.ttl.is_some()
                        && action == pufs::TtlAction::Delete
                        && rec.attr.size == 0
                        && p != "/"
                        && m.is_none_or(|m| m.path != p) =>
                {
                    ttl_delete(&p, now).await;
                    continue;
                }
                _ => continue,
            }
            let persisted = rec.ufs.as_ref().is_some_and(|u| u.persisted);
            match action {
                pufs::TtlAction::Free => {
                    if persisted && !rec.attr.pinned {
                        evicted.extend(rec.blocks.iter().copied());
                    }
                }
                pufs::TtlAction::Persist => {
                    let Some(m) = m else { continue };
                    if !persisted {
                        if let Err(e) = persist_file(m, &p, &rec).await {
                            tracing::warn!(path = %p, error = %e, "TTL persist failed; next pass retries");
                        }
                    }
                }
                pufs::TtlAction::Delete => ttl_delete(&p, now).await,
            }
        }
        evict(evicted);
    }
    Ok(())
}

/// Deletes a file (or an empty directory) whose TTL expired: from the UFS
/// first when it is under a mount, then from the namespace.
async fn ttl_delete(p: &str, now: i64) {
    let r = match before_delete(p, false, false).await {
        Ok(pending) => {
            journal_change(pending, JournalEntry::Delete { path: p.to_string(), recursive: false, time_ms: now }).await
        }
        Err(e) => Err(e),
    };
    match r {
        Ok(ApplyResult::Freed { blocks }) => {
            free(blocks);
            tracing::info!(path = %p, "TTL expired: deleted");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(path = %p, error = %e, "TTL delete failed; next pass retries"),
    }
}

async fn scan(queue: &mut BTreeMap<String, (u32, Instant)>) -> Result<(), ErrorInfo> {
    for m in mounts().await? {
        if m.options.write_type != WriteType::AsyncThrough {
            continue;
        }
        for (p, rec) in ns_call(|r| NamespaceMsg::Walk(m.path.clone(), r)).await?? {
            if rec.attr.file_type == FileType::File
                && rec.attr.complete
                && !rec.ufs.as_ref().is_some_and(|u| u.persisted)
            {
                queue.entry(p).or_insert((0, Instant::now()));
            }
        }
    }
    Ok(())
}

/// Persists the file now at `p` (gone or already persisted: done).
async fn persist_path(p: &str) -> Result<(), ErrorInfo> {
    let Some(m) = mount_of(p).await? else { return Ok(()) };
    let Some(rec) = lookup(p).await? else { return Ok(()) };
    if rec.attr.file_type != FileType::File || !rec.attr.complete {
        return Ok(());
    }
    persist_file(&m, p, &rec).await.map(|_| ())
}
