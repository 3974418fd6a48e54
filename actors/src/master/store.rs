//! The master's RocksDB: two databases, the Raft log (`log/`) and the
//! state machine (`meta/`), each of several column families.
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
//! The Raft log store and the state machine are separate types, each over
//! its own database. Log appends and votes are written with `sync = true`
//! (through a recycled WAL). State-machine writes skip RocksDB's WAL ([`write_state`]):
//! the Raft log is their write-ahead log. A crash loses the state machine's
//! memtables, and the restart replays the log from the applied index that
//! reached disk. Flushes write the state column families atomically
//! (`atomic_flush`), so what is on disk is always the state after one
//! applied entry; [`persist_state`] flushes them before a snapshot lets the
//! log behind it be purged, after a snapshot is installed and at a clean stop.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, FlushOptions, Options, WriteBatch, WriteOptions, DB};

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
    /// The Raft log database's column families.
    pub const LOG: [&str; 2] = [RAFT_LOG, RAFT_META];
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

/// Opens (or creates) the master's state-machine database at `dir`: the
/// [`cf::STATE`] families, written without a WAL ([`write_state`]).
pub fn open_db(dir: &Path) -> Result<Arc<DB>, String> {
    let mut opts = Options::default();
    // The state families reach disk together, at one point of the applied log.
    opts.set_atomic_flush(true);
    open(dir, opts, &cf::STATE)
}

/// Opens (or creates) the master's Raft log database at `dir`: the
/// [`cf::LOG`] families, written through a synced WAL.
pub fn open_log_db(dir: &Path) -> Result<Arc<DB>, String> {
    let mut opts = Options::default();
    // Reuse WAL files: appends then overwrite blocks already in the file, so
    // the per-commit fdatasync does not also journal a file-size change.
    // (RocksDB refuses this beside writes without the WAL: one reason the
    // log has a database of its own.)
    opts.set_recycle_log_file_num(4);
    open(dir, opts, &cf::LOG)
}

fn open(dir: &Path, mut opts: Options, families: &[&str]) -> Result<Arc<DB>, String> {
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let shown = dir.display();
    if let Ok(present) = DB::list_cf(&opts, dir) {
        if let Some(other) = present.iter().find(|c| *c != "default" && !families.contains(&c.as_str())) {
            return Err(format!(
                "{shown} holds column family {other}, which does not belong there: a data directory of an \
                 older Strata (one database for the Raft log and the state) cannot be opened by this one"
            ));
        }
    }
    let cfs = families.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, dir, cfs).map_err(|e| format!("{shown}: {e}"))?))
}

/// Writes a state-machine change without RocksDB's WAL (see the module
/// doc). Every write to the [`cf::STATE`] families goes through here: one
/// through the WAL could survive a crash that the writes before it did not.
pub fn write_state(db: &DB, batch: WriteBatch) -> Result<(), rocksdb::Error> {
    let mut wo = WriteOptions::default();
    wo.disable_wal(true);
    db.write_opt(batch, &wo)
}

/// Flushes the state-machine column families to disk (atomically) and waits.
pub fn persist_state(db: &DB) -> Result<(), rocksdb::Error> {
    let mut fo = FlushOptions::default();
    fo.set_wait(true);
    let cfs: Vec<_> = cf::STATE.iter().map(|name| handle(db, name)).collect();
    db.flush_cfs_opt(&cfs, &fo)
}

/// Returns a column family handle; the families are created at open, so a
/// missing one is a programming error.
pub fn handle<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name).unwrap_or_else(|| panic!("column family {name} missing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log and the state are separate databases, and each refuses to
    /// open over the other's (or an older single database's) families.
    #[test]
    fn a_database_with_families_of_the_other_kind_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open_log_db(&dir.path().join("log")).unwrap());
        drop(open_db(&dir.path().join("meta")).unwrap());
        let e = open_db(&dir.path().join("log")).unwrap_err();
        assert!(e.contains("raft_log") && e.contains("older Strata"), "{e}");
        let e = open_log_db(&dir.path().join("meta")).unwrap_err();
        assert!(e.contains("sm_meta"), "{e}");
        // Reopening each as what it is works.
        drop(open_db(&dir.path().join("meta")).unwrap());
        drop(open_log_db(&dir.path().join("log")).unwrap());
    }
}
