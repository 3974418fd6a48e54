//! Messages on the client↔master RPC port and the client↔worker data port,
//! and the master↔worker messages carried over the mesh.

use rkyv::{Archive, Deserialize, Serialize};

use crate::error::ErrorInfo;
use crate::ids::{BlockId, InodeId, RequestId, WorkerId};
use crate::ufs::{Fingerprint, MountInfo, UfsSource, UfsSpec};

/// The kind of an inode.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum FileType {
    /// A regular file made of blocks.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A named pipe (FIFO).
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
}

/// Inode attributes as clients see them.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Attr {
    /// Inode number.
    pub inode: InodeId,
    /// Kind of inode.
    pub file_type: FileType,
    /// Permission bits (no file-type bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Length in bytes (files), entry count (directories), target length (symlinks).
    pub size: u64,
    /// Modification time, ms since the epoch.
    pub mtime_ms: i64,
    /// Status change time, ms since the epoch.
    pub ctime_ms: i64,
    /// Link count.
    pub nlink: u32,
    /// Block size of a file (0 for other kinds).
    pub block_size: u64,
    /// Whether a file has been completed (sealed); directories are always complete.
    pub complete: bool,
    /// Target of a symlink.
    pub symlink_target: Option<String>,
    /// Access time, ms since the epoch (set explicitly; reads do not update it).
    pub atime_ms: i64,
    /// Device number of a device file.
    pub rdev: u32,
    /// Pinned (`strata pin`): a file's cached blocks are never evicted from
    /// a worker's tiers; a directory passes it on to what is created in it.
    pub pinned: bool,
    /// TTL set on this inode (`strata ttl`), overriding its mount's; a
    /// directory passes it on to what is created in it.
    pub ttl: Option<crate::ufs::FileTtl>,
    /// Copies of a file's blocks the cluster keeps (`strata fs setrep`); a
    /// directory passes it on to what is created in it.
    pub replicas: Replicas,
}

/// How many copies of a file's blocks the cluster keeps on workers: at
/// least `min` (repaired when a worker is lost), at most `max` (extra
/// copies are trimmed). 0 means the default: `min` is the cluster's
/// (`master.replicas`) for data that exists nowhere else, and none for a
/// file persisted to its UFS; `max` is `min` for data that exists nowhere
/// else and unbounded for persisted data (cached copies evict by use).
#[derive(
    Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq,
)]
#[rkyv(derive(Debug))]
pub struct Replicas {
    /// Copies kept at least (0: the default).
    pub min: u8,
    /// Copies kept at most (0: the default).
    pub max: u8,
}

/// How many copies a client writes of a new block: `want`, and the write
/// succeeds only with at least `required` (less than `want` when the
/// cluster accepts degraded writes: the master repairs the rest).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Copies {
    /// Copies to write.
    pub want: u32,
    /// Copies without which the write fails.
    pub required: u32,
}

/// The most copies a file may ask for.
pub const MAX_REPLICAS: u8 = 16;

impl Replicas {
    /// The counts that apply to a block of a file with these settings,
    /// `persisted` or not, where the cluster's default minimum is
    /// `default_min`: (min, max), max `u8::MAX` for unbounded.
    pub fn effective(self, persisted: bool, default_min: u8) -> (u8, u8) {
        let min = match (self.min, persisted) {
            (0, true) => 0,
            (0, false) => default_min.max(1),
            (m, _) => m,
        };
        let max = match (self.max, persisted) {
            (0, true) => u8::MAX,
            (0, false) => min.max(1),
            (m, _) => m.max(min),
        };
        (min, max)
    }
}

/// Attribute changes; `None` leaves one unchanged.
#[derive(
    Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, Default, PartialEq, Eq,
)]
#[rkyv(derive(Debug))]
pub struct SetAttrs {
    /// Permission bits.
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Access time, ms since the epoch.
    pub atime_ms: Option<i64>,
    /// Modification time, ms since the epoch.
    pub mtime_ms: Option<i64>,
}

