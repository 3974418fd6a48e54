//! UFS mounts on the master: the mount table, loading UFS metadata into
//! the namespace with the mount's sync policy (`sync`), forwarding
//! namespace changes under a mount to its UFS before they are journaled
//! (`intents`), persisting files through a worker as their write type says
//! (`persist`), TTLs (`ttl`), and the MountSyncer actor that does the
//! leader's background work (`syncer`).
//!
//! Every change lands in the namespace as a journal entry (`Mount`,
//! `UfsSync`, `Persisted`, …), so followers and a new leader see the same
//! mount table and persistence state. The master never carries file bytes:
//! a worker reads blocks and writes the UFS object (`DataRequest::Persist`).

mod intents;
mod persist;
mod sync;
pub mod syncer;
mod ttl;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ractor::ActorRef;
use strata_protocol::journal::JournalEntry;
use strata_protocol::messages::FileType;
use strata_protocol::ufs::{self as pufs, MountInfo};
use strata_protocol::{now_ms, ErrorCode, ErrorInfo};

use super::journal::Journal;
use super::namespace::InodeRecord;
use super::namespace_actor::{NamespaceMsg, Ns};
use super::workers::Workers;
use crate::faults::Faults;
use crate::ufs::{self, Ufs};
pub use intents::{Pending, RenameWork};
use syncer::SyncerMsg;

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The mount side of a master: what it needs to reach (journal, namespace,
/// workers, the UFSs) and the little it keeps while requests run (one
/// sync per directory at a time, the UFS intents being carried out here).
/// Cloned into the request handlers and the MountSyncer.
#[derive(Clone)]
pub struct Mounts {
    journal: Journal,
    ns: Ns,
    workers: Workers,
    ufs: Arc<Ufs>,
    faults: Faults,
    syncer: Arc<str>,
    /// One sync at a time per directory: concurrent misses wait for it.
    sync_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Intents being carried out by this master's handlers right now: the
    /// MountSyncer's re-drive leaves them alone.
    in_flight: Arc<Mutex<HashSet<u64>>>,
}

impl std::fmt::Debug for Mounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounts").field("syncer", &self.syncer).finish()
    }
}

impl Mounts {
    /// The mount side of a master; its MountSyncer is registered as `syncer`.
    pub fn new(journal: Journal, ns: Ns, workers: Workers, ufs: Arc<Ufs>, faults: Faults, syncer: String) -> Self {
        Mounts {
            journal,
            ns,
            workers,
            ufs,
            faults,
            syncer: syncer.into(),
            sync_locks: Arc::default(),
            in_flight: Arc::default(),
        }
    }

    /// The local MountSyncer.
    pub fn syncer(&self) -> Option<ActorRef<SyncerMsg>> {
        ractor::registry::where_is(&self.syncer).map(ActorRef::from)
    }

    pub(super) async fn table(&self) -> Result<Arc<Vec<MountInfo>>, ErrorInfo> {
        match self.ns.cached_mounts() {
            Some(t) => Ok(t),
            None => self.ns.call(NamespaceMsg::Mounts).await?,
        }
    }

    /// The mount table.
    pub async fn mounts(&self) -> Result<Vec<MountInfo>, ErrorInfo> {
        Ok(self.table().await?.as_ref().clone())
    }

    /// The mount `path` is under, if any.
    pub async fn mount_of(&self, path: &str) -> Result<Option<MountInfo>, ErrorInfo> {
        Ok(self.table().await?.iter().find(|m| pufs::is_under(path, &m.path)).cloned())
    }

    /// The inode at `path`, `None` if there is none.
    pub(super) async fn lookup(&self, path: &str) -> Result<Option<InodeRecord>, ErrorInfo> {
        match self.ns.call(|r| NamespaceMsg::File(path.to_string(), r)).await? {
            Ok(rec) => Ok(Some(rec)),
            Err(e) if e.code == ErrorCode::NotFound || e.code == ErrorCode::NotADirectory => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks that a UFS answers before it is mounted: a bad endpoint,
    /// credentials or bucket fail the mount with the backend's error.
    pub async fn mount(&self, info: MountInfo) -> Result<(), ErrorInfo> {
        if !(strata_protocol::MIN_BLOCK_SIZE..=strata_protocol::MAX_BLOCK_SIZE).contains(&info.options.block_size) {
            return Err(ErrorInfo::new(ErrorCode::InvalidArgument, "mount block size out of range"));
        }
        self.ufs.list_dir(&info.spec, "").await?;
        self.journal.propose(JournalEntry::Mount { info, time_ms: now_ms() }).await.map(|_| ())
    }

    /// The mount table with secret options hidden.
    pub async fn redacted_mounts(&self) -> Result<Vec<MountInfo>, ErrorInfo> {
        let mut ms = self.mounts().await?;
        for m in &mut ms {
            for (k, v) in &mut m.spec.options {
                if ufs::SECRET_OPTIONS.contains(&k.as_str()) {
                    *v = "***".into();
                }
            }
        }
        Ok(ms)
    }

    /// What the gateway must do in the UFS before journaling a mkdir.
    pub async fn before_mkdir(&self, path: &str) -> Result<(), ErrorInfo> {
        if let Some(m) = self.mount_of(path).await? {
            self.ensure_synced(path, false).await?;
            self.ufs.mkdir(&m.spec, &pufs::key_of(path, &m.path)).await?;
        }
        Ok(())
    }

    /// Whether a directory has entries.
    pub(super) async fn non_empty(&self, path: &str) -> Result<bool, ErrorInfo> {
        Ok(!self.ns.call(|r| NamespaceMsg::List(path.to_string(), r)).await??.is_empty())
    }
}

/// Whether the inode has a counterpart in the UFS.
pub(super) fn in_ufs(rec: &InodeRecord) -> bool {
    rec.attr.file_type == FileType::Directory || rec.is_persisted()
}
