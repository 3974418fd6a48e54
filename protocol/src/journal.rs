//! Journal entries: the only way the namespace changes. The leader stamps
//! times and ids the client cannot choose, proposes the entry through Raft,
//! and every master applies it deterministically to its inode store.

use rkyv::{Archive, Deserialize, Serialize};

use crate::ids::{BlockId, InodeId};
use crate::messages::{Attr, FileType, SetAttrs};
use crate::ufs::{FileTtl, Fingerprint, MountInfo, UfsEntry};
use crate::ErrorInfo;

/// One namespace mutation, as stored in the replicated journal.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum JournalEntry {
    /// Create a directory (and its missing parents when `recursive`).
    Mkdir { path: String, recursive: bool, mode: u32, uid: u32, gid: u32, time_ms: i64 },
    /// Create an empty, incomplete file; with `overwrite` an existing file is
    /// replaced (its blocks are freed).
    /// With `complete` the file is created empty and sealed in one entry.
    CreateFile {
        path: String,
        mode: u32,
        uid: u32,
        gid: u32,
        block_size: u64,
        overwrite: bool,
        complete: bool,
        time_ms: i64,
    },
    /// Allocate the next block of an incomplete file.
    AddBlock { inode: InodeId, time_ms: i64 },
    /// Seal a file at `length` bytes; every block but the last is full.
    CompleteFile { inode: InodeId, length: u64, time_ms: i64 },
    /// Atomically move `src` to `dst`, replacing a file (or empty directory) at `dst`.
    Rename { src: String, dst: String, time_ms: i64 },
    /// Remove a file, symlink or (empty, or with `recursive` any) directory.
    Delete { path: String, recursive: bool, time_ms: i64 },
    /// Change attributes; `None` leaves one unchanged.
    SetAttr { path: String, attrs: SetAttrs, time_ms: i64 },
    /// Create a symbolic link at `link` pointing to `target` (not resolved).
    Symlink { target: String, link: String, uid: u32, gid: u32, time_ms: i64 },
    /// Create a special file (FIFO, socket, device) at `path`.
    Mknod { path: String, kind: FileType, mode: u32, rdev: u32, uid: u32, gid: u32, time_ms: i64 },
    /// Add the name `link` for the inode at `target` (not a directory).
    Link { target: String, link: String, time_ms: i64 },
    /// Create an incomplete file with no name: new content for an existing
    /// file is written into it, then moved over with `SwapContent`.
    CreateDetached { mode: u32, uid: u32, gid: u32, block_size: u64, time_ms: i64 },
    /// Atomically give file `to` the blocks and length of the complete,
    /// detached file `from` (which disappears); `to` keeps its inode and
    /// name, its old blocks are freed.
    /// With `length`, an incomplete `from` is sealed at that length in the same entry.
    SwapContent { from: InodeId, to: InodeId, length: Option<u64>, time_ms: i64 },
    /// Make `data` the whole content of file `inode` (kept inline by the
    /// masters; its blocks are freed), then apply `attrs`; seals an
    /// incomplete file.
    WriteInline {
        inode: InodeId,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        attrs: SetAttrs,
        time_ms: i64,
    },
    /// Set (`value` Some) or remove extended attribute `name` of `path`;
    /// `flags` as in setxattr(2): 1 create only, 2 replace only.
    SetXattr {
        path: String,
        name: String,
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        flags: u32,
        time_ms: i64,
    },
    /// Mount a UFS at `info.path`: the directory is created if missing and
    /// must be empty; no mount may contain another.
    Mount { info: MountInfo, time_ms: i64 },
    /// Remove the mount at `path` and its subtree from the namespace (cached
    /// blocks are freed; the UFS is untouched).
    Unmount { path: String, time_ms: i64 },
    /// Reconcile the mounted directory `dir` with a listing of its UFS
    /// directory: new UFS entries appear, persisted entries gone from the UFS
    /// disappear, files whose fingerprint changed lose their cached blocks;
    /// entries not yet persisted are kept.
    UfsSync { dir: String, entries: Vec<UfsEntry>, time_ms: i64 },
    /// File `inode`, still made of exactly `blocks`, is in the UFS as
    /// `fingerprint` (refused if its content changed meanwhile).
    Persisted { inode: InodeId, blocks: Vec<u64>, fingerprint: Fingerprint, time_ms: i64 },
    /// Set the pinned flag of `path` and of every inode below it.
    SetPin { path: String, pinned: bool, time_ms: i64 },
    /// Remove the file, symlink or special file `path` (never a directory):
    /// unlink(2) in one entry, answering with the removed inode's attributes.
    Unlink { path: String, time_ms: i64 },
    /// Set (`Some`) or clear (`None`) the TTL of `path` and of every inode below it.
    SetTtl { path: String, ttl: Option<FileTtl>, time_ms: i64 },
    /// The leader is about to do `op` in the UFS of the mount its path is
    /// under: recorded (in `sm_meta` under `ufs_intent:<id>`) until a
    /// `UfsDone { id }`, so a leader that crashes between the UFS operation
    /// and the namespace change finishes both on recovery. `id` is chosen by
    /// the leader (random).
    UfsIntent { id: u64, op: UfsOp, time_ms: i64 },
    /// The UFS operation of intent `id` is done (or abandoned): apply `op` to
    /// the namespace (as `Delete`, `Unlink` or `Rename`), if given, and forget
    /// the intent, in one entry. The intent is forgotten even when `op` is
    /// rejected (the answer is then that error).
    UfsDone { id: u64, op: Option<UfsOp>, time_ms: i64 },
    /// Queued unlinks as written by earlier versions (now `ClientBatch`);
    /// still applied when replayed.
    Batch { ops: Vec<BatchOp>, time_ms: i64 },
    /// A client's queued (write-behind) changes, in order, in one entry: one
    /// log write for many changes. Each op is applied as its own entry and
    /// has its own outcome; a rejected op changes nothing and does not stop
    /// the ones after it. `(seq, part)` numbers the client's batches (a
    /// request may be split in parts around ops run on their own): a batch
    /// the state machine has seen from `client` is not applied again, so a
    /// client may resend one whose fate it does not know.
    ClientBatch { client: u64, seq: u64, part: u32, ops: Vec<BatchOp>, time_ms: i64 },
    /// Reserve `count` inode numbers for a client to give the inodes it
    /// creates under its directory leases (`CreateInode`); answered with
    /// `Reserved` and the first.
    ReserveInodes { count: u64, time_ms: i64 },
    /// Create a file (`kind` File, empty and sealed) or a directory at
    /// `path` as inode `inode`, which must be reserved and unused: a
    /// client's create under a lease, numbered and timed by the client,
    /// which already told its caller the result.
    CreateInode {
        path: String,
        inode: InodeId,
        kind: FileType,
        mode: u32,
        uid: u32,
        gid: u32,
        block_size: u64,
        time_ms: i64,
    },
    /// The leader of `term` granted a directory lease (journaled once per
    /// term, before the first grant): a later leader that finds one waits
    /// out the lease time before serving paths; one that finds none has
    /// nobody's lease to wait for.
    LeaseTerm { term: u64, time_ms: i64 },
    /// Reserve `count` block ids for a client to write blocks under before
    /// it names them in `SetContent`; answered with `Reserved` and the first.
    ReserveBlocks { count: u64, time_ms: i64 },
    /// Make `blocks` (reserved, owned by no inode) the whole content of
    /// file `inode`: `length` bytes in blocks of `block_size`, sealed, with
    /// `attrs` applied after; answered with `Replaced` (the blocks it had).
    SetContent { inode: InodeId, blocks: Vec<BlockId>, length: u64, block_size: u64, attrs: SetAttrs, time_ms: i64 },
    /// One part of a UFS directory listing (`UfsSync` in bounded parts,
    /// so no journal entry outgrows a replication message): reconciles the
    /// names after `after` (from the first: None) up to the last of
    /// `entries` (to the end when `last`) with `entries`, sorted by name.
    /// The last part marks the directory synced.
    UfsSyncPart { dir: String, entries: Vec<UfsEntry>, after: Option<String>, last: bool, time_ms: i64 },
    /// Forget the batch numbers of clients whose last batch was applied
    /// before `before_ms` (they stopped; a resend of theirs is long over).
    ForgetClients { before_ms: i64, time_ms: i64 },
    /// Set the replica counts of `path` and, with `recursive`, of every
    /// inode below it.
    SetReplicas { path: String, replicas: crate::messages::Replicas, recursive: bool, time_ms: i64 },
    /// Start (`on`) or stop decommissioning worker `worker_id`: no new
    /// blocks go to it, and every block it holds is copied elsewhere.
    Decommission { worker_id: crate::WorkerId, on: bool, time_ms: i64 },
}

