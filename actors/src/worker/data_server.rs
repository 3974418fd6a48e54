//! DataServer: serves block bytes on the worker's data port. Block bytes
//! never enter actor messages: a request frame is followed (writes) or
//! answered (reads) by raw bytes on the socket, and disk I/O runs as
//! pread/pwrite on the blocking pool.
//!
//! A write is acknowledged only after the block is on its tier (fsync'd on
//! disk tiers) and the master has recorded its location. A malformed frame
//! gets a `Protocol` error and the connection is closed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use strata_protocol::frame::{read_frame, write_frame, FrameKind, ReadFrameError};
use strata_protocol::messages::{BlockLocation, DataRequest, DataResponse, WorkerAddr, MAX_REPLICAS};
use strata_protocol::ufs::{Fingerprint, ReadType, UfsSource, UfsSpec};
use strata_protocol::{BlockId, ErrorCode, ErrorInfo, WorkerId, MAX_BLOCK_SIZE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::replicator;
use super::store::BlockStore;
use super::tier::TierConfig;
use crate::supervisor::Scope;
use crate::ufs::{self, Ufs};

/// The DataServer's role in its node's registered names.
pub const ROLE: &str = "dataserver";
/// Largest request frame on the data port.
pub const MAX_REQUEST_BYTES: u32 = 64 * 1024;
/// Largest single read request.
pub const MAX_READ_BYTES: u64 = 16 * 1024 * 1024;
const IO_CHUNK: usize = 1024 * 1024;

/// Messages to the DataServer.
#[derive(RactorMessage)]
pub enum DataServerMsg {
    /// The bound address.
    Addr(ractor::RpcReplyPort<std::net::SocketAddr>),
}

/// Arguments.
#[derive(Clone)]
pub struct DataServerArgs {
    /// The bound listener (cloned at each restart).
    pub listener: Arc<std::net::TcpListener>,
    /// Tiers, fastest first.
    pub tiers: Vec<TierConfig>,
    /// This worker.
    pub worker_id: WorkerId,
    /// This worker's registered names.
    pub scope: Scope,
}

/// The actor.
pub struct DataServer;

/// State.
pub struct DataServerState {
    _accept: crate::net::AbortOnDrop,
    addr: std::net::SocketAddr,
}

/// What the connections of one DataServer incarnation share (made afresh
/// when it restarts).
struct Ctx {
    store: BlockStore,
    /// One UFS fetch per block at a time.
    miss_locks: Mutex<HashMap<BlockId, Arc<tokio::sync::Mutex<()>>>>,
    /// Connections to peer workers (blocks of a file being persisted).
    peers: strata_client::data::DataPool,
    /// UFS operators, by spec.
    ufs: Ufs,
}

impl Ctx {
    /// The lock of `block_id`'s UFS fetch.
    fn miss_lock(&self, block_id: BlockId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.miss_locks.lock();
        if locks.len() > 1024 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(block_id).or_default().clone()
    }
}

impl Actor for DataServer {
    type Msg = DataServerMsg;
    type State = DataServerState;
    type Arguments = DataServerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: DataServerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let l = args.listener.try_clone()?;
        l.set_nonblocking(true)?;
        let addr = l.local_addr()?;
        let ctx = Arc::new(Ctx {
            store: BlockStore { tiers: args.tiers, worker_id: args.worker_id, scope: args.scope },
            miss_locks: Mutex::default(),
            peers: strata_client::data::DataPool::new(Duration::from_secs(60)),
            ufs: Ufs::default(),
        });
        let accept = crate::net::spawn_accept_loop(TcpListener::from_std(l)?, 4096, move |s| serve(s, ctx.clone()));
        Ok(DataServerState { _accept: crate::net::AbortOnDrop(accept), addr })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DataServerMsg::Addr(r) => {
                let _ = r.send(st.addr);
            }
        }
        Ok(())
    }
}

