//! The toolkit's errors: one enum per operation, each variant something a caller can act on.

use std::convert::Infallible;

use strata_core::{
    ActualVersion, AppendError, ExpectedVersion, InvalidInput, ReadError, SnapshotError, StreamId,
    Uuid,
};

use crate::codec::EncodeError;
use crate::upcast::DecodeError;

/// Why an aggregate could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The aggregate id does not make a valid stream id.
    #[error("invalid aggregate id: {0}")]
    InvalidId(#[from] InvalidInput),
    /// The store failed to read the stream.
    #[error("could not read stream {stream}: {source}")]
    Read {
        /// The stream.
        stream: StreamId,
        /// The store's error.
        source: ReadError,
    },
    /// A stored event could not be decoded (unknown type, unknown schema version, bad
    /// payload). The error names the stream, version and type.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A load at a version asked for one the stream has not reached.
    #[error("stream {stream} has no version {requested}; its last version is {current}")]
    VersionNotFound {
        /// The stream.
        stream: StreamId,
        /// The version asked for.
        requested: u64,
        /// The version it is at.
        current: ActualVersion,
    },
    /// The store returned events out of order (a backend bug): a replay never skips or repeats.
    #[error("stream {stream} returned version {found} where {expected} was expected")]
    OutOfOrder {
        /// The stream.
        stream: StreamId,
        /// The version expected next.
        expected: u64,
        /// The version returned.
        found: u64,
    },
}

/// Why a command did not record its events.
///
/// `E` is the aggregate's refusal; `F` the error of the services its handler consults
/// ([`crate::HandleWithServices::ServiceError`]): [`Infallible`] for an aggregate without
/// services, so `ExecuteError<AccountError>` names the whole type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError<E: std::error::Error + 'static, F: std::error::Error + 'static = Infallible> {
    /// The aggregate refused the command: a business rule said no. Nothing was written.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// Other writers kept changing the aggregate: every attempt lost the race. Nothing was
    /// written by this command.
    #[error(
        "concurrency conflict on {stream} after {attempts} attempts: expected version \
         {expected}, found {actual}"
    )]
    Conflict {
        /// The stream.
        stream: StreamId,
        /// How many times the command was tried.
        attempts: u32,
        /// The version the last attempt expected.
        expected: ExpectedVersion,
        /// The version the stream was at.
        actual: ActualVersion,
    },
    /// The events this command id derives are already stored: the command was executed
    /// before (a client retry whose first answer was lost). Nothing new was written.
    #[error("command {command_id} was already executed on {stream}")]
    DuplicateCommand {
        /// The stream.
        stream: StreamId,
        /// The command id.
        command_id: Uuid,
    },
    /// A service the handler consulted could not answer (see
    /// [`crate::HandleError::Service`]). Not a refusal: the same command may succeed once the
    /// service answers. Nothing was written.
    #[error("a service could not answer for {stream}: {source}")]
    Service {
        /// The stream.
        stream: StreamId,
        /// The service's error.
        source: F,
    },
    /// The aggregate could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// An event the aggregate produced could not be encoded.
    #[error("could not encode an event for {stream}: {source}")]
    Encode {
        /// The stream.
        stream: StreamId,
        /// What went wrong.
        source: EncodeError,
    },
    /// The store refused or failed the append (limits, I/O, unavailable). Nothing was written.
    #[error("append to {stream} failed: {source}")]
    Append {
        /// The stream.
        stream: StreamId,
        /// The store's error.
        source: AppendError,
    },
}

impl<E: std::error::Error + 'static, F: std::error::Error + 'static> ExecuteError<E, F> {
    /// The aggregate's refusal, when that is what this is.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            ExecuteError::Rejected(e) => Some(e),
            _ => None,
        }
    }

    /// The service's error, when a service the handler consulted could not answer.
    pub fn service_error(&self) -> Option<&F> {
        match self {
            ExecuteError::Service { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether this is a concurrency conflict that outlasted the retries.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ExecuteError::Conflict { .. })
    }
}

/// Why a snapshot could not be taken on request.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TakeSnapshotError {
    /// The aggregate could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The state could not be serialized.
    #[error("could not serialize the state of {stream}: {reason}")]
    Serialize {
        /// The stream.
        stream: StreamId,
        /// The serializer's message.
        reason: String,
    },
    /// The snapshot store failed.
    #[error(transparent)]
    Store(#[from] SnapshotError),
}
