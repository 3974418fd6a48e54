//! Request handlers by domain. The gateway hands each request here with
//! its [`Caller`]; [`dispatch`] admits it past the directory leases and
//! routes it to the module of its domain:
//!
//! - [`namespace_ops`]: names, attributes, listings, the client's batches;
//! - [`blocks`]: file content (blocks, inline data), placement, reservations;
//! - [`ufs_ops`]: mounts, persist/free, pin, TTL;
//! - [`sessions`]: keep-alives, directory leases, byte-range locks;
//! - [`admin`]: master membership and the cluster report.
//!
//! Nothing here imports the gateway; handlers reach the rest of the node
//! only through the [`Services`] handle.

pub mod admin;
pub mod blocks;
pub mod namespace_ops;
pub mod sessions;
pub mod ufs_ops;

use strata_protocol::journal::ApplyResult;
use strata_protocol::messages::{MasterRequest, MasterResponse};
use strata_protocol::{path, ErrorCode, ErrorInfo, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};

use super::services::Services;

/// Who is asking. Today the client id the connection's requests carry
/// (leases, locks and batch de-duplication are per client); the
/// authenticated identity joins it here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The client's random id (0: a client that holds no session).
    pub client: u64,
}

/// Answers one request.
pub async fn dispatch(svc: &Services, caller: Caller, req: MasterRequest, stale_ok: bool) -> MasterResponse {
    let r = match req {
        MasterRequest::KeepAlive { locks } => sessions::keep_alive(svc, caller, locks).await,
        MasterRequest::Release { paths } => sessions::release(svc, caller, &paths),
        MasterRequest::Lease { path } => sessions::lease(svc, caller, path).await,
        MasterRequest::Lock { inode, owner, start, end, kind, pid, wait, reclaim } => {
            sessions::lock(svc, caller, inode, owner, (start, end), kind, pid, wait, reclaim).await
        }
        MasterRequest::TestLock { inode, owner, start, end, kind } => {
            sessions::test_lock(svc, caller, inode, owner, (start, end), kind).await
        }
        req => match svc.leases() {
            Ok(leases) => {
                let _admitted = leases.admit(caller.client, &req).await;
                handle(svc, req, stale_ok).await
            }
            Err(e) => Err(e),
        },
    };
    r.unwrap_or_else(MasterResponse::Error)
}

