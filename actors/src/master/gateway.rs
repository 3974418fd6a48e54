//! ClientGateway: the master's client RPC port. Each connection reads
//! request frames, handles every request in its own task (so one slow
//! commit does not hold up a stat) and writes responses as they finish,
//! tagged with the request id. A malformed frame gets a `Protocol` error
//! response and the connection is closed; other connections are untouched.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use strata_protocol::frame::{read_frame, write_frame, FrameKind, ReadFrameError, READ_BUFFER_BYTES};
use strata_protocol::journal::{ApplyResult, BatchOp, BatchOutcome, JournalEntry};
use strata_protocol::messages::{
    BlockLocation, ClusterReport, FileBlocks, FileType, MasterRequest, MasterResponse, RequestEnvelope,
    ResponseEnvelope,
};
use strata_protocol::path::is_under;
use strata_protocol::ufs::{UfsSource, WriteType};
use strata_protocol::{now_ms, path, ErrorCode, ErrorInfo, INLINE_MAX_BYTES, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::namespace_actor::{self, NamespaceMsg};
use super::raft::MasterNode;
use super::workers::{self, BlockList, PlaceRequest, WorkerManagerMsg};
use super::{journal, namespace::InodeRecord};
use super::{leases, mounts};
use crate::mesh::Wire;

/// Registered name of the ClientGateway.
pub const NAME: &str = "strata.gateway";
/// Largest request frame accepted on the client port.
pub const MAX_REQUEST_BYTES: u32 = 1024 * 1024;
/// Requests in flight per connection.
const IN_FLIGHT_PER_CONNECTION: usize = 256;

/// Messages to the gateway.
#[derive(RactorMessage)]
pub enum GatewayMsg {
    /// The bound address.
    Addr(ractor::RpcReplyPort<std::net::SocketAddr>),
}

/// The actor.
pub struct ClientGateway;

/// Arguments: the listener is bound by the node before the actor starts, so
/// the port is known (and printed) even when it was chosen by the OS; the
/// actor takes it over.
pub struct GatewayArgs {
    /// The bound listener (a fresh clone of it is used at each restart).
    pub listener: Arc<std::net::TcpListener>,
}

/// Gateway state.
pub struct GatewayState {
    accept: JoinHandle<()>,
    addr: std::net::SocketAddr,
}

impl Actor for ClientGateway {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = GatewayArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: GatewayArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let std_listener = args.listener.try_clone()?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = TcpListener::from_std(std_listener)?;
        let accept = crate::net::spawn_accept_loop(listener, 4096, serve_connection);
        Ok(GatewayState { accept, addr })
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        state.accept.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GatewayMsg::Addr(reply) => {
                let _ = reply.send(state.addr);
            }
        }
        Ok(())
    }
}

async fn serve_connection(stream: TcpStream) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, rd);
    let (tx, mut rx) = mpsc::channel::<ResponseEnvelope>(IN_FLIGHT_PER_CONNECTION);
    let writer = tokio::spawn(async move {
        while let Some(resp) = rx.recv().await {
            if write_frame(&mut wr, FrameKind::Response, &resp).await.is_err() {
                return;
            }
            // Flush only when no other response is ready: batches small replies.
            if rx.is_empty() && wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION));
    loop {
        match read_frame::<_, RequestEnvelope>(&mut rd, MAX_REQUEST_BYTES).await {
            Ok(Some((_, req))) => {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let span = tracing::debug_span!("rpc", id = req.id);
                    let _e = span.enter();
                    let body = handle_request(req.body, req.stale_ok, req.client).await;
                    let _ = tx.send(ResponseEnvelope { id: req.id, body }).await;
                    drop(permit);
                });
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "bad frame on the client port; closing the connection");
                if let ReadFrameError::Frame(e) = e {
                    let err = ErrorInfo::new(ErrorCode::Protocol, e.to_string());
                    let _ = tx.send(ResponseEnvelope { id: 0, body: MasterResponse::Error(err) }).await;
                }
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

fn err(code: ErrorCode, msg: impl Into<String>) -> MasterResponse {
    MasterResponse::Error(ErrorInfo::new(code, msg))
}

pub(super) async fn propose(entry: JournalEntry) -> Result<ApplyResult, ErrorInfo> {
    match journal::propose(entry).await? {
        ApplyResult::Error(e) => Err(e),
        other => Ok(other),
    }
}

pub(super) async fn ns_call<R: Send + 'static>(
    make: impl Fn(ractor::RpcReplyPort<R>) -> NamespaceMsg,
) -> Result<R, ErrorInfo> {
    namespace_actor::call(Duration::from_secs(5), make).await.map_err(|e| ErrorInfo::new(ErrorCode::Unavailable, e))
}

