//! Given / when / then tests for aggregates, with no store.
//!
//! *Given* these past events, *when* this command is handled, *then* expect these events (or
//! this error). Every given and produced event also goes through the event codec (encode,
//! then decode — including the upcasters for events given in an old stored form), so a test
//! fails when an event would not survive being stored.
//!
//! ```
//! # use serde::{Deserialize, Serialize};
//! # use strata::{Aggregate, DomainEvent};
//! use strata::testing::AggregateTest;
//! # #[derive(Debug, Default, Clone, Serialize, Deserialize)] struct Counter { value: u64 }
//! # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)] enum Ev { Incremented { by: u64 } }
//! # impl DomainEvent for Ev {}
//! # #[derive(Debug, PartialEq, thiserror::Error)] #[error("would pass 10")] struct TooBig;
//! # impl Aggregate for Counter {
//! #     type Event = Ev; type Command = u64; type Error = TooBig;
//! #     const CATEGORY: &'static str = "counter";
//! #     fn handle(&self, by: u64) -> Result<Vec<Ev>, TooBig> {
//! #         if self.value + by > 10 { Err(TooBig) } else { Ok(vec![Ev::Incremented { by }]) }
//! #     }
//! #     fn apply(&mut self, Ev::Incremented { by }: &Ev) { self.value += by }
//! # }
//! let after = AggregateTest::<Counter>::given([Ev::Incremented { by: 4 }])
//!     .when(5)
//!     .then_expect_events([Ev::Incremented { by: 5 }]);
//! assert_eq!(after.value, 9);
//!
//! AggregateTest::<Counter>::given([Ev::Incremented { by: 4 }])
//!     .when(7)
//!     .then_expect_error(TooBig);
//! ```
//!
//! An aggregate whose handlers consult services ([`crate::HandleWithServices`]) is tested the
//! same way with [`AggregateTest::when_with`], given the services — a fixed clock, stubs:
//! `AggregateTest::<Account>::given(events).when_with(command, &services).await?` and then the
//! same `then_*` checks. Its `Err` is a service that could not answer.

use std::fmt::Debug;

use serde_json::Value;
use strata_core::{Metadata, Position, RecordedEvent, StreamId, Uuid};

use crate::aggregate::{Aggregate, AggregateState};
use crate::services::{HandleError, HandleWithServices};
use crate::upcast::{with_schema_version, EventCodec};

/// A test of one aggregate: the events given so far.
pub struct AggregateTest<A: AggregateState> {
    state: A,
    given: usize,
    codec: EventCodec<A::Event>,
}

impl<A: AggregateState> Default for AggregateTest<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: AggregateState> AggregateTest<A> {
    /// Given no events: the aggregate does not exist yet.
    pub fn new() -> Self {
        AggregateTest {
            state: A::default(),
            given: 0,
            codec: EventCodec::new(),
        }
    }

    /// Given these events, in order.
    #[track_caller]
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        Self::new().and(events)
    }

    /// And these events too.
    #[track_caller]
    pub fn and(mut self, events: impl IntoIterator<Item = A::Event>) -> Self {
        for event in events {
            let stored = self.stored_form(&event);
            self.apply_stored(stored);
        }
        self
    }

    /// And this event as it is stored: its type, the schema version it was written at, and
    /// its JSON payload. It goes through the upcasters, so old event shapes can be given.
    #[track_caller]
    pub fn and_stored(mut self, event_type: &str, schema_version: u32, data: Value) -> Self {
        let metadata = with_schema_version(Metadata::new(), schema_version);
        let stored = recorded(
            self.given,
            event_type,
            serde_json::to_vec(&data).unwrap_or_default(),
            metadata,
        );
        self.apply_stored(stored);
        self
    }

    /// The state after the given events.
    pub fn state(&self) -> &A {
        &self.state
    }

    fn outcome(self, command: String, result: Result<Vec<A::Event>, A::Error>) -> Outcome<A> {
        Outcome {
            state: self.state,
            given: self.given,
            command,
            result,
            codec: self.codec,
        }
    }

    #[track_caller]
    fn stored_form(&self, event: &A::Event) -> RecordedEvent {
        let data = match self.codec.encode(event) {
            Ok(data) => data,
            Err(e) => panic!("given event {event:?} cannot be encoded: {e}"),
        };
        recorded(self.given, &data.event_type, data.data, data.metadata)
    }

    #[track_caller]
    fn apply_stored(&mut self, stored: RecordedEvent) {
        match self.codec.decode(&stored) {
            Ok(event) => self.state.apply(&event),
            Err(e) => panic!("given event #{} cannot be decoded: {e}", self.given),
        }
        self.given += 1;
    }
}

