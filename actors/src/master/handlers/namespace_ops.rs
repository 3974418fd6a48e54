//! Names, attributes and listings; a client's batches of queued changes.

use strata_protocol::journal::{ApplyResult, BatchOp, BatchOutcome, JournalEntry};
use strata_protocol::messages::{FileType, MasterResponse, SetAttrs, LIST_PAGE_MAX};
use strata_protocol::{now_ms, ErrorCode, ErrorInfo, INLINE_MAX_BYTES, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};

use super::super::namespace_actor::NamespaceMsg;
use super::super::services::Services;
use super::{attr_of, bad_block_size, blocks, check_path, err, freed_of, read_barrier, replaced, unexpected};

pub(super) async fn mkdir(
    svc: &Services,
    path: String,
    recursive: bool,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    svc.mounts.before_mkdir(&path).await?;
    let entry = JournalEntry::Mkdir { path, recursive, mode, uid, gid, time_ms: now_ms() };
    Ok(attr_of(svc.journal.propose(entry).await?))
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn create(
    svc: &Services,
    path: String,
    block_size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    overwrite: bool,
    complete: bool,
) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    svc.mounts.ensure_synced(&path, false).await?;
    if let Some(refused) = bad_block_size(block_size) {
        return Ok(refused);
    }
    let entry = JournalEntry::CreateFile {
        path: path.clone(),
        mode,
        uid,
        gid,
        block_size,
        overwrite,
        complete,
        time_ms: now_ms(),
    };
    Ok(match svc.journal.propose(entry).await? {
        ApplyResult::Created { attr, freed } => {
            svc.workers.free(freed);
            if complete {
                blocks::after_write(svc, &path, attr.inode).await?;
            }
            MasterResponse::Attr(attr)
        }
        other => unexpected(other),
    })
}

pub(super) async fn rename(svc: &Services, src: String, dst: String) -> Result<MasterResponse, ErrorInfo> {
    check_path(&src)?;
    check_path(&dst)?;
    let work = svc.mounts.before_rename(&src, &dst).await?;
    let entry = JournalEntry::Rename { src, dst, time_ms: now_ms() };
    let r = freed_of(svc, svc.mounts.journal_change(work.pending, entry).await?);
    if let Some((m, dst)) = work.refresh {
        svc.mounts.after_rename(&m, &dst).await;
    }
    Ok(r)
}

pub(super) async fn delete(svc: &Services, path: String, recursive: bool) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    let pending = svc.mounts.before_delete(&path, recursive, false).await?;
    let entry = JournalEntry::Delete { path, recursive, time_ms: now_ms() };
    Ok(freed_of(svc, svc.mounts.journal_change(pending, entry).await?))
}

pub(super) async fn unlink(svc: &Services, path: String) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    let mut pending = None;
    if svc.mounts.mount_of(&path).await?.is_some() {
        // The UFS object goes first: make sure it is not a directory.
        svc.mounts.ensure_synced(&path, false).await?;
        if svc.ns.call(|r| NamespaceMsg::Stat(path.clone(), r)).await??.file_type == FileType::Directory {
            return Ok(err(ErrorCode::IsADirectory, format!("{path} is a directory")));
        }
        pending = svc.mounts.before_delete(&path, false, true).await?;
    }
    let entry = JournalEntry::Unlink { path, time_ms: now_ms() };
    Ok(replaced(svc, svc.mounts.journal_change(pending, entry).await?))
}

pub(super) async fn set_attr(svc: &Services, path: String, attrs: SetAttrs) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    Ok(attr_of(svc.journal.propose(JournalEntry::SetAttr { path, attrs, time_ms: now_ms() }).await?))
}

pub(super) async fn symlink(
    svc: &Services,
    target: String,
    link: String,
    uid: u32,
    gid: u32,
) -> Result<MasterResponse, ErrorInfo> {
    check_path(&link)?;
    Ok(attr_of(svc.journal.propose(JournalEntry::Symlink { target, link, uid, gid, time_ms: now_ms() }).await?))
}

pub(super) async fn mknod(
    svc: &Services,
    path: String,
    kind: FileType,
    mode: u32,
    rdev: u32,
    uid: u32,
    gid: u32,
) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    let entry = JournalEntry::Mknod { path, kind, mode, rdev, uid, gid, time_ms: now_ms() };
    Ok(attr_of(svc.journal.propose(entry).await?))
}

pub(super) async fn link(svc: &Services, target: String, link: String) -> Result<MasterResponse, ErrorInfo> {
    check_path(&target)?;
    check_path(&link)?;
    Ok(attr_of(svc.journal.propose(JournalEntry::Link { target, link, time_ms: now_ms() }).await?))
}

pub(super) async fn set_xattr(
    svc: &Services,
    path: String,
    name: String,
    value: Option<Vec<u8>>,
    flags: u32,
) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    Ok(match svc.journal.propose(JournalEntry::SetXattr { path, name, value, flags, time_ms: now_ms() }).await? {
        ApplyResult::Done => MasterResponse::Done,
        other => unexpected(other),
    })
}

