//! openraft glue: the type config, the RocksDB log store and the state
//! machine adapter that hands committed entries to the NamespaceActor.
//!
//! Log entries are stored with bincode (openraft's types are serde, not
//! rkyv); the journal payload itself is the protocol crate's `JournalEntry`.
// openraft's trait methods return `StorageError` by value; our helpers share
// that type rather than boxing it at every call site.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use strata_protocol::journal::{ApplyResult, JournalEntry};

use super::namespace::Namespace;
use super::store::{cf, handle, persist_state, write_state, ApplyItem, MetaRow, StateRow};

/// A master as the Raft membership records it: where clients reach it and
/// where its mesh listens. Carried in the journal's membership entries, so a
/// master added at run time is known (and dialled) by every member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterNode {
    /// Client RPC address, `host:port`.
    pub addr: String,
    /// Mesh address, `host:port`.
    pub mesh: String,
}

impl std::fmt::Display for MasterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (mesh {})", self.addr, self.mesh)
    }
}

openraft::declare_raft_types!(
    /// Strata's Raft types: journal entries in, apply results out.
    pub TypeConfig:
        D = JournalEntry,
        R = ApplyResult,
        NodeId = u64,
        Node = MasterNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Raft node id.
pub type NodeId = u64;
/// The openraft handle.
pub type Raft = openraft::Raft<TypeConfig>;
type SErr = StorageError<NodeId>;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";
const APPLIED: &[u8] = b"applied";
const MEMBERSHIP: &[u8] = b"membership";
const SNAPSHOT_FILE: &str = "snapshot.bin";

fn ser<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("bincode of openraft types cannot fail")
}

/// The Raft log and vote, in the `raft_log` and `raft_meta` column families.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    /// The newest entries, as appended: what openraft reads back to apply
    /// and to replicate, without a RocksDB iterator and a decode per read.
    recent: Arc<parking_lot::Mutex<Recent>>,
}

/// Entries held after their append: always a suffix of the log (every
/// append goes in; a truncate drops its tail, a purge its head, and the
/// oldest leave first beyond [`Recent::MAX_BYTES`]).
#[derive(Default)]
struct Recent {
    entries: std::collections::VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl Recent {
    /// What the held entries may take (by their encoded size).
    const MAX_BYTES: usize = 32 << 20;

    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn push(&mut self, e: Entry<TypeConfig>, size: usize) {
        let next = self.entries.back().map(|(b, _)| b.log_id.index + 1);
        if next.is_some_and(|n| n != e.log_id.index) {
            // Not right after the last one held: start again from here.
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += size;
        self.entries.push_back((e, size));
        while self.bytes > Self::MAX_BYTES {
            let Some((_, n)) = self.entries.pop_front() else { break };
            self.bytes -= n;
        }
    }

    /// Drops the entries at or after `index` (a truncate).
    fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(e, _)| e.log_id.index >= index) {
            let (_, n) = self.entries.pop_back().expect("checked");
            self.bytes -= n;
        }
    }

    /// Drops the entries at or before `index` (a purge).
    fn purge(&mut self, index: u64) {
        while self.entries.front().is_some_and(|(e, _)| e.log_id.index <= index) {
            let (_, n) = self.entries.pop_front().expect("checked");
            self.bytes -= n;
        }
    }

    /// The entries of `range` if it starts at or after the first one held
    /// (they are a suffix of the log: nothing in the range is elsewhere).
    fn get<RB: RangeBounds<u64>>(&self, start: u64, range: &RB) -> Option<Vec<Entry<TypeConfig>>> {
        if self.first()? > start {
            return None;
        }
        Some(self.entries.iter().map(|(e, _)| e).filter(|e| range.contains(&e.log_id.index)).cloned().collect())
    }
}

impl LogStore {
    /// A log store over the master database.
    pub fn new(db: Arc<DB>) -> Self {
        LogStore { db, recent: Arc::default() }
    }

    fn meta<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, SErr> {
        match self.db.get_cf(handle(&self.db, cf::RAFT_META), key).map_err(|e| StorageIOError::read(&e))? {
            Some(v) => Ok(Some(bincode::deserialize(&v).map_err(|e| StorageIOError::read(&e))?)),
            None => Ok(None),
        }
    }