pub(super) async fn wm_call<R: Send + 'static>(
    make: impl FnOnce(ractor::RpcReplyPort<R>) -> WorkerManagerMsg,
) -> Result<R, ErrorInfo> {
    let wm = workers::actor().ok_or_else(|| ErrorInfo::new(ErrorCode::Unavailable, "worker manager is restarting"))?;
    match wm.call(make, Some(Duration::from_secs(10))).await {
        Ok(ractor::rpc::CallResult::Success(r)) => Ok(r),
        _ => Err(ErrorInfo::new(ErrorCode::Unavailable, "worker manager did not answer")),
    }
}

/// Tells the workers holding these blocks to drop them (their files are gone).
pub(super) fn free(blocks: Vec<u64>) {
    if !blocks.is_empty() {
        if let Some(wm) = workers::actor() {
            let _ = wm.cast(WorkerManagerMsg::Free(Wire(BlockList(blocks))));
        }
    }
}

/// Tells the workers holding blocks of the files at or below `path` to pin
/// or unpin them (delivered with their next heartbeat replies).
async fn tell_pin(path: &str, pinned: bool) -> Result<(), ErrorInfo> {
    let blocks: Vec<u64> = ns_call(|r| NamespaceMsg::Walk(path.to_string(), r))
        .await??
        .into_iter()
        .filter(|(_, rec)| rec.attr.file_type == FileType::File)
        .flat_map(|(_, rec)| rec.blocks)
        .collect();
    if let Some(wm) = workers::actor() {
        let list = Wire(BlockList(blocks));
        let _ = wm.cast(if pinned { WorkerManagerMsg::Pin(list) } else { WorkerManagerMsg::Unpin(list) });
    }
    Ok(())
}

fn check_path(p: &str) -> Result<(), ErrorInfo> {
    path::components(p).map(|_| ())
}

async fn handle_request(req: MasterRequest, stale_ok: bool, client: u64) -> MasterResponse {
    let r = match req {
        MasterRequest::KeepAlive { locks } => keep_alive(client, locks).await,
        MasterRequest::Release { paths } => {
            leases::release(client, &paths);
            Ok(MasterResponse::Done)
        }
        MasterRequest::Lease { path } => lease(client, path).await,
        MasterRequest::Lock { inode, owner, start, end, kind, pid, wait, reclaim } => {
            async {
                journal::read_barrier().await?;
                leases::lock(client, inode, owner, (start, end), kind, pid, wait, reclaim).await?;
                Ok(MasterResponse::Done)
            }
            .await
        }
        MasterRequest::TestLock { inode, owner, start, end, kind } => {
            async {
                journal::read_barrier().await?;
                Ok(MasterResponse::Conflict(leases::test_lock(client, inode, owner, (start, end), kind).await))
            }
            .await
        }
        req => {
            let _running = leases::admit(client, &req).await;
            handle(req, stale_ok).await
        }
    };
    r.unwrap_or_else(MasterResponse::Error)
}

/// Renews the client's leases once this master has shown it still leads.
async fn keep_alive(client: u64, locks: u64) -> Result<MasterResponse, ErrorInfo> {
    if client == 0 {
        return Err(ErrorInfo::new(ErrorCode::InvalidArgument, "a keep-alive needs a client id"));
    }
    journal::read_barrier().await?;
    let (dirs, reclaim) = leases::keep_alive(client, locks).await;
    Ok(MasterResponse::Recall { dirs, reclaim })
}