impl Attr {
    /// A new inode's attributes, as the master makes them (a file empty
    /// and incomplete, a directory with two links).
    pub fn new(inode: InodeId, file_type: FileType, mode: u32, uid: u32, gid: u32, time_ms: i64) -> Attr {
        Attr {
            inode,
            file_type,
            mode: mode & 0o7777,
            uid,
            gid,
            size: 0,
            mtime_ms: time_ms,
            ctime_ms: time_ms,
            nlink: if file_type == FileType::Directory { 2 } else { 1 },
            block_size: 0,
            complete: file_type != FileType::File,
            symlink_target: None,
            atime_ms: time_ms,
            rdev: 0,
            pinned: false,
            ttl: None,
            replicas: Replicas::default(),
        }
    }

    /// A client-numbered create's inode in directory `parent` (see
    /// `JournalEntry::CreateInode`): pinned, TTL and replicas as the parent; a file
    /// gets `block_size` and is sealed empty.
    pub fn created_in(mut self, parent: &Attr, block_size: u64) -> Attr {
        if self.file_type == FileType::File {
            self.block_size = block_size;
            self.complete = true;
        }
        self.inherit(parent);
        self
    }

    /// Takes what a directory passes on to what is created in it: pin,
    /// TTL and replica counts.
    pub fn inherit(&mut self, parent: &Attr) {
        self.pinned = parent.pinned;
        self.ttl = parent.ttl;
        self.replicas = parent.replicas;
    }

    /// What an inline write of `len` bytes with `attrs` after it, at
    /// `time_ms`, makes of a file's attributes (master and client agree).
    pub fn write_inline(&mut self, len: u64, attrs: &SetAttrs, time_ms: i64) {
        self.size = len;
        self.complete = true;
        self.mtime_ms = time_ms;
        attrs.apply(self, time_ms);
    }
}

impl SetAttrs {
    /// Applies the changes to `a`, made at `time_ms` (the new ctime): what
    /// the master does, and what a client answers with for a queued change.
    pub fn apply(&self, a: &mut Attr, time_ms: i64) {
        if let Some(m) = self.mode {
            a.mode = m & 0o7777;
        }
        a.uid = self.uid.unwrap_or(a.uid);
        a.gid = self.gid.unwrap_or(a.gid);
        a.atime_ms = self.atime_ms.unwrap_or(a.atime_ms);
        a.mtime_ms = self.mtime_ms.unwrap_or(a.mtime_ms);
        a.ctime_ms = time_ms;
    }
}

/// Where a worker serves block bytes.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct WorkerAddr {
    /// The worker.
    pub worker_id: WorkerId,
    /// Host name or IP of its data server.
    pub host: String,
    /// TCP port of its data server.
    pub data_port: u16,
}

/// One block of a file and where it is cached.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BlockLocation {
    /// The block.
    pub block_id: BlockId,
    /// Offset of the block in its file.
    pub offset: u64,
    /// Length of the block (the last block of a file may be short).
    pub length: u64,
    /// Workers holding a copy, best first; for a block only in the UFS
    /// (`from_ufs`), the workers to ask to fetch it.
    pub workers: Vec<WorkerAddr>,
    /// No worker has the block: read it through a worker from the UFS.
    pub from_ufs: bool,
}

/// A directory entry.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DirEntry {
    /// Name within the directory.
    pub name: String,
    /// The entry's attributes.
    pub attr: Attr,
}

/// A file's attributes and block locations.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FileBlocks {
    /// The file's attributes.
    pub attr: Attr,
    /// Its blocks in order.
    pub blocks: Vec<BlockLocation>,
    /// Where uncached blocks come from, for a persisted file under a mount.
    pub ufs: Option<UfsSource>,
    /// The whole content of a small file the master keeps inline (then
    /// `blocks` is empty).
    pub inline: Option<Vec<u8>>,
}

/// Usage of one storage tier of one worker.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TierUsage {
    /// Tier name: `MEM`, `SSD` or `HDD`.
    pub tier: String,
    /// Configured capacity.
    pub capacity_bytes: u64,
    /// Bytes used by committed blocks.
    pub used_bytes: u64,
    /// Committed blocks on the tier.
    pub blocks: u64,
}

/// A worker as the master sees it.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct WorkerReport {
    /// Address of the worker's data server.
    pub addr: WorkerAddr,
    /// Whether it heartbeats within the timeout.
    pub live: bool,
    /// Milliseconds since its last heartbeat.
    pub last_heartbeat_ms_ago: u64,
    /// Its tiers.
    pub tiers: Vec<TierUsage>,
    /// Blocks the master knows it holds.
    pub blocks: u64,
    /// `live`, `lost`, `decommissioning` or `decommissioned` (every block
    /// it holds has its copies elsewhere: it may be stopped).
    pub state: String,
    /// While decommissioning: its blocks that still lack copies elsewhere.
    pub blocks_left: u64,
}

