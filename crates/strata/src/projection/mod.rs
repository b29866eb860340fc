//! Projections: the query side of CQRS.
//!
//! A [`Projection`] turns the events it wants (a [`Filter`] on categories and event types)
//! into a read model: SQLite tables it writes with ordinary SQL through [`Sql`]. The runner
//! ([`Projections`]) keeps, for each projection, a checkpoint (the last global position
//! applied) and a status in the same database, written in the same transaction as the
//! read-model change, so a crash never applies an event twice or loses one.
//!
//! Each projection runs one of two ways, chosen when it is registered:
//!
//! - **inline** ([`Projections::inline`]): applied by [`ProjectedStore`]'s `append` right after
//!   the append is durable and before the caller is answered. A crash in between leaves the
//!   checkpoint behind the log; registering the projection again catches it up (repair).
//! - **async** ([`Projections::spawn`]): a background task follows `$all` from its checkpoint
//!   in batches of up to [`limits::PROJECTION_BATCH_MAX_EVENTS`] events per transaction.
//!
//! Either can be **rebuilt** ([`Projections::rebuild`]) into fresh tables while the current
//! ones keep serving; the swap is one transaction, so a query never sees a half-built model.
//!
//! Queries read the plain table names through [`SqliteReadModels::connect`]; after a write,
//! [`Projections::wait_for`] waits until a projection has passed the write's position, or
//! returns [`ProjectionError::NotYetConsistent`]. `docs/projections.md` walks through it all.
//!
//! A serving program hands its runner to `strata-server` as a [`ProjectionControl`] (list,
//! pause, resume, reset, rebuild over HTTP); [`EventTypeCounts`] is a projection that ships
//! with Strata, so `strata serve` can host one without application code.
//!
//! Handlers see each event at least once and, because the checkpoint is read and written in
//! the batch's transaction, their effects are applied exactly once. A handler must still be
//! deterministic (a rebuild replays it), and side effects outside the read-model database are
//! not covered by the transaction.

//! Each read-model store is a cargo feature of `strata`: `sqlite` ([`Projections`],
//! [`SqliteReadModels`]) and `postgres` ([`PgProjections`], [`PgReadModels`]). This module
//! always has the types a server or a tool needs to drive projections without a driver
//! ([`ProjectionControl`], [`ProjectionInfo`], [`ProjectionError`]).

mod builtin;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod common;
mod control;
mod model;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod runner;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod typed;

use std::sync::Arc;

#[cfg(feature = "sqlite")]
use strata_core::{Filter, RecordedEvent};
use strata_core::{Position, ReadError, Uuid};

use crate::limits;

pub use builtin::{EventTypeCounts, BUILTIN_PROJECTIONS};
pub use control::ProjectionControl;
pub use model::{
    InlineProjections, ProjectedAppendError, ProjectedStore, ProjectionInfo, ProjectionMode,
    ProjectionStatus, RebuildProgress,
};
#[cfg(feature = "postgres")]
pub use postgres::{PgProjection, PgProjections, PgReadModels};
#[cfg(feature = "sqlite")]
pub use runner::Projections;
#[cfg(feature = "sqlite")]
pub use sqlite::{Sql, SqliteReadModels, StoredProjection};
#[cfg(feature = "sqlite")]
pub use typed::Sqlite;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use typed::{Envelope, ReadModel, ReadModelDb, Typed};
#[cfg(feature = "postgres")]
pub use typed::{PgOutput, Postgres};

/// A read model fed by events, stored in SQLite (feature `sqlite`).
///
/// ```
/// use strata::projection::{HandlerError, Projection, Sql};
/// use strata::{Filter, RecordedEvent};
///
/// struct Balances;
/// impl Projection for Balances {
///     fn name(&self) -> &str { "balances" }
///     fn filter(&self) -> Filter { Filter::default().categories(["account"]) }
///     fn tables(&self) -> &[&'static str] { &["balances"] }
///     fn setup(&self, sql: &Sql<'_>) -> Result<(), HandlerError> {
///         sql.execute_batch("CREATE TABLE {balances} (account TEXT PRIMARY KEY, balance INTEGER)")
///     }
///     fn apply(&self, sql: &Sql<'_>, event: &RecordedEvent) -> Result<(), HandlerError> {
///         let amount = event.data_json().and_then(|d| d["amount"].as_i64()).unwrap_or(0);
///         sql.execute(
///             "INSERT INTO {balances} VALUES (?1, ?2)
///              ON CONFLICT (account) DO UPDATE SET balance = balance + ?2",
///             rusqlite::params![event.stream_id.as_str(), amount],
///         )?;
///         Ok(())
///     }
/// }
/// ```
#[cfg(feature = "sqlite")]
pub trait Projection: Send + Sync + 'static {
    /// A stable name: the key of its checkpoint and status.
    fn name(&self) -> &str;

    /// The events it wants. Other events move its checkpoint without reaching the handler.
    fn filter(&self) -> Filter;

    /// The tables it owns. Handlers and `setup` name them `{table}` in SQL; queries read them
    /// by their plain names.
    fn tables(&self) -> &[&'static str];

    /// Creates its tables (and indexes) in a fresh, empty generation.
    fn setup(&self, sql: &Sql<'_>) -> Result<(), HandlerError>;

    /// Applies one event inside the batch's transaction. An error rolls the batch back; the
    /// event is retried with backoff and, if it keeps failing, the projection stops as failed
    /// at that event.
    fn apply(&self, sql: &Sql<'_>, event: &RecordedEvent) -> Result<(), HandlerError>;
}

/// Why a handler could not apply an event. Each variant keeps its cause, so a caller can
/// tell a refused event from a failing database and reach the underlying error through the
/// variant.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The handler refused the event, in its own words ([`HandlerError::new`]).
    #[error("{0}")]
    Rejected(String),
    /// The read model's database failed a statement (the driver's error; its text is in
    /// this error's message, so it is not repeated as the `source`).
    #[error("sql: {0}")]
    Sql(Arc<dyn std::error::Error + Send + Sync>),
    /// The event's JSON payload is not what the handler reads.
    #[error("event payload: {0}")]
    Payload(Arc<serde_json::Error>),
    /// A typed projection could not decode (or upcast) the event into its event type.
    #[error(transparent)]
    Decode(#[from] crate::upcast::DecodeError),
}

impl HandlerError {
    /// The handler's refusal of an event, with this message.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError::Rejected(message.into())
    }
}

#[cfg(feature = "sqlite")]
impl From<rusqlite::Error> for HandlerError {
    fn from(e: rusqlite::Error) -> Self {
        HandlerError::Sql(Arc::new(e))
    }
}

#[cfg(feature = "postgres")]
impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        HandlerError::Sql(Arc::new(e))
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(e: serde_json::Error) -> Self {
        HandlerError::Payload(Arc::new(e))
    }
}

