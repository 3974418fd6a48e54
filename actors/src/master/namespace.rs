//! The namespace state machine over RocksDB: inodes, directory edges and the
//! block → inode map. It changes only through [`Namespace::apply`], which is
//! deterministic: every master applying the same journal gets the same tree.

use std::sync::Arc;

use parking_lot::Mutex;
use rocksdb::{IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use strata_protocol::journal::{ApplyResult, BatchOp, BatchOutcome, JournalEntry, UfsOp};
use strata_protocol::messages::{Attr, DirEntry, FileType};
use strata_protocol::ufs::{self, Fingerprint, MountInfo};
use strata_protocol::{path, BlockId, ErrorCode, ErrorInfo, InodeId, ROOT_INODE};

use super::store::{cf, handle, write_state, StateRow};

mod apply;

/// An inode as stored: its attributes and, for files, its blocks in order.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InodeRecord {
    /// Attributes.
    pub attr: Attr,
    /// Block ids of a file, in file order.
    pub blocks: Vec<BlockId>,
    /// UFS state of an inode under a mount (`None`: Strata-only so far).
    pub ufs: Option<UfsMeta>,
}

/// What the replication of one block depends on (see
/// [`Namespace::block_targets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockTarget {
    /// The owning file.
    pub inode: InodeId,
    /// Its replica counts as set (0: default).
    pub replicas: strata_protocol::messages::Replicas,
    /// Whether its content is in its UFS.
    pub persisted: bool,
    /// The block's length.
    pub length: u64,
}

impl BlockTarget {
    /// Block `b` of file `rec`, if the file has it.
    pub fn of(rec: &InodeRecord, b: BlockId) -> Option<BlockTarget> {
        let i = rec.blocks.iter().position(|x| *x == b)?;
        Some(BlockTarget {
            inode: rec.attr.inode,
            replicas: rec.attr.replicas,
            persisted: rec.is_persisted(),
            length: rec.block_length(i),
        })
    }
}

impl InodeRecord {
    /// The length of the file's block number `i` (a block of a file still
    /// being written is taken as whole).
    pub fn block_length(&self, i: usize) -> u64 {
        let bs = self.attr.block_size;
        if self.attr.complete {
            bs.min(self.attr.size.saturating_sub(i as u64 * bs))
        } else {
            bs
        }
    }

    /// Whether the file's content is in its UFS.
    pub fn is_persisted(&self) -> bool {
        self.ufs.as_ref().is_some_and(|u| u.persisted)
    }
}

/// What the namespace knows of an inode's UFS counterpart.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UfsMeta {
    /// A file's current content is in the UFS as `fingerprint`.
    pub persisted: bool,
    /// The UFS object's version (files).
    pub fingerprint: Fingerprint,
    /// A directory's last applied UFS listing, ms since the epoch
    /// ([`NEVER_SYNCED`] if never).
    pub synced_ms: i64,
}

/// `synced_ms` of a directory never listed from its UFS.
pub const NEVER_SYNCED: i64 = i64::MIN;

impl UfsMeta {
    fn dir() -> Self {
        UfsMeta { persisted: true, fingerprint: Fingerprint::default(), synced_ms: NEVER_SYNCED }
    }
    fn file(fingerprint: Fingerprint) -> Self {
        UfsMeta { persisted: true, fingerprint, synced_ms: NEVER_SYNCED }
    }
}

/// A storage failure; namespace-level failures are [`ApplyResult::Error`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored value did not decode: the store is corrupt.
    #[error("corrupt record under {key:?}: {reason}")]
    Corrupt { key: Vec<u8>, reason: String },
}

/// A namespace error or a storage failure.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// The operation is invalid for the current namespace.
    #[error(transparent)]
    Ns(#[from] ErrorInfo),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rocksdb::Error> for NsError {
    fn from(e: rocksdb::Error) -> Self {
        NsError::Store(StoreError::Rocks(e))
    }
}

fn ns(code: ErrorCode, msg: impl Into<String>) -> NsError {
    NsError::Ns(ErrorInfo::new(code, msg))
}

const NEXT_INODE: &[u8] = b"next_inode";
const NEXT_BLOCK: &[u8] = b"next_block";
const APPLIED_INDEX: &[u8] = b"applied_index";
/// Mount records live in `sm_meta` under this prefix followed by the path.
const MOUNT_PREFIX: &[u8] = b"mount:";
/// Present in `sm_meta` once a `SetTtl` with a TTL was applied: until then
/// the leader's TTL pass need not walk the whole namespace.
const TTL_USED: &[u8] = b"ttl_used";
/// The last term in which a leader granted a directory lease.
const LEASE_TERM: &[u8] = b"lease_term";
/// `sm_meta` rows `decommission:<worker id BE>`: workers being decommissioned.
pub(crate) const DECOMMISSION_PREFIX: &[u8] = b"decommission:";
/// Pending UFS operations (`JournalEntry::UfsIntent`) live in `sm_meta`
/// under this prefix followed by the intent id (u64 BE), as bincode
/// `(UfsOp, time_ms)`, until their `UfsDone`.
const INTENT_PREFIX: &[u8] = b"ufs_intent:";

/// `sm_meta`: `(log index u64, ops done u64)` of the batch entry being applied.
const BATCH_PROGRESS: &[u8] = b"batch_progress";
/// `sm_meta`: this prefix and a client id (u64 BE) hold the `(seq u64, part
/// u64)` of the client's last batch applied.
const BATCH_SEEN_PREFIX: &[u8] = b"batch_seen:";

/// A `batch_seen` row: the last `(seq, part)` applied of a client's
/// batches and when (`seq | part | time_ms`, big-endian; rows of earlier
/// builds have no time: 0).
pub(crate) struct Seen {
    at: (u64, u32),
    time_ms: i64,
}

impl Seen {
    fn decode(key: &[u8], v: &[u8]) -> Result<Seen, StoreError> {
        let bad = || StoreError::Corrupt { key: key.to_vec(), reason: "not two u64 and an optional i64".into() };
        let (seq, rest) = v.split_at_checked(8).ok_or_else(bad)?;
        let (part, time) = rest.split_at_checked(8).ok_or_else(bad)?;
        let time_ms = match time.len() {
            0 => 0,
            8 => i64::from_be_bytes(time.try_into().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        Ok(Seen { at: (u64_of(key, seq)?, u64_of(key, part)? as u32), time_ms })
    }
}

fn seen_key(client: u64) -> Vec<u8> {
    [BATCH_SEEN_PREFIX, &client.to_be_bytes()[..]].concat()
}

fn intent_key(id: u64) -> Vec<u8> {
    [INTENT_PREFIX, &id.to_be_bytes()[..]].concat()
}

/// A UFS operation recorded before it was done and not completed yet.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UfsIntent {
    /// The id the leader gave it.
    pub id: u64,
    /// What is to be done.
    pub op: UfsOp,
    /// When it was recorded.
    pub time_ms: i64,
}

fn mount_key(p: &str) -> Vec<u8> {
    [MOUNT_PREFIX, p.as_bytes()].concat()
}

fn edge_key(parent: InodeId, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&parent.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], v: &[u8]) -> Result<T, StoreError> {
    bincode::deserialize(v).map_err(|e| StoreError::Corrupt { key: key.to_vec(), reason: e.to_string() })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("bincode of plain structs cannot fail")
}

fn u64_of(key: &[u8], v: &[u8]) -> Result<u64, StoreError> {
    let b: [u8; 8] = v.try_into().map_err(|_| StoreError::Corrupt { key: key.to_vec(), reason: "not a u64".into() })?;
    Ok(u64::from_be_bytes(b))
}

/// The namespace over a shared RocksDB handle.
pub struct Namespace {
    db: Arc<DB>,
    /// (next inode id, next block id), cached from `sm_meta`.
    counters: Mutex<(u64, u64)>,
    /// The mount table as last read (every request under a mount and every
    /// path-changing request asks for it).
    mount_cache: Arc<MountCache>,
    /// Directory edges lately read or written.
    edges: EdgeCache,
    /// Block ids reserved (`ReserveBlocks`) in this process, and when: a
    /// client writes blocks under them before any file has them, so a
    /// worker's report of one is not an orphan until this long after.
    reserved: Mutex<Vec<(std::time::Instant, std::ops::Range<BlockId>)>>,
}

/// Block ids below the next one taken as reserved after a (re)load.
const RESERVED_AFTER_RESTART: u64 = 1 << 20;

/// How long reserved block ids no file has yet are not orphans.
const RESERVED_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// The mount table cached in memory: filled on first read, dropped by every
/// applied change to it. A generation makes a read that raced a change not
/// cache what it read.
#[derive(Default)]
pub struct MountCache {
    inner: Mutex<(u64, Option<Arc<Vec<MountInfo>>>)>,
}

impl MountCache {
    /// The cached table, if any.
    pub fn get(&self) -> Option<Arc<Vec<MountInfo>>> {
        self.inner.lock().1.clone()
    }

    fn generation(&self) -> u64 {
        self.inner.lock().0
    }

    fn fill(&self, generation: u64, table: Arc<Vec<MountInfo>>) {
        let mut g = self.inner.lock();
        if g.0 == generation {
            g.1 = Some(table);
        }
    }

    fn invalidate(&self) {
        let mut g = self.inner.lock();
        g.0 += 1;
        g.1 = None;
    }
}

/// Directory edges ((parent, name) → child) lately read or written, in
/// memory. Path resolution reads one per component, for every op applied
/// and every read served: in a small-file workload those memtable lookups
/// were a third of the master's CPU in applying entries. The applying actor
/// writes the changes of each entry after its database write; a reader
/// fills what it read from the database only if no change was written
/// since it looked (a generation, as in [`MountCache`]), so a read that
/// raced a change never caches the old edge. Missing names are not cached.
#[derive(Default)]
struct EdgeCache {
    inner: parking_lot::RwLock<EdgeMap>,
}

#[derive(Default)]
struct EdgeMap {
    generation: u64,
    map: std::collections::HashMap<Vec<u8>, InodeId>,
}

/// Edges kept at most; beyond, the cache starts over.
const EDGE_CACHE_MAX: usize = 1 << 18;

impl EdgeCache {
    /// The cached child for an edge key, or the generation to fill under.
    fn get(&self, key: &[u8]) -> Result<InodeId, u64> {
        let g = self.inner.read();
        g.map.get(key).copied().ok_or(g.generation)
    }

    fn fill(&self, generation: u64, key: Vec<u8>, child: InodeId) {
        let mut g = self.inner.write();
        if g.generation == generation {
            if g.map.len() >= EDGE_CACHE_MAX {
                g.map.clear();
            }
            g.map.insert(key, child);
        }
    }

    /// Writes an entry's edge changes (after they are in the database).
    fn write(&self, changes: Vec<(Vec<u8>, Option<InodeId>)>) {
        let mut g = self.inner.write();
        g.generation += 1;
        for (key, child) in changes {
            match child {
                Some(c) if g.map.len() < EDGE_CACHE_MAX => {
                    g.map.insert(key, c);
                }
                _ => {
                    g.map.remove(&key);
                }
            }
        }
    }

