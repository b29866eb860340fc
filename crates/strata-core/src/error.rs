//! Typed errors, one enum per kind of operation.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use crate::event::{ExpectedVersion, Position};
use crate::stream_id::StreamId;

/// What a backend met when it failed: a message for people (it already says what the cause
/// was, so it is all a log line or an operator needs) and, when there was one, the underlying
/// error for programs that look closer ([`std::error::Error::source`]: an I/O error, a database
/// driver's error, an HTTP client's error).
///
/// The `Storage`, `Unavailable` and `Stopped` variants of [`AppendError`], [`ReadError`] and
/// `SnapshotError` carry one. They do not report it as their own `source`, so a chain printer
/// (`anyhow`'s `{:#}`) does not print the cause twice; reach it through the variant.
///
/// ```
/// use std::error::Error as _;
/// use strata_core::{BackendError, ReadError};
///
/// let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
/// let err = ReadError::Storage(BackendError::with_source(
///     format!("reading segment 3 at offset 512: {io}"),
///     io,
/// ));
/// if let ReadError::Storage(backend) = &err {
///     let cause = backend.source().and_then(|s| s.downcast_ref::<std::io::Error>());
///     assert_eq!(cause.map(|e| e.kind()), Some(std::io::ErrorKind::PermissionDenied));
/// }
/// assert!(err.to_string().starts_with("storage error: reading segment 3"));
/// ```
#[derive(Debug, Clone)]
pub struct BackendError {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl BackendError {
    /// An error with this message and no underlying error.
    pub fn new(message: impl Into<String>) -> Self {
        BackendError {
            message: message.into(),
            source: None,
        }
    }

    /// An error with this message, caused by `source`.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        BackendError {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for BackendError {
    fn from(message: String) -> Self {
        BackendError::new(message)
    }
}

impl From<&str> for BackendError {
    fn from(message: &str) -> Self {
        BackendError::new(message)
    }
}

/// A value the caller gave was malformed. Names the field and says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidInput {
    /// The field that was wrong, such as `stream_id` or `events[3].event_type`.
    pub field: String,
    /// What is wrong with it, as a sentence fragment.
    pub reason: String,
}

