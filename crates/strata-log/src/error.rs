//! Errors of opening and verifying a data directory.

use std::fmt;
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
    /// Events the index file records as acknowledged are missing from the end of the log.
    /// Nothing was changed on disk. [`crate::LogConfig::accept_data_loss`] opens the store
    /// anyway, without them, and reports the same [`DataLoss`] in
    /// [`crate::OpenReport::data_loss`].
    #[error(transparent)]
    DataLoss(DataLoss),
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Segments of the store live only in an archive (their disk was given back), and the
    /// store was opened without a way to read them ([`crate::LogConfig::archive`]).
    #[error("segment {segment} of this store lives in the archive {archive}; open the store with that archive to read it")]
    Archived {
        /// The first such segment.
        segment: u64,
        /// The archive its stub names.
        archive: String,
    },
    /// An I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Acknowledged events missing from the end of the log: what the index file (written when a
/// segment is sealed and when the store closes) records as stored, and the log no longer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataLoss {
    /// The segment file that held the first lost event.
    pub file: PathBuf,
    /// Byte offset of that event's record in `file`.
    pub offset: u64,
    /// The first lost event's position: the log is whole up to just before it.
    pub from_position: u64,
    /// How many acknowledged events are lost, at least: those the index file records from
    /// `from_position` on. Events acknowledged after the index file was last written may be lost
    /// too; nothing durable counts them.
    pub events_at_least: u64,
    /// What happened to them.
    pub cause: LossCause,
}

/// What happened to the lost events' bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossCause {
    /// The segment file is gone.
    SegmentMissing,
    /// The segment file's header is gone (the file is too short for one, or zeros).
    HeaderMissing,
    /// The segment file is another segment than the one the index file recorded (its salt
    /// differs).
    SegmentReplaced,
    /// The file ends at `file_len`, before the end of the record.
    Truncated {
        /// The file's length.
        file_len: u64,
    },
    /// Every byte from `from_offset` to the end of the file is zero.
    Zeroed {
        /// Where the zeros start.
        from_offset: u64,
    },
    /// The record at `offset` fails its checks, and nothing valid follows it.
    Damaged {
        /// The bad record's offset.
        offset: u64,
        /// What failed.
        reason: String,
    },
}

impl fmt::Display for LossCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossCause::SegmentMissing => f.write_str("the segment file is missing"),
            LossCause::HeaderMissing => f.write_str("the segment file's header is gone"),
            LossCause::SegmentReplaced => f.write_str(
                "the segment file is another segment than the one the index file recorded",
            ),
            LossCause::Truncated { file_len } => {
                write!(f, "the file ends at byte {file_len}")
            }
            LossCause::Zeroed { from_offset } => {
                write!(f, "the file is zeros from byte {from_offset} to its end")
            }
            LossCause::Damaged { offset, reason } => {
                write!(f, "the record at byte {offset} fails its checks ({reason}) and no valid record follows")
            }
        }
    }
}

impl fmt::Display for DataLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acknowledged events are missing from {}: ",
            self.file.display()
        )?;
        if self.events_at_least == 0 {
            write!(
                f,
                "any appended from position {} on after the index file was last written",
                self.from_position
            )?;
        } else {
            write!(
                f,
                "at least {} event{} from position {} (byte {})",
                self.events_at_least,
                if self.events_at_least == 1 { "" } else { "s" },
                self.from_position,
                self.offset
            )?;
        }
        write!(f, "; {}", self.cause)
    }
}

impl std::error::Error for DataLoss {}

pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> OpenError {
    let context = context.into();
    move |source| OpenError::Io { context, source }
}
