//! Shared pieces of the integration tests: a small aggregate, store factories, and store
//! wrappers that inject faults (failing snapshot writes, competing writers).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata::{
    async_trait, AllPage, AppendError, AppendResult, CategorySummary, EventData, EventStore,
    ExpectedVersion, ListOptions, Page, Position, ReadAllOptions, ReadError, ReadStreamOptions,
    RecordedEvent, Snapshot, SnapshotAndEvents, SnapshotError, SnapshotStore, StreamId, StreamInfo,
    StreamSummary, SubscribeFrom, Subscription, SubscriptionTarget, Timestamp,
};
use strata::{Aggregate, DomainEvent};
use tokio::sync::watch;

pub mod pg;

/// A running total that can be closed. Small enough to reason about in every test.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub total: i64,
    pub count: u64,
    pub closed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TallyEvent {
    Added { amount: i64 },
    Closed,
}

impl DomainEvent for TallyEvent {}

#[derive(Debug, Clone)]
pub enum TallyCommand {
    Add(i64),
    AddMany(Vec<i64>),
    Close,
    Nothing,
    /// Adds `amount` only when the total is `expected_total` (a rule that depends on state).
    AddIfTotal {
        expected_total: i64,
        amount: i64,
    },
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum TallyError {
    #[error("the tally is closed")]
    Closed,
    #[error("adding zero changes nothing")]
    Zero,
    #[error("the total is {actual}, not {expected}")]
    WrongTotal { expected: i64, actual: i64 },
}

impl Aggregate for Tally {
    type Event = TallyEvent;
    type Command = TallyCommand;
    type Error = TallyError;
    const CATEGORY: &'static str = "tally";

    fn handle(&self, command: TallyCommand) -> Result<Vec<TallyEvent>, TallyError> {
        if self.closed {
            return Err(TallyError::Closed);
        }
        match command {
            TallyCommand::Add(0) => Err(TallyError::Zero),
            TallyCommand::Add(amount) => Ok(vec![TallyEvent::Added { amount }]),
            TallyCommand::AddMany(amounts) => Ok(amounts
                .into_iter()
                .map(|amount| TallyEvent::Added { amount })
                .collect()),
            TallyCommand::Close => Ok(vec![TallyEvent::Closed]),
            TallyCommand::Nothing => Ok(vec![]),
            TallyCommand::AddIfTotal {
                expected_total,
                amount,
            } => {
                if self.total == expected_total {
                    Ok(vec![TallyEvent::Added { amount }])
                } else {
                    Err(TallyError::WrongTotal {
                        expected: expected_total,
                        actual: self.total,
                    })
                }
            }
        }
    }