/// One change in a [`JournalEntry::ClientBatch`]. Ops that carry a time
/// were stamped by the client (the ctime it already answered with); the
/// others take the batch's. `Create`, `WriteInline` and `Delete` are
/// synchronous changes that carry the client's queued ones (last in their
/// batch).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum BatchOp {
    /// As `JournalEntry::Unlink`.
    Unlink { path: String },
    /// As `JournalEntry::SetAttr`.
    SetAttr { path: String, attrs: SetAttrs, time_ms: i64 },
    /// As `JournalEntry::Rename`.
    Rename { src: String, dst: String, time_ms: i64 },
    /// As `JournalEntry::CreateFile`.
    Create { path: String, mode: u32, uid: u32, gid: u32, block_size: u64, overwrite: bool, complete: bool },
    /// As `JournalEntry::WriteInline`.
    WriteInline {
        inode: InodeId,
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        attrs: SetAttrs,
    },
    /// As `JournalEntry::Delete`, not recursive (rmdir of `rm -rf`, after
    /// the unlinks queued under it).
    Delete { path: String },
    /// As `JournalEntry::CreateInode` (a create under a lease).
    CreateInode {
        path: String,
        inode: InodeId,
        kind: FileType,
        mode: u32,
        uid: u32,
        gid: u32,
        block_size: u64,
        time_ms: i64,
    },
    /// As `JournalEntry::WriteInline`, timed by the client (a publish
    /// under a lease, answered before it is sent).
    WriteInlineAt {
        inode: InodeId,
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        attrs: SetAttrs,
        time_ms: i64,
    },
    /// As `JournalEntry::SetContent`, timed by the client (a publish under
    /// a lease of blocks it wrote, answered before it is sent).
    SetContentAt {
        inode: InodeId,
        path: String,
        blocks: Vec<BlockId>,
        length: u64,
        block_size: u64,
        attrs: SetAttrs,
        time_ms: i64,
    },
}