impl<A: Aggregate> AggregateTest<A> {
    /// When this command is handled.
    pub fn when(self, command: <A as Aggregate>::Command) -> Outcome<A> {
        let described = format!("{command:?}");
        let result = self.state.handle(command);
        self.outcome(described, result)
    }
}

impl<A: HandleWithServices> AggregateTest<A> {
    /// When this command is handled with these services. `Err` when a service could not
    /// answer (a test of that asserts the error); otherwise the outcome to check.
    pub async fn when_with(
        self,
        command: <A as AggregateState>::Command,
        services: &A::Services,
    ) -> Result<Outcome<A>, A::ServiceError> {
        let described = format!("{command:?}");
        let result = match self.state.handle_with(command, services).await {
            Ok(events) => Ok(events),
            Err(HandleError::Rejected(refusal)) => Err(refusal),
            Err(HandleError::Service(error)) => return Err(error),
        };
        Ok(self.outcome(described, result))
    }
}

/// What handling the command gave, to check with a `then_*` method.
pub struct Outcome<A: AggregateState> {
    state: A,
    given: usize,
    command: String,
    result: Result<Vec<A::Event>, A::Error>,
    codec: EventCodec<A::Event>,
}

impl<A: AggregateState> Outcome<A> {
    /// The raw result, for checks the `then_*` methods do not cover.
    pub fn result(&self) -> &Result<Vec<A::Event>, A::Error> {
        &self.result
    }

    /// Then the command caused exactly these events. Returns the state after them.
    #[track_caller]
    pub fn then_expect_events(self, expected: impl IntoIterator<Item = A::Event>) -> A
    where
        A::Event: PartialEq,
    {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        let Outcome {
            mut state,
            given,
            command,
            result,
            codec,
        } = self;
        let events = match result {
            Ok(events) => events,
            Err(error) => panic!(
                "when {command}: expected events {expected:#?}\nbut the command was rejected: \
                 {error} ({error:?})"
            ),
        };
        assert!(
            events == expected,
            "when {command}: expected events {expected:#?}\nbut got {events:#?}"
        );
        for (i, event) in events.iter().enumerate() {
            let data = match codec.encode(event) {
                Ok(data) => data,
                Err(e) => panic!("when {command}: produced event {event:?} cannot be encoded: {e}"),
            };
            let stored = recorded(given + i, &data.event_type, data.data, data.metadata);
            match codec.decode(&stored) {
                Ok(back) => assert!(
                    back == *event,
                    "when {command}: event {event:?} comes back from storage as {back:?}"
                ),
                Err(e) => panic!("when {command}: produced event {event:?} does not decode: {e}"),
            }
            state.apply(event);
        }
        state
    }

    /// Then the command caused no event. Returns the state.
    #[track_caller]
    pub fn then_expect_no_events(self) -> A
    where
        A::Event: PartialEq,
    {
        self.then_expect_events([])
    }

    /// Then the command was rejected with exactly this error.
    #[track_caller]
    pub fn then_expect_error(self, expected: A::Error)
    where
        A::Error: PartialEq + Debug,
    {
        let command = self.command;
        match self.result {
            Ok(events) => panic!(
                "when {command}: expected the error {expected:?}\nbut got events {events:#?}"
            ),
            Err(error) => assert!(
                error == expected,
                "when {command}: expected the error {expected:?}\nbut got the error {error:?}"
            ),
        }
    }

    /// Then the command was rejected with an error that passes `check`. Returns the error.
    #[track_caller]
    pub fn then_expect_error_matching(self, check: impl FnOnce(&A::Error) -> bool) -> A::Error
    where
        A::Error: Debug,
    {
        let command = self.command;
        match self.result {
            Ok(events) => {
                panic!("when {command}: expected an error but got events {events:#?}")
            }
            Err(error) => {
                assert!(
                    check(&error),
                    "when {command}: the error {error:?} does not match"
                );
                error
            }
        }
    }
}

