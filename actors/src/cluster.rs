//! Messages that cross the mesh between workers and the masters'
//! WorkerManager. Both sides import them from here, so the worker does not
//! depend on the master's code (nor the master on the worker's).

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use rkyv::{Archive, Deserialize, Serialize};
use strata_protocol::messages::{
    BlockCommit, CommitReply, HeartbeatReply, RegisterReply, RegisterWorker, WorkerAddr, WorkerHeartbeat, WorkerReport,
};
use strata_protocol::{BlockId, WorkerId};

use crate::mesh::Wire;

/// Process group workers look the WorkerManager up in.
pub const GROUP: &str = "strata.master.workers";

/// A list of block ids.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct BlockList(pub Vec<BlockId>);
/// Locations for a list of blocks, in the same order.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct LocationList(pub Vec<Vec<WorkerAddr>>);
/// Where to put a new block.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct PlaceRequest {
    /// The writing client's host, for local-first placement.
    pub client_host: String,
    /// Bytes the block may take.
    pub length: u64,
    /// The policy (None: the cluster's).
    pub policy: Option<strata_protocol::ufs::PlacementPolicy>,
    /// The block (for hash placement; 0 when not known yet).
    pub block: BlockId,
}
/// Chosen workers, best first (empty: none live).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct Placement(pub Vec<WorkerAddr>);
/// Live holders of each of a list of blocks, in the same order: each
/// worker with the tier it keeps the block on (empty if unknown).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct HolderList(pub Vec<Vec<(WorkerAddr, String)>>);
/// Copies to drop: (block, worker).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct TrimList(pub Vec<(BlockId, WorkerId)>);
/// Worker ids.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct WorkerIdList(pub Vec<WorkerId>);
/// Mesh addresses.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct MeshAddrs(pub Vec<String>);
/// All workers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct WorkerReports(pub Vec<WorkerReport>);

/// Messages to the WorkerManager. Variant names are wire tags: never rename.
#[derive(RactorClusterMessage)]
pub enum WorkerManagerMsg {
    /// A worker (re)registers with its full block report.
    #[rpc]
    Register(Wire<RegisterWorker>, RpcReplyPort<Wire<RegisterReply>>),
    /// A worker's periodic heartbeat.
    #[rpc]
    Heartbeat(Wire<WorkerHeartbeat>, RpcReplyPort<Wire<HeartbeatReply>>),
    /// A worker stored a block.
    #[rpc]
    CommitBlock(Wire<BlockCommit>, RpcReplyPort<Wire<CommitReply>>),
    /// Live locations of blocks.
    #[rpc]
    Locate(Wire<BlockList>, RpcReplyPort<Wire<LocationList>>),
    /// Choose workers for a new block.
    #[rpc]
    Place(Wire<PlaceRequest>, RpcReplyPort<Wire<Placement>>),
    /// These blocks belong to no file any more: tell their workers.
    Free(Wire<BlockList>),
    /// Drop the cached copies of these blocks (their data is in a UFS; the
    /// file keeps them and a read fetches them again).
    Evict(Wire<BlockList>),
    /// These blocks are persisted to a UFS: their workers may evict them.
    Clean(Wire<BlockList>),
    /// These blocks' files were pinned: their workers must not evict them.
    Pin(Wire<BlockList>),
    /// These blocks' files were unpinned: evictable again once clean.
    Unpin(Wire<BlockList>),
    /// All workers, for `strata report`.
    #[rpc]
    Report(RpcReplyPort<Wire<WorkerReports>>),
    /// Periodic liveness check.
    Tick,
    /// (Sent by the WorkerManager to itself) what the namespace said of a
    /// registering worker's blocks: the registration completes in the mailbox.
    #[rpc]
    Registered(Wire<RegisterWorker>, Wire<RegisterReply>, RpcReplyPort<Wire<RegisterReply>>),
    /// (Sent by the WorkerManager to itself) the masters' mesh addresses,
    /// as the journal last knew them.
    Masters(Wire<MeshAddrs>),
    /// Live holders of blocks, with their tiers.
    #[rpc]
    Holders(Wire<BlockList>, RpcReplyPort<Wire<HolderList>>),
    /// Drop these copies (the ReplicationManager trims extra copies).
    Trim(Wire<TrimList>),
    /// Every block with a live copy (for the ReplicationManager's scans).
    #[rpc]
    AllBlocks(RpcReplyPort<Wire<BlockList>>),
    /// (From a worker) its copies of these blocks failed their checksums.
    BadCopies(Wire<TrimList>),
    /// (Sent by the WorkerManager to itself) the workers being
    /// decommissioned, as the namespace last said.
    Decommissioning(Wire<WorkerIdList>),
    /// The blocks these workers hold.
    #[rpc]
    WorkerBlocks(Wire<WorkerIdList>, RpcReplyPort<Wire<BlockList>>),
}

/// The WorkerManagers visible on the mesh, local or remote (workers write
/// to whichever answers; only the leader's acts on what it is told).
pub fn worker_managers() -> Vec<ractor::ActorRef<WorkerManagerMsg>> {
    ractor::pg::get_members(&GROUP.to_string()).into_iter().map(ractor::ActorRef::from).collect()
}
