//! The master role.
//!
//! ```text
//! NodeSupervisor
//! ├─ NamespaceActor  applies committed entries to the RocksDB inode store
//! ├─ JournalActor    openraft member; proposals, read barriers, status
//! ├─ RaftServer      peers' Raft RPCs over the mesh, into the JournalActor's Raft
//! ├─ WorkerManager   worker registry, liveness, block locations, placement
//! ├─ ReplicationManager keeps every block at its replica count (on the leader)
//! ├─ LeaseKeeper     directory leases and byte-range locks (on the leader)
//! ├─ MountSyncer     persists async-through files, TTLs, UFS re-drives (on the leader)
//! └─ ClientGateway   client RPC port → handlers by domain
//! ```
//!
//! Layers, each importing only those below it: `gateway` → `handlers` →
//! `services` → `mounts`, `leases` → `journal`, `namespace_actor`,
//! `workers` → `raft`, `raft_net`, `namespace`, `store`.

pub mod gateway;
pub mod handlers;
pub mod journal;
pub mod leases;
pub mod mounts;
pub mod namespace;
pub mod namespace_actor;
pub mod prevote;
pub mod raft;
pub mod raft_net;
pub mod replication;
pub mod services;
pub mod store;
pub mod workers;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::faults::Faults;
use crate::supervisor::{ChildSpec, Scope};
use services::Services;

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
    /// Log entries kept behind the latest snapshot.
    pub log_keep: u64,
    /// A worker silent this long is lost.
    pub worker_lost_timeout: Duration,
    /// A lost worker silent this much longer is forgotten.
    pub worker_forget_after: Duration,
    /// Replica counts and repair limits.
    pub replication: replication::ReplicationConfig,
    /// Test-only fault injection (none by default).
    pub faults: Faults,
    /// Set when the node can no longer serve (its Raft core stopped): the
    /// process must exit non-zero.
    pub fatal: Arc<tokio::sync::watch::Sender<Option<String>>>,
}

/// Opens the master's store and returns the supervisor's child specs, in
/// start order, with the services handle the children share.
pub fn children(
    opts: &MasterOptions,
    listener: Arc<std::net::TcpListener>,
) -> Result<(Vec<ChildSpec>, Services), String> {
    std::fs::create_dir_all(&opts.data_dir).map_err(|e| format!("creating {}: {e}", opts.data_dir.display()))?;
    let db = store::open_db(&opts.data_dir.join("meta")).map_err(|e| format!("opening the metadata store: {e}"))?;
    let log_db = store::open_log_db(&opts.data_dir.join("log")).map_err(|e| format!("opening the journal: {e}"))?;
    let mut members = opts.members.clone();
    if members.is_empty() {
        let me = raft::MasterNode { addr: opts.client_addr.clone(), mesh: opts.mesh_addr.clone() };
        members.insert(opts.node_id, me);
    }
    let scope = Scope::master(opts.node_id);
    let name = |role| scope.name(role);
    let journal = journal::Journal::new(name(journal::ROLE), opts.fatal.clone());
    let ns = namespace_actor::Ns::new(name(namespace_actor::ROLE));
    let workers = workers::Workers::new(name(workers::ROLE));
    let replication = replication::Replication::new(name(replication::ROLE), opts.replication.clone());
    let ufs = Arc::new(crate::ufs::Ufs::default());
    let mounts = mounts::Mounts::new(
        journal.clone(),
        ns.clone(),
        workers.clone(),
        ufs,
        opts.faults.clone(),
        name(mounts::syncer::ROLE),
    );
    let services = Services {
        journal: journal.clone(),
        ns: ns.clone(),
        workers,
        leases: leases::LeaseSlot::default(),
        mounts: mounts.clone(),
        faults: opts.faults.clone(),
        replication: replication.clone(),
    };
    let slot = Arc::new(tokio::sync::Mutex::new(None));
    let heard = Arc::new(prevote::Heard::default());
    let raft_server = raft_net::RaftServerArgs {
        node_id: opts.node_id,
        slot: slot.clone(),
        removed: opts.removed.clone(),
        heard: heard.clone(),
        log_db: log_db.clone(),
    };
    let journal_args = journal::JournalArgs {
        node_id: opts.node_id,
        client_addr: opts.client_addr.clone(),
        members,
        join: opts.join,
        db: db.clone(),
        log_db,
        snapshot_dir: opts.data_dir.join("snapshots"),
        snapshot_entries: opts.snapshot_entries,
        log_keep: opts.log_keep,
        slot,
        journal: journal.clone(),
        namespace: namespace_actor::ActorNamespace::new(db.clone(), ns.clone()),
        stop_core_after: opts.faults.stop_raft_core_after,
        heard,
    };
    let ns_args = namespace_actor::NamespaceArgs { db, handle: ns.clone() };
    let wm_args = workers::WorkerManagerArgs {
        lost_timeout: opts.worker_lost_timeout,
        forget_after: opts.worker_forget_after,
        journal: journal.clone(),
        ns: ns.clone(),
        replication,
    };
    let repl_args = replication::ReplicationArgs {
        cfg: opts.replication.clone(),
        journal: journal.clone(),
        ns: ns.clone(),
        workers: name(workers::ROLE).into(),
    };
    let lease_args = leases::LeaseKeeperArgs { slot: services.leases.clone(), journal, ns };
    let gateway_args = gateway::GatewayArgs { listener, services: services.clone() };
    let specs = vec![
        ChildSpec::actor(name(namespace_actor::ROLE), move || (namespace_actor::NamespaceActor, ns_args.clone())),
        ChildSpec::actor(name(journal::ROLE), move || (journal::JournalActor, journal_args.clone())),
        ChildSpec::actor(name(raft_net::ROLE), move || (raft_net::RaftServer, raft_server.clone())),
        ChildSpec::actor(name(workers::ROLE), move || (workers::WorkerManager, wm_args.clone())),
        ChildSpec::actor(name(replication::ROLE), move || (replication::ReplicationManager, repl_args.clone())),
        ChildSpec::actor(name(leases::ROLE), move || (leases::LeaseKeeper, lease_args.clone())),
        ChildSpec::actor(name(mounts::syncer::ROLE), move || (mounts::syncer::MountSyncer, mounts.clone())),
        ChildSpec::actor(name(gateway::ROLE), move || (gateway::ClientGateway, gateway_args.clone())),
    ];
    Ok((specs, services))
}
