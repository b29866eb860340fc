//! The [`Repository`]: loads aggregates (snapshot, then replay), executes commands with
//! optimistic concurrency and bounded retries, writes snapshots, answers temporal loads.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use strata_core::{
    ActualVersion, AppendError, EventStore, ExpectedVersion, Position, ReadError,
    ReadStreamOptions, RecordedEvent, Snapshot, SnapshotAndEvents, SnapshotStore, StreamId,
    Timestamp,
};

use crate::aggregate::AggregateState;
use crate::cache::AggregateCache;
use crate::command::CommandEnvelope;
use crate::error::{ExecuteError, LoadError, TakeSnapshotError};
use crate::limits;
use crate::services::{HandleError, HandleWithServices};
use crate::upcast::{EventCodec, EventEnvelope, Upcasters};

/// An aggregate's state as loaded, with the version it is at.
///
/// Dereferences to the state, so `loaded.balance` reads the aggregate's field.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// The aggregate's stream.
    pub stream_id: StreamId,
    /// The state.
    pub state: A,
    /// The version of the last event in the state; `None` when the aggregate has no events.
    pub version: Option<u64>,
    /// The global position of the last event replayed; `None` when no event was replayed (the
    /// state came from a snapshot alone, or there are no events).
    pub last_position: Option<Position>,
    /// When the last event replayed was recorded.
    pub last_recorded_at: Option<Timestamp>,
    /// The version of the snapshot the load started from, if one was used.
    pub snapshot_version: Option<u64>,
    /// How many events this load replayed on top of its starting point (the cached state, the
    /// snapshot, or the start of the stream).
    pub events_replayed: u64,
    /// Whether the load started from the repository's in-memory cache (then caught up with
    /// the events stored since) rather than from a snapshot or the start.
    pub from_cache: bool,
}

impl<A> Loaded<A> {
    /// Whether the aggregate has any event.
    pub fn exists(&self) -> bool {
        self.version.is_some()
    }

    /// The expected version to append after this state.
    pub fn expected_version(&self) -> ExpectedVersion {
        self.version
            .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
    }

    /// The state.
    pub fn into_state(self) -> A {
        self.state
    }
}

impl<A> Deref for Loaded<A> {
    type Target = A;
    fn deref(&self) -> &A {
        &self.state
    }
}

/// What executing a command did.
#[derive(Debug, Clone)]
pub struct Executed<A: AggregateState> {
    /// The aggregate's stream.
    pub stream_id: StreamId,
    /// The stream's version after the command: the version of its last event. `None` only
    /// when the command caused no event and the aggregate has none.
    pub version: Option<u64>,
    /// The global position of the last event appended: wait for read models to reach it to
    /// read your own write. When the command caused no event, the position of the last event
    /// replayed, if any.
    pub position: Option<Position>,
    /// The events the command caused (empty when it changed nothing).
    pub events: Vec<A::Event>,
    /// The state after the events.
    pub state: A,
    /// How many times the command was tried: 1 plus the concurrency conflicts it met.
    pub attempts: u32,
    /// The version of the snapshot written after this command, if one was.
    pub snapshot_version: Option<u64>,
}

impl<A: AggregateState> Deref for Executed<A> {
    type Target = A;
    fn deref(&self) -> &A {
        &self.state
    }
}

