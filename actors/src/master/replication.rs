//! ReplicationManager: keeps every block at its replica count, on the
//! leader. The WorkerManager tells it which blocks to look at (the blocks
//! of a worker it declared lost, of a worker that registered again, copies
//! a worker dropped, blocks just written); it also looks at every block
//! with a copy when it starts leading and then every `scan_every`.
//!
//! A pass takes up to [`PASS_BLOCKS`] blocks, asks the WorkerManager for
//! their live holders and the namespace for what each needs (its file's
//! replica counts, whether the file is in its UFS, the block's length;
//! see [`Replicas::effective`]), and for each block with too few copies
//! hands a copy task to a worker that has none (the BlockReplicator there
//! copies it from a holder over the data port), fewest live copies first;
//! blocks with too many copies lose the extra ones on the fullest
//! holders. Copies in flight are bounded in all (`concurrency`) and per
//! target worker (`per_worker`); a block that has to wait goes back in
//! the queue. Nothing here is journaled: locations are soft state, and a
//! new leader finds what is left to do with its first scan.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use strata_client::data::DataPool;
use strata_protocol::messages::{Replicas, WorkerAddr};
use strata_protocol::ufs::PlacementPolicy;
use strata_protocol::{BlockId, ErrorCode, ErrorInfo, WorkerId};

use super::journal::Journal;
use super::namespace::BlockTarget;
use super::namespace_actor::{NamespaceMsg, Ns};
use crate::cluster::{BlockList, TrimList, WorkerManagerMsg};
use crate::mesh::Wire;

/// The ReplicationManager's role in its node's registered names.
pub const ROLE: &str = "replication";
/// Blocks looked at per pass.
pub const PASS_BLOCKS: usize = 4096;

/// How the cluster replicates blocks (`[master]` settings).
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// Copies kept of data that exists nowhere else, for files that do
    /// not set their own (`master.replicas`).
    pub default_min: u8,
    /// Accept a write with fewer copies than its minimum when fewer
    /// workers are live (the block is repaired later); else it fails.
    pub degraded_writes: bool,
    /// Copies in flight at once, in all.
    pub concurrency: usize,
    /// Copies in flight at once onto one worker.
    pub per_worker: usize,
    /// How long after a write its blocks are looked at (every copy of a
    /// chained write has committed by then).
    pub check_delay: Duration,
    /// Every block with a copy is looked at this often.
    pub scan_every: Duration,
    /// How new blocks are placed, where a mount does not say.
    pub placement: PlacementPolicy,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            default_min: 2,
            degraded_writes: true,
            concurrency: 16,
            per_worker: 4,
            check_delay: Duration::from_secs(3),
            scan_every: Duration::from_secs(300),
            placement: PlacementPolicy::LocalFirst,
        }
    }
}

impl ReplicationConfig {
    /// (min, max) copies of a block of a file with `replicas`.
    pub fn counts(&self, replicas: Replicas, persisted: bool) -> (u8, u8) {
        replicas.effective(persisted, self.default_min)
    }
}

/// Replication health as the last passes found it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// Blocks with fewer live copies than their minimum.
    pub under: u64,
    /// Blocks with more live copies than their maximum.
    pub over: u64,
    /// Blocks of data that exists nowhere else with no live copy.
    pub missing: u64,
}

/// Messages to the ReplicationManager.
#[derive(RactorMessage)]
pub enum ReplicationMsg {
    /// Look at these blocks soon.
    Check(Vec<BlockId>),
    /// Look at these blocks after the check delay (just written).
    CheckLater(Vec<BlockId>),
    /// A worker (re)registered: blocks that lacked a place for a copy may have one now.
    WorkerJoined,
    /// Periodic: start a pass if there is work and this master leads.
    Tick,
    /// (Sent to itself) what a pass found.
    PassDone(Box<PassResult>),
    /// (Sent to itself) every block with a copy, for a scan.
    Scanned(Vec<BlockId>),
    /// (Sent to itself) a copy finished.
    Copied { block: BlockId, target: WorkerId, ok: bool },
    /// Replication health, for `strata report`.
    Health(RpcReplyPort<Health>),
    /// A decommissioning worker's blocks still short of copies elsewhere.
    BlocksLeft(WorkerId, RpcReplyPort<Result<u64, ErrorInfo>>),
}

