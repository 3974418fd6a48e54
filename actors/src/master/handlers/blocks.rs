//! File content: blocks and their placement, inline data, reserved ids,
//! and what a completed write under a mount needs.

use strata_protocol::journal::{ApplyResult, JournalEntry};
use strata_protocol::messages::{
    BlockLocation, BlockReplication, Copies, FileBlocks, FileReplication, FileType, MasterResponse, Replicas, SetAttrs,
};
use strata_protocol::ufs::{MountOptions, UfsSource, WriteType};
use strata_protocol::{now_ms, BlockId, ErrorCode, ErrorInfo, InodeId, INLINE_MAX_BYTES};

use super::super::namespace::InodeRecord;
use super::super::namespace_actor::NamespaceMsg;
use super::super::services::Services;
use super::super::workers::by_hash;
use super::{attr_of, bad_block_size, check_path, err, freed_of, read_barrier, replaced, unexpected};

pub(super) async fn add_block(
    svc: &Services,
    inode: InodeId,
    client_host: String,
    path: String,
) -> Result<MasterResponse, ErrorInfo> {
    let ApplyResult::Block { block_id, replicas, block_size } =
        svc.journal.propose(JournalEntry::AddBlock { inode, time_ms: now_ms() }).await?
    else {
        return Ok(err(ErrorCode::Internal, "AddBlock applied without a block"));
    };
    let mount = svc.mounts.mount_of(&path).await?;
    let policy = mount.as_ref().and_then(|m| m.options.placement);
    let workers = svc.workers.place(client_host, block_size, policy, block_id).await?;
    let copies = match copies_to_write(svc, replicas, mount.as_ref().map(|m| &m.options), workers.len()) {
        Ok(c) => c,
        Err(refused) => return Ok(MasterResponse::Error(refused)),
    };
    let block = BlockLocation { block_id, offset: 0, length: 0, workers, from_ufs: false };
    Ok(MasterResponse::NewBlock { block, copies })
}

/// The copies a client writes of a new block of a file with `replicas`
/// (under a mount with these options, if any) while `live` workers are live:
/// its minimum for data that exists nowhere else, one for data a
/// through/cache-through close writes to its UFS at once (unless the file
/// asks for more), and an async-through mount's own count if higher.
/// With fewer live workers than that, as many as there are if the
/// cluster accepts degraded writes, else a refusal.
fn copies_to_write(
    svc: &Services,
    replicas: Replicas,
    mount: Option<&MountOptions>,
    live: usize,
) -> Result<Copies, ErrorInfo> {
    let cfg = &svc.replication.cfg;
    let min = u32::from(cfg.counts(replicas, false).0);
    let want = match mount.map(|m| (m.write_type, m.replicas)) {
        Some((WriteType::Through | WriteType::CacheThrough, _)) if replicas.min == 0 => 1,
        Some((WriteType::AsyncThrough, n)) => min.max(n),
        _ => min,
    };
    if live == 0 {
        return Err(ErrorInfo::new(ErrorCode::NoWorkers, "no live worker can take the block"));
    }
    if (live as u32) < want {
        if !cfg.degraded_writes {
            return Err(ErrorInfo::new(
                ErrorCode::NoWorkers,
                format!("{want} copies are required and only {live} workers are live (degraded writes are off)"),
            ));
        }
        return Ok(Copies { want: live as u32, required: live as u32 });
    }
    Ok(Copies { want, required: want })
}

pub(super) async fn complete(
    svc: &Services,
    inode: InodeId,
    length: u64,
    path: String,
) -> Result<MasterResponse, ErrorInfo> {
    let r = attr_of(svc.journal.propose(JournalEntry::CompleteFile { inode, length, time_ms: now_ms() }).await?);
    after_write(svc, &path, inode).await?;
    Ok(r)
}

