//! The master role.
//!
//! ```text
//! NodeSupervisor
//! ├─ NamespaceActor  applies committed entries to the RocksDB inode store
//! ├─ JournalActor    openraft member; proposals, read barriers, status
//! ├─ RaftServer      peers' Raft RPCs over the mesh, into the JournalActor's Raft
//! ├─ WorkerManager   worker registry, liveness, block locations, placement
//! ├─ MountSyncer     persists async-through files (on the leader)
//! └─ ClientGateway   client RPC port
//! ```

pub mod gateway;
pub mod journal;
pub mod leases;
pub mod mounts;
pub mod namespace;
pub mod namespace_actor;
pub mod raft;
pub mod raft_net;
pub mod store;
pub mod workers;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::supervisor::ChildSpec;

/// What a master needs to start.
#[derive(Clone, Debug)]
pub struct MasterOptions {
    /// Raft id of this master.
    pub node_id: u64,
    /// Directory for the journal and metadata (RocksDB) and snapshots.
    pub data_dir: PathBuf,
    /// Address clients use to reach this master (host:port).
    pub client_addr: String,
    /// This master's mesh address (host:port), recorded in the membership.
    pub mesh_addr: String,
    /// Initial voters; just this master when empty.
    pub members: BTreeMap<u64, raft::MasterNode>,
    /// Join an existing group (the leader adds this master) rather than
    /// initializing a new one.
    pub join: bool,
    /// Notified when the leader removes this master from the group.
    pub removed: Arc<tokio::sync::Notify>,
    /// Snapshot after this many journal entries.
    pub snapshot_entries: u64,
    /// A worker silent this long is lost.
    pub worker_lost_timeout: Duration,
}

/// Opens the master's store and returns the supervisor's child specs, in start order.
pub fn children(opts: &MasterOptions, listener: Arc<std::net::TcpListener>) -> Result<Vec<ChildSpec>, String> {
    std::fs::create_dir_all(&opts.data_dir).map_err(|e| format!("creating {}: {e}", opts.data_dir.display()))?;
    let db = store::open_db(&opts.data_dir.join("meta")).map_err(|e| format!("opening the metadata store: {e}"))?;
    let log_db = store::open_log_db(&opts.data_dir.join("log")).map_err(|e| format!("opening the journal: {e}"))?;
    let ns = Arc::new(namespace::Namespace::open(db.clone()).map_err(|e| format!("opening the namespace: {e}"))?);
    let mut members = opts.members.clone();
    if members.is_empty() {
        let me = raft::MasterNode { addr: opts.client_addr.clone(), mesh: opts.mesh_addr.clone() };
        members.insert(opts.node_id, me);
    }
    let slot = Arc::new(tokio::sync::Mutex::new(None));
    let raft_server =
        raft_net::RaftServerArgs { node_id: opts.node_id, slot: slot.clone(), removed: opts.removed.clone() };
    let journal_args = journal::JournalArgs {
        node_id: opts.node_id,
        client_addr: opts.client_addr.clone(),
        members,
        join: opts.join,
        db,
        log_db,
        snapshot_dir: opts.data_dir.join("snapshots"),
        snapshot_entries: opts.snapshot_entries,
        slot,
    };
    let wm_args = workers::WorkerManagerArgs { lost_timeout: opts.worker_lost_timeout };
    Ok(vec![
        ChildSpec::actor(namespace_actor::NAME, move || (namespace_actor::NamespaceActor, ns.clone())),
        ChildSpec::actor(journal::NAME, move || (journal::JournalActor, journal_args.clone())),
        ChildSpec::actor(raft_net::NAME, move || (raft_net::RaftServer, raft_server.clone())),
        ChildSpec::actor(workers::NAME, move || (workers::WorkerManager, wm_args.clone())),
        ChildSpec::actor(mounts::SYNCER, move || (mounts::MountSyncer, ())),
        ChildSpec::actor(gateway::NAME, move || {
            (gateway::ClientGateway, gateway::GatewayArgs { listener: listener.clone() })
        }),
    ])
}
