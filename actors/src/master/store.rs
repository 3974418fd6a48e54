//! The master's RocksDB: one database, several column families.
//!
//! | column family | key                         | value                          |
//! |---------------|-----------------------------|--------------------------------|
//! | `raft_log`    | log index (u64 BE)          | bincode `Entry<TypeConfig>`    |
//! | `raft_meta`   | `vote`, `committed`, `purged` | bincode vote / log id        |
//! | `sm_meta`     | `applied`, `membership`, `next_inode`, `next_block`, `mount:<path>`, `ufs_intent:<id>` | bincode |
//! | `inodes`      | inode (u64 BE)              | bincode [`InodeRecord`]        |
//! | `edges`       | parent (u64 BE) ++ name     | child inode (u64 BE)           |
//! | `blocks`      | block (u64 BE)              | owning inode (u64 BE)          |
//! | `inline`      | inode (u64 BE)              | a small file's whole content   |
//! | `xattrs`      | inode (u64 BE) ++ name      | extended attribute value       |
//!
//! The Raft log store and the state machine are separate types over the same
//! `Arc<DB>` (the caller owns it). Log appends and votes are written with
//! `sync = true`; state-machine writes are not synced, because they are
//! replayed from the log after a crash, and the WAL is synced before a
//! snapshot lets the log be purged.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

/// Column family names.
pub mod cf {
    /// Raft log entries.
    pub const RAFT_LOG: &str = "raft_log";
    /// Raft vote, committed and purged log ids.
    pub const RAFT_META: &str = "raft_meta";
    /// State-machine metadata: applied log id, membership, id counters.
    pub const SM_META: &str = "sm_meta";
    /// Inode records.
    pub const INODES: &str = "inodes";
    /// Directory edges.
    pub const EDGES: &str = "edges";
    /// Block → owning inode.
    pub const BLOCKS: &str = "blocks";
    /// Content of small files kept inline (see `INLINE_MAX_BYTES`), apart
    /// from the inode records so stat and list never read it.
    pub const INLINE: &str = "inline";
    /// Extended attributes: inode (u64 BE) ++ name → value.
    pub const XATTRS: &str = "xattrs";
    /// Every column family, in open order.
    pub const ALL: [&str; 8] = [RAFT_LOG, RAFT_META, SM_META, INODES, EDGES, BLOCKS, INLINE, XATTRS];
    /// The column families that make up the state machine (snapshot content);
    /// a row's index here is part of the snapshot format: append only.
    pub const STATE: [&str; 6] = [SM_META, INODES, EDGES, BLOCKS, INLINE, XATTRS];
}

/// A bookkeeping row written with an entry: (column family, key, value).
pub type MetaRow = (&'static str, Vec<u8>, Vec<u8>);
/// A row of exported state: (index into [`cf::STATE`], key, value).
pub type StateRow = (u8, Vec<u8>, Vec<u8>);
/// One committed entry to apply: (log index, entry, bookkeeping rows).
pub type ApplyItem = (u64, strata_protocol::journal::JournalEntry, Vec<MetaRow>);

/// Opens (or creates) the master database at `dir`.
pub fn open_db(dir: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Reuse WAL files: appends then overwrite blocks already in the file, so
    // the per-commit fdatasync does not also journal a file-size change.
    opts.set_recycle_log_file_num(4);
    let cfs = cf::ALL.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?))
}

/// Returns a column family handle; the families are created at open, so a
/// missing one is a programming error.
pub fn handle<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name).unwrap_or_else(|| panic!("column family {name} missing"))
}