/// A request past the lease check, by domain.
pub(crate) async fn handle(svc: &Services, req: MasterRequest, stale_ok: bool) -> Result<MasterResponse, ErrorInfo> {
    if svc.faults.panic_in_request.is_some() {
        for p in req.paths() {
            svc.faults.request_path(p);
        }
    }
    use MasterRequest as R;
    match req {
        R::Mkdir { path, recursive, mode, uid, gid } => {
            namespace_ops::mkdir(svc, path, recursive, mode, uid, gid).await
        }
        R::Create { path, block_size, mode, uid, gid, overwrite, complete } => {
            namespace_ops::create(svc, path, block_size, mode, uid, gid, overwrite, complete).await
        }
        R::Rename { src, dst } => namespace_ops::rename(svc, src, dst).await,
        R::Delete { path, recursive } => namespace_ops::delete(svc, path, recursive).await,
        R::Unlink { path } => namespace_ops::unlink(svc, path).await,
        R::SetAttr { path, attrs } => namespace_ops::set_attr(svc, path, attrs).await,
        R::Symlink { target, link, uid, gid } => namespace_ops::symlink(svc, target, link, uid, gid).await,
        R::Mknod { path, kind, mode, rdev, uid, gid } => {
            namespace_ops::mknod(svc, path, kind, mode, rdev, uid, gid).await
        }
        R::Link { target, link } => namespace_ops::link(svc, target, link).await,
        R::SetXattr { path, name, value, flags } => namespace_ops::set_xattr(svc, path, name, value, flags).await,
        R::Xattrs { path } => namespace_ops::xattrs(svc, path, stale_ok).await,
        R::Stat { path } => namespace_ops::stat(svc, path, stale_ok).await,
        R::List { path } => namespace_ops::list(svc, path, stale_ok).await,
        R::ListPage { path, after, limit } => namespace_ops::list_page(svc, path, after, limit, stale_ok).await,
        R::Batch { client, seq, ops } => namespace_ops::batch(svc, client, seq, ops).await,
        R::AddBlock { inode, client_host, path } => blocks::add_block(svc, inode, client_host, path).await,
        R::Complete { inode, length, path } => blocks::complete(svc, inode, length, path).await,
        R::WriteInline { inode, path, data, attrs } => blocks::write_inline(svc, inode, path, data, attrs).await,
        R::CreateDetached { block_size, mode, uid, gid } => {
            blocks::create_detached(svc, block_size, mode, uid, gid).await
        }
        R::SwapContent { from, to, length, path } => blocks::swap_content(svc, from, to, length, path).await,
        R::GetBlocks { path } => blocks::get_blocks(svc, path, stale_ok).await,
        R::ReserveBlocks { count, client_host } => blocks::reserve_blocks(svc, count, client_host).await,
        R::SetContent { inode, path, blocks: b, length, block_size, attrs } => {
            blocks::set_content(svc, inode, path, b, length, block_size, attrs).await
        }
        R::ReserveInodes { count } => blocks::reserve_inodes(svc, count).await,
        R::Mount { info } => ufs_ops::mount(svc, info).await,
        R::Unmount { path } => ufs_ops::unmount(svc, path).await,
        R::Mounts => ufs_ops::mounts(svc).await,
        R::Persist { path } => ufs_ops::persist(svc, path).await,
        R::Free { path } => ufs_ops::free(svc, path).await,
        R::SetPin { path, pinned } => ufs_ops::set_pin(svc, path, pinned).await,
        R::SetTtl { path, ttl } => ufs_ops::set_ttl(svc, path, ttl).await,
        R::AddMaster { id, addr, mesh } => admin::add_master(svc, id, addr, mesh).await,
        R::RemoveMaster { id } => admin::remove_master(svc, id).await,
        R::Report => admin::report(svc).await,
        R::SetReplicas { path, replicas, recursive } => blocks::set_replicas(svc, path, replicas, recursive).await,
        R::Replication { path } => blocks::replication(svc, path).await,
        R::Decommission { worker_id, on } => admin::decommission(svc, worker_id, on).await,
        R::JournalInfo { digest } => Ok(MasterResponse::JournalInfo(svc.journal.info(digest).await?)),
        R::TakeSnapshot => {
            svc.journal.take_snapshot().await?;
            Ok(MasterResponse::JournalInfo(svc.journal.info(false).await?))
        }
        R::KeepAlive { .. } | R::Release { .. } | R::Lease { .. } | R::Lock { .. } | R::TestLock { .. } => {
            Ok(err(ErrorCode::Internal, "lease requests are answered before this"))
        }
    }
}

fn err(code: ErrorCode, msg: impl Into<String>) -> MasterResponse {
    MasterResponse::Error(ErrorInfo::new(code, msg))
}

/// The refusal of a block size outside the supported range, if it is.
fn bad_block_size(block_size: u64) -> Option<MasterResponse> {
    (!(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)).then(|| {
        err(
            ErrorCode::InvalidArgument,
            format!("block size {block_size} is outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}"),
        )
    })
}

fn check_path(p: &str) -> Result<(), ErrorInfo> {
    path::components(p).map(|_| ())
}

/// A read barrier unless the client accepts a stale answer from this master's local state.
async fn read_barrier(svc: &Services, stale_ok: bool) -> Result<(), ErrorInfo> {
    if stale_ok {
        Ok(())
    } else {
        svc.journal.read_barrier().await
    }
}

fn attr_of(r: ApplyResult) -> MasterResponse {
    match r {
        ApplyResult::Attr(a) | ApplyResult::Created { attr: a, .. } => MasterResponse::Attr(a),
        other => unexpected(other),
    }
}

fn freed_of(svc: &Services, r: ApplyResult) -> MasterResponse {
    match r {
        ApplyResult::Freed { blocks } => {
            svc.workers.free(blocks);
            MasterResponse::Done
        }
        other => unexpected(other),
    }
}

/// The attributes of an applied write that replaced content, its old blocks freed.
fn replaced(svc: &Services, r: ApplyResult) -> MasterResponse {
    match r {
        ApplyResult::Replaced { attr, freed } => {
            svc.workers.free(freed);
            MasterResponse::Attr(attr)
        }
        other => unexpected(other),
    }
}

fn unexpected(r: ApplyResult) -> MasterResponse {
    // Only after a NamespaceActor restart in the middle of a batch (see Namespace::apply).
    err(ErrorCode::Internal, format!("unexpected apply result {r:?}; retry the request"))
}