/// A master as shown by `strata report`.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MasterStatus {
    /// Raft node id.
    pub id: u64,
    /// Client RPC address.
    pub addr: String,
    /// `leader`, `follower`, `candidate`, `learner`.
    pub role: String,
    /// Current Raft term.
    pub term: u64,
    /// Last log index.
    pub last_log_index: u64,
    /// Last applied index.
    pub applied_index: u64,
    /// Known leader id.
    pub leader: Option<u64>,
    /// A voter (else a learner still catching up).
    pub voter: bool,
}

/// The cluster as seen by the leader.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ClusterReport {
    /// The masters.
    pub masters: Vec<MasterStatus>,
    /// The workers, live and lost.
    pub workers: Vec<WorkerReport>,
    /// Inodes in the namespace.
    pub inodes: u64,
    /// Blocks with fewer live copies than their files ask for, as the
    /// leader's last replication pass found them.
    pub under_replicated: u64,
    /// Blocks with more live copies than their files allow.
    pub over_replicated: u64,
    /// Blocks of data that exists nowhere else with no live copy.
    pub missing: u64,
}

/// A metadata request from a client.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum MasterRequest {
    /// Create a directory.
    Mkdir { path: String, recursive: bool, mode: u32, uid: u32, gid: u32 },
    /// Create a file for writing.
    Create { path: String, block_size: u64, mode: u32, uid: u32, gid: u32, overwrite: bool, complete: bool },
    /// Allocate the next block of a file being written; the reply names the workers to write it to.
    AddBlock { inode: InodeId, client_host: String, path: String },
    /// Seal a file; `path` names it, so a file under a mount is persisted
    /// as its write type says.
    Complete { inode: InodeId, length: u64, path: String },
    /// Make `data` (at most [`crate::INLINE_MAX_BYTES`]) the whole content
    /// of file `inode`, named `path`, kept by the master, and apply `attrs`
    /// after it, in one journal entry; an incomplete file is sealed. Refused
    /// with `InlineRefused` under a UFS mount.
    WriteInline { inode: InodeId, path: String, data: Vec<u8>, attrs: SetAttrs },
    /// Rename.
    Rename { src: String, dst: String },
    /// Delete.
    Delete { path: String, recursive: bool },
    /// Change attributes.
    SetAttr { path: String, attrs: SetAttrs },
    /// Create a symlink.
    Symlink { target: String, link: String, uid: u32, gid: u32 },
    /// Create a special file (FIFO, socket, device).
    Mknod { path: String, kind: FileType, mode: u32, rdev: u32, uid: u32, gid: u32 },
    /// Create a hard link `link` to the file at `target`.
    Link { target: String, link: String },
    /// Create an unnamed file to stage new content for an existing one.
    CreateDetached { block_size: u64, mode: u32, uid: u32, gid: u32 },
    /// Replace file `to`'s content with detached file `from`'s; `path` names `to`.
    SwapContent { from: InodeId, to: InodeId, length: Option<u64>, path: String },
    /// Attributes of a path (symlinks not followed).
    Stat { path: String },
    /// Directory listing (or the entry itself for a file), whole: a
    /// directory too large for one answer is refused `TooLarge` (use
    /// `ListPage`).
    List { path: String },
    /// Up to `limit` entries of a directory (the master caps it at
    /// [`LIST_PAGE_MAX`]), by name, after the name `after` (None: from the
    /// first); answered with `Page`. A file answers itself.
    ListPage { path: String, after: Option<String>, limit: u32 },
    /// A file's attributes and block locations.
    GetBlocks { path: String },
    /// Cluster report.
    Report,
    /// Mount a UFS.
    Mount { info: MountInfo },
    /// Remove a mount from the namespace.
    Unmount { path: String },
    /// The mount table (secrets redacted).
    Mounts,
    /// Set (`value` Some) or remove (None) extended attribute `name` of
    /// `path`; `flags`: 1 = must not exist, 2 = must exist (setxattr(2)).
    SetXattr { path: String, name: String, value: Option<Vec<u8>>, flags: u32 },
    /// The extended attributes of `path`, by name.
    Xattrs { path: String },
    /// Persist files under `path` to their UFS now.
    Persist { path: String },
    /// Drop cached copies of persisted files under `path`.
    Free { path: String },
    /// Pin (or unpin) `path` and everything below it.
    SetPin { path: String, pinned: bool },
    /// Remove a non-directory (unlink(2)); answers the removed inode's
    /// attributes (`nlink` as it was) so the caller needs no stat first.
    Unlink { path: String },
    /// Set (`Some`) or clear (`None`) the TTL of `path` and everything below it.
    SetTtl { path: String, ttl: Option<crate::ufs::FileTtl> },
    /// Changes queued by a client, applied in order, runs of them in one
    /// journal entry; answered with `Batch`, one outcome per op. An unlink
    /// or rename under a UFS mount runs on its own (its objects go first).
    /// `client` (random per client) and `seq` (1, 2, … per batch) let the
    /// master recognise a resent batch (see `JournalEntry::ClientBatch`).
    Batch { client: u64, seq: u64, ops: Vec<crate::journal::BatchOp> },
    /// Add master `id` to the Raft group (learner until caught up, then
    /// voter). `addr` is its client address, `mesh` its mesh address.
    AddMaster { id: u64, addr: String, mesh: String },
    /// Remove master `id` from the Raft group; it stops serving.
    RemoveMaster { id: u64 },
    /// The journal as the master that receives this sees it (answered by
    /// any master, never redirected); with `digest`, also a digest of its
    /// state machine.
    JournalInfo { digest: bool },
    /// The receiving master takes a journal snapshot now (and purges the
    /// log behind it); answered with its journal info afterwards.
    TakeSnapshot,
    /// Lease the directory `path` and everything below it to the calling
    /// client (the envelope's `client`): until it is released, recalled
    /// or lapses, no other client reads or changes anything there, so the
    /// holder may answer lookups there itself and queue its changes (see
    /// `docs/architecture.md`, *Directory leases*). Answered with `Leased`
    /// and the directory's entries, or an error (not a directory, under a
    /// UFS mount, no client id).
    Lease { path: String },
    /// Keeps the calling client's session (its leases and locks) alive:
    /// each arrival renews it for the lease time. Held by the master up
    /// to half a second; answered with `Recall` (`dirs` empty when
    /// nothing is recalled; `/` when the master does not know the
    /// client's session: a new leader, or it lapsed — the client holds no
    /// lease). `locks`: how many lock ranges the client holds; if the
    /// master has fewer for it (a new leader, a lapsed session, a lost
    /// reclaim), `reclaim` tells it to send them again.
    KeepAlive { locks: u64 },
    /// The calling client gives up its leases on these directories (after
    /// sending every change it made under them).
    Release { paths: Vec<String> },
    /// Reserves `count` inode numbers for the calling client to give the
    /// inodes it creates under its leases; answered with `Inodes`.
    ReserveInodes { count: u32 },
    /// Reserves `count` block ids for the calling client to write blocks
    /// under before any inode has them (`SetContent`); answered with
    /// `BlockIds` and the workers to write to from `client_host`.
    ReserveBlocks { count: u32, client_host: String },
    /// Makes blocks the client wrote under reserved ids the whole content
    /// of file `inode` (named `path`), `length` bytes in blocks of
    /// `block_size`, with `attrs` after it: one journal entry for a file
    /// the mount staged (refused under a UFS mount).
    SetContent {
        inode: InodeId,
        path: String,
        blocks: Vec<crate::BlockId>,
        length: u64,
        block_size: u64,
        attrs: SetAttrs,
    },
    /// The calling client's lock owner `owner` now holds `kind` on bytes
    /// `start..=end` of `inode`, or nothing there (`kind` None: an
    /// unlock). Answered `Done`, or `WouldBlock` while another owner holds
    /// a conflicting lock: at once, or, with `wait`, after the master
    /// waited a while (a quarter of a second) for it to go; the client asks
    /// again. A request that would wait is answered `Deadlock` when the
    /// holder in its way waits, through a chain of owners, for a lock the
    /// requester holds. `reclaim`: a lock the client held from an earlier leader,
    /// granted while a new leader's grace keeps others' new locks waiting.
    /// The client's session (its keep-alives) keeps its locks: they go
    /// when it lapses.
    Lock {
        inode: InodeId,
        owner: u64,
        start: u64,
        end: u64,
        kind: Option<crate::locks::LockKind>,
        pid: u32,
        wait: bool,
        reclaim: bool,
    },
    /// A lock that keeps `owner` from taking `kind` on `start..=end` of
    /// `inode` (`F_GETLK`): answered `Conflict`.
    TestLock { inode: InodeId, owner: u64, start: u64, end: u64, kind: crate::locks::LockKind },
    /// Sets the replica counts of `path` (a directory passes them on to
    /// what is created in it) and, with `recursive`, of everything below
    /// it. Answered with the path's `Attr`.
    SetReplicas { path: String, replicas: Replicas, recursive: bool },
    /// A file's blocks, each with its live copies and whether it has as
    /// many as its file asks for; answered `Replication`.
    Replication { path: String },
    /// Start (`on`) or stop decommissioning a worker (journaled):
    /// answered `Done`; `strata report` shows its progress.
    Decommission { worker_id: WorkerId, on: bool },
}

