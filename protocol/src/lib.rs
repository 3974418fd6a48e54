//! Strata's wire protocol: ids, rkyv messages, journal entries, stable error
//! codes, path validation and the frame codec.
//!
//! This crate has no I/O runtime and no storage engine: both clients and
//! servers link it. The optional `tokio-io` feature adds async frame helpers
//! over `AsyncRead`/`AsyncWrite`.

pub mod blockfile;
pub mod error;
pub mod frame;
pub mod ids;
pub mod journal;
pub mod locks;
pub mod messages;
pub mod path;
pub mod ufs;

pub use error::{ErrorCode, ErrorInfo};
pub use frame::{FrameError, FrameHeader, FrameKind, MAX_FRAME_BYTES};
pub use ids::{BlockId, InodeId, RequestId, WorkerId, ROOT_INODE};

/// Default block size for new files (64 MiB), as in Alluxio and Curvine.
pub const DEFAULT_BLOCK_SIZE: u64 = 64 * 1024 * 1024;
/// Largest file whose content the master keeps inline, in the journal and
/// its metadata store, instead of in worker blocks: a small file is written
/// with one journal entry and read with one metadata call.
pub const INLINE_MAX_BYTES: u64 = 64 * 1024;
/// Smallest block size a file may ask for.
pub const MIN_BLOCK_SIZE: u64 = 4096;
/// Largest block size a file may ask for (a block must fit a worker tier).
pub const MAX_BLOCK_SIZE: u64 = 4 * 1024 * 1024 * 1024;

/// Current wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