/// Leases a directory outside every UFS mount (a mount's changes need its
/// UFS at once, which a queued change would not reach).
async fn lease(client: u64, path: String) -> Result<MasterResponse, ErrorInfo> {
    check_path(&path)?;
    let mounted = mounts::mounts().await?.into_iter().find(|m| is_under(&m.path, &path) || is_under(&path, &m.path));
    if let Some(m) = mounted {
        return Err(ErrorInfo::new(
            ErrorCode::InvalidState,
            format!("{path} has the UFS mount {} in it or above it", m.path),
        ));
    }
    let entries = leases::grant(client, &path, async || {
        journal::read_barrier().await?;
        let a = ns_call(|r| NamespaceMsg::Stat(path.clone(), r)).await??;
        if a.file_type != FileType::Directory {
            return Err(ErrorInfo::new(ErrorCode::NotADirectory, format!("{path} is not a directory")));
        }
        ns_call(|r| NamespaceMsg::List(path.clone(), r)).await?
    })
    .await?;
    Ok(MasterResponse::Leased(entries))
}

/// A read barrier unless the client accepts a stale answer from this master's local state.
async fn read_barrier(stale_ok: bool) -> Result<(), ErrorInfo> {
    if stale_ok {
        Ok(())
    } else {
        journal::read_barrier().await
    }
}