/// Loads and saves aggregates of type `A` in any backend `S` (the embedded log, PostgreSQL,
/// the in-memory reference store). Cheap to clone; share one between tasks.
///
/// It also holds the services `A`'s handlers consult ([`HandleWithServices`]): none for an
/// [`crate::Aggregate`] ([`Repository::new`]), the aggregate's own otherwise
/// ([`Repository::with_services`]).
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use strata::{Aggregate, DomainEvent, Repository};
/// # #[derive(Debug, Default, Clone, Serialize, Deserialize)] struct Counter { value: u64 }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)] enum Ev { Incremented { by: u64 } }
/// # impl DomainEvent for Ev {}
/// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("no")] struct No;
/// # impl Aggregate for Counter {
/// #     type Event = Ev; type Command = u64; type Error = No;
/// #     const CATEGORY: &'static str = "counter";
/// #     fn handle(&self, by: u64) -> Result<Vec<Ev>, No> { Ok(vec![Ev::Incremented { by }]) }
/// #     fn apply(&mut self, Ev::Incremented { by }: &Ev) { self.value += by }
/// # }
/// # async fn demo<S: strata::EventStore + strata::SnapshotStore>(store: S) -> Result<(), Box<dyn std::error::Error>> {
/// let counters = Repository::<Counter, _>::new(store).with_snapshot_interval(50);
/// let done = counters.execute("7", 5u64).await?;
/// assert_eq!(done.version, Some(0));
/// assert_eq!(counters.load("7").await?.value, 5);
/// # Ok(()) }
/// ```
pub struct Repository<A: HandleWithServices, S> {
    store: Arc<S>,
    services: Arc<A::Services>,
    cache: Arc<AggregateCache<A>>,
    codec: EventCodec<A::Event>,
    snapshot_interval: u64,
    max_retries: u32,
    page_events: usize,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: HandleWithServices, S> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Repository {
            store: Arc::clone(&self.store),
            services: Arc::clone(&self.services),
            cache: Arc::clone(&self.cache),
            codec: self.codec.clone(),
            snapshot_interval: self.snapshot_interval,
            max_retries: self.max_retries,
            page_events: self.page_events,
            _aggregate: PhantomData,
        }
    }
}

impl<A: HandleWithServices, S> fmt::Debug for Repository<A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("category", &A::CATEGORY)
            .field("snapshot_interval", &self.snapshot_interval)
            .field("max_retries", &self.max_retries)
            .field("codec", &self.codec)
            .finish()
    }
}

/// How far a load goes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bound {
    max_version: Option<u64>,
    max_position: Option<Position>,
}