impl MasterRequest {
    /// The paths the request reads or changes.
    pub fn paths(&self) -> Vec<&str> {
        use MasterRequest as R;
        match self {
            R::Mkdir { path, .. }
            | R::Create { path, .. }
            | R::AddBlock { path, .. }
            | R::Complete { path, .. }
            | R::WriteInline { path, .. }
            | R::Delete { path, .. }
            | R::SetAttr { path, .. }
            | R::Mknod { path, .. }
            | R::SwapContent { path, .. }
            | R::Stat { path }
            | R::List { path }
            | R::ListPage { path, .. }
            | R::GetBlocks { path }
            | R::Unmount { path }
            | R::SetXattr { path, .. }
            | R::Xattrs { path }
            | R::Persist { path }
            | R::Free { path }
            | R::SetPin { path, .. }
            | R::Unlink { path }
            | R::Lease { path }
            | R::SetContent { path, .. }
            | R::SetReplicas { path, .. }
            | R::Replication { path }
            | R::SetTtl { path, .. } => vec![path],
            R::Rename { src, dst } => vec![src, dst],
            R::Symlink { link, .. } => vec![link],
            R::Link { target, link } => vec![target, link],
            R::Mount { info } => vec![&info.path],
            R::Batch { ops, .. } => ops.iter().flat_map(crate::journal::BatchOp::paths).collect(),
            R::Release { paths } => paths.iter().map(String::as_str).collect(),
            R::CreateDetached { .. }
            | R::Report
            | R::Mounts
            | R::AddMaster { .. }
            | R::RemoveMaster { .. }
            | R::JournalInfo { .. }
            | R::TakeSnapshot
            | R::KeepAlive { .. }
            | R::Lock { .. }
            | R::TestLock { .. }
            | R::ReserveBlocks { .. }
            | R::Decommission { .. }
            | R::ReserveInodes { .. } => vec![],
        }
    }