    fn put_meta_synced<T: Serialize>(&self, key: &[u8], v: &T) -> Result<(), rocksdb::Error> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.put_cf_opt(handle(&self.db, cf::RAFT_META), key, ser(v), &wo)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        if let Some(held) = self.recent.lock().get(start, &range) {
            return Ok(held);
        }
        let h = handle(&self.db, cf::RAFT_LOG);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(h, IteratorMode::From(&start.to_be_bytes(), rocksdb::Direction::Forward)) {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let idx = u64::from_be_bytes(k[..8].try_into().map_err(|_| StorageIOError::read_logs(&BadKey))?);
            if !range.contains(&idx) {
                break;
            }
            out.push(bincode::deserialize(&v).map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("malformed raft log key")]
struct BadKey;

/// The id of the last entry in the log database, if it holds any.
fn last_stored(db: &DB) -> Result<Option<LogId<NodeId>>, SErr> {
    match db.iterator_cf(handle(db, cf::RAFT_LOG), IteratorMode::End).next() {
        Some(item) => {
            let (_, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let e: Entry<TypeConfig> = bincode::deserialize(&v).map_err(|e| StorageIOError::read_logs(&e))?;
            Ok(Some(e.log_id))
        }
        None => Ok(None),
    }
}

/// The id of the last log entry (the last purged one when the log is
/// empty), read from the log database: what a pre-vote compares.
pub fn last_log_id(db: &DB) -> Result<Option<LogId<NodeId>>, SErr> {
    match last_stored(db)? {
        Some(l) => Ok(Some(l)),
        None => match db.get_cf(handle(db, cf::RAFT_META), PURGED).map_err(|e| StorageIOError::read(&e))? {
            Some(v) => Ok(Some(bincode::deserialize(&v).map_err(|e| StorageIOError::read(&e))?)),
            None => Ok(None),
        },
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let purged: Option<LogId<NodeId>> = self.meta(PURGED)?;
        let last = last_stored(&self.db)?.or(purged);
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        self.put_meta_synced(VOTE, vote).map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        self.meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SErr> {
        // Not synced: a lost committed index is recomputed from a quorum.
        self.db
            .put_cf(handle(&self.db, cf::RAFT_META), COMMITTED, ser(&committed))
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SErr> {
        Ok(self.meta::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let h = handle(&self.db, cf::RAFT_LOG);
        let mut batch = WriteBatch::default();
        let mut written = Vec::new();
        for e in entries {
            let bytes = ser(&e);
            batch.put_cf(h, e.log_id.index.to_be_bytes(), &bytes);
            written.push((e, bytes.len()));
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        let res = self.db.write_opt(batch, &wo);
        match res {
            Ok(()) => {
                let mut recent = self.recent.lock();
                for (e, size) in written {
                    recent.push(e, size);
                }
                drop(recent);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        let h = handle(&self.db, cf::RAFT_LOG);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(h, log_id.index.to_be_bytes(), u64::MAX.to_be_bytes());
        batch.delete_cf(h, u64::MAX.to_be_bytes());
        // Dropped first: a failed write leaves them to be read from the database.
        self.recent.lock().truncate(log_id.index);
        self.db.write_opt(batch, &wo).map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        self.recent.lock().purge(log_id.index);
        self.put_meta_synced(PURGED, &log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        let h = handle(&self.db, cf::RAFT_LOG);
        self.db
            .delete_range_cf(h, 0u64.to_be_bytes(), (log_id.index + 1).to_be_bytes())
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

/// How the state machine reaches the namespace. The master routes it through
/// the NamespaceActor; the storage test suite applies directly.
pub trait NamespaceHandle: Clone + Send + Sync + 'static {
    /// Applies committed entries in order; `extra` goes into each entry's batch.
    fn apply(
        &self,
        batch: Vec<ApplyItem>,
    ) -> impl std::future::Future<Output = Result<Vec<ApplyResult>, String>> + Send;
    /// Writes bookkeeping only (blank and membership entries).
    fn put_meta(&self, extra: Vec<MetaRow>) -> impl std::future::Future<Output = Result<(), String>> + Send;
    /// Replaces the state with the rows of the snapshot file at `path`.
    fn import_file(&self, path: PathBuf) -> impl std::future::Future<Output = Result<(), String>> + Send;
    /// Reads the database directly (applied state).
    fn db(&self) -> Arc<DB>;
}

/// Direct access, for tests and the storage suite.
#[derive(Clone)]
pub struct DirectNamespace(pub Arc<Namespace>);

impl NamespaceHandle for DirectNamespace {
    async fn apply(&self, batch: Vec<ApplyItem>) -> Result<Vec<ApplyResult>, String> {
        batch.iter().map(|(i, e, extra)| self.0.apply(*i, e, extra).map_err(|e| e.to_string())).collect()
    }
    async fn put_meta(&self, extra: Vec<MetaRow>) -> Result<(), String> {
        put_meta(&self.0, &extra)
    }
    async fn import_file(&self, path: PathBuf) -> Result<(), String> {
        let rows = SnapshotRows::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.0.import_rows(rows).map_err(|e| e.to_string())
    }
    fn db(&self) -> Arc<DB> {
        self.0.db().clone()
    }
}

/// Writes bookkeeping keys in one batch.
pub fn put_meta(ns: &Namespace, extra: &[MetaRow]) -> Result<(), String> {
    let db = ns.db();
    let mut batch = WriteBatch::default();
    for (c, k, v) in extra {
        batch.put_cf(handle(db, c), k, v);
    }
    write_state(db, batch).map_err(|e| e.to_string())
}

/// Snapshot files (`snapshots/snapshot.bin`), written and read as a
/// stream: `"STRSNAP2" | meta length u32 LE | meta (bincode) | rows |
/// 0xFF | row count u64 LE`, a row being `column family index u8 | key
/// length u32 LE | key | value length u32 LE | value`. Built from one
/// RocksDB snapshot of the state, never the whole state in memory;
/// shipped by openraft in chunks; installed by streaming the rows in.
const SNAPSHOT_MAGIC: &[u8; 8] = b"STRSNAP2";
/// Where a snapshot from the leader is received.
const RECEIVING_FILE: &str = "snapshot.recv";
/// Present while a received snapshot is being installed: an install a
/// crash cut short is done again at the next start.
const INSTALLING_MARK: &str = "INSTALLING";
/// The end of the rows.
const END_OF_ROWS: u8 = 0xFF;

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Reads a snapshot file's meta and leaves `r` at its first row.
fn read_snapshot_meta(r: &mut impl std::io::Read) -> std::io::Result<SnapshotMeta<NodeId, MasterNode>> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != SNAPSHOT_MAGIC {
        return Err(io_err("not a Strata snapshot file (bad magic)"));
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > 64 << 20 {
        return Err(io_err(format!("snapshot meta of {len} bytes")));
    }
    let mut meta = vec![0u8; len];
    r.read_exact(&mut meta)?;
    bincode::deserialize(&meta).map_err(io_err)
}

/// The rows of a snapshot file, read one at a time.
pub struct SnapshotRows {
    r: std::io::BufReader<std::fs::File>,
    count: u64,
    done: bool,
}

impl SnapshotRows {
    /// Opens the snapshot file at `path`, past its meta.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
        read_snapshot_meta(&mut r)?;
        Ok(SnapshotRows { r, count: 0, done: false })
    }

    fn next_row(&mut self) -> std::io::Result<Option<StateRow>> {
        use std::io::Read;
        let mut cf = [0u8; 1];
        self.r.read_exact(&mut cf)?;
        if cf[0] == END_OF_ROWS {
            let mut n = [0u8; 8];
            self.r.read_exact(&mut n)?;
            let n = u64::from_le_bytes(n);
            if n != self.count {
                return Err(io_err(format!("snapshot file holds {} rows, its trailer says {n}", self.count)));
            }
            return Ok(None);
        }
        let mut part = || -> std::io::Result<Vec<u8>> {
            let mut len = [0u8; 4];
            self.r.read_exact(&mut len)?;
            let mut v = vec![0u8; u32::from_le_bytes(len) as usize];
            self.r.read_exact(&mut v)?;
            Ok(v)
        };
        let (k, v) = (part()?, part()?);
        self.count += 1;
        Ok(Some((cf[0], k, v)))
    }
}

impl Iterator for SnapshotRows {
    type Item = Result<StateRow, super::namespace::StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_row() {
            Ok(Some(row)) => Some(Ok(row)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(super::namespace::StoreError::Corrupt { key: b"snapshot".to_vec(), reason: e.to_string() }))
            }
        }
    }
}

/// Writes a snapshot of the state in `db` to `tmp`, then renames it to
/// `path` (both synced): the state as one RocksDB snapshot sees it, its
/// meta (applied log id, membership) read from that same snapshot.
fn write_snapshot(db: &DB, tmp: &Path, path: &Path) -> std::io::Result<SnapshotMeta<NodeId, MasterNode>> {
    use std::io::Write;
    let snap = db.snapshot();
    let get = |key: &[u8]| snap.get_cf(handle(db, cf::SM_META), key).map_err(io_err);
    let last_log_id: Option<LogId<NodeId>> = match get(APPLIED)? {
        Some(v) => bincode::deserialize(&v).map_err(io_err)?,
        None => None,
    };
    let last_membership: StoredMembership<NodeId, MasterNode> = match get(MEMBERSHIP)? {
        Some(v) => bincode::deserialize(&v).map_err(io_err)?,
        None => StoredMembership::default(),
    };
    let snapshot_id = format!(
        "{}-{}-{}",
        last_log_id.map(|l| l.leader_id.term).unwrap_or(0),
        last_log_id.map(|l| l.index).unwrap_or(0),
        strata_protocol::now_ms()
    );
    let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
    let file = std::fs::File::create(tmp)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let m = ser(&meta);
    w.write_all(SNAPSHOT_MAGIC)?;
    w.write_all(&(m.len() as u32).to_le_bytes())?;
    w.write_all(&m)?;
    let mut count = 0u64;
    for (i, name) in cf::STATE.iter().enumerate() {
        for item in snap.iterator_cf(handle(db, name), IteratorMode::Start) {
            let (k, v) = item.map_err(io_err)?;
            w.write_all(&[i as u8])?;
            w.write_all(&(k.len() as u32).to_le_bytes())?;
            w.write_all(&k)?;
            w.write_all(&(v.len() as u32).to_le_bytes())?;
            w.write_all(&v)?;
            count += 1;
        }
    }
    w.write_all(&[END_OF_ROWS])?;
    w.write_all(&count.to_le_bytes())?;
    let file = w.into_inner().map_err(io_err)?;
    file.sync_all()?;
    std::fs::rename(tmp, path)?;
    sync_dir(path)?;
    Ok(meta)
}

/// Whether the open `file` is the file at `path`.
async fn same_file(file: &tokio::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata().await, std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// The Raft state machine: the namespace, reached through a [`NamespaceHandle`].
#[derive(Clone)]
pub struct StateMachine<N: NamespaceHandle> {
    ns: N,
    snapshot_dir: PathBuf,
}

impl<N: NamespaceHandle> StateMachine<N> {
    /// A state machine storing snapshots under `snapshot_dir`.
    pub fn new(ns: N, snapshot_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(snapshot_dir)?;
        Ok(StateMachine { ns, snapshot_dir: snapshot_dir.to_path_buf() })
    }

    /// Readies the snapshot directory before the Raft core starts: an
    /// install a crash cut short is done again (the received snapshot was
    /// kept under its final name before the state was replaced), and a
    /// snapshot in an earlier build's format is replaced by one of the
    /// present state.
    pub async fn prepare(&self) -> Result<(), String> {
        let mark = self.snapshot_dir.join(INSTALLING_MARK);
        if mark.exists() {
            tracing::warn!("a snapshot install was interrupted; installing it again");
            self.install_current().await?;
            std::fs::remove_file(&mark).map_err(|e| format!("{}: {e}", mark.display()))?;
            sync_dir(&mark).map_err(|e| e.to_string())?;
        }
        let path = self.path();
        let old_format = match std::fs::File::open(&path) {
            Ok(f) => read_snapshot_meta(&mut std::io::BufReader::new(f)).is_err(),
            Err(_) => false,
        };
        if old_format {
            tracing::warn!(path = %path.display(), "rewriting a snapshot of an earlier format from the present state");
            let db = self.ns.db();
            let tmp = self.snapshot_dir.join(format!("{SNAPSHOT_FILE}.tmp"));
            tokio::task::spawn_blocking(move || write_snapshot(&db, &tmp, &path))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn install_current(&self) -> Result<(), String> {
        self.ns.import_file(self.path()).await?;
        persist_state(&self.ns.db()).map_err(|e| e.to_string())
    }

    fn path(&self) -> PathBuf {
        self.snapshot_dir.join(SNAPSHOT_FILE)
    }

    fn read_sm_meta<T: for<'de> Deserialize<'de> + Default>(&self, key: &[u8]) -> Result<T, SErr> {
        let db = self.ns.db();
        match db.get_cf(handle(&db, cf::SM_META), key).map_err(|e| StorageIOError::read_state_machine(&e))? {
            Some(v) => bincode::deserialize(&v).map_err(|e| StorageIOError::read_state_machine(&e).into()),
            None => Ok(T::default()),
        }
    }
}

fn meta_extra(log_id: &LogId<NodeId>, membership: Option<&StoredMembership<NodeId, MasterNode>>) -> Vec<MetaRow> {
    let mut v = vec![(cf::SM_META, APPLIED.to_vec(), ser(&Some(*log_id)))];
    if let Some(m) = membership {
        v.push((cf::SM_META, MEMBERSHIP.to_vec(), ser(m)));
    }
    v
}

impl<N: NamespaceHandle> RaftSnapshotBuilder<TypeConfig> for StateMachine<N> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        // State-machine writes skip the WAL; make them durable before the
        // snapshot lets the log behind them be purged.
        let db = self.ns.db();
        persist_state(&db).map_err(|e| StorageIOError::write_state_machine(&e))?;
        let (tmp, path) = (self.snapshot_dir.join(format!("{SNAPSHOT_FILE}.tmp")), self.path());
        let meta = tokio::task::spawn_blocking(move || write_snapshot(&db, &tmp, &path))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &io_err(e)))?
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let file = tokio::fs::File::open(self.path()).await.map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Snapshot { meta, snapshot: Box::new(file) })
    }
}

impl<N: NamespaceHandle> RaftStateMachine<TypeConfig> for StateMachine<N> {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, MasterNode>), SErr> {
        Ok((self.read_sm_meta::<Option<LogId<NodeId>>>(APPLIED)?, self.read_sm_meta(MEMBERSHIP)?))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Consecutive normal entries go to the namespace in one message; blank
        // and membership entries only move the applied id.
        let mut out = Vec::new();
        let mut pending: Vec<ApplyItem> = Vec::new();
        let mut pending_last = None;
        for e in entries {
            match e.payload {
                EntryPayload::Normal(j) => {
                    pending.push((e.log_id.index, j, meta_extra(&e.log_id, None)));
                    pending_last = Some(e.log_id);
                }
                other => {
                    if let Some(last) = pending_last.take() {
                        out.extend(self.apply_normal(std::mem::take(&mut pending), last).await?);
                    }
                    let m = match other {
                        EntryPayload::Membership(m) => Some(StoredMembership::new(Some(e.log_id), m)),
                        _ => None,
                    };
                    self.ns
                        .put_meta(meta_extra(&e.log_id, m.as_ref()))
                        .await
                        .map_err(|err| StorageIOError::apply(e.log_id, &std::io::Error::other(err)))?;
                    out.push(ApplyResult::Done);
                }
            }
        }
        if let Some(last) = pending_last {
            out.extend(self.apply_normal(pending, last).await?);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, SErr> {
        let path = self.snapshot_dir.join(RECEIVING_FILE);
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MasterNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), SErr> {
        let sig = Some(meta.signature());
        let werr = |e: &dyn std::fmt::Display| StorageIOError::write_snapshot(sig.clone(), &io_err(e));
        // The received bytes become the current snapshot first (synced),
        // then the install is marked, the state replaced by streaming the
        // rows in, and the mark removed: a crash in between installs again.
        let received = self.snapshot_dir.join(RECEIVING_FILE);
        let mut snapshot = snapshot;
        if !same_file(&snapshot, &received).await {
            // Not the file `begin_receiving_snapshot` gave (a snapshot
            // handed over whole): copied there first.
            use tokio::io::AsyncSeekExt;
            snapshot.seek(std::io::SeekFrom::Start(0)).await.map_err(|e| werr(&e))?;
            let mut to = tokio::fs::File::create(&received).await.map_err(|e| werr(&e))?;
            tokio::io::copy(&mut snapshot, &mut to).await.map_err(|e| werr(&e))?;
            snapshot = Box::new(to);
        }
        snapshot.sync_all().await.map_err(|e| werr(&e))?;
        drop(snapshot);
        let mut r = std::io::BufReader::new(std::fs::File::open(&received).map_err(|e| werr(&e))?);
        let inner = read_snapshot_meta(&mut r).map_err(|e| werr(&e))?;
        if inner.last_log_id != meta.last_log_id {
            return Err(werr(&format!(
                "received snapshot is of {:?}, announced {:?}",
                inner.last_log_id, meta.last_log_id
            ))
            .into());
        }
        drop(r);
        let mark = self.snapshot_dir.join(INSTALLING_MARK);
        std::fs::rename(&received, self.path()).map_err(|e| werr(&e))?;
        std::fs::write(&mark, meta.snapshot_id.as_bytes()).map_err(|e| werr(&e))?;
        sync_dir(&mark).map_err(|e| werr(&e))?;
        self.install_current().await.map_err(|e| werr(&e))?;
        std::fs::remove_file(&mark).map_err(|e| werr(&e))?;
        sync_dir(&mark).map_err(|e| werr(&e))?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let path = self.path();
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageIOError::read_snapshot(None, &e).into()),
        };
        let meta = read_snapshot_meta(&mut std::io::BufReader::new(&mut file))
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(file) }))
    }
}

impl<N: NamespaceHandle> StateMachine<N> {
    async fn apply_normal(&self, batch: Vec<ApplyItem>, last: LogId<NodeId>) -> Result<Vec<ApplyResult>, SErr> {
        self.ns.apply(batch).await.map_err(|e| StorageIOError::apply(last, &std::io::Error::other(e)).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::store::{open_db, open_log_db};
    use openraft::testing::{StoreBuilder, Suite};
    use tempfile::TempDir;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine<DirectNamespace>, TempDir> for Builder {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachine<DirectNamespace>), SErr> {
            let dir = TempDir::new().expect("tempdir");
            let db = open_db(&dir.path().join("db")).expect("open db");
            let ns = DirectNamespace(Arc::new(Namespace::open(db.clone()).expect("namespace")));
            let sm = StateMachine::new(ns, &dir.path().join("snap")).expect("sm");
            let log_db = open_log_db(&dir.path().join("log")).expect("open log db");
            Ok((dir, LogStore::new(log_db), sm))
        }
    }

    /// A snapshot streams out of one state machine and into another; an
    /// install cut short (the mark left, the state half replaced) is done
    /// again at the next start, and the two states end equal.
    #[tokio::test]
    async fn a_snapshot_installs_by_streaming_and_an_interrupted_install_is_redone() {
        use crate::master::namespace::state_digest;
        let sm_at = |dir: &Path| {
            let db = open_db(&dir.join("db")).unwrap();
            let ns = DirectNamespace(Arc::new(Namespace::open(db).unwrap()));
            StateMachine::new(ns, &dir.join("snap")).unwrap()
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut src, mut dst) = (sm_at(a.path()), sm_at(b.path()));
        let log_id = |i| LogId::new(openraft::CommittedLeaderId::new(1, 0), i);
        for i in 1..=200u64 {
            let e = JournalEntry::Mkdir {
                path: format!("/d{i}"),
                recursive: false,
                mode: 0o755,
                uid: 0,
                gid: 0,
                time_ms: i as i64,
            };
            src.ns.0.apply(i, &e, &meta_extra(&log_id(i), None)).unwrap();
        }
        let snap = src.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(200)));
        dst.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
        let want = state_digest(src.ns.0.db()).unwrap();
        assert_eq!(state_digest(dst.ns.0.db()).unwrap(), want);
        assert_eq!(dst.applied_state().await.unwrap().0, Some(log_id(200)));

        // A crash mid-install: the mark is there and the state is not the
        // snapshot's (here: emptied). The next start installs it again.
        let c = tempfile::tempdir().unwrap();
        let late = sm_at(c.path());
        std::fs::copy(src.path(), late.path()).unwrap();
        std::fs::write(c.path().join("snap").join(INSTALLING_MARK), b"x").unwrap();
        late.ns.0.import_rows(std::iter::empty()).unwrap();
        late.prepare().await.unwrap();
        assert_eq!(state_digest(late.ns.0.db()).unwrap(), want);
        assert!(!c.path().join("snap").join(INSTALLING_MARK).exists());
        assert_eq!(late.clone().get_current_snapshot().await.unwrap().unwrap().meta.last_log_id, Some(log_id(200)));
    }

    /// openraft's own storage suite passes on our RocksDB log store and state machine.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder).unwrap();
    }

