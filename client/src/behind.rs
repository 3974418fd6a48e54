//! Write-behind of unlinks, attribute changes and renames. A caller that
//! needs no answer from the master (a FUSE unlink of a file no handle in
//! the mount has open: `rm -rf`; a chmod or utimes whose result the mount
//! can tell; a rename of a file it knows) queues the change and goes on; one
//! task per client sends the queue in order as `Batch` requests, each
//! committed as one journal entry, so a burst of them costs one log write
//! instead of one round trip and fsync each.
//!
//! Order and visibility: every other request of this client that touches a
//! queued path, one above it or one below it first waits until those ops
//! are applied, so the client reads its own changes and never reorders two
//! changes to one file. [`Behind::flush`] (fsync, unmount) waits for
//! everything queued so far and reports ops the master refused. Other
//! clients see a queued change once its batch commits (about one commit
//! latency later). A batch whose answer was lost (the master failed over)
//! is sent again under the same number; the master applies each number once.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use strata_protocol::journal::{BatchOp, BatchOutcome};
use strata_protocol::locks::{set_in, LockKind, LockSet};
use strata_protocol::messages::{DirEntry, MasterRequest, MasterResponse};
use strata_protocol::path::{is_under, parent};
use strata_protocol::{ErrorCode, ErrorInfo};
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

use crate::{master, ClientError};

/// Ops per `Batch` request.
const MAX_BATCH: usize = 1024;
/// Bytes per `Batch` request (about; queued inline writes carry data):
/// well inside the master's 1 MiB request limit.
const MAX_BATCH_BYTES: usize = 512 * 1024;
/// How long after sending a keep-alive (or lease request) this client
/// uses its leases: a second less than the master keeps them.
const CLIENT_LEASE: Duration = Duration::from_secs(2);
/// How long a keep-alive may take before it counts as failed.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Lock requests that may wait, in flight to the master at once. The
/// master holds each for a while and the client asks again, so without a
/// cap a few hundred waiters (a parallel build waiting on one lock file)
/// would fill the connection's in-flight slots and hold up every other
/// call of the client, its keep-alives too. More wait here.
const LOCK_WAITS: usize = 32;
/// How long a lock request waits here for one of those before it is
/// answered `WouldBlock` (as the master answers a held request).
const LOCK_WAIT_HERE: Duration = Duration::from_millis(250);
/// How long the flusher leaves new ops queued for the client's next
/// synchronous change to carry (see [`Behind::carry`]): a program that
/// alternates queued and synchronous changes (tar, rsync: create, write,
/// close, utimes, rename, next file) then pays one commit per file for
/// them all. A request that must wait for the queue, and `flush`, cut it short.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

#[derive(Default)]
struct Queue {
    /// Ops not yet applied, oldest first, with their sequence numbers (the
    /// first of them may be in the batch on its way). Shared, so taking a
    /// batch under the lock copies no paths or data (every FUSE request
    /// takes this lock to check its lease).
    ops: VecDeque<(u64, Arc<BatchOp>)>,
    next: u64,
    /// The flusher task is running.
    flusher: bool,
    /// A batch is on its way (sent by the flusher or carried).
    in_flight: bool,
    /// The first failure since the last `flush`.
    failed: Option<ClientError>,
    /// Batches sent so far.
    batches: u64,
    /// Directories leased to this client, by path, with the generation of
    /// the grant (a lease lost and granted again is a new generation: what
    /// the caller learnt under the old one may be stale).
    leases: std::collections::HashMap<String, u64>,
    generation: u64,
    /// The leases are good until then (the master renews them from each
    /// keep-alive's arrival; this counts a shorter time from its sending).
    valid_until: Option<Instant>,
    /// The keep-alive task is running.
    keeper: bool,
}

impl Queue {
    /// Numbers and queues `op`; true if the flusher must be started.
    fn push(&mut self, op: BatchOp) -> bool {
        let seq = self.next;
        self.next += 1;
        self.ops.push_back((seq, Arc::new(op)));
        !std::mem::replace(&mut self.flusher, true)
    }

