//! The multiplexed metadata connection to the master: one TCP stream, many
//! requests in flight, answers matched by request id. A broken connection
//! fails the calls in flight and is re-opened by the next call.
//!
//! [`Masters`] follows the leader among several masters: a `NotLeader`
//! answer names the leader (or not yet), an unreachable master is skipped,
//! and calls retry with back-off until `failover_timeout`. A mutation is
//! retried only when it certainly did not run (refused by a follower, or
//! never sent); reads are retried after any failure. With stale reads on,
//! stat, list and block-location reads go to any master (the one that last
//! answered), which serves them from its local state; a master that does
//! not answer within 2 s is skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use strata_protocol::frame::{encode_frame, read_frame, FrameKind, ReadFrameError, READ_BUFFER_BYTES};
use strata_protocol::messages::{MasterRequest, MasterResponse, RequestEnvelope, ResponseEnvelope};
use strata_protocol::{ErrorCode, MAX_FRAME_BYTES};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::ClientError;

type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<MasterResponse>>>>>;

struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// `None` once the reader saw the connection die.
    pending: Pending,
}

pub(crate) struct MasterConnection {
    addr: String,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next_id: AtomicU64,
    /// This client's id, sent with every request.
    client: u64,
}

impl MasterConnection {
    pub(crate) async fn connect(addr: &str, timeout: Duration, client: u64) -> Result<Self, ClientError> {
        let m = MasterConnection {
            addr: addr.to_string(),
            timeout,
            conn: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
            client,
        };
        m.get().await?;
        Ok(m)
    }

    async fn open(&self) -> Result<Arc<Conn>, ClientError> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| ClientError::Timeout { what: format!("connecting to {}", self.addr), after: self.timeout })?
            .map_err(|source| ClientError::Connect { addr: self.addr.clone(), source })?;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, rd);
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let p = pending.clone();
        let addr = self.addr.clone();
        tokio::spawn(async move {
            loop {
                match read_frame::<_, ResponseEnvelope>(&mut rd, MAX_FRAME_BYTES).await {
                    Ok(Some((_, resp))) => {
                        let tx = p.lock().as_mut().and_then(|m| m.remove(&resp.id));
                        match tx {
                            Some(tx) => {
                                let _ = tx.send(resp.body);
                            }
                            None if resp.id == 0 => {
                                tracing::warn!(%addr, body = ?resp.body, "master closed the connection");
                            }
                            None => {}
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        if !matches!(e, ReadFrameError::Io(_)) {
                            tracing::warn!(%addr, error = %e, "bad frame from the master");
                        }
                        break;
                    }
                }
            }
            // Dropping the senders fails every call in flight.
            p.lock().take();
        });
        Ok(Arc::new(Conn { writer: tokio::sync::Mutex::new(wr), pending }))
    }

    async fn get(&self) -> Result<Arc<Conn>, ClientError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.pending.lock().is_some() {
                return Ok(c.clone());
            }
        }
        let c = self.open().await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// One call, answered within `timeout`. `stale_ok`: a read may be served
    /// from this master's local state without a read barrier.
    pub(crate) async fn call(
        &self,
        body: MasterRequest,
        stale_ok: bool,
        timeout: Duration,
    ) -> Result<MasterResponse, ClientError> {
        let conn = self.get().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(FrameKind::Request, &RequestEnvelope { id, body, stale_ok, client: self.client })
            .map_err(|source| ClientError::Protocol { addr: self.addr.clone(), source })?;
        let (tx, rx) = oneshot::channel();
        match conn.pending.lock().as_mut() {
            Some(m) => m.insert(id, tx),
            None => return Err(self.lost("connection closed")),
        };
        {
            let mut w = conn.writer.lock().await;
            if let Err(e) = w.write_all(&frame).await {
                conn.pending.lock().take();
                return Err(self.lost(&e.to_string()));
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(_)) => Err(self.lost("the master closed the connection")),
            Err(_) => {
                if let Some(m) = conn.pending.lock().as_mut() {
                    m.remove(&id);
                }
                Err(ClientError::Timeout { what: "metadata call".into(), after: timeout })
            }
        }
    }

    fn lost(&self, reason: &str) -> ClientError {
        ClientError::Disconnected { addr: self.addr.clone(), reason: reason.to_string() }
    }
}

/// Whether a request may be answered from a master's local state when the
/// client accepts stale reads.
pub(crate) fn may_read_stale(r: &MasterRequest) -> bool {
    matches!(
        r,
        MasterRequest::Stat { .. }
            | MasterRequest::List { .. }
            | MasterRequest::ListPage { .. }
            | MasterRequest::GetBlocks { .. }
    )
}

/// How long a stale read waits for one master before trying the next: any
/// master can answer it, so a stopped one should not hold it for the whole
/// RPC timeout.
const STALE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Pauses between attempts at something that may work once a failover is
/// over: doubling from `first` up to `max`, until `within` has passed.
pub(crate) struct Backoff {
    deadline: tokio::time::Instant,
    delay: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(within: Duration, first: Duration, max: Duration) -> Self {
        Backoff { deadline: tokio::time::Instant::now() + within, delay: first, max }
    }