async fn respond(stream: &mut TcpStream, r: &DataResponse) -> bool {
    write_frame(stream, FrameKind::Response, r).await.is_ok() && stream.flush().await.is_ok()
}

async fn serve(mut stream: TcpStream, ctx: Arc<Ctx>) {
    loop {
        let req = match read_frame::<_, DataRequest>(&mut stream, MAX_REQUEST_BYTES).await {
            Ok(Some((_, req))) => req,
            Ok(None) => return,
            Err(ReadFrameError::Frame(e)) => {
                let _ = respond(&mut stream, &DataResponse::Error(ErrorInfo::new(ErrorCode::Protocol, e.to_string())))
                    .await;
                return;
            }
            Err(ReadFrameError::Io(_)) => return,
        };
        let keep_going = match req {
            DataRequest::Read { block_id, offset, length } => {
                serve_read(&mut stream, &ctx, block_id, offset, length).await
            }
            DataRequest::Write { block_id, length, crc, durable, forward } => {
                serve_write(&mut stream, &ctx, block_id, length, crc, durable, forward).await
            }
            DataRequest::Replicate { block_id, length, sources, clean } => {
                let task = replicator::CopyTask { block_id, length, sources, clean };
                let r = match replicator::copy(&ctx.store.scope, task).await {
                    Ok(tier) => DataResponse::WriteOk { tier, copies: 1 },
                    Err(e) => DataResponse::Error(e),
                };
                respond(&mut stream, &r).await
            }
            DataRequest::ReadUfs { block_id, offset, length, block_offset, block_length, source } => {
                let miss = UfsMiss { block_id, block_offset, block_length, source };
                serve_read_ufs(&mut stream, &ctx, miss, offset, length).await
            }
            DataRequest::Persist { spec, key, blocks, length } => {
                let r = match persist(&ctx, &spec, &key, &blocks, length).await {
                    Ok(fp) => DataResponse::Persisted(fp),
                    Err(e) => {
                        tracing::warn!(key = %key, uri = %spec.uri, error = %e, "persist failed");
                        DataResponse::Error(e)
                    }
                };
                respond(&mut stream, &r).await
            }
            DataRequest::LocalDir { block_id } => {
                let r = match ctx.store.find_block(block_id).await {
                    Ok((tier, _)) => DataResponse::LocalDir { dir: tier.dir.display().to_string() },
                    Err(e) => DataResponse::Error(e),
                };
                respond(&mut stream, &r).await
            }
        };
        if !keep_going {
            return;
        }
    }
}

async fn serve_read(stream: &mut TcpStream, ctx: &Ctx, block_id: BlockId, offset: u64, length: u64) -> bool {
    let result = if length > MAX_READ_BYTES {
        Err(ErrorInfo::new(ErrorCode::InvalidArgument, format!("read of {length} bytes exceeds {MAX_READ_BYTES}")))
    } else {
        ctx.store.read(block_id, offset, length).await
    };
    match result {
        Ok(bytes) => send_bytes(stream, &bytes).await,
        Err(e) => respond(stream, &DataResponse::Error(e)).await,
    }
}

/// A block to read from the UFS.
struct UfsMiss {
    block_id: BlockId,
    block_offset: u64,
    block_length: u64,
    source: UfsSource,
}

async fn send_bytes(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    respond_header(stream, &DataResponse::ReadOk { length: bytes.len() as u64 }).await
        && stream.write_all(bytes).await.is_ok()
        && stream.flush().await.is_ok()
}