    /// The leases hold for `CLIENT_LEASE` from `sent` (a keep-alive or
    /// grant sent then was answered), unless they already hold longer.
    fn renewed(&mut self, sent: Instant) {
        let until = sent + CLIENT_LEASE;
        self.valid_until = Some(self.valid_until.map_or(until, |v| v.max(until)));
    }

    fn lease_of(&self, path: &str) -> Option<u64> {
        self.lease_left(path).map(|(g, _)| g)
    }

    /// The generation of the lease covering `path` and how long it is
    /// good for without another renewal.
    fn lease_left(&self, path: &str) -> Option<(u64, Duration)> {
        let left = self.valid_until?.checked_duration_since(Instant::now()).filter(|l| !l.is_zero())?;
        self.leases.iter().find(|(d, _)| is_under(path, d)).map(|(_, g)| (*g, left))
    }
}

pub(crate) struct Behind {
    queue: Mutex<Queue>,
    /// Every op numbered below this is applied (or failed).
    done: watch::Sender<u64>,
    /// Wakes the flusher before its linger is over.
    kick: tokio::sync::Notify,
    /// Blocks being written in the background, by the first id: whether
    /// they were, once known. A batch with the `SetContentAt` naming them
    /// waits for it.
    writes: Mutex<std::collections::HashMap<u64, watch::Receiver<Option<bool>>>>,
    /// Run when leases are recalled, after they stopped being used and
    /// before they are released (see [`crate::Client::on_recall`]).
    on_recall: Mutex<Option<RecallHook>>,
    /// The byte-range locks this client holds, by inode (as client 0):
    /// given back at a close, and reclaimed from a master that does not
    /// know this client's session (a new leader). The keep-alive task runs
    /// while there are any.
    locks: Mutex<std::collections::HashMap<u64, LockSet>>,
    /// Lock requests hold it shared; a reclaim exclusively, so that none
    /// of them overtakes a reclaim of what it changes.
    reclaiming: tokio::sync::RwLock<()>,
    /// Slots for lock requests that may wait (see [`LOCK_WAITS`]).
    lock_waits: tokio::sync::Semaphore,
}

/// A lock request: `MasterRequest::Lock` less the reclaim flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockRequest {
    pub inode: u64,
    pub owner: u64,
    pub start: u64,
    /// Inclusive.
    pub end: u64,
    /// None: unlock.
    pub kind: Option<LockKind>,
    pub pid: u32,
}

impl LockRequest {
    fn message(&self, wait: bool, reclaim: bool) -> MasterRequest {
        let LockRequest { inode, owner, start, end, kind, pid } = *self;
        MasterRequest::Lock { inode, owner, start, end, kind, pid, wait, reclaim }
    }

    /// Records the request's outcome in `held`.
    fn apply(&self, held: &mut std::collections::HashMap<u64, LockSet>) {
        set_in(held, self.inode, (0, self.owner), (self.start, self.end), self.kind, self.pid);
    }
}

/// What a client's user runs when leases are recalled.
pub type RecallHook = Arc<dyn Fn() + Send + Sync>;

/// How long a recall waits for its hook: it may block on what waits for
/// the recall (the hook of a FUSE mount writes to the device, which waits
/// for the kernel's locks); the release then goes ahead without it.
const RECALL_HOOK_WAIT: Duration = Duration::from_millis(200);

/// Whether a request on `path` must wait for the queued `op`: it names the
/// op's path or one below it; it changes a directory above it (a rename or
/// delete would move the op's path away); or it reads what the op changes
/// in its parent (a listing shows the children's attributes; an unlink
/// changes the parent's times). Reading a directory above is otherwise
/// unaffected (`stat` of the grandparent).
fn must_wait(path: &str, read: bool, op: &BatchOp) -> bool {
    op.paths().any(|p| {
        if is_under(path, p) {
            return true;
        }
        if !is_under(p, path) {
            return false;
        }
        // Every op kind changes its parent (its times, or a listing's attributes).
        !read || path == parent(p)
    })
}