pub(super) async fn write_inline(
    svc: &Services,
    inode: InodeId,
    path: String,
    data: Vec<u8>,
    attrs: SetAttrs,
) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    if data.len() as u64 > INLINE_MAX_BYTES {
        return Ok(err(ErrorCode::InlineRefused, format!("{} bytes is too big to keep inline", data.len())));
    }
    // A file under a mount goes to its UFS by its write type: as blocks.
    if svc.mounts.mount_of(&path).await?.is_some() {
        return Ok(err(ErrorCode::InlineRefused, format!("{path} is under a UFS mount")));
    }
    Ok(replaced(svc, svc.journal.propose(JournalEntry::WriteInline { inode, data, attrs, time_ms: now_ms() }).await?))
}

pub(super) async fn create_detached(
    svc: &Services,
    block_size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<MasterResponse, ErrorInfo> {
    if let Some(refused) = bad_block_size(block_size) {
        return Ok(refused);
    }
    let entry = JournalEntry::CreateDetached { mode, uid, gid, block_size, time_ms: now_ms() };
    Ok(attr_of(svc.journal.propose(entry).await?))
}

pub(super) async fn swap_content(
    svc: &Services,
    from: InodeId,
    to: InodeId,
    length: Option<u64>,
    path: String,
) -> Result<MasterResponse, ErrorInfo> {
    let entry = JournalEntry::SwapContent { from, to, length, time_ms: now_ms() };
    let r = freed_of(svc, svc.journal.propose(entry).await?);
    after_write(svc, &path, to).await?;
    Ok(r)
}

pub(super) async fn get_blocks(svc: &Services, path: String, stale_ok: bool) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    read_barrier(svc, stale_ok).await?;
    svc.mounts.ensure_synced(&path, false).await?;
    let (rec, inline) = svc.ns.call(|r| NamespaceMsg::FileContent(path.clone(), r)).await??;
    let mut fb = file_blocks_at(svc, &path, rec).await?;
    fb.inline = inline;
    Ok(MasterResponse::Blocks(fb))
}

/// The refusal of a reservation of `count` ids outside 1..=65536, if it is.
fn bad_count(count: u32, what: &str) -> Option<MasterResponse> {
    (!(1..=65_536).contains(&count))
        .then(|| err(ErrorCode::InvalidArgument, format!("reserve 1..=65536 {what}, not {count}")))
}

pub(super) async fn reserve_blocks(
    svc: &Services,
    count: u32,
    client_host: String,
) -> Result<MasterResponse, ErrorInfo> {
    if let Some(refused) = bad_count(count, "block ids") {
        return Ok(refused);
    }
    let workers = svc.workers.place(client_host, 0, None, 0).await?;
    // Reserved ids go to files outside mounts: data that exists nowhere else.
    let copies = match copies_to_write(svc, Replicas::default(), None, workers.len()) {
        Ok(c) => c,
        Err(refused) => return Ok(MasterResponse::Error(refused)),
    };
    Ok(match svc.journal.propose(JournalEntry::ReserveBlocks { count: u64::from(count), time_ms: now_ms() }).await? {
        ApplyResult::Reserved { first } => MasterResponse::BlockIds { first, count, workers, copies },
        other => unexpected(other),
    })
}

pub(super) async fn set_content(
    svc: &Services,
    inode: InodeId,
    path: String,
    blocks: Vec<BlockId>,
    length: u64,
    block_size: u64,
    attrs: SetAttrs,
) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    // Under a mount the write type decides where the blocks go
    // (and async-through keeps two copies): the block-by-block way.
    if svc.mounts.mount_of(&path).await?.is_some() {
        return Ok(err(ErrorCode::InlineRefused, format!("{path} is under a UFS mount")));
    }
    let entry = JournalEntry::SetContent { inode, blocks, length, block_size, attrs, time_ms: now_ms() };
    Ok(replaced(svc, svc.journal.propose(entry).await?))
}

