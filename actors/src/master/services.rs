//! The services handle: one per master node, built by `master::children`
//! and handed to every actor and request handler that needs another part
//! of the node. It holds handles, not state: each part's state belongs to
//! the actor that owns it (the journal's to the JournalActor, the namespace
//! to the NamespaceActor, block locations to the WorkerManager, leases and
//! locks to the LeaseKeeper), and a handle reaches that actor by its
//! node-scoped name or through what the running actor published.

use strata_protocol::ErrorInfo;

use super::journal::Journal;
use super::leases::{LeaseSlot, Leases};
use super::mounts::Mounts;
use super::namespace_actor::Ns;
use super::replication::Replication;
use super::workers::Workers;
use crate::faults::Faults;

/// Everything a master's request path reaches (cheap to clone).
#[derive(Clone, Debug)]
pub struct Services {
    /// Proposals, read barriers, membership.
    pub journal: Journal,
    /// Namespace reads.
    pub ns: Ns,
    /// Block locations, placement, telling workers.
    pub workers: Workers,
    /// The lease and lock table of the running LeaseKeeper.
    pub leases: LeaseSlot,
    /// UFS mounts: the table, sync, intents, persists.
    pub mounts: Mounts,
    /// Test-only fault injection.
    pub faults: Faults,
    /// Replica counts, the ReplicationManager.
    pub replication: Replication,
}

impl Services {
    /// The lease and lock table (`Unavailable` while its keeper restarts).
    pub fn leases(&self) -> Result<std::sync::Arc<Leases>, ErrorInfo> {
        self.leases.get()
    }
}
