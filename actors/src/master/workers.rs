//! WorkerManager: the registry of workers, their liveness and capacity, the
//! block → worker location map and block placement.
//!
//! Locations are soft state rebuilt from worker reports (as in HDFS and
//! Alluxio): a restarted master learns them again when workers re-register.
//! Workers reach this actor over the mesh through the process group
//! [`GROUP`]; the ClientGateway calls it locally.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use rkyv::{Archive, Deserialize, Serialize};
use strata_protocol::messages::{
    BlockCommit, CommitReply, HeartbeatReply, RegisterReply, RegisterWorker, TierUsage, WorkerAddr, WorkerHeartbeat,
    WorkerReport,
};
use strata_protocol::{BlockId, WorkerId};

use super::namespace_actor;
use crate::mesh::Wire;

/// Registered name of the WorkerManager.
pub const NAME: &str = "strata.workers";
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
}
/// Chosen workers, best first (empty: none live).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct Placement(pub Vec<WorkerAddr>);
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
}

/// Start-up arguments.
#[derive(Clone)]
pub struct WorkerManagerArgs {
    /// A worker silent this long is lost.
    pub lost_timeout: Duration,
}

struct WorkerEntry {
    addr: WorkerAddr,
    tiers: Vec<TierUsage>,
    last_heartbeat: Instant,
    live: bool,
    blocks: HashSet<BlockId>,
    to_remove: Vec<BlockId>,
    to_clean: Vec<BlockId>,
    to_pin: Vec<BlockId>,
    to_unpin: Vec<BlockId>,
}

impl WorkerEntry {
    fn free_bytes(&self) -> u64 {
        self.tiers.iter().map(|t| t.capacity_bytes.saturating_sub(t.used_bytes)).sum()
    }
}

/// Actor state.
pub struct WorkerManagerState {
    args: WorkerManagerArgs,
    workers: HashMap<WorkerId, WorkerEntry>,
    locations: HashMap<BlockId, HashSet<WorkerId>>,
    next_rr: usize,
    /// Recently freed blocks (ids are never reused): a late "added" report
    /// or commit of one of them must not bring its location back.
    freed: HashSet<BlockId>,
    freed_order: std::collections::VecDeque<BlockId>,
}

/// How many freed block ids are remembered.
const FREED_MEMORY: usize = 1 << 20;

impl WorkerManagerState {
    fn add_location(&mut self, worker: WorkerId, block: BlockId) {
        self.locations.entry(block).or_default().insert(worker);
        if let Some(w) = self.workers.get_mut(&worker) {
            w.blocks.insert(block);
        }
    }

    fn remove_location(&mut self, worker: WorkerId, block: BlockId) {
        if let Some(set) = self.locations.get_mut(&block) {
            set.remove(&worker);
            if set.is_empty() {
                self.locations.remove(&block);
            }
        }
        if let Some(w) = self.workers.get_mut(&worker) {
            w.blocks.remove(&block);
        }
    }

    /// Forgets every copy of the blocks and tells their workers to drop them.
    fn drop_copies(&mut self, blocks: Vec<BlockId>) {
        for b in blocks {
            if let Some(ws) = self.locations.remove(&b) {
                for w in ws {
                    if let Some(entry) = self.workers.get_mut(&w) {
                        entry.blocks.remove(&b);
                        entry.to_remove.push(b);
                    }
                }
            }
        }
    }

    /// Queues a pin or unpin of `blocks` for every worker holding them,
    /// delivered with each one's next heartbeat reply.
    fn queue_pin(&mut self, blocks: Vec<BlockId>, pinned: bool) {
        for b in blocks {
            for w in self.locations.get(&b).into_iter().flatten() {
                if let Some(entry) = self.workers.get_mut(w) {
                    if pinned { &mut entry.to_pin } else { &mut entry.to_unpin }.push(b);
                }
            }
        }
    }

    fn forget_worker_blocks(&mut self, worker: WorkerId) {
        let blocks: Vec<BlockId> =
            self.workers.get(&worker).map(|w| w.blocks.iter().copied().collect()).unwrap_or_default();
        for b in blocks {
            self.remove_location(worker, b);
        }
    }
}

/// The actor.
pub struct WorkerManager;