/// Why a projection operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// The projection did not pass `position` within the wait: the read model may be stale
    /// for this caller. Retry later or answer "not yet".
    #[error(
        "projection {projection} is not yet consistent with position {position}: it has \
         reached {} after waiting {waited_ms} ms",
        reached.map_or_else(|| "no position yet".to_owned(), |p| format!("position {p}"))
    )]
    NotYetConsistent {
        /// The projection.
        projection: String,
        /// The position asked for.
        position: Position,
        /// The position it has passed (`None`: nothing yet).
        reached: Option<Position>,
        /// How long the caller waited.
        waited_ms: u64,
    },
    /// The handler kept failing on one event: the projection stopped there. Fix the handler
    /// (or the data) and [`Projections::resume`]; it continues from this event.
    #[error(
        "projection {projection} failed{}: {reason}",
        match (position, event_id) {
            (Some(p), Some(id)) => format!(" at position {p} (event {id})"),
            (Some(p), None) => format!(" at position {p}"),
            _ => String::new(),
        }
    )]
    Failed {
        /// The projection.
        projection: String,
        /// The position of the event it failed on.
        position: Option<Position>,
        /// The id of that event.
        event_id: Option<Uuid>,
        /// The handler's (or the store's) error.
        reason: String,
    },
    /// No projection of this name is registered.
    #[error("no projection named {0}")]
    UnknownProjection(String),
    /// A projection of this name is registered already.
    #[error("a projection named {0} is registered already")]
    AlreadyRegistered(String),
    /// More than [`limits::PROJECTIONS_MAX`] projections.
    #[error("at most {} projections can be registered", limits::PROJECTIONS_MAX)]
    TooMany,
    /// The projection cannot be registered as it is: `reason` says why (a SQLite projection
    /// that lists no tables, a filter over the limits).
    #[error("projection {projection} cannot be registered: {reason}")]
    Invalid {
        /// The projection.
        projection: String,
        /// Why.
        reason: String,
    },
    /// A rebuild of this projection is running already.
    #[error("projection {0} is being rebuilt already")]
    RebuildInProgress(String),
    /// The read-model database failed.
    #[error("read-model database: {0}")]
    ReadModel(strata_core::BackendError),
    /// The event store failed a read.
    #[error("event store: {0}")]
    Read(#[from] ReadError),
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::HandlerError;

    #[test]
    fn handler_errors_keep_their_cause() {
        let payload: HandlerError = serde_json::from_str::<u64>("\"x\"").unwrap_err().into();
        let HandlerError::Payload(json) = &payload else {
            panic!("expected a payload error, got {payload:?}");
        };
        assert!(json.is_data(), "the JSON error itself is kept");
        assert!(payload.to_string().starts_with("event payload: "));
        assert!(
            payload.source().is_none(),
            "its text is in the message, not repeated"
        );
        let refused = HandlerError::new("amount beyond i64");
        assert!(matches!(refused, HandlerError::Rejected(ref m) if m == "amount beyond i64"));
        assert!(refused.source().is_none());
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_failing_statement_is_sql_with_its_cause() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let e: HandlerError = conn
            .execute("INSERT INTO missing VALUES (1)", [])
            .unwrap_err()
            .into();
        let HandlerError::Sql(cause) = &e else {
            panic!("expected an SQL error, got {e:?}");
        };
        assert!(cause.downcast_ref::<rusqlite::Error>().is_some());
        assert!(e.to_string().contains("missing"));
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_read_model_database_failure_keeps_the_driver_error() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let e = super::sqlite::db(conn.execute("SELECT * FROM missing", []).unwrap_err());
        let super::ProjectionError::ReadModel(backend) = &e else {
            panic!("expected a read-model error, got {e:?}");
        };
        let cause = backend
            .source()
            .and_then(|s| s.downcast_ref::<rusqlite::Error>());
        assert!(cause.is_some(), "the rusqlite error is the cause");
        assert!(e.to_string().starts_with("read-model database: "));
    }
}