/// What one block needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Copy the block onto `target` from one of `sources`.
    Copy { block: BlockId, length: u64, sources: Vec<WorkerAddr>, target: WorkerAddr, clean: bool },
    /// Drop its copy on `worker`.
    Trim { block: BlockId, worker: WorkerId },
}

/// What a pass found.
#[derive(Debug, Default)]
pub struct PassResult {
    /// The blocks looked at.
    pub looked: Vec<BlockId>,
    /// Copies and trims to do, fewest live copies first.
    pub actions: Vec<Action>,
    /// Of the blocks looked at: those under, over, missing.
    pub under: Vec<BlockId>,
    /// See `under`.
    pub over: Vec<BlockId>,
    /// See `under`.
    pub missing: Vec<BlockId>,
}

/// A live worker a copy may go to: its address and free bytes.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The worker.
    pub addr: WorkerAddr,
    /// Its free bytes (a copy placed on it in this pass counts against it).
    pub free: u64,
}

/// What a pass decides from (see [`plan`]).
pub struct PassInput<'a> {
    /// The blocks.
    pub blocks: &'a [BlockId],
    /// The live holders of each block.
    pub holders: &'a [Vec<WorkerAddr>],
    /// What each block's file asks for (None: no file owns it).
    pub targets: &'a [Option<BlockTarget>],
    /// Live workers a copy may go to.
    pub candidates: &'a [Candidate],
    /// Blocks being copied now (left alone).
    pub busy: &'a HashSet<BlockId>,
    /// Workers being decommissioned: their copies serve as sources but do
    /// not count, and no copy goes to them.
    pub decommissioning: &'a HashSet<WorkerId>,
}

/// Decides what each block needs (pure: unit tested).
pub fn plan(cfg: &ReplicationConfig, input: &PassInput<'_>) -> PassResult {
    let PassInput { blocks, holders, targets, busy, decommissioning, .. } = *input;
    let candidates: Vec<&Candidate> =
        input.candidates.iter().filter(|c| !decommissioning.contains(&c.addr.worker_id)).collect();
    let mut out = PassResult { looked: blocks.to_vec(), ..PassResult::default() };
    let mut free: HashMap<WorkerId, u64> = candidates.iter().map(|c| (c.addr.worker_id, c.free)).collect();
    let mut needs: Vec<(usize, Action)> = Vec::new();
    for ((&block, held), target) in blocks.iter().zip(holders).zip(targets) {
        // A block no file owns is an orphan: the registration path drops those.
        let Some(t) = target else { continue };
        if busy.contains(&block) {
            continue;
        }
        let (min, max) = cfg.counts(t.replicas, t.persisted);
        let counted: Vec<&WorkerAddr> = held.iter().filter(|w| !decommissioning.contains(&w.worker_id)).collect();
        let live = counted.len();
        if held.is_empty() {
            if !t.persisted && min > 0 {
                out.missing.push(block);
            }
            continue;
        }
        if live < usize::from(min) {
            out.under.push(block);
            let mut hosts: HashSet<&str> = counted.iter().map(|w| w.host.as_str()).collect();
            let mut chosen: Vec<&Candidate> = Vec::new();
            for _ in live..usize::from(min) {
                // Room first, then another host than the copies so far, then most free.
                let pick = candidates
                    .iter()
                    .filter(|c| !held.iter().any(|h| h.worker_id == c.addr.worker_id))
                    .filter(|c| !chosen.iter().any(|x| x.addr.worker_id == c.addr.worker_id))
                    .min_by_key(|c| {
                        let f = free.get(&c.addr.worker_id).copied().unwrap_or(0);
                        (f < t.length, hosts.contains(c.addr.host.as_str()), std::cmp::Reverse(f))
                    });
                let Some(&c) = pick else { break };
                hosts.insert(&c.addr.host);
                if let Some(f) = free.get_mut(&c.addr.worker_id) {
                    *f = f.saturating_sub(t.length);
                }
                chosen.push(c);
            }
            // Sources: the counted copies first (a decommissioning worker
            // is spared where another copy is live).
            let mut sources: Vec<WorkerAddr> = counted.iter().map(|w| (*w).clone()).collect();
            sources.extend(held.iter().filter(|w| decommissioning.contains(&w.worker_id)).cloned());
            for c in chosen {
                let action = Action::Copy {
                    block,
                    length: t.length,
                    sources: sources.clone(),
                    target: c.addr.clone(),
                    clean: t.persisted,
                };
                needs.push((live, action));
            }
        } else if live > usize::from(max) {
            out.over.push(block);
            // Drop the copies on the fullest workers (never a decommissioning
            // worker's: it goes when it is stopped).
            let mut by_free: Vec<&WorkerAddr> = counted;
            by_free.sort_by_key(|w| (free.get(&w.worker_id).copied().unwrap_or(0), w.worker_id));
            for w in by_free.into_iter().take(live - usize::from(max)) {
                needs.push((live, Action::Trim { block, worker: w.worker_id }));
            }
        }
    }
    needs.sort_by_key(|(live, _)| *live);
    out.actions = needs.into_iter().map(|(_, a)| a).collect();
    out
}