impl Actor for WorkerManager {
    type Msg = WorkerManagerMsg;
    type State = WorkerManagerState;
    type Arguments = WorkerManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: WorkerManagerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(GROUP.to_string(), vec![myself.get_cell()]);
        myself.send_interval(Duration::from_millis(500), || WorkerManagerMsg::Tick);
        Ok(WorkerManagerState {
            args,
            workers: HashMap::new(),
            locations: HashMap::new(),
            next_rr: 0,
            freed: HashSet::new(),
            freed_order: std::collections::VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerManagerMsg::Register(Wire(reg), reply) => {
                let id = reg.addr.worker_id;
                tracing::info!(worker = id, host = %reg.addr.host, port = reg.addr.data_port, blocks = reg.blocks.len(), "worker registered");
                st.forget_worker_blocks(id);
                // Blocks no file owns (deleted while the worker was away) are
                // dropped. Only the leader decides, after a read barrier: a
                // follower's namespace may lag and not know a block yet.
                let orphans = if super::journal::read_barrier().await.is_ok() {
                    namespace_actor::call(Duration::from_secs(5), |r| {
                        namespace_actor::NamespaceMsg::Orphans(reg.blocks.clone(), r)
                    })
                    .await
                    .unwrap_or_default()
                } else {
                    Vec::new()
                };
                let orphan_set: HashSet<BlockId> = orphans.iter().copied().collect();
                let clean_blocks = namespace_actor::call(Duration::from_secs(5), |r| {
                    namespace_actor::NamespaceMsg::PersistedBlocks(reg.blocks.clone(), r)
                })
                .await
                .unwrap_or_default();
                let pinned_blocks = namespace_actor::call(Duration::from_secs(5), |r| {
                    namespace_actor::NamespaceMsg::PinnedBlocks(reg.blocks.clone(), r)
                })
                .await
                .unwrap_or_default();
                st.workers.insert(
                    id,
                    WorkerEntry {
                        addr: reg.addr,
                        tiers: reg.tiers,
                        last_heartbeat: Instant::now(),
                        live: true,
                        blocks: HashSet::new(),
                        to_remove: Vec::new(),
                        to_clean: Vec::new(),
                        to_pin: Vec::new(),
                        to_unpin: Vec::new(),
                    },
                );
                for b in reg.blocks.into_iter().filter(|b| !orphan_set.contains(b)) {
                    st.add_location(id, b);
                }
                let _ = reply.send(Wire(RegisterReply { remove_blocks: orphans, clean_blocks, pinned_blocks }));
            }
            WorkerManagerMsg::Heartbeat(Wire(hb), reply) => {
                let masters_mesh = super::journal::membership()
                    .await
                    .map(|m| m.nodes.into_values().map(|n| n.mesh).filter(|a| !a.is_empty()).collect())
                    .unwrap_or_default();
                let Some(w) = st.workers.get_mut(&hb.worker_id) else {
                    let _ = reply.send(Wire(HeartbeatReply {
                        reregister: true,
                        remove_blocks: vec![],
                        clean_blocks: vec![],
                        pin_blocks: vec![],
                        unpin_blocks: vec![],
                        masters_mesh,
                    }));
                    return Ok(());
                };
                let was_lost = !w.live;
                w.last_heartbeat = Instant::now();
                w.tiers = hb.tiers;
                let remove_blocks = std::mem::take(&mut w.to_remove);
                let clean_blocks = std::mem::take(&mut w.to_clean);
                let mut pin_blocks = std::mem::take(&mut w.to_pin);
                let unpin_blocks = std::mem::take(&mut w.to_unpin);
                for b in hb.removed {
                    st.remove_location(hb.worker_id, b);
                }
                let added: Vec<BlockId> = hb.added.into_iter().filter(|b| !st.freed.contains(b)).collect();
                for b in &added {
                    st.add_location(hb.worker_id, *b);
                }
                // New copies of pinned files' blocks (written, or fetched from
                // a UFS, since the last heartbeat) are pinned on arrival.
                if !added.is_empty() {
                    pin_blocks.extend(
                        namespace_actor::call(Duration::from_secs(5), |r| {
                            namespace_actor::NamespaceMsg::PinnedBlocks(added.clone(), r)
                        })
                        .await
                        .unwrap_or_default(),
                    );
                }
                // A worker that was declared lost had its locations dropped: it must report them again.
                let _ = reply.send(Wire(HeartbeatReply {
                    reregister: was_lost,
                    remove_blocks,
                    clean_blocks,
                    pin_blocks,
                    unpin_blocks,
                    masters_mesh,
                }));
            }
            WorkerManagerMsg::CommitBlock(Wire(c), reply) => {
                if !st.workers.contains_key(&c.worker_id) {
                    let _ = reply.send(Wire(CommitReply::UnknownWorker));
                    return Ok(());
                }
                if st.freed.contains(&c.block_id) {
                    let _ = reply.send(Wire(CommitReply::Orphan));
                    return Ok(());
                }
                st.add_location(c.worker_id, c.block_id);
                let _ = reply.send(Wire(CommitReply::Ok));
            }
            WorkerManagerMsg::Locate(Wire(blocks), reply) => {
                let out = blocks
                    .0
                    .iter()
                    .map(|b| {
                        st.locations
                            .get(b)
                            .map(|ws| {
                                ws.iter()
                                    .filter_map(|w| st.workers.get(w))
                                    .filter(|w| w.live)
                                    .map(|w| w.addr.clone())
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect();
                let _ = reply.send(Wire(LocationList(out)));
            }
            WorkerManagerMsg::Place(Wire(req), reply) => {
                let mut live: Vec<&WorkerEntry> =
                    st.workers.values().filter(|w| w.live && w.free_bytes() >= req.length).collect();
                if live.is_empty() {
                    // Let the worker answer a precise no-space error rather than guess here.
                    live = st.workers.values().filter(|w| w.live).collect();
                }
                live.sort_by_key(|w| {
                    (w.addr.host != req.client_host, std::cmp::Reverse(w.free_bytes()), w.addr.worker_id)
                });
                // Local-first; among equals, rotate so load spreads.
                if live.len() > 1 && live[0].addr.host != req.client_host {
                    let n = live.len();
                    live.rotate_left(st.next_rr % n);
                    st.next_rr += 1;
                }
                let _ = reply.send(Wire(Placement(live.into_iter().map(|w| w.addr.clone()).collect())));
            }
            WorkerManagerMsg::Free(Wire(blocks)) => {
                for b in &blocks.0 {
                    if st.freed.insert(*b) {
                        st.freed_order.push_back(*b);
                        if st.freed_order.len() > FREED_MEMORY {
                            if let Some(old) = st.freed_order.pop_front() {
                                st.freed.remove(&old);
                            }
                        }
                    }
                }
                st.drop_copies(blocks.0);
            }
            WorkerManagerMsg::Evict(Wire(blocks)) => st.drop_copies(blocks.0),
            WorkerManagerMsg::Clean(Wire(blocks)) => {
                for b in blocks.0 {
                    for w in st.locations.get(&b).into_iter().flatten() {
                        if let Some(entry) = st.workers.get_mut(w) {
                            entry.to_clean.push(b);
                        }
                    }
                }
            }
            WorkerManagerMsg::Pin(Wire(blocks)) => st.queue_pin(blocks.0, true),
            WorkerManagerMsg::Unpin(Wire(blocks)) => st.queue_pin(blocks.0, false),
            WorkerManagerMsg::Report(reply) => {
                let now = Instant::now();
                let mut out: Vec<WorkerReport> = st
                    .workers
                    .values()
                    .map(|w| WorkerReport {
                        addr: w.addr.clone(),
                        live: w.live,
                        last_heartbeat_ms_ago: now.duration_since(w.last_heartbeat).as_millis() as u64,
                        tiers: w.tiers.clone(),
                        blocks: w.blocks.len() as u64,
                    })
                    .collect();
                out.sort_by_key(|w| w.addr.worker_id);
                let _ = reply.send(Wire(WorkerReports(out)));
            }
            WorkerManagerMsg::Tick => {
                let now = Instant::now();
                let timeout = st.args.lost_timeout;
                let lost: Vec<WorkerId> = st
                    .workers
                    .iter()
                    .filter(|(_, w)| w.live && now.duration_since(w.last_heartbeat) > timeout)
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    tracing::warn!(worker = id, ?timeout, "worker lost: no heartbeat");
                    st.forget_worker_blocks(id);
                    if let Some(w) = st.workers.get_mut(&id) {
                        w.live = false;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The local WorkerManager. Found through the process group's local
/// members, not the name registry: the WorkerManagers of other masters carry
/// the same name on their nodes, and ractor drops a name from the local
/// registry when a remote actor of that name goes away.
pub fn actor() -> Option<ActorRef<WorkerManagerMsg>> {
    ractor::pg::get_local_members(&GROUP.to_string()).into_iter().next().map(ActorRef::from)
}

/// The WorkerManager as a worker finds it: any member of [`GROUP`], local or remote.
pub fn find_in_group() -> Option<ActorRef<WorkerManagerMsg>> {
    ractor::pg::get_members(&GROUP.to_string()).into_iter().next().map(ActorRef::from)
}
