//! Under-file-system (UFS) mounts: what is mounted where, with which write
//! and read types, and how a UFS object is fingerprinted so a change behind
//! Strata's back is noticed.

use rkyv::{Archive, Deserialize, Serialize};

use crate::error::{ErrorCode, ErrorInfo};

/// Where a write under a mount goes before it is acknowledged.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum WriteType {
    /// Workers only; never persisted unless asked (`strata persist`).
    Cache,
    /// The UFS only: persisted before the close is acknowledged, then the
    /// cached copies are dropped.
    Through,
    /// Both: persisted before the close is acknowledged, cached copies kept.
    CacheThrough,
    /// Workers now (on two of them when possible), the UFS later: the
    /// leader's MountSyncer persists with retries; unpersisted blocks are
    /// never evicted.
    AsyncThrough,
}

/// Whether a read of an uncached block keeps it.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ReadType {
    /// A miss caches the whole block on the worker that served it.
    Cache,
    /// Like `Cache`, and the block is stored on (or moved to) the fastest tier.
    CachePromote,
    /// Misses stream from the UFS and are not kept.
    NoCache,
}

impl std::str::FromStr for WriteType {
    type Err = ErrorInfo;
    fn from_str(s: &str) -> Result<Self, ErrorInfo> {
        Ok(match s {
            "cache" | "must-cache" => WriteType::Cache,
            "through" => WriteType::Through,
            "cache-through" => WriteType::CacheThrough,
            "async-through" => WriteType::AsyncThrough,
            other => {
                return Err(ErrorInfo::new(
                    ErrorCode::InvalidArgument,
                    format!("write type {other:?}: use cache, through, cache-through or async-through"),
                ))
            }
        })
    }
}

impl std::str::FromStr for ReadType {
    type Err = ErrorInfo;
    fn from_str(s: &str) -> Result<Self, ErrorInfo> {
        Ok(match s {
            "cache" => ReadType::Cache,
            "cache-promote" => ReadType::CachePromote,
            "no-cache" => ReadType::NoCache,
            other => {
                return Err(ErrorInfo::new(
                    ErrorCode::InvalidArgument,
                    format!("read type {other:?}: use cache, cache-promote or no-cache"),
                ))
            }
        })
    }
}

impl std::fmt::Display for WriteType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteType::Cache => "cache",
            WriteType::Through => "through",
            WriteType::CacheThrough => "cache-through",
            WriteType::AsyncThrough => "async-through",
        })
    }
}

impl std::fmt::Display for ReadType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadType::Cache => "cache",
            ReadType::CachePromote => "cache-promote",
            ReadType::NoCache => "no-cache",
        })
    }
}

/// How a UFS is reached: its URI (`s3://bucket/prefix`, `file:///dir`) and
/// backend options (`endpoint`, `region`, `access_key_id`, …).
#[derive(
    Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, Hash, Default,
)]
#[rkyv(derive(Debug))]
pub struct UfsSpec {
    /// The UFS URI.
    pub uri: String,
    /// Backend options, sorted by key.
    pub options: Vec<(String, String)>,
}

/// Options of one mount.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MountOptions {
    /// Write type of new files.
    pub write_type: WriteType,
    /// Read type of cache misses.
    pub read_type: ReadType,
    /// Metadata sync: `-1` load once and never again, `0` on every access,
    /// `N` when the last listing is older than N ms.
    pub sync_interval_ms: i64,
    /// Block size of files loaded from the UFS and of new files.
    pub block_size: u64,
    /// Copies written by async-through before persist.
    pub replicas: u32,
    /// Files not modified for this long get `ttl_action` (0: no TTL).
    pub ttl_ms: u64,
    /// What happens to a file whose TTL expired.
    pub ttl_action: TtlAction,
    /// How new blocks of files under the mount are placed (None: the
    /// cluster's policy).
    pub placement: Option<PlacementPolicy>,
}

/// How the master orders live workers for a new block (its copies go to
/// the first ones, other hosts first among equals). Workers without room
/// for the block always come last.
#[derive(
    Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default,
)]
#[rkyv(derive(Debug))]
#[serde(rename_all = "kebab-case")]
pub enum PlacementPolicy {
    /// A worker on the writer's host first, then the others by free space
    /// (rotating among them so load spreads).
    #[default]
    LocalFirst,
    /// Each block starts at the next worker, by id.
    RoundRobin,
    /// Most free space first.
    MostAvailable,
    /// Random, weighted by free space.
    CapacityWeighted,
    /// By a hash of the block id and each worker (rendezvous hashing):
    /// every reader of a block picks the same worker, and a block's worker
    /// changes only when that worker comes or goes (cold UFS reads).
    Hash,
}

