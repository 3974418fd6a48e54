//! The worker role.
//!
//! ```text
//! NodeSupervisor
//! ├─ TierActor MEM ┐ one per tier: space accounting, LRU, eviction of clean blocks
//! ├─ TierActor SSD ┘
//! ├─ BlockReplicator copies blocks from peers for the leader's repairs
//! ├─ DataServer      block bytes on the data port
//! └─ WorkerActor     mesh join, registration, heartbeats, master commands
//! ```

pub use strata_protocol::blockfile;
pub mod data_server;
pub mod replicator;
pub mod store;
pub mod tier;
pub mod worker_actor;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use strata_protocol::messages::WorkerAddr;
use strata_protocol::WorkerId;

use crate::mesh::Mesh;
use crate::supervisor::{ChildSpec, Scope};
use tier::TierConfig;

/// What a worker needs to start.
#[derive(Clone)]
pub struct WorkerOptions {
    /// The worker's directory (its id file lives here).
    pub data_dir: PathBuf,
    /// Host name clients use to reach the data port.
    pub host: String,
    /// Tiers, fastest first.
    pub tiers: Vec<TierConfig>,
    /// Mesh and the masters' mesh addresses, when the masters are other processes.
    pub mesh: Option<(Mesh, Vec<String>)>,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
}

/// Loads the worker id from `dir/worker.id`, creating a random one on first start.
pub fn worker_id(dir: &Path) -> std::io::Result<WorkerId> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join("worker.id");
    match std::fs::read_to_string(&p) {
        Ok(s) => s.trim().parse().map_err(|e| std::io::Error::other(format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = rand::random::<u64>() >> 1;
            let tmp = dir.join("worker.id.tmp");
            std::fs::write(&tmp, id.to_string())?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &p)?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// The supervisor's child specs for a worker, in start order, and the
/// scope of their registered names.
pub fn children(opts: &WorkerOptions, listener: Arc<std::net::TcpListener>) -> Result<(Vec<ChildSpec>, Scope), String> {
    let id = worker_id(&opts.data_dir).map_err(|e| format!("worker id: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let scope = Scope::worker(id);
    let mut specs: Vec<ChildSpec> = opts
        .tiers
        .iter()
        .map(|t| {
            let t = t.clone();
            ChildSpec::actor(scope.name(&t.role()), move || (tier::TierActor, t.clone()))
        })
        .collect();
    let store = store::BlockStore { tiers: opts.tiers.clone(), worker_id: id, scope: scope.clone() };
    specs.push(ChildSpec::actor(scope.name(replicator::ROLE), move || (replicator::BlockReplicator, store.clone())));
    let ds = data_server::DataServerArgs { listener, tiers: opts.tiers.clone(), worker_id: id, scope: scope.clone() };
    specs.push(ChildSpec::actor(scope.name(data_server::ROLE), move || (data_server::DataServer, ds.clone())));
    let args = worker_actor::WorkerArgs {
        addr: WorkerAddr { worker_id: id, host: opts.host.clone(), data_port: port },
        tiers: opts.tiers.clone(),
        mesh: opts.mesh.clone(),
        heartbeat_interval: opts.heartbeat_interval,
        scope: scope.clone(),
    };
    specs.push(ChildSpec::actor(scope.name(worker_actor::ROLE), move || (worker_actor::WorkerActor, args.clone())));
    Ok((specs, scope))
}
