//! WorkerActor: joins the mesh, registers with the master (full block
//! report), heartbeats (tier usage, dropped blocks) and carries out the
//! master's answers (drop blocks of deleted files, register again after a
//! master restart). Finds the master's WorkerManager through its process
//! group, so a restarted master is found again without configuration.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use strata_protocol::messages::{RegisterWorker, TierUsage, WorkerAddr, WorkerHeartbeat};
use strata_protocol::BlockId;
use tokio::task::JoinHandle;

use super::tier::{TierConfig, TierMsg};
use crate::master::workers::{self, WorkerManagerMsg};
use crate::mesh::{Mesh, Wire};

/// Registered name of the WorkerActor.
pub const NAME: &str = "strata.worker";

/// Messages to the WorkerActor.
#[derive(RactorMessage)]
pub enum WorkerMsg {
    /// Heartbeat timer.
    Tick,
    /// Blocks dropped locally (evicted); reported with the next heartbeat.
    Removed(Vec<BlockId>),
    /// Whether the master has accepted this worker's registration.
    Registered(ractor::RpcReplyPort<bool>),
}

/// Arguments.
#[derive(Clone)]
pub struct WorkerArgs {
    /// Where this worker serves data.
    pub addr: WorkerAddr,
    /// Tiers, fastest first.
    pub tiers: Vec<TierConfig>,
    /// The mesh and the master's mesh address to (re)join; `None` when the
    /// master runs in this process.
    pub mesh: Option<(Mesh, String)>,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
}

/// The actor.
pub struct WorkerActor;

/// State.
pub struct WorkerState {
    args: WorkerArgs,
    registered: bool,
    removed: Vec<BlockId>,
    joining: Option<JoinHandle<()>>,
}

/// Reports locally dropped blocks to the WorkerActor.
pub fn report_removed(blocks: Vec<BlockId>) {
    if let Some(w) = ractor::registry::where_is(NAME) {
        let _ = ActorRef::<WorkerMsg>::from(w).cast(WorkerMsg::Removed(blocks));
    }
}

fn tier_ref(t: &TierConfig) -> Option<ActorRef<TierMsg>> {
    ractor::registry::where_is(t.actor_name()).map(ActorRef::from)
}

async fn usage(tiers: &[TierConfig]) -> Vec<TierUsage> {
    let mut out = Vec::new();
    for t in tiers {
        if let Some(a) = tier_ref(t) {
            if let Ok(u) = ractor::call_t!(a, TierMsg::Usage, 5000) {
                out.push(u);
            }
        }
    }
    out
}

async fn remove_blocks(tiers: &[TierConfig], blocks: &[BlockId]) {
    for b in blocks {
        for t in tiers {
            if let Some(a) = tier_ref(t) {
                if matches!(ractor::call_t!(a, TierMsg::Remove, 5000, *b), Ok(true)) {
                    break;
                }
            }
        }
    }
}

impl WorkerActor {
    async fn register(&self, st: &mut WorkerState, master: ActorRef<WorkerManagerMsg>) -> Result<(), String> {
        let mut blocks = Vec::new();
        for t in &st.args.tiers {
            let a = tier_ref(t).ok_or_else(|| format!("tier {} is restarting", t.name))?;
            blocks.extend(ractor::call_t!(a, TierMsg::List, 5000).map_err(|e| e.to_string())?);
        }
        let reg = RegisterWorker { addr: st.args.addr.clone(), tiers: usage(&st.args.tiers).await, blocks };
        let n = reg.blocks.len();
        let reply =
            ractor::call_t!(master, WorkerManagerMsg::Register, 10_000, Wire(reg)).map_err(|e| e.to_string())?.0;
        remove_blocks(&st.args.tiers, &reply.remove_blocks).await;
        tracing::info!(
            worker = st.args.addr.worker_id,
            blocks = n,
            dropped = reply.remove_blocks.len(),
            "registered with the master"
        );
        st.registered = true;
        st.removed.clear();
        Ok(())
    }

    async fn heartbeat(&self, st: &mut WorkerState, master: ActorRef<WorkerManagerMsg>) -> Result<(), String> {
        let removed = std::mem::take(&mut st.removed);
        let hb = WorkerHeartbeat {
            worker_id: st.args.addr.worker_id,
            tiers: usage(&st.args.tiers).await,
            removed: removed.clone(),
        };
        match ractor::call_t!(master, WorkerManagerMsg::Heartbeat, 5000, Wire(hb)) {
            Ok(Wire(reply)) => {
                remove_blocks(&st.args.tiers, &reply.remove_blocks).await;
                if reply.reregister {
                    st.registered = false;
                }
                Ok(())
            }
            Err(e) => {
                st.removed.extend(removed);
                st.registered = false;
                Err(e.to_string())
            }
        }
    }
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
        Ok(WorkerState { args, registered: false, removed: Vec::new(), joining: None })
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if let Some(j) = st.joining.take() {
            j.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Tick => {
                let Some(master) = workers::find_in_group() else {
                    st.registered = false;
                    if let Some((mesh, addr)) = &st.args.mesh {
                        if st.joining.as_ref().is_none_or(|j| j.is_finished()) {
                            let (mesh, addr) = (mesh.clone(), addr.clone());
                            st.joining = Some(tokio::spawn(async move {
                                if let Err(e) = mesh.join(&addr, Duration::from_secs(5)).await {
                                    tracing::warn!(error = %e, "cannot reach the master on the mesh; retrying");
                                }
                            }));
                        }
                    }
                    return Ok(());
                };
                let r = if st.registered { self.heartbeat(st, master.clone()).await } else { Ok(()) };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
                if !st.registered {
                    if let Err(e) = self.register(st, master).await {
                        tracing::warn!(error = %e, "registration failed; retrying");
                    }
                }
            }
            WorkerMsg::Removed(blocks) => st.removed.extend(blocks),
            WorkerMsg::Registered(reply) => {
                let _ = reply.send(st.registered);
            }
        }
        Ok(())
    }
}
