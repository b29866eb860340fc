//! Typed projections: one trait, [`ReadModel`], for every read-model store. A read model
//! declares the events it consumes (an aggregate's event enum, or any [`DomainEvent`]) and
//! receives them decoded and upcast, with their [`Envelope`] (position, stream, version,
//! recorded-at, metadata), instead of digging in JSON by event-type name.
//!
//! The store is the trait's parameter: `ReadModel<Sqlite>` writes through [`Sql`] on the
//! runner's blocking thread and returns a `Result`; `ReadModel<Postgres>` writes through a
//! `&mut PgConnection` and returns a future. Either way the runner applies a batch and moves
//! the checkpoint in one transaction, so each event changes the read model exactly once.
//! Register one by wrapping it in [`Typed`]: `projections.spawn(Typed::new(Balances))`.
//!
//! Events of types the event family does not know are skipped (the checkpoint moves past
//! them); an event of a known type that cannot be decoded or upcast fails the projection at
//! that event, like a handler error.
//!
//! [`Sql`]: super::Sql

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;
use strata_core::{Filter, Metadata, Position, RecordedEvent, StreamId, Timestamp, Uuid};

use super::HandlerError;
use crate::upcast::{DecodeError, DecodeErrorKind, EventCodec};
use crate::DomainEvent;

/// A read-model store a [`ReadModel`] can write to: what its handlers receive and return.
pub trait ReadModelDb: Send + Sync + 'static {
    /// What `setup` and `apply` write through.
    type Handle<'a>;
    /// What they return: a `Result` for a store written synchronously, a future for one
    /// written asynchronously.
    type Output<'a>;
}

/// SQLite read models ([`super::Projections`]): handlers write through [`super::Sql`] and
/// return a `Result`.
#[cfg(feature = "sqlite")]
#[derive(Debug)]
pub enum Sqlite {}

#[cfg(feature = "sqlite")]
impl ReadModelDb for Sqlite {
    type Handle<'a> = &'a super::Sql<'a>;
    type Output<'a> = Result<(), HandlerError>;
}

/// PostgreSQL read models ([`super::PgProjections`]): handlers write through the batch's
/// connection (its transaction, `search_path` set to the read-model schema) and return a
/// future ([`PgOutput`]).
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub enum Postgres {}

/// What a `ReadModel<Postgres>` handler returns: `Box::pin(async move { ... })`.
#[cfg(feature = "postgres")]
pub type PgOutput<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HandlerError>> + Send + 'a>>;

#[cfg(feature = "postgres")]
impl ReadModelDb for Postgres {
    type Handle<'a> = &'a mut sqlx::postgres::PgConnection;
    type Output<'a> = PgOutput<'a>;
}

/// A decoded event with where and when it was recorded, borrowed from the stored event.
#[derive(Debug)]
#[non_exhaustive]
pub struct Envelope<'a, E> {
    /// The event, decoded and upcast to its newest schema.
    pub event: E,
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: &'a StreamId,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its global position (the projection's checkpoint once applied).
    pub position: Position,
    /// When it was recorded.
    pub recorded_at: Timestamp,
    /// The stored event type.
    pub event_type: &'a str,
    /// Its metadata (correlation id, causation id, user id, ...).
    pub metadata: &'a Metadata,
}

impl<E> Envelope<'_, E> {
    /// The stream's id after its category: `123` for `account-123` (the whole id when it
    /// has no `-`).
    pub fn stream_key(&self) -> &str {
        let s = self.stream_id.as_str();
        s.split_once('-').map_or(s, |(_, id)| id)
    }
}

/// A read model fed with typed events, stored in `Db` ([`Sqlite`] or [`Postgres`]).
///
/// ```
/// # #[cfg(feature = "sqlite")] {
/// use serde::{Deserialize, Serialize};
/// use strata::projection::{Envelope, HandlerError, ReadModel, Sql, Sqlite};
/// use strata::DomainEvent;
///
/// #[derive(Debug, Serialize, Deserialize)]
/// enum AccountEvent {
///     AccountOpened { owner: String },
///     MoneyDeposited { amount: i64 },
/// }
/// impl DomainEvent for AccountEvent {}
///
/// struct Balances;
/// impl ReadModel<Sqlite> for Balances {
///     type Event = AccountEvent;
///     fn name(&self) -> &str { "balances" }
///     fn tables(&self) -> &[&'static str] { &["balances"] }
///     fn setup<'a>(&'a self, sql: &'a Sql<'a>) -> Result<(), HandlerError> {
///         sql.execute_batch("CREATE TABLE {balances} (account TEXT PRIMARY KEY, balance INTEGER)")
///     }
///     fn apply<'a>(&'a self, sql: &'a Sql<'a>, e: &'a Envelope<'a, AccountEvent>)
///         -> Result<(), HandlerError> {
///         match &e.event {
///             AccountEvent::AccountOpened { .. } => sql.execute(
///                 "INSERT INTO {balances} VALUES (?1, 0)",
///                 rusqlite::params![e.stream_key()],
///             )?,
///             AccountEvent::MoneyDeposited { amount } => sql.execute(
///                 "UPDATE {balances} SET balance = balance + ?2 WHERE account = ?1",
///                 rusqlite::params![e.stream_key(), amount],
///             )?,
///         };
///         Ok(())
///     }
/// }
/// # }
/// ```
pub trait ReadModel<Db: ReadModelDb>: Send + Sync + 'static {
    /// The events it consumes.
    type Event: DomainEvent + Serialize + DeserializeOwned;

    /// A stable name: the key of its checkpoint and status.
    fn name(&self) -> &str;

    /// The events it wants. The default: every event type of [`Self::Event`] (all events
    /// when the family cannot list its types). Narrow it (to categories, say); events outside
    /// it move the checkpoint without reaching the handler.
    /// The default matches those types in every category: narrow it to the categories the
    /// model reads when other categories use the same type names.
    fn filter(&self) -> Filter {
        let types = <Self::Event as DomainEvent>::event_types();
        if types.is_empty() || types.len() > strata_core::limits::FILTER_MAX_TERMS {
            // Unknown types are skipped when decoding, so no filter loses nothing.
            Filter::default()
        } else {
            Filter::default().event_types(types)
        }
    }

    /// The tables it owns. SQLite: every table it writes, named `{table}` in its SQL, so that a
    /// rebuild writes fresh copies and swaps them in (registering a SQLite model with none is
    /// refused). PostgreSQL read models own the schema's tables they create: `&[]`.
    fn tables(&self) -> &[&'static str];

    /// Creates its tables in a fresh, empty generation (SQLite) or if they do not exist
    /// (PostgreSQL).
    fn setup<'a>(&'a self, db: Db::Handle<'a>) -> Db::Output<'a>;

    /// Applies one event inside the batch's transaction. An error rolls the batch back; the
    /// event is retried with backoff and, if it keeps failing, the projection stops as failed
    /// at that event.
    fn apply<'a>(
        &'a self,
        db: Db::Handle<'a>,
        event: &'a Envelope<'a, Self::Event>,
    ) -> Db::Output<'a>;
}

