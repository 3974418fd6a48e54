//! WorkerActor: joins the mesh of every master, registers with each
//! master's WorkerManager (full block report), heartbeats (tier usage,
//! blocks stored and dropped since the last heartbeat) and carries out the
//! answers (drop blocks of deleted files, register again after a master
//! restart). Every master keeps the block map, so a new leader already knows
//! where every block is. Masters are found through their process group, so
//! a restarted master is found again without configuration; the mesh
//! addresses to dial come from the heartbeat replies (the group's
//! membership), so masters added at run time are joined too.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use strata_protocol::messages::{RegisterWorker, TierUsage, WorkerAddr, WorkerHeartbeat};
use strata_protocol::BlockId;
use tokio::task::JoinHandle;

use super::tier::{TierConfig, TierMsg};
use crate::cluster::{worker_managers, WorkerManagerMsg};
use crate::mesh::{Mesh, Wire};
use crate::supervisor::Scope;

/// The WorkerActor's role in its node's registered names.
pub const ROLE: &str = "worker";

/// Messages to the WorkerActor.
#[derive(RactorMessage)]
pub enum WorkerMsg {
    /// Heartbeat timer.
    Tick,
    /// Blocks dropped locally (evicted); reported with the next heartbeat.
    Removed(Vec<BlockId>),
    /// Blocks stored locally; reported with the next heartbeat.
    Added(Vec<BlockId>),
    /// Whether some master has accepted this worker's registration.
    Registered(ractor::RpcReplyPort<bool>),
    /// A heartbeat or registration call to one master finished: `Ok(true)`
    /// registered, `Ok(false)` asked to register again; with the masters'
    /// mesh addresses that master knows (heartbeats only).
    Done(ractor::ActorId, Result<(bool, Vec<String>), String>),
}

/// Arguments.
#[derive(Clone)]
pub struct WorkerArgs {
    /// Where this worker serves data.
    pub addr: WorkerAddr,
    /// Tiers, fastest first.
    pub tiers: Vec<TierConfig>,
    /// The mesh and the masters' mesh addresses to (re)join; `None` when the
    /// master runs in this process.
    pub mesh: Option<(Mesh, Vec<String>)>,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// This worker's registered names.
    pub scope: Scope,
}

/// The actor.
pub struct WorkerActor;

/// State.
pub struct WorkerState {
    args: WorkerArgs,
    /// Masters (their WorkerManagers) that accepted this worker's registration.
    registered: HashSet<ractor::ActorId>,
    removed: Vec<BlockId>,
    added: Vec<BlockId>,
    joining: Option<JoinHandle<()>>,
    /// Masters with a call in flight: each master is served independently,
    /// so a dead or stopped one never delays the others.
    in_flight: HashSet<ractor::ActorId>,
    /// The masters' mesh addresses as each live master last reported them
    /// (the group's membership): masters added at run time are joined,
    /// removed ones are no longer dialled.
    learned: HashMap<ractor::ActorId, Vec<String>>,
}

fn cast(scope: &Scope, msg: WorkerMsg) {
    if let Some(w) = ractor::registry::where_is(scope.name(ROLE)) {
        let _ = ActorRef::<WorkerMsg>::from(w).cast(msg);
    }
}

/// Reports locally dropped blocks to the WorkerActor of `scope`.
pub fn report_removed(scope: &Scope, blocks: Vec<BlockId>) {
    cast(scope, WorkerMsg::Removed(blocks));
}

/// Reports newly stored blocks to the WorkerActor of `scope`.
pub fn report_added(scope: &Scope, blocks: Vec<BlockId>) {
    cast(scope, WorkerMsg::Added(blocks));
}

/// The actor of tier `t` of the worker `scope`.
pub fn tier_ref(scope: &Scope, t: &TierConfig) -> Option<ActorRef<TierMsg>> {
    ractor::registry::where_is(scope.name(&t.role())).map(ActorRef::from)
}

