//! NamespaceActor: the only owner of namespace changes. Committed journal
//! entries arrive from the Raft state machine ([`ActorNamespace`]); reads
//! arrive from the request handlers through the [`Ns`] handle. If it dies,
//! the supervisor restarts it: it opens the namespace afresh from RocksDB
//! (counters, caches and the mount table are read again, nothing is carried
//! over from the dead incarnation), and the state machine retries its call
//! until it is back.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use rocksdb::DB;
use strata_protocol::journal::{ApplyResult, JournalEntry};
use strata_protocol::messages::{Attr, DirEntry};
use strata_protocol::ufs::MountInfo;
use strata_protocol::{BlockId, ErrorCode, ErrorInfo};

use super::namespace::{is_inline, BlockTarget, InodeRecord, MountCache, Namespace, NsError};
use super::raft::{put_meta, NamespaceHandle};

/// The NamespaceActor's role in its node's registered names.
pub const ROLE: &str = "namespace";

/// Bookkeeping rows written with an entry.
pub type Extra = Vec<super::store::MetaRow>;

/// Extended attributes, by name.
pub type Xattrs = Vec<(String, Vec<u8>)>;

/// A file's record and its inline content, if any.
pub type FileContent = (InodeRecord, Option<Vec<u8>>);

/// Messages to the NamespaceActor.
#[derive(RactorMessage)]
pub enum NamespaceMsg {
    /// Apply committed entries in order (from the Raft state machine).
    Apply(Vec<(u64, JournalEntry, Extra)>, RpcReplyPort<Result<Vec<ApplyResult>, String>>),
    /// Write bookkeeping rows only (blank and membership entries).
    PutMeta(Extra, RpcReplyPort<Result<(), String>>),
    /// Replace the state with the rows of a snapshot file (streamed).
    ImportFile(std::path::PathBuf, RpcReplyPort<Result<(), String>>),
    /// Attributes of a path.
    Stat(String, RpcReplyPort<Result<Attr, ErrorInfo>>),
    /// Listing of a path.
    List(String, RpcReplyPort<Result<Vec<DirEntry>, ErrorInfo>>),
    /// Up to `limit` entries of a listing after a name, and whether more follow.
    ListPage(String, Option<String>, usize, RpcReplyPort<Result<(Vec<DirEntry>, bool), ErrorInfo>>),
    /// A file's record (attributes and blocks).
    File(String, RpcReplyPort<Result<InodeRecord, ErrorInfo>>),
    /// A file's record and, for a small file kept inline, its content.
    FileContent(String, RpcReplyPort<Result<FileContent, ErrorInfo>>),
    /// The extended attributes of a path.
    Xattrs(String, RpcReplyPort<Result<Xattrs, ErrorInfo>>),
    /// Which of these blocks no file owns.
    Orphans(Vec<BlockId>, RpcReplyPort<Vec<BlockId>>),
    /// Approximate inode count.
    InodeCount(RpcReplyPort<u64>),
    /// How many clients' batch numbers were last written before a time.
    ClientsSeenBefore(i64, RpcReplyPort<Result<usize, ErrorInfo>>),
    /// The mount table.
    Mounts(RpcReplyPort<Result<Arc<Vec<MountInfo>>, ErrorInfo>>),
    /// Every inode at or below a path, with its path (files before nothing in particular).
    Walk(String, RpcReplyPort<Result<Vec<(String, InodeRecord)>, ErrorInfo>>),
    /// Those of the blocks whose files are persisted to a UFS.
    PersistedBlocks(Vec<BlockId>, RpcReplyPort<Vec<BlockId>>),
    /// Whether a per-inode TTL was ever set.
    TtlUsed(RpcReplyPort<Result<bool, ErrorInfo>>),
    /// The UFS operations recorded and not completed.
    UfsIntents(RpcReplyPort<Result<Vec<super::namespace::UfsIntent>, ErrorInfo>>),
    /// The last term in which a lease was granted.
    LeaseTerm(RpcReplyPort<Result<Option<u64>, ErrorInfo>>),
    /// Those of the blocks whose files are pinned.
    PinnedBlocks(Vec<BlockId>, RpcReplyPort<Vec<BlockId>>),
    /// The workers being decommissioned.
    Decommissioning(RpcReplyPort<Result<Vec<strata_protocol::WorkerId>, ErrorInfo>>),
    /// What each block's replication depends on (None: no file owns it).
    BlockTargets(Vec<BlockId>, RpcReplyPort<Result<Vec<Option<BlockTarget>>, ErrorInfo>>),
}