impl BatchOp {
    /// The paths the op changes.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        let (a, b) = match self {
            BatchOp::Unlink { path }
            | BatchOp::SetAttr { path, .. }
            | BatchOp::Create { path, .. }
            | BatchOp::WriteInline { path, .. }
            | BatchOp::CreateInode { path, .. }
            | BatchOp::WriteInlineAt { path, .. }
            | BatchOp::SetContentAt { path, .. }
            | BatchOp::Delete { path } => (path, None),
            BatchOp::Rename { src, dst, .. } => (src, Some(dst.as_str())),
        };
        std::iter::once(a.as_str()).chain(b)
    }

    /// The op as a journal entry of its own, in a batch made at `batch_ms`.
    pub fn entry(&self, batch_ms: i64) -> JournalEntry {
        match self.clone() {
            BatchOp::Unlink { path } => JournalEntry::Unlink { path, time_ms: batch_ms },
            BatchOp::SetAttr { path, attrs, time_ms } => JournalEntry::SetAttr { path, attrs, time_ms },
            BatchOp::Rename { src, dst, time_ms } => JournalEntry::Rename { src, dst, time_ms },
            BatchOp::Create { path, mode, uid, gid, block_size, overwrite, complete } => {
                JournalEntry::CreateFile { path, mode, uid, gid, block_size, overwrite, complete, time_ms: batch_ms }
            }
            BatchOp::WriteInline { inode, data, attrs, .. } => {
                JournalEntry::WriteInline { inode, data, attrs, time_ms: batch_ms }
            }
            BatchOp::Delete { path } => JournalEntry::Delete { path, recursive: false, time_ms: batch_ms },
            BatchOp::CreateInode { path, inode, kind, mode, uid, gid, block_size, time_ms } => {
                JournalEntry::CreateInode { path, inode, kind, mode, uid, gid, block_size, time_ms }
            }
            BatchOp::WriteInlineAt { inode, data, attrs, time_ms, .. } => {
                JournalEntry::WriteInline { inode, data, attrs, time_ms }
            }
            BatchOp::SetContentAt { inode, blocks, length, block_size, attrs, time_ms, .. } => {
                JournalEntry::SetContent { inode, blocks, length, block_size, attrs, time_ms }
            }
        }
    }

    /// Bytes the op adds to a request (about): batches are cut to stay
    /// well inside the master's frame limit.
    pub fn weight(&self) -> usize {
        let data = match self {
            BatchOp::WriteInline { data, .. } | BatchOp::WriteInlineAt { data, .. } => data.len(),
            BatchOp::SetContentAt { blocks, .. } => 8 * blocks.len(),
            _ => 0,
        };
        64 + data + self.paths().map(str::len).sum::<usize>()
    }

    /// The op as a request of its own (the master runs an op that needs
    /// more than a journal entry, one under a UFS mount, this way); none
    /// for a client-numbered create.
    pub fn into_request(self) -> Option<crate::messages::MasterRequest> {
        use crate::messages::MasterRequest as R;
        Some(match self {
            BatchOp::Unlink { path } => R::Unlink { path },
            BatchOp::SetAttr { path, attrs, .. } => R::SetAttr { path, attrs },
            BatchOp::Rename { src, dst, .. } => R::Rename { src, dst },
            BatchOp::Create { path, mode, uid, gid, block_size, overwrite, complete } => {
                R::Create { path, block_size, mode, uid, gid, overwrite, complete }
            }
            BatchOp::WriteInline { inode, path, data, attrs } => R::WriteInline { inode, path, data, attrs },
            BatchOp::Delete { path } => R::Delete { path, recursive: false },
            BatchOp::WriteInlineAt { inode, path, data, attrs, .. } => R::WriteInline { inode, path, data, attrs },
            BatchOp::SetContentAt { inode, path, blocks, length, block_size, attrs, .. } => {
                R::SetContent { inode, path, blocks, length, block_size, attrs }
            }
            // A client-numbered create has no request of its own.
            BatchOp::CreateInode { .. } => return None,
        })
    }

    /// A synchronous request that can carry queued ops, as an op: a
    /// create, an inline write, a delete that is not recursive.
    pub fn carrier(req: &crate::messages::MasterRequest) -> Option<BatchOp> {
        use crate::messages::MasterRequest as R;
        Some(match req.clone() {
            R::Create { path, block_size, mode, uid, gid, overwrite, complete } => {
                BatchOp::Create { path, mode, uid, gid, block_size, overwrite, complete }
            }
            R::WriteInline { inode, path, data, attrs } => BatchOp::WriteInline { inode, path, data, attrs },
            R::Delete { path, recursive: false } => BatchOp::Delete { path },
            _ => return None,
        })
    }
}

