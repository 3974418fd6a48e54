//! openraft glue: the type config, the RocksDB log store and the state
//! machine adapter that hands committed entries to the NamespaceActor.
//!
//! Log entries are stored with bincode (openraft's types are serde, not
//! rkyv); the journal payload itself is the protocol crate's `JournalEntry`.
// openraft's trait methods return `StorageError` by value; our helpers share
// that type rather than boxing it at every call site.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
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
        SnapshotData = Cursor<Vec<u8>>,
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
    /// A consistent export of the state column families.
    fn export(&self) -> impl std::future::Future<Output = Result<Vec<StateRow>, String>> + Send;
    /// Replaces the state with an export.
    fn import(&self, items: Vec<StateRow>) -> impl std::future::Future<Output = Result<(), String>> + Send;
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
    async fn export(&self) -> Result<Vec<StateRow>, String> {
        self.0.export().map_err(|e| e.to_string())
    }
    async fn import(&self, items: Vec<StateRow>) -> Result<(), String> {
        self.0.import(&items).map_err(|e| e.to_string())
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

/// A snapshot as written to disk and shipped: meta plus the exported state.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, MasterNode>,
    items: Vec<StateRow>,
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

    fn read_sm_meta<T: for<'de> Deserialize<'de> + Default>(&self, key: &[u8]) -> Result<T, SErr> {
        let db = self.ns.db();
        match db.get_cf(handle(&db, cf::SM_META), key).map_err(|e| StorageIOError::read_state_machine(&e))? {
            Some(v) => bincode::deserialize(&v).map_err(|e| StorageIOError::read_state_machine(&e).into()),
            None => Ok(T::default()),
        }
    }

    fn write_snapshot_file(&self, file: &SnapshotFile) -> Result<Vec<u8>, SErr> {
        let bytes = ser(file);
        let tmp = self.snapshot_dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let sig = Some(file.meta.signature());
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.snapshot_dir.join(SNAPSHOT_FILE))?;
            std::fs::File::open(&self.snapshot_dir)?.sync_all()
        };
        write().map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
        Ok(bytes)
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
        let items =
            self.ns.export().await.map_err(|e| StorageIOError::read_state_machine(&std::io::Error::other(e)))?;
        // The applied id and membership come from the exported rows themselves,
        // so meta and content always agree.
        let find =
            |key: &[u8]| items.iter().find(|(c, k, _)| *c == 0 && k.as_slice() == key).map(|(_, _, v)| v.clone());
        let last_log_id: Option<LogId<NodeId>> = match find(APPLIED) {
            Some(v) => bincode::deserialize(&v).map_err(|e| StorageIOError::read_state_machine(&e))?,
            None => None,
        };
        let last_membership: StoredMembership<NodeId, MasterNode> = match find(MEMBERSHIP) {
            Some(v) => bincode::deserialize(&v).map_err(|e| StorageIOError::read_state_machine(&e))?,
            None => StoredMembership::default(),
        };
        // State-machine writes skip the WAL; make them durable before the
        // snapshot lets the log behind them be purged.
        persist_state(&self.ns.db()).map_err(|e| StorageIOError::write_state_machine(&e))?;
        let snapshot_id = format!(
            "{}-{}-{}",
            last_log_id.map(|l| l.leader_id.term).unwrap_or(0),
            last_log_id.map(|l| l.index).unwrap_or(0),
            strata_protocol::now_ms()
        );
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        let bytes = self.write_snapshot_file(&SnapshotFile { meta: meta.clone(), items })?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MasterNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let sig = Some(meta.signature());
        let file: SnapshotFile =
            bincode::deserialize(snapshot.get_ref()).map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
        self.ns
            .import(file.items.clone())
            .await
            .map_err(|e| StorageIOError::write_snapshot(sig, &std::io::Error::other(e)))?;
        persist_state(&self.ns.db()).map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.write_snapshot_file(&SnapshotFile { meta: meta.clone(), items: file.items })?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let path = self.snapshot_dir.join(SNAPSHOT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageIOError::read_snapshot(None, &e).into()),
        };
        let file: SnapshotFile = bincode::deserialize(&bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot { meta: file.meta, snapshot: Box::new(Cursor::new(bytes)) }))
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
