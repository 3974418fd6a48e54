//! A client's session with the leader: keep-alives, directory leases and
//! byte-range locks (the table itself is the LeaseKeeper's: `leases`).

use strata_protocol::locks::LockKind;
use strata_protocol::messages::{FileType, MasterResponse};
use strata_protocol::path::is_under;
use strata_protocol::{ErrorCode, ErrorInfo, InodeId};

use super::super::namespace_actor::NamespaceMsg;
use super::super::services::Services;
use super::{check_path, Caller};

/// Renews the client's leases once this master has shown it still leads.
pub(super) async fn keep_alive(svc: &Services, caller: Caller, locks: u64) -> Result<MasterResponse, ErrorInfo> {
    if caller.client == 0 {
        return Err(ErrorInfo::new(ErrorCode::InvalidArgument, "a keep-alive needs a client id"));
    }
    svc.journal.read_barrier().await?;
    let (dirs, reclaim) = svc.leases()?.keep_alive(caller.client, locks).await;
    Ok(MasterResponse::Recall { dirs, reclaim })
}

pub(super) fn release(svc: &Services, caller: Caller, dirs: &[String]) -> Result<MasterResponse, ErrorInfo> {
    svc.leases()?.release(caller.client, dirs);
    Ok(MasterResponse::Done)
}

/// The most entries a leased directory may have (its grant lists them).
const LEASE_MAX_ENTRIES: usize = 20_000;

/// Leases a directory outside every UFS mount (a mount's changes need its
/// UFS at once, which a queued change would not reach).
pub(super) async fn lease(svc: &Services, caller: Caller, path: String) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    let mounted = svc.mounts.mounts().await?.into_iter().find(|m| is_under(&m.path, &path) || is_under(&path, &m.path));
    if let Some(m) = mounted {
        return Err(ErrorInfo::new(
            ErrorCode::InvalidState,
            format!("{path} has the UFS mount {} in it or above it", m.path),
        ));
    }
    let entries = svc
        .leases()?
        .grant(caller.client, &path, async || {
            svc.journal.read_barrier().await?;
            let a = svc.ns.call(|r| NamespaceMsg::Stat(path.clone(), r)).await??;
            if a.file_type != FileType::Directory {
                return Err(ErrorInfo::new(ErrorCode::NotADirectory, format!("{path} is not a directory")));
            }
            // The grant carries the listing: a directory too large for one
            // answer is not leased (its client works synchronously there).
            let page = NamespaceMsg::ListPage;
            match svc.ns.call(|r| page(path.clone(), None, LEASE_MAX_ENTRIES, r)).await?? {
                (_, true) => Err(ErrorInfo::new(
                    ErrorCode::InvalidState,
                    format!("{path} has more than {LEASE_MAX_ENTRIES} entries: too large to lease"),
                )),
                (entries, false) => Ok(entries),
            }
        })
        .await?;
    Ok(MasterResponse::Leased(entries))
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn lock(
    svc: &Services,
    caller: Caller,
    inode: InodeId,
    owner: u64,
    range: (u64, u64),
    kind: Option<LockKind>,
    pid: u32,
    wait: bool,
    reclaim: bool,
) -> Result<MasterResponse, ErrorInfo> {
    svc.journal.read_barrier().await?;
    svc.leases()?.lock(caller.client, inode, owner, range, kind, pid, wait, reclaim).await?;
    Ok(MasterResponse::Done)
}

pub(super) async fn test_lock(
    svc: &Services,
    caller: Caller,
    inode: InodeId,
    owner: u64,
    range: (u64, u64),
    kind: LockKind,
) -> Result<MasterResponse, ErrorInfo> {
    svc.journal.read_barrier().await?;
    Ok(MasterResponse::Conflict(svc.leases()?.test_lock(caller.client, inode, owner, range, kind).await))
}