async fn usage(scope: &Scope, tiers: &[TierConfig]) -> Vec<TierUsage> {
    let mut out = Vec::new();
    for t in tiers {
        if let Some(a) = tier_ref(scope, t) {
            if let Ok(u) = ractor::call_t!(a, TierMsg::Usage, 5000) {
                out.push(u);
            }
        }
    }
    out
}

async fn remove_blocks(scope: &Scope, tiers: &[TierConfig], blocks: &[BlockId]) {
    for b in blocks {
        for t in tiers {
            if let Some(a) = tier_ref(scope, t) {
                if matches!(ractor::call_t!(a, TierMsg::Remove, 5000, *b), Ok(true)) {
                    break;
                }
            }
        }
    }
}

/// Marks blocks persisted to a UFS as evictable on whichever tier has them.
fn mark_clean(scope: &Scope, tiers: &[TierConfig], blocks: &[BlockId]) {
    for t in tiers {
        if let Some(a) = tier_ref(scope, t) {
            for b in blocks {
                let _ = a.cast(TierMsg::SetClean(*b, true));
            }
        }
    }
}

/// Pins (never evicted) or unpins blocks on whichever tier has them.
fn mark_pinned(scope: &Scope, tiers: &[TierConfig], blocks: &[BlockId], pinned: bool) {
    for t in tiers {
        if let Some(a) = tier_ref(scope, t) {
            for b in blocks {
                let _ = a.cast(TierMsg::SetPinned(*b, pinned));
            }
        }
    }
}

/// Registers with one master (full block report).
async fn register(args: WorkerArgs, master: ActorRef<WorkerManagerMsg>) -> Result<(), String> {
    let (mut blocks, mut block_tiers) = (Vec::new(), Vec::new());
    for (i, t) in args.tiers.iter().enumerate() {
        let a = tier_ref(&args.scope, t).ok_or_else(|| format!("tier {} is restarting", t.name))?;
        let listed = ractor::call_t!(a, TierMsg::List, 5000).map_err(|e| e.to_string())?;
        block_tiers.extend(std::iter::repeat_n(i as u8, listed.len()));
        blocks.extend(listed);
    }
    let tiers = usage(&args.scope, &args.tiers).await;
    let reg = RegisterWorker { addr: args.addr.clone(), tiers, blocks, block_tiers };
    let n = reg.blocks.len();
    let reply = ractor::call_t!(master, WorkerManagerMsg::Register, 5000, Wire(reg)).map_err(|e| e.to_string())?.0;
    remove_blocks(&args.scope, &args.tiers, &reply.remove_blocks).await;
    // Pins first: a block must not become evictable before it is pinned.
    mark_pinned(&args.scope, &args.tiers, &reply.pinned_blocks, true);
    mark_clean(&args.scope, &args.tiers, &reply.clean_blocks);
    tracing::info!(
        worker = args.addr.worker_id,
        blocks = n,
        dropped = reply.remove_blocks.len(),
        "registered with a master"
    );
    Ok(())
}

/// Heartbeats one master; `Ok(false)` when it asks for a new registration.
async fn heartbeat(
    args: WorkerArgs,
    master: ActorRef<WorkerManagerMsg>,
    tiers: Vec<TierUsage>,
    removed: Vec<BlockId>,
    added: Vec<BlockId>,
) -> Result<(bool, Vec<String>), String> {
    let hb = WorkerHeartbeat { worker_id: args.addr.worker_id, tiers, removed, added };
    let Wire(reply) =
        ractor::call_t!(master, WorkerManagerMsg::Heartbeat, 2000, Wire(hb)).map_err(|e| e.to_string())?;
    remove_blocks(&args.scope, &args.tiers, &reply.remove_blocks).await;
    mark_pinned(&args.scope, &args.tiers, &reply.unpin_blocks, false);
    mark_pinned(&args.scope, &args.tiers, &reply.pin_blocks, true);
    mark_clean(&args.scope, &args.tiers, &reply.clean_blocks);
    Ok((!reply.reregister, reply.masters_mesh))
}