    /// Whether the request only reads.
    pub fn is_read(&self) -> bool {
        use MasterRequest as R;
        matches!(
            self,
            R::Stat { .. }
                | R::List { .. }
                | R::ListPage { .. }
                | R::GetBlocks { .. }
                | R::Xattrs { .. }
                | R::Mounts
                | R::Report
                | R::JournalInfo { .. }
                | R::Replication { .. }
        )
    }
}

/// A metadata response.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum MasterResponse {
    /// Attributes of the affected inode.
    Attr(Attr),
    /// A new block and the workers to write it to.
    Block(BlockLocation),
    /// A listing.
    Listing(Vec<DirEntry>),
    /// A page of a listing; `more`: entries follow the last one.
    Page { entries: Vec<DirEntry>, more: bool },
    /// A file and its blocks.
    Blocks(FileBlocks),
    /// The cluster report.
    Report(ClusterReport),
    /// Extended attributes, by name.
    Xattrs(Vec<(String, Vec<u8>)>),
    /// A new block: write it to `copies.want` of the workers, in order.
    NewBlock { block: BlockLocation, copies: Copies },
    /// The mount table.
    Mounts(Vec<MountInfo>),

    /// One outcome per op of a `Batch` request.
    Batch(Vec<crate::journal::BatchOutcome>),
    /// A lease is granted; the directory's entries as of the grant.
    Leased(Vec<DirEntry>),
    /// The client must send its changes under these leased directories
    /// and release them.
    Recall { dirs: Vec<String>, reclaim: bool },
    /// Inode numbers `first..first + count` are the client's to use.
    Inodes { first: u64, count: u32 },
    /// Success with nothing to return.
    Done,
    /// The request failed.
    Error(ErrorInfo),
    /// Block ids `first..first + count` are the client's to use; write
    /// them to `workers` (best first).
    BlockIds { first: u64, count: u32, workers: Vec<WorkerAddr>, copies: Copies },
    /// The lock in the way of a `TestLock`, if any.
    Conflict(Option<crate::locks::RangeLock>),
    /// One master's journal.
    JournalInfo(JournalInfo),
    /// A file's blocks and their copies.
    Replication(FileReplication),
}