async fn handle(req: MasterRequest, stale_ok: bool) -> Result<MasterResponse, ErrorInfo> {
    let t = now_ms();
    Ok(match req {
        MasterRequest::Mkdir { path, recursive, mode, uid, gid } => {
            check_path(&path)?;
            mounts::before_mkdir(&path).await?;
            attr_of(propose(JournalEntry::Mkdir { path, recursive, mode, uid, gid, time_ms: t }).await?)
        }
        MasterRequest::Create { path, block_size, mode, uid, gid, overwrite, complete } => {
            check_path(&path)?;
            mounts::ensure_synced(&path, false).await?;
            if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
                return Ok(err(
                    ErrorCode::InvalidArgument,
                    format!("block size {block_size} is outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}"),
                ));
            }
            match propose(JournalEntry::CreateFile {
                path: path.clone(),
                mode,
                uid,
                gid,
                block_size,
                overwrite,
                complete,
                time_ms: t,
            })
            .await?
            {
                ApplyResult::Created { attr, freed } => {
                    free(freed);
                    if complete {
                        after_write(&path, attr.inode).await?;
                    }
                    MasterResponse::Attr(attr)
                }
                other => unexpected(other),
            }
        }
        MasterRequest::AddBlock { inode, client_host, path } => {
            let ApplyResult::Block { block_id } = propose(JournalEntry::AddBlock { inode, time_ms: t }).await? else {
                return Ok(err(ErrorCode::Internal, "AddBlock applied without a block"));
            };
            let placement =
                wm_call(|r| WorkerManagerMsg::Place(Wire(PlaceRequest { client_host, length: 0 }), r)).await?.0;
            if placement.0.is_empty() {
                return Ok(err(ErrorCode::NoWorkers, "no live worker can take the block"));
            }
            // Async-through data lives only on workers until persisted: keep two copies.
            let copies = match mounts::mount_of(&path).await? {
                Some(m) if m.options.write_type == WriteType::AsyncThrough => m.options.replicas.max(1),
                _ => 1,
            };
            let block = BlockLocation { block_id, offset: 0, length: 0, workers: placement.0, from_ufs: false };
            MasterResponse::NewBlock { block, copies }
        }
        MasterRequest::Complete { inode, length, path } => {
            let r = attr_of(propose(JournalEntry::CompleteFile { inode, length, time_ms: t }).await?);
            after_write(&path, inode).await?;
            r
        }
        MasterRequest::SetXattr { path, name, value, flags } => {
            check_path(&path)?;
            match propose(JournalEntry::SetXattr { path, name, value, flags, time_ms: t }).await? {
                ApplyResult::Done => MasterResponse::Done,
                other => unexpected(other),
            }
        }
        MasterRequest::Xattrs { path } => {
            check_path(&path)?;
            read_barrier(stale_ok).await?;
            MasterResponse::Xattrs(ns_call(|r| NamespaceMsg::Xattrs(path.clone(), r)).await??)
        }
        MasterRequest::WriteInline { inode, path, data, attrs } => {
            check_path(&path)?;
            if data.len() as u64 > INLINE_MAX_BYTES {
                return Ok(err(ErrorCode::InlineRefused, format!("{} bytes is too big to keep inline", data.len())));
            }
            // A file under a mount goes to its UFS by its write type: as blocks.
            if mounts::mount_of(&path).await?.is_some() {
                return Ok(err(ErrorCode::InlineRefused, format!("{path} is under a UFS mount")));
            }
            match propose(JournalEntry::WriteInline { inode, data, attrs, time_ms: t }).await? {
                ApplyResult::Replaced { attr, freed } => {
                    free(freed);
                    MasterResponse::Attr(attr)
                }
                other => unexpected(other),
            }
        }
        MasterRequest::Rename { src, dst } => {
            check_path(&src)?;
            check_path(&dst)?;
            let work = mounts::before_rename(&src, &dst).await?;
            let r =
                freed_of(mounts::journal_change(work.pending, JournalEntry::Rename { src, dst, time_ms: t }).await?);
            if let Some((m, dst)) = work.refresh {
                mounts::after_rename(&m, &dst).await;
            }
            r
        }
        MasterRequest::Delete { path, recursive } => {
            check_path(&path)?;
            let pending = mounts::before_delete(&path, recursive, false).await?;
            freed_of(mounts::journal_change(pending, JournalEntry::Delete { path, recursive, time_ms: t }).await?)
        }
        MasterRequest::Unlink { path } => {
            check_path(&path)?;
            let mut pending = None;
            if mounts::mount_of(&path).await?.is_some() {
                // The UFS object goes first: make sure it is not a directory.
                mounts::ensure_synced(&path, false).await?;
                if ns_call(|r| NamespaceMsg::Stat(path.clone(), r)).await??.file_type == FileType::Directory {
                    return Ok(err(ErrorCode::IsADirectory, format!("{path} is a directory")));
                }
                pending = mounts::before_delete(&path, false, true).await?;
            }
            match mounts::journal_change(pending, JournalEntry::Unlink { path, time_ms: t }).await? {
                ApplyResult::Replaced { attr, freed } => {
                    free(freed);
                    MasterResponse::Attr(attr)
                }
                other => unexpected(other),
            }
        }
        MasterRequest::Mount { info } => {
            check_path(&info.path)?;
            mounts::mount(info).await?;
            MasterResponse::Done
        }
        MasterRequest::Unmount { path } => {
            check_path(&path)?;
            freed_of(propose(JournalEntry::Unmount { path, time_ms: t }).await?)
        }
        MasterRequest::Mounts => {
            journal::read_barrier().await?;
            MasterResponse::Mounts(mounts::redacted_mounts().await?)
        }
        MasterRequest::Persist { path } => {
            check_path(&path)?;
            mounts::ensure_synced(&path, false).await?;
            mounts::persist_tree(&path).await?;
            MasterResponse::Done
        }
        MasterRequest::Free { path } => {
            check_path(&path)?;
            mounts::ensure_synced(&path, false).await?;
            mounts::free_tree(&path).await?;
            MasterResponse::Done
        }
        MasterRequest::SetPin { path, pinned } => {
            check_path(&path)?;
            mounts::ensure_synced(&path, false).await?;
            let r = attr_of(propose(JournalEntry::SetPin { path: path.clone(), pinned, time_ms: t }).await?);
            if matches!(r, MasterResponse::Attr(_)) {
                tell_pin(&path, pinned).await?;
            }
            r
        }
        MasterRequest::SetTtl { path, ttl } => {
            check_path(&path)?;
            if ttl.is_some_and(|t| t.ttl_ms == 0) {
                return Err(ErrorInfo::new(
                    ErrorCode::InvalidArgument,
                    "a TTL must be longer than 0 (clear it instead)",
                ));
            }
            let m = mounts::mount_of(&path).await?;
            if m.is_none() && ttl.is_some_and(|t| t.action == strata_protocol::ufs::TtlAction::Persist) {
                return Err(ErrorInfo::new(
                    ErrorCode::InvalidArgument,
                    format!("{path} is not under a mount: TTL action persist needs a UFS"),
                ));
            }
            mounts::ensure_synced(&path, false).await?;
            attr_of(propose(JournalEntry::SetTtl { path, ttl, time_ms: t }).await?)
        }
        MasterRequest::Batch { client, seq, ops } => {
            for p in ops.iter().flat_map(BatchOp::paths) {
                check_path(p)?;
            }
            MasterResponse::Batch(batch(client, seq, ops).await?)
        }
        MasterRequest::SetAttr { path, attrs } => {
            check_path(&path)?;
            attr_of(propose(JournalEntry::SetAttr { path, attrs, time_ms: t }).await?)
        }
        MasterRequest::Symlink { target, link, uid, gid } => {
            check_path(&link)?;
            attr_of(propose(JournalEntry::Symlink { target, link, uid, gid, time_ms: t }).await?)
        }
        MasterRequest::Mknod { path, kind, mode, rdev, uid, gid } => {
            check_path(&path)?;
            attr_of(propose(JournalEntry::Mknod { path, kind, mode, rdev, uid, gid, time_ms: t }).await?)
        }
        MasterRequest::Link { target, link } => {
            check_path(&target)?;
            check_path(&link)?;
            attr_of(propose(JournalEntry::Link { target, link, time_ms: t }).await?)
        }
        MasterRequest::CreateDetached { block_size, mode, uid, gid } => {
            if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
                return Ok(err(
                    ErrorCode::InvalidArgument,
                    format!("block size {block_size} is outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}"),
                ));
            }
            attr_of(propose(JournalEntry::CreateDetached { mode, uid, gid, block_size, time_ms: t }).await?)
        }
        MasterRequest::SwapContent { from, to, length, path } => {
            let r = freed_of(propose(JournalEntry::SwapContent { from, to, length, time_ms: t }).await?);
            after_write(&path, to).await?;
            r
        }
        MasterRequest::Stat { path } => {
            check_path(&path)?;
            read_barrier(stale_ok).await?;
            mounts::ensure_synced(&path, false).await?;
            MasterResponse::Attr(ns_call(|r| NamespaceMsg::Stat(path.clone(), r)).await??)
        }
        MasterRequest::List { path } => {
            check_path(&path)?;
            read_barrier(stale_ok).await?;
            mounts::ensure_synced(&path, true).await?;
            MasterResponse::Listing(ns_call(|r| NamespaceMsg::List(path.clone(), r)).await??)
        }
        MasterRequest::GetBlocks { path } => {
            check_path(&path)?;
            read_barrier(stale_ok).await?;
            mounts::ensure_synced(&path, false).await?;
            let (rec, inline) = ns_call(|r| NamespaceMsg::FileContent(path.clone(), r)).await??;
            let mut fb = file_blocks_at(&path, rec).await?;
            fb.inline = inline;
            MasterResponse::Blocks(fb)
        }
        MasterRequest::ReserveBlocks { count, client_host } => {
            if !(1..=65_536).contains(&count) {
                return Ok(err(ErrorCode::InvalidArgument, format!("reserve 1..=65536 block ids, not {count}")));
            }
            let placement =
                wm_call(|r| WorkerManagerMsg::Place(Wire(PlaceRequest { client_host, length: 0 }), r)).await?.0;
            if placement.0.is_empty() {
                return Ok(err(ErrorCode::NoWorkers, "no live worker can take blocks"));
            }
            match propose(JournalEntry::ReserveBlocks { count: u64::from(count), time_ms: t }).await? {
                ApplyResult::Reserved { first } => MasterResponse::BlockIds { first, count, workers: placement.0 },
                other => unexpected(other),
            }
        }
        MasterRequest::SetContent { inode, path, blocks, length, block_size, attrs } => {
            check_path(&path)?;
            // Under a mount the write type decides where the blocks go
            // (and async-through keeps two copies): the block-by-block way.
            if mounts::mount_of(&path).await?.is_some() {
                return Ok(err(ErrorCode::InlineRefused, format!("{path} is under a UFS mount")));
            }
            let entry = JournalEntry::SetContent { inode, blocks, length, block_size, attrs, time_ms: t };
            match propose(entry).await? {
                ApplyResult::Replaced { attr, freed } => {
                    free(freed);
                    MasterResponse::Attr(attr)
                }
                other => unexpected(other),
            }
        }
        MasterRequest::ReserveInodes { count } => {
            if !(1..=65_536).contains(&count) {
                return Ok(err(ErrorCode::InvalidArgument, format!("reserve 1..=65536 inode numbers, not {count}")));
            }
            match propose(JournalEntry::ReserveInodes { count: u64::from(count), time_ms: t }).await? {
                ApplyResult::Reserved { first } => MasterResponse::Inodes { first, count },
                other => unexpected(other),
            }
        }
        MasterRequest::KeepAlive { .. }
        | MasterRequest::Release { .. }
        | MasterRequest::Lease { .. }
        | MasterRequest::Lock { .. }
        | MasterRequest::TestLock { .. } => {
            return Ok(err(ErrorCode::Internal, "lease requests are answered before this"));
        }
        MasterRequest::AddMaster { id, addr, mesh } => {
            let node = MasterNode { addr, mesh };
            journal::change_masters(|r| journal::JournalMsg::AddMaster(id, node, r)).await?;
            MasterResponse::Done
        }
        MasterRequest::RemoveMaster { id } => {
            journal::change_masters(|r| journal::JournalMsg::RemoveMaster(id, r)).await?;
            MasterResponse::Done
        }
        MasterRequest::Report => {
            // The leader has the complete picture (followers' progress); send
            // clients there. Without any leader, answer with this master's view.
            if let Err(e) = journal::read_barrier().await {
                if e.code == ErrorCode::NotLeader && !e.message.is_empty() {
                    return Err(e);
                }
            }
            let mut masters = Vec::new();
            if let Some(j) = journal::actor() {
                if let Ok(s) = ractor::call_t!(j, journal::JournalMsg::Members, 5000) {
                    masters = s;
                }
            }
            let workers = wm_call(WorkerManagerMsg::Report).await?.0 .0;
            let inodes = ns_call(NamespaceMsg::InodeCount).await?;
            MasterResponse::Report(ClusterReport { masters, workers, inodes })
        }
    })
}

