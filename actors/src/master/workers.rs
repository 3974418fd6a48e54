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
use strata_protocol::messages::{
    BlockLocation, CommitReply, FileBlocks, FileType, HeartbeatReply, RegisterReply, TierUsage, WorkerAddr,
    WorkerReport,
};
use strata_protocol::ufs::PlacementPolicy;
use strata_protocol::{BlockId, ErrorCode, ErrorInfo, WorkerId};

use super::journal::Journal;
use super::namespace::InodeRecord;
use super::namespace_actor::{NamespaceMsg, Ns};
use super::replication::Replication;
pub use crate::cluster::{
    BlockList, HolderList, LocationList, MeshAddrs, PlaceRequest, Placement, TrimList, WorkerIdList, WorkerManagerMsg,
    WorkerReports, GROUP,
};
use crate::mesh::Wire;

/// The WorkerManager's role in its node's registered names.
pub const ROLE: &str = "workers";

/// Start-up arguments.
#[derive(Clone)]
pub struct WorkerManagerArgs {
    /// A worker silent this long is lost.
    pub lost_timeout: Duration,
    /// A lost worker silent this much longer is forgotten (no longer
    /// reported; it registers anew if it comes back).
    pub forget_after: Duration,
    /// For the leader's read barrier before orphans are decided, and the
    /// membership told to workers.
    pub journal: Journal,
    /// For which reported blocks are orphans, persisted or pinned.
    pub ns: Ns,
    /// Told of blocks whose copies changed (a worker lost or back, a
    /// block written, a copy dropped), to keep each at its replica count.
    pub replication: Replication,
}

/// What the namespace says of a registering worker's blocks (asked outside
/// the actor's mailbox: see `WorkerManagerMsg::Registered`).
async fn block_facts(args: &WorkerManagerArgs, blocks: &[BlockId]) -> RegisterReply {
    let ask = |make: fn(Vec<BlockId>, RpcReplyPort<Vec<BlockId>>) -> NamespaceMsg| async move {
        args.ns.call(|r| make(blocks.to_vec(), r)).await.unwrap_or_default()
    };
    // Blocks no file owns (deleted while the worker was away) are
    // dropped. Only the leader decides, after a read barrier: a
    // follower's namespace may lag and not know a block yet.
    let orphans = if args.journal.read_barrier().await.is_ok() { ask(NamespaceMsg::Orphans).await } else { Vec::new() };
    RegisterReply {
        remove_blocks: orphans,
        clean_blocks: ask(NamespaceMsg::PersistedBlocks).await,
        pinned_blocks: ask(NamespaceMsg::PinnedBlocks).await,
    }
}

struct WorkerEntry {
    addr: WorkerAddr,
    tiers: Vec<TierUsage>,
    last_heartbeat: Instant,
    live: bool,
    /// Its blocks, each with the index of its tier in `tiers` (`UNKNOWN_TIER`
    /// until a registration or commit says).
    blocks: HashMap<BlockId, u8>,
    to_remove: Vec<BlockId>,
    to_clean: Vec<BlockId>,
    to_pin: Vec<BlockId>,
    to_unpin: Vec<BlockId>,
}

/// A block whose tier the master has not been told.
const UNKNOWN_TIER: u8 = u8::MAX;

impl WorkerEntry {
    fn free_bytes(&self) -> u64 {
        self.tiers.iter().map(|t| t.capacity_bytes.saturating_sub(t.used_bytes)).sum()
    }

    fn tier_name(&self, block: BlockId) -> String {
        let i = self.blocks.get(&block).copied().unwrap_or(UNKNOWN_TIER);
        self.tiers.get(usize::from(i)).map(|t| t.tier.clone()).unwrap_or_default()
    }
}