/// A read of a block only the UFS has. With a caching read type the whole
/// block is fetched once (concurrent misses wait for the first) and kept
/// clean; with `no-cache` only the asked range is read and nothing is kept.
async fn serve_read_ufs(stream: &mut TcpStream, ctx: &Ctx, miss: UfsMiss, offset: u64, length: u64) -> bool {
    let bad = if length > MAX_READ_BYTES {
        Some(format!("read of {length} bytes exceeds {MAX_READ_BYTES}"))
    } else if offset.checked_add(length).is_none_or(|end| end > miss.block_length) {
        Some(format!("range {offset}+{length} is outside the block's {} bytes", miss.block_length))
    } else {
        None
    };
    if let Some(msg) = bad {
        return respond(stream, &DataResponse::Error(ErrorInfo::new(ErrorCode::InvalidArgument, msg))).await;
    }
    if ctx.store.find_block(miss.block_id).await.is_ok() {
        return serve_read(stream, ctx, miss.block_id, offset, length).await;
    }
    let r = if miss.source.read_type == ReadType::NoCache {
        ufs_range(ctx, &miss.source, miss.block_offset + offset, length).await.map(Some)
    } else {
        fetch_and_cache(ctx, &miss).await.map(|b| b.map(|b| b[offset as usize..(offset + length) as usize].to_vec()))
    };
    match r {
        Ok(Some(bytes)) => send_bytes(stream, &bytes).await,
        Ok(None) => serve_read(stream, ctx, miss.block_id, offset, length).await,
        Err(e) => respond(stream, &DataResponse::Error(e)).await,
    }
}

/// Fetches a whole block from the UFS and keeps it; `None` if another
/// request cached it meanwhile. A block that cannot be kept (no space) is
/// still served.
async fn fetch_and_cache(ctx: &Ctx, miss: &UfsMiss) -> Result<Option<Arc<Vec<u8>>>, ErrorInfo> {
    let lock = ctx.miss_lock(miss.block_id);
    let _g = lock.lock().await;
    if ctx.store.find_block(miss.block_id).await.is_ok() {
        return Ok(None);
    }
    let data = Arc::new(ufs_range(ctx, &miss.source, miss.block_offset, miss.block_length).await?);
    let promote = miss.source.read_type == ReadType::CachePromote;
    if let Err(e) = ctx.store.store_bytes(miss.block_id, data.clone(), promote, true).await {
        tracing::warn!(block = miss.block_id, error = %e, "serving a UFS block without caching it");
    }
    Ok(Some(data))
}

/// Reads `length` bytes at `offset` of a UFS object, refusing an object
/// that changed since the namespace loaded it.
async fn ufs_range(ctx: &Ctx, src: &UfsSource, offset: u64, length: u64) -> Result<Vec<u8>, ErrorInfo> {
    if length == 0 {
        return Ok(Vec::new());
    }
    let op = ctx.ufs.operator(&src.spec)?;
    let mut read = op.read_with(&src.key).range(offset..offset + length);
    let etag = src.fingerprint.etag.as_ref().map(|e| format!("\"{e}\""));
    if let Some(e) = etag.as_deref().filter(|_| op.info().capability().read_with_if_match) {
        read = read.if_match(e);
    }
    let buf = read.await.map_err(|e| {
        if e.kind() == opendal::ErrorKind::ConditionNotMatch {
            ErrorInfo::new(
                ErrorCode::InvalidState,
                format!("{} changed in the UFS; it reloads at the next sync", src.key),
            )
        } else {
            ufs::ufs_error(&src.spec, &format!("reading {}", src.key), e)
        }
    })?;
    if buf.len() as u64 != length {
        return Err(ErrorInfo::new(
            ErrorCode::InvalidState,
            format!(
                "{} changed in the UFS: {} bytes at {offset} instead of {length}; it reloads at the next sync",
                src.key,
                buf.len()
            ),
        ));
    }
    Ok(buf.to_vec())
}