impl Behind {
    pub(crate) fn new() -> Self {
        Behind {
            queue: Mutex::new(Queue::default()),
            done: watch::channel(0).0,
            kick: tokio::sync::Notify::new(),
            writes: Mutex::default(),
            on_recall: Mutex::default(),
            locks: Mutex::default(),
            reclaiming: tokio::sync::RwLock::new(()),
            lock_waits: tokio::sync::Semaphore::new(LOCK_WAITS),
        }
    }

    /// Sends a lock request (with `wait`, the master holds it a while
    /// before answering `WouldBlock`) and records what this client holds.
    /// When [`LOCK_WAITS`] requests that may wait are on their way, one
    /// more first asks without waiting (a free range is granted at once),
    /// then waits here for one of them to end, up to [`LOCK_WAIT_HERE`]
    /// (`WouldBlock` if none does).
    pub(crate) async fn lock(
        self: &Arc<Self>,
        masters: &Arc<master::Masters>,
        r: LockRequest,
        wait: bool,
    ) -> Result<(), ClientError> {
        if !wait {
            return self.ask(masters, r, false).await;
        }
        let _slot = match self.lock_waits.try_acquire() {
            Ok(slot) => slot,
            Err(_) => {
                match self.ask(masters, r, false).await {
                    Err(e) if e.code() == ErrorCode::WouldBlock => {}
                    done => return done,
                }
                match tokio::time::timeout(LOCK_WAIT_HERE, self.lock_waits.acquire()).await {
                    Ok(Ok(slot)) => slot,
                    _ => {
                        let busy = format!("{LOCK_WAITS} lock requests of this client are waiting already");
                        return Err(ClientError::Remote(ErrorInfo::new(ErrorCode::WouldBlock, busy)));
                    }
                }
            }
        };
        self.ask(masters, r, true).await
    }

    /// One lock request to the master; what it grants is recorded.
    async fn ask(
        self: &Arc<Self>,
        masters: &Arc<master::Masters>,
        r: LockRequest,
        wait: bool,
    ) -> Result<(), ClientError> {
        let _order = self.reclaiming.read().await;
        match masters.call(r.message(wait, false), false).await? {
            MasterResponse::Done => {}
            MasterResponse::Error(e) => return Err(ClientError::Remote(e)),
            other => return Err(ClientError::unexpected(other)),
        }
        let start = {
            let mut locks = self.locks.lock();
            r.apply(&mut locks);
            !locks.is_empty() && !std::mem::replace(&mut self.queue.lock().keeper, true)
        };
        if start {
            tokio::spawn(self.clone().keep_alive(masters.clone()));
        }
        Ok(())
    }

    /// Whether this client holds a lock of `owner` on `inode`.
    pub(crate) fn holds_lock(&self, inode: u64, owner: u64) -> bool {
        self.locks.lock().get(&inode).is_some_and(|s| s.holds(0, owner))
    }

    /// Sends every lock this client holds to a master that knows fewer
    /// of them (a new leader; a session that lapsed, or was made anew by
    /// a grant after it lapsed); one another owner took meanwhile is lost,
    /// and logged. Any other failure ends the round: the next keep-alive
    /// asks again.
    async fn reclaim(&self, masters: &master::Masters) {
        let _order = self.reclaiming.write().await;
        let held: Vec<LockRequest> = self
            .locks
            .lock()
            .iter()
            .flat_map(|(&inode, s)| {
                s.held().iter().map(move |l| LockRequest {
                    inode,
                    owner: l.owner,
                    start: l.start,
                    end: l.end,
                    kind: Some(l.kind),
                    pid: l.pid,
                })
            })
            .collect();
        for r in held {
            match masters.call(r.message(false, true), false).await {
                Ok(MasterResponse::Done) => {}
                Ok(MasterResponse::Error(e)) if e.code == ErrorCode::WouldBlock => {
                    tracing::warn!(
                        inode = r.inode,
                        owner = r.owner,
                        "a lock another owner took meanwhile could not be reclaimed: it is lost"
                    );
                    LockRequest { kind: None, ..r }.apply(&mut self.locks.lock());
                }
                answer => {
                    tracing::debug!(?answer, "reclaiming locks failed; the next keep-alive asks again");
                    return;
                }
            }
        }
    }

