//! The repository with services: they reach the handler, a service's failure is a typed
//! `ExecuteError::Service`, a conflict re-runs the handler with fresh answers, and the fixed
//! clock's time is what the events record. On the in-memory reference store (no features).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::error::Error as _;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use strata::testing::AggregateTest;
use strata::{
    Aggregate, AggregateState, Clock, DomainEvent, EventCodec, EventStore, ExecuteError,
    ExpectedVersion, FixedClock, HandleError, HandleWithServices, Repository, StreamId, Timestamp,
};
use strata_testkit::MemoryStore;

/// A ledger whose entries record an answer from an oracle service and the time.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Ledger {
    entries: Vec<(String, u64)>,
    closed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum LedgerEvent {
    Recorded {
        label: String,
        answer: u64,
        at: Timestamp,
    },
    Closed,
}
impl DomainEvent for LedgerEvent {}

#[derive(Debug, Clone)]
enum LedgerCommand {
    /// Record the oracle's answer under this label.
    Record(String),
    /// Record it only while the ledger has fewer than this many entries (a rule on state).
    RecordIfFewerThan(String, usize),
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum LedgerError {
    #[error("the ledger is closed")]
    Closed,
    #[error("the ledger is full")]
    Full,
}

/// The oracle could not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the oracle is down: {0}")]
struct OracleDown(&'static str);

/// Answers from a script, counting the questions. When armed with a store, the first question
/// also appends a competing event to the asked stream, as another writer would have between
/// this command's load and its append.
#[derive(Default)]
struct Oracle {
    script: Mutex<VecDeque<Result<u64, OracleDown>>>,
    questions: AtomicU32,
    compete_once: Option<(MemoryStore, StreamId)>,
    competed: AtomicBool,
}

impl Oracle {
    fn scripted(answers: impl IntoIterator<Item = Result<u64, OracleDown>>) -> Self {
        Oracle {
            script: Mutex::new(answers.into_iter().collect()),
            ..Oracle::default()
        }
    }

    async fn answer(&self) -> Result<u64, OracleDown> {
        self.questions.fetch_add(1, Ordering::SeqCst);
        if let Some((store, stream)) = &self.compete_once {
            if !self.competed.swap(true, Ordering::SeqCst) {
                let competing = LedgerEvent::Recorded {
                    label: "competitor".into(),
                    answer: 0,
                    at: Timestamp::UNIX_EPOCH,
                };
                let data = EventCodec::<LedgerEvent>::new().encode(&competing).unwrap();
                store
                    .append(stream, ExpectedVersion::Any, vec![data])
                    .await
                    .unwrap();
            }
        }
        let next = self.script.lock().unwrap().pop_front();
        next.unwrap_or(Err(OracleDown("the script ran out")))
    }
}

struct LedgerServices {
    clock: Arc<FixedClock>,
    oracle: Oracle,
}

impl AggregateState for Ledger {
    type Event = LedgerEvent;
    type Command = LedgerCommand;
    type Error = LedgerError;
    const CATEGORY: &'static str = "ledger";

    fn apply(&mut self, event: &LedgerEvent) {
        match event {
            LedgerEvent::Recorded { label, answer, .. } => {
                self.entries.push((label.clone(), *answer));
            }
            LedgerEvent::Closed => self.closed = true,
        }
    }
}

impl HandleWithServices for Ledger {
    type Services = LedgerServices;
    type ServiceError = OracleDown;

    async fn handle_with(
        &self,
        command: LedgerCommand,
        services: &LedgerServices,
    ) -> Result<Vec<LedgerEvent>, HandleError<LedgerError, OracleDown>> {
        if self.closed {
            return Err(LedgerError::Closed.into());
        }
        let label = match command {
            LedgerCommand::Record(label) => label,
            LedgerCommand::RecordIfFewerThan(_, limit) if self.entries.len() >= limit => {
                return Err(LedgerError::Full.into())
            }
            LedgerCommand::RecordIfFewerThan(label, _) => label,
        };
        let answer = services
            .oracle
            .answer()
            .await
            .map_err(HandleError::Service)?;
        Ok(vec![LedgerEvent::Recorded {
            label,
            answer,
            at: services.clock.now(),
        }])
    }
}

fn noon() -> Timestamp {
    "2024-01-15T12:00:00Z".parse().unwrap()
}

fn ledger_services(oracle: Oracle) -> (Arc<FixedClock>, LedgerServices) {
    let clock = Arc::new(FixedClock::new(noon()));
    let services = LedgerServices {
        clock: clock.clone(),
        oracle,
    };
    (clock, services)
}

fn recorded(label: &str, answer: u64, at: Timestamp) -> LedgerEvent {
    LedgerEvent::Recorded {
        label: label.into(),
        answer,
        at,
    }
}

#[tokio::test]
async fn the_services_reach_the_handler_and_the_fixed_time_reaches_the_events() {
    let (clock, services) = ledger_services(Oracle::scripted([Ok(42), Ok(7)]));
    let ledger = Repository::<Ledger, _>::with_services(MemoryStore::new(), services);

    let first = ledger
        .execute("1", LedgerCommand::Record("a".into()))
        .await
        .unwrap();
    assert_eq!(first.events, [recorded("a", 42, noon())]);
    assert_eq!(first.attempts, 1);

    clock.advance(TimeDelta::minutes(30)).unwrap();
    ledger
        .execute("1", LedgerCommand::Record("b".into()))
        .await
        .unwrap();
    assert_eq!(ledger.services().oracle.questions.load(Ordering::SeqCst), 2);

    // What the store holds, read back through the codec.
    let stored: Vec<_> = ledger
        .read_events("1", 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        stored,
        [
            recorded("a", 42, noon()),
            recorded("b", 7, noon() + TimeDelta::minutes(30)),
        ]
    );
}

#[tokio::test]
async fn a_service_error_is_a_typed_execute_error_carrying_the_source() {
    let (_, services) = ledger_services(Oracle::scripted([Err(OracleDown("maintenance"))]));
    let store = MemoryStore::new();
    let ledger = Repository::<Ledger, _>::with_services(store.clone(), services);

    let error = ledger
        .execute("1", LedgerCommand::Record("a".into()))
        .await
        .unwrap_err();
    assert_eq!(error.service_error(), Some(&OracleDown("maintenance")));
    assert!(error.rejection().is_none());
    let ExecuteError::Service { stream, source } = &error else {
        panic!("expected ExecuteError::Service, got {error:?}");
    };
    assert_eq!(stream.as_str(), "ledger-1");
    assert_eq!(*source, OracleDown("maintenance"));
    // The source chain leads to the service's error, for reporters that walk it.
    let chained = error.source().expect("a source");
    assert_eq!(
        chained.downcast_ref::<OracleDown>(),
        Some(&OracleDown("maintenance"))
    );
    // Nothing was written.
    let stream = StreamId::new("ledger-1").unwrap();
    assert!(!store.stream_info(&stream).await.unwrap().exists);
    // A refusal stays a refusal.
    let (_, closed) = ledger_services(Oracle::scripted([]));
    let ledger = Repository::<Ledger, _>::with_services(store.clone(), closed);
    EventStore::append(
        &store,
        &StreamId::new("ledger-2").unwrap(),
        ExpectedVersion::NoStream,
        vec![EventCodec::<LedgerEvent>::new()
            .encode(&LedgerEvent::Closed)
            .unwrap()],
    )
    .await
    .unwrap();
    let refused = ledger
        .execute("2", LedgerCommand::Record("a".into()))
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        ExecuteError::Rejected(LedgerError::Closed)
    ));
    assert_eq!(
        ledger.services().oracle.questions.load(Ordering::SeqCst),
        0,
        "a refusal that needs no answer asks nothing"
    );
}

