//! The multiplexed metadata connection to the master: one TCP stream, many
//! requests in flight, answers matched by request id. A broken connection
//! fails the calls in flight and is re-opened by the next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use strata_protocol::frame::{encode_frame, read_frame, FrameKind, ReadFrameError};
use strata_protocol::messages::{MasterRequest, MasterResponse, RequestEnvelope, ResponseEnvelope};
use strata_protocol::MAX_FRAME_BYTES;
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
}

impl MasterConnection {
    pub(crate) async fn connect(addr: &str, timeout: Duration) -> Result<Self, ClientError> {
        let m = MasterConnection {
            addr: addr.to_string(),
            timeout,
            conn: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
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
        let (mut rd, wr) = stream.into_split();
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

    pub(crate) async fn call(&self, body: MasterRequest) -> Result<MasterResponse, ClientError> {
        let conn = self.get().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(FrameKind::Request, &RequestEnvelope { id, body })
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
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(_)) => Err(self.lost("the master closed the connection")),
            Err(_) => {
                if let Some(m) = conn.pending.lock().as_mut() {
                    m.remove(&id);
                }
                Err(ClientError::Timeout { what: "metadata call".into(), after: self.timeout })
            }
        }
    }

    fn lost(&self, reason: &str) -> ClientError {
        ClientError::Disconnected { addr: self.addr.clone(), reason: reason.to_string() }
    }
}