impl std::str::FromStr for PlacementPolicy {
    type Err = ErrorInfo;
    fn from_str(s: &str) -> Result<Self, ErrorInfo> {
        Ok(match s {
            "local-first" => PlacementPolicy::LocalFirst,
            "round-robin" => PlacementPolicy::RoundRobin,
            "most-available" => PlacementPolicy::MostAvailable,
            "capacity-weighted" => PlacementPolicy::CapacityWeighted,
            "hash" => PlacementPolicy::Hash,
            other => {
                return Err(ErrorInfo::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "placement {other:?}: use local-first, round-robin, most-available, capacity-weighted or hash"
                    ),
                ))
            }
        })
    }
}

impl std::fmt::Display for PlacementPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PlacementPolicy::LocalFirst => "local-first",
            PlacementPolicy::RoundRobin => "round-robin",
            PlacementPolicy::MostAvailable => "most-available",
            PlacementPolicy::CapacityWeighted => "capacity-weighted",
            PlacementPolicy::Hash => "hash",
        })
    }
}

/// What the leader does with a file under a mount whose TTL expired.
#[derive(
    Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default,
)]
#[rkyv(derive(Debug))]
pub enum TtlAction {
    /// Drop the cached copies of a persisted file (it reads from the UFS again).
    #[default]
    Free,
    /// Delete the file from Strata and from the UFS.
    Delete,
    /// Persist the file to the UFS if it is not yet.
    Persist,
}

/// A TTL set on one file or directory (`strata ttl PATH DUR`): once the
/// file has not been modified for `ttl_ms`, `action` applies to it. It
/// overrides the TTL of the mount the file is under; a directory passes it
/// on to what is below it and to what is created in it later.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FileTtl {
    /// Time since the last modification after which `action` applies, ms (> 0).
    pub ttl_ms: u64,
    /// What happens then.
    pub action: TtlAction,
}

impl std::str::FromStr for TtlAction {
    type Err = ErrorInfo;
    fn from_str(s: &str) -> Result<Self, ErrorInfo> {
        Ok(match s {
            "free" => TtlAction::Free,
            "delete" => TtlAction::Delete,
            "persist" => TtlAction::Persist,
            other => {
                return Err(ErrorInfo::new(
                    ErrorCode::InvalidArgument,
                    format!("ttl action {other:?}: use free, delete or persist"),
                ))
            }
        })
    }
}

impl std::fmt::Display for TtlAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TtlAction::Free => "free",
            TtlAction::Delete => "delete",
            TtlAction::Persist => "persist",
        })
    }
}

/// A mount as stored in the journal.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MountInfo {
    /// The namespace path the UFS appears at.
    pub path: String,
    /// The UFS.
    pub spec: UfsSpec,
    /// Its options.
    pub options: MountOptions,
}

/// What identifies the version of a UFS object: a change in any field means
/// the object was replaced behind Strata's back.
#[derive(
    Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, Default,
)]
#[rkyv(derive(Debug))]
pub struct Fingerprint {
    /// Length in bytes.
    pub size: u64,
    /// Last modification, ms since the epoch (0 if the backend has none).
    pub mtime_ms: i64,
    /// ETag or content hash, if the backend has one.
    pub etag: Option<String>,
}

/// One entry of a UFS directory listing.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct UfsEntry {
    /// Name within the directory.
    pub name: String,
    /// Whether it is a directory (a common prefix on object stores).
    pub is_dir: bool,
    /// The object's version (files only).
    pub fingerprint: Fingerprint,
}

/// Where the bytes of one uncached block come from.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct UfsSource {
    /// The UFS.
    pub spec: UfsSpec,
    /// The object's key relative to the UFS root.
    pub key: String,
    /// The version the namespace knows; a differing object is refused.
    pub fingerprint: Fingerprint,
    /// How a miss is handled.
    pub read_type: ReadType,
}

/// Whether `path` is `mount` or below it.
pub use crate::path::is_under;

/// The UFS key of `path` under a mount at `mount`: the relative path
/// without a leading slash (empty for the mount point itself).
pub fn key_of(path: &str, mount: &str) -> String {
    path[mount.len()..].trim_start_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_prefixes() {
        assert!(is_under("/data", "/data"));
        assert!(is_under("/data/x/y", "/data"));
        assert!(!is_under("/database", "/data"));
        assert_eq!(key_of("/data/x/y", "/data"), "x/y");
        assert_eq!(key_of("/data", "/data"), "");
        assert_eq!("async-through".parse::<WriteType>().unwrap(), WriteType::AsyncThrough);
        assert!("sometimes".parse::<ReadType>().is_err());
    }
}