/// A file's blocks and their copies (`strata info`).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FileReplication {
    /// The file.
    pub attr: Attr,
    /// Whether its content is in its UFS.
    pub persisted: bool,
    /// The copies kept at least and at most (255: unbounded), with the
    /// defaults applied.
    pub min: u8,
    /// See `min`.
    pub max: u8,
    /// Its blocks, in file order.
    pub blocks: Vec<BlockReplication>,
}

/// One block's copies.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BlockReplication {
    /// The block.
    pub block_id: BlockId,
    /// Its length.
    pub length: u64,
    /// Live workers holding it, with the tier each keeps it on.
    pub copies: Vec<(WorkerAddr, String)>,
    /// `ok`, `under` (fewer copies than the minimum), `over` (more than
    /// the maximum), `missing` (none, and no UFS copy).
    pub state: String,
}

/// The most entries one `ListPage` answers (names are at most 255 bytes:
/// a page stays far below the frame limit).
pub const LIST_PAGE_MAX: u32 = 4096;

/// One master's journal, as that master sees it.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct JournalInfo {
    /// Its Raft status (last log and applied index among them).
    pub status: MasterStatus,
    /// The last entry its latest snapshot covers (0: no snapshot).
    pub snapshot_index: u64,
    /// The last entry purged from its log (0: none).
    pub purged_index: u64,
    /// A digest of its state machine, when asked for.
    pub digest: Option<StateDigest>,
}

/// A digest of a master's state machine: every row of the state column
/// families, in order, read from one RocksDB snapshot. Two masters at the
/// same applied index must have the same digest.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct StateDigest {
    /// The applied index the digest was taken at.
    pub applied_index: u64,
    /// Rows digested.
    pub rows: u64,
    /// 64-bit digest (two crc32c over the rows, chained).
    pub digest: u64,
}

/// A request frame's payload on the master's client port.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RequestEnvelope {
    /// Echoed in the response; requests on one connection may be answered out of order.
    pub id: RequestId,
    /// The request.
    pub body: MasterRequest,
    /// A read (`Stat`, `List`, `GetBlocks`) may be answered from this
    /// master's local state, without a read barrier through the leader:
    /// possibly stale, but served by any master, even without a quorum.
    pub stale_ok: bool,
    /// The calling client's id (random per client; 0: anonymous): whose
    /// leases a request may use, and whose it must wait for.
    pub client: u64,
}

/// A response frame's payload on the master's client port.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ResponseEnvelope {
    /// The request this answers (0 for a connection-level error).
    pub id: RequestId,
    /// The response.
    pub body: MasterResponse,
}