/// The actor.
pub struct NamespaceActor;

fn to_info(e: NsError) -> ErrorInfo {
    match e {
        NsError::Ns(e) => e,
        NsError::Store(e) => ErrorInfo::new(ErrorCode::Internal, e.to_string()),
    }
}

/// Start-up arguments.
#[derive(Clone)]
pub struct NamespaceArgs {
    /// The state machine's database.
    pub db: Arc<DB>,
    /// The handle this actor publishes its mount-table cache through.
    pub handle: Ns,
}

impl Actor for NamespaceActor {
    type Msg = NamespaceMsg;
    type State = Arc<Namespace>;
    type Arguments = NamespaceArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: NamespaceArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ns = Arc::new(Namespace::open(args.db).map_err(|e| format!("opening the namespace: {e}"))?);
        *args.handle.mount_cache.write() = Some(ns.mount_cache());
        Ok(ns)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        ns: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NamespaceMsg::Apply(batch, reply) => {
                let mut out = Vec::with_capacity(batch.len());
                let mut failed = None;
                for (index, entry, extra) in &batch {
                    match ns.apply(*index, entry, extra) {
                        Ok(r) => out.push(r),
                        Err(e) => {
                            failed = Some(e.to_string());
                            break;
                        }
                    }
                }
                let _ = reply.send(match failed {
                    None => Ok(out),
                    Some(e) => Err(e),
                });
            }
            NamespaceMsg::PutMeta(extra, reply) => {
                let _ = reply.send(put_meta(ns, &extra));
            }
            NamespaceMsg::ImportFile(path, reply) => {
                let r = super::raft::SnapshotRows::open(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))
                    .and_then(|rows| ns.import_rows(rows).map_err(|e| e.to_string()));
                let _ = reply.send(r);
            }
            NamespaceMsg::Stat(path, reply) => {
                let _ = reply.send(ns.resolve(&path).map(|r| r.attr).map_err(to_info));
            }
            NamespaceMsg::List(path, reply) => {
                let _ = reply.send(ns.list(&path).map_err(to_info));
            }
            NamespaceMsg::ListPage(path, after, limit, reply) => {
                let _ = reply.send(ns.list_page(&path, after.as_deref(), limit).map_err(to_info));
            }
            NamespaceMsg::File(path, reply) => {
                let _ = reply.send(ns.resolve(&path).map_err(to_info));
            }
            NamespaceMsg::Xattrs(path, reply) => {
                let r = ns.resolve(&path).and_then(|rec| Ok(ns.xattrs(rec.attr.inode)?));
                let _ = reply.send(r.map_err(to_info));
            }
            NamespaceMsg::FileContent(path, reply) => {
                let r = ns.resolve(&path).and_then(|rec| {
                    let inline = if is_inline(&rec.attr, &rec.blocks) { ns.inline(rec.attr.inode)? } else { None };
                    Ok((rec, inline))
                });
                let _ = reply.send(r.map_err(to_info));
            }
            NamespaceMsg::Orphans(blocks, reply) => {
                let mut orphans = Vec::new();
                for b in blocks {
                    if matches!(ns.block_owner(b), Ok(None)) && !ns.reserved_recently(b) {
                        orphans.push(b);
                    }
                }
                let _ = reply.send(orphans);
            }
            NamespaceMsg::InodeCount(reply) => {
                let _ = reply.send(ns.inode_count());
            }
            NamespaceMsg::ClientsSeenBefore(before_ms, reply) => {
                let _ = reply.send(ns.clients_seen_before(before_ms).map_err(|e| to_info(e.into())));
            }
            NamespaceMsg::Mounts(reply) => {
                let _ = reply.send(ns.mounts().map_err(|e| to_info(e.into())));
            }
            NamespaceMsg::Walk(path, reply) => {
                let _ = reply.send(ns.walk(&path).map_err(to_info));
            }
            NamespaceMsg::LeaseTerm(reply) => {
                let _ = reply.send(ns.lease_term().map_err(|e| to_info(e.into())));
            }
            NamespaceMsg::TtlUsed(reply) => {
                let _ = reply.send(ns.ttl_used().map_err(|e| to_info(e.into())));
            }
            NamespaceMsg::UfsIntents(reply) => {
                let _ = reply.send(ns.ufs_intents().map_err(|e| to_info(e.into())));
            }
            NamespaceMsg::PinnedBlocks(blocks, reply) => {
                let mut out = Vec::new();
                for b in blocks {
                    if let Ok(Some(owner)) = ns.block_owner(b) {
                        if let Ok(Some(rec)) = ns.inode(owner) {
                            if rec.attr.pinned {
                                out.push(b);
                            }
                        }
                    }
                }
                let _ = reply.send(out);
            }
            NamespaceMsg::Decommissioning(reply) => {
                let _ = reply.send(ns.decommissioning().map_err(|e| to_info(e.into())));
            }
            NamespaceMsg::BlockTargets(blocks, reply) => {
                let _ = reply.send(ns.block_targets(&blocks).map_err(|e| to_info(e.into())));
            }
            NamespaceMsg::PersistedBlocks(blocks, reply) => {
                let mut out = Vec::new();
                for b in blocks {
                    if let Ok(Some(owner)) = ns.block_owner(b) {
                        if let Ok(Some(rec)) = ns.inode(owner) {
                            if rec.is_persisted() {
                                out.push(b);
                            }
                        }
                    }
                }
                let _ = reply.send(out);
            }
        }
        Ok(())
    }
}