/// A client's batch, in order: runs of ops in one journal entry each; an
/// op [`on_own`] says needs more as the request it stands for.
async fn batch(client: u64, seq: u64, ops: Vec<BatchOp>) -> Result<Vec<BatchOutcome>, ErrorInfo> {
    let mut out = Vec::with_capacity(ops.len());
    let mut run = Vec::new();
    let mut part = 0;
    for op in ops {
        if !on_own(&op).await? {
            run.push(op);
            continue;
        }
        out.extend(propose_run(client, seq, part, std::mem::take(&mut run)).await?);
        part += 1;
        let Some(req) = op.into_request() else {
            let e = ErrorInfo::new(ErrorCode::InvalidState, "a create under a lease cannot be in a UFS mount");
            out.push(BatchOutcome::Failed(e));
            continue;
        };
        out.push(match Box::pin(handle(req, false)).await {
            Ok(MasterResponse::Attr(attr)) => BatchOutcome::Done { attr: Some(attr), freed: Vec::new() },
            Ok(MasterResponse::Done) => BatchOutcome::Done { attr: None, freed: Vec::new() },
            Ok(MasterResponse::Error(e)) | Err(e) => BatchOutcome::Failed(e),
            Ok(other) => BatchOutcome::Failed(ErrorInfo::new(ErrorCode::Internal, format!("unexpected {other:?}"))),
        });
    }
    out.extend(propose_run(client, seq, part, run).await?);
    Ok(out)
}

