//! Raft RPCs between masters over the mesh. Every master runs a RaftServer
//! in the process group `strata.raft.<id>`; a peer's `MeshNetwork`
//! connection finds it there and calls it with the openraft request as a
//! bincode payload inside an rkyv envelope (openraft's types are serde),
//! bounded by the RPC's deadline. A peer that is not on the mesh, or does not
//! answer in time, is reported unreachable and openraft backs off.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use rkyv::{Archive, Deserialize, Serialize};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use rocksdb::DB;

use super::prevote::{self, Heard, PreVoteRequest, PreVoteResponse};
use super::raft::{MasterNode, NodeId, Raft, TypeConfig};
use crate::mesh::Wire;

/// The RaftServer's role in its node's registered names.
pub const ROLE: &str = "raft";

/// The process group of master `id`'s RaftServer.
pub fn group(id: NodeId) -> String {
    format!("strata.raft.{id}")
}

/// A bincode-encoded openraft request or response.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct RaftBytes(pub Vec<u8>);

/// Inbound Raft RPCs. Variant names are wire tags: never rename.
#[derive(RactorClusterMessage)]
pub enum RaftServerMsg {
    /// AppendEntries.
    #[rpc]
    Append(Wire<RaftBytes>, RpcReplyPort<Wire<RaftBytes>>),
    /// RequestVote.
    #[rpc]
    Vote(Wire<RaftBytes>, RpcReplyPort<Wire<RaftBytes>>),
    /// InstallSnapshot (one chunk).
    #[rpc]
    Snapshot(Wire<RaftBytes>, RpcReplyPort<Wire<RaftBytes>>),
    /// The leader removed master `id` from the group: if that is this
    /// master, it stops serving (the process exits cleanly).
    Leave(u64),
    /// A pre-vote (see `prevote`).
    #[rpc]
    PreVote(Wire<RaftBytes>, RpcReplyPort<Wire<RaftBytes>>),
}

/// Arguments: this master's id and the slot holding its Raft handle.
#[derive(Clone)]
pub struct RaftServerArgs {
    /// This master.
    pub node_id: NodeId,
    /// The JournalActor's Raft, once started.
    pub slot: Arc<Mutex<Option<Raft>>>,
    /// Notified when this master has been removed from the group.
    pub removed: Arc<tokio::sync::Notify>,
    /// When a leader was last heard from (AppendEntries not refused for a
    /// stale term, votes granted): the pre-vote's evidence.
    pub heard: Arc<Heard>,
    /// The Raft log's database (its last entry, for pre-votes).
    pub log_db: Arc<DB>,
}

/// Serves peers' Raft RPCs.
pub struct RaftServer;

fn de<T: DeserializeOwned>(b: &[u8]) -> Option<T> {
    bincode::deserialize(b).ok()
}

fn en<T: serde::Serialize>(v: &T) -> Wire<RaftBytes> {
    Wire(RaftBytes(bincode::serialize(v).expect("openraft types serialize")))
}

impl Actor for RaftServer {
    type Msg = RaftServerMsg;
    type State = RaftServerArgs;
    type Arguments = RaftServerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RaftServerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(group(args.node_id), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let RaftServerMsg::Leave(id) = msg {
            if id == st.node_id {
                tracing::warn!(id, "removed from the master group by the leader; stopping");
                st.removed.notify_one();
            }
            return Ok(());
        }
        // No Raft yet (starting or restarting): drop the call; the peer times out and retries.
        let Some(raft) = st.slot.lock().await.clone() else { return Ok(()) };
        let (heard, log_db) = (st.heard.clone(), st.log_db.clone());
        tokio::spawn(async move {
            match msg {
                RaftServerMsg::Append(Wire(req), reply) => {
                    if let Some(req) = de::<AppendEntriesRequest<TypeConfig>>(&req.0) {
                        let resp = raft.append_entries(req).await;
                        if resp.as_ref().is_ok_and(|r| !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                            heard.touch();
                        }
                        let _ = reply.send(en(&resp));
                    }
                }
                RaftServerMsg::Vote(Wire(req), reply) => {
                    if let Some(req) = de::<VoteRequest<NodeId>>(&req.0) {
                        let resp = raft.vote(req).await;
                        if resp.as_ref().is_ok_and(|r| r.vote_granted) {
                            heard.touch();
                        }
                        let _ = reply.send(en(&resp));
                    }
                }
                RaftServerMsg::PreVote(Wire(req), reply) => {
                    if let Some(req) = de::<PreVoteRequest>(&req.0) {
                        let _ = reply.send(en(&prevote::answer(&raft, &heard, &log_db, &req)));
                    }
                }
                RaftServerMsg::Snapshot(Wire(req), reply) => {
                    if let Some(req) = de::<InstallSnapshotRequest<TypeConfig>>(&req.0) {
                        let _ = reply.send(en(&raft.install_snapshot(req).await));
                    }
                }
                RaftServerMsg::Leave(_) => {}
            }
        });
        Ok(())
    }
}