/// Actor state.
pub struct WorkerManagerState {
    args: WorkerManagerArgs,
    /// The masters' mesh addresses, told to workers with every heartbeat
    /// reply (refreshed every tick, outside the mailbox).
    masters_mesh: Vec<String>,
    workers: HashMap<WorkerId, WorkerEntry>,
    locations: HashMap<BlockId, HashSet<WorkerId>>,
    next_rr: usize,
    /// Recently freed blocks (ids are never reused): a late "added" report
    /// or commit of one of them must not bring its location back.
    freed: HashSet<BlockId>,
    freed_order: std::collections::VecDeque<BlockId>,
    /// Blocks committed since the last tick: the ReplicationManager looks
    /// at them once every copy of their write had time to arrive.
    written: Vec<BlockId>,
    /// Workers being decommissioned (journaled; read from the namespace
    /// every tick): no new blocks go to them.
    decommissioning: HashSet<WorkerId>,
}

/// How many freed block ids are remembered.
const FREED_MEMORY: usize = 1 << 20;

impl WorkerManagerState {
    fn add_location(&mut self, worker: WorkerId, block: BlockId, tier: u8) {
        self.locations.entry(block).or_default().insert(worker);
        if let Some(w) = self.workers.get_mut(&worker) {
            let t = w.blocks.entry(block).or_insert(tier);
            if tier != UNKNOWN_TIER {
                *t = tier;
            }
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

    /// Forgets every location of `worker`; answers its blocks.
    fn forget_worker_blocks(&mut self, worker: WorkerId) -> Vec<BlockId> {
        let blocks: Vec<BlockId> =
            self.workers.get(&worker).map(|w| w.blocks.keys().copied().collect()).unwrap_or_default();
        for b in &blocks {
            self.remove_location(worker, *b);
        }
        blocks
    }

    /// Live holders of `b`.
    fn live_holders(&self, b: BlockId) -> impl Iterator<Item = &WorkerEntry> {
        self.locations.get(&b).into_iter().flatten().filter_map(|w| self.workers.get(w)).filter(|w| w.live)
    }
}

/// A live worker a new block may go to.
#[derive(Debug, Clone)]
pub struct PlaceCandidate {
    /// The worker.
    pub addr: WorkerAddr,
    /// Its free bytes.
    pub free: u64,
}

/// Orders live workers for a new block by `policy` (pure: unit tested):
/// workers with room for `req.length` first, in the policy's order
/// (`turn` counts placements, for the rotations; `seed` draws the
/// weighted random order), then those without (a worker answers a
/// precise no-space error, or evicts, rather than guess here); then
/// other hosts first among them ([`spread_hosts`]).
pub fn order(
    policy: PlacementPolicy,
    mut cands: Vec<PlaceCandidate>,
    req: &PlaceRequest,
    turn: usize,
    seed: u64,
) -> Vec<WorkerAddr> {
    cands.sort_by_key(|c| (c.addr.worker_id, c.free));
    let (mut room, mut full): (Vec<_>, Vec<_>) = cands.into_iter().partition(|c| c.free >= req.length);
    full.sort_by_key(|c| std::cmp::Reverse(c.free));
    match policy {
        PlacementPolicy::LocalFirst => {
            room.sort_by_key(|c| (c.addr.host != req.client_host, std::cmp::Reverse(c.free), c.addr.worker_id));
            // Among the others with room, rotate so load spreads.
            let local = room.iter().take_while(|c| c.addr.host == req.client_host).count();
            let n = room.len() - local;
            if local == 0 && n > 1 {
                room.rotate_left(turn % n);
            }
        }
        PlacementPolicy::RoundRobin => {
            let n = room.len().max(1);
            room.rotate_left(turn % n);
        }
        PlacementPolicy::MostAvailable => room.sort_by_key(|c| (std::cmp::Reverse(c.free), c.addr.worker_id)),
        PlacementPolicy::CapacityWeighted => {
            // Weighted sampling without replacement (Efraimidis–Spirakis):
            // key u^(1/w), highest first; u from a per-call seed.
            let mut x = seed | 1;
            let mut keyed: Vec<(f64, PlaceCandidate)> = room
                .into_iter()
                .map(|c| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                    let w = (c.free.max(1)) as f64;
                    (u.max(f64::MIN_POSITIVE).ln() / w, c)
                })
                .collect();
            keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
            room = keyed.into_iter().map(|(_, c)| c).collect();
        }
        PlacementPolicy::Hash => {
            let mut addrs: Vec<WorkerAddr> = room.iter().map(|c| c.addr.clone()).collect();
            by_hash(req.block, &mut addrs);
            let rank: HashMap<WorkerId, usize> = addrs.iter().enumerate().map(|(i, a)| (a.worker_id, i)).collect();
            room.sort_by_key(|c| rank[&c.addr.worker_id]);
        }
    }
    spread_hosts(room.into_iter().chain(full).map(|c| c.addr).collect())
}

/// Orders workers by rendezvous hash of (block, worker): every caller
/// orders one block's workers alike, and adding or removing a worker
/// moves only the blocks it wins or held.
pub fn by_hash(block: BlockId, workers: &mut [WorkerAddr]) {
    let score = |w: &WorkerAddr| {
        let mut x = block ^ w.worker_id.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15;
        // splitmix64 finalizer
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    };
    workers.sort_by_key(|w| (std::cmp::Reverse(score(w)), w.worker_id));
}

/// Reorders workers (best first) so that consecutive ones are on
/// different hosts where possible: the first copies of a block, written
/// down a chain of the first workers, land on distinct hosts.
pub fn spread_hosts(workers: Vec<WorkerAddr>) -> Vec<WorkerAddr> {
    let mut rest = workers;
    let mut out = Vec::with_capacity(rest.len());
    while !rest.is_empty() {
        let mut hosts = HashSet::new();
        let (round, later): (Vec<_>, Vec<_>) = rest.into_iter().partition(|w| hosts.insert(w.host.clone()));
        out.extend(round);
        rest = later;
    }
    out
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
            masters_mesh: Vec::new(),
            workers: HashMap::new(),
            locations: HashMap::new(),
            next_rr: 0,
            freed: HashSet::new(),
            freed_order: std::collections::VecDeque::new(),
            written: Vec::new(),
            decommissioning: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerManagerMsg::Register(Wire(reg), reply) => {
                // The namespace is asked in a task of its own: the mailbox
                // keeps serving heartbeats, placements and locations meanwhile.
                let args = st.args.clone();
                tokio::spawn(async move {
                    let facts = block_facts(&args, &reg.blocks).await;
                    let _ = myself.cast(WorkerManagerMsg::Registered(Wire(reg), Wire(facts), reply));
                });
            }
            WorkerManagerMsg::Registered(Wire(reg), Wire(facts), reply) => {
                let id = reg.addr.worker_id;
                tracing::info!(worker = id, host = %reg.addr.host, port = reg.addr.data_port, blocks = reg.blocks.len(), "worker registered");
                st.forget_worker_blocks(id);
                let orphan_set: HashSet<BlockId> = facts.remove_blocks.iter().copied().collect();
                let tier_of: HashMap<BlockId, u8> =
                    reg.blocks.iter().copied().zip(reg.block_tiers.iter().copied()).collect();
                st.workers.insert(
                    id,
                    WorkerEntry {
                        addr: reg.addr,
                        tiers: reg.tiers,
                        last_heartbeat: Instant::now(),
                        live: true,
                        blocks: HashMap::new(),
                        to_remove: Vec::new(),
                        to_clean: Vec::new(),
                        to_pin: Vec::new(),
                        to_unpin: Vec::new(),
                    },
                );
                let kept: Vec<BlockId> = reg.blocks.into_iter().filter(|b| !orphan_set.contains(b)).collect();
                for b in &kept {
                    st.add_location(id, *b, tier_of.get(b).copied().unwrap_or(UNKNOWN_TIER));
                }
                // A worker back with copies the others replaced: too many now.
                st.args.replication.check(kept);
                st.args.replication.worker_joined();
                let _ = reply.send(Wire(facts));
            }
            WorkerManagerMsg::Heartbeat(Wire(hb), reply) => {
                let masters_mesh = st.masters_mesh.clone();
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
                let pin_blocks = std::mem::take(&mut w.to_pin);
                let unpin_blocks = std::mem::take(&mut w.to_unpin);
                for b in &hb.removed {
                    st.remove_location(hb.worker_id, *b);
                }
                // A copy dropped (evicted, found corrupt): maybe too few now.
                st.args.replication.check(hb.removed);
                // Not those freed, nor those this reply tells it to drop (a
                // copy trimmed or found corrupt before its write was heard of).
                let dropping: HashSet<BlockId> = remove_blocks.iter().copied().collect();
                let added: Vec<BlockId> =
                    hb.added.into_iter().filter(|b| !st.freed.contains(b) && !dropping.contains(b)).collect();
                for b in &added {
                    st.add_location(hb.worker_id, *b, UNKNOWN_TIER);
                }
                // A worker that was declared lost had its locations dropped: it must report them again.
                let mut answer = HeartbeatReply {
                    reregister: was_lost,
                    remove_blocks,
                    clean_blocks,
                    pin_blocks,
                    unpin_blocks,
                    masters_mesh,
                };
                if added.is_empty() {
                    let _ = reply.send(Wire(answer));
                    return Ok(());
                }
                // New copies of pinned files' blocks (written, or fetched from
                // a UFS, since the last heartbeat) are pinned on arrival: the
                // namespace is asked outside the mailbox, and the reply port
                // goes with the question.
                let ns = st.args.ns.clone();
                tokio::spawn(async move {
                    answer
                        .pin_blocks
                        .extend(ns.call(|r| NamespaceMsg::PinnedBlocks(added.clone(), r)).await.unwrap_or_default());
                    let _ = reply.send(Wire(answer));
                });
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
                let tier = st.workers.get(&c.worker_id).and_then(|w| w.tiers.iter().position(|t| t.tier == c.tier));
                st.add_location(c.worker_id, c.block_id, tier.map_or(UNKNOWN_TIER, |i| i as u8));
                st.written.push(c.block_id);
                let _ = reply.send(Wire(CommitReply::Ok));
            }
            WorkerManagerMsg::Locate(Wire(blocks), reply) => {
                let out = blocks.0.iter().map(|b| st.live_holders(*b).map(|w| w.addr.clone()).collect()).collect();
                let _ = reply.send(Wire(LocationList(out)));
            }
            WorkerManagerMsg::Holders(Wire(blocks), reply) => {
                let out = blocks
                    .0
                    .iter()
                    .map(|b| st.live_holders(*b).map(|w| (w.addr.clone(), w.tier_name(*b))).collect())
                    .collect();
                let _ = reply.send(Wire(HolderList(out)));
            }
            WorkerManagerMsg::Trim(Wire(trims)) => {
                for (b, w) in trims.0 {
                    if st.locations.get(&b).is_some_and(|ws| ws.contains(&w)) {
                        st.remove_location(w, b);
                        if let Some(entry) = st.workers.get_mut(&w) {
                            entry.to_remove.push(b);
                        }
                    }
                }
            }
            WorkerManagerMsg::BadCopies(Wire(bad)) => {
                for (b, w) in bad.0 {
                    let others = st.live_holders(b).filter(|h| h.addr.worker_id != w).count();
                    if others == 0 {
                        // Never drop the last copy: a read keeps reporting it.
                        tracing::error!(block = b, worker = w, "the only live copy of a block is corrupt");
                        continue;
                    }
                    tracing::warn!(block = b, worker = w, "dropping a corrupt copy; {others} other copies live");
                    if st.locations.get(&b).is_some_and(|ws| ws.contains(&w)) {
                        st.remove_location(w, b);
                        if let Some(entry) = st.workers.get_mut(&w) {
                            entry.to_remove.push(b);
                        }
                    }
                    st.args.replication.check(vec![b]);
                }
            }
            WorkerManagerMsg::AllBlocks(reply) => {
                let _ = reply.send(Wire(BlockList(st.locations.keys().copied().collect())));
            }
            WorkerManagerMsg::Place(Wire(req), reply) => {
                let cands: Vec<PlaceCandidate> = st
                    .workers
                    .values()
                    .filter(|w| w.live && !st.decommissioning.contains(&w.addr.worker_id))
                    .map(|w| PlaceCandidate { addr: w.addr.clone(), free: w.free_bytes() })
                    .collect();
                let policy = req.policy.unwrap_or(st.args.replication.cfg.placement);
                st.next_rr += 1;
                let chosen = order(policy, cands, &req, st.next_rr, rand::random());
                let _ = reply.send(Wire(Placement(chosen)));
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
                        state: match (w.live, st.decommissioning.contains(&w.addr.worker_id)) {
                            (false, _) => "lost",
                            (true, true) => "decommissioning",
                            (true, false) => "live",
                        }
                        .into(),
                        blocks_left: 0,
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
            WorkerManagerMsg::Masters(Wire(masters)) => st.masters_mesh = masters.0,
            WorkerManagerMsg::Decommissioning(Wire(ids)) => {
                let now: HashSet<WorkerId> = ids.0.into_iter().collect();
                let changed: Vec<WorkerId> = now.symmetric_difference(&st.decommissioning).copied().collect();
                for id in changed {
                    // Decommissioned: its copies no longer count; recommissioned:
                    // they count again (some blocks may have too many).
                    tracing::info!(worker = id, decommissioning = now.contains(&id), "worker state changed");
                    let blocks = st.workers.get(&id).map(|w| w.blocks.keys().copied().collect()).unwrap_or_default();
                    st.args.replication.check(blocks);
                }
                st.decommissioning = now;
            }
            WorkerManagerMsg::WorkerBlocks(Wire(ids), reply) => {
                let blocks = ids.0.iter().filter_map(|id| st.workers.get(id)).flat_map(|w| w.blocks.keys().copied());
                let _ = reply.send(Wire(BlockList(blocks.collect())));
            }
            WorkerManagerMsg::Tick => {
                let (journal, ns) = (st.args.journal.clone(), st.args.ns.clone());
                let me = myself.clone();
                tokio::spawn(async move {
                    if let Some(m) = journal.membership().await {
                        let mesh = m.nodes.into_values().map(|n| n.mesh).filter(|a| !a.is_empty()).collect();
                        let _ = me.cast(WorkerManagerMsg::Masters(Wire(MeshAddrs(mesh))));
                    }
                    if let Ok(Ok(ids)) = ns.call(NamespaceMsg::Decommissioning).await {
                        let _ = me.cast(WorkerManagerMsg::Decommissioning(Wire(WorkerIdList(ids))));
                    }
                });
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
                    let blocks = st.forget_worker_blocks(id);
                    if let Some(w) = st.workers.get_mut(&id) {
                        w.live = false;
                    }
                    st.args.replication.check(blocks);
                }
                st.args.replication.check_later(std::mem::take(&mut st.written));
                let forget = timeout + st.args.forget_after;
                st.workers.retain(|id, w| {
                    let gone = !w.live && now.duration_since(w.last_heartbeat) > forget;
                    if gone {
                        tracing::info!(worker = id, after = ?forget, "lost worker forgotten");
                    }
                    !gone
                });
            }
        }
        Ok(())
    }
}