/// A [`ReadModel`] as the runner of its store takes it: `Typed<M, Sqlite>` is a
/// [`super::Projection`], `Typed<M, Postgres>` a [`super::PgProjection`]. It decodes (and
/// upcasts) each event with the event family's [`EventCodec`] before the read model sees it.
pub struct Typed<M: ReadModel<Db>, Db: ReadModelDb> {
    model: M,
    codec: EventCodec<M::Event>,
    _db: PhantomData<fn() -> Db>,
}

impl<M: ReadModel<Db>, Db: ReadModelDb> std::fmt::Debug for Typed<M, Db> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Typed")
            .field("name", &self.model.name())
            .finish_non_exhaustive()
    }
}

impl<M: ReadModel<Db>, Db: ReadModelDb> Typed<M, Db> {
    /// Wraps `model`, decoding with its events' own upcasters.
    pub fn new(model: M) -> Self {
        Typed {
            model,
            codec: EventCodec::new(),
            _db: PhantomData,
        }
    }

    /// Wraps `model`, decoding with `upcasters` instead of the events' own (as
    /// [`crate::Repository::with_upcasters`] does for the write side).
    pub fn with_upcasters(model: M, upcasters: crate::Upcasters) -> Self {
        Typed {
            model,
            codec: EventCodec::with_upcasters(upcasters),
            _db: PhantomData,
        }
    }

    /// The read model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Decodes `raw` for the read model: `Ok(None)` for an event type the family does not
    /// know (skipped).
    fn decode<'a>(
        &self,
        raw: &'a RecordedEvent,
    ) -> Result<Option<Envelope<'a, M::Event>>, DecodeError> {
        // Before decoding: an event of another family may not even be JSON.
        if !self.codec.knows(&raw.event_type) {
            return Ok(None);
        }
        match self.codec.decode(raw) {
            Ok(event) => Ok(Some(Envelope {
                event,
                event_id: raw.event_id,
                stream_id: &raw.stream_id,
                stream_version: raw.stream_version,
                position: raw.position,
                recorded_at: raw.recorded_at,
                event_type: &raw.event_type,
                metadata: &raw.metadata,
            })),
            Err(e) if e.kind == DecodeErrorKind::UnknownEventType => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(feature = "sqlite")]
impl<M: ReadModel<Sqlite>> super::Projection for Typed<M, Sqlite> {
    fn name(&self) -> &str {
        self.model.name()
    }

    fn filter(&self) -> Filter {
        self.model.filter()
    }

    fn tables(&self) -> &[&'static str] {
        self.model.tables()
    }

    fn setup(&self, sql: &super::Sql<'_>) -> Result<(), HandlerError> {
        self.model.setup(sql)
    }

    fn apply(&self, sql: &super::Sql<'_>, event: &RecordedEvent) -> Result<(), HandlerError> {
        match self.decode(event)? {
            Some(envelope) => self.model.apply(sql, &envelope),
            None => Ok(()),
        }
    }
}

#[cfg(feature = "postgres")]
#[async_trait::async_trait]
impl<M: ReadModel<Postgres>> super::PgProjection for Typed<M, Postgres>
where
    M::Event: Send + Sync,
{
    fn name(&self) -> &str {
        self.model.name()
    }

    fn filter(&self) -> Filter {
        self.model.filter()
    }

    async fn setup(&self, conn: &mut sqlx::postgres::PgConnection) -> Result<(), HandlerError> {
        self.model.setup(conn).await
    }

    async fn apply(
        &self,
        conn: &mut sqlx::postgres::PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), HandlerError> {
        match self.decode(event)? {
            Some(envelope) => self.model.apply(conn, &envelope).await,
            None => Ok(()),
        }
    }
}