pub(super) async fn set_replicas(
    svc: &Services,
    path: String,
    replicas: Replicas,
    recursive: bool,
) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    let entry = JournalEntry::SetReplicas { path: path.clone(), replicas, recursive, time_ms: now_ms() };
    let r = attr_of(svc.journal.propose(entry).await?);
    if let MasterResponse::Attr(a) = &r {
        // Repair or trim the file's blocks now (a tree's: at the next scan).
        if a.file_type == FileType::File {
            let rec = svc.ns.call(|r| NamespaceMsg::File(path.clone(), r)).await??;
            svc.replication.check(rec.blocks);
        }
    }
    Ok(r)
}

/// A file's blocks with their live copies and tiers (`strata info`).
pub(super) async fn replication(svc: &Services, path: String) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    read_barrier(svc, false).await?;
    let rec = svc.ns.call(|r| NamespaceMsg::File(path.clone(), r)).await??;
    if rec.attr.file_type != FileType::File {
        return Ok(err(ErrorCode::IsADirectory, format!("{path} is not a file")));
    }
    let persisted = rec.is_persisted();
    let (min, max) = svc.replication.cfg.counts(rec.attr.replicas, persisted);
    let holders = svc.workers.holders(rec.blocks.clone()).await?;
    let blocks = rec
        .blocks
        .iter()
        .zip(holders)
        .enumerate()
        .map(|(i, (b, copies))| {
            let n = copies.len();
            let state = if n == 0 && persisted {
                "in-ufs"
            } else if n == 0 {
                "missing"
            } else if n < usize::from(min) {
                "under"
            } else if n > usize::from(max) {
                "over"
            } else {
                "ok"
            };
            BlockReplication { block_id: *b, length: rec.block_length(i), copies, state: state.into() }
        })
        .collect();
    Ok(MasterResponse::Replication(FileReplication { attr: rec.attr, persisted, min, max, blocks }))
}

pub(super) async fn reserve_inodes(svc: &Services, count: u32) -> Result<MasterResponse, ErrorInfo> {
    if let Some(refused) = bad_count(count, "inode numbers") {
        return Ok(refused);
    }
    Ok(match svc.journal.propose(JournalEntry::ReserveInodes { count: u64::from(count), time_ms: now_ms() }).await? {
        ApplyResult::Reserved { first } => MasterResponse::Inodes { first, count },
        other => unexpected(other),
    })
}

/// Runs the write type of `path`'s mount once the file `inode` is complete.
pub(super) async fn after_write(svc: &Services, path: &str, inode: InodeId) -> Result<(), ErrorInfo> {
    if path.is_empty() || check_path(path).is_err() {
        return Ok(());
    }
    svc.mounts.after_write(path, inode).await
}

/// A file's blocks; a persisted file under a mount also says where its
/// uncached blocks come from, and which workers should fetch them.
pub async fn file_blocks_at(svc: &Services, path: &str, rec: InodeRecord) -> Result<FileBlocks, ErrorInfo> {
    let persisted = rec.ufs.as_ref().filter(|u| u.persisted).map(|u| u.fingerprint.clone());
    let mut fb = svc.workers.file_blocks(rec).await?;
    let Some(fingerprint) = persisted else { return Ok(fb) };
    let Some(m) = svc.mounts.mount_of(path).await? else { return Ok(fb) };
    if fb.blocks.iter().any(|b| b.workers.is_empty()) {
        let placement = svc.workers.place(String::new(), 0, None, 0).await?;
        for b in fb.blocks.iter_mut().filter(|b| b.workers.is_empty()) {
            // By hash of the block: every reader of a cold block asks the
            // same worker, which fetches it once (and a file's blocks
            // spread over the workers).
            let mut ws = placement.clone();
            by_hash(b.block_id, &mut ws);
            b.workers = ws;
            b.from_ufs = true;
        }
    }
    fb.ufs = Some(UfsSource {
        spec: m.spec.clone(),
        key: strata_protocol::ufs::key_of(path, &m.path),
        fingerprint,
        read_type: m.options.read_type,
    });
    Ok(fb)
}