impl Actor for WorkerActor {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: WorkerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(args.heartbeat_interval, || WorkerMsg::Tick);
        let _ = myself.cast(WorkerMsg::Tick);
        Ok(WorkerState {
            args,
            registered: HashSet::new(),
            removed: Vec::new(),
            added: Vec::new(),
            joining: None,
            in_flight: HashSet::new(),
            learned: HashMap::new(),
        })
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if let Some(j) = st.joining.take() {
            j.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Tick => {
                let masters = worker_managers();
                let live: HashSet<ractor::ActorId> = masters.iter().map(|m| m.get_id()).collect();
                st.learned.retain(|id, _| live.contains(id));
                if let Some((mesh, configured)) = &st.args.mesh {
                    let learned: BTreeSet<&String> = st.learned.values().flatten().collect();
                    let addrs: Vec<String> =
                        if learned.is_empty() { configured.clone() } else { learned.into_iter().cloned().collect() };
                    if masters.len() < addrs.len() && st.joining.as_ref().is_none_or(|j| j.is_finished()) {
                        let mesh = mesh.clone();
                        st.joining = Some(tokio::spawn(async move {
                            let mut joins = tokio::task::JoinSet::new();
                            for a in addrs {
                                let mesh = mesh.clone();
                                joins.spawn(async move {
                                    if !mesh.connected_to(&a).await {
                                        if let Err(e) = mesh.join(&a, Duration::from_secs(2)).await {
                                            tracing::debug!(error = %e, "a master is not reachable on the mesh");
                                        }
                                    }
                                });
                            }
                            while joins.join_next().await.is_some() {}
                        }));
                    }
                }
                st.registered.retain(|id| live.contains(id));
                let removed = std::mem::take(&mut st.removed);
                let added = std::mem::take(&mut st.added);
                let mut calls = Vec::new();
                for master in masters {
                    let id = master.get_id();
                    if st.in_flight.insert(id) {
                        calls.push((master, st.registered.contains(&id)));
                    }
                }
                // The tiers are asked for their usage, and the masters
                // called, outside the mailbox.
                let args = st.args.clone();
                tokio::spawn(async move {
                    let tiers = usage(&args.scope, &args.tiers).await;
                    for (master, registered) in calls {
                        let (id, args, me) = (master.get_id(), args.clone(), myself.clone());
                        if registered {
                            let (t, r, a) = (tiers.clone(), removed.clone(), added.clone());
                            tokio::spawn(async move {
                                let _ = me.cast(WorkerMsg::Done(id, heartbeat(args, master, t, r, a).await));
                            });
                        } else {
                            tokio::spawn(async move {
                                let r = register(args, master).await.map(|_| (true, Vec::new()));
                                let _ = me.cast(WorkerMsg::Done(id, r));
                            });
                        }
                    }
                });
            }
            WorkerMsg::Done(id, r) => {
                st.in_flight.remove(&id);
                match r {
                    Ok((true, masters_mesh)) => {
                        st.registered.insert(id);
                        if !masters_mesh.is_empty() {
                            st.learned.insert(id, masters_mesh);
                        }
                    }
                    Ok((false, _)) => {
                        st.registered.remove(&id);
                    }
                    Err(e) => {
                        // A master that missed a heartbeat gets a full report later.
                        st.registered.remove(&id);
                        tracing::warn!(error = %e, "heartbeat or registration failed; retrying");
                    }
                }
            }
            WorkerMsg::Removed(blocks) => st.removed.extend(blocks),
            WorkerMsg::Added(blocks) => st.added.extend(blocks),
            WorkerMsg::Registered(reply) => {
                let _ = reply.send(!st.registered.is_empty());
            }
        }
        Ok(())
    }
}