fn recorded(index: usize, event_type: &str, data: Vec<u8>, metadata: Metadata) -> RecordedEvent {
    let stream = StreamId::new("test-aggregate").expect("`test-aggregate` is a valid stream id");
    RecordedEvent {
        event_id: Uuid::now_v7(),
        stream_id: stream,
        stream_version: index as u64,
        position: Position(index as u64),
        recorded_at: chrono::Utc::now(),
        event_type: event_type.to_owned(),
        content_type: strata_core::CONTENT_TYPE_JSON.to_owned(),
        data,
        metadata,
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;
    use crate::{DomainEvent, Upcasters};

    #[derive(Debug, Default, Clone, Serialize, Deserialize)]
    struct Light {
        on: bool,
        name: String,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum LightEvent {
        Named { name: String },
        SwitchedOn,
        SwitchedOff,
    }

    impl DomainEvent for LightEvent {
        fn upcasters() -> Upcasters {
            // v1 of `Named` called the field `label`.
            Upcasters::new().register("Named", 1, |v: Value| {
                Ok::<_, &str>(json!({ "name": v["label"] }))
            })
        }
    }

    #[derive(Debug, PartialEq, thiserror::Error)]
    #[error("already {0}")]
    struct Already(&'static str);

    impl Aggregate for Light {
        type Event = LightEvent;
        type Command = bool;
        type Error = Already;
        const CATEGORY: &'static str = "light";

        fn handle(&self, on: bool) -> Result<Vec<LightEvent>, Already> {
            match (self.on, on) {
                (true, true) => Err(Already("on")),
                (false, false) => Err(Already("off")),
                (_, true) => Ok(vec![LightEvent::SwitchedOn]),
                (_, false) => Ok(vec![LightEvent::SwitchedOff]),
            }
        }

        fn apply(&mut self, event: &LightEvent) {
            match event {
                LightEvent::Named { name } => self.name = name.clone(),
                LightEvent::SwitchedOn => self.on = true,
                LightEvent::SwitchedOff => self.on = false,
            }
        }
    }

    #[test]
    fn given_when_then() {
        let light = AggregateTest::<Light>::new()
            .when(true)
            .then_expect_events([LightEvent::SwitchedOn]);
        assert!(light.on);
        AggregateTest::<Light>::given([LightEvent::SwitchedOn])
            .when(true)
            .then_expect_error(Already("on"));
        let e = AggregateTest::<Light>::given([LightEvent::SwitchedOn, LightEvent::SwitchedOff])
            .when(false)
            .then_expect_error_matching(|e| e.0 == "off");
        assert_eq!(e.to_string(), "already off");
    }

    #[test]
    fn old_stored_events_can_be_given() {
        let t = AggregateTest::<Light>::new()
            .and_stored("Named", 1, json!({"label": "porch"}))
            .and([LightEvent::SwitchedOn]);
        assert_eq!(t.state().name, "porch");
        assert!(t.state().on);
    }

    #[test]
    #[should_panic(expected = "expected events")]
    fn wrong_events_fail_the_test() {
        AggregateTest::<Light>::new()
            .when(true)
            .then_expect_events([LightEvent::SwitchedOff]);
    }

    #[test]
    #[should_panic(expected = "but the command was rejected")]
    fn an_unexpected_error_fails_the_test() {
        AggregateTest::<Light>::given([LightEvent::SwitchedOn])
            .when(true)
            .then_expect_events([LightEvent::SwitchedOff]);
    }

    #[test]
    #[should_panic(expected = "but got events")]
    fn unexpected_events_fail_an_error_test() {
        AggregateTest::<Light>::new()
            .when(true)
            .then_expect_error(Already("on"));
    }

    #[test]
    #[should_panic(expected = "cannot be decoded")]
    fn an_undecodable_given_event_fails_the_test() {
        let _ = AggregateTest::<Light>::new().and_stored("Exploded", 1, json!({}));
    }
}