/// Tells master `id` (if it is on the mesh) that it is no longer a member.
pub fn tell_removed(id: NodeId) {
    for m in ractor::pg::get_members(&group(id)) {
        let _ = ActorRef::<RaftServerMsg>::from(m).cast(RaftServerMsg::Leave(id));
    }
}

/// The most an AppendEntries may carry (its encoded size), far below the
/// mesh's frame limit (16 MiB): a follower that is behind is sent the log
/// in requests of this size, each answered well within the RPC deadline.
pub const MAX_APPEND_BYTES: usize = 4 << 20;

/// How many of `entries`, from the first, fit in `max` bytes encoded (one
/// at least: a single larger entry goes alone).
fn entries_within(entries: &[openraft::Entry<TypeConfig>], max: usize) -> u64 {
    let mut total = 0usize;
    let mut n = 0u64;
    for e in entries {
        total += bincode::serialized_size(e).unwrap_or(u64::MAX) as usize;
        if total > max {
            break;
        }
        n += 1;
    }
    n.max(1)
}

/// Raft transport between masters over the mesh.
#[derive(Clone)]
pub struct MeshNetwork;

/// A connection to one peer master.
pub struct MeshConnection {
    target: NodeId,
}

#[derive(Debug, thiserror::Error)]
#[error("master {0} is not on the mesh")]
struct NotOnMesh(NodeId);

#[derive(Debug, thiserror::Error)]
#[error("master {target}: {what}")]
struct CallFailed {
    target: NodeId,
    what: String,
}

impl RaftNetworkFactory<TypeConfig> for MeshNetwork {
    type Network = MeshConnection;
    async fn new_client(&mut self, target: NodeId, _node: &MasterNode) -> MeshConnection {
        MeshConnection { target }
    }
}

/// Master `target`'s RaftServer, if it is on the mesh.
fn server(target: NodeId) -> Option<ActorRef<RaftServerMsg>> {
    ractor::pg::get_members(&group(target)).into_iter().next().map(ActorRef::from)
}

/// Pre-votes over the mesh.
#[derive(Clone)]
pub struct MeshAsk;

impl prevote::Ask for MeshAsk {
    async fn ask(&self, to: NodeId, req: PreVoteRequest, ttl: Duration) -> Option<PreVoteResponse> {
        let peer = server(to)?;
        match peer.call(|port| RaftServerMsg::PreVote(en(&req), port), Some(ttl)).await {
            Ok(ractor::rpc::CallResult::Success(Wire(b))) => de(&b.0),
            _ => None,
        }
    }
}

impl MeshConnection {
    async fn call<Resp, E>(
        &self,
        make: fn(Wire<RaftBytes>, RpcReplyPort<Wire<RaftBytes>>) -> RaftServerMsg,
        body: Wire<RaftBytes>,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, MasterNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let peer =
            server(self.target).ok_or_else(|| RPCError::Unreachable(Unreachable::new(&NotOnMesh(self.target))))?;
        let r = peer.call(|port| make(body, port), Some(ttl)).await;
        let bytes = match r {
            Ok(ractor::rpc::CallResult::Success(Wire(b))) => b,
            Ok(ractor::rpc::CallResult::Timeout) => {
                let e = CallFailed { target: self.target, what: format!("no answer within {ttl:?}") };
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            other => {
                let e = CallFailed { target: self.target, what: format!("{:?}", other.err()) };
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
        };
        let decoded: Result<Resp, RaftError<NodeId, E>> = bincode::deserialize(&bytes.0).map_err(|e| {
            RPCError::Network(NetworkError::new(&CallFailed { target: self.target, what: e.to_string() }))
        })?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for MeshConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        o: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MasterNode, RaftError<NodeId>>> {
        // openraft sends up to `max_payload_entries` entries whatever they
        // hold; have it send the prefix that fits (one at least). Sizing
        // is a counting pass (payloads are byte strings: their length).
        let fits = entries_within(&rpc.entries, MAX_APPEND_BYTES);
        if fits < rpc.entries.len() as u64 {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fits)));
        }
        self.call(RaftServerMsg::Append, en(&rpc), o.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        o: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, MasterNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(RaftServerMsg::Snapshot, en(&rpc), o.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        o: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MasterNode, RaftError<NodeId>>> {
        self.call(RaftServerMsg::Vote, en(&rpc), o.hard_ttl()).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
