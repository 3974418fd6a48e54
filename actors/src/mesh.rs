//! The cluster mesh: ractor_cluster's `NodeServer` authenticated by the
//! cluster secret, plus helpers to join a peer and wait until its actors are
//! visible. Control messages (registration, heartbeats, block commits, later
//! Raft RPCs) travel here; block bytes and client RPC never do.
//!
//! Every type sent across the mesh is an rkyv archive: [`rkyv_bytes!`]
//! implements ractor's `BytesConvertable` with rkyv and validation.

use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use tokio::sync::mpsc;

/// A mesh payload: any rkyv type, carried as a validated archive. ractor's
/// `BytesConvertable` cannot return an error, so a payload that fails
/// validation panics inside ractor's decoder, which drops the message;
/// callers always use timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Wire<T>(pub T);

impl<T> ractor::BytesConvertable for Wire<T>
where
    T: strata_protocol::frame::Encode + rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::BoxedError>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::BoxedError>>,
{
    fn into_bytes(self) -> Vec<u8> {
        strata_protocol::frame::encode(&self.0).expect("mesh message encodes").into_vec()
    }
    fn from_bytes(bytes: Vec<u8>) -> Self {
        match strata_protocol::frame::decode::<T>(&bytes) {
            Ok(v) => Wire(v),
            Err(e) => panic!("invalid mesh message {}: {e}", std::any::type_name::<T>()),
        }
    }
}

/// A running mesh endpoint.
#[derive(Clone)]
pub struct Mesh {
    server: ActorRef<NodeServerMessage>,
    name: String,
}

/// Why joining a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The mesh server could not start.
    #[error("cannot start the mesh server: {0}")]
    Start(String),
    /// The peer did not authenticate in time (wrong cluster secret, or unreachable).
    #[error("could not join the mesh at {addr}: {reason}")]
    Join { addr: String, reason: String },
}

struct Events(mpsc::UnboundedSender<(bool, String)>);

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, _s: NodeServerSessionInformation) {}
    fn node_session_disconnected(&self, s: NodeServerSessionInformation) {
        let _ = self.0.send((false, s.peer_addr));
    }
    fn node_session_authenticated(&self, _s: NodeServerSessionInformation) {}
    fn node_session_ready(&self, s: NodeServerSessionInformation) {
        let _ = self.0.send((true, s.peer_addr));
    }
}

impl Mesh {
    /// Starts this node's mesh server on `host:port` (port 0 picks one).
    pub async fn start(node_name: &str, host: &str, port: u16, secret: &str) -> Result<Mesh, MeshError> {
        let mut server = NodeServer::new(port, secret.to_string(), node_name.to_string(), host.to_string(), None, None);
        if let Ok(ip) = host.parse() {
            server = server.with_listen_addr(ip);
        }
        let (server, _) = Actor::spawn(Some(format!("strata.mesh.{node_name}")), server, ())
            .await
            .map_err(|e| MeshError::Start(e.to_string()))?;
        Ok(Mesh { server, name: node_name.to_string() })
    }

    /// This node's mesh name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of authenticated peer sessions.
    pub async fn peers(&self) -> usize {
        ractor::call_t!(self.server, NodeServerMessage::GetSessions, 2000).map(|s| s.len()).unwrap_or(0)
    }

    /// Connects to a peer and waits until the session is ready (both sides
    /// authenticated with the same secret and process groups exchanged).
    pub async fn join(&self, addr: &str, timeout: Duration) -> Result<(), MeshError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sub_id = format!("join-{}-{}", addr, rand::random::<u64>());
        let _ = ractor::cast!(
            self.server,
            NodeServerMessage::SubscribeToEvents { id: sub_id.clone(), subscription: Box::new(Events(tx)) }
        );
        let last = parking_lot::Mutex::new(String::from("no answer"));
        let result = tokio::time::timeout(timeout, async {
            loop {
                if let Err(e) = ractor_cluster::client_connect(&self.server, addr).await {
                    *last.lock() = format!("connect failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                // The session either becomes ready or is closed (a secret
                // mismatch closes it right after the challenge).
                match tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
                    Ok(Some((true, _))) => return Ok(()),
                    Ok(Some((false, _))) => {
                        *last.lock() = "the peer closed the session (wrong cluster secret?)".to_string();
                    }
                    Ok(None) => return Err("mesh server stopped".to_string()),
                    Err(_) => *last.lock() = "no handshake within 3 s".to_string(),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        let _ = ractor::cast!(self.server, NodeServerMessage::UnsubscribeToEvents(sub_id));
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(MeshError::Join { addr: addr.to_string(), reason }),
            Err(_) => Err(MeshError::Join {
                addr: addr.to_string(),
                reason: format!(
                    "no authenticated session within {timeout:?}: {} (wrong cluster secret or unreachable)",
                    last.lock()
                ),
            }),
        }
    }

    /// Whether an authenticated session to `addr` (as dialled) exists.
    pub async fn connected_to(&self, addr: &str) -> bool {
        match ractor::call_t!(self.server, NodeServerMessage::GetSessions, 2000) {
            Ok(sessions) => sessions
                .values()
                .any(|s| s.peer_addr == addr || s.peer_name.as_ref().is_some_and(|n| n.connection_string == addr)),
            Err(_) => false,
        }
    }

    /// Stops the mesh server.
    pub fn stop(&self) {
        self.server.stop(None);
    }
}
