//! Errors of opening and verifying a data directory.

use std::path::PathBuf;

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or another handle in this one) has the directory open.
    #[error("data directory {dir} is in use by another Strata process (lock file {lock})")]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// A record or header failed its checks where a torn write cannot explain it.
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        /// The file.
        file: PathBuf,
        /// Byte offset of the bad record or header.
        offset: u64,
        /// What failed.
        reason: String,
    },
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> OpenError {
    let context = context.into();
    move |source| OpenError::Io { context, source }
}