/// Start-up arguments.
#[derive(Clone)]
pub struct ReplicationArgs {
    /// Settings.
    pub cfg: ReplicationConfig,
    /// Whether this master leads.
    pub journal: Journal,
    /// What each block needs.
    pub ns: Ns,
    /// The WorkerManager's registered name (holders, candidates, trims).
    pub workers: Arc<str>,
}

impl ReplicationArgs {
    fn wm(&self) -> Result<ActorRef<WorkerManagerMsg>, ErrorInfo> {
        ractor::registry::where_is(&self.workers)
            .map(ActorRef::from)
            .ok_or_else(|| ErrorInfo::new(ErrorCode::Unavailable, "worker manager is restarting"))
    }

    async fn wm_call<R: Send + 'static>(
        &self,
        make: impl FnOnce(RpcReplyPort<R>) -> WorkerManagerMsg,
    ) -> Result<R, ErrorInfo> {
        match self.wm()?.call(make, Some(Duration::from_secs(10))).await {
            Ok(ractor::rpc::CallResult::Success(r)) => Ok(r),
            _ => Err(ErrorInfo::new(ErrorCode::Unavailable, "worker manager did not answer")),
        }
    }
}

/// The actor.
pub struct ReplicationManager;

/// State.
pub struct ReplicationState {
    args: ReplicationArgs,
    queue: VecDeque<BlockId>,
    queued: HashSet<BlockId>,
    later: VecDeque<(Instant, Vec<BlockId>)>,
    /// Copies in flight: block → target.
    in_flight: HashMap<BlockId, WorkerId>,
    per_worker: HashMap<WorkerId, usize>,
    pass_running: bool,
    /// Leading since (None: following); a scan starts when this becomes Some.
    leading: Option<u64>,
    last_scan: Option<Instant>,
    under: HashSet<BlockId>,
    over: HashSet<BlockId>,
    missing: HashSet<BlockId>,
    pool: Arc<DataPool>,
}

impl ReplicationState {
    fn enqueue(&mut self, blocks: impl IntoIterator<Item = BlockId>) {
        for b in blocks {
            if self.queued.insert(b) {
                self.queue.push_back(b);
            }
        }
    }
}

