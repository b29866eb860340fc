//! # strata-postgres
//!
//! Strata's [`EventStore`](strata_core::EventStore) and
//! [`SnapshotStore`](strata_core::SnapshotStore) on PostgreSQL (13 or newer).
//!
//! - **The mission's schema.** Events live in `<schema>.events` with the mission's columns
//!   (`event_id`, `aggregate_id` = stream id, `aggregate_type` = category, `event_type`,
//!   `version`, `data`/`metadata` as `JSONB`, `created_at`, `UNIQUE (aggregate_id, version)`),
//!   plus `position` (the global order), `transaction_id` (for the ordering guarantee),
//!   `content_type` and `data_bytes` (the payload exactly as appended; `data` is its parsed
//!   JSONB copy, NULL for other content types).
//! - **Ordering subscribers can trust.** Readers of `$all` only see events below a watermark,
//!   the oldest transaction still running, and positions are taken in transaction-id order, so
//!   a catch-up reader never skips an event that commits late and never sees one twice. No
//!   table lock, no row every writer updates. The design and its proof are in
//!   `docs/guarantees.md`, "PostgreSQL ordering". A transaction held open anywhere in the
//!   cluster holds `$all` back; [`PostgresStore::watermark`] says since when and which
//!   transaction ([`WatermarkHolder`]), and [`Watermark::check`] turns it into an error that
//!   tells an operator how to end it ([`WatermarkBlocked`]).
//! - **Group commit.** At most [`PgStoreOptions::append_writers`] append transactions run at
//!   once; appends arriving meanwhile share the next one (each still checked and answered on
//!   its own), and after a batch of several a task lingers briefly for the appenders it just
//!   answered. A lone append is one prepared statement.
//! - **Appends inside your transaction.** [`PostgresStore::append_in_transaction`] appends as
//!   the first write of a caller's transaction, so the caller's other writes (a read model, an
//!   outbox) commit or roll back with the events; the ordering guarantee still holds (see
//!   `docs/guarantees.md`, "Appending inside a caller's transaction").
//! - **Read-ahead.** Forward pages of `$all` (up to the subscription page size) are read a few
//!   pages ahead in the background, so a catch-up overlaps reading with delivering. Pages below
//!   the watermark never change, so a page read ahead is exactly what a fresh read returns.
//! - **Wake-ups.** A `LISTEN` connection (reconnecting with backoff) wakes subscriptions when
//!   another process appends; subscriptions poll as a fallback.
//! - **Failover.** The URL may list several hosts (`postgres://u@primary:5432,standby:5432/db?
//!   target_session_attrs=read-write`): the store connects to the first that accepts writes
//!   and, when it loses that one, finds the promoted standby by itself (sqlx reads one host per
//!   URL; the store reads the list as libpq does).
//! - **Append-only in the database.** Triggers refuse `UPDATE`, `DELETE`, `TRUNCATE` and any
//!   `INSERT` into the events table that is not Strata's append (SQLSTATE `SX002`), so no
//!   script or stray SQL can break the ordering guarantee (`docs/guarantees.md`,
//!   "Append-only in the database").
//! - **Migrations** are embedded and versioned, run under an advisory lock; a schema newer than
//!   the code is refused with [`ConnectError::SchemaTooNew`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_core::{EventData, EventStore, ExpectedVersion, ReadStreamOptions, StreamId};
//! use strata_postgres::{PgStoreOptions, PostgresStore};
//!
//! let store = PostgresStore::connect_with(
//!     PgStoreOptions::new("postgres://postgres@127.0.0.1:5432/test").with_schema("bank"),
//! )
//! .await?;
//! let account = StreamId::new("account-123")?;
//! let opened = EventData::json("AccountOpened", &serde_json::json!({"initialBalance": 100}))?;
//! store.append(&account, ExpectedVersion::NoStream, vec![opened]).await?;
//! let events = store.read_stream(&account, ReadStreamOptions::forward()).await?;
//! assert_eq!(events[0].event_type, "AccountOpened");
//! # Ok(()) }
//! ```
//!
//! A wrong URL, a refused connection or a missing database is a [`ConnectError`] whose message
//! is one line naming the problem:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use strata_postgres::{ConnectError, PostgresStore};
//! let err = PostgresStore::connect("mysql://nope").await.unwrap_err();
//! assert!(matches!(err, ConnectError::InvalidUrl { .. }));
//! # });
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod append;
mod archive;
mod error;
mod event_store;
mod hosts;
mod lifecycle;
pub mod limits;
mod migrate;
mod notify;
mod options;
mod read;
mod scavenge;
mod snapshot;
mod sql;
mod store;
mod transaction;
mod watermark;

pub use archive::{ExportHold, ImportError};
pub use error::ConnectError;
pub use migrate::SCHEMA_VERSION;
pub use options::PgStoreOptions;
pub use store::PostgresStore;
pub use transaction::{is_transaction_race, EarlierAppends};
pub use watermark::{Watermark, WatermarkBlocked, WatermarkHolder};

#[cfg(test)]
mod tests {
    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn connect_futures_can_be_spawned() {
        let f = crate::PostgresStore::connect("postgres://x@127.0.0.1:1/x");
        assert_send(&f);
        drop(f);
    }
}