impl InvalidInput {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A request went over one of the limits in [`crate::limits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {actual}; the limit is {max}")]
pub struct LimitError {
    /// What was measured, such as `events in one append` or `events[0] data bytes`.
    pub what: String,
    /// The limit.
    pub max: u64,
    /// What the request had.
    pub actual: u64,
}

impl LimitError {
    /// Builds a limit error.
    pub fn new(what: impl Into<String>, max: usize, actual: usize) -> Self {
        LimitError {
            what: what.into(),
            max: max as u64,
            actual: actual as u64,
        }
    }

    /// Returns an error when `actual > max`.
    pub fn check(what: impl FnOnce() -> String, max: usize, actual: usize) -> Result<(), Self> {
        if actual > max {
            Err(LimitError::new(what(), max, actual))
        } else {
            Ok(())
        }
    }
}

/// The stream version a stream is at, or none when it does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActualVersion(pub Option<u64>);

impl fmt::Display for ActualVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("no stream"),
        }
    }
}

/// Why an append failed. When an append fails, none of its events were written.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The stream was not at the version the caller expected (optimistic concurrency).
    #[error("wrong expected version for stream {stream}: expected {expected}, actual {actual}")]
    WrongExpectedVersion {
        /// The stream appended to.
        stream: StreamId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The version the stream is at (`None`: it does not exist).
        actual: ActualVersion,
    },
    /// An event id is already stored for a different event (another stream, another place in
    /// this stream, or an append that only partly matches what is stored).
    #[error("event id {event_id} is already used by another event (stream {stream})")]
    EventIdConflict {
        /// The reused id.
        event_id: Uuid,
        /// The stream of the append that was refused.
        stream: StreamId,
    },
    /// The request was malformed.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// The request went over a limit.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The store stopped after an I/O error and refuses appends until it is reopened.
    #[error("the store has stopped and refuses appends until it is reopened: {0}")]
    Stopped(BackendError),
    /// The backend could not be reached (a database connection failed, for example).
    #[error("the store is unavailable: {0}")]
    Unavailable(BackendError),
    /// The store refused the caller: no valid credentials, or credentials without the right.
    #[error(transparent)]
    Denied(#[from] AccessDenied),
    /// A stored event the append had to read (to answer an idempotent retry) failed its checks
    /// (CRC, length or position). Nothing was written.
    #[error(transparent)]
    Corruption(#[from] Corruption),
    /// The append lost a race with a concurrent append (to the same stream, or with the same
    /// event ids) that the backend could not settle where the append ran: inside a caller's
    /// database transaction whose id is already assigned, or after the backend's own retries.
    /// Nothing was written. Run it again (roll the caller's transaction back and run the whole
    /// transaction again): the new attempt gives the definite answer (success, idempotent
    /// replay, wrong expected version or event-id conflict).
    #[error("the append to stream {stream} raced with a concurrent append and wrote nothing; run it again: {reason}")]
    Race {
        /// The stream appended to.
        stream: StreamId,
        /// What the backend met (a unique violation, a deadlock, retries given up), for logs.
        reason: String,
    },
    /// The backend failed while writing.
    #[error("storage error: {0}")]
    Storage(BackendError),
    /// The stream is tombstoned: it can never be written again.
    #[error("stream {stream} is tombstoned and can never be written again")]
    StreamTombstoned {
        /// The stream.
        stream: StreamId,
    },
    /// A lifecycle operation (delete, truncate) needs a stream with events, and this one has
    /// none (it never had any, or they are deleted).
    #[error("stream {0} not found")]
    StreamNotFound(StreamId),
}

/// Where a stored record that failed its checks is kept, in its backend's own terms. It is
/// for the operator (a log line, `strata verify`); a client is told the event's position.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionLocation {
    /// A file of the embedded log, and the byte offset of the bad record in it.
    LogFile {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the record's start in `file`.
        offset: u64,
    },
    /// A row of a database table, by its key.
    Row {
        /// The table (schema-qualified when the backend knows its schema).
        table: String,
        /// The row's key, as text (`42` for position 42).
        key: String,
    },
    /// Somewhere else, described for the operator.
    Other(String),
}

impl fmt::Display for CorruptionLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptionLocation::LogFile { file, offset } => {
                write!(f, "{} at offset {offset}", file.display())
            }
            CorruptionLocation::Row { table, key } => write!(f, "table {table}, row {key}"),
            CorruptionLocation::Other(what) => f.write_str(what),
        }
    }
}

/// A stored record failed its checks (CRC, length, position, or a value its backend cannot
/// decode): what [`ReadError::Corruption`] and [`AppendError::Corruption`] carry.
///
/// ```
/// use strata_core::{Corruption, CorruptionLocation, Position, ReadError};
/// let error = ReadError::from(Corruption::new(
///     CorruptionLocation::LogFile { file: "data/00000000000000000000.seg".into(), offset: 4096 },
///     Some(Position(17)),
///     "CRC mismatch",
/// ));
/// assert_eq!(
///     error.to_string(),
///     "corruption in data/00000000000000000000.seg at offset 4096 (position 17): CRC mismatch"
/// );
/// if let ReadError::Corruption(c) = &error {
///     assert_eq!(c.position, Some(Position(17)));
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corruption in {location}{}: {reason}", of_position(*.position))]
pub struct Corruption {
    /// Where the bad record is kept: for the operator.
    pub location: CorruptionLocation,
    /// The global position of the event the bad record should hold, when the backend knows
    /// it (from its index, say). This is what a client may be told.
    pub position: Option<Position>,
    /// What failed.
    pub reason: String,
}

impl Corruption {
    /// The record at `location`, meant to hold the event at `position`, failed: `reason`.
    pub fn new(
        location: CorruptionLocation,
        position: Option<Position>,
        reason: impl Into<String>,
    ) -> Self {
        Corruption {
            location,
            position,
            reason: reason.into(),
        }
    }
}

/// " (position N)" when the position is known, for the corruption messages.
fn of_position(position: Option<Position>) -> String {
    position.map_or_else(String::new, |p| format!(" (position {})", p.0))
}

impl AppendError {
    /// Whether this is a [`AppendError::WrongExpectedVersion`].
    pub fn is_wrong_expected_version(&self) -> bool {
        matches!(self, AppendError::WrongExpectedVersion { .. })
    }

    /// Whether this is an [`AppendError::Race`]: nothing was written, and running the append
    /// again (in a new transaction, if it ran in one) gives the definite answer.
    pub fn is_race(&self) -> bool {
        matches!(self, AppendError::Race { .. })
    }
}

/// Why a store refused a caller (a server with API tokens, say): the caller, not the store, has
/// to change something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessDenied {
    /// No credentials, or credentials the store does not know (HTTP `401`).
    #[error("unauthorized: {0}")]
    Unauthenticated(String),
    /// Known credentials without the right for this stream or operation (HTTP `403`).
    #[error("forbidden: {0}")]
    Forbidden(String),
}

/// Why a read, a listing or a subscription failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The stream has no events (none was ever appended, or all of them are deleted).
    #[error("stream {0} not found")]
    StreamNotFound(StreamId),
    /// The stream is tombstoned: its events are gone for good.
    #[error("stream {0} is tombstoned")]
    StreamTombstoned(StreamId),
    /// The request was malformed.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// The request went over a limit.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// Stored data failed its checks (CRC, length or position).
    #[error(transparent)]
    Corruption(#[from] Corruption),
    /// The backend could not be reached.
    #[error("the store is unavailable: {0}")]
    Unavailable(BackendError),
    /// The store refused the caller: no valid credentials, or credentials without the right.
    #[error(transparent)]
    Denied(#[from] AccessDenied),
    /// The backend failed while reading.
    #[error("storage error: {0}")]
    Storage(BackendError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_names_its_own_corruption_location() {
        let row = Corruption::new(
            CorruptionLocation::Row {
                table: "strata.events".to_owned(),
                key: "42".to_owned(),
            },
            Some(Position(42)),
            "column event_type is not UTF-8",
        );
        assert_eq!(
            ReadError::from(row.clone()).to_string(),
            "corruption in table strata.events, row 42 (position 42): column event_type is not UTF-8"
        );
        assert!(matches!(
            AppendError::from(row),
            AppendError::Corruption(Corruption {
                location: CorruptionLocation::Row { .. },
                position: Some(Position(42)),
                ..
            })
        ));
        let other = Corruption::new(
            CorruptionLocation::Other("object 7 of bucket b".to_owned()),
            None,
            "checksum mismatch",
        );
        assert_eq!(
            AppendError::from(other).to_string(),
            "corruption in object 7 of bucket b: checksum mismatch"
        );
    }
}
