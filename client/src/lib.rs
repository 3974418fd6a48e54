//! The Strata client library: metadata calls to the master, block streams to
//! workers, sequential read-ahead and a block write pipeline.
//!
//! ```no_run
//! # async fn demo() -> Result<(), strata_client::ClientError> {
//! let client = strata_client::Client::connect(strata_client::ClientConfig::new("127.0.0.1:19998")).await?;
//! client.mkdir("/data", true).await?;
//! let mut w = client.create("/data/hello.txt", false).await?;
//! w.write(b"hello").await?;
//! w.close().await?;
//! let bytes = client.read_all("/data/hello.txt").await?;
//! assert_eq!(bytes, b"hello");
//! # Ok(()) }
//! ```

mod behind;
pub use behind::{LockRequest, RecallHook};
pub use strata_protocol::locks::{LockKind, RangeLock};
pub mod data;
mod error;
mod master;
mod reader;
mod writer;

use std::sync::Arc;
use std::time::Duration;

pub use error::ClientError;
pub use reader::FileReader;
pub use strata_protocol::messages::{Attr, ClusterReport, DirEntry, FileBlocks, FileType, SetAttrs};
pub use strata_protocol::ufs::{FileTtl, MountInfo, MountOptions, ReadType, TtlAction, UfsSpec, WriteType};
pub use strata_protocol::{ErrorCode, ErrorInfo};
pub use writer::FileWriter;

pub use strata_protocol::journal::BatchOp;
use strata_protocol::journal::BatchOutcome;
use strata_protocol::messages::{Copies, JournalInfo, MasterRequest, MasterResponse, LIST_PAGE_MAX};
pub use strata_protocol::messages::{FileReplication, Replicas};
use strata_protocol::{path, DEFAULT_BLOCK_SIZE};

/// Where reserved block ids are written: the workers the master offered
/// (one on this host first) and the copies to make.
#[derive(Debug, Clone)]
struct Offer {
    workers: Vec<strata_protocol::messages::WorkerAddr>,
    copies: Copies,
}

impl Default for Offer {
    fn default() -> Self {
        Offer { workers: Vec::new(), copies: Copies { want: 1, required: 1 } }
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Master client addresses, `host:port`, comma-separated when there are
    /// several; the client finds and follows the leader among them.
    pub master: String,
    /// How long a call keeps retrying through a leader change before failing.
    pub failover_timeout: Duration,
    /// Block size for files this client creates.
    pub block_size: u64,
    /// This client's host, for local-first placement.
    pub client_host: String,
    /// Timeout for one metadata call.
    pub rpc_timeout: Duration,
    /// Timeout for one block transfer.
    pub data_timeout: Duration,
    /// Owner of created files.
    pub uid: u32,
    /// Group of created files.
    pub gid: u32,
    /// Bytes fetched per read request (and prefetched ahead of a sequential reader).
    pub read_chunk_bytes: u64,
    /// Read blocks of workers on this host (`client_host`) straight from
    /// their block files, checksums verified, instead of over TCP.
    pub short_circuit: bool,
    /// Serve reads (stat, list, block locations) from any master's local
    /// state, without a read barrier through the leader: faster and
    /// available without a quorum, but possibly stale (a follower may not
    /// have applied the latest changes). Default: linearizable reads.
    pub stale_reads: bool,
}

/// The pages of a directory listing: see [`Client::list_pages`].
pub struct ListPages {
    client: Client,
    path: String,
    after: Option<String>,
    done: bool,
}

impl ListPages {
    /// The next page, or None after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<DirEntry>>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let req = MasterRequest::ListPage { path: self.path.clone(), after: self.after.clone(), limit: LIST_PAGE_MAX };
        match self.client.call(req).await? {
            MasterResponse::Page { entries, more } => {
                self.done = !more || entries.is_empty();
                self.after = entries.last().map(|e| e.name.clone());
                Ok(Some(entries))
            }
            other => Err(ClientError::unexpected(other)),
        }
    }
}

impl ClientConfig {
    /// Defaults for a master address.
    pub fn new(master: impl Into<String>) -> Self {
        ClientConfig {
            master: master.into(),
            failover_timeout: Duration::from_secs(15),
            block_size: DEFAULT_BLOCK_SIZE,
            client_host: "127.0.0.1".into(),
            rpc_timeout: Duration::from_secs(30),
            data_timeout: Duration::from_secs(120),
            uid: 0,
            gid: 0,
            read_chunk_bytes: 8 * 1024 * 1024,
            short_circuit: true,
            stale_reads: false,
        }
    }
}