/// Whether a batched op runs as a request of its own: one under a UFS
/// mount (its objects go first; a file there is written as blocks), or one
/// the request would refuse before journaling (its error comes from there).
async fn on_own(op: &BatchOp) -> Result<bool, ErrorInfo> {
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
        if mounts::mount_of(p).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Proposes a run of a client's batch as one entry (see `JournalEntry::ClientBatch`).
async fn propose_run(client: u64, seq: u64, part: u32, ops: Vec<BatchOp>) -> Result<Vec<BatchOutcome>, ErrorInfo> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let n = ops.len();
    let entry = JournalEntry::ClientBatch { client, seq, part, ops, time_ms: now_ms() };
    let ApplyResult::Batch(out) = propose(entry).await? else {
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
    free(freed);
    Ok(out)
}

/// Runs the write type of `path`'s mount once the file `inode` is complete.
async fn after_write(path: &str, inode: u64) -> Result<(), ErrorInfo> {
    if path.is_empty() || check_path(path).is_err() {
        return Ok(());
    }
    mounts::after_write(path, inode).await
}

/// A file's blocks; a persisted file under a mount also says where its
/// uncached blocks come from, and which workers should fetch them.
pub async fn file_blocks_at(path: &str, rec: InodeRecord) -> Result<FileBlocks, ErrorInfo> {
    let persisted = rec.ufs.as_ref().filter(|u| u.persisted).map(|u| u.fingerprint.clone());
    let mut fb = file_blocks(rec).await?;
    let Some(fingerprint) = persisted else { return Ok(fb) };
    let Some(m) = mounts::mount_of(path).await? else { return Ok(fb) };
    if fb.blocks.iter().any(|b| b.workers.is_empty()) {
        let placement =
            wm_call(|r| WorkerManagerMsg::Place(Wire(PlaceRequest { client_host: String::new(), length: 0 }), r))
                .await?
                .0;
        for (i, b) in fb.blocks.iter_mut().filter(|b| b.workers.is_empty()).enumerate() {
            // Spread misses of one file over the workers.
            let mut ws = placement.0.clone();
            if !ws.is_empty() {
                let n = ws.len();
                ws.rotate_left(i % n);
            }
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

/// A file's blocks and their cached locations.
pub async fn file_blocks(rec: InodeRecord) -> Result<FileBlocks, ErrorInfo> {
    if rec.attr.file_type != FileType::File {
        return Err(ErrorInfo::new(ErrorCode::IsADirectory, format!("inode {} is not a file", rec.attr.inode)));
    }
    let bs = rec.attr.block_size;
    let locs = wm_call(|r| WorkerManagerMsg::Locate(Wire(BlockList(rec.blocks.clone())), r)).await?.0 .0;
    let blocks = rec
        .blocks
        .iter()
        .zip(locs)
        .enumerate()
        .map(|(i, (b, workers))| {
            let offset = i as u64 * bs;
            let length = if rec.attr.complete { bs.min(rec.attr.size.saturating_sub(offset)) } else { bs };
            BlockLocation { block_id: *b, offset, length, workers, from_ufs: false }
        })
        .collect();
    Ok(FileBlocks { attr: rec.attr, blocks, ufs: None, inline: None })
}

fn attr_of(r: ApplyResult) -> MasterResponse {
    match r {
        ApplyResult::Attr(a) | ApplyResult::Created { attr: a, .. } => MasterResponse::Attr(a),
        other => unexpected(other),
    }
}

fn freed_of(r: ApplyResult) -> MasterResponse {
    match r {
        ApplyResult::Freed { blocks } => {
            free(blocks);
            MasterResponse::Done
        }
        other => unexpected(other),
    }
}

fn unexpected(r: ApplyResult) -> MasterResponse {
    // Only after a NamespaceActor restart in the middle of a batch (see Namespace::apply).
    err(ErrorCode::Internal, format!("unexpected apply result {r:?}; retry the request"))
}