    /// Queues `op`; true if the caller must start the flusher.
    pub(crate) fn push(&self, op: BatchOp) -> bool {
        self.queue.lock().push(op)
    }

    /// Queues `op` under the lease generation `generation` covering `path`,
    /// if this client still holds it: Some(start the flusher), or None
    /// (do it synchronously). Checked and queued under one lock, so a
    /// recall either comes after the op (and sends it before releasing)
    /// or before the check.
    pub(crate) fn push_leased(&self, generation: u64, path: &str, op: BatchOp) -> Option<bool> {
        let mut q = self.queue.lock();
        (q.lease_of(path) == Some(generation)).then(|| q.push(op))
    }

    /// The generation of this client's lease covering `path`, if it holds
    /// one and it is still good.
    pub(crate) fn lease_of(&self, path: &str) -> Option<u64> {
        self.queue.lock().lease_of(path)
    }

    /// [`Queue::lease_left`].
    pub(crate) fn lease_left(&self, path: &str) -> Option<(u64, Duration)> {
        self.queue.lock().lease_left(path)
    }

    pub(crate) fn on_recall(&self, hook: RecallHook) {
        *self.on_recall.lock() = Some(hook);
    }

    /// Asks for the lease on `dir`: its generation and the directory's
    /// entries, or None when the master refuses (a UFS mount there).
    pub(crate) async fn lease(
        self: &Arc<Self>,
        masters: &Arc<master::Masters>,
        dir: &str,
    ) -> Result<Option<(u64, Vec<DirEntry>)>, ClientError> {
        let sent = Instant::now();
        let entries = match masters.call(MasterRequest::Lease { path: dir.to_string() }, false).await? {
            MasterResponse::Leased(entries) => entries,
            MasterResponse::Error(e) if e.code == ErrorCode::InvalidState => return Ok(None),
            MasterResponse::Error(e) => return Err(ClientError::Remote(e)),
            other => return Err(ClientError::unexpected(other)),
        };
        let (generation, start) = {
            let mut q = self.queue.lock();
            q.generation += 1;
            let g = q.generation;
            q.leases.retain(|d, _| !is_under(d, dir));
            q.leases.insert(dir.to_string(), g);
            q.renewed(sent);
            (g, !std::mem::replace(&mut q.keeper, true))
        };
        if start {
            tokio::spawn(self.clone().keep_alive(masters.clone()));
        }
        Ok(Some((generation, entries)))
    }