/// Mode and owner of a new inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// A connection to a Strata cluster. Cheap to clone; safe to share.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ClientConfig,
    master: Arc<master::Masters>,
    data: data::DataPool,
    behind: Arc<behind::Behind>,
    /// Inode numbers reserved for creates under leases, not yet used.
    inodes: tokio::sync::Mutex<std::ops::Range<u64>>,
    /// Block ids reserved for blocks written before a file has them, not
    /// yet used, and the workers the master offered with them.
    block_ids: tokio::sync::Mutex<(std::ops::Range<u64>, Vec<strata_protocol::messages::WorkerAddr>, Copies)>,
    /// Bytes of blocks being written in the background.
    behind_bytes: std::sync::atomic::AtomicU64,
    /// Where the queue's flusher runs (callers may be outside the runtime).
    rt: tokio::runtime::Handle,
}

/// Inode numbers reserved at a time.
const RESERVE_INODES: u32 = 4096;

/// Block ids reserved at a time.
const RESERVE_BLOCKS: u32 = 1024;

/// Bytes of blocks written in the background at most at a time.
const MAX_BEHIND_BYTES: u64 = 64 << 20;

impl Client {
    /// Connects to the master.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, ClientError> {
        let id = rand::random::<u64>().max(1);
        let master = master::Masters::connect(&cfg.master, cfg.rpc_timeout, cfg.failover_timeout, id).await?;
        let data = data::DataPool::new(cfg.data_timeout);
        let (master, behind) = (Arc::new(master), Arc::new(behind::Behind::new()));
        let inodes = tokio::sync::Mutex::new(0..0);
        let block_ids = tokio::sync::Mutex::new((0..0, Vec::new(), Copies { want: 1, required: 1 }));
        let rt = tokio::runtime::Handle::current();
        let behind_bytes = Default::default();
        Ok(Client { inner: Arc::new(Inner { cfg, master, data, behind, inodes, block_ids, behind_bytes, rt }) })
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// The configured owner with a mode.
    fn owner(&self, mode: u32) -> Owner {
        Owner { mode, uid: self.inner.cfg.uid, gid: self.inner.cfg.gid }
    }

    async fn call(&self, req: MasterRequest) -> Result<MasterResponse, ClientError> {
        // A create, inline write or single delete carries the queued
        // changes: one commit for all.
        let req = match BatchOp::carrier(&req) {
            None => req,
            Some(op) => {
                let wants_attr = !matches!(op, BatchOp::Delete { .. });
                let path = op.paths().next().unwrap_or_default().to_string();
                match self.inner.behind.carry(&self.inner.master, op).await {
                    None => req,
                    Some(Ok(BatchOutcome::Done { attr: Some(a), .. })) if wants_attr => {
                        return Ok(MasterResponse::Attr(a))
                    }
                    Some(Ok(BatchOutcome::Done { .. })) if !wants_attr => return Ok(MasterResponse::Done),
                    // Applied by an earlier send whose answer was lost.
                    Some(Ok(BatchOutcome::AlreadyApplied)) if wants_attr => MasterRequest::Stat { path },
                    Some(Ok(BatchOutcome::AlreadyApplied)) => return Ok(MasterResponse::Done),
                    Some(Ok(BatchOutcome::Failed(e))) => return Err(ClientError::Remote(e)),
                    Some(Ok(other)) => return Err(ClientError::unexpected(MasterResponse::Batch(vec![other]))),
                    Some(Err(e)) => return Err(e),
                }
            }
        };
        self.inner.behind.before(&req).await;
        match self.inner.master.call(req, self.inner.cfg.stale_reads).await? {
            MasterResponse::Error(e) => Err(ClientError::Remote(e)),
            other => Ok(other),
        }
    }

    /// Sends any request as this client does (after the queued changes it
    /// depends on, to the leader); an error answer is an `Err`. For tools
    /// and tests that need a request no method makes.
    pub async fn call_raw(&self, req: MasterRequest) -> Result<MasterResponse, ClientError> {
        self.call(req).await
    }

    async fn call_attr(&self, req: MasterRequest) -> Result<Attr, ClientError> {
        match self.call(req).await? {
            MasterResponse::Attr(a) => Ok(a),
            other => Err(ClientError::unexpected(other)),
        }
    }