    fn clear(&self) {
        let mut g = self.inner.write();
        g.generation += 1;
        g.map.clear();
    }
}

impl Namespace {
    /// Opens the namespace, creating the root directory on first use.
    pub fn open(db: Arc<DB>) -> Result<Self, StoreError> {
        let ns = Namespace {
            db,
            counters: Mutex::new((0, 0)),
            mount_cache: Arc::default(),
            edges: EdgeCache::default(),
            reserved: Mutex::default(),
        };
        ns.reload()?;
        Ok(ns)
    }

    /// Re-reads counters (after a snapshot install) and ensures the root exists.
    pub fn reload(&self) -> Result<(), StoreError> {
        let meta = handle(&self.db, cf::SM_META);
        let read = |k: &[u8], default: u64| -> Result<u64, StoreError> {
            match self.db.get_cf(meta, k)? {
                Some(v) => u64_of(k, &v),
                None => Ok(default),
            }
        };
        *self.counters.lock() = (read(NEXT_INODE, ROOT_INODE + 1)?, read(NEXT_BLOCK, 1)?);
        // Reservations are not journaled state: after a restart or a
        // snapshot install, the most recent ids count as reserved for the
        // grace time (clients reserve from the top).
        let next = self.counters.lock().1;
        self.reserved.lock().push((std::time::Instant::now(), next.saturating_sub(RESERVED_AFTER_RESTART)..next));
        if self.inode(ROOT_INODE)?.is_none() {
            let root = InodeRecord {
                attr: Attr::new(ROOT_INODE, FileType::Directory, 0o755, 0, 0, 0),
                blocks: vec![],
                ufs: None,
            };
            let mut batch = WriteBatch::default();
            batch.put_cf(handle(&self.db, cf::INODES), ROOT_INODE.to_be_bytes(), encode(&root));
            write_state(&self.db, batch)?;
        }
        Ok(())
    }

    /// The database handle.
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// Reads one inode.
    pub fn inode(&self, id: InodeId) -> Result<Option<InodeRecord>, StoreError> {
        let key = id.to_be_bytes();
        match self.db.get_cf(handle(&self.db, cf::INODES), key)? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    fn child(&self, parent: InodeId, name: &str) -> Result<Option<InodeId>, StoreError> {
        let key = edge_key(parent, name);
        let generation = match self.edges.get(&key) {
            Ok(child) => return Ok(Some(child)),
            Err(generation) => generation,
        };
        match self.db.get_cf(handle(&self.db, cf::EDGES), &key)? {
            Some(v) => {
                let child = u64_of(&key, &v)?;
                self.edges.fill(generation, key, child);
                Ok(Some(child))
            }
            None => Ok(None),
        }
    }

    /// The inline content of a small file, if it has any.
    pub fn inline(&self, id: InodeId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(handle(&self.db, cf::INLINE), id.to_be_bytes())?)
    }

    /// The extended attributes of an inode, by name.
    pub fn xattrs(&self, id: InodeId) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = id.to_be_bytes();
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(handle(&self.db, cf::XATTRS), prefix) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push((String::from_utf8_lossy(&k[8..]).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// The inode owning a block, if any file references it.
    /// Whether `block` is one of the ids reserved within the grace time
    /// (written by a client, possibly not yet named by a file).
    pub fn reserved_recently(&self, block: BlockId) -> bool {
        let mut r = self.reserved.lock();
        r.retain(|(at, _)| at.elapsed() < RESERVED_GRACE);
        r.iter().any(|(_, ids)| ids.contains(&block))
    }

    pub fn block_owner(&self, block: BlockId) -> Result<Option<InodeId>, StoreError> {
        let key = block.to_be_bytes();
        match self.db.get_cf(handle(&self.db, cf::BLOCKS), key)? {
            Some(v) => Ok(Some(u64_of(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// What the replication of each block depends on: its file's replica
    /// counts, whether the file is in its UFS, and the block's length
    /// (None: no file owns the block).
    pub fn block_targets(&self, blocks: &[BlockId]) -> Result<Vec<Option<BlockTarget>>, StoreError> {
        let mut last: Option<InodeRecord> = None;
        let mut out = Vec::with_capacity(blocks.len());
        for &b in blocks {
            let Some(owner) = self.block_owner(b)? else {
                out.push(None);
                continue;
            };
            if last.as_ref().is_none_or(|r| r.attr.inode != owner) {
                last = self.inode(owner)?;
            }
            out.push(last.as_ref().and_then(|rec| BlockTarget::of(rec, b)));
        }
        Ok(out)
    }

    /// Resolves a path (symlinks are not followed).
    pub fn resolve(&self, p: &str) -> Result<InodeRecord, NsError> {
        let comps = path::components(p)?;
        self.resolve_components(&comps)
    }

    fn resolve_components(&self, comps: &[&str]) -> Result<InodeRecord, NsError> {
        // Only the edges are read on the way down (a record read and decoded
        // per component was a sixth of the master's CPU in a small-file
        // workload); a record in between is read only to tell why a name is
        // missing under it (it is no directory, or the name does not exist).
        let dangling = |id| ns(ErrorCode::Internal, format!("dangling edge to inode {id}"));
        let mut id = ROOT_INODE;
        for (i, name) in comps.iter().enumerate() {
            id = match self.child(id, name)? {
                Some(next) => next,
                None => {
                    let cur = self.inode(id)?.ok_or_else(|| dangling(id))?;
                    return Err(if cur.attr.file_type != FileType::Directory {
                        ns(ErrorCode::NotADirectory, format!("{} is not a directory", path::join(&comps[..i])))
                    } else {
                        ns(ErrorCode::NotFound, format!("{} does not exist", path::join(&comps[..=i])))
                    });
                }
            };
        }
        match self.inode(id)? {
            Some(rec) => Ok(rec),
            None if id == ROOT_INODE => Err(ns(ErrorCode::Internal, "root inode missing")),
            None => Err(dangling(id)),
        }
    }

    /// Resolves the parent directory of a path and returns it with the last name.
    fn resolve_parent<'p>(&self, comps: &[&'p str], whole: &str) -> Result<(InodeRecord, &'p str), NsError> {
        let (name, parent) = comps
            .split_last()
            .ok_or_else(|| ns(ErrorCode::InvalidArgument, "the root directory cannot be the target"))?;
        let parent_rec = self.resolve_components(parent)?;
        if parent_rec.attr.file_type != FileType::Directory {
            return Err(ns(ErrorCode::NotADirectory, format!("parent of {whole} is not a directory")));
        }
        Ok((parent_rec, name))
    }

    /// Lists a directory (or returns the single entry of a file).
    pub fn list(&self, p: &str) -> Result<Vec<DirEntry>, NsError> {
        Ok(self.list_page(p, None, usize::MAX)?.0)
    }

    /// Up to `limit` entries of the directory `p` whose names sort after
    /// `after` (all: None), in name order, and whether more follow; a file
    /// answers itself.
    pub fn list_page(&self, p: &str, after: Option<&str>, limit: usize) -> Result<(Vec<DirEntry>, bool), NsError> {
        let comps = path::components(p)?;
        let rec = self.resolve_components(&comps)?;
        if rec.attr.file_type != FileType::Directory {
            let name = comps.last().map(|s| s.to_string()).unwrap_or_default();
            return Ok((vec![DirEntry { name, attr: rec.attr }], false));
        }
        let mut out = Vec::new();
        for item in self.children_after(rec.attr.inode, after) {
            let (name, child) = item?;
            if out.len() == limit {
                return Ok((out, true));
            }
            let attr =
                self.inode(child)?.ok_or_else(|| ns(ErrorCode::Internal, format!("dangling edge to {child}")))?.attr;
            out.push(DirEntry { name, attr });
        }
        Ok((out, false))
    }

    /// The children of `dir` in name order after the name `after` (from
    /// the first: None): a seek and a scan of the edges.
    fn children_after<'a>(
        &'a self,
        dir: InodeId,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = Result<(String, InodeId), StoreError>> + 'a {
        let prefix = dir.to_be_bytes();
        let from = [&prefix[..], after.unwrap_or("").as_bytes()].concat();
        self.db
            .iterator_cf(handle(&self.db, cf::EDGES), IteratorMode::From(&from, rocksdb::Direction::Forward))
            .map_while(move |item| match item {
                Ok((k, v)) if k.starts_with(&prefix) => {
                    Some(u64_of(&k, &v).map(|id| (String::from_utf8_lossy(&k[8..]).into_owned(), id)))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e.into())),
            })
            .filter(move |r| !matches!((r, after), (Ok((name, _)), Some(a)) if name == a))
    }

    /// The children of `dir` whose names are after `range.0` and up to
    /// `range.1` (None: unbounded).
    fn children_in(
        &self,
        dir: InodeId,
        range: (Option<&str>, Option<&str>),
    ) -> Result<Vec<(String, InodeId)>, StoreError> {
        self.children_after(dir, range.0)
            .take_while(|r| !matches!((r, range.1), (Ok((name, _)), Some(u)) if name.as_str() > u))
            .collect()
    }

    fn children(&self, dir: InodeId) -> Result<Vec<(String, InodeId)>, StoreError> {
        self.children_after(dir, None).collect()
    }

    fn has_children(&self, dir: InodeId) -> Result<bool, StoreError> {
        let prefix = dir.to_be_bytes();
        let mut it = self.db.prefix_iterator_cf(handle(&self.db, cf::EDGES), prefix);
        match it.next() {
            Some(item) => Ok(item?.0.starts_with(&prefix)),
            None => Ok(false),
        }
    }

    /// Every inode at or below `p` with its path, parents before children.
    pub fn walk(&self, p: &str) -> Result<Vec<(String, InodeRecord)>, NsError> {
        let root = self.resolve(p)?;
        let mut out = Vec::new();
        let mut stack = vec![(p.to_string(), root)];
        while let Some((at, rec)) = stack.pop() {
            if rec.attr.file_type == FileType::Directory {
                for (name, child) in self.children(rec.attr.inode)? {
                    if let Some(c) = self.inode(child)? {
                        let cp = if at == "/" { format!("/{name}") } else { format!("{at}/{name}") };
                        stack.push((cp, c));
                    }
                }
            }
            out.push((at, rec));
        }
        Ok(out)
    }

    /// The mount table's cache (shared with the request path).
    pub fn mount_cache(&self) -> Arc<MountCache> {
        self.mount_cache.clone()
    }

    /// The mount table, ordered by path.
    pub fn mounts(&self) -> Result<Arc<Vec<MountInfo>>, StoreError> {
        if let Some(t) = self.mount_cache.get() {
            return Ok(t);
        }
        let generation = self.mount_cache.generation();
        let t = Arc::new(self.read_mounts()?);
        self.mount_cache.fill(generation, t.clone());
        Ok(t)
    }

    fn read_mounts(&self) -> Result<Vec<MountInfo>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(handle(&self.db, cf::SM_META), MOUNT_PREFIX) {
            let (k, v) = item?;
            if !k.starts_with(MOUNT_PREFIX) {
                break;
            }
            out.push(decode::<MountInfo>(&k, &v)?);
        }
        Ok(out)
    }

    /// The mount `p` is in, if any.
    pub fn mount_of(&self, p: &str) -> Result<Option<MountInfo>, StoreError> {
        Ok(self.mounts()?.iter().find(|m| ufs::is_under(p, &m.path)).cloned())
    }

    /// Whether a per-inode TTL was ever set (`SetTtl`).
    pub fn lease_term(&self) -> Result<Option<u64>, StoreError> {
        match self.db.get_cf(handle(&self.db, cf::SM_META), LEASE_TERM)? {
            Some(v) => Ok(Some(u64_of(LEASE_TERM, &v)?)),
            None => Ok(None),
        }
    }

    /// The workers being decommissioned.
    pub fn decommissioning(&self) -> Result<Vec<strata_protocol::WorkerId>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(handle(&self.db, cf::SM_META), DECOMMISSION_PREFIX) {
            let (k, _) = item?;
            if !k.starts_with(DECOMMISSION_PREFIX) {
                break;
            }
            out.push(u64_of(&k, &k[DECOMMISSION_PREFIX.len()..])?);
        }
        Ok(out)
    }

    /// Whether a per-inode TTL was ever set.
    pub fn ttl_used(&self) -> Result<bool, StoreError> {
        Ok(self.db.get_cf(handle(&self.db, cf::SM_META), TTL_USED)?.is_some())
    }

    /// The UFS operations recorded and not completed, in id order.
    pub fn ufs_intents(&self) -> Result<Vec<UfsIntent>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(handle(&self.db, cf::SM_META), INTENT_PREFIX) {
            let (k, v) = item?;
            if !k.starts_with(INTENT_PREFIX) {
                break;
            }
            let id = u64_of(&k, &k[INTENT_PREFIX.len()..])?;
            let (op, time_ms): (UfsOp, i64) = decode(&k, &v)?;
            out.push(UfsIntent { id, op, time_ms });
        }
        Ok(out)
    }

