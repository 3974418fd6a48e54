//! UFS mounts and what is done to the cached copies of their files:
//! mount and unmount, persist and free, pin, TTL.

use strata_protocol::journal::JournalEntry;
use strata_protocol::messages::{FileType, MasterResponse};
use strata_protocol::ufs::{FileTtl, MountInfo, TtlAction};
use strata_protocol::{now_ms, ErrorCode, ErrorInfo};

use super::super::namespace_actor::NamespaceMsg;
use super::super::services::Services;
use super::super::workers::{BlockList, WorkerManagerMsg};
use super::{attr_of, check_path, freed_of};
use crate::mesh::Wire;

pub(super) async fn mount(svc: &Services, info: MountInfo) -> Result<MasterResponse, ErrorInfo> {
    check_path(&info.path)?;
    svc.mounts.mount(info).await?;
    Ok(MasterResponse::Done)
}

pub(super) async fn unmount(svc: &Services, path: String) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    Ok(freed_of(svc, svc.journal.propose(JournalEntry::Unmount { path, time_ms: now_ms() }).await?))
}

pub(super) async fn mounts(svc: &Services) -> Result<MasterResponse, ErrorInfo> {
    svc.journal.read_barrier().await?;
    Ok(MasterResponse::Mounts(svc.mounts.redacted_mounts().await?))
}

pub(super) async fn persist(svc: &Services, path: String) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    svc.mounts.ensure_synced(&path, false).await?;
    svc.mounts.persist_tree(&path).await?;
    Ok(MasterResponse::Done)
}

pub(super) async fn free(svc: &Services, path: String) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    svc.mounts.ensure_synced(&path, false).await?;
    svc.mounts.free_tree(&path).await?;
    Ok(MasterResponse::Done)
}

pub(super) async fn set_pin(svc: &Services, path: String, pinned: bool) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    svc.mounts.ensure_synced(&path, false).await?;
    let r = attr_of(svc.journal.propose(JournalEntry::SetPin { path: path.clone(), pinned, time_ms: now_ms() }).await?);
    if matches!(r, MasterResponse::Attr(_)) {
        tell_pin(svc, &path, pinned).await?;
    }
    Ok(r)
}

/// Tells the workers holding blocks of the files at or below `path` to pin
/// or unpin them (delivered with their next heartbeat replies).
async fn tell_pin(svc: &Services, path: &str, pinned: bool) -> Result<(), ErrorInfo> {
    let blocks: Vec<u64> = svc
        .ns
        .call(|r| NamespaceMsg::Walk(path.to_string(), r))
        .await??
        .into_iter()
        .filter(|(_, rec)| rec.attr.file_type == FileType::File)
        .flat_map(|(_, rec)| rec.blocks)
        .collect();
    let list = Wire(BlockList(blocks));
    svc.workers.tell(if pinned { WorkerManagerMsg::Pin(list) } else { WorkerManagerMsg::Unpin(list) });
    Ok(())
}

pub(super) async fn set_ttl(svc: &Services, path: String, ttl: Option<FileTtl>) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    if ttl.is_some_and(|t| t.ttl_ms == 0) {
        return Err(ErrorInfo::new(ErrorCode::InvalidArgument, "a TTL must be longer than 0 (clear it instead)"));
    }
    let m = svc.mounts.mount_of(&path).await?;
    if m.is_none() && ttl.is_some_and(|t| t.action == TtlAction::Persist) {
        return Err(ErrorInfo::new(
            ErrorCode::InvalidArgument,
            format!("{path} is not under a mount: TTL action persist needs a UFS"),
        ));
    }
    svc.mounts.ensure_synced(&path, false).await?;
    Ok(attr_of(svc.journal.propose(JournalEntry::SetTtl { path, ttl, time_ms: now_ms() }).await?))
}
