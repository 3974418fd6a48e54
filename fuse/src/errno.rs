//! The one place Strata error codes become errno values.

use fuser::Errno;
use strata_client::{ClientError, ErrorCode};

/// Maps a client error to the errno the kernel returns to the program.
pub fn errno(e: &ClientError) -> Errno {
    match e.code() {
        ErrorCode::NotFound | ErrorCode::BlockNotFound => Errno::ENOENT,
        ErrorCode::AlreadyExists => Errno::EEXIST,
        ErrorCode::NotADirectory => Errno::ENOTDIR,
        ErrorCode::IsADirectory => Errno::EISDIR,
        ErrorCode::DirectoryNotEmpty => Errno::ENOTEMPTY,
        ErrorCode::InvalidPath | ErrorCode::InvalidArgument => Errno::EINVAL,
        ErrorCode::NoSpace | ErrorCode::NoWorkers => Errno::ENOSPC,
        ErrorCode::PermissionDenied => Errno::EACCES,
        ErrorCode::Timeout => Errno::ETIMEDOUT,
        ErrorCode::InvalidState => Errno::EBUSY,
        ErrorCode::NotLeader | ErrorCode::Unavailable => Errno::EAGAIN,
        ErrorCode::CrossMount => Errno::EXDEV,
        ErrorCode::NoAttribute => Errno::NO_XATTR,
        ErrorCode::WouldBlock => Errno::EAGAIN,
        ErrorCode::Deadlock => Errno::EDEADLK,
        ErrorCode::TooLarge => Errno::EOVERFLOW,
        ErrorCode::ChecksumMismatch
        | ErrorCode::Io
        | ErrorCode::Protocol
        | ErrorCode::Internal
        | ErrorCode::Ufs
        | ErrorCode::InlineRefused => Errno::EIO,
    }
}