impl Actor for ReplicationManager {
    type Msg = ReplicationMsg;
    type State = ReplicationState;
    type Arguments = ReplicationArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ReplicationArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(Duration::from_millis(500), || ReplicationMsg::Tick);
        Ok(ReplicationState {
            args,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            later: VecDeque::new(),
            in_flight: HashMap::new(),
            per_worker: HashMap::new(),
            pass_running: false,
            leading: None,
            last_scan: None,
            under: HashSet::new(),
            over: HashSet::new(),
            missing: HashSet::new(),
            pool: Arc::new(DataPool::new(Duration::from_secs(300))),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            // A follower keeps nothing: its first scan as leader finds all.
            ReplicationMsg::Check(blocks) if st.leading.is_some() => st.enqueue(blocks),
            ReplicationMsg::Check(_) => {}
            ReplicationMsg::CheckLater(blocks) => {
                if st.leading.is_some() && !blocks.is_empty() {
                    st.later.push_back((Instant::now() + st.args.cfg.check_delay, blocks));
                }
            }
            ReplicationMsg::Scanned(blocks) => {
                st.last_scan = Some(Instant::now());
                st.enqueue(blocks);
            }
            ReplicationMsg::WorkerJoined => {
                let under: Vec<BlockId> = st.under.iter().copied().collect();
                st.enqueue(under);
            }
            ReplicationMsg::Tick => tick(&myself, st),
            ReplicationMsg::PassDone(r) => {
                st.pass_running = false;
                for b in &r.looked {
                    st.under.remove(b);
                    st.over.remove(b);
                    st.missing.remove(b);
                }
                st.under.extend(&r.under);
                st.over.extend(&r.over);
                st.missing.extend(&r.missing);
                act(&myself, st, r.actions);
            }
            ReplicationMsg::Copied { block, target, ok } => {
                st.in_flight.remove(&block);
                if let Some(n) = st.per_worker.get_mut(&target) {
                    *n = n.saturating_sub(1);
                }
                if ok {
                    st.enqueue([block]);
                } else {
                    // Try again a little later (maybe from another source, onto another worker).
                    st.later.push_back((Instant::now() + Duration::from_secs(1), vec![block]));
                }
            }
            ReplicationMsg::BlocksLeft(worker, reply) => {
                let args = st.args.clone();
                tokio::spawn(async move {
                    let _ = reply.send(blocks_left(&args, worker).await);
                });
            }
            ReplicationMsg::Health(reply) => {
                let _ = reply.send(Health {
                    under: st.under.len() as u64,
                    over: st.over.len() as u64,
                    missing: st.missing.len() as u64,
                });
            }
        }
        Ok(())
    }
}

fn tick(myself: &ActorRef<ReplicationMsg>, st: &mut ReplicationState) {
    let term = st.args.journal.leader_term();
    if term != st.leading {
        // A new term (or leadership lost): start over from a scan.
        st.leading = term;
        st.last_scan = None;
        st.queue.clear();
        st.queued.clear();
        st.later.clear();
        st.under.clear();
        st.over.clear();
        st.missing.clear();
    }
    if st.leading.is_none() {
        return;
    }
    let now = Instant::now();
    while st.later.front().is_some_and(|(at, _)| *at <= now) {
        let (_, blocks) = st.later.pop_front().expect("checked above");
        st.enqueue(blocks);
    }
    if st.last_scan.is_none_or(|t| now.duration_since(t) >= st.args.cfg.scan_every) {
        st.last_scan = Some(now); // not again before this scan answers
        let (args, me) = (st.args.clone(), myself.clone());
        tokio::spawn(async move {
            if let Ok(Wire(all)) = args.wm_call(WorkerManagerMsg::AllBlocks).await {
                let _ = me.cast(ReplicationMsg::Scanned(all.0));
            }
        });
    }
    if st.pass_running || st.queue.is_empty() {
        return;
    }
    let n = st.queue.len().min(PASS_BLOCKS);
    let blocks: Vec<BlockId> = st.queue.drain(..n).collect();
    for b in &blocks {
        st.queued.remove(b);
    }
    st.pass_running = true;
    let busy: HashSet<BlockId> = st.in_flight.keys().copied().collect();
    let (args, me) = (st.args.clone(), myself.clone());
    tokio::spawn(async move {
        let r = match pass(&args, &blocks, &busy).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, blocks = blocks.len(), "replication pass failed; will look again");
                let _ = me.cast(ReplicationMsg::CheckLater(blocks));
                PassResult::default()
            }
        };
        let _ = me.cast(ReplicationMsg::PassDone(Box::new(r)));
    });
}