/// A range of a block from this worker's tiers or a peer holding it.
async fn block_range(ctx: &Ctx, b: &BlockLocation, offset: u64, length: u64) -> Result<Vec<u8>, ErrorInfo> {
    let mut last = match ctx.store.read(b.block_id, offset, length).await {
        Ok(bytes) => return Ok(bytes),
        Err(e) if e.code == ErrorCode::BlockNotFound => {
            ErrorInfo::new(ErrorCode::BlockNotFound, format!("block {:016x} has no live copy", b.block_id))
        }
        Err(e) => e,
    };
    for w in b.workers.iter().filter(|w| w.worker_id != ctx.store.worker_id) {
        match ctx.peers.read_block(w, b.block_id, offset, length).await {
            Ok(bytes) => return Ok(bytes),
            Err(e) => last = ErrorInfo::new(e.code(), e.to_string()),
        }
    }
    Err(last)
}

/// Writes a file's blocks, in order, to `key` in the UFS (multipart on
/// object stores) and returns the object's version.
async fn persist(
    ctx: &Ctx,
    spec: &UfsSpec,
    key: &str,
    blocks: &[BlockLocation],
    length: u64,
) -> Result<Fingerprint, ErrorInfo> {
    const CHUNK: u64 = 8 << 20;
    let op = ctx.ufs.operator(spec)?;
    let mut w = op
        .writer_with(key)
        .chunk(CHUNK as usize)
        .await
        .map_err(|e| ufs::ufs_error(spec, &format!("writing {key}"), e))?;
    let mut written = 0u64;
    for b in blocks {
        let mut off = 0;
        while off < b.length {
            let n = (b.length - off).min(CHUNK);
            let bytes = match block_range(ctx, b, off, n).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(e);
                }
            };
            if let Err(e) = w.write(bytes).await {
                let _ = w.abort().await;
                return Err(ufs::ufs_error(spec, &format!("writing {key}"), e));
            }
            off += n;
            written += n;
        }
    }
    if written != length {
        let _ = w.abort().await;
        return Err(ErrorInfo::new(ErrorCode::InvalidState, format!("blocks hold {written} bytes, the file {length}")));
    }
    w.close().await.map_err(|e| ufs::ufs_error(spec, &format!("completing {key}"), e))?;
    let fp = ctx
        .ufs
        .stat(spec, key)
        .await?
        .ok_or_else(|| ErrorInfo::new(ErrorCode::Ufs, format!("{key} is missing right after it was written")))?;
    if fp.size != length {
        return Err(ErrorInfo::new(ErrorCode::Ufs, format!("{key} has {} bytes after writing {length}", fp.size)));
    }
    Ok(fp)
}

async fn respond_header(stream: &mut TcpStream, r: &DataResponse) -> bool {
    write_frame(stream, FrameKind::Response, r).await.is_ok()
}

