//! The root supervisor of a node.
//!
//! ```text
//! NodeSupervisor
//! ├─ child 1 (started first)
//! ├─ child 2
//! └─ …
//! ```
//! Children are started in order from [`ChildSpec`]s. When a child fails
//! (panic or error) or stops unexpectedly, the supervisor restarts it under
//! the same name after a back-off (100 ms doubling to 5 s). A child that
//! needs more than [`MAX_RESTARTS`] restarts within [`RESTART_WINDOW`] takes
//! the node down: the supervisor stops, and the process exits non-zero.
//! Children are found by name (`ractor::registry::where_is`), never by a
//! remembered `ActorRef`, because a restart makes the old reference dead.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use ractor_cluster::RactorMessage;

/// The prefix of one node's registered actor names: a master's actors are
/// `strata.master<id>.<role>`, a worker's `strata.worker<id>.<role>`, so
/// two nodes can live in one process and a name never clashes with a
/// peer's across the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope(Arc<str>);

impl Scope {
    /// The scope of master `id`.
    pub fn master(id: u64) -> Self {
        Scope(format!("strata.master{id}").into())
    }

    /// The scope of worker `id`.
    pub fn worker(id: u64) -> Self {
        Scope(format!("strata.worker{id:x}").into())
    }

    /// The registered name of this node's actor of `role`.
    pub fn name(&self, role: &str) -> String {
        format!("{}.{role}", self.0)
    }
}

/// Restarts allowed per child within [`RESTART_WINDOW`].
pub const MAX_RESTARTS: usize = 5;
/// The window restarts are counted in.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

type StartFn = dyn Fn(ActorCell) -> Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>> + Send + Sync;

/// How to start (and restart) one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Registered actor name of the child.
    pub name: String,
    start: Arc<StartFn>,
}

impl ChildSpec {
    /// A child started by `start(supervisor)`, which must spawn it linked and named `name`.
    pub fn new<F, Fut>(name: impl Into<String>, start: F) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        ChildSpec { name: name.into(), start: Arc::new(move |sup| Box::pin(start(sup))) }
    }

    /// A child that is an actor spawned with cloned arguments.
    pub fn actor<A>(name: impl Into<String>, make: impl Fn() -> (A, A::Arguments) + Send + Sync + 'static) -> Self
    where
        A: Actor,
    {
        let name = name.into();
        let n = name.clone();
        ChildSpec::new(name, move |sup| {
            let (actor, args) = make();
            let n = n.clone();
            async move { Actor::spawn_linked(Some(n), actor, args, sup).await.map(|(r, _)| r.get_cell()) }
        })
    }
}

/// Messages to the supervisor.
#[derive(RactorMessage)]
pub enum SupervisorMsg {
    /// Number of restarts so far, per child name.
    Restarts(ractor::RpcReplyPort<Vec<(String, usize)>>),
}

/// The supervisor actor.
pub struct NodeSupervisor;

struct Child {
    spec: ChildSpec,
    cell: ActorCell,
    restarts: Vec<Instant>,
    total_restarts: usize,
}

/// Supervisor state.
pub struct SupervisorState {
    children: Vec<Child>,
    stopping: bool,
}

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Vec<ChildSpec>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        specs: Vec<ChildSpec>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut children = Vec::new();
        for spec in specs {
            let cell = (spec.start)(myself.get_cell()).await.map_err(|e| format!("starting {}: {e}", spec.name))?;
            children.push(Child { spec, cell, restarts: Vec::new(), total_restarts: 0 });
        }
        Ok(SupervisorState { children, stopping: false })
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        state.stopping = true;
        // Stop children in reverse start order.
        for child in state.children.iter().rev() {
            child.cell.stop(Some("node shutting down".into()));
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restarts(reply) => {
                let _ = reply.send(state.children.iter().map(|c| (c.spec.name.clone(), c.total_restarts)).collect());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, format!("stopped: {}", reason.unwrap_or_default()))
            }
            _ => return Ok(()),
        };
        if state.stopping {
            return Ok(());
        }
        let Some(child) = state.children.iter_mut().find(|c| c.cell.get_id() == cell.get_id()) else {
            return Ok(());
        };
        let now = Instant::now();
        child.restarts.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        if child.restarts.len() >= MAX_RESTARTS {
            tracing::error!(child = %child.spec.name, %why, "child keeps dying; taking the node down");
            return Err(
                format!("child {} restarted {MAX_RESTARTS} times within {RESTART_WINDOW:?}", child.spec.name).into()
            );
        }
        let backoff = Duration::from_millis(100 << child.restarts.len().min(6)).min(Duration::from_secs(5));
        tracing::warn!(child = %child.spec.name, %why, ?backoff, "restarting child");
        child.restarts.push(now);
        child.total_restarts += 1;
        tokio::time::sleep(backoff).await;
        child.cell =
            (child.spec.start)(myself.get_cell()).await.map_err(|e| format!("restarting {}: {e}", child.spec.name))?;
        Ok(())
    }
}