/// A request on a worker's data port.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum DataRequest {
    /// Read `length` bytes at `offset` of a block. The response frame is
    /// followed by exactly the number of bytes it declares.
    Read { block_id: BlockId, offset: u64, length: u64 },
    /// Write a whole block; exactly `length` raw bytes follow this frame,
    /// with their crc32c in `crc` (end-to-end check). `durable`: on a
    /// durable tier, on disk (fsync'd) before the answer; else in the
    /// page cache (a mount's close, as a local file's: fsync asks for it).
    /// `forward`: workers to pass the block on to, in a chain (the
    /// first of them gets it from this one with the rest of the list), so
    /// the writer sends the bytes once for every copy.
    Write { block_id: BlockId, length: u64, crc: u32, durable: bool, forward: Vec<WorkerAddr> },
    /// Read a range of a block that only the UFS has: the worker fetches the
    /// whole block (`block_offset`, `block_length` in the object) once, keeps
    /// it unless the read type says no, and answers like `Read`. A `length`
    /// of 0 only caches the block.
    ReadUfs { block_id: BlockId, offset: u64, length: u64, block_offset: u64, block_length: u64, source: UfsSource },
    /// Write a file made of `blocks` (`length` bytes) to `key` in the UFS.
    Persist { spec: UfsSpec, key: String, blocks: Vec<BlockLocation>, length: u64 },
    /// Where this worker keeps a block on disk, for a client on the same
    /// host to read it directly (short-circuit read).
    LocalDir { block_id: BlockId },
    /// (From the leader's ReplicationManager) copy block `block_id`
    /// (`length` bytes) from one of `sources` onto this worker, verify
    /// and commit it; `clean`: its file is persisted (the copy may be
    /// evicted). Answered `WriteOk`.
    Replicate { block_id: BlockId, length: u64, sources: Vec<WorkerAddr>, clean: bool },
}

/// A response on a worker's data port.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum DataResponse {
    /// `length` bytes follow.
    ReadOk { length: u64 },
    /// The block is stored (and committed to the master) on this tier,
    /// and `copies` copies in all along the chain of a forwarded write.
    WriteOk { tier: String, copies: u32 },
    /// The file is in the UFS as this version.
    Persisted(Fingerprint),
    /// The block's files are in this tier directory (see `blockfile`).
    LocalDir { dir: String },
    /// The request failed; nothing follows.
    Error(ErrorInfo),
}

/// Worker → master over the mesh: (re)registration with a full block report.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RegisterWorker {
    /// Where the worker serves data.
    pub addr: WorkerAddr,
    /// Its tiers.
    pub tiers: Vec<TierUsage>,
    /// Every block it holds.
    pub blocks: Vec<BlockId>,
    /// The tier of each block (index into `tiers`), in `blocks`' order.
    pub block_tiers: Vec<u8>,
}

/// Master → worker: registration accepted; drop these blocks (no file owns them).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RegisterReply {
    /// Orphan blocks to delete.
    pub remove_blocks: Vec<BlockId>,
    /// Blocks persisted to a UFS: they may be evicted.
    pub clean_blocks: Vec<BlockId>,
    /// Blocks of pinned files: never evict them.
    pub pinned_blocks: Vec<BlockId>,
}

/// Worker → master over the mesh, every heartbeat interval.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct WorkerHeartbeat {
    /// The worker.
    pub worker_id: WorkerId,
    /// Its tiers now.
    pub tiers: Vec<TierUsage>,
    /// Blocks it dropped since the last heartbeat.
    pub removed: Vec<BlockId>,
    /// Blocks it stored since the last heartbeat (also committed one by one
    /// as they arrive; this makes sure every master hears of them).
    pub added: Vec<BlockId>,
}

/// Master → worker heartbeat answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HeartbeatReply {
    /// The master does not know this worker (it restarted): register again.
    pub reregister: bool,
    /// Blocks whose files are gone, or whose cached copies were freed.
    pub remove_blocks: Vec<BlockId>,
    /// Blocks now persisted to a UFS: they may be evicted.
    pub clean_blocks: Vec<BlockId>,
    /// Blocks whose files are now pinned: never evict them.
    pub pin_blocks: Vec<BlockId>,
    /// Blocks whose files were unpinned: evictable again when clean.
    pub unpin_blocks: Vec<BlockId>,
    /// Mesh addresses of every master in the group as this master knows it
    /// (empty when unknown): the worker joins masters added at run time and
    /// stops dialling removed ones.
    pub masters_mesh: Vec<String>,
}

/// Worker → master: a block is stored and may be served.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BlockCommit {
    /// The worker.
    pub worker_id: WorkerId,
    /// The block.
    pub block_id: BlockId,
    /// Its length.
    pub length: u64,
    /// The tier it landed on.
    pub tier: String,
}

/// Master's answer to a block commit.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum CommitReply {
    /// Recorded.
    Ok,
    /// The master does not know this worker; register first.
    UnknownWorker,
    /// No file owns the block any more; drop it.
    Orphan,
}