/// Receives a block (`length` bytes, whole-block crc32c `crc`) into a
/// block file and, when `forward` names workers, passes every piece on to
/// the first of them (with the rest of the list) while writing it here:
/// a chain, as HDFS's pipeline, so the writer sends the bytes once for
/// every copy. Answers the copies stored: this one plus those the chain
/// reports (a worker down the chain that fails ends it there; the copies
/// before it stand).
async fn serve_write(
    stream: &mut TcpStream,
    ctx: &Ctx,
    block_id: BlockId,
    length: u64,
    crc: u32,
    durable: bool,
    forward: Vec<WorkerAddr>,
) -> bool {
    let bad = if length > MAX_BLOCK_SIZE {
        Some(format!("block of {length} bytes exceeds {MAX_BLOCK_SIZE}"))
    } else if forward.len() >= usize::from(MAX_REPLICAS) {
        Some(format!("a chain of {} workers is longer than {MAX_REPLICAS} copies", forward.len() + 1))
    } else {
        None
    };
    if let Some(msg) = bad {
        let _ = respond(stream, &DataResponse::Error(ErrorInfo::new(ErrorCode::InvalidArgument, msg))).await;
        return false; // the announced bytes are not read: close
    }
    let store = &ctx.store;
    if let Ok((tier, _)) = store.find_block(block_id).await {
        // Written here before (a retried write): this copy stands.
        if !drain(stream, length).await {
            return false;
        }
        return respond(stream, &DataResponse::WriteOk { tier: tier.name, copies: 1 }).await;
    }
    let tier = match store.reserve(length, false).await {
        Ok(t) => t,
        Err(e) => {
            // Read the announced bytes so the error arrives in order and the
            // connection stays usable.
            if !drain(stream, length).await {
                return false;
            }
            return respond(stream, &DataResponse::Error(e)).await;
        }
    };
    let mut writer = match store.create(&tier, block_id, length).await {
        Ok(w) => w,
        Err(e) => {
            let _ = respond(stream, &DataResponse::Error(e)).await;
            return false;
        }
    };
    let mut down = match forward.split_first() {
        Some((next, rest)) => match ctx.peers.begin_write(next, block_id, length, crc, durable, rest).await {
            Ok(up) => Some(up),
            Err(e) => {
                tracing::warn!(block = block_id, worker = next.worker_id, error = %e, "cannot forward the block");
                None
            }
        },
        None => None,
    };
    // Receive 1 MiB at a time; write each piece here and send it down the
    // chain at once.
    let mut remaining = length;
    let mut actual_crc = 0u32;
    let mut buf = vec![0u8; IO_CHUNK];
    while remaining > 0 {
        let n = (remaining as usize).min(IO_CHUNK);
        if stream.read_exact(&mut buf[..n]).await.is_err() {
            writer.abort();
            store.release(&tier, length);
            return false;
        }
        actual_crc = crc32c::crc32c_append(actual_crc, &buf[..n]);
        let piece = Arc::new(std::mem::take(&mut buf));
        let local = {
            let piece = piece.clone();
            tokio::task::spawn_blocking(move || {
                let r = writer.write(&piece[..n]);
                (writer, r)
            })
        };
        let sent = async {
            match down.as_mut() {
                Some(up) => up.send(&piece[..n]).await.map_err(|e| e.to_string()),
                None => Ok(()),
            }
        };
        let (local, sent) = tokio::join!(local, sent);
        if let Err(e) = sent {
            tracing::warn!(block = block_id, error = %e, "forwarding the block failed; the chain ends here");
            down = None;
        }
        buf = Arc::try_unwrap(piece).unwrap_or_else(|p| p.to_vec());
        let Ok((w, r)) = local else {
            store.release(&tier, length);
            return false;
        };
        writer = w;
        if let Err(e) = r {
            writer.abort();
            store.release(&tier, length);
            let code = if e.raw_os_error() == Some(libc::ENOSPC) { ErrorCode::NoSpace } else { ErrorCode::Io };
            let _ = respond(stream, &DataResponse::Error(ErrorInfo::new(code, format!("writing block: {e}")))).await;
            return false;
        }
        remaining -= n as u64;
    }
    if actual_crc != crc {
        writer.abort();
        store.release(&tier, length);
        let e = ErrorInfo::new(ErrorCode::ChecksumMismatch, format!("block {block_id:016x} arrived damaged"));
        return respond(stream, &DataResponse::Error(e)).await;
    }
    let sealed = store.seal(&tier, writer, block_id, length, false, durable);
    let chained = async {
        match down {
            Some(up) => up.finish(&ctx.peers).await.unwrap_or_else(|e| {
                tracing::warn!(block = block_id, error = %e, "the chain below this worker failed");
                0
            }),
            None => 0,
        }
    };
    let (sealed, chained) = tokio::join!(sealed, chained);
    match sealed {
        Ok(()) => respond(stream, &DataResponse::WriteOk { tier: tier.name.clone(), copies: 1 + chained }).await,
        Err(e) => respond(stream, &DataResponse::Error(e)).await,
    }
}

/// Reads and discards `n` bytes.
async fn drain(stream: &mut TcpStream, n: u64) -> bool {
    let mut sink = tokio::io::sink();
    matches!(tokio::io::copy(&mut (&mut *stream).take(n), &mut sink).await, Ok(copied) if copied == n)
}