/// Looks at `blocks`: holders, what their files ask for, where copies may go.
async fn pass(args: &ReplicationArgs, blocks: &[BlockId], busy: &HashSet<BlockId>) -> Result<PassResult, ErrorInfo> {
    let asked = Wire(BlockList(blocks.to_vec()));
    let holders: Vec<Vec<WorkerAddr>> = args
        .wm_call(|r| WorkerManagerMsg::Holders(asked, r))
        .await?
        .0
         .0
        .into_iter()
        .map(|hs| hs.into_iter().map(|(w, _)| w).collect())
        .collect();
    let targets = args.ns.call(|r| NamespaceMsg::BlockTargets(blocks.to_vec(), r)).await??;
    let report = args.wm_call(WorkerManagerMsg::Report).await?.0 .0;
    let decommissioning: HashSet<WorkerId> = args.ns.call(NamespaceMsg::Decommissioning).await??.into_iter().collect();
    let candidates: Vec<Candidate> = report
        .into_iter()
        .filter(|w| w.live)
        .map(|w| Candidate {
            free: w.tiers.iter().map(|t| t.capacity_bytes.saturating_sub(t.used_bytes)).sum(),
            addr: w.addr,
        })
        .collect();
    let input = PassInput {
        blocks,
        holders: &holders,
        targets: &targets,
        candidates: &candidates,
        busy,
        decommissioning: &decommissioning,
    };
    Ok(plan(&args.cfg, &input))
}

/// How many of `worker`'s blocks still lack their minimum of copies on
/// workers that are not being decommissioned (0: it may be stopped).
pub async fn blocks_left(args: &ReplicationArgs, worker: WorkerId) -> Result<u64, ErrorInfo> {
    let Wire(BlockList(blocks)) =
        args.wm_call(|r| WorkerManagerMsg::WorkerBlocks(Wire(crate::cluster::WorkerIdList(vec![worker])), r)).await?;
    let decommissioning: HashSet<WorkerId> = args.ns.call(NamespaceMsg::Decommissioning).await??.into_iter().collect();
    let mut left = 0;
    for chunk in blocks.chunks(PASS_BLOCKS) {
        let asked = Wire(BlockList(chunk.to_vec()));
        let holders = args.wm_call(|r| WorkerManagerMsg::Holders(asked, r)).await?.0 .0;
        let targets = args.ns.call(|r| NamespaceMsg::BlockTargets(chunk.to_vec(), r)).await??;
        for (held, target) in holders.iter().zip(&targets) {
            let Some(t) = target else { continue };
            let (min, _) = args.cfg.counts(t.replicas, t.persisted);
            let counted = held.iter().filter(|(w, _)| !decommissioning.contains(&w.worker_id)).count();
            if counted < usize::from(min) {
                left += 1;
            }
        }
    }
    Ok(left)
}

/// Starts the copies the limits allow (the others wait in the queue) and
/// hands the trims to the WorkerManager.
fn act(myself: &ActorRef<ReplicationMsg>, st: &mut ReplicationState, actions: Vec<Action>) {
    let mut trims = Vec::new();
    let mut deferred = Vec::new();
    for a in actions {
        match a {
            Action::Trim { block, worker } => trims.push((block, worker)),
            Action::Copy { block, length, sources, target, clean } => {
                let on_target = st.per_worker.get(&target.worker_id).copied().unwrap_or(0);
                if st.in_flight.contains_key(&block) {
                    continue; // a second copy of it this pass: after the first
                }
                if st.in_flight.len() >= st.args.cfg.concurrency || on_target >= st.args.cfg.per_worker {
                    deferred.push(block);
                    continue;
                }
                st.in_flight.insert(block, target.worker_id);
                *st.per_worker.entry(target.worker_id).or_default() += 1;
                let (pool, me) = (st.pool.clone(), myself.clone());
                tokio::spawn(async move {
                    let r = pool.replicate(&target, block, length, &sources, clean).await;
                    if let Err(e) = &r {
                        tracing::warn!(block, target = target.worker_id, error = %e, "block copy failed");
                    } else {
                        tracing::debug!(block, target = target.worker_id, "block copied");
                    }
                    let _ = me.cast(ReplicationMsg::Copied { block, target: target.worker_id, ok: r.is_ok() });
                });
            }
        }
    }
    if !trims.is_empty() {
        tracing::info!(copies = trims.len(), "trimming extra block copies");
        if let Ok(wm) = st.args.wm() {
            let _ = wm.cast(WorkerManagerMsg::Trim(Wire(TrimList(trims))));
        }
    }
    st.enqueue(deferred);
}

