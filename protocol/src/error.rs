//! Stable error codes. The numeric values are part of the wire protocol:
//! never renumber, only append.

use rkyv::{Archive, Deserialize, Serialize};

/// A stable, wire-visible error code.
#[derive(
    Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash,
)]
#[rkyv(derive(Debug))]
#[repr(u16)]
pub enum ErrorCode {
    /// Something failed that has no better code; the message says what.
    Internal = 1,
    /// The path or inode does not exist.
    NotFound = 2,
    /// The target path already exists.
    AlreadyExists = 3,
    /// A path component that must be a directory is not one.
    NotADirectory = 4,
    /// The operation needs a file or symlink but found a directory.
    IsADirectory = 5,
    /// A directory is not empty and the operation is not recursive.
    DirectoryNotEmpty = 6,
    /// The path is malformed: relative, `..`, empty components, too long.
    InvalidPath = 7,
    /// An argument is out of range or inconsistent.
    InvalidArgument = 8,
    /// No tier has room for the data, and nothing could be evicted.
    NoSpace = 9,
    /// Stored data failed its checksum: it is never returned.
    ChecksumMismatch = 10,
    /// This master is not the leader; the message names the leader if known.
    NotLeader = 11,
    /// The service cannot answer now (no quorum, shutting down); retry later.
    Unavailable = 12,
    /// A frame or message could not be decoded.
    Protocol = 13,
    /// A block is not stored on this worker.
    BlockNotFound = 14,
    /// No live worker can take the block.
    NoWorkers = 15,
    /// A local I/O error on the server.
    Io = 16,
    /// The operation did not finish in time.
    Timeout = 17,
    /// The file is still being written (not complete) or already complete.
    InvalidState = 18,
    /// Permission denied.
    PermissionDenied = 19,
    /// An under-file-system failed (unreachable, bad credentials, missing
    /// bucket); the message names the UFS and its answer.
    Ufs = 20,
    /// The operation crosses a mount boundary (rename between a mount and
    /// the rest of the namespace or another mount).
    CrossMount = 21,
    /// The master keeps no inline content for this file (it is under a UFS
    /// mount, or too big): write it as blocks instead.
    InlineRefused = 22,
    /// The extended attribute does not exist.
    NoAttribute = 23,
    /// A lock is held by another owner (answered to a lock request that
    /// may not wait, or whose wait is over for now).
    WouldBlock = 24,
    /// Waiting for the lock would wait for ever: its holder waits, through
    /// a chain of owners, for a lock the requester holds (`EDEADLK`).
    Deadlock = 25,
    /// The answer would exceed the frame limit (ask for less: a page of a
    /// listing).
    TooLarge = 26,
}

impl ErrorCode {
    /// A short stable name, as shown by the CLI.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal",
            ErrorCode::NotFound => "not found",
            ErrorCode::AlreadyExists => "already exists",
            ErrorCode::NotADirectory => "not a directory",
            ErrorCode::IsADirectory => "is a directory",
            ErrorCode::DirectoryNotEmpty => "directory not empty",
            ErrorCode::InvalidPath => "invalid path",
            ErrorCode::InvalidArgument => "invalid argument",
            ErrorCode::NoSpace => "no space",
            ErrorCode::ChecksumMismatch => "checksum mismatch",
            ErrorCode::NotLeader => "not leader",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Protocol => "protocol error",
            ErrorCode::BlockNotFound => "block not found",
            ErrorCode::NoWorkers => "no workers",
            ErrorCode::Io => "i/o error",
            ErrorCode::Timeout => "timeout",
            ErrorCode::InvalidState => "invalid state",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::Ufs => "ufs error",
            ErrorCode::CrossMount => "cross-mount operation",
            ErrorCode::InlineRefused => "inline content refused",
            ErrorCode::NoAttribute => "no such attribute",
            ErrorCode::WouldBlock => "would block",
            ErrorCode::Deadlock => "deadlock",
            ErrorCode::TooLarge => "answer too large",
        }
    }
}

/// An error as it travels on the wire: a stable code and a human message.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ErrorInfo {
    /// The stable code clients branch on.
    pub code: ErrorCode,
    /// Details for humans; never parsed.
    pub message: String,
}

impl ErrorInfo {
    /// Builds an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorInfo { code, message: message.into() }
    }
}

impl std::fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for ErrorInfo {}