    /// Sleeps before the next attempt; false (at once) if it would end
    /// past the deadline: give up.
    pub(crate) async fn pause(&mut self) -> bool {
        if tokio::time::Instant::now() + self.delay > self.deadline {
            return false;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(self.max);
        true
    }
}

/// Whether a request changes the namespace (not safe to resend blindly).
fn is_mutation(r: &MasterRequest) -> bool {
    // Setting a lock again is the same lock: a lost answer is safe to resend.
    !r.is_read() && !matches!(r, MasterRequest::Lock { .. } | MasterRequest::TestLock { .. })
}

/// Connections to every known master; calls go to the current leader,
/// stale reads to whichever master last answered one.
pub(crate) struct Masters {
    addrs: parking_lot::Mutex<Vec<String>>,
    conns: tokio::sync::Mutex<HashMap<String, Arc<MasterConnection>>>,
    current: parking_lot::Mutex<String>,
    /// Where stale reads go.
    reader: parking_lot::Mutex<String>,
    timeout: Duration,
    failover: Duration,
    /// This client's id (random): the master's key for its leases and batches.
    pub(crate) client: u64,
}

impl Masters {
    pub(crate) async fn connect(
        list: &str,
        timeout: Duration,
        failover: Duration,
        client: u64,
    ) -> Result<Self, ClientError> {
        let addrs: Vec<String> = list.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
        let first = addrs.first().cloned().unwrap_or_default();
        let m = Masters {
            addrs: parking_lot::Mutex::new(addrs.clone()),
            conns: tokio::sync::Mutex::new(HashMap::new()),
            current: parking_lot::Mutex::new(first.clone()),
            reader: parking_lot::Mutex::new(first),
            timeout,
            failover,
            client,
        };
        // Any reachable master will do to start; the leader is found on the first call.
        let mut last = None;
        for a in &addrs {
            match m.conn(a).await {
                Ok(_) => {
                    *m.current.lock() = a.clone();
                    *m.reader.lock() = a.clone();
                    return Ok(m);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            addr: list.to_string(),
            source: std::io::Error::other("no master address given"),
        }))
    }

    async fn conn(&self, addr: &str) -> Result<Arc<MasterConnection>, ClientError> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(addr) {
            return Ok(c.clone());
        }
        let c = Arc::new(MasterConnection::connect(addr, self.timeout, self.client).await?);
        conns.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn rotate(&self, cursor: &parking_lot::Mutex<String>) {
        let addrs = self.addrs.lock();
        let mut cur = cursor.lock();
        let i = addrs.iter().position(|a| *a == *cur).map(|i| (i + 1) % addrs.len()).unwrap_or(0);
        if let Some(a) = addrs.get(i) {
            *cur = a.clone();
        }
    }

    fn follow(&self, leader: &str) {
        let mut addrs = self.addrs.lock();
        if !addrs.iter().any(|a| a == leader) {
            addrs.push(leader.to_string());
        }
        *self.current.lock() = leader.to_string();
    }

    /// Calls the master at `addr` itself: no redirect, no retry.
    pub(crate) async fn call_at(&self, addr: &str, req: MasterRequest) -> Result<MasterResponse, ClientError> {
        let outcome = self.conn(addr).await?.call(req, false, self.timeout).await;
        if outcome.is_err() {
            self.conns.lock().await.remove(addr);
        }
        outcome
    }

    /// Calls the leader (or, for a stale read, any master), following
    /// redirects and retrying through a failover.
    pub(crate) async fn call(&self, req: MasterRequest, stale: bool) -> Result<MasterResponse, ClientError> {
        let mut backoff = Backoff::new(self.failover, Duration::from_millis(20), Duration::from_millis(300));
        let mutation = is_mutation(&req);
        let stale = stale && may_read_stale(&req);
        let (cursor, timeout) =
            if stale { (&self.reader, self.timeout.min(STALE_READ_TIMEOUT)) } else { (&self.current, self.timeout) };
        loop {
            let addr = cursor.lock().clone();
            let outcome = match self.conn(&addr).await {
                Ok(c) => c.call(req.clone(), stale, timeout).await,
                Err(e) => Err(e),
            };
            let retry = match &outcome {
                Ok(MasterResponse::Error(e)) if e.code == ErrorCode::NotLeader => {
                    if e.message.is_empty() || e.message == addr {
                        self.rotate(cursor);
                    } else {
                        self.follow(&e.message);
                        if stale {
                            *self.reader.lock() = e.message.clone();
                        }
                    }
                    true
                }
                // No leader yet (election) on a read; a mutation answered
                // Unavailable may still commit, so it is not resent.
                Ok(MasterResponse::Error(e)) if e.code == ErrorCode::Unavailable => {
                    if stale {
                        self.rotate(cursor);
                    }
                    !mutation
                }
                Ok(_) => false,
                Err(ClientError::Connect { .. }) => {
                    self.conns.lock().await.remove(&addr);
                    self.rotate(cursor);
                    true
                }
                Err(ClientError::Disconnected { .. }) | Err(ClientError::Timeout { .. }) => {
                    self.conns.lock().await.remove(&addr);
                    self.rotate(cursor);
                    !mutation
                }
                Err(_) => false,
            };
            if !retry || !backoff.pause().await {
                return outcome;
            }
        }
    }
}