/// The namespace as the rest of the master reaches it: the NamespaceActor
/// by its node-scoped name, and the mount-table cache the running actor
/// publishes (nearly every request asks whether its path is under a mount,
/// and reads the cache without a call).
#[derive(Clone)]
pub struct Ns {
    name: Arc<str>,
    mount_cache: Arc<parking_lot::RwLock<Option<Arc<MountCache>>>>,
}

impl std::fmt::Debug for Ns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ns").field("name", &self.name).finish()
    }
}

impl Ns {
    /// A handle to the NamespaceActor registered as `name`.
    pub fn new(name: String) -> Self {
        Ns { name: name.into(), mount_cache: Arc::default() }
    }

    /// The NamespaceActor, if it is running.
    pub fn actor(&self) -> Option<ActorRef<NamespaceMsg>> {
        ractor::registry::where_is(&self.name).map(ActorRef::from)
    }

    /// The mount table as cached by the running namespace, if it has it.
    pub fn cached_mounts(&self) -> Option<Arc<Vec<MountInfo>>> {
        self.mount_cache.read().as_ref().and_then(|c| c.get())
    }

    /// Calls the NamespaceActor, waiting up to `patience` for it to be (re)started.
    pub async fn call_within<R: Send + 'static>(
        &self,
        patience: Duration,
        make: impl Fn(RpcReplyPort<R>) -> NamespaceMsg,
    ) -> Result<R, String> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(a) = self.actor() {
                match a.call(&make, Some(patience.max(Duration::from_secs(30)))).await {
                    Ok(ractor::rpc::CallResult::Success(r)) => return Ok(r),
                    Ok(ractor::rpc::CallResult::Timeout) => return Err("namespace actor timed out".into()),
                    _ => {}
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err("namespace actor is not running".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A request path's call: up to 5 s for a restarting actor, then `Unavailable`.
    pub async fn call<R: Send + 'static>(
        &self,
        make: impl Fn(RpcReplyPort<R>) -> NamespaceMsg,
    ) -> Result<R, ErrorInfo> {
        self.call_within(Duration::from_secs(5), make).await.map_err(|e| ErrorInfo::new(ErrorCode::Unavailable, e))
    }
}

/// The Raft state machine's route to the namespace: through the actor.
#[derive(Clone)]
pub struct ActorNamespace {
    db: Arc<DB>,
    ns: Ns,
}

impl ActorNamespace {
    /// A route through `ns`; `db` is the store the actor applies to (for
    /// direct reads of applied state).
    pub fn new(db: Arc<DB>, ns: Ns) -> Self {
        ActorNamespace { db, ns }
    }
}

const PATIENCE: Duration = Duration::from_secs(20);
/// How long a snapshot install may take (a walk over the whole state).
const IMPORT_PATIENCE: Duration = Duration::from_secs(1800);

impl NamespaceHandle for ActorNamespace {
    async fn apply(&self, batch: Vec<(u64, JournalEntry, Extra)>) -> Result<Vec<ApplyResult>, String> {
        self.ns.call_within(PATIENCE, |r| NamespaceMsg::Apply(batch.clone(), r)).await?
    }
    async fn put_meta(&self, extra: Extra) -> Result<(), String> {
        self.ns.call_within(PATIENCE, |r| NamespaceMsg::PutMeta(extra.clone(), r)).await?
    }
    async fn import_file(&self, path: std::path::PathBuf) -> Result<(), String> {
        self.ns.call_within(IMPORT_PATIENCE, |r| NamespaceMsg::ImportFile(path.clone(), r)).await?
    }
    fn db(&self) -> Arc<DB> {
        self.db.clone()
    }
}