/// The worker manager as the master's request path reaches it: by its
/// node-scoped name (the WorkerManagers of other masters, in the same
/// process group, carry names of their own).
#[derive(Clone, Debug)]
pub struct Workers {
    name: std::sync::Arc<str>,
}

impl Workers {
    /// A handle to the WorkerManager registered as `name`.
    pub fn new(name: String) -> Self {
        Workers { name: name.into() }
    }

    /// The WorkerManager, if it is running.
    pub fn actor(&self) -> Option<ActorRef<WorkerManagerMsg>> {
        ractor::registry::where_is(&self.name).map(ActorRef::from)
    }

    /// Calls the WorkerManager (`Unavailable` while it restarts or if it does not answer in 10 s).
    pub async fn call<R: Send + 'static>(
        &self,
        make: impl FnOnce(RpcReplyPort<R>) -> WorkerManagerMsg,
    ) -> Result<R, ErrorInfo> {
        let wm = self.actor().ok_or_else(|| ErrorInfo::new(ErrorCode::Unavailable, "worker manager is restarting"))?;
        match wm.call(make, Some(Duration::from_secs(10))).await {
            Ok(ractor::rpc::CallResult::Success(r)) => Ok(r),
            _ => Err(ErrorInfo::new(ErrorCode::Unavailable, "worker manager did not answer")),
        }
    }

    /// Tells the WorkerManager something (dropped while it restarts: what
    /// it is told is soft state that workers' reports bring back).
    pub fn tell(&self, msg: WorkerManagerMsg) {
        if let Some(wm) = self.actor() {
            let _ = wm.cast(msg);
        }
    }

    /// Tells the workers holding these blocks to drop them (their files are gone).
    pub fn free(&self, blocks: Vec<BlockId>) {
        if !blocks.is_empty() {
            self.tell(WorkerManagerMsg::Free(Wire(BlockList(blocks))));
        }
    }

    /// Drops the cached copies of blocks whose data is safe in the UFS.
    pub fn evict(&self, blocks: Vec<BlockId>) {
        if !blocks.is_empty() {
            self.tell(WorkerManagerMsg::Evict(Wire(BlockList(blocks))));
        }
    }

    /// Live workers for a new block (`block`, 0 if not known yet) of
    /// `length` bytes, best first by `policy` (None: the cluster's; see
    /// [`order`]).
    pub async fn place(
        &self,
        client_host: String,
        length: u64,
        policy: Option<PlacementPolicy>,
        block: BlockId,
    ) -> Result<Vec<WorkerAddr>, ErrorInfo> {
        let req = PlaceRequest { client_host, length, policy, block };
        Ok(self.call(|r| WorkerManagerMsg::Place(Wire(req), r)).await?.0 .0)
    }

    /// Live holders of blocks, with their tiers.
    pub async fn holders(&self, blocks: Vec<BlockId>) -> Result<Vec<Vec<(WorkerAddr, String)>>, ErrorInfo> {
        Ok(self.call(|r| WorkerManagerMsg::Holders(Wire(BlockList(blocks)), r)).await?.0 .0)
    }

    /// A file's blocks and their cached locations.
    pub async fn file_blocks(&self, rec: InodeRecord) -> Result<FileBlocks, ErrorInfo> {
        if rec.attr.file_type != FileType::File {
            return Err(ErrorInfo::new(ErrorCode::IsADirectory, format!("inode {} is not a file", rec.attr.inode)));
        }
        let bs = rec.attr.block_size;
        let locs = self.call(|r| WorkerManagerMsg::Locate(Wire(BlockList(rec.blocks.clone())), r)).await?.0 .0;
        let blocks = rec
            .blocks
            .iter()
            .zip(locs)
            .enumerate()
            .map(|(i, (b, workers))| BlockLocation {
                block_id: *b,
                offset: i as u64 * bs,
                length: rec.block_length(i),
                workers,
                from_ufs: false,
            })
            .collect();
        Ok(FileBlocks { attr: rec.attr, blocks, ufs: None, inline: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_hosts_puts_distinct_hosts_first_keeping_order() {
        let w = |id: u64, host: &str| WorkerAddr { worker_id: id, host: host.into(), data_port: 1 };
        let got = spread_hosts(vec![w(1, "a"), w(2, "a"), w(3, "b"), w(4, "a"), w(5, "c"), w(6, "b")]);
        let ids: Vec<u64> = got.iter().map(|w| w.worker_id).collect();
        assert_eq!(ids, vec![1, 3, 5, 2, 6, 4]);
    }
}

#[cfg(test)]
mod placement_tests {
    use super::*;

    fn cands(ws: &[(u64, &str, u64)]) -> Vec<PlaceCandidate> {
        ws.iter()
            .map(|(id, host, free)| PlaceCandidate {
                addr: WorkerAddr { worker_id: *id, host: host.to_string(), data_port: 1 },
                free: *free,
            })
            .collect()
    }

    fn req(host: &str, length: u64, block: u64) -> PlaceRequest {
        PlaceRequest { client_host: host.into(), length, policy: None, block }
    }

    fn ids(ws: &[WorkerAddr]) -> Vec<u64> {
        ws.iter().map(|w| w.worker_id).collect()
    }

    const W: [(u64, &str, u64); 4] = [(1, "a", 500), (2, "b", 900), (3, "c", 100), (4, "d", 700)];

    #[test]
    fn local_first_puts_the_writers_host_first_then_most_free() {
        let got = order(PlacementPolicy::LocalFirst, cands(&W), &req("c", 50, 0), 0, 1);
        assert_eq!(ids(&got), vec![3, 2, 4, 1]);
        // Without room on the local worker, it goes last.
        let got = order(PlacementPolicy::LocalFirst, cands(&W), &req("c", 200, 0), 0, 1);
        assert_eq!(ids(&got)[3], 3);
        // No local worker: the others rotate turn by turn.
        let firsts: Vec<u64> = (0..4)
            .map(|t| order(PlacementPolicy::LocalFirst, cands(&W), &req("x", 50, 0), t, 1)[0].worker_id)
            .collect();
        assert_eq!(firsts, vec![2, 4, 1, 3]);
    }

    #[test]
    fn round_robin_starts_each_block_at_the_next_worker() {
        let firsts: Vec<u64> = (0..8)
            .map(|t| order(PlacementPolicy::RoundRobin, cands(&W), &req("a", 50, 0), t, 1)[0].worker_id)
            .collect();
        assert_eq!(firsts, vec![1, 2, 3, 4, 1, 2, 3, 4]);
    }

    #[test]
    fn most_available_orders_by_free_space_and_room() {
        let got = order(PlacementPolicy::MostAvailable, cands(&W), &req("a", 600, 0), 3, 1);
        assert_eq!(ids(&got), vec![2, 4, 1, 3]);
        let got = order(PlacementPolicy::MostAvailable, cands(&W), &req("a", 800, 0), 3, 1);
        assert_eq!(ids(&got)[0], 2, "only worker 2 has room; the rest by free space");
        assert_eq!(ids(&got), vec![2, 4, 1, 3]);
    }

    /// Over many draws, the first pick follows free space (900 : 700 :
    /// 500 : 100 out of 2200).
    #[test]
    fn capacity_weighted_picks_in_proportion_to_free_space() {
        let mut counts: HashMap<u64, u32> = HashMap::new();
        let mut seed = 0x1234_5678u64;
        for t in 0..22_000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let first = order(PlacementPolicy::CapacityWeighted, cands(&W), &req("a", 50, 0), t, seed)[0].worker_id;
            *counts.entry(first).or_default() += 1;
        }
        for (id, expect) in [(2u64, 9000.0), (4, 7000.0), (1, 5000.0), (3, 1000.0)] {
            let got = f64::from(counts[&id]);
            assert!((got - expect).abs() < expect * 0.1, "worker {id}: {got} picks, expected about {expect}");
        }
    }

    /// Every caller orders a block's workers alike; a worker leaving
    /// moves only the blocks it won.
    #[test]
    fn hash_is_deterministic_and_moves_little() {
        let a = order(PlacementPolicy::Hash, cands(&W), &req("a", 50, 77), 0, 1);
        let b = order(PlacementPolicy::Hash, cands(&W), &req("z", 50, 77), 9, 2);
        assert_eq!(ids(&a), ids(&b));
        let all = cands(&W);
        let three: Vec<PlaceCandidate> = all.iter().filter(|c| c.addr.worker_id != 4).cloned().collect();
        let mut moved = 0;
        let mut spread: HashMap<u64, u32> = HashMap::new();
        for block in 0..4000u64 {
            let before = order(PlacementPolicy::Hash, all.clone(), &req("a", 50, block), 0, 1)[0].worker_id;
            let after = order(PlacementPolicy::Hash, three.clone(), &req("a", 50, block), 0, 1)[0].worker_id;
            *spread.entry(before).or_default() += 1;
            if before != 4 {
                assert_eq!(before, after, "block {block} moved though its worker stayed");
            } else {
                moved += 1;
            }
        }
        assert!(spread.values().all(|n| (800..1200).contains(n)), "{spread:?}");
        assert!((800..1200).contains(&moved), "{moved}");
    }
}