    async fn call_done(&self, req: MasterRequest) -> Result<(), ClientError> {
        match self.call(req).await? {
            MasterResponse::Done => Ok(()),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Creates a directory (with `recursive`, also its parents; an existing directory is fine).
    pub async fn mkdir(&self, p: &str, recursive: bool) -> Result<Attr, ClientError> {
        self.mkdir_as(p, recursive, self.owner(0o755)).await
    }

    /// Attributes of a path.
    pub async fn stat(&self, p: &str) -> Result<Attr, ClientError> {
        path::components(p)?;
        self.call_attr(MasterRequest::Stat { path: p.into() }).await
    }

    /// Lists a directory (a file lists as itself), in name order, a page
    /// at a time from the master ([`Client::list_pages`]) however large.
    pub async fn list(&self, p: &str) -> Result<Vec<DirEntry>, ClientError> {
        let mut pages = self.list_pages(p)?;
        let mut out = Vec::new();
        while let Some(page) = pages.next_page().await? {
            out.extend(page);
        }
        Ok(out)
    }

    /// A directory's entries as a stream of pages (up to
    /// [`LIST_PAGE_MAX`] entries each), in name order. Pages are read one
    /// after another: entries added or removed meanwhile may or may not
    /// show (as with readdir), none shows twice.
    pub fn list_pages(&self, p: &str) -> Result<ListPages, ClientError> {
        path::components(p)?;
        Ok(ListPages { client: self.clone(), path: p.to_string(), after: None, done: false })
    }

    /// Deletes a path (directories need `recursive` unless empty).
    pub async fn delete(&self, p: &str, recursive: bool) -> Result<(), ClientError> {
        path::components(p)?;
        self.call_done(MasterRequest::Delete { path: p.into(), recursive }).await
    }

    /// Removes a file, symlink or special file (unlink(2): never a
    /// directory); returns the removed inode's attributes.
    pub async fn unlink(&self, p: &str) -> Result<Attr, ClientError> {
        path::components(p)?;
        self.call_attr(MasterRequest::Unlink { path: p.into() }).await
    }

    /// Queues an unlink of `p` (see [`Client::flush_queued`]): for a caller
    /// that needs no answer, like a FUSE unlink of a file it does not have
    /// open. Later requests of this client touching `p` wait for it.
    pub async fn unlink_later(&self, p: &str) -> Result<(), ClientError> {
        path::components(p)?;
        self.queue(BatchOp::Unlink { path: p.into() });
        Ok(())
    }

    /// Queues a change of `p`'s mode, owner or times made at `time_ms` (the
    /// new ctime, which the caller has answered with): see
    /// [`Client::unlink_later`].
    pub async fn set_attr_later(&self, p: &str, attrs: SetAttrs, time_ms: i64) -> Result<(), ClientError> {
        path::components(p)?;
        self.queue(BatchOp::SetAttr { path: p.into(), attrs, time_ms });
        Ok(())
    }

    /// Queues a rename of `src` to `dst` made at `time_ms`: see
    /// [`Client::unlink_later`]. Later requests touching either name wait for it.
    pub async fn rename_later(&self, src: &str, dst: &str, time_ms: i64) -> Result<(), ClientError> {
        path::components(src)?;
        path::components(dst)?;
        self.queue(BatchOp::Rename { src: src.into(), dst: dst.into(), time_ms });
        Ok(())
    }

    fn queue(&self, op: BatchOp) {
        self.start_flusher(self.inner.behind.push(op));
    }

    /// Starts the queue's flusher task when `start` (a push said so).
    fn start_flusher(&self, start: bool) {
        if start {
            self.inner.rt.spawn(self.inner.behind.clone().run(self.inner.master.clone()));
        }
    }

    /// Leases the directory `p` and everything below it to this client
    /// (see `docs/architecture.md`, *Directory leases*): the lease's
    /// generation and the directory's entries, or None if the master will
    /// not lease it (a UFS mount in it or above it). The lease is renewed
    /// in the background and handed back when another client needs it,
    /// after the changes queued under it are sent.
    pub async fn lease(&self, p: &str) -> Result<Option<(u64, Vec<DirEntry>)>, ClientError> {
        path::components(p)?;
        self.inner.behind.before(&MasterRequest::Lease { path: p.into() }).await;
        self.inner.behind.lease(&self.inner.master, p).await
    }

    /// The generation of this client's lease covering `p`, while it holds
    /// one: nothing there changes but through this client.
    pub fn lease_of(&self, p: &str) -> Option<u64> {
        self.inner.behind.lease_of(p)
    }

    /// The generation of this client's lease covering `p` and how long it
    /// is good for without a renewal: what the client learnt under it may
    /// be kept that long (nobody else can have the lease before then).
    pub fn lease_left(&self, p: &str) -> Option<(u64, std::time::Duration)> {
        self.inner.behind.lease_left(p)
    }

    /// Runs `hook` whenever leases are recalled: after this client stopped
    /// using them, before it releases them to the client that asked (who
    /// then changes what they covered). A hook that takes longer than
    /// 200 ms is not waited for.
    pub fn on_recall(&self, hook: RecallHook) {
        self.inner.behind.on_recall(hook);
    }

    /// Queues `op`, whose paths are all under the lease of generation
    /// `generation` covering `path`, if this client still holds that lease;
    /// false: it does not (do the change synchronously).
    pub fn queue_leased(&self, generation: u64, path: &str, op: BatchOp) -> bool {
        debug_assert!(op.paths().all(|p| self.inner.behind.lease_of(p) == Some(generation)));
        let pushed = self.inner.behind.push_leased(generation, path, op);
        pushed.inspect(|start| self.start_flusher(*start)).is_some()
    }

    /// Queues the creation of the empty file `path` (mode 0644, owned by
    /// root, blocks of `block_size`) under the lease of generation
    /// `generation` covering it, with an inode reserved for it: a burst of
    /// these goes to the master in batches. False: the lease is gone
    /// (create the file synchronously).
    pub async fn queue_create_empty(&self, generation: u64, path: &str, block_size: u64) -> Result<bool, ClientError> {
        let inode = self.reserve_inode().await?;
        let op = BatchOp::CreateInode {
            path: path.to_string(),
            inode,
            kind: FileType::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            block_size,
            time_ms: strata_protocol::now_ms(),
        };
        Ok(self.queue_leased(generation, path, op))
    }

    /// Takes, changes or drops (`kind` None) a byte-range lock of this
    /// client's lock owner `r.owner`. Without `wait`, `WouldBlock` at once
    /// if another owner (here or on another client) holds a conflicting
    /// lock; with it, the master holds the request a while first (the
    /// caller asks again while it still wants to wait; beyond 32 such
    /// requests of this client at once, the rest wait in the client for
    /// one of them to end, as long). The locks last
    /// while this client keeps its session: a client that stops loses them
    /// a few seconds later.
    pub async fn lock(&self, r: LockRequest, wait: bool) -> Result<(), ClientError> {
        self.inner.behind.lock(&self.inner.master, r, wait).await
    }

    /// The lock another owner holds that keeps `owner` from taking `kind`
    /// on `start..=end` of `inode` (`F_GETLK`).
    pub async fn test_lock(
        &self,
        inode: u64,
        owner: u64,
        (start, end): (u64, u64),
        kind: LockKind,
    ) -> Result<Option<RangeLock>, ClientError> {
        match self.call(MasterRequest::TestLock { inode, owner, start, end, kind }).await? {
            MasterResponse::Conflict(l) => Ok(l),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Whether this client holds a lock of `owner` on `inode` (a close
    /// need not ask the master to drop the owner's locks otherwise).
    pub fn holds_lock(&self, inode: u64, owner: u64) -> bool {
        self.inner.behind.holds_lock(inode, owner)
    }

    /// This client's id: what the master knows its session and locks by.
    pub fn id(&self) -> u64 {
        self.inner.master.client
    }

    /// An inode number for a create under a lease (reserved from the
    /// master a few thousand at a time).
    pub async fn reserve_inode(&self) -> Result<u64, ClientError> {
        let mut pool = self.inner.inodes.lock().await;
        if pool.is_empty() {
            match self.inner.master.call(MasterRequest::ReserveInodes { count: RESERVE_INODES }, false).await? {
                MasterResponse::Inodes { first, count } => *pool = first..first + u64::from(count),
                MasterResponse::Error(e) => return Err(ClientError::Remote(e)),
                other => return Err(ClientError::unexpected(other)),
            }
        }
        Ok(pool.next().expect("refilled above"))
    }

    /// Writes `len` bytes of `file` as blocks of `block_size` under block
    /// ids reserved from the master (a thousand at a time), each to the
    /// first of the offered workers that takes it (one on this host
    /// first): the blocks for a [`Client::set_content`] or a queued
    /// `SetContentAt`, which make them a file's content in one journal
    /// entry. Blocks no file ever gets are dropped by their worker when it
    /// next registers, once the master's grace for reserved ids (10 min) is over.
    /// `durable`: fsync'd by the worker before it answers (see
    /// `DataRequest::Write`). `keep`: per block, the id of a block of the
    /// file's present content to keep in its place (not written), or None.
    pub async fn write_blocks(
        &self,
        file: &std::fs::File,
        len: u64,
        block_size: u64,
        durable: bool,
        keep: &[Option<u64>],
    ) -> Result<Vec<u64>, ClientError> {
        use std::os::unix::fs::FileExt;
        let n = len.div_ceil(block_size.max(1)) as usize;
        let kept = |i: usize| keep.get(i).copied().flatten();
        let fresh = (0..n).filter(|&i| kept(i).is_none()).count() as u64;
        let (mut ids, offer) = match fresh {
            0 => (Vec::new(), Offer::default()),
            _ => self.reserve_blocks(fresh).await?,
        };
        ids.reverse();
        let mut buf = vec![0u8; len.min(block_size) as usize];
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            if let Some(id) = kept(i) {
                out.push(id);
                continue;
            }
            let id = ids.pop().expect("one reserved per block not kept");
            let off = i as u64 * block_size;
            let chunk = &mut buf[..(len - off).min(block_size) as usize];
            file.read_exact_at(chunk, off)?;
            self.write_reserved(id, &offer, chunk, durable).await?;
            out.push(id);
        }
        Ok(out)
    }

    /// As [`Client::write_blocks`] for `data` in memory, but the blocks are
    /// written in the background: their ids now. A queued `SetContentAt`
    /// naming them is held back until they are written; if they could not
    /// be, it goes out naming an id the master refuses, so the change fails
    /// and the next [`Client::flush_queued`] reports it. Behind at most
    /// 64 MiB at a time; None when that is full (write them now instead).
    pub async fn write_blocks_behind(&self, data: Vec<u8>, block_size: u64) -> Result<Option<Vec<u64>>, ClientError> {
        let len = data.len() as u64;
        let behind = &self.inner.behind_bytes;
        if behind.fetch_add(len, std::sync::atomic::Ordering::Relaxed) + len > MAX_BEHIND_BYTES {
            behind.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
            return Ok(None);
        }
        let (ids, offer) = match self.reserve_blocks(len.div_ceil(block_size.max(1))).await {
            Ok(r) => r,
            Err(e) => {
                behind.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
                return Err(e);
            }
        };
        let done = self.inner.behind.writing(ids[0]);
        let (client, written) = (self.clone(), ids.clone());
        self.inner.rt.spawn(async move {
            let mut ok = true;
            for (chunk, id) in data.chunks(block_size as usize).zip(&written) {
                if let Err(e) = client.write_reserved(*id, &offer, chunk, false).await {
                    tracing::warn!(block = id, error = %e, "a block written behind failed");
                    ok = false;
                    break;
                }
            }
            client.inner.behind_bytes.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
            let _ = done.send(Some(ok));
        });
        Ok(Some(ids))
    }

    /// `n` block ids reserved from the master (a thousand at a time) and
    /// the workers to write them to, one on this host first.
    async fn reserve_blocks(&self, n: u64) -> Result<(Vec<u64>, Offer), ClientError> {
        let mut ids = Vec::with_capacity(n as usize);
        let mut pool = self.inner.block_ids.lock().await;
        while (ids.len() as u64) < n {
            if pool.0.is_empty() {
                let host = self.inner.cfg.client_host.clone();
                let req = MasterRequest::ReserveBlocks { count: RESERVE_BLOCKS, client_host: host };
                match self.inner.master.call(req, false).await? {
                    MasterResponse::BlockIds { first, count, workers, copies } => {
                        *pool = (first..first + u64::from(count), workers, copies)
                    }
                    MasterResponse::Error(e) => return Err(ClientError::Remote(e)),
                    other => return Err(ClientError::unexpected(other)),
                }
            }
            ids.push(pool.0.next().expect("refilled above"));
        }
        let mut workers = pool.1.clone();
        workers.sort_by_key(|w| !self.is_local(w));
        Ok((ids, Offer { workers, copies: pool.2 }))
    }

    /// Writes block `id` to as many of the offered workers as the offer
    /// asks for (see [`data::DataPool::write_copies`]).
    async fn write_reserved(&self, id: u64, offer: &Offer, data: &[u8], durable: bool) -> Result<(), ClientError> {
        let (workers, copies) = (&offer.workers, offer.copies);
        // A worker that could not commit the block to a master (the leader
        // is changing, or does not know the worker yet) answers
        // `Unavailable` and drops it: write it again until the failover
        // time is up, as metadata calls wait out an election.
        let (first, max) = (std::time::Duration::from_millis(50), std::time::Duration::from_millis(500));
        let mut backoff = master::Backoff::new(self.inner.cfg.failover_timeout, first, max);
        loop {
            let last = match self.inner.data.write_copies(workers, id, data, durable, copies).await {
                Ok(_) => return Ok(()),
                Err(e) => Some(e),
            };
            let retry = matches!(&last, Some(ClientError::Remote(e)) if e.code == ErrorCode::Unavailable);
            if retry && backoff.pause().await {
                continue;
            }
            // The offer may be stale (a worker left): ask anew next time.
            self.inner.block_ids.lock().await.0 = 0..0;
            return Err(last.unwrap_or_else(|| {
                ClientError::Remote(ErrorInfo::new(ErrorCode::NoWorkers, "no worker to write to"))
            }));
        }
    }

    /// Forgets blocks written behind that no queued change will name (the
    /// change could not be queued).
    pub fn abandon_behind(&self, first: u64) {
        self.inner.behind.abandon(first);
    }

    /// Makes `blocks` (written with [`Client::write_blocks`]) the content
    /// of file `inode` at `path`, `length` bytes, with `attrs` after it.
    pub async fn set_content(
        &self,
        inode: u64,
        path: &str,
        blocks: Vec<u64>,
        length: u64,
        block_size: u64,
        attrs: SetAttrs,
    ) -> Result<Attr, ClientError> {
        let req = MasterRequest::SetContent { inode, path: path.into(), blocks, length, block_size, attrs };
        self.call_attr(req).await
    }

    /// Waits until every queued change is applied; the first one the
    /// master refused since the last call, if any (the others are applied).
    pub async fn flush_queued(&self) -> Result<(), ClientError> {
        self.inner.behind.flush().await
    }

    /// Atomically renames `src` to `dst`, replacing a file at `dst`.
    pub async fn rename(&self, src: &str, dst: &str) -> Result<(), ClientError> {
        path::components(src)?;
        path::components(dst)?;
        self.call_done(MasterRequest::Rename { src: src.into(), dst: dst.into() }).await
    }

    /// Creates a symlink at `link` pointing to `target`.
    pub async fn symlink(&self, target: &str, link: &str) -> Result<Attr, ClientError> {
        let o = self.owner(0o777);
        self.symlink_as(target, link, o.uid, o.gid).await
    }

    /// Changes mode, owner or times.
    pub async fn set_attr(&self, p: &str, attrs: SetAttrs) -> Result<Attr, ClientError> {
        path::components(p)?;
        self.call_attr(MasterRequest::SetAttr { path: p.into(), attrs }).await
    }

    /// The cluster report.
    pub async fn report(&self) -> Result<ClusterReport, ClientError> {
        match self.call(MasterRequest::Report).await? {
            MasterResponse::Report(r) => Ok(r),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// The journal of the master at `addr` (client address), as that master
    /// sees it; with `digest`, a digest of its state machine too (a walk
    /// over its whole state).
    pub async fn journal_info(&self, addr: &str, digest: bool) -> Result<JournalInfo, ClientError> {
        self.journal_call(addr, MasterRequest::JournalInfo { digest }).await
    }

    /// Has the master at `addr` take a journal snapshot now; answers its
    /// journal once the snapshot is built.
    pub async fn take_snapshot(&self, addr: &str) -> Result<JournalInfo, ClientError> {
        self.journal_call(addr, MasterRequest::TakeSnapshot).await
    }

    async fn journal_call(&self, addr: &str, req: MasterRequest) -> Result<JournalInfo, ClientError> {
        match self.inner.master.call_at(addr, req).await? {
            MasterResponse::JournalInfo(j) => Ok(j),
            MasterResponse::Error(e) => Err(e.into()),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Whether worker `w` runs on this host and its blocks may be read
    /// straight from its files.
    pub(crate) fn is_local(&self, w: &strata_protocol::messages::WorkerAddr) -> bool {
        self.inner.cfg.short_circuit && w.host == self.inner.cfg.client_host
    }

    /// Adds master `id` (client address `addr`, mesh address `mesh`) to the
    /// Raft group: the leader replicates the journal to it as a learner and
    /// makes it a voter once it has caught up. The master must be running
    /// (`strata master --join`).
    pub async fn add_master(&self, id: u64, addr: &str, mesh: &str) -> Result<(), ClientError> {
        let req = MasterRequest::AddMaster { id, addr: addr.into(), mesh: mesh.into() };
        match self.call(req).await? {
            MasterResponse::Done => Ok(()),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Removes master `id` from the Raft group; that master stops serving.
    pub async fn remove_master(&self, id: u64) -> Result<(), ClientError> {
        match self.call(MasterRequest::RemoveMaster { id }).await? {
            MasterResponse::Done => Ok(()),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Starts (`on`) or stops decommissioning worker `worker_id`: no new
    /// blocks go to it and its blocks are copied elsewhere; `report` shows
    /// its progress (`decommissioned` once it may be stopped).
    pub async fn decommission(&self, worker_id: u64, on: bool) -> Result<(), ClientError> {
        match self.call(MasterRequest::Decommission { worker_id, on }).await? {
            MasterResponse::Done => Ok(()),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// A file's attributes and block locations.
    pub async fn blocks(&self, p: &str) -> Result<FileBlocks, ClientError> {
        path::components(p)?;
        match self.call(MasterRequest::GetBlocks { path: p.into() }).await? {
            MasterResponse::Blocks(b) => Ok(b),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Creates a file for writing with the client's block size.
    pub async fn create(&self, p: &str, overwrite: bool) -> Result<FileWriter, ClientError> {
        self.create_with_block_size(p, overwrite, self.inner.cfg.block_size).await
    }

    /// Creates a file for writing with a given block size.
    pub async fn create_with_block_size(
        &self,
        p: &str,
        overwrite: bool,
        block_size: u64,
    ) -> Result<FileWriter, ClientError> {
        self.create_as(p, overwrite, block_size, self.owner(0o644)).await
    }

    /// Creates an unnamed file whose content will replace that of the file
    /// at `target` with [`FileWriter::close_into`] (keeps its inode).
    pub async fn create_detached(&self, block_size: u64, target: &str) -> Result<FileWriter, ClientError> {
        let c = &self.inner.cfg;
        let attr =
            self.call_attr(MasterRequest::CreateDetached { block_size, mode: 0o644, uid: c.uid, gid: c.gid }).await?;
        Ok(FileWriter::new(self.clone(), target.to_string(), attr))
    }

    /// Sets (`value` Some) or removes extended attribute `name` of `p`;
    /// `flags` as in setxattr(2) (1 create only, 2 replace only).
    pub async fn set_xattr(&self, p: &str, name: &str, value: Option<Vec<u8>>, flags: u32) -> Result<(), ClientError> {
        path::components(p)?;
        self.call_done(MasterRequest::SetXattr { path: p.into(), name: name.into(), value, flags }).await
    }

    /// The extended attributes of `p`, by name.
    pub async fn xattrs(&self, p: &str) -> Result<Vec<(String, Vec<u8>)>, ClientError> {
        path::components(p)?;
        match self.call(MasterRequest::Xattrs { path: p.into() }).await? {
            MasterResponse::Xattrs(x) => Ok(x),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Makes `data` (at most `INLINE_MAX_BYTES`) the whole content of file
    /// `inode` at `path`, kept inline by the master, then applies `attrs`,
    /// in one journal entry. `InlineRefused` under a UFS mount: write blocks.
    pub async fn write_inline(
        &self,
        inode: u64,
        path: &str,
        data: Vec<u8>,
        attrs: SetAttrs,
    ) -> Result<Attr, ClientError> {
        self.call_attr(MasterRequest::WriteInline { inode, path: path.into(), data, attrs }).await
    }

    /// Atomically moves the content of the closed detached file `from` into
    /// file `to` at `path`.
    pub async fn swap_content(&self, from: u64, to: u64, path: &str) -> Result<(), ClientError> {
        self.call_done(MasterRequest::SwapContent { from, to, length: None, path: path.into() }).await
    }

    /// Mounts a UFS at `info.path`.
    pub async fn mount(&self, info: MountInfo) -> Result<(), ClientError> {
        path::components(&info.path)?;
        self.call_done(MasterRequest::Mount { info }).await
    }

    /// Removes the mount at `p` and its cached subtree (the UFS is untouched).
    pub async fn unmount(&self, p: &str) -> Result<(), ClientError> {
        path::components(p)?;
        self.call_done(MasterRequest::Unmount { path: p.into() }).await
    }

    /// The mount table (secret options shown as `***`).
    pub async fn mounts(&self) -> Result<Vec<MountInfo>, ClientError> {
        match self.call(MasterRequest::Mounts).await? {
            MasterResponse::Mounts(m) => Ok(m),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Persists every file under `p` to its UFS now.
    pub async fn persist(&self, p: &str) -> Result<(), ClientError> {
        path::components(p)?;
        self.call_done(MasterRequest::Persist { path: p.into() }).await
    }

    /// Drops the cached copies of persisted files under `p`.
    pub async fn free(&self, p: &str) -> Result<(), ClientError> {
        path::components(p)?;
        self.call_done(MasterRequest::Free { path: p.into() }).await
    }

    /// Sets (`Some`) or clears (`None`) the TTL of `p` and everything below
    /// it: once a file has not been modified for the TTL, its action
    /// applies (overriding the mount's TTL); files created later under the
    /// directory get it too. Answers `p`'s attributes.
    pub async fn set_ttl(&self, p: &str, ttl: Option<FileTtl>) -> Result<Attr, ClientError> {
        path::components(p)?;
        self.call_attr(MasterRequest::SetTtl { path: p.into(), ttl }).await
    }

    /// Pins (or unpins) `p` and everything below it: pinned files' cached
    /// blocks are never evicted; files created later under a pinned
    /// directory are pinned too. Answers `p`'s attributes.
    pub async fn set_pin(&self, p: &str, pinned: bool) -> Result<Attr, ClientError> {
        path::components(p)?;
        self.call_attr(MasterRequest::SetPin { path: p.into(), pinned }).await
    }

    /// Sets the replica counts of `p` (a directory passes them on to what
    /// is created in it) and, with `recursive`, of everything below it.
    pub async fn set_replicas(&self, p: &str, replicas: Replicas, recursive: bool) -> Result<Attr, ClientError> {
        path::components(p)?;
        self.call_attr(MasterRequest::SetReplicas { path: p.into(), replicas, recursive }).await
    }

    /// The blocks of the file at `p` with their live copies.
    pub async fn replication(&self, p: &str) -> Result<FileReplication, ClientError> {
        path::components(p)?;
        match self.call(MasterRequest::Replication { path: p.into() }).await? {
            MasterResponse::Replication(r) => Ok(r),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Warms the cache with every block of the file at `p` that only the
    /// UFS has; returns the bytes fetched.
    pub async fn load_file(&self, p: &str) -> Result<u64, ClientError> {
        let fb = self.blocks(p).await?;
        let Some(src) = fb.ufs else { return Ok(0) };
        // Four blocks in flight: the workers fetch them from the UFS in parallel.
        let mut tasks = tokio::task::JoinSet::new();
        let mut n = 0;
        for b in fb.blocks.into_iter().filter(|b| b.from_ufs) {
            if tasks.len() == 4 {
                tasks.join_next().await.expect("a task is running").map_err(join_error)??;
            }
            n += b.length;
            let (client, path, src) = (self.clone(), p.to_string(), src.clone());
            tasks.spawn(async move { reader::fetch(&client, &path, b, 0, 0, Some(&src)).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(join_error)??;
        }
        Ok(n)
    }

    /// Creates a directory with a given mode and owner.
    pub async fn mkdir_as(&self, p: &str, recursive: bool, o: Owner) -> Result<Attr, ClientError> {
        path::components(p)?;
        self.call_attr(MasterRequest::Mkdir { path: p.into(), recursive, mode: o.mode, uid: o.uid, gid: o.gid }).await
    }

    /// Creates a symlink owned by `uid:gid`.
    pub async fn symlink_as(&self, target: &str, link: &str, uid: u32, gid: u32) -> Result<Attr, ClientError> {
        path::components(link)?;
        self.call_attr(MasterRequest::Symlink { target: target.into(), link: link.into(), uid, gid }).await
    }

    /// Creates a special file (FIFO, socket, device).
    pub async fn mknod(&self, p: &str, kind: FileType, rdev: u32, o: Owner) -> Result<Attr, ClientError> {
        path::components(p)?;
        self.call_attr(MasterRequest::Mknod { path: p.into(), kind, mode: o.mode, rdev, uid: o.uid, gid: o.gid }).await
    }

    /// Adds the name `link` for the file at `target`.
    pub async fn link(&self, target: &str, link: &str) -> Result<Attr, ClientError> {
        path::components(target)?;
        path::components(link)?;
        self.call_attr(MasterRequest::Link { target: target.into(), link: link.into() }).await
    }

    /// Creates a file for writing with a given block size, mode and owner.
    pub async fn create_as(
        &self,
        p: &str,
        overwrite: bool,
        block_size: u64,
        o: Owner,
    ) -> Result<FileWriter, ClientError> {
        let attr = self.create_inode(p, overwrite, block_size, o, false).await?;
        Ok(FileWriter::new(self.clone(), p.to_string(), attr))
    }

    /// Creates an empty, complete file in one journal entry (no writer).
    pub async fn create_empty_as(&self, p: &str, block_size: u64, o: Owner) -> Result<Attr, ClientError> {
        self.create_inode(p, false, block_size, o, true).await
    }

    async fn create_inode(
        &self,
        p: &str,
        overwrite: bool,
        block_size: u64,
        o: Owner,
        complete: bool,
    ) -> Result<Attr, ClientError> {
        path::components(p)?;
        let req = MasterRequest::Create {
            path: p.into(),
            block_size,
            mode: o.mode,
            uid: o.uid,
            gid: o.gid,
            overwrite,
            complete,
        };
        self.call_attr(req).await
    }

    /// Reads up to `len` bytes at `off` of an open file (`file` as its open
    /// returned it) when that needs no request at all: an inline file, or a
    /// range inside one block whose local block file this client already
    /// has open (short-circuit). `None`: read through a [`FileReader`].
    /// Callable from any thread at once (FUSE's request threads), without
    /// the reader's lock.
    pub fn try_read_local(&self, file: &FileBlocks, off: u64, len: u64) -> Option<Vec<u8>> {
        let end = off.saturating_add(len).min(file.attr.size);
        if off >= end {
            return Some(Vec::new());
        }
        if let Some(data) = &file.inline {
            return data.get(off as usize..end as usize).map(<[u8]>::to_vec);
        }
        let b = self.local_block(file, off).filter(|b| end <= b.offset + b.length)?;
        self.inner.data.read_open_local(b.block_id, off - b.offset, end - off)
    }

    /// The block of `file` covering `off` if a worker on this host holds it
    /// (readable from its block file), not to be fetched from the UFS.
    pub(crate) fn local_block<'a>(
        &self,
        file: &'a FileBlocks,
        off: u64,
    ) -> Option<&'a strata_protocol::messages::BlockLocation> {
        let b = file.blocks.iter().find(|b| b.offset <= off && off < b.offset + b.length)?;
        let local = !(b.from_ufs && file.ufs.is_some()) && b.workers.iter().any(|w| self.is_local(w));
        local.then_some(b)
    }

    /// Opens a complete file for reading.
    pub async fn open(&self, p: &str) -> Result<FileReader, ClientError> {
        let blocks = self.blocks(p).await?;
        if !blocks.attr.complete {
            return Err(ClientError::Remote(ErrorInfo::new(
                ErrorCode::InvalidState,
                format!("{p} is still being written"),
            )));
        }
        Ok(FileReader::new(self.clone(), p.to_string(), blocks))
    }

    /// Reads a whole file into memory.
    pub async fn read_all(&self, p: &str) -> Result<Vec<u8>, ClientError> {
        let mut r = self.open(p).await?;
        let mut out = Vec::with_capacity(r.len() as usize);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }
}

fn join_error(e: tokio::task::JoinError) -> ClientError {
    ClientError::Remote(ErrorInfo::new(ErrorCode::Internal, e.to_string()))
}
