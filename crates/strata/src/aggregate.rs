//! The [`Aggregate`] trait: what an application writes. [`AggregateState`] is the same
//! minus the decision, for aggregates whose handlers consult services
//! ([`crate::HandleWithServices`]).

use serde::de::DeserializeOwned;
use serde::Serialize;
use strata_core::{InvalidInput, StreamId};

use crate::codec::DomainEvent;
use crate::limits;

/// A consistency boundary whose state is rebuilt by replaying its events.
///
/// An aggregate decides ([`Aggregate::handle`]: a pure function from the current state and a
/// command to new events, or a refusal) and evolves ([`Aggregate::apply`]: folds one event into
/// the state). The [`crate::Repository`] does the rest: loading, appending with optimistic
/// concurrency, retries, metadata and snapshots.
///
/// The state is `Clone` so that the repository can keep recently used aggregates in memory,
/// and `Serialize + DeserializeOwned` so that it can be snapshotted; change
/// [`Aggregate::SNAPSHOT_SCHEMA_VERSION`] whenever its encoding changes, and old snapshots are
/// ignored (the aggregate is rebuilt by a full replay) instead of being misread.
///
/// `handle` is pure: it sees only the state and the command. An aggregate whose decisions need
/// outside facts (the time, an exchange rate, whether a name is taken) implements
/// [`AggregateState`] and [`crate::HandleWithServices`] instead, and gets them from services
/// the [`crate::Repository`] holds. Every `Aggregate` is both, with no services (`()`).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use strata::{Aggregate, DomainEvent};
///
/// #[derive(Debug, Default, Clone, Serialize, Deserialize)]
/// struct Counter { value: u64 }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent { Incremented { by: u64 } }
/// impl DomainEvent for CounterEvent {}
///
/// #[derive(Debug, Clone)]
/// enum CounterCommand { Increment { by: u64 } }
///
/// #[derive(Debug, PartialEq, thiserror::Error)]
/// enum CounterError { #[error("increment by zero")] Zero }
///
/// impl Aggregate for Counter {
///     type Event = CounterEvent;
///     type Command = CounterCommand;
///     type Error = CounterError;
///     const CATEGORY: &'static str = "counter";
///
///     fn handle(&self, command: CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
///         match command {
///             CounterCommand::Increment { by: 0 } => Err(CounterError::Zero),
///             CounterCommand::Increment { by } => Ok(vec![CounterEvent::Incremented { by }]),
///         }
///     }
///     fn apply(&mut self, event: &CounterEvent) {
///         match event {
///             CounterEvent::Incremented { by } => self.value += by,
///         }
///     }
/// }
/// assert_eq!(Counter::stream_id("7").unwrap().as_str(), "counter-7");
/// ```
pub trait Aggregate:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The events this aggregate records.
    type Event: DomainEvent + Serialize + DeserializeOwned + Clone + std::fmt::Debug;
    /// The commands it accepts. Cloned when a conflicting command is retried.
    type Command: Clone + Send + Sync + std::fmt::Debug + 'static;
    /// Why it refuses a command.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The category: streams are named `<CATEGORY>-<id>`. It must not be empty and must not
    /// contain `-` (the category is the part of a stream id before the first `-`).
    const CATEGORY: &'static str;

    /// The schema version of the state's snapshot encoding. Bump it whenever the state type's
    /// serialized form changes; snapshots of other versions are then ignored.
    const SNAPSHOT_SCHEMA_VERSION: u32 = 1;

    /// Take a snapshot once this many events have been appended since the last one; 0 turns
    /// snapshots off for this aggregate. A [`crate::Repository`] can override it.
    const SNAPSHOT_INTERVAL: u64 = limits::SNAPSHOT_INTERVAL_DEFAULT;

    /// Decides: the events that `command` causes in the current state, or why it is refused.
    /// Must be pure (no I/O, no clock): on a concurrency conflict the repository reloads and
    /// calls it again. A decision that needs the time or other outside facts belongs in
    /// [`crate::HandleWithServices::handle_with`].
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Evolves: folds one event into the state. Never fails: an event is a fact already
    /// recorded, so `apply` accepts every event `handle` may have produced.
    fn apply(&mut self, event: &Self::Event);

    /// The stream of the aggregate with this id: `<CATEGORY>-<id>`.
    fn stream_id(id: &str) -> Result<StreamId, InvalidInput> {
        category_stream_id(Self::CATEGORY, id)
    }
}

