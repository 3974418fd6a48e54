use std::time::Duration;

use strata_protocol::{ErrorCode, ErrorInfo, FrameError};

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{0}")]
    Remote(ErrorInfo),
    /// The server could not be reached.
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    /// The connection broke during a call.
    #[error("connection to {addr} lost: {reason}")]
    Disconnected { addr: String, reason: String },
    /// The server sent something that is not valid protocol.
    #[error("protocol error from {addr}: {source}")]
    Protocol { addr: String, source: FrameError },
    /// No answer in time.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// A local file operation failed.
    #[error("local i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// The stable error code (for scripts and the FUSE errno mapping).
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::Remote(e) => e.code,
            ClientError::Connect { .. } | ClientError::Disconnected { .. } => ErrorCode::Unavailable,
            ClientError::Protocol { .. } => ErrorCode::Protocol,
            ClientError::Timeout { .. } => ErrorCode::Timeout,
            ClientError::Io(_) => ErrorCode::Io,
        }
    }

    pub(crate) fn unexpected(r: impl std::fmt::Debug) -> Self {
        ClientError::Remote(ErrorInfo::new(ErrorCode::Protocol, format!("unexpected response {r:?}")))
    }
}

impl From<ErrorInfo> for ClientError {
    fn from(e: ErrorInfo) -> Self {
        ClientError::Remote(e)
    }
}