    /// Journal payloads (`serde_bytes`) keep the encoding bincode gave a
    /// plain `Vec<u8>` (a u64 length, then each byte), so logs and
    /// snapshots written before still decode.
    #[test]
    fn journal_payloads_keep_the_plain_vec_encoding() {
        use strata_protocol::journal::BatchOp;
        use strata_protocol::messages::SetAttrs;
        let data: Vec<u8> = (0..=255).collect();
        let op = |data: Vec<u8>| BatchOp::WriteInline { inode: 7, path: "/f".into(), data, attrs: SetAttrs::default() };
        let (with, without) = (ser(&op(data.clone())), ser(&op(Vec::new())));
        // The same bytes as the op without the payload, its length moved
        // from 0 to 256 and the bytes after it: where a plain Vec<u8> puts them.
        let plain = ser(&data);
        let at = without.len() - ser(&SetAttrs::default()).len() - 8;
        assert_eq!(without[at..at + 8], 0u64.to_le_bytes(), "the empty payload's length");
        let expected = [&without[..at], &plain[..], &without[at + 8..]].concat();
        assert_eq!(with, expected);
        let back: BatchOp = bincode::deserialize(&with).unwrap();
        assert_eq!(back, op(data));
    }

    /// The entries held after their append are a suffix of the log: a read
    /// from before the first one goes to the database, a truncate drops the
    /// tail, a purge the head, an append that does not follow starts again,
    /// and the oldest leave first beyond the byte budget.
    #[test]
    fn recent_entries_stay_a_suffix_of_the_log() {
        let entry = |i| Entry::<TypeConfig> {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 0), i),
            payload: EntryPayload::Blank,
        };
        let ids = |v: Vec<Entry<TypeConfig>>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        let mut r = Recent::default();
        for i in 1..=5 {
            r.push(entry(i), 10);
        }
        assert_eq!(r.get(3, &(3..)).map(ids), Some(vec![3, 4, 5]));
        assert_eq!(r.get(2, &(2..4)).map(ids), Some(vec![2, 3]));
        assert!(r.get(0, &(0..)).is_none(), "entry 0 is not held");
        r.truncate(4);
        assert_eq!(r.get(1, &(1..)).map(ids), Some(vec![1, 2, 3]));
        r.push(entry(4), 10);
        r.purge(2);
        assert_eq!(r.get(3, &(3..)).map(ids), Some(vec![3, 4]));
        assert!(r.get(2, &(2..)).is_none(), "purged");
        r.push(entry(9), 10);
        assert_eq!(r.get(9, &(9..)).map(ids), Some(vec![9]), "a gap starts again");
        assert!(r.get(4, &(4..)).is_none());
        for i in 10..=12 {
            r.push(entry(i), Recent::MAX_BYTES / 2);
        }
        assert_eq!(r.get(11, &(11..)).map(ids), Some(vec![11, 12]), "the oldest left");
        assert_eq!(r.bytes, Recent::MAX_BYTES);
    }
}