pub(super) async fn xattrs(svc: &Services, path: String, stale_ok: bool) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    read_barrier(svc, stale_ok).await?;
    Ok(MasterResponse::Xattrs(svc.ns.call(|r| NamespaceMsg::Xattrs(path.clone(), r)).await??))
}

pub(super) async fn stat(svc: &Services, path: String, stale_ok: bool) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    read_barrier(svc, stale_ok).await?;
    svc.mounts.ensure_synced(&path, false).await?;
    Ok(MasterResponse::Attr(svc.ns.call(|r| NamespaceMsg::Stat(path.clone(), r)).await??))
}

pub(super) async fn list(svc: &Services, path: String, stale_ok: bool) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    read_barrier(svc, stale_ok).await?;
    svc.mounts.ensure_synced(&path, true).await?;
    Ok(MasterResponse::Listing(svc.ns.call(|r| NamespaceMsg::List(path.clone(), r)).await??))
}

pub(super) async fn list_page(
    svc: &Services,
    path: String,
    after: Option<String>,
    limit: u32,
    stale_ok: bool,
) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    read_barrier(svc, stale_ok).await?;
    // A listing syncs with its UFS once, at its first page; the pages
    // after it continue that walk.
    if after.is_none() {
        svc.mounts.ensure_synced(&path, true).await?;
    }
    let limit = limit.clamp(1, LIST_PAGE_MAX) as usize;
    let (entries, more) = svc.ns.call(|r| NamespaceMsg::ListPage(path.clone(), after.clone(), limit, r)).await??;
    Ok(MasterResponse::Page { entries, more })
}

/// A client's batch, in order: runs of ops in one journal entry each; an
/// op [`on_own`] says needs more as the request it stands for.
pub(super) async fn batch(
    svc: &Services,
    client: u64,
    seq: u64,
    ops: Vec<BatchOp>,
) -> Result<MasterResponse, ErrorInfo> {
    for p in ops.iter().flat_map(BatchOp::paths) {
        check_path(p)?;
    }
    let mut out = Vec::with_capacity(ops.len());
    let mut run = Vec::new();
    let mut part = 0;
    for op in ops {
        if !on_own(svc, &op).await? {
            run.push(op);
            continue;
        }
        out.extend(propose_run(svc, client, seq, part, std::mem::take(&mut run)).await?);
        part += 1;
        let Some(req) = op.into_request() else {
            let e = ErrorInfo::new(ErrorCode::InvalidState, "a create under a lease cannot be in a UFS mount");
            out.push(BatchOutcome::Failed(e));
            continue;
        };
        out.push(match Box::pin(super::handle(svc, req, false)).await {
            Ok(MasterResponse::Attr(attr)) => BatchOutcome::Done { attr: Some(attr), freed: Vec::new() },
            Ok(MasterResponse::Done) => BatchOutcome::Done { attr: None, freed: Vec::new() },
            Ok(MasterResponse::Error(e)) | Err(e) => BatchOutcome::Failed(e),
            Ok(other) => BatchOutcome::Failed(ErrorInfo::new(ErrorCode::Internal, format!("unexpected {other:?}"))),
        });
    }
    out.extend(propose_run(svc, client, seq, part, run).await?);
    Ok(MasterResponse::Batch(out))
}

/// Whether a batched op runs as a request of its own: one under a UFS
/// mount (its objects go first; a file there is written as blocks), or one
/// the request would refuse before journaling (its error comes from there).
async fn on_own(svc: &Services, op: &BatchOp) -> Result<bool, ErrorInfo> {
    match op {
        BatchOp::SetAttr { .. } => return Ok(false),
        BatchOp::Create { block_size, .. } if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(block_size) => {
            return Ok(true)
        }
        BatchOp::WriteInline { data, .. } | BatchOp::WriteInlineAt { data, .. }
            if data.len() as u64 > INLINE_MAX_BYTES =>
        {
            return Ok(true)
        }
        _ => {}
    }
    for p in op.paths() {
        if svc.mounts.mount_of(p).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Proposes a run of a client's batch as one entry (see `JournalEntry::ClientBatch`).
async fn propose_run(
    svc: &Services,
    client: u64,
    seq: u64,
    part: u32,
    ops: Vec<BatchOp>,
) -> Result<Vec<BatchOutcome>, ErrorInfo> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let n = ops.len();
    let entry = JournalEntry::ClientBatch { client, seq, part, ops, time_ms: now_ms() };
    let ApplyResult::Batch(out) = svc.journal.propose(entry).await? else {
        return Err(ErrorInfo::new(ErrorCode::Internal, "a batch applied to something else"));
    };
    if out.len() != n {
        return Err(ErrorInfo::new(ErrorCode::Internal, format!("{n} ops applied as {}", out.len())));
    }
    let mut freed = Vec::new();
    let out = out
        .into_iter()
        .map(|o| match o {
            BatchOutcome::Done { attr, freed: f } => {
                freed.extend(f);
                BatchOutcome::Done { attr, freed: Vec::new() }
            }
            other => other,
        })
        .collect();
    svc.workers.free(freed);
    Ok(out)
}