/// An aggregate's state and how events evolve it: everything an [`Aggregate`] declares except
/// the decision.
///
/// Implement it, with [`crate::HandleWithServices`], for an aggregate whose handlers consult
/// services; implement [`Aggregate`] for one that decides on the state and the command alone.
/// Every [`Aggregate`] is an `AggregateState` (a blanket implementation forwards each item),
/// so the [`crate::Repository`] and [`crate::testing::AggregateTest`] work with both. The two
/// cannot be mixed on one type: an aggregate with services does not implement [`Aggregate`].
/// (When both traits are in scope, name the one meant in `<T as AggregateState>::CATEGORY`:
/// a pure aggregate has each item through both.)
///
/// The items mean what they mean on [`Aggregate`].
pub trait AggregateState:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The events this aggregate records.
    type Event: DomainEvent + Serialize + DeserializeOwned + Clone + std::fmt::Debug;
    /// The commands it accepts. Cloned when a conflicting command is retried.
    type Command: Clone + Send + Sync + std::fmt::Debug + 'static;
    /// Why it refuses a command.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The category: streams are named `<CATEGORY>-<id>` (see [`Aggregate::CATEGORY`]).
    const CATEGORY: &'static str;

    /// The schema version of the state's snapshot encoding (see
    /// [`Aggregate::SNAPSHOT_SCHEMA_VERSION`]).
    const SNAPSHOT_SCHEMA_VERSION: u32 = 1;

    /// Take a snapshot once this many events have been appended since the last one; 0 turns
    /// snapshots off (see [`Aggregate::SNAPSHOT_INTERVAL`]).
    const SNAPSHOT_INTERVAL: u64 = limits::SNAPSHOT_INTERVAL_DEFAULT;

    /// Evolves: folds one event into the state. Never fails.
    fn apply(&mut self, event: &Self::Event);

    /// The stream of the aggregate with this id: `<CATEGORY>-<id>`.
    fn stream_id(id: &str) -> Result<StreamId, InvalidInput> {
        category_stream_id(Self::CATEGORY, id)
    }
}

impl<A: Aggregate> AggregateState for A {
    type Event = <A as Aggregate>::Event;
    type Command = <A as Aggregate>::Command;
    type Error = <A as Aggregate>::Error;
    const CATEGORY: &'static str = <A as Aggregate>::CATEGORY;
    const SNAPSHOT_SCHEMA_VERSION: u32 = <A as Aggregate>::SNAPSHOT_SCHEMA_VERSION;
    const SNAPSHOT_INTERVAL: u64 = <A as Aggregate>::SNAPSHOT_INTERVAL;

    fn apply(&mut self, event: &Self::Event) {
        <A as Aggregate>::apply(self, event);
    }

    fn stream_id(id: &str) -> Result<StreamId, InvalidInput> {
        <A as Aggregate>::stream_id(id)
    }
}

/// `<category>-<id>`, refusing an empty or dashed category and an empty id.
fn category_stream_id(category: &str, id: &str) -> Result<StreamId, InvalidInput> {
    if category.is_empty() || category.contains('-') {
        return Err(InvalidInput::new(
            "Aggregate::CATEGORY",
            format!("{category:?} must be non-empty and contain no `-`"),
        ));
    }
    if id.is_empty() {
        return Err(InvalidInput::new("aggregate id", "must not be empty"));
    }
    StreamId::new(format!("{category}-{id}"))
}