/// The ReplicationManager as the WorkerManager and the request path reach
/// it: by its node-scoped name.
#[derive(Clone, Debug)]
pub struct Replication {
    name: Arc<str>,
    /// The cluster's replication settings.
    pub cfg: ReplicationConfig,
}

impl Replication {
    /// A handle to the ReplicationManager registered as `name`.
    pub fn new(name: String, cfg: ReplicationConfig) -> Self {
        Replication { name: name.into(), cfg }
    }

    fn actor(&self) -> Option<ActorRef<ReplicationMsg>> {
        ractor::registry::where_is(&self.name).map(ActorRef::from)
    }

    /// Has these blocks looked at soon (dropped while it restarts: its
    /// first scan finds them).
    pub fn check(&self, blocks: Vec<BlockId>) {
        if let (false, Some(a)) = (blocks.is_empty(), self.actor()) {
            let _ = a.cast(ReplicationMsg::Check(blocks));
        }
    }

    /// Has these blocks looked at after the check delay.
    pub fn check_later(&self, blocks: Vec<BlockId>) {
        if let (false, Some(a)) = (blocks.is_empty(), self.actor()) {
            let _ = a.cast(ReplicationMsg::CheckLater(blocks));
        }
    }

    /// A worker (re)registered.
    pub fn worker_joined(&self) {
        if let Some(a) = self.actor() {
            let _ = a.cast(ReplicationMsg::WorkerJoined);
        }
    }

    /// How many of a decommissioning worker's blocks still lack copies elsewhere.
    pub async fn blocks_left(&self, worker: WorkerId) -> Result<u64, ErrorInfo> {
        let a = self.actor().ok_or_else(|| ErrorInfo::new(ErrorCode::Unavailable, "replication is restarting"))?;
        match a.call(|r| ReplicationMsg::BlocksLeft(worker, r), Some(Duration::from_secs(30))).await {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            _ => Err(ErrorInfo::new(ErrorCode::Unavailable, "replication did not answer")),
        }
    }