    /// Renews the session while this client holds leases or locks: hands
    /// recalled leases back, and reclaims its locks from a master that
    /// does not know the session.
    async fn keep_alive(self: Arc<Self>, masters: Arc<master::Masters>) {
        loop {
            {
                // Both locks, in this order (`lock` takes them so), so that
                // a lock granted now either sees the keeper or starts one.
                let locks = self.locks.lock();
                let mut q = self.queue.lock();
                if q.valid_until.is_some_and(|v| v <= Instant::now()) && !q.leases.is_empty() {
                    // The master may have given them to others by now.
                    tracing::warn!(leases = q.leases.len(), "directory leases lapsed (no keep-alive answer)");
                    q.leases.clear();
                    q.valid_until = None;
                }
                if q.leases.is_empty() && locks.is_empty() {
                    q.keeper = false;
                    return;
                }
            }
            let sent = Instant::now();
            let locks = self.locks.lock().values().map(|s| s.held().len() as u64).sum();
            let keep_alive = MasterRequest::KeepAlive { locks };
            match tokio::time::timeout(KEEP_ALIVE_TIMEOUT, masters.call(keep_alive, false)).await {
                Ok(Ok(MasterResponse::Recall { dirs, reclaim })) => {
                    self.queue.lock().renewed(sent);
                    if reclaim {
                        self.reclaim(&masters).await;
                    }
                    if !dirs.is_empty() {
                        tokio::spawn(self.clone().give_back(masters.clone(), dirs));
                    }
                }
                other => {
                    tracing::debug!(answer = ?other, "keep-alive failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Stops using the recalled leases, sends every change queued so far
    /// and releases them.
    async fn give_back(self: Arc<Self>, masters: Arc<master::Masters>, dirs: Vec<String>) {
        let next = {
            let mut q = self.queue.lock();
            // `/` from a master that does not know this client's session: all of them.
            q.leases.retain(|held, _| !dirs.iter().any(|d| is_under(held, d)));
            q.next
        };
        let hook = self.on_recall.lock().clone();
        if let Some(hook) = hook {
            let _ = tokio::time::timeout(RECALL_HOOK_WAIT, tokio::task::spawn_blocking(move || hook())).await;
        }
        self.kick.notify_one();
        let _ = self.done.subscribe().wait_for(|d| *d >= next).await;
        if let Err(e) = masters.call(MasterRequest::Release { paths: dirs }, false).await {
            tracing::warn!(error = %e, "releasing recalled leases failed (they lapse instead)");
        }
    }

    /// Waits until no queued op touches what `req` touches.
    pub(crate) async fn before(&self, req: &MasterRequest) {
        let last = {
            let q = self.queue.lock();
            if q.ops.is_empty() {
                return;
            }
            let ps = req.paths();
            let read = req.is_read();
            q.ops.iter().rev().find(|(_, op)| ps.iter().any(|p| must_wait(p, read, op))).map(|(seq, _)| *seq)
        };
        if let Some(seq) = last {
            self.kick.notify_one();
            let _ = self.done.subscribe().wait_for(|d| *d > seq).await;
        }
    }

    /// Waits for every op queued so far; the first refusal since the last flush.
    pub(crate) async fn flush(&self) -> Result<(), ClientError> {
        let next = self.queue.lock().next;
        self.kick.notify_one();
        let _ = self.done.subscribe().wait_for(|d| *d >= next).await;
        match self.queue.lock().failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Registers blocks being written in the background from `first`;
    /// the writer sends whether they were.
    pub(crate) fn writing(&self, first: u64) -> watch::Sender<Option<bool>> {
        let (tx, rx) = watch::channel(None);
        self.writes.lock().insert(first, rx);
        tx
    }

    /// Forgets blocks written behind that no queued change names.
    pub(crate) fn abandon(&self, first: u64) {
        self.writes.lock().remove(&first);
    }

    /// Waits until the blocks each `SetContentAt` of `ops` names are
    /// written; one whose blocks could not be is made to name an id no
    /// reservation covers, so the master refuses it (reported like any
    /// refused change) instead of naming missing blocks.
    async fn settle(&self, ops: &mut [BatchOp]) {
        for op in ops {
            let BatchOp::SetContentAt { blocks, .. } = op else { continue };
            let pending = blocks.first().and_then(|b| self.writes.lock().remove(b));
            let Some(mut rx) = pending else { continue };
            let ok = loop {
                if let Some(ok) = *rx.borrow() {
                    break ok;
                }
                if rx.changed().await.is_err() {
                    break false;
                }
            };
            if !ok {
                *blocks = vec![u64::MAX];
            }
        }
    }

    /// Takes the next batch when none is on its way (`whole`: only if it
    /// is the whole queue): its number, its ops and the sequence number
    /// after its last op.
    fn take(&self, whole: bool) -> Option<(u64, Vec<BatchOp>, u64)> {
        let mut q = self.queue.lock();
        if q.ops.is_empty() || q.in_flight {
            return None;
        }
        let (mut n, mut bytes) = (0, 0);
        for (_, op) in q.ops.iter().take(MAX_BATCH) {
            bytes += op.weight();
            if n > 0 && bytes > MAX_BATCH_BYTES {
                break;
            }
            n += 1;
        }
        if whole && n < q.ops.len() {
            return None;
        }
        q.in_flight = true;
        q.batches += 1;
        let ops: Vec<Arc<BatchOp>> = q.ops.iter().take(n).map(|(_, op)| op.clone()).collect();
        let end = q.ops[n - 1].0 + 1;
        let seq = q.batches;
        drop(q);
        Some((seq, ops.iter().map(|op| BatchOp::clone(op)).collect(), end))
    }

    /// The batch taken with `n` queued ops up to `end` is answered; `kick`
    /// the flusher (it may be waiting for a carried batch to send the rest).
    fn finish(&self, n: usize, end: u64, failure: Option<ClientError>, kick: bool) {
        {
            let mut q = self.queue.lock();
            q.ops.drain(..n);
            q.in_flight = false;
            if let Some(e) = failure {
                q.failed.get_or_insert(e);
            }
        }
        self.done.send_replace(end);
        if kick {
            self.kick.notify_one();
        }
    }

    /// Sends the queue until it is empty, leaving ops a moment for a
    /// synchronous change to carry.
    pub(crate) async fn run(self: Arc<Self>, masters: Arc<master::Masters>) {
        loop {
            let _ = tokio::time::timeout(LINGER, self.kick.notified()).await;
            {
                let mut q = self.queue.lock();
                if q.ops.is_empty() && !q.in_flight {
                    q.flusher = false;
                    return;
                }
            }
            // None: a carried batch is on its way; its end kicks us.
            let Some((seq, mut ops, end)) = self.take(false) else { continue };
            self.settle(&mut ops).await;
            let n = ops.len();
            let failure = match send(&masters, seq, ops.clone()).await {
                Ok(outcomes) => refused(&ops, &outcomes),
                Err(e) => Some(e),
            };
            self.finish(n, end, failure, false);
        }
    }

    /// Sends `op` (a synchronous change) with the queued ops before it in
    /// one batch, one journal entry, when ops are queued and none are on
    /// their way; its outcome. None: send it on its own.
    pub(crate) async fn carry(
        &self,
        masters: &master::Masters,
        op: BatchOp,
    ) -> Option<Result<BatchOutcome, ClientError>> {
        // The whole queue goes first, so the op needs to wait for nothing.
        let (seq, mut ops, end) = self.take(true)?;
        self.settle(&mut ops).await;
        let n = ops.len();
        ops.push(op);
        let (failure, outcome) = match send(masters, seq, ops.clone()).await {
            Ok(mut outcomes) => {
                let mine = outcomes.pop();
                (
                    refused(&ops[..n], &outcomes),
                    mine.ok_or_else(|| ClientError::unexpected(MasterResponse::Batch(Vec::new()))),
                )
            }
            Err(e) => {
                let lost = ErrorInfo::new(ErrorCode::Unavailable, format!("queued changes not confirmed: {e}"));
                (Some(ClientError::Remote(lost)), Err(e))
            }
        };
        self.finish(n, end, failure, true);
        Some(outcome)
    }
}

/// The first of `ops` the master refused, logged.
fn refused(ops: &[BatchOp], outcomes: &[BatchOutcome]) -> Option<ClientError> {
    let mut first = None;
    for (op, o) in ops.iter().zip(outcomes) {
        let BatchOutcome::Failed(e) = o else { continue };
        tracing::warn!(op = ?op, error = %e, "a queued change was refused by the master");
        first.get_or_insert(ClientError::Remote(e.clone()));
    }
    first
}

/// How long a queued batch is sent again while no master takes it (down,
/// restarting, electing): the changes in it were acknowledged to the
/// application (a close returned), so giving up loses them.
const RESEND_WINDOW: Duration = Duration::from_secs(120);

/// Whether a batch that failed so may still be applied by sending it again:
/// its fate is unknown (the connection broke or the answer did not come),
/// or no master could take it yet.
fn worth_resending(e: &ClientError) -> bool {
    match e {
        ClientError::Disconnected { .. } | ClientError::Timeout { .. } | ClientError::Connect { .. } => true,
        ClientError::Remote(e) => matches!(e.code, ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::NotLeader),
        _ => false,
    }
}

/// Sends one batch; one outcome per op. A batch that could not be
/// delivered, or whose fate is unknown (the connection broke after it was
/// sent; the master restarted), is sent again under the same number, for
/// up to [`RESEND_WINDOW`]: the master applies each number once (a resend
/// of one it applied is answered `AlreadyApplied`).
async fn send(masters: &master::Masters, seq: u64, ops: Vec<BatchOp>) -> Result<Vec<BatchOutcome>, ClientError> {
    let n = ops.len();
    let req = MasterRequest::Batch { client: masters.client, seq, ops };
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    let mut warned = false;
    loop {
        let e = match masters.call(req.clone(), false).await {
            Ok(MasterResponse::Batch(o)) if o.len() == n => return Ok(o),
            Ok(MasterResponse::Error(e)) => ClientError::Remote(e),
            Ok(other) => return Err(ClientError::unexpected(other)),
            Err(e) => e,
        };
        if !worth_resending(&e) || started.elapsed() > RESEND_WINDOW {
            return Err(e);
        }
        if !std::mem::replace(&mut warned, true) {
            tracing::warn!(error = %e, ops = n, seq, "queued changes not confirmed; sending them again until a master takes them");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_waits_for_what() {
        let unlink = BatchOp::Unlink { path: "/a/b/f".into() };
        let op = &unlink;
        assert!(must_wait("/a/b/f", true, op));
        assert!(must_wait("/a/b/f", false, op));
        assert!(must_wait("/a/b/f/x", true, op));
        assert!(must_wait("/a", false, op), "a rename above moves the path");
        assert!(!must_wait("/a/b/g", false, op), "a sibling");
        assert!(!must_wait("/a/b/ff", true, op));
        assert!(!must_wait("/a", true, op));
        assert!(must_wait("/a/b", true, &unlink), "the parent's times change");
        assert!(!must_wait("/", true, &unlink));
        assert!(must_wait("/", false, &unlink));
        // A rename touches both names and both parents.
        let rename = BatchOp::Rename { src: "/a/t".into(), dst: "/b/f".into(), time_ms: 1 };
        assert!(must_wait("/a/t", true, &rename));
        assert!(must_wait("/b/f", true, &rename));
        assert!(must_wait("/b", true, &rename), "a listing of the new parent");
        assert!(must_wait("/a", true, &rename), "a listing of the old parent");
        assert!(!must_wait("/a/u", false, &rename), "a sibling of the source");
        assert!(!must_wait("/b/g", false, &rename), "a sibling of the target");
    }

    /// A queued content change goes out only once its blocks are written,
    /// and names an id the master refuses if they could not be.
    #[tokio::test]
    async fn content_changes_wait_for_their_blocks() {
        let b = Behind::new();
        let op = |first: u64| BatchOp::SetContentAt {
            inode: 9,
            path: "/f".into(),
            blocks: vec![first, first + 1],
            length: 5,
            block_size: 4096,
            attrs: Default::default(),
            time_ms: 1,
        };
        let (ok, failed) = (b.writing(10), b.writing(20));
        let mut ops = vec![op(10), op(20), op(30)];
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ok.send(Some(true)).unwrap();
            failed.send(Some(false)).unwrap();
        });
        let started = Instant::now();
        b.settle(&mut ops).await;
        assert!(started.elapsed() >= Duration::from_millis(50), "waited for the writes");
        writer.await.unwrap();
        let blocks = |o: &BatchOp| match o {
            BatchOp::SetContentAt { blocks, .. } => blocks.clone(),
            _ => unreachable!(),
        };
        assert_eq!(blocks(&ops[0]), vec![10, 11]);
        assert_eq!(blocks(&ops[1]), vec![u64::MAX], "failed writes: refused by the master");
        assert_eq!(blocks(&ops[2]), vec![30, 31], "written before it was queued: nothing to wait for");
        assert!(b.writes.lock().is_empty());
    }
}