    /// Number of inodes (approximate for big trees: RocksDB's estimate).
    pub fn inode_count(&self) -> u64 {
        self.db
            .property_int_value_cf(handle(&self.db, cf::INODES), "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Index of the last applied journal entry (0 before the first).
    pub fn applied_index(&self) -> Result<u64, StoreError> {
        match self.db.get_cf(handle(&self.db, cf::SM_META), APPLIED_INDEX)? {
            Some(v) => u64_of(APPLIED_INDEX, &v),
            None => Ok(0),
        }
    }

    /// Applies one committed journal entry at log `index`. `extra` is written
    /// in the same atomic batch (the caller records the applied log id
    /// there). An entry at or below the applied index was applied before (a
    /// retried batch after a crash) and is skipped: applying is idempotent.
    pub fn apply(
        &self,
        index: u64,
        entry: &JournalEntry,
        extra: &[(&str, Vec<u8>, Vec<u8>)],
    ) -> Result<ApplyResult, StoreError> {
        if index != 0 && index <= self.applied_index()? {
            return Ok(ApplyResult::Done);
        }
        let (ops, time_ms, seen) = match entry {
            JournalEntry::Batch { ops, time_ms } => (ops, *time_ms, None),
            JournalEntry::ClientBatch { client, seq, part, ops, time_ms } => {
                (ops, *time_ms, Some((*client, (*seq, *part))))
            }
            _ => return self.apply_one(index, entry, extra),
        };
        let mut extra = extra.to_vec();
        if let Some((client, at)) = seen {
            if self.batch_seen(client)?.is_some_and(|last| last >= at) {
                // A resend of a batch applied before: nothing to do again.
                self.apply_one(index, &JournalEntry::Batch { ops: Vec::new(), time_ms }, &extra)?;
                return Ok(ApplyResult::Batch(vec![BatchOutcome::AlreadyApplied; ops.len()]));
            }
            let row = [at.0.to_be_bytes(), u64::from(at.1).to_be_bytes(), time_ms.to_be_bytes()].concat();
            extra.push((cf::SM_META, seen_key(client), row));
        }
        // Each op in a write of its own (an op reads what the ones before it
        // wrote) that also records how many of the entry's ops are done; the
        // applied index and the client's batch number go last. A crash in
        // between resumes after the last op written.
        let done = if index == 0 { 0 } else { self.batch_progress(index)? };
        let mut out = vec![BatchOutcome::AlreadyApplied; done.min(ops.len())];
        let progress = |n: usize| -> Vec<(&str, Vec<u8>, Vec<u8>)> {
            match index {
                0 => Vec::new(),
                _ => vec![(cf::SM_META, BATCH_PROGRESS.to_vec(), [index, n as u64].map(u64::to_be_bytes).concat())],
            }
        };
        let mut i = done;
        while i < ops.len() {
            // A file created under a lease and closed with its first
            // content: one write for both (tar, git and rsync make most
            // files this way; half the state-machine writes).
            if let Some(next) = ops.get(i + 1) {
                if let Some((made, written)) = self.apply_created_inline(&ops[i], next, &progress(i + 2))? {
                    out.push(BatchOutcome::Done { attr: Some(made), freed: Vec::new() });
                    out.push(BatchOutcome::Done { attr: Some(written), freed: Vec::new() });
                    i += 2;
                    continue;
                }
            }
            let op = &ops[i];
            i += 1;
            out.push(match self.apply_one(0, &op.entry(time_ms), &progress(i))? {
                ApplyResult::Replaced { attr, freed } | ApplyResult::Created { attr, freed } => {
                    BatchOutcome::Done { attr: Some(attr), freed }
                }
                ApplyResult::Attr(attr) => BatchOutcome::Done { attr: Some(attr), freed: Vec::new() },
                ApplyResult::Freed { blocks } => BatchOutcome::Done { attr: None, freed: blocks },
                ApplyResult::Error(e) => BatchOutcome::Failed(e),
                other => BatchOutcome::Failed(ErrorInfo::new(ErrorCode::Internal, format!("unexpected {other:?}"))),
            });
        }
        self.apply_one(index, &JournalEntry::Batch { ops: Vec::new(), time_ms }, &extra)?;
        Ok(ApplyResult::Batch(out))
    }

    /// How many ops of the batch entry at `index` a crash interrupted
    /// after (0 if none).
    fn batch_progress(&self, index: u64) -> Result<usize, StoreError> {
        let Some(v) = self.db.get_cf(handle(&self.db, cf::SM_META), BATCH_PROGRESS)? else { return Ok(0) };
        let (at, n) = v
            .split_at_checked(8)
            .ok_or_else(|| StoreError::Corrupt { key: BATCH_PROGRESS.to_vec(), reason: "not two u64".into() })?;
        Ok(if u64_of(BATCH_PROGRESS, at)? == index { u64_of(BATCH_PROGRESS, n)? as usize } else { 0 })
    }

    /// The last `(seq, part)` of `client`'s batches applied.
    fn batch_seen(&self, client: u64) -> Result<Option<(u64, u32)>, StoreError> {
        let key = seen_key(client);
        let Some(v) = self.db.get_cf(handle(&self.db, cf::SM_META), &key)? else { return Ok(None) };
        Ok(Some(Seen::decode(&key, &v)?.at))
    }

    /// Every client's `batch_seen` row: its key and what it says.
    pub(crate) fn clients_seen(&self) -> Result<Vec<(Vec<u8>, Seen)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(handle(&self.db, cf::SM_META), BATCH_SEEN_PREFIX) {
            let (k, v) = item?;
            if !k.starts_with(BATCH_SEEN_PREFIX) {
                break;
            }
            out.push((k.to_vec(), Seen::decode(&k, &v)?));
        }
        Ok(out)
    }

    /// How many clients' batch numbers were last written before `before_ms`.
    pub fn clients_seen_before(&self, before_ms: i64) -> Result<usize, StoreError> {
        Ok(self.clients_seen()?.iter().filter(|(_, s)| s.time_ms < before_ms).count())
    }

    /// Applies `create` (a `CreateInode` of a file) and `write` (the
    /// `WriteInlineAt` of the same inode right after it in a batch) as one
    /// write, recording `extra` with them: the attributes after each. None
    /// (nothing written) when they are not such a pair or the create is
    /// refused: the caller applies them one by one.
    fn apply_created_inline(
        &self,
        create: &BatchOp,
        write: &BatchOp,
        extra: &[(&str, Vec<u8>, Vec<u8>)],
    ) -> Result<Option<(Attr, Attr)>, StoreError> {
        let (
            BatchOp::CreateInode { inode, kind: FileType::File, time_ms: made_ms, .. },
            BatchOp::WriteInlineAt { inode: written, data, attrs, time_ms, .. },
        ) = (create, write)
        else {
            return Ok(None);
        };
        if inode != written || data.len() as u64 > strata_protocol::INLINE_MAX_BYTES {
            return Ok(None);
        }
        let mut tx = Tx::new(self);
        let made = match tx.apply(&create.entry(*made_ms)) {
            Ok(ApplyResult::Attr(a)) => a,
            Ok(_) | Err(NsError::Ns(_)) => return Ok(None),
            Err(NsError::Store(e)) => return Err(e),
        };
        // As `WriteInline` of the record just made (no blocks, no UFS: it cannot be refused).
        let mut rec = InodeRecord { attr: made.clone(), blocks: Vec::new(), ufs: None };
        match tx.write_inline(&mut rec, data, attrs, *time_ms) {
            Ok(_) => {}
            Err(NsError::Ns(_)) => return Ok(None),
            Err(NsError::Store(e)) => return Err(e),
        }
        self.commit(tx, 0, extra)?;
        Ok(Some((made, rec.attr)))
    }

    fn apply_one(
        &self,
        index: u64,
        entry: &JournalEntry,
        extra: &[(&str, Vec<u8>, Vec<u8>)],
    ) -> Result<ApplyResult, StoreError> {
        let mut tx = Tx::new(self);
        let result = match tx.apply(entry) {
            Ok(r) => r,
            Err(NsError::Ns(e)) => {
                // Rejected: discard partial changes, keep only the bookkeeping.
                tx.discard();
                ApplyResult::Error(e)
            }
            Err(NsError::Store(e)) => return Err(e),
        };
        if let JournalEntry::UfsDone { id, .. } = entry {
            // Forgotten even when the namespace change was rejected.
            tx.batch.delete_cf(handle(&self.db, cf::SM_META), intent_key(*id));
        }
        self.commit(tx, index, extra)?;
        if matches!(entry, JournalEntry::Mount { .. } | JournalEntry::Unmount { .. }) {
            self.mount_cache.invalidate();
        }
        Ok(result)
    }

    /// Writes `tx` with `extra`, the counters and (unless 0) the applied index.
    fn commit(&self, mut tx: Tx<'_>, index: u64, extra: &[(&str, Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        for (cf_name, k, v) in extra {
            tx.batch.put_cf(handle(&self.db, cf_name), k, v);
        }
        let meta = handle(&self.db, cf::SM_META);
        // Stored as they are in memory after every write (and read back
        // at load): written only when they moved.
        let stored = *self.counters.lock();
        if tx.counters.0 != stored.0 {
            tx.batch.put_cf(meta, NEXT_INODE, tx.counters.0.to_be_bytes());
        }
        if tx.counters.1 != stored.1 {
            tx.batch.put_cf(meta, NEXT_BLOCK, tx.counters.1.to_be_bytes());
        }
        if index != 0 {
            tx.batch.put_cf(meta, APPLIED_INDEX, index.to_be_bytes());
        }
        write_state(&self.db, tx.batch)?;
        *self.counters.lock() = tx.counters;
        if !tx.edges.is_empty() {
            self.edges.write(tx.edges);
        }
        Ok(())
    }