#[tokio::test]
async fn after_a_conflict_the_handler_runs_again_with_fresh_answers() {
    let store = MemoryStore::new();
    let stream = StreamId::new("ledger-1").unwrap();
    let oracle = Oracle {
        compete_once: Some((store.clone(), stream.clone())),
        ..Oracle::scripted([Ok(1), Ok(2)])
    };
    let (_, services) = ledger_services(oracle);
    let ledger = Repository::<Ledger, _>::with_services(store.clone(), services);

    let done = ledger
        .execute("1", LedgerCommand::Record("mine".into()))
        .await
        .unwrap();
    assert_eq!(done.attempts, 2, "the first append lost to the competitor");
    assert_eq!(ledger.services().oracle.questions.load(Ordering::SeqCst), 2);
    assert_eq!(
        done.events,
        [recorded("mine", 2, noon())],
        "decided again on the second answer"
    );
    assert_eq!(done.version, Some(1));
    assert_eq!(
        done.entries,
        [("competitor".to_owned(), 0), ("mine".to_owned(), 2)]
    );
}

#[tokio::test]
async fn the_retry_decides_on_the_new_state_with_the_services() {
    // The competitor's event fills the ledger, so the second decision is a refusal.
    let store = MemoryStore::new();
    let oracle = Oracle {
        compete_once: Some((store.clone(), StreamId::new("ledger-1").unwrap())),
        ..Oracle::scripted([Ok(1), Ok(2)])
    };
    let (_, services) = ledger_services(oracle);
    let ledger = Repository::<Ledger, _>::with_services(store, services);
    let refused = ledger
        .execute("1", LedgerCommand::RecordIfFewerThan("mine".into(), 1))
        .await
        .unwrap_err();
    assert!(matches!(refused, ExecuteError::Rejected(LedgerError::Full)));
    assert_eq!(ledger.services().oracle.questions.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn when_the_retries_run_out_the_handler_ran_once_per_attempt() {
    let store = MemoryStore::new();
    let oracle = Oracle {
        compete_once: Some((store.clone(), StreamId::new("ledger-1").unwrap())),
        ..Oracle::scripted([Ok(1), Ok(2)])
    };
    let (_, services) = ledger_services(oracle);
    let ledger = Repository::<Ledger, _>::with_services(store, services).with_max_retries(0);
    let error = ledger
        .execute("1", LedgerCommand::Record("mine".into()))
        .await
        .unwrap_err();
    assert!(error.is_conflict(), "{error:?}");
    assert_eq!(ledger.services().oracle.questions.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn services_can_be_shared_between_repositories() {
    let (clock, services) = ledger_services(Oracle::scripted([Ok(5), Ok(6)]));
    let services = Arc::new(services);
    let store = Arc::new(MemoryStore::new());
    let one = Repository::<Ledger, _>::from_arcs(store.clone(), services.clone());
    let two = Repository::<Ledger, _>::from_arcs(store, services.clone());
    one.execute("1", LedgerCommand::Record("a".into()))
        .await
        .unwrap();
    clock.set(noon() + TimeDelta::days(1));
    let done = two
        .execute("2", LedgerCommand::Record("b".into()))
        .await
        .unwrap();
    assert_eq!(done.events, [recorded("b", 6, noon() + TimeDelta::days(1))]);
    assert_eq!(services.oracle.questions.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn aggregate_test_runs_handlers_with_services() {
    let (_, services) = ledger_services(Oracle::scripted([Ok(9), Err(OracleDown("gone"))]));
    let ledger = AggregateTest::<Ledger>::new()
        .when_with(LedgerCommand::Record("a".into()), &services)
        .await
        .unwrap()
        .then_expect_events([recorded("a", 9, noon())]);
    assert_eq!(ledger.entries, [("a".to_owned(), 9)]);
    let down = AggregateTest::<Ledger>::given([recorded("a", 9, noon())])
        .when_with(LedgerCommand::Record("b".into()), &services)
        .await;
    assert_eq!(down.err(), Some(OracleDown("gone")));
    AggregateTest::<Ledger>::given([LedgerEvent::Closed])
        .when_with(LedgerCommand::Record("c".into()), &services)
        .await
        .unwrap()
        .then_expect_error(LedgerError::Closed);
}

/// A pure aggregate keeps working as before: `Repository::new`, `ExecuteError<E>` with one
/// parameter, `AggregateTest::when` — and `when_with(.., &())` too.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Counter {
    value: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Incremented { by: u64 },
}
impl DomainEvent for CounterEvent {}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("increment by zero")]
struct Zero;

impl Aggregate for Counter {
    type Event = CounterEvent;
    type Command = u64;
    type Error = Zero;
    const CATEGORY: &'static str = "counter";

    fn handle(&self, by: u64) -> Result<Vec<CounterEvent>, Zero> {
        if by == 0 {
            return Err(Zero);
        }
        Ok(vec![CounterEvent::Incremented { by }])
    }

    fn apply(&mut self, CounterEvent::Incremented { by }: &CounterEvent) {
        self.value += by;
    }
}

/// Generic code over pure aggregates, written before services existed, still compiles.
async fn execute_pure<A: Aggregate>(
    store: MemoryStore,
    id: &str,
    command: A::Command,
) -> Result<A, ExecuteError<A::Error>> {
    let repository = Repository::<A, _>::new(store);
    Ok(repository.execute(id, command).await?.state)
}

#[tokio::test]
async fn a_pure_aggregate_needs_no_services() {
    let store = MemoryStore::new();
    let counter = execute_pure::<Counter>(store.clone(), "1", 3)
        .await
        .unwrap();
    assert_eq!(counter.value, 3);
    let refused: ExecuteError<Zero> = execute_pure::<Counter>(store, "1", 0).await.unwrap_err();
    assert!(matches!(refused, ExecuteError::Rejected(Zero)));

    AggregateTest::<Counter>::new()
        .when(2)
        .then_expect_events([CounterEvent::Incremented { by: 2 }]);
    AggregateTest::<Counter>::new()
        .when_with(0, &())
        .await
        .unwrap()
        .then_expect_error(Zero);
    assert_eq!(
        <Counter as AggregateState>::stream_id("9")
            .unwrap()
            .as_str(),
        "counter-9"
    );
}
