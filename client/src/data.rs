//! Block streams to workers' data ports, over pooled connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use strata_protocol::blockfile::{BlockError, OpenBlock};
use strata_protocol::frame::{read_frame, write_frame, FrameKind, ReadFrameError};
use strata_protocol::messages::{BlockLocation, Copies, DataRequest, DataResponse, WorkerAddr};
use strata_protocol::ufs::UfsSource;
use strata_protocol::{BlockId, ErrorCode, ErrorInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ClientError;

const MAX_RESPONSE_FRAME: u32 = 64 * 1024;
const IDLE_PER_WORKER: usize = 8;

/// Block files kept open for short-circuit reads, at most.
const MAX_LOCAL_OPEN: usize = 256;
/// Short-circuit reads up to this size run on the calling task; bigger
/// ones on the blocking pool.
const INLINE_READ_BYTES: u64 = 256 * 1024;

/// Pooled connections to workers' data ports.
pub struct DataPool {
    idle: Mutex<HashMap<String, Vec<TcpStream>>>,
    timeout: Duration,
    /// Blocks of workers on this host, opened for short-circuit reads.
    local: Mutex<HashMap<BlockId, Arc<OpenBlock>>>,
}

fn key(w: &WorkerAddr) -> String {
    format!("{}:{}", w.host, w.data_port)
}

impl DataPool {
    /// A pool whose requests time out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        DataPool { idle: Mutex::new(HashMap::new()), timeout, local: Mutex::new(HashMap::new()) }
    }

    async fn take(&self, addr: &str) -> Result<TcpStream, ClientError> {
        let pooled = self.idle.lock().get_mut(addr).and_then(|v| v.pop());
        if let Some(s) = pooled {
            return Ok(s);
        }
        let s = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout { what: format!("connecting to {addr}"), after: self.timeout })?
            .map_err(|source| ClientError::Connect { addr: addr.to_string(), source })?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    fn give_back(&self, addr: &str, s: TcpStream) {
        let mut idle = self.idle.lock();
        let v = idle.entry(addr.to_string()).or_default();
        if v.len() < IDLE_PER_WORKER {
            v.push(s);
        }
    }

    async fn response(addr: &str, s: &mut TcpStream) -> Result<DataResponse, ClientError> {
        match read_frame::<_, DataResponse>(s, MAX_RESPONSE_FRAME).await {
            Ok(Some((_, r))) => Ok(r),
            Ok(None) => Err(ClientError::Disconnected { addr: addr.into(), reason: "closed by the worker".into() }),
            Err(ReadFrameError::Io(e)) => Err(ClientError::Disconnected { addr: addr.into(), reason: e.to_string() }),
            Err(ReadFrameError::Frame(source)) => Err(ClientError::Protocol { addr: addr.into(), source }),
        }
    }

    /// Starts writing block `block_id` (`length` bytes whose crc32c is
    /// `crc`) to worker `w`, which passes it on along `forward`: send the
    /// bytes with [`Upload::send`], then [`Upload::finish`].
    pub async fn begin_write(
        &self,
        w: &WorkerAddr,
        block_id: BlockId,
        length: u64,
        crc: u32,
        durable: bool,
        forward: &[WorkerAddr],
    ) -> Result<Upload, ClientError> {
        let addr = key(w);
        let mut s = self.take(&addr).await?;
        let req = DataRequest::Write { block_id, length, crc, durable, forward: forward.to_vec() };
        let sent = tokio::time::timeout(self.timeout, write_frame(&mut s, FrameKind::Request, &req)).await;
        match sent {
            Ok(Ok(())) => Ok(Upload { addr, s, block_id, timeout: self.timeout }),
            Ok(Err(e)) => Err(ClientError::Disconnected { addr, reason: e.to_string() }),
            Err(_) => Err(ClientError::Timeout {
                what: format!("writing block {block_id:016x} to {addr}"),
                after: self.timeout,
            }),
        }
    }

    /// Writes a whole block to worker `w`, which passes it on along
    /// `forward` (a chain: the client sends the bytes once). Answers how
    /// many copies were stored: 1 + those along the chain that took it (a
    /// prefix of `forward`: a worker that fails ends the chain there).
    pub async fn write_block(
        &self,
        w: &WorkerAddr,
        block_id: BlockId,
        data: &[u8],
        durable: bool,
        forward: &[WorkerAddr],
    ) -> Result<u32, ClientError> {
        let crc = crc32c::crc32c(data);
        let mut up = self.begin_write(w, block_id, data.len() as u64, crc, durable, forward).await?;
        up.send(data).await?;
        up.finish(self).await
    }

    /// Has worker `w` copy a block from one of `sources` (the leader's
    /// repair): answers the tier the copy went to.
    pub async fn replicate(
        &self,
        w: &WorkerAddr,
        block_id: BlockId,
        length: u64,
        sources: &[WorkerAddr],
        clean: bool,
    ) -> Result<String, ClientError> {
        let req = DataRequest::Replicate { block_id, length, sources: sources.to_vec(), clean };
        match self.ask(w, &req).await? {
            DataResponse::WriteOk { tier, .. } => Ok(tier),
            DataResponse::Error(e) => Err(ClientError::Remote(e)),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Writes block `block_id` to `copies.want` of `workers` (best first):
    /// the bytes go once, down a chain of as many workers; if the chain
    /// ends early, the missing copies go down a chain of the next ones.
    /// Answers the copies stored, or an error with fewer than
    /// `copies.required`.
    pub async fn write_copies(
        &self,
        workers: &[WorkerAddr],
        block_id: BlockId,
        data: &[u8],
        durable: bool,
        copies: Copies,
    ) -> Result<u32, ClientError> {
        let want = copies.want.max(1);
        let (mut have, mut next, mut last) = (0u32, 0usize, None);
        while have < want && next < workers.len() {
            let chain = &workers[next..(next + (want - have) as usize).min(workers.len())];
            match self.write_block(&chain[0], block_id, data, durable, &chain[1..]).await {
                Ok(n) => have += n,
                Err(e) => {
                    tracing::debug!(worker = chain[0].worker_id, error = %e, "block write failed; trying the next worker");
                    last = Some(e);
                }
            }
            // A chain that ended early may have left its tail untried or
            // holding a copy: go on after it.
            next += chain.len();
        }
        if have >= copies.required.max(1) {
            return Ok(have);
        }
        Err(match last {
            Some(e) if have == 0 => e,
            _ => ClientError::Remote(ErrorInfo::new(
                ErrorCode::NoWorkers,
                format!("block {block_id:016x} reached {have} of the {} copies it needs", copies.required),
            )),
        })
    }

    /// Reads a range of a block from one worker.
    pub async fn read_block(
        &self,
        w: &WorkerAddr,
        block_id: BlockId,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, ClientError> {
        self.read(w, block_id, DataRequest::Read { block_id, offset, length }, length).await
    }

    /// Reads a range of a block of worker `w`, which runs on this host,
    /// straight from its block file (short-circuit): the worker says where
    /// the block is once, then reads are `pread`s verified against the
    /// block's checksums. Any failure here means: read through the worker.
    pub async fn read_local(
        &self,
        w: &WorkerAddr,
        block_id: BlockId,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let cached = self.local.lock().get(&block_id).cloned();
        let open = match cached {
            Some(o) => o,
            None => {
                let dir = match self.ask(w, &DataRequest::LocalDir { block_id }).await? {
                    DataResponse::LocalDir { dir } => dir,
                    DataResponse::Error(e) => return Err(ClientError::Remote(e)),
                    other => return Err(ClientError::unexpected(other)),
                };
                let o = tokio::task::spawn_blocking(move || OpenBlock::open(std::path::Path::new(&dir), block_id))
                    .await
                    .map_err(|e| ClientError::Remote(ErrorInfo::new(ErrorCode::Internal, e.to_string())))?
                    .map_err(block_error)?;
                let o = Arc::new(o);
                let mut local = self.local.lock();
                if local.len() >= MAX_LOCAL_OPEN {
                    local.clear();
                }
                local.insert(block_id, o.clone());
                o
            }
        };
        let r = if length <= INLINE_READ_BYTES {
            open.read(offset, length)
        } else {
            let o = open.clone();
            tokio::task::spawn_blocking(move || o.read(offset, length))
                .await
                .map_err(|e| ClientError::Remote(ErrorInfo::new(ErrorCode::Internal, e.to_string())))?
        };
        r.map_err(|e| {
            self.local.lock().remove(&block_id);
            block_error(e)
        })
    }

    /// Reads a range of a block whose file this client already has open
    /// (see [`DataPool::read_local`]), on the calling thread: no task, no
    /// round trip. `None` if the block is not open here or the read failed
    /// (the caller then takes the path that reports and falls back).
    pub fn read_open_local(&self, block_id: BlockId, offset: u64, length: u64) -> Option<Vec<u8>> {
        let open = self.local.lock().get(&block_id).cloned()?;
        match open.read(offset, length) {
            Ok(data) => Some(data),
            Err(e) => {
                tracing::debug!(block = block_id, error = %e, "short-circuit read failed");
                self.local.lock().remove(&block_id);
                None
            }
        }
    }

    /// One request, one response frame.
    async fn ask(&self, w: &WorkerAddr, req: &DataRequest) -> Result<DataResponse, ClientError> {
        let addr = key(w);
        let mut s = self.take(&addr).await?;
        let fut = async {
            write_frame(&mut s, FrameKind::Request, req)
                .await
                .map_err(|e| ClientError::Disconnected { addr: addr.clone(), reason: e.to_string() })?;
            s.flush().await?;
            Self::response(&addr, &mut s).await
        };
        let r = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout { what: format!("asking {addr}"), after: self.timeout })??;
        self.give_back(&addr, s);
        Ok(r)
    }

    /// Reads a range of a block only the UFS has, through worker `w`, which
    /// fetches (and, as the read type says, keeps) the whole block. A
    /// `length` of 0 only warms the block.
    pub async fn read_ufs(
        &self,
        w: &WorkerAddr,
        block: &BlockLocation,
        offset: u64,
        length: u64,
        source: &UfsSource,
    ) -> Result<Vec<u8>, ClientError> {
        let req = DataRequest::ReadUfs {
            block_id: block.block_id,
            offset,
            length,
            block_offset: block.offset,
            block_length: block.length,
            source: source.clone(),
        };
        self.read(w, block.block_id, req, length).await
    }

    async fn read(
        &self,
        w: &WorkerAddr,
        block_id: BlockId,
        req: DataRequest,
        length: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let addr = key(w);
        let mut s = self.take(&addr).await?;
        let fut = async {
            write_frame(&mut s, FrameKind::Request, &req)
                .await
                .map_err(|e| ClientError::Disconnected { addr: addr.clone(), reason: e.to_string() })?;
            s.flush().await?;
            match Self::response(&addr, &mut s).await? {
                DataResponse::ReadOk { length: n } => {
                    if n != length {
                        return Err(ClientError::Remote(ErrorInfo::new(
                            ErrorCode::Protocol,
                            format!("asked {length} bytes of block {block_id:016x}, worker announced {n}"),
                        )));
                    }
                    let mut buf = vec![0u8; n as usize];
                    s.read_exact(&mut buf)
                        .await
                        .map_err(|e| ClientError::Disconnected { addr: addr.clone(), reason: e.to_string() })?;
                    Ok(buf)
                }
                DataResponse::Error(e) => Err(ClientError::Remote(e)),
                other => Err(ClientError::unexpected(other)),
            }
        };
        let r = tokio::time::timeout(self.timeout, fut).await.map_err(|_| ClientError::Timeout {
            what: format!("reading block {block_id:016x} from {addr}"),
            after: self.timeout,
        });
        match r {
            Ok(Ok(buf)) => {
                self.give_back(&addr, s);
                Ok(buf)
            }
            Ok(Err(ClientError::Remote(e))) => {
                // The stream is still in sync after an error response.
                self.give_back(&addr, s);
                Err(ClientError::Remote(e))
            }
            Ok(Err(e)) | Err(e) => Err(e),
        }
    }
}

/// A block being written to a worker (see [`DataPool::begin_write`]).
pub struct Upload {
    addr: String,
    s: TcpStream,
    block_id: BlockId,
    timeout: Duration,
}

impl Upload {
    fn timed_out(&self) -> ClientError {
        ClientError::Timeout {
            what: format!("writing block {:016x} to {}", self.block_id, self.addr),
            after: self.timeout,
        }
    }

    /// Sends the next bytes of the block.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        match tokio::time::timeout(self.timeout, self.s.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ClientError::Disconnected { addr: self.addr.clone(), reason: e.to_string() }),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Waits for the worker's answer once every byte was sent: the copies
    /// stored (the connection goes back to `pool`).
    pub async fn finish(mut self, pool: &DataPool) -> Result<u32, ClientError> {
        let addr = self.addr.clone();
        let fut = async {
            self.s
                .flush()
                .await
                .map_err(|e| ClientError::Disconnected { addr: addr.clone(), reason: e.to_string() })?;
            DataPool::response(&addr, &mut self.s).await
        };
        let r = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r?,
            Err(_) => return Err(self.timed_out()),
        };
        match r {
            DataResponse::WriteOk { copies, .. } => {
                pool.give_back(&self.addr, self.s);
                Ok(copies.max(1))
            }
            DataResponse::Error(e) => Err(ClientError::Remote(e)),
            other => Err(ClientError::unexpected(other)),
        }
    }
}

fn block_error(e: BlockError) -> ClientError {
    let code = match e {
        BlockError::Checksum { .. } | BlockError::Corrupt { .. } => ErrorCode::ChecksumMismatch,
        BlockError::NotFound { .. } => ErrorCode::BlockNotFound,
        BlockError::OutOfRange { .. } => ErrorCode::InvalidArgument,
        BlockError::Io(_) => ErrorCode::Io,
    };
    ClientError::Remote(ErrorInfo::new(code, e.to_string()))
}