    /// Every key/value of the state column families, from one consistent
    /// RocksDB snapshot: the content of a Raft snapshot.
    #[cfg(test)]
    pub fn export(&self) -> Result<Vec<StateRow>, StoreError> {
        let snap = self.db.snapshot();
        let mut out = Vec::new();
        for (i, name) in cf::STATE.iter().enumerate() {
            for item in snap.iterator_cf(handle(&self.db, name), IteratorMode::Start) {
                let (k, v) = item?;
                out.push((i as u8, k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }

    /// Replaces the whole state with exported content.
    #[cfg(test)]
    pub fn import(&self, items: &[StateRow]) -> Result<(), StoreError> {
        self.import_rows(items.iter().cloned().map(Ok))
    }

    /// Replaces the whole state with `rows`, streamed: the old state is
    /// deleted and the rows written in batches of a few MiB, so neither
    /// the old nor the new state is ever held in memory whole. Not atomic:
    /// the caller marks an install in progress and repeats it after a
    /// crash (see `raft::StateMachine`).
    pub fn import_rows(&self, rows: impl IntoIterator<Item = Result<StateRow, StoreError>>) -> Result<(), StoreError> {
        const BATCH_BYTES: usize = 4 << 20;
        let mut batch = WriteBatch::default();
        for name in cf::STATE {
            let h = handle(&self.db, name);
            for item in self.db.iterator_cf(h, IteratorMode::Start) {
                let (k, _) = item?;
                batch.delete_cf(h, k);
                if batch.size_in_bytes() > BATCH_BYTES {
                    write_state(&self.db, std::mem::take(&mut batch))?;
                }
            }
        }
        for row in rows {
            let (i, k, v) = row?;
            let name = cf::STATE.get(i as usize).ok_or_else(|| StoreError::Corrupt {
                key: k.clone(),
                reason: format!("snapshot names column family #{i}"),
            })?;
            batch.put_cf(handle(&self.db, name), &k, &v);
            if batch.size_in_bytes() > BATCH_BYTES {
                write_state(&self.db, std::mem::take(&mut batch))?;
            }
        }
        write_state(&self.db, batch)?;
        self.mount_cache.invalidate();
        self.edges.clear();
        self.reload()
    }
}

/// A digest of the state column families, read from one RocksDB
/// snapshot (with the applied index found there): equal on every master
/// at the same applied index, unless their state machines diverged.
pub fn state_digest(db: &DB) -> Result<strata_protocol::messages::StateDigest, StoreError> {
    let snap = db.snapshot();
    let applied_index = match snap.get_cf(handle(db, cf::SM_META), APPLIED_INDEX)? {
        Some(v) => u64_of(APPLIED_INDEX, &v)?,
        None => 0,
    };
    let (mut a, mut b, mut rows) = (0u32, u32::MAX, 0u64);
    for (i, name) in cf::STATE.iter().enumerate() {
        for item in snap.iterator_cf(handle(db, name), IteratorMode::Start) {
            let (k, v) = item?;
            for part in [&[i as u8][..], &(k.len() as u32).to_le_bytes(), &k, &(v.len() as u32).to_le_bytes(), &v] {
                a = crc32c::crc32c_append(a, part);
                b = crc32c::crc32c_append(b, part);
            }
            // The second chain also depends on the row count, so the
            // two halves are not one function of the bytes.
            rows += 1;
            b = crc32c::crc32c_append(b, &rows.to_le_bytes());
        }
    }
    Ok(strata_protocol::messages::StateDigest { applied_index, rows, digest: (u64::from(a) << 32) | u64::from(b) })
}

/// Whether a file with these attributes and blocks keeps its content inline.
pub fn is_inline(attr: &Attr, blocks: &[BlockId]) -> bool {
    attr.file_type == FileType::File && attr.complete && attr.size > 0 && blocks.is_empty()
}

/// Whether a file of `n` blocks of `bs` bytes can be `length` long (every
/// block but the last full).
fn length_fits(n: u64, bs: u64, length: u64) -> bool {
    if n == 0 {
        length == 0
    } else {
        (n - 1) * bs < length && length <= n * bs
    }
}

/// One entry's changes, collected in a batch.
struct Tx<'a> {
    ns: &'a Namespace,
    batch: WriteBatch,
    counters: (u64, u64),
    /// The edges `batch` writes (None: removed), for the cache.
    edges: Vec<(Vec<u8>, Option<InodeId>)>,
}

impl<'a> Tx<'a> {
    fn new(ns: &'a Namespace) -> Self {
        Tx { ns, batch: WriteBatch::default(), counters: *ns.counters.lock(), edges: Vec::new() }
    }

    /// Drops every change (a rejected entry).
    fn discard(&mut self) {
        *self = Tx::new(self.ns);
    }

    fn put_inode(&mut self, rec: &InodeRecord) {
        let h = handle(&self.ns.db, cf::INODES);
        self.batch.put_cf(h, rec.attr.inode.to_be_bytes(), encode(rec));
    }

    fn put_edge(&mut self, parent: InodeId, name: &str, child: InodeId) {
        let h = handle(&self.ns.db, cf::EDGES);
        let key = edge_key(parent, name);
        self.batch.put_cf(h, &key, child.to_be_bytes());
        self.edges.push((key, Some(child)));
    }

    fn delete_edge(&mut self, parent: InodeId, name: &str) {
        let h = handle(&self.ns.db, cf::EDGES);
        let key = edge_key(parent, name);
        self.batch.delete_cf(h, &key);
        self.edges.push((key, None));
    }

    fn next_inode(&mut self) -> InodeId {
        let id = self.counters.0;
        self.counters.0 += 1;
        id
    }

    fn next_block(&mut self) -> BlockId {
        let id = self.counters.1;
        self.counters.1 += 1;
        id
    }

    /// Maps `blocks` to `inode` in the block map.
    fn map_blocks(&mut self, blocks: &[BlockId], inode: InodeId) {
        let hb = handle(&self.ns.db, cf::BLOCKS);
        for b in blocks {
            self.batch.put_cf(hb, b.to_be_bytes(), inode.to_be_bytes());
        }
    }

    /// Removes `blocks` from the block map.
    fn unmap_blocks(&mut self, blocks: &[BlockId]) {
        let hb = handle(&self.ns.db, cf::BLOCKS);
        for b in blocks {
            self.batch.delete_cf(hb, b.to_be_bytes());
        }
    }

    /// Updates a directory's times and link count (`2 + subdirectories`:
    /// `delta` is +1 when a subdirectory arrives, -1 when one leaves).
    fn adjust_dir(&mut self, mut dir: InodeRecord, delta: i32, time_ms: i64) -> InodeRecord {
        dir.attr.mtime_ms = time_ms;
        dir.attr.ctime_ms = time_ms;
        dir.attr.nlink = (dir.attr.nlink as i64 + delta as i64).max(2) as u32;
        self.put_inode(&dir);
        dir
    }

    /// Removes one name of an inode: with other names left it only loses a
    /// link; with none it is dropped and its blocks are freed.
    fn unlink_inode(&mut self, rec: &InodeRecord, time_ms: i64) -> Vec<BlockId> {
        if rec.attr.file_type != FileType::Directory && rec.attr.nlink > 1 {
            let mut r = rec.clone();
            r.attr.nlink -= 1;
            r.attr.ctime_ms = time_ms;
            self.put_inode(&r);
            return Vec::new();
        }
        self.drop_inode(rec)
    }

    /// Removes an inode record, its inline content and its block map
    /// entries; returns freed blocks.
    fn drop_inode(&mut self, rec: &InodeRecord) -> Vec<BlockId> {
        let hi = handle(&self.ns.db, cf::INODES);
        self.batch.delete_cf(hi, rec.attr.inode.to_be_bytes());
        self.drop_inline(rec);
        let id = rec.attr.inode;
        self.batch.delete_range_cf(handle(&self.ns.db, cf::XATTRS), id.to_be_bytes(), (id + 1).to_be_bytes());
        self.unmap_blocks(&rec.blocks);
        rec.blocks.clone()
    }

    /// Removes a file's inline content (a no-op for other inodes).
    fn drop_inline(&mut self, rec: &InodeRecord) {
        if is_inline(&rec.attr, &rec.blocks) {
            self.batch.delete_cf(handle(&self.ns.db, cf::INLINE), rec.attr.inode.to_be_bytes());
        }
    }

    /// Removes a whole subtree below (and including) `rec`; returns freed blocks.
    fn drop_tree(&mut self, rec: &InodeRecord, time_ms: i64) -> Result<Vec<BlockId>, NsError> {
        let mut freed = Vec::new();
        let mut stack = vec![rec.clone()];
        while let Some(cur) = stack.pop() {
            if cur.attr.file_type == FileType::Directory {
                for (name, child) in self.ns.children(cur.attr.inode)? {
                    self.delete_edge(cur.attr.inode, &name);
                    if let Some(c) = self.ns.inode(child)? {
                        stack.push(c);
                    }
                }
            }
            freed.extend(self.unlink_inode(&cur, time_ms));
        }
        Ok(freed)
    }

    /// Makes `data` the whole content of file `rec` (kept inline), with
    /// `attrs` applied after; the blocks it had, freed.
    fn write_inline(
        &mut self,
        rec: &mut InodeRecord,
        data: &[u8],
        attrs: &strata_protocol::messages::SetAttrs,
        time_ms: i64,
    ) -> Result<Vec<BlockId>, NsError> {
        let inode = rec.attr.inode;
        if data.len() as u64 > strata_protocol::INLINE_MAX_BYTES || rec.ufs.is_some() {
            return Err(ns(ErrorCode::InlineRefused, format!("inode {inode} cannot be kept inline")));
        }
        let freed = std::mem::take(&mut rec.blocks);
        self.unmap_blocks(&freed);
        let hl = handle(&self.ns.db, cf::INLINE);
        if data.is_empty() {
            self.batch.delete_cf(hl, inode.to_be_bytes());
        } else {
            self.batch.put_cf(hl, inode.to_be_bytes(), data);
        }
        rec.attr.write_inline(data.len() as u64, attrs, time_ms);
        self.put_inode(rec);
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::store::open_db;
    use strata_protocol::journal::BatchOp;
    use strata_protocol::messages::SetAttrs;

    fn ns_in(dir: &tempfile::TempDir) -> Namespace {
        Namespace::open(open_db(dir.path()).unwrap()).unwrap()
    }

    fn ok(ns: &Namespace, e: JournalEntry) -> ApplyResult {
        let r = ns.apply(0, &e, &[]).unwrap();
        assert!(!matches!(r, ApplyResult::Error(_)), "{e:?} -> {r:?}");
        r
    }

    fn err(ns: &Namespace, e: JournalEntry) -> ErrorCode {
        match ns.apply(0, &e, &[]).unwrap() {
            ApplyResult::Error(e) => e.code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn mkdir(p: &str, recursive: bool) -> JournalEntry {
        JournalEntry::Mkdir { path: p.into(), recursive, mode: 0o755, uid: 0, gid: 0, time_ms: 1 }
    }

    fn create(p: &str, overwrite: bool) -> JournalEntry {
        JournalEntry::CreateFile {
            path: p.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            block_size: 10,
            overwrite,
            complete: false,
            time_ms: 1,
        }
    }

    /// A complete 5-byte file at `p` made of one block: its attributes and the block.
    fn one_block_file(ns: &Namespace, p: &str) -> (Attr, BlockId) {
        let ApplyResult::Created { attr: f, .. } = ok(ns, create(p, false)) else { panic!() };
        let ApplyResult::Block { block_id, .. } = ok(ns, JournalEntry::AddBlock { inode: f.inode, time_ms: 2 }) else {
            panic!()
        };
        ok(ns, JournalEntry::CompleteFile { inode: f.inode, length: 5, time_ms: 3 });
        (f, block_id)
    }

    #[test]
    fn mkdir_p_create_rename_delete() {
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        ok(&ns, mkdir("/a/b/c", true));
        assert_eq!(err(&ns, mkdir("/x/y", false)), ErrorCode::NotFound);
        assert_eq!(err(&ns, mkdir("/a/b", false)), ErrorCode::AlreadyExists);
        let ApplyResult::Created { attr: f, .. } = ok(&ns, create("/a/b/f", false)) else { panic!() };
        assert_eq!(err(&ns, create("/a/b/f", false)), ErrorCode::AlreadyExists);
        let ApplyResult::Block { block_id: b1, .. } = ok(&ns, JournalEntry::AddBlock { inode: f.inode, time_ms: 2 })
        else {
            panic!()
        };
        let ApplyResult::Block { block_id: b2, .. } = ok(&ns, JournalEntry::AddBlock { inode: f.inode, time_ms: 2 })
        else {
            panic!()
        };
        assert_ne!(b1, b2);
        assert_eq!(
            err(&ns, JournalEntry::CompleteFile { inode: f.inode, length: 21, time_ms: 3 }),
            ErrorCode::InvalidArgument
        );
        ok(&ns, JournalEntry::CompleteFile { inode: f.inode, length: 15, time_ms: 3 });
        assert_eq!(ns.resolve("/a/b/f").unwrap().attr.size, 15);
        assert_eq!(ns.block_owner(b1).unwrap(), Some(f.inode));
        // rename over an existing file frees the replaced file's blocks
        let ApplyResult::Created { attr: g, .. } = ok(&ns, create("/a/g", false)) else { panic!() };
        let ApplyResult::Block { block_id: gb, .. } = ok(&ns, JournalEntry::AddBlock { inode: g.inode, time_ms: 2 })
        else {
            panic!()
        };
        assert_eq!(
            ok(&ns, JournalEntry::Rename { src: "/a/b/f".into(), dst: "/a/g".into(), time_ms: 4 }),
            ApplyResult::Freed { blocks: vec![gb] }
        );
        assert_eq!(ns.resolve("/a/g").unwrap().attr.inode, f.inode);
        assert_eq!(ns.resolve("/a/b/f").unwrap_err().to_string(), "not found: /a/b/f does not exist");
        assert_eq!(
            err(&ns, JournalEntry::Rename { src: "/a".into(), dst: "/a/b/z".into(), time_ms: 4 }),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            err(&ns, JournalEntry::Delete { path: "/a".into(), recursive: false, time_ms: 5 }),
            ErrorCode::DirectoryNotEmpty
        );
        // unlink: never a directory, even an empty one; a file with two names
        // keeps its blocks until the last name goes, and each answer is the
        // inode as it was.
        let unlink = |p: &str| JournalEntry::Unlink { path: p.into(), time_ms: 5 };
        ok(&ns, mkdir("/a/empty", false));
        assert_eq!(err(&ns, unlink("/a/empty")), ErrorCode::IsADirectory);
        assert_eq!(err(&ns, unlink("/a/none")), ErrorCode::NotFound);
        ok(&ns, JournalEntry::Link { target: "/a/g".into(), link: "/a/h".into(), time_ms: 5 });
        let ApplyResult::Replaced { attr, freed } = ok(&ns, unlink("/a/g")) else { panic!() };
        assert_eq!((attr.inode, attr.nlink, freed.len()), (f.inode, 2, 0));
        assert_eq!(ns.resolve("/a/h").unwrap().attr.nlink, 1);
        let ApplyResult::Replaced { attr, freed } = ok(&ns, unlink("/a/h")) else { panic!() };
        assert_eq!((attr.inode, freed), (f.inode, vec![b1, b2]));
        assert_eq!(ns.block_owner(b1).unwrap(), None);
        let ApplyResult::Created { attr: f, .. } = ok(&ns, create("/a/b/f", false)) else { panic!() };
        let add = |inode| match ok(&ns, JournalEntry::AddBlock { inode, time_ms: 6 }) {
            ApplyResult::Block { block_id, .. } => block_id,
            other => panic!("{other:?}"),
        };
        let (b1, _) = (add(f.inode), add(f.inode));
        ok(&ns, JournalEntry::CompleteFile { inode: f.inode, length: 15, time_ms: 6 });
        let ApplyResult::Freed { blocks } =
            ok(&ns, JournalEntry::Delete { path: "/a".into(), recursive: true, time_ms: 5 })
        else {
            panic!()
        };
        assert_eq!(blocks.len(), 2);
        assert!(ns.list("/").unwrap().is_empty());
        assert_eq!(ns.block_owner(b1).unwrap(), None);
    }

    #[test]
    fn a_batch_applies_each_op_in_order_with_its_own_outcome() {
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        ok(&ns, mkdir("/d/sub", true));
        let (f, block) = one_block_file(&ns, "/d/f");
        ok(&ns, JournalEntry::Link { target: "/d/f".into(), link: "/d/g".into(), time_ms: 4 });
        ok(&ns, create("/d/h", false));
        let unlink = |p: &str| BatchOp::Unlink { path: p.into() };
        // A rejected op (a directory, a missing name, one already unlinked by
        // an op before it) changes nothing and does not stop the rest.
        let ops = vec![unlink("/d/f"), unlink("/d/sub"), unlink("/d/f"), unlink("/d/g"), unlink("/d/h")];
        let batch = JournalEntry::Batch { ops: ops.clone(), time_ms: 9 };
        let ApplyResult::Batch(out) = ns.apply(7, &batch, &[]).unwrap() else { panic!() };
        let codes: Vec<Option<ErrorCode>> = out
            .iter()
            .map(|o| match o {
                BatchOutcome::Failed(e) => Some(e.code),
                _ => None,
            })
            .collect();
        assert_eq!(codes, vec![None, Some(ErrorCode::IsADirectory), Some(ErrorCode::NotFound), None, None]);
        // The first name only drops a link; the last frees the block.
        let BatchOutcome::Done { attr: Some(attr), freed } = &out[0] else { panic!() };
        assert_eq!((attr.inode, attr.nlink, freed.len()), (f.inode, 2, 0));
        let BatchOutcome::Done { freed, .. } = &out[3] else { panic!() };
        assert_eq!(freed, &vec![block]);
        let names: Vec<String> = ns.list("/d").unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["sub".to_string()]);
        assert_eq!(ns.resolve("/d").unwrap().attr.mtime_ms, 9);
        // One applied index for the whole batch; applying it again (a replay)
        // is a no-op.
        assert_eq!(ns.applied_index().unwrap(), 7);
        assert_eq!(ns.apply(7, &batch, &[]).unwrap(), ApplyResult::Done);
    }

    /// A path resolves through directories only: a missing name and a file
    /// in between are told apart, at the component where the walk stopped.
    #[test]
    fn resolving_tells_a_missing_name_from_a_file_in_the_way() {
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        ok(&ns, mkdir("/a/b", true));
        ok(&ns, create("/a/b/f", false));
        assert_eq!(ns.resolve("/").unwrap().attr.inode, ROOT_INODE);
        assert_eq!(ns.resolve("/a/b/f").unwrap().attr.file_type, FileType::File);
        let code = |p: &str| match ns.resolve(p) {
            Err(NsError::Ns(e)) => (e.code, e.message),
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(code("/a/b/f/x/y"), (ErrorCode::NotADirectory, "/a/b/f is not a directory".into()));
        assert_eq!(code("/a/nope/x"), (ErrorCode::NotFound, "/a/nope does not exist".into()));
        assert_eq!(code("/a/b/g"), (ErrorCode::NotFound, "/a/b/g does not exist".into()));
        assert_eq!(err(&ns, create("/a/b/f/g", false)), ErrorCode::NotADirectory);
    }

    /// A create and the first content of the same file, next to each other
    /// in a batch, are applied in one write: the result and the outcomes
    /// are those of applying them one by one, refusals included (a name
    /// taken, content too big for inline), and a crash between batches
    /// resumes after the pair.
    #[test]
    fn a_create_and_its_first_content_apply_as_one_op_would() {
        let make = |p: &str, inode| BatchOp::CreateInode {
            path: p.into(),
            inode,
            kind: FileType::File,
            mode: 0o644,
            uid: 7,
            gid: 8,
            block_size: 10,
            time_ms: 5,
        };
        let attrs = SetAttrs { mode: Some(0o600), mtime_ms: Some(3), ..Default::default() };
        let fill = |inode, data: Vec<u8>| BatchOp::WriteInlineAt {
            inode,
            path: String::new(),
            data,
            attrs: attrs.clone(),
            time_ms: 6,
        };
        let big = vec![1u8; strata_protocol::INLINE_MAX_BYTES as usize + 1];
        let run = |paired: bool| {
            let d = tempfile::tempdir().unwrap();
            let ns = ns_in(&d);
            ok(&ns, mkdir("/d", false));
            ok(&ns, create("/d/taken", false));
            let ApplyResult::Reserved { first: n } = ok(&ns, JournalEntry::ReserveInodes { count: 8, time_ms: 1 })
            else {
                panic!("no reservation")
            };
            let ops = vec![
                make("/d/a", n),
                fill(n, b"hello".to_vec()),
                make("/d/taken", n + 1),    // refused: the name is taken
                fill(n + 1, b"x".to_vec()), // refused: no such inode
                make("/d/big", n + 2),
                fill(n + 2, big.clone()), // refused: too big for inline
                make("/d/empty", n + 3),
                fill(n + 3, Vec::new()),
                fill(n, b"again".to_vec()), // not after its create
            ];
            let out: Vec<BatchOutcome> = if paired {
                let ApplyResult::Batch(out) = ns
                    .apply(9, &JournalEntry::ClientBatch { client: 1, seq: 1, part: 0, ops, time_ms: 8 }, &[])
                    .unwrap()
                else {
                    panic!("no outcomes")
                };
                out
            } else {
                // One op per batch: nothing to pair.
                ops.into_iter()
                    .enumerate()
                    .map(|(i, op)| {
                        let b = JournalEntry::ClientBatch {
                            client: 1,
                            seq: i as u64 + 1,
                            part: 0,
                            ops: vec![op],
                            time_ms: 8,
                        };
                        let ApplyResult::Batch(mut out) = ns.apply(9 + i as u64, &b, &[]).unwrap() else { panic!() };
                        out.pop().unwrap()
                    })
                    .collect()
            };
            let files: Vec<_> = ["/d/a", "/d/big", "/d/empty", "/d/taken"]
                .iter()
                .map(|p| {
                    let r = ns.resolve(p).unwrap();
                    (r.attr.clone(), ns.inline(r.attr.inode).unwrap())
                })
                .collect();
            let ids = *ns.counters.lock();
            (out, files, ns.resolve("/d").unwrap().attr, ids)
        };
        let (one_by_one, paired) = (run(false), run(true));
        assert_eq!(paired, one_by_one);
        let (out, files, _, _) = paired;
        let failed: Vec<bool> = out.iter().map(|o| matches!(o, BatchOutcome::Failed(_))).collect();
        assert_eq!(failed, [false, false, true, true, false, true, false, false, false]);
        let (a, content) = &files[0];
        assert_eq!((a.size, a.mode & 0o7777, a.mtime_ms, a.ctime_ms), (5, 0o600, 3, 6));
        assert_eq!(content.as_deref(), Some(&b"again"[..]));
        // And the pair did go as one.
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        ok(&ns, mkdir("/d", false));
        let ApplyResult::Reserved { first: n } = ok(&ns, JournalEntry::ReserveInodes { count: 2, time_ms: 1 }) else {
            panic!("no reservation")
        };
        assert!(ns.apply_created_inline(&make("/d/a", n), &fill(n + 1, b"x".to_vec()), &[]).unwrap().is_none());
        assert!(ns.apply_created_inline(&make("/d/a", n), &fill(n, big.clone()), &[]).unwrap().is_none());
        assert!(ns.resolve("/d/a").is_err(), "nothing written");
        let (made, written) =
            ns.apply_created_inline(&make("/d/a", n), &fill(n, b"hi".to_vec()), &[]).unwrap().unwrap();
        assert_eq!((made.inode, made.size, written.inode, written.size), (n, 0, n, 2));
        assert_eq!(ns.inline(n).unwrap().as_deref(), Some(&b"hi"[..]));
    }

    #[test]
    fn a_client_batch_is_applied_once_and_resumes_after_a_crash() {
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        ok(&ns, mkdir("/d", false));
        ok(&ns, create("/d/a", false));
        ok(&ns, create("/d/c", false));
        let a = ns.resolve("/d/a").unwrap().attr;
        let c = ns.resolve("/d/c").unwrap().attr;
        let attrs = SetAttrs { mode: Some(0o600), mtime_ms: Some(100), ..Default::default() };
        // Renames that a blind replay would get wrong: a -> b, then c -> a.
        let ops = vec![
            BatchOp::SetAttr { path: "/d/a".into(), attrs: attrs.clone(), time_ms: 50 },
            BatchOp::Rename { src: "/d/a".into(), dst: "/d/b".into(), time_ms: 51 },
            BatchOp::Rename { src: "/d/c".into(), dst: "/d/a".into(), time_ms: 52 },
        ];
        let batch = |seq| JournalEntry::ClientBatch { client: 3, seq, part: 0, ops: ops.clone(), time_ms: 60 };
        let ApplyResult::Batch(out) = ns.apply(7, &batch(1), &[]).unwrap() else { panic!() };
        assert!(out.iter().all(|o| matches!(o, BatchOutcome::Done { .. })), "{out:?}");
        let check = || {
            let b = ns.resolve("/d/b").unwrap().attr;
            assert_eq!((b.inode, b.mode, b.mtime_ms, b.ctime_ms), (a.inode, 0o600, 100, 51), "the client's times");
            assert_eq!(ns.resolve("/d/a").unwrap().attr.inode, c.inode);
            assert!(ns.resolve("/d/c").is_err());
        };
        check();
        // The same batch resent (its answer was lost) is not applied again.
        let ApplyResult::Batch(out) = ns.apply(8, &batch(1), &[]).unwrap() else { panic!() };
        assert_eq!(out, vec![BatchOutcome::AlreadyApplied; 3]);
        check();
        // A crash after the first op of a batch: the replay goes on from the second.
        let d2 = tempfile::tempdir().unwrap();
        let ns2 = ns_in(&d2);
        ok(&ns2, mkdir("/d", false));
        ok(&ns2, create("/d/a", false));
        ok(&ns2, create("/d/c", false));
        let c2 = ns2.resolve("/d/c").unwrap().attr.inode;
        ok(&ns2, JournalEntry::SetAttr { path: "/d/a".into(), attrs: attrs.clone(), time_ms: 50 });
        let progress = [7u64, 2].map(u64::to_be_bytes).concat();
        ns2.db.put_cf(handle(&ns2.db, cf::SM_META), BATCH_PROGRESS, progress).unwrap();
        ok(&ns2, JournalEntry::Rename { src: "/d/a".into(), dst: "/d/b".into(), time_ms: 51 });
        let ApplyResult::Batch(out) = ns2.apply(7, &batch(1), &[]).unwrap() else { panic!() };
        assert!(matches!(
            out[..],
            [BatchOutcome::AlreadyApplied, BatchOutcome::AlreadyApplied, BatchOutcome::Done { .. }]
        ));
        assert_eq!(ns2.resolve("/d/a").unwrap().attr.inode, c2, "c moved to a, and a was not moved again");
        assert!(ns2.resolve("/d/c").is_err());
        assert_eq!(ns2.resolve("/d/b").unwrap().attr.mode, 0o600);
        assert_eq!(ns2.applied_index().unwrap(), 7);
    }

    /// The batch numbers of clients gone for longer than the retention are
    /// forgotten by a journaled `ForgetClients`; those of others are kept
    /// (and a row of an earlier build, without a time, is forgotten).
    #[test]
    fn batch_numbers_of_gone_clients_are_forgotten() {
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        ok(&ns, mkdir("/d", false));
        let batch = |client, seq, time_ms| JournalEntry::ClientBatch {
            client,
            seq,
            part: 0,
            ops: vec![BatchOp::SetAttr { path: "/d".into(), attrs: SetAttrs::default(), time_ms }],
            time_ms,
        };
        ns.apply(2, &batch(1, 5, 1_000), &[]).unwrap();
        ns.apply(3, &batch(2, 9, 5_000), &[]).unwrap();
        ns.db.put_cf(handle(&ns.db, cf::SM_META), seen_key(3), [4u64, 0].map(u64::to_be_bytes).concat()).unwrap();
        assert_eq!(ns.clients_seen_before(2_000).unwrap(), 2, "client 1 and the row without a time");
        ns.apply(4, &JournalEntry::ForgetClients { before_ms: 2_000, time_ms: 6_000 }, &[]).unwrap();
        assert_eq!(ns.batch_seen(1).unwrap(), None);
        assert_eq!(ns.batch_seen(3).unwrap(), None);
        assert_eq!(ns.batch_seen(2).unwrap(), Some((9, 0)), "a recent client is kept");
        assert_eq!(ns.clients_seen_before(2_000).unwrap(), 0);
        let ApplyResult::Batch(out) = ns.apply(5, &batch(2, 9, 5_000), &[]).unwrap() else { panic!() };
        assert_eq!(out, vec![BatchOutcome::AlreadyApplied], "its resend is still recognised");
    }

    #[test]
    fn a_create_inline_write_or_delete_carries_queued_ops_in_one_entry() {
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        ok(&ns, mkdir("/d", false));
        ok(&ns, create("/d/a", false));
        let a = ns.resolve("/d/a").unwrap().attr;
        let ops = vec![
            BatchOp::WriteInline {
                inode: a.inode,
                path: "/d/a".into(),
                data: b"hello".to_vec(),
                attrs: SetAttrs::default(),
            },
            BatchOp::Rename { src: "/d/a".into(), dst: "/d/b".into(), time_ms: 5 },
            BatchOp::Create {
                path: "/d/a".into(),
                mode: 0o640,
                uid: 1,
                gid: 2,
                block_size: 1 << 20,
                overwrite: false,
                complete: true,
            },
        ];
        let e = JournalEntry::ClientBatch { client: 1, seq: 1, part: 0, ops, time_ms: 9 };
        let ApplyResult::Batch(out) = ns.apply(3, &e, &[]).unwrap() else { panic!() };
        let [BatchOutcome::Done { attr: Some(w), .. }, BatchOutcome::Done { attr: None, .. }, BatchOutcome::Done { attr: Some(c), .. }] =
            &out[..]
        else {
            panic!("{out:?}")
        };
        assert_eq!(w.size, 5);
        assert_eq!(ns.resolve("/d/b").unwrap().attr.inode, a.inode);
        assert_eq!((c.mode, c.uid, c.gid, c.ctime_ms), (0o640, 1, 2, 9));
        assert_eq!(ns.resolve("/d/a").unwrap().attr.inode, c.inode);
        assert_eq!(ns.applied_index().unwrap(), 3);
        // rm -rf: the rmdir carries the unlinks before it; one not empty is refused.
        ok(&ns, mkdir("/e/sub", true));
        ok(&ns, create("/e/f", false));
        let ops = vec![
            BatchOp::Unlink { path: "/e/f".into() },
            BatchOp::Delete { path: "/e".into() },
            BatchOp::Delete { path: "/e/sub".into() },
            BatchOp::Delete { path: "/e".into() },
        ];
        let e = JournalEntry::ClientBatch { client: 1, seq: 2, part: 0, ops, time_ms: 10 };
        let ApplyResult::Batch(out) = ns.apply(4, &e, &[]).unwrap() else { panic!() };
        assert!(matches!(&out[1], BatchOutcome::Failed(e) if e.code == ErrorCode::DirectoryNotEmpty), "{out:?}");
        assert!(matches!(out[3], BatchOutcome::Done { attr: None, .. }), "{out:?}");
        assert!(ns.resolve("/e").is_err());
    }

    #[test]
    fn directory_link_counts_follow_subdirectories() {
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        ok(&ns, mkdir("/a/b/c", true));
        ok(&ns, mkdir("/x", false));
        let n = |p: &str| ns.resolve(p).unwrap().attr.nlink;
        assert_eq!((n("/"), n("/a"), n("/a/b"), n("/a/b/c")), (4, 3, 3, 2));
        ok(&ns, JournalEntry::Rename { src: "/a/b".into(), dst: "/x/b".into(), time_ms: 2 });
        assert_eq!((n("/a"), n("/x")), (2, 3));
        ok(&ns, mkdir("/y", false));
        ok(&ns, JournalEntry::Rename { src: "/y".into(), dst: "/x/b/c".into(), time_ms: 3 });
        assert_eq!((n("/"), n("/x/b")), (4, 3));
        ok(&ns, JournalEntry::Delete { path: "/x".into(), recursive: true, time_ms: 4 });
        assert_eq!(n("/"), 3);
    }

    #[test]
    fn swap_content_keeps_the_inode_and_frees_old_blocks() {
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        let (f, old) = one_block_file(&ns, "/f");
        let ApplyResult::Created { attr: t, .. } =
            ok(&ns, JournalEntry::CreateDetached { mode: 0o644, uid: 0, gid: 0, block_size: 10, time_ms: 4 })
        else {
            panic!()
        };
        assert_eq!(
            err(&ns, JournalEntry::SwapContent { from: t.inode, to: f.inode, length: None, time_ms: 5 }),
            ErrorCode::InvalidState
        );
        let ApplyResult::Block { block_id: new, .. } = ok(&ns, JournalEntry::AddBlock { inode: t.inode, time_ms: 5 })
        else {
            panic!()
        };
        ok(&ns, JournalEntry::CompleteFile { inode: t.inode, length: 7, time_ms: 6 });
        assert_eq!(
            ok(&ns, JournalEntry::SwapContent { from: t.inode, to: f.inode, length: None, time_ms: 7 }),
            ApplyResult::Freed { blocks: vec![old] }
        );
        let r = ns.resolve("/f").unwrap();
        assert_eq!((r.attr.inode, r.attr.size, r.blocks.clone()), (f.inode, 7, vec![new]));
        assert_eq!(ns.block_owner(new).unwrap(), Some(f.inode));
        assert_eq!(ns.block_owner(old).unwrap(), None);
        assert!(ns.inode(t.inode).unwrap().is_none());
        // An incomplete detached file is sealed by the swap itself when given a length.
        let ApplyResult::Created { attr: t2, .. } =
            ok(&ns, JournalEntry::CreateDetached { mode: 0o644, uid: 0, gid: 0, block_size: 10, time_ms: 8 })
        else {
            panic!()
        };
        let ApplyResult::Block { block_id: b2, .. } = ok(&ns, JournalEntry::AddBlock { inode: t2.inode, time_ms: 8 })
        else {
            panic!()
        };
        let swap = |length| JournalEntry::SwapContent { from: t2.inode, to: f.inode, length, time_ms: 9 };
        assert_eq!(err(&ns, swap(Some(11))), ErrorCode::InvalidArgument);
        assert_eq!(ok(&ns, swap(Some(3))), ApplyResult::Freed { blocks: vec![new] });
        let r = ns.resolve("/f").unwrap();
        assert_eq!((r.attr.size, r.blocks.clone(), r.attr.complete), (3, vec![b2], true));
    }

    #[test]
    fn inline_content_replaces_blocks_carries_attrs_and_goes_with_the_inode() {
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        let (f, old) = one_block_file(&ns, "/f");
        let attrs = SetAttrs { mode: Some(0o600), mtime_ms: Some(42), ..Default::default() };
        let write = |data: &[u8], attrs: &SetAttrs| JournalEntry::WriteInline {
            inode: f.inode,
            data: data.to_vec(),
            attrs: attrs.clone(),
            time_ms: 9,
        };
        let ApplyResult::Replaced { attr, freed } = ok(&ns, write(b"hello inline", &attrs)) else { panic!() };
        assert_eq!(freed, vec![old]);
        assert_eq!((attr.size, attr.mode, attr.mtime_ms, attr.ctime_ms, attr.complete), (12, 0o600, 42, 9, true));
        assert_eq!(ns.block_owner(old).unwrap(), None);
        assert_eq!(ns.inline(f.inode).unwrap().as_deref(), Some(&b"hello inline"[..]));
        let r = ns.resolve("/f").unwrap();
        assert!(is_inline(&r.attr, &r.blocks));
        // Too big: refused, nothing changes.
        let big = vec![7u8; strata_protocol::INLINE_MAX_BYTES as usize + 1];
        assert_eq!(err(&ns, write(&big, &SetAttrs::default())), ErrorCode::InlineRefused);
        // Snapshots carry inline content.
        let d2 = tempfile::tempdir().unwrap();
        let ns2 = ns_in(&d2);
        ns2.import(&ns.export().unwrap()).unwrap();
        assert_eq!(ns2.inline(f.inode).unwrap().as_deref(), Some(&b"hello inline"[..]));
        // New content as blocks drops the inline copy.
        let ApplyResult::Created { attr: t, .. } =
            ok(&ns, JournalEntry::CreateDetached { mode: 0o644, uid: 0, gid: 0, block_size: 10, time_ms: 4 })
        else {
            panic!()
        };
        ok(&ns, JournalEntry::AddBlock { inode: t.inode, time_ms: 5 });
        ok(&ns, JournalEntry::SwapContent { from: t.inode, to: f.inode, length: Some(3), time_ms: 7 });
        assert_eq!(ns.inline(f.inode).unwrap(), None);
        // A detached file with inline content gives it to the swap target.
        let ApplyResult::Created { attr: t3, .. } =
            ok(&ns, JournalEntry::CreateDetached { mode: 0o644, uid: 0, gid: 0, block_size: 10, time_ms: 8 })
        else {
            panic!()
        };
        ok(
            &ns,
            JournalEntry::WriteInline {
                inode: t3.inode,
                data: b"moved".to_vec(),
                attrs: SetAttrs::default(),
                time_ms: 8,
            },
        );
        ok(&ns, JournalEntry::SwapContent { from: t3.inode, to: f.inode, length: None, time_ms: 9 });
        assert_eq!(ns.inline(f.inode).unwrap().as_deref(), Some(&b"moved"[..]));
        assert_eq!((ns.inline(t3.inode).unwrap(), ns.resolve("/f").unwrap().attr.size), (None, 5));
        // Empty content keeps no row; deleting an inline file drops its row.
        ok(&ns, write(b"", &SetAttrs::default()));
        assert_eq!((ns.resolve("/f").unwrap().attr.size, ns.inline(f.inode).unwrap()), (0, None));
        ok(&ns, write(b"x", &SetAttrs::default()));
        ok(&ns, JournalEntry::Delete { path: "/f".into(), recursive: false, time_ms: 10 });
        assert_eq!(ns.inline(f.inode).unwrap(), None);
    }

    #[test]
    fn failed_entry_changes_nothing_and_export_import_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        ok(&ns, mkdir("/d", false));
        ok(&ns, create("/d/f", false));
        assert_eq!(err(&ns, mkdir("/d/f/x", true)), ErrorCode::NotADirectory);
        ok(&ns, JournalEntry::SetPin { path: "/d/f".into(), pinned: true, time_ms: 2 });
        let before = ns.export().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let ns2 = ns_in(&d2);
        ns2.import(&before).unwrap();
        assert_eq!(ns2.export().unwrap(), before);
        assert_eq!(ns2.list("/d").unwrap(), ns.list("/d").unwrap());
        // counters survive: the next inode is the same on both
        let a = ok(&ns, create("/d/g", false));
        let b = ok(&ns2, create("/d/g", false));
        assert_eq!(a, b);
        assert!(ns2.resolve("/d/f").unwrap().attr.pinned);
    }

    /// Blocks written under reserved ids become a file's whole content in
    /// one entry (its old blocks freed, attributes applied after); only
    /// reserved ids no inode owns, each once, and a length they can hold.
    #[test]
    fn set_content_takes_reserved_unowned_blocks() {
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        let ApplyResult::Created { attr: f, .. } = ok(&ns, create("/f", false)) else { panic!() };
        let ApplyResult::Block { block_id: old, .. } = ok(&ns, JournalEntry::AddBlock { inode: f.inode, time_ms: 2 })
        else {
            panic!()
        };
        let ApplyResult::Reserved { first } = ok(&ns, JournalEntry::ReserveBlocks { count: 4, time_ms: 3 }) else {
            panic!()
        };
        assert!(first > old);
        let attrs = SetAttrs { mode: Some(0o600), ..Default::default() };
        let set = |blocks: Vec<u64>, length| JournalEntry::SetContent {
            inode: f.inode,
            blocks,
            length,
            block_size: 4096,
            attrs: attrs.clone(),
            time_ms: 5,
        };
        assert_eq!(err(&ns, set(vec![first, first], 5000)), ErrorCode::InvalidArgument, "an id twice");
        assert_eq!(err(&ns, set(vec![first + 4], 100)), ErrorCode::InvalidArgument, "not reserved");
        let ApplyResult::Created { attr: h, .. } = ok(&ns, create("/h", false)) else { panic!() };
        let ApplyResult::Block { block_id: other, .. } = ok(&ns, JournalEntry::AddBlock { inode: h.inode, time_ms: 4 })
        else {
            panic!()
        };
        assert_eq!(err(&ns, set(vec![other], 100)), ErrorCode::InvalidArgument, "owned by another file");
        assert_eq!(err(&ns, set(vec![first], 5000)), ErrorCode::InvalidArgument, "length beyond the blocks");
        let ApplyResult::Replaced { attr, freed } = ok(&ns, set(vec![first, first + 1], 5000)) else { panic!() };
        assert_eq!(freed, vec![old]);
        assert_eq!((attr.size, attr.block_size, attr.mode, attr.mtime_ms, attr.complete), (5000, 4096, 0o600, 5, true));
        assert_eq!(ns.resolve("/f").unwrap().blocks, vec![first, first + 1]);
        assert_eq!(err(&ns, set(vec![other], 100)), ErrorCode::InvalidArgument, "still another file's");
        // A new content keeping a block of the present one: only the
        // replaced block is freed, the kept one stays the file's.
        let ApplyResult::Replaced { freed, .. } = ok(&ns, set(vec![first, first + 2], 6000)) else { panic!() };
        assert_eq!(freed, vec![first + 1]);
        assert_eq!(ns.resolve("/f").unwrap().blocks, vec![first, first + 2]);
        assert_eq!(ns.block_owner(first).unwrap(), Some(f.inode));
        assert_eq!(err(&ns, set(vec![first + 2, first + 2], 5000)), ErrorCode::InvalidArgument, "a kept id twice");
        // Ids a master-numbered block takes are past the reservation.
        let ApplyResult::Created { attr: g, .. } = ok(&ns, create("/g", false)) else { panic!() };
        let ApplyResult::Block { block_id, .. } = ok(&ns, JournalEntry::AddBlock { inode: g.inode, time_ms: 6 }) else {
            panic!()
        };
        assert!(block_id >= first + 4);
        // A worker's report of a reserved id no file has yet is no orphan
        // (its file's entry may be on its way).
        assert!(ns.reserved_recently(first + 3) && !ns.reserved_recently(block_id));
    }

    /// Pinning a directory pins everything below it and what is created in
    /// it later; unpinning clears the whole subtree; a missing path fails.
    #[test]
    fn pin_is_recursive_and_inherited() {
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        ok(&ns, mkdir("/a/b", true));
        ok(&ns, create("/a/b/f", false));
        ok(&ns, create("/g", false));
        let pin = |p: &str, pinned| JournalEntry::SetPin { path: p.into(), pinned, time_ms: 2 };
        let ApplyResult::Attr(top) = ok(&ns, pin("/a", true)) else { panic!("no attr") };
        assert!(top.pinned && top.file_type == FileType::Directory);
        let pinned = |p: &str| ns.resolve(p).unwrap().attr.pinned;
        assert!(pinned("/a/b") && pinned("/a/b/f"));
        assert!(!pinned("/g") && !pinned("/"));
        ok(&ns, create("/a/b/new", false));
        ok(&ns, mkdir("/a/b/c/d", true));
        assert!(pinned("/a/b/new") && pinned("/a/b/c/d"));
        ok(&ns, create("/new", false));
        assert!(!pinned("/new"));
        ok(&ns, pin("/a/b", false));
        assert!(pinned("/a") && !pinned("/a/b") && !pinned("/a/b/f") && !pinned("/a/b/c/d"));
        assert_eq!(err(&ns, pin("/nope", true)), ErrorCode::NotFound);
    }

    /// A TTL set on a directory reaches everything below it and what is
    /// created in it later (survives an export/import); clearing it clears
    /// the subtree; a TTL of 0 and a missing path are refused.
    /// Creates under a lease use numbers the client reserved: only those,
    /// each once, and never one a master-numbered create takes.
    #[test]
    fn client_numbered_creates_use_reserved_numbers_once() {
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        let make = |p: &str, inode, kind| JournalEntry::CreateInode {
            path: p.into(),
            inode,
            kind,
            mode: 0o640,
            uid: 7,
            gid: 8,
            block_size: 10,
            time_ms: 5,
        };
        let ApplyResult::Reserved { first } = ok(&ns, JournalEntry::ReserveInodes { count: 3, time_ms: 1 }) else {
            panic!("no reservation")
        };
        assert_eq!(err(&ns, make("/x", first + 3, FileType::File)), ErrorCode::InvalidArgument, "not reserved");
        let ApplyResult::Attr(dir) = ok(&ns, make("/d", first, FileType::Directory)) else { panic!("no attr") };
        assert_eq!((dir.inode, dir.nlink, dir.mtime_ms), (first, 2, 5));
        let ApplyResult::Attr(f) = ok(&ns, make("/d/f", first + 1, FileType::File)) else { panic!("no attr") };
        assert_eq!((f.inode, f.uid, f.gid, f.mode, f.complete, f.block_size), (first + 1, 7, 8, 0o640, true, 10));
        assert_eq!(ns.resolve("/d/f").unwrap().attr, f);
        assert_eq!(err(&ns, make("/d/g", first + 1, FileType::File)), ErrorCode::InvalidArgument, "used");
        assert_eq!(err(&ns, make("/d/f", first + 2, FileType::File)), ErrorCode::AlreadyExists);
        assert_eq!(err(&ns, make("/d/s", first + 2, FileType::Symlink)), ErrorCode::InvalidArgument);
        let ApplyResult::Created { attr, .. } = ok(&ns, create("/d/m", false)) else { panic!("no attr") };
        assert_eq!(attr.inode, first + 3, "the master numbers past the reservation");
        // The parent's link count and times moved as for a mkdir.
        assert_eq!(ns.resolve("/").unwrap().attr.nlink, 3);
        assert_eq!(ns.lease_term().unwrap(), None);
        ok(&ns, JournalEntry::LeaseTerm { term: 4, time_ms: 1 });
        assert_eq!(ns.lease_term().unwrap(), Some(4));
    }

    #[test]
    fn ttl_is_recursive_inherited_and_cleared() {
        use strata_protocol::ufs::{FileTtl, TtlAction};
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        assert!(!ns.ttl_used().unwrap());
        ok(&ns, mkdir("/a/b", true));
        ok(&ns, create("/a/b/f", false));
        ok(&ns, create("/g", false));
        let t = FileTtl { ttl_ms: 2000, action: TtlAction::Delete };
        let set = |p: &str, ttl| JournalEntry::SetTtl { path: p.into(), ttl, time_ms: 2 };
        let ApplyResult::Attr(top) = ok(&ns, set("/a", Some(t))) else { panic!("no attr") };
        assert_eq!(top.ttl, Some(t));
        assert!(ns.ttl_used().unwrap());
        let ttl = |p: &str| ns.resolve(p).unwrap().attr.ttl;
        assert!(ttl("/a/b") == Some(t) && ttl("/a/b/f") == Some(t));
        assert!(ttl("/g").is_none() && ttl("/").is_none());
        ok(&ns, create("/a/b/new", false));
        ok(&ns, mkdir("/a/b/c/d", true));
        assert!(ttl("/a/b/new") == Some(t) && ttl("/a/b/c/d") == Some(t));
        let free = FileTtl { ttl_ms: 5000, action: TtlAction::Free };
        ok(&ns, set("/a/b/f", Some(free)));
        assert!(ttl("/a/b/f") == Some(free) && ttl("/a/b/new") == Some(t));
        let d2 = tempfile::tempdir().unwrap();
        let ns2 = ns_in(&d2);
        ns2.import(&ns.export().unwrap()).unwrap();
        assert!(ns2.ttl_used().unwrap() && ns2.resolve("/a/b/f").unwrap().attr.ttl == Some(free));
        ok(&ns, set("/a/b", None));
        assert!(ttl("/a") == Some(t) && ttl("/a/b").is_none() && ttl("/a/b/f").is_none() && ttl("/a/b/c/d").is_none());
        assert_eq!(
            err(&ns, set("/a", Some(FileTtl { ttl_ms: 0, action: TtlAction::Free }))),
            ErrorCode::InvalidArgument
        );
        assert_eq!(err(&ns, set("/nope", Some(t))), ErrorCode::NotFound);
    }

    #[test]
    fn ufs_intents_are_recorded_carried_by_snapshots_and_cleared_by_completion() {
        let dir = tempfile::tempdir().unwrap();
        let ns = ns_in(&dir);
        ok(&ns, mkdir("/m", false));
        one_block_file(&ns, "/m/a");
        one_block_file(&ns, "/m/b");
        let del = UfsOp::Delete { path: "/m/a".into(), recursive: false };
        let ren = UfsOp::Rename { src: "/m/b".into(), dst: "/m/c".into() };
        ok(&ns, JournalEntry::UfsIntent { id: 7, op: del.clone(), time_ms: 10 });
        ok(&ns, JournalEntry::UfsIntent { id: 3, op: ren.clone(), time_ms: 11 });
        let want =
            vec![UfsIntent { id: 3, op: ren.clone(), time_ms: 11 }, UfsIntent { id: 7, op: del.clone(), time_ms: 10 }];
        assert_eq!(ns.ufs_intents().unwrap(), want);
        // An intent changes nothing in the tree by itself.
        assert!(ns.resolve("/m/a").is_ok() && ns.resolve("/m/b").is_ok());

        // Carried by a snapshot.
        let dir2 = tempfile::tempdir().unwrap();
        let ns2 = ns_in(&dir2);
        ns2.import(&ns.export().unwrap()).unwrap();
        assert_eq!(ns2.ufs_intents().unwrap(), want);

        // The completion applies the change and forgets the intent in one entry.
        assert!(matches!(
            ok(&ns, JournalEntry::UfsDone { id: 7, op: Some(del.clone()), time_ms: 12 }),
            ApplyResult::Freed { .. }
        ));
        assert!(ns.resolve("/m/a").is_err());
        assert_eq!(ns.ufs_intents().unwrap(), want[..1].to_vec());
        // A rejected change (src gone) still forgets the intent.
        ok(&ns, JournalEntry::Delete { path: "/m/b".into(), recursive: false, time_ms: 13 });
        assert_eq!(err(&ns, JournalEntry::UfsDone { id: 3, op: Some(ren.clone()), time_ms: 14 }), ErrorCode::NotFound);
        assert_eq!(ns.ufs_intents().unwrap(), vec![]);
        assert!(ns.resolve("/m/c").is_err());

        // On the imported copy: a completion without a change, then the rename.
        ok(&ns2, JournalEntry::UfsDone { id: 7, op: None, time_ms: 12 });
        assert!(ns2.resolve("/m/a").is_ok(), "an abandoned intent changes nothing");
        ok(&ns2, JournalEntry::UfsDone { id: 3, op: Some(ren), time_ms: 14 });
        assert!(ns2.resolve("/m/b").is_err() && ns2.resolve("/m/c").is_ok());
        assert_eq!(ns2.ufs_intents().unwrap(), vec![]);
    }

    /// Cached edges follow every change (rename, delete, a failed op, a
    /// snapshot import), and a fill that raced a change is not kept.
    #[test]
    fn cached_edges_follow_every_change() {
        let gone =
            |ns: &Namespace, p: &str| matches!(ns.resolve(p), Err(NsError::Ns(e)) if e.code == ErrorCode::NotFound);
        let d = tempfile::tempdir().unwrap();
        let ns = ns_in(&d);
        ok(&ns, mkdir("/a", false));
        let before = ns.export().unwrap();
        let ApplyResult::Created { attr: f, .. } = ok(&ns, create("/a/f", false)) else { panic!() };
        assert_eq!(ns.resolve("/a/f").unwrap().attr.inode, f.inode);
        let rename = |src: &str, dst: &str| JournalEntry::Rename { src: src.into(), dst: dst.into(), time_ms: 2 };
        ok(&ns, rename("/a/f", "/a/g"));
        assert!(gone(&ns, "/a/f"), "/a/f");
        assert_eq!(ns.resolve("/a/g").unwrap().attr.inode, f.inode);
        // A rename that fails half way (the target's parent is a file) changes nothing.
        assert_eq!(err(&ns, rename("/a/g", "/a/g/x")), ErrorCode::NotADirectory);
        assert_eq!(ns.resolve("/a/g").unwrap().attr.inode, f.inode);
        ok(&ns, JournalEntry::Delete { path: "/a/g".into(), recursive: false, time_ms: 3 });
        assert!(gone(&ns, "/a/g"), "/a/g");

        // A reader that looked before a change does not cache what it read.
        ok(&ns, create("/a/h", false));
        let key = edge_key(ns.resolve("/a").unwrap().attr.inode, "h");
        ns.edges.clear();
        let generation = ns.edges.get(&key).unwrap_err();
        ok(&ns, JournalEntry::Delete { path: "/a/h".into(), recursive: false, time_ms: 4 });
        ns.edges.fill(generation, key.clone(), 12345);
        assert!(ns.edges.get(&key).is_err(), "a fill under an old generation is dropped");
        assert!(gone(&ns, "/a/h"), "/a/h");

        ok(&ns, mkdir("/b", false));
        assert!(ns.resolve("/b").is_ok());
        ns.import(&before).unwrap();
        assert!(gone(&ns, "/b"), "/b");
        assert!(ns.resolve("/a").is_ok());
    }
}