    fn apply(&mut self, event: &TallyEvent) {
        match event {
            TallyEvent::Added { amount } => {
                self.total += amount;
                self.count += 1;
            }
            TallyEvent::Closed => self.closed = true,
        }
    }
}

/// What the repository tests need of a backend.
pub trait Backend: EventStore + SnapshotStore + Clone {}
impl<T: EventStore + SnapshotStore + Clone> Backend for T {}

/// What must outlive a test's store, and what to clean up after it.
pub enum Cleanup {
    /// Nothing.
    Nothing,
    /// A temporary directory, removed when dropped.
    Dir(tempfile::TempDir),
    /// A PostgreSQL schema to drop.
    PgSchema(strata_postgres::PostgresStore, String),
}

impl Cleanup {
    pub async fn run(self) {
        if let Cleanup::PgSchema(store, schema) = self {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(store.pool())
                .await;
        }
    }
}

/// A fresh embedded store in a temporary directory.
pub async fn log_backend() -> Option<(Cleanup, strata_log::LogStore)> {
    let dir = tempfile::tempdir().unwrap();
    let store = strata_log::LogStore::open(dir.path()).unwrap();
    Some((Cleanup::Dir(dir), store))
}

/// A fresh in-memory reference store.
pub async fn memory_backend() -> Option<(Cleanup, strata_testkit::MemoryStore)> {
    Some((Cleanup::Nothing, strata_testkit::MemoryStore::new()))
}

/// A PostgreSQL store in a fresh schema of the test database (`STRATA_TEST_DATABASE_URL`,
/// default `postgres://postgres@127.0.0.1:5432/test`). When no database is reachable the
/// test is skipped with a message, except under CI (`CI` set), where that is a failure.
pub async fn postgres_backend() -> Option<(Cleanup, strata_postgres::PostgresStore)> {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let url = std::env::var("STRATA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!(
        "t_toolkit_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let options = strata_postgres::PgStoreOptions::new(&url).with_schema(&schema);
    match strata_postgres::PostgresStore::connect_with(options).await {
        Ok(store) => Some((Cleanup::PgSchema(store.clone(), schema), store)),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPING a PostgreSQL repository test: no database at {url}: {e}");
            None
        }
        Err(e) => panic!("the PostgreSQL repository tests need a database at {url}: {e}"),
    }
}

/// One `#[test]` per case and backend: `backend_tests!(module, factory, [case, ...])`.
// Not every test that includes `support` runs backend cases.
#[allow(unused_macros)]
macro_rules! backend_tests {
    ($backend:ident, $make:expr, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some((cleanup, store)) = $make.await else {
                        return;
                    };
                    super::$case(store).await;
                    cleanup.run().await;
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use backend_tests;

/// Appends raw events to a stream, as another program (or an older version) would have.
pub async fn seed<S: EventStore>(store: &S, stream: &str, events: Vec<EventData>) -> AppendResult {
    store
        .append(
            &StreamId::new(stream).unwrap(),
            ExpectedVersion::Any,
            events,
        )
        .await
        .unwrap()
}

/// A store whose snapshot writes fail (and count how often they were tried).
#[derive(Clone)]
pub struct FailingSnapshots<S> {
    pub inner: S,
    pub attempts: Arc<AtomicU32>,
}

impl<S> FailingSnapshots<S> {
    pub fn new(inner: S) -> Self {
        FailingSnapshots {
            inner,
            attempts: Arc::new(AtomicU32::new(0)),
        }
    }
}

/// A store where, before each of the next `remaining` appends, another writer appends one
/// event to the same stream first — the command's append then meets a conflict.
#[derive(Clone)]
pub struct Interfering<S> {
    pub inner: S,
    pub remaining: Arc<AtomicU32>,
    pub competing: EventData,
}

impl<S> Interfering<S> {
    pub fn new(inner: S, times: u32, competing: EventData) -> Self {
        Interfering {
            inner,
            remaining: Arc::new(AtomicU32::new(times)),
            competing,
        }
    }
}

/// A store that counts the stream reads asked of it; snapshots and events pass through.
#[derive(Clone)]
pub struct ReadCounting<S> {
    pub inner: S,
    pub reads: Arc<AtomicU32>,
}

impl<S> ReadCounting<S> {
    pub fn new(inner: S) -> Self {
        ReadCounting {
            inner,
            reads: Arc::new(AtomicU32::new(0)),
        }
    }

    fn note_read(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
    }
}

impl<S> FailingSnapshots<S> {
    fn note_read(&self) {}
}

impl<S> Interfering<S> {
    fn note_read(&self) {}
}

/// `EventStore` for a wrapper around `inner`: every method passes through (a stream read
/// after the wrapper's `note_read`), `append` runs the block given.
macro_rules! delegate_event_store {
    ($ty:ident, |$this:ident, $stream:ident, $expected:ident, $events:ident| $append:block) => {
        #[async_trait]
        impl<S: EventStore + SnapshotStore + Clone> EventStore for $ty<S> {
            async fn append(
                &self,
                $stream: &StreamId,
                $expected: ExpectedVersion,
                $events: Vec<EventData>,
            ) -> Result<AppendResult, AppendError> {
                let $this = self;
                $append
            }
            async fn read_stream(
                &self,
                stream: &StreamId,
                options: ReadStreamOptions,
            ) -> Result<Vec<RecordedEvent>, ReadError> {
                self.note_read();
                self.inner.read_stream(stream, options).await
            }
            async fn read_all(&self, options: ReadAllOptions) -> Result<AllPage, ReadError> {
                self.inner.read_all(options).await
            }
            async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo, ReadError> {
                self.inner.stream_info(stream).await
            }
            async fn list_streams(
                &self,
                options: ListOptions,
            ) -> Result<Page<StreamSummary>, ReadError> {
                self.inner.list_streams(options).await
            }
            async fn list_categories(
                &self,
                options: ListOptions,
            ) -> Result<Page<CategorySummary>, ReadError> {
                self.inner.list_categories(options).await
            }
            async fn position_at(&self, at: Timestamp) -> Result<Option<Position>, ReadError> {
                self.inner.position_at(at).await
            }
            async fn head(&self) -> Result<Option<Position>, ReadError> {
                self.inner.head().await
            }
            fn changes(&self) -> watch::Receiver<u64> {
                self.inner.changes()
            }
            async fn subscribe(
                &self,
                target: SubscriptionTarget,
                from: SubscribeFrom,
            ) -> Result<Subscription, ReadError> {
                self.inner.subscribe(target, from).await
            }
        }
    };
}

delegate_event_store!(FailingSnapshots, |this, stream, expected, events| {
    this.inner.append(stream, expected, events).await
});

delegate_event_store!(Interfering, |this, stream, expected, events| {
    let take = this
        .remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if take {
        this.inner
            .append(stream, ExpectedVersion::Any, vec![this.competing.clone()])
            .await?;
    }
    this.inner.append(stream, expected, events).await
});

delegate_event_store!(ReadCounting, |this, stream, expected, events| {
    this.inner.append(stream, expected, events).await
});

/// `SnapshotStore` for a wrapper around `inner`: every method passes through.
macro_rules! delegate_snapshot_store {
    ($ty:ident) => {
        #[async_trait]
        impl<S: SnapshotStore> SnapshotStore for $ty<S> {
            async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), SnapshotError> {
                self.inner.save_snapshot(snapshot).await
            }
            async fn load_snapshot(
                &self,
                stream: &StreamId,
                schema_version: u32,
                max_version: Option<u64>,
            ) -> Result<Option<Snapshot>, SnapshotError> {
                self.inner
                    .load_snapshot(stream, schema_version, max_version)
                    .await
            }
            async fn delete_snapshots(&self, stream: &StreamId) -> Result<u64, SnapshotError> {
                self.inner.delete_snapshots(stream).await
            }
            async fn load_snapshot_and_events(
                &self,
                stream: &StreamId,
                schema_version: u32,
                limit: usize,
            ) -> Result<SnapshotAndEvents, SnapshotError> {
                self.inner
                    .load_snapshot_and_events(stream, schema_version, limit)
                    .await
            }
        }
    };
}

delegate_snapshot_store!(ReadCounting);
delegate_snapshot_store!(Interfering);

#[async_trait]
impl<S: SnapshotStore> SnapshotStore for FailingSnapshots<S> {
    async fn save_snapshot(&self, _snapshot: Snapshot) -> Result<(), SnapshotError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        Err(SnapshotError::Storage(
            ("injected: the disk is full".to_owned()).into(),
        ))
    }
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, SnapshotError> {
        self.inner
            .load_snapshot(stream, schema_version, max_version)
            .await
    }
    async fn delete_snapshots(&self, stream: &StreamId) -> Result<u64, SnapshotError> {
        self.inner.delete_snapshots(stream).await
    }
}