    /// Replication health as the last passes found it.
    pub async fn health(&self) -> Result<Health, ErrorInfo> {
        let a = self.actor().ok_or_else(|| ErrorInfo::new(ErrorCode::Unavailable, "replication is restarting"))?;
        match a.call(ReplicationMsg::Health, Some(Duration::from_secs(5))).await {
            Ok(ractor::rpc::CallResult::Success(h)) => Ok(h),
            _ => Err(ErrorInfo::new(ErrorCode::Unavailable, "replication did not answer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: WorkerId, host: &str) -> WorkerAddr {
        WorkerAddr { worker_id: id, host: host.into(), data_port: 1000 + id as u16 }
    }

    fn target(min: u8, max: u8, persisted: bool) -> Option<BlockTarget> {
        Some(BlockTarget { inode: 9, replicas: Replicas { min, max }, persisted, length: 100 })
    }

    /// `plan` with the default settings.
    fn run(
        blocks: &[BlockId],
        holders: &[Vec<WorkerAddr>],
        targets: &[Option<BlockTarget>],
        candidates: &[Candidate],
        busy: &HashSet<BlockId>,
        decommissioning: &HashSet<WorkerId>,
    ) -> PassResult {
        let input = PassInput { blocks, holders, targets, candidates, busy, decommissioning };
        plan(&ReplicationConfig::default(), &input)
    }

    fn cands(ws: &[(WorkerId, &str, u64)]) -> Vec<Candidate> {
        ws.iter().map(|(id, h, free)| Candidate { addr: w(*id, h), free: *free }).collect()
    }

    /// Too few copies: copies go to workers without one, other hosts and
    /// more room first; the neediest block comes first.
    #[test]
    fn under_replicated_blocks_get_copies_on_other_hosts_neediest_first() {
        let c = cands(&[(1, "a", 1000), (2, "a", 5000), (3, "b", 500), (4, "c", 50)]);
        let blocks = [10, 11];
        let holders = vec![vec![w(1, "a"), w(3, "b")], vec![w(1, "a")]];
        let targets = vec![target(3, 0, false), target(2, 0, false)];
        let r = run(&blocks, &holders, &targets, &c, &HashSet::new(), &HashSet::new());
        assert_eq!(r.under, vec![10, 11]);
        // Block 10 has two copies of 3 (on hosts a, b): the third goes to a
        // worker with room on a host without one (4 has too little room, so
        // 2, on host a). Block 11 has one of 2: host b's worker 3 first.
        // Block 11 (one live copy) comes first.
        let copies: Vec<(BlockId, WorkerId)> = r
            .actions
            .iter()
            .map(|a| match a {
                Action::Copy { block, target, .. } => (*block, target.worker_id),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(copies, vec![(11, 3), (10, 2)]);
    }

    /// Too many copies lose the extra ones on the fullest workers; a
    /// persisted file keeps any number by default, and blocks in flight,
    /// missing or owned by no file are left alone.
    #[test]
    fn over_replicated_blocks_are_trimmed_and_others_left_alone() {
        let c = cands(&[(1, "a", 100), (2, "b", 900), (3, "c", 10)]);
        let all = vec![w(1, "a"), w(2, "b"), w(3, "c")];
        let blocks = [20, 21, 22, 23, 24];
        let holders = vec![all.clone(), all.clone(), vec![], all.clone(), vec![w(1, "a")]];
        let targets = vec![target(0, 0, false), target(0, 0, true), target(0, 0, false), None, target(2, 0, false)];
        let busy: HashSet<BlockId> = [24].into();
        let r = run(&blocks, &holders, &targets, &c, &busy, &HashSet::new());
        assert_eq!(r.actions, vec![Action::Trim { block: 20, worker: 3 }]);
        assert_eq!((r.over, r.missing, r.under), (vec![20], vec![22], vec![]));
    }

    /// A decommissioning worker's copies do not count and get no new
    /// copy; they serve as a source when no other copy is live, and are
    /// never trimmed.
    #[test]
    fn decommissioning_workers_copies_do_not_count() {
        let c = cands(&[(1, "a", 100), (2, "b", 900), (3, "c", 500)]);
        let blocks = [30, 31];
        // 30: only on worker 2 (decommissioning); 31: on 1, 2 and 3.
        let holders = vec![vec![w(2, "b")], vec![w(1, "a"), w(2, "b"), w(3, "c")]];
        let targets = vec![target(1, 1, false), target(2, 2, false)];
        let r = run(&blocks, &holders, &targets, &c, &HashSet::new(), &[2].into());
        assert_eq!(r.under, vec![30]);
        assert_eq!(
            r.actions,
            vec![Action::Copy { block: 30, length: 100, sources: vec![w(2, "b")], target: w(3, "c"), clean: false }]
        );
    }

    /// The defaults: data that exists nowhere else keeps the cluster's
    /// count (and no more); persisted data needs no copy and may have any.
    #[test]
    fn default_counts() {
        let cfg = ReplicationConfig::default();
        assert_eq!(cfg.counts(Replicas::default(), false), (2, 2));
        assert_eq!(cfg.counts(Replicas::default(), true), (0, u8::MAX));
        assert_eq!(cfg.counts(Replicas { min: 3, max: 0 }, true), (3, u8::MAX));
        assert_eq!(cfg.counts(Replicas { min: 1, max: 4 }, false), (1, 4));
    }
}
