//! ClientGateway: the master's client RPC port, transport and dispatch
//! only. Each connection reads request frames, hands every request with
//! its [`Caller`] to the handlers (`master::handlers`) in its own task (so
//! one slow commit does not hold up a stat) and writes responses as they
//! finish, tagged with the request id. A malformed frame gets a `Protocol`
//! error response and the connection is closed; other connections are
//! untouched. A handler that panics is answered `Internal` at once.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use strata_protocol::frame::{encode_frame, read_frame, FrameKind, ReadFrameError, READ_BUFFER_BYTES};
use strata_protocol::messages::{MasterResponse, RequestEnvelope, ResponseEnvelope};
use strata_protocol::{ErrorCode, ErrorInfo};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use super::handlers::{self, Caller};
use super::services::Services;

/// The ClientGateway's role in its node's registered names.
pub const ROLE: &str = "gateway";
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
#[derive(Clone)]
pub struct GatewayArgs {
    /// The bound listener (a fresh clone of it is used at each restart).
    pub listener: Arc<std::net::TcpListener>,
    /// What the handlers reach.
    pub services: Services,
}

/// Gateway state.
pub struct GatewayState {
    _accept: crate::net::AbortOnDrop,
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
        let services = args.services;
        let accept = crate::net::spawn_accept_loop(listener, 4096, move |s| serve_connection(services.clone(), s));
        Ok(GatewayState { _accept: crate::net::AbortOnDrop(accept), addr })
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

async fn serve_connection(services: Services, stream: TcpStream) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, rd);
    let (tx, mut rx) = mpsc::channel::<ResponseEnvelope>(IN_FLIGHT_PER_CONNECTION);
    let writer = tokio::spawn(async move {
        while let Some(resp) = rx.recv().await {
            let frame = match encode_frame(FrameKind::Response, &resp) {
                Ok(f) => f,
                // Too large for a frame (a whole listing of a huge
                // directory): the caller is told so, not left waiting.
                Err(e) => {
                    let info = ErrorInfo::new(ErrorCode::TooLarge, format!("the answer cannot be sent: {e}"));
                    let refusal = ResponseEnvelope { id: resp.id, body: MasterResponse::Error(info) };
                    match encode_frame(FrameKind::Response, &refusal) {
                        Ok(f) => f,
                        Err(_) => return,
                    }
                }
            };
            if wr.write_all(&frame).await.is_err() {
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
                let services = services.clone();
                tokio::spawn(async move {
                    let span = tracing::debug_span!("rpc", id = req.id);
                    let _e = span.enter();
                    let caller = Caller { client: req.client };
                    let answer = crate::net::catch_panic(handlers::dispatch(&services, caller, req.body, req.stale_ok));
                    let body = answer.await.unwrap_or_else(|panic| {
                        tracing::error!(id = req.id, %panic, "a request handler panicked");
                        MasterResponse::Error(ErrorInfo::new(
                            ErrorCode::Internal,
                            format!("the master failed: {panic}"),
                        ))
                    });
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