/// What one [`BatchOp`] did.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum BatchOutcome {
    /// Applied: the inode's attributes (for an unlink, as it was removed;
    /// none for a rename) and the blocks it freed.
    Done { attr: Option<Attr>, freed: Vec<u64> },
    /// The batch was applied before (a resend): nothing changed now.
    AlreadyApplied,
    /// Rejected; nothing changed.
    Failed(ErrorInfo),
}

/// A namespace operation that reaches a UFS (see `JournalEntry::UfsIntent`).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum UfsOp {
    /// Delete `path` (a directory only with `recursive`).
    Delete { path: String, recursive: bool },
    /// Unlink `path` (never a directory).
    Unlink { path: String },
    /// Rename `src` to `dst`, replacing a file at `dst`.
    Rename { src: String, dst: String },
}

impl UfsOp {
    /// The plain journal entry this operation is in the namespace.
    pub fn entry(&self, time_ms: i64) -> JournalEntry {
        match self {
            UfsOp::Delete { path, recursive } => {
                JournalEntry::Delete { path: path.clone(), recursive: *recursive, time_ms }
            }
            UfsOp::Unlink { path } => JournalEntry::Unlink { path: path.clone(), time_ms },
            UfsOp::Rename { src, dst } => JournalEntry::Rename { src: src.clone(), dst: dst.clone(), time_ms },
        }
    }
}

/// What applying an entry produced. Errors are results too: an entry that
/// fails validation at apply time changes nothing on any master.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ApplyResult {
    /// The entry created or changed this inode.
    Attr(Attr),
    /// `CreateFile` made this inode, replacing a file whose blocks are freed.
    Created { attr: Attr, freed: Vec<u64> },
    /// The entry replaced this file's content; its old blocks are freed.
    Replaced { attr: Attr, freed: Vec<u64> },
    /// `AddBlock` allocated this block, of a file with these replica
    /// counts and block size.
    Block { block_id: u64, replicas: crate::messages::Replicas, block_size: u64 },
    /// Nothing to return.
    Done,
    /// Blocks no file references any more; workers may drop them.
    Freed { blocks: Vec<u64> },
    /// The entry was rejected; the namespace is unchanged.
    Error(ErrorInfo),
    /// Each op of a `Batch`, in order.
    Batch(Vec<BatchOutcome>),
    /// `ReserveInodes` reserved inode numbers from this one.
    Reserved { first: InodeId },
}