impl<A, S> Repository<A, S>
where
    A: HandleWithServices<Services = ()>,
    S: EventStore + SnapshotStore,
{
    /// A repository over `store`, with `A`'s snapshot interval and its events' upcasters, for
    /// an aggregate whose handlers need no services (every [`crate::Aggregate`]).
    pub fn new(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// A repository over a shared store, for an aggregate without services.
    pub fn from_arc(store: Arc<S>) -> Self {
        Self::from_arcs(store, Arc::new(()))
    }
}

impl<A: HandleWithServices, S: EventStore + SnapshotStore> Repository<A, S> {
    /// A repository over `store` that passes `services` to every
    /// [`HandleWithServices::handle_with`].
    pub fn with_services(store: S, services: A::Services) -> Self {
        Self::from_arcs(Arc::new(store), Arc::new(services))
    }

    /// A repository over a shared store with shared services.
    pub fn from_arcs(store: Arc<S>, services: Arc<A::Services>) -> Self {
        Repository {
            store,
            services,
            cache: Arc::new(AggregateCache::new(limits::AGGREGATE_CACHE_ENTRIES_DEFAULT)),
            codec: EventCodec::new(),
            snapshot_interval: A::SNAPSHOT_INTERVAL,
            max_retries: limits::COMMAND_RETRIES_DEFAULT,
            page_events: limits::LOAD_PAGE_EVENTS,
            _aggregate: PhantomData,
        }
    }

    /// Takes a snapshot every `events` events (0: never), instead of
    /// [`AggregateState::SNAPSHOT_INTERVAL`].
    pub fn with_snapshot_interval(mut self, events: u64) -> Self {
        self.snapshot_interval = events;
        self
    }

    /// Retries a command at most `retries` times after concurrency conflicts (capped at
    /// [`limits::COMMAND_RETRIES_MAX`]).
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries.min(limits::COMMAND_RETRIES_MAX);
        self
    }

    /// Keeps at most `aggregates` recently used aggregates in memory (0: none), instead of
    /// [`limits::AGGREGATE_CACHE_ENTRIES_DEFAULT`]. A cached aggregate is always caught up with
    /// the events stored after it before it is used, so the cache never serves stale state;
    /// it saves the snapshot load and the replay.
    pub fn with_cache_capacity(mut self, aggregates: usize) -> Self {
        self.cache = Arc::new(AggregateCache::new(
            aggregates.min(limits::AGGREGATE_CACHE_ENTRIES_MAX),
        ));
        self
    }

    /// Uses these upcasters instead of the events' own ([`crate::DomainEvent::upcasters`]).
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.codec = EventCodec::with_upcasters(upcasters);
        self
    }

    /// Reads at most `events` events per page while replaying (1 to
    /// [`strata_core::limits::READ_PAGE_MAX_EVENTS`]).
    pub fn with_page_events(mut self, events: usize) -> Self {
        self.page_events = events.clamp(1, strata_core::limits::READ_PAGE_MAX_EVENTS);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The services passed to the aggregate's handlers.
    pub fn services(&self) -> &Arc<A::Services> {
        &self.services
    }

    /// The codec that encodes and decodes (and upcasts) this aggregate's events.
    pub fn codec(&self) -> &EventCodec<A::Event> {
        &self.codec
    }

    /// The snapshot interval in force.
    pub fn snapshot_interval(&self) -> u64 {
        self.snapshot_interval
    }

    /// The current state of the aggregate `id`: its newest usable snapshot, then the events
    /// after it. An aggregate with no events loads as `A::default()` at version `None`.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, LoadError> {
        let stream = A::stream_id(id)?;
        self.load_stream(&stream).await
    }

    /// [`Repository::load`] by stream id.
    pub async fn load_stream(&self, stream: &StreamId) -> Result<Loaded<A>, LoadError> {
        if let Some(mut cached) = self.cache.get(stream) {
            cached.from_cache = true;
            cached.events_replayed = 0;
            self.replay_into(&mut cached, Bound::default()).await?;
            if cached.events_replayed > 0 {
                self.cache.put(&cached);
            }
            return Ok(cached);
        }
        let loaded = self.load_bounded(stream, Bound::default()).await?;
        self.cache.put(&loaded);
        Ok(loaded)
    }

    /// The state of the aggregate `id` right after its event at `version`, from the newest
    /// snapshot at or below that version. [`LoadError::VersionNotFound`] when the stream has
    /// not reached `version`.
    pub async fn load_at_version(&self, id: &str, version: u64) -> Result<Loaded<A>, LoadError> {
        let stream = A::stream_id(id)?;
        let loaded = self
            .load_bounded(
                &stream,
                Bound {
                    max_version: Some(version),
                    max_position: None,
                },
            )
            .await?;
        if loaded.version != Some(version) {
            return Err(LoadError::VersionNotFound {
                stream,
                requested: version,
                current: ActualVersion(loaded.version),
            });
        }
        Ok(loaded)
    }

    /// The state of the aggregate `id` as it was at time `at` ("what was the balance on
    /// Jan 1st?"): every event recorded at or before `at`, from the newest snapshot at or
    /// below the version it had then. An aggregate created after `at` loads as
    /// `A::default()` at version `None`.
    pub async fn load_as_of(&self, id: &str, at: Timestamp) -> Result<Loaded<A>, LoadError> {
        let stream = A::stream_id(id)?;
        let read_err = |source| LoadError::Read {
            stream: stream.clone(),
            source,
        };
        let Some(position) = self.store.position_at(at).await.map_err(read_err)? else {
            return Ok(empty(stream));
        };
        // The version the stream had at that position: its newest event at or below it.
        let last = match self
            .store
            .read_stream(
                &stream,
                ReadStreamOptions::backward()
                    .limit(1)
                    .max_position(position),
            )
            .await
        {
            Ok(events) => events.first().map(|e| e.stream_version),
            Err(ReadError::StreamNotFound(_)) => None,
            Err(e) => return Err(read_err(e)),
        };
        let Some(version) = last else {
            return Ok(empty(stream));
        };
        self.load_bounded(
            &stream,
            Bound {
                max_version: Some(version),
                max_position: Some(position),
            },
        )
        .await
    }

    /// Executes a command on the aggregate `id`: loads it (from the cache when it is there,
    /// see [`Repository::with_cache_capacity`]), lets it decide (with the repository's
    /// services, see [`HandleWithServices`]), and appends the events it caused with the
    /// version it was loaded at as the expected version. When another writer got there
    /// first, reads what it wrote and decides again — asking the services again — at most
    /// [`Repository::with_max_retries`] times, then reports [`ExecuteError::Conflict`]. A
    /// refusal or a no-op decided on a cached state is checked against the events stored
    /// since before it is returned. A service that cannot answer ends the command with
    /// [`ExecuteError::Service`].
    ///
    /// Every event carries the command's metadata (see [`crate::CommandContext`]). A snapshot
    /// is written when [`Repository::snapshot_interval`] events have accumulated since the
    /// last one; a failure to write it is logged and does not fail the command.
    pub async fn execute(
        &self,
        id: &str,
        command: impl Into<CommandEnvelope<A::Command>>,
    ) -> Result<Executed<A>, ExecuteError<A::Error, A::ServiceError>> {
        let stream = A::stream_id(id).map_err(LoadError::InvalidId)?;
        self.execute_stream(&stream, command).await
    }

    /// [`Repository::execute`] by stream id.
    pub async fn execute_stream(
        &self,
        stream: &StreamId,
        command: impl Into<CommandEnvelope<A::Command>>,
    ) -> Result<Executed<A>, ExecuteError<A::Error, A::ServiceError>> {
        let CommandEnvelope { command, context } = command.into();
        let metadata = context.event_metadata();
        // A cached state is used as it is: the append's exact expected version proves it was
        // current, and a conflict catches it up. Only a refusal or a no-op decided on it is
        // checked against the events stored since before it is returned (below), because
        // those outcomes are not confirmed by an append. This saves a read per command.
        let (mut loaded, mut current) = match self.cache.get(stream) {
            Some(mut cached) => {
                cached.from_cache = true;
                cached.events_replayed = 0;
                (cached, false)
            }
            None => {
                let loaded = self.load_bounded(stream, Bound::default()).await?;
                self.cache.put(&loaded);
                (loaded, true)
            }
        };
        let mut attempts = 1u32;
        loop {
            let decision = match loaded
                .state
                .handle_with(command.clone(), &self.services)
                .await
            {
                Ok(events) => Ok(events),
                Err(HandleError::Rejected(refusal)) => Err(refusal),
                // Returned as it is, even when decided on a cached state: the failure is a
                // fact about the service, and deciding again would only ask it again.
                Err(HandleError::Service(source)) => {
                    return Err(ExecuteError::Service {
                        stream: stream.clone(),
                        source,
                    })
                }
            };
            let appends = matches!(&decision, Ok(events) if !events.is_empty());
            if !appends && !current {
                let before = loaded.version;
                self.replay_into(&mut loaded, Bound::default()).await?;
                current = true;
                if loaded.version != before {
                    self.cache.put(&loaded);
                    continue;
                }
            }
            let events = decision.map_err(ExecuteError::Rejected)?;
            if events.is_empty() {
                return Ok(Executed {
                    stream_id: loaded.stream_id,
                    version: loaded.version,
                    position: loaded.last_position,
                    events,
                    state: loaded.state,
                    attempts,
                    snapshot_version: None,
                });
            }
            let data = events
                .iter()
                .enumerate()
                .map(|(i, event)| {
                    self.codec
                        .encode_with(event, metadata.clone())
                        .map(|d| d.with_id(context.event_id(i)))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| ExecuteError::Encode {
                    stream: stream.clone(),
                    source,
                })?;
            let expected = loaded.expected_version();
            match self.store.append(stream, expected, data).await {
                Ok(result) => {
                    // The events follow the state's (a new aggregate of a re-created stream
                    // starts after its deleted versions).
                    debug_assert!(loaded
                        .version
                        .is_none_or(|v| { result.stream_version == v + events.len() as u64 }));
                    for event in &events {
                        loaded.state.apply(event);
                    }
                    let snapshot_version = self
                        .maybe_snapshot(
                            stream,
                            &loaded.state,
                            result.stream_version,
                            loaded.snapshot_version,
                        )
                        .await;
                    loaded.version = Some(result.stream_version);
                    loaded.last_position = Some(result.last_position());
                    loaded.last_recorded_at = None;
                    loaded.snapshot_version = snapshot_version.or(loaded.snapshot_version);
                    self.cache.put(&loaded);
                    return Ok(Executed {
                        stream_id: loaded.stream_id,
                        version: Some(result.stream_version),
                        position: Some(result.last_position()),
                        events,
                        state: loaded.state,
                        attempts,
                        snapshot_version,
                    });
                }
                Err(AppendError::WrongExpectedVersion {
                    expected, actual, ..
                }) => {
                    if attempts > self.max_retries {
                        return Err(ExecuteError::Conflict {
                            stream: stream.clone(),
                            attempts,
                            expected,
                            actual,
                        });
                    }
                    tracing::debug!(
                        stream = %stream,
                        attempt = attempts,
                        %expected,
                        %actual,
                        "concurrency conflict; catching up and deciding again"
                    );
                    // Deciding does not change the state, so catching up from where this
                    // load stopped gives the same state as a fresh load. The catch-up checks
                    // the state's last event first (the stream may have been deleted).
                    loaded.events_replayed = 0;
                    self.replay_into(&mut loaded, Bound::default()).await?;
                    self.cache.put(&loaded);
                    current = true;
                    attempts += 1;
                }
                Err(AppendError::EventIdConflict { .. }) => {
                    return Err(ExecuteError::DuplicateCommand {
                        stream: stream.clone(),
                        command_id: context.command_id,
                    })
                }
                Err(source) => {
                    return Err(ExecuteError::Append {
                        stream: stream.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// Writes a snapshot of the aggregate `id` at its current version now, whatever the
    /// interval. Returns the version it covers, or `None` when the aggregate has no events.
    pub async fn snapshot(&self, id: &str) -> Result<Option<u64>, TakeSnapshotError> {
        let stream = A::stream_id(id).map_err(LoadError::InvalidId)?;
        let loaded = self.load_stream(&stream).await?;
        let Some(version) = loaded.version else {
            return Ok(None);
        };
        let snapshot = encode_snapshot::<A>(&stream, &loaded.state, version).map_err(|e| {
            TakeSnapshotError::Serialize {
                stream: stream.clone(),
                reason: e.to_string(),
            }
        })?;
        self.store.save_snapshot(snapshot).await?;
        Ok(Some(version))
    }

    /// Deletes every snapshot of the aggregate `id` and forgets its cached state; the next
    /// load replays all its events (and the next command writes a fresh snapshot). Returns
    /// how many snapshots there were.
    pub async fn delete_snapshots(&self, id: &str) -> Result<u64, TakeSnapshotError> {
        let stream = A::stream_id(id).map_err(LoadError::InvalidId)?;
        self.cache.remove(&stream);
        Ok(self.store.delete_snapshots(&stream).await?)
    }

    /// Forgets the cached state of the aggregate `id`, if any; its next load starts from its
    /// newest snapshot.
    pub fn evict(&self, id: &str) {
        if let Ok(stream) = A::stream_id(id) {
            self.cache.remove(&stream);
        }
    }

    /// The decoded (and upcast) events of the aggregate `id`, from `from_version`, at most
    /// `limit` (capped at [`limits::HISTORY_PAGE_MAX_EVENTS`]). Empty for an aggregate
    /// without events.
    pub async fn read_events(
        &self,
        id: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope<A::Event>>, LoadError> {
        let stream = A::stream_id(id)?;
        let options = ReadStreamOptions::forward()
            .from_version(from_version)
            .limit(limit.min(limits::HISTORY_PAGE_MAX_EVENTS));
        let events = match self.store.read_stream(&stream, options).await {
            Ok(events) => events,
            Err(ReadError::StreamNotFound(_)) => Vec::new(),
            Err(source) => return Err(LoadError::Read { stream, source }),
        };
        events
            .into_iter()
            .map(|e| self.codec.decode_envelope(e).map_err(LoadError::from))
            .collect()
    }

    async fn load_bounded(&self, stream: &StreamId, bound: Bound) -> Result<Loaded<A>, LoadError> {
        let mut loaded = empty(stream.clone());
        // The snapshot used, and the events a store read with it (PostgreSQL: in the same
        // query), which then need no read of their own.
        let (snapshot, first_page) = if bound == Bound::default() {
            let schema = A::SNAPSHOT_SCHEMA_VERSION;
            match self
                .store
                .load_snapshot_and_events(stream, schema, self.page_events)
                .await
            {
                Ok(SnapshotAndEvents { snapshot, events }) => match snapshot {
                    None => (None, events),
                    // A snapshot not used: the events after it are not the ones to replay.
                    Some(snapshot) => match self.accept_snapshot(stream, None, snapshot) {
                        Some(accepted) => (Some(accepted), events),
                        None => (None, None),
                    },
                },
                Err(error) => {
                    tracing::warn!(stream = %stream, %error, "could not load the snapshot and the events after it; replaying all events");
                    (None, None)
                }
            }
        } else {
            (self.read_snapshot(stream, bound.max_version).await, None)
        };
        if let Some((state, version)) = snapshot {
            loaded.state = state;
            loaded.version = Some(version);
            loaded.snapshot_version = Some(version);
        }
        let replayed = match first_page {
            // Empty, the store does not say whether the stream exists: a read does.
            Some(events) if !events.is_empty() => {
                let full = events.len() >= self.page_events;
                match self.apply_events(&mut loaded, events) {
                    Ok(()) if full => self.replay_into(&mut loaded, bound).await,
                    other => other,
                }
            }
            _ => self.replay_into(&mut loaded, bound).await,
        };
        match replayed {
            Err(LoadError::Read {
                source: ReadError::StreamNotFound(_),
                ..
            }) => {
                if loaded.snapshot_version.is_some() {
                    tracing::warn!(
                        stream = %stream,
                        "a snapshot exists for a stream without events; ignoring it"
                    );
                }
                Ok(empty(stream.clone()))
            }
            Err(e) => Err(e),
            Ok(()) => Ok(loaded),
        }
    }

    /// Applies the events after `loaded.version`, page by page, up to `bound`.
    ///
    /// From a state not read by this call (a snapshot's, or the cache's), the first read starts
    /// at the state's own last event: when that event is no longer there (the stream was
    /// deleted, or truncated past it), the state holds a history that is gone, and the stream
    /// is replayed from its first event instead (a re-created stream begins anew; a deleted
    /// one is a new aggregate).
    async fn replay_into(&self, loaded: &mut Loaded<A>, bound: Bound) -> Result<(), LoadError> {
        let mut verify = loaded.events_replayed == 0 && loaded.version.is_some();
        let mut anew = false;
        let mut next = loaded.version.map_or(0, |v| v + 1);
        loop {
            let mut limit = self.page_events;
            if let Some(max) = bound.max_version {
                if next > max {
                    return Ok(());
                }
                limit = usize::try_from(max - next + 1).map_or(limit, |left| left.min(limit));
            }
            let from = if verify { next - 1 } else { next };
            let mut options = ReadStreamOptions::forward().from_version(from).limit(limit);
            if let Some(position) = bound.max_position {
                options = options.max_position(position);
            }
            let mut events = match self.store.read_stream(&loaded.stream_id, options).await {
                Ok(events) => events,
                // A stream that has events never answers "not found" (so, after events were
                // replayed, it means none since). Right after a snapshot it means a stream
                // without events: the caller drops the snapshot.
                Err(ReadError::StreamNotFound(_))
                    if verify || anew || loaded.events_replayed > 0 =>
                {
                    Vec::new()
                }
                Err(source) => {
                    return Err(LoadError::Read {
                        stream: loaded.stream_id.clone(),
                        source,
                    })
                }
            };
            let count = events.len();
            if std::mem::take(&mut verify) {
                if events.first().map(|e| e.stream_version) != Some(from) {
                    tracing::info!(
                        stream = %loaded.stream_id,
                        version = from,
                        "the state's last event is deleted or truncated; replaying the stream"
                    );
                    *loaded = empty(loaded.stream_id.clone());
                    anew = true;
                    next = 0;
                    continue;
                }
                events.remove(0);
            }
            self.apply_events(loaded, events)?;
            next = loaded.version.map_or(0, |v| v + 1);
            if count < limit {
                return Ok(());
            }
        }
    }

    /// Applies `events`, the next ones after `loaded.version` in version order. A load from
    /// the start takes the first event read as the start: a stream soft-deleted and
    /// re-created (or truncated) begins at a later version.
    fn apply_events(
        &self,
        loaded: &mut Loaded<A>,
        events: Vec<RecordedEvent>,
    ) -> Result<(), LoadError> {
        let fresh = loaded.version.is_none() && loaded.events_replayed == 0;
        let first = match (loaded.version, events.first()) {
            (None, Some(e)) if fresh => e.stream_version,
            (version, _) => version.map_or(0, |v| v + 1),
        };
        for (next, event) in (first..).zip(events) {
            if event.stream_version != next {
                return Err(LoadError::OutOfOrder {
                    stream: loaded.stream_id.clone(),
                    expected: next,
                    found: event.stream_version,
                });
            }
            let decoded = self.codec.decode(&event)?;
            loaded.state.apply(&decoded);
            loaded.version = Some(next);
            loaded.last_position = Some(event.position);
            loaded.last_recorded_at = Some(event.recorded_at);
            loaded.events_replayed += 1;
        }
        Ok(())
    }

    async fn read_snapshot(&self, stream: &StreamId, max_version: Option<u64>) -> Option<(A, u64)> {
        let schema = A::SNAPSHOT_SCHEMA_VERSION;
        match self.store.load_snapshot(stream, schema, max_version).await {
            Ok(snapshot) => self.accept_snapshot(stream, max_version, snapshot?),
            Err(error) => {
                tracing::warn!(stream = %stream, %error, "could not load a snapshot; replaying all events");
                None
            }
        }
    }

    /// The state and version of `snapshot`, if it is the one asked for and decodes.
    fn accept_snapshot(
        &self,
        stream: &StreamId,
        max_version: Option<u64>,
        snapshot: Snapshot,
    ) -> Option<(A, u64)> {
        let schema = A::SNAPSHOT_SCHEMA_VERSION;
        // Pair assertion: the store answered what was asked.
        if snapshot.stream_id != *stream
            || snapshot.schema_version != schema
            || max_version.is_some_and(|max| snapshot.stream_version > max)
        {
            tracing::warn!(
                stream = %stream,
                snapshot_stream = %snapshot.stream_id,
                snapshot_version = snapshot.stream_version,
                snapshot_schema = snapshot.schema_version,
                "the snapshot store returned a snapshot that does not match the request; ignoring it"
            );
            return None;
        }
        match serde_json::from_slice::<A>(&snapshot.data) {
            Ok(state) => Some((state, snapshot.stream_version)),
            Err(error) => {
                tracing::warn!(
                    stream = %stream,
                    version = snapshot.stream_version,
                    %error,
                    "could not decode a snapshot; replaying all events (bump SNAPSHOT_SCHEMA_VERSION when the state changes)"
                );
                None
            }
        }
    }

    /// Writes a snapshot when the interval has passed since the one the load started from.
    /// Never fails: a snapshot is an optimisation, and a failure is logged.
    async fn maybe_snapshot(
        &self,
        stream: &StreamId,
        state: &A,
        version: u64,
        previous: Option<u64>,
    ) -> Option<u64> {
        if self.snapshot_interval == 0 {
            return None;
        }
        let since = (version + 1).saturating_sub(previous.map_or(0, |v| v + 1));
        if since < self.snapshot_interval {
            return None;
        }
        let snapshot = match encode_snapshot::<A>(stream, state, version) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::warn!(stream = %stream, version, %error, "could not serialize a snapshot; continuing without");
                return None;
            }
        };
        match self.store.save_snapshot(snapshot).await {
            Ok(()) => {
                tracing::debug!(stream = %stream, version, "snapshot written");
                Some(version)
            }
            Err(error) => {
                tracing::warn!(stream = %stream, version, %error, "could not write a snapshot; continuing without");
                None
            }
        }
    }
}

fn empty<A: Default>(stream: StreamId) -> Loaded<A> {
    Loaded {
        stream_id: stream,
        state: A::default(),
        version: None,
        last_position: None,
        last_recorded_at: None,
        snapshot_version: None,
        events_replayed: 0,
        from_cache: false,
    }
}

fn encode_snapshot<A: AggregateState>(
    stream: &StreamId,
    state: &A,
    version: u64,
) -> Result<Snapshot, serde_json::Error> {
    Ok(Snapshot {
        stream_id: stream.clone(),
        stream_version: version,
        schema_version: A::SNAPSHOT_SCHEMA_VERSION,
        data: serde_json::to_vec(state)?,
        taken_at: chrono::Utc::now(),
    })
}
