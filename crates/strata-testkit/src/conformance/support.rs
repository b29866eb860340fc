//! Helpers shared by the conformance cases. Every helper panics with a message naming what
//! was being done when the store misbehaves.

use std::future::Future;
use std::time::Duration;

use serde_json::json;
use strata_core::{
    AllPage, AppendError, AppendResult, Direction, EventData, EventStore, ExpectedVersion,
    InvalidInput, LimitError, Position, ReadAllOptions, ReadError, ReadStreamOptions,
    RecordedEvent, StreamId, Subscription,
};

use super::WAIT;

/// How long a subscription must stay quiet to count as having nothing more to deliver.
pub(crate) const QUIET: Duration = Duration::from_millis(300);

pub(crate) fn sid(name: &str) -> StreamId {
    StreamId::new(name).expect("test stream ids are valid")
}

/// A small JSON event `{"n": n}` of type `event_type`.
pub(crate) fn ev(event_type: &str, n: u64) -> EventData {
    EventData::json(event_type, &json!({ "n": n })).expect("serialize test event")
}

/// `count` events of `event_type` numbered from `first`.
pub(crate) fn evs(event_type: &str, first: u64, count: u64) -> Vec<EventData> {
    (first..first + count).map(|n| ev(event_type, n)).collect()
}

/// A fresh random event id.
pub(crate) fn new_id() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

/// Waits for `future` at most [`WAIT`].
pub(crate) async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

pub(crate) async fn append<S: EventStore>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<EventData>,
) -> AppendResult {
    let count = events.len();
    let result = within("an append", store.append(stream, expected, events))
        .await
        .unwrap_or_else(|e| {
            panic!("append of {count} event(s) to {stream} expecting {expected} failed: {e:?}")
        });
    assert_eq!(
        result.positions.len(),
        count,
        "an append of {count} event(s) must return one position per event"
    );
    result
}

pub(crate) async fn read_stream<S: EventStore>(
    store: &S,
    stream: &StreamId,
    options: ReadStreamOptions,
) -> Vec<RecordedEvent> {
    within("read_stream", store.read_stream(stream, options.clone()))
        .await
        .unwrap_or_else(|e| panic!("read_stream({stream}, {options:?}) failed: {e:?}"))
}

/// The whole stream, oldest first.
pub(crate) async fn stream_events<S: EventStore>(
    store: &S,
    stream: &StreamId,
) -> Vec<RecordedEvent> {
    read_stream(store, stream, ReadStreamOptions::forward()).await
}

/// One `read_all` call, its page checked with [`check_page`]. A backend may return fewer events
/// than it could (a prefix of what paging would return), so compare whole results through
/// [`read_all_pages`].
pub(crate) async fn read_all<S: EventStore>(store: &S, options: ReadAllOptions) -> AllPage {
    let page = within("read_all", store.read_all(options.clone()))
        .await
        .unwrap_or_else(|e| panic!("read_all({options:?}) failed: {e:?}"));
    check_page(&options, &page);
    page
}

/// Checks what every page of `$all` must satisfy, whatever the backend chose to examine:
/// at most `limit` events, in the read's direction, within `from` and `max_position`, passing
/// the filter, and a `next` that is past them (forward) or before them (backward).
pub(crate) fn check_page(options: &ReadAllOptions, page: &AllPage) {
    let what = format!("read_all({options:?})");
    assert!(
        page.events.len() <= options.limit,
        "{what}: {} events is more than the limit",
        page.events.len()
    );
    let forward = options.direction == Direction::Forward;
    for pair in page.events.windows(2) {
        let ordered = if forward {
            pair[0].position < pair[1].position
        } else {
            pair[0].position > pair[1].position
        };
        assert!(
            ordered,
            "{what}: events out of order ({} then {})",
            pair[0].position, pair[1].position
        );
    }
    for e in &page.events {
        assert!(
            options.filter.matches(e),
            "{what}: event {} does not pass the filter",
            e.position
        );
        if let Some(max) = options.max_position {
            assert!(
                e.position <= max,
                "{what}: event {} is past max_position",
                e.position
            );
        }
        if let Some(from) = options.from {
            let inside = if forward {
                e.position >= from
            } else {
                e.position <= from
            };
            assert!(
                inside,
                "{what}: event {} is on the wrong side of `from`",
                e.position
            );
        }
    }
    if forward {
        let next = page
            .next
            .unwrap_or_else(|| panic!("{what}: a forward read always returns next"));
        if let Some(last) = page.events.last() {
            assert!(
                next > last.position,
                "{what}: next {next} is not past the last event"
            );
        }
        if let Some(from) = options.from {
            assert!(
                next >= from,
                "{what}: next {next} moved backward from {from}"
            );
        }
    } else {
        match (page.next, page.events.last()) {
            (Some(next), Some(last)) => assert!(
                next < last.position,
                "{what}: next {next} is not before the last event"
            ),
            (None, _) => assert!(page.is_end, "{what}: no next but is_end = false"),
            _ => {}
        }
        if let (Some(next), Some(from)) = (page.next, options.from) {
            assert!(
                next <= from,
                "{what}: next {next} moved forward from {from}"
            );
        }
    }
}

/// Every event of `$all` that passes `options`' filter, in `options`' direction, by following
/// `next` until `is_end`, with the `next` of the last page. Checks every page with
/// [`check_page`] (through [`read_all`]) and that every page makes progress.
pub(crate) async fn read_all_to_end<S: EventStore>(
    store: &S,
    options: ReadAllOptions,
) -> (Vec<RecordedEvent>, Option<Position>) {
    let mut out = Vec::new();
    let mut options = options;
    for _ in 0..100_000 {
        let page = read_all(store, options.clone()).await;
        let progressed = !page.events.is_empty() || page.next != options.from;
        out.extend(page.events);
        if page.is_end {
            return (out, page.next);
        }
        assert!(
            progressed,
            "read_all({options:?}) returned no event, is_end = false and next = the same `from`: \
             paging would never end"
        );
        match page.next {
            Some(next) => options.from = Some(next),
            None => panic!("read_all({options:?}) returned next = None with is_end = false"),
        }
    }
    panic!("read_all paging did not reach the end within 100,000 pages");
}

/// Every event of `$all` that passes `options`' filter, in `options`' direction (see
/// [`read_all_to_end`]).
pub(crate) async fn read_all_pages<S: EventStore>(
    store: &S,
    options: ReadAllOptions,
) -> Vec<RecordedEvent> {
    read_all_to_end(store, options).await.0
}

/// Every event of `$all`, oldest first.
pub(crate) async fn all_events<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    read_all_pages(store, ReadAllOptions::forward()).await
}

pub(crate) async fn head<S: EventStore>(store: &S) -> Option<Position> {
    within("head", store.head())
        .await
        .unwrap_or_else(|e| panic!("head() failed: {e:?}"))
}

/// Whether `stream` has no events, checked through `read_stream` and `stream_info`.
pub(crate) async fn assert_stream_missing<S: EventStore>(store: &S, stream: &StreamId) {
    match within(
        "read_stream",
        store.read_stream(stream, ReadStreamOptions::forward()),
    )
    .await
    {
        Err(ReadError::StreamNotFound(s)) => assert_eq!(&s, stream),
        other => panic!("reading {stream}, which has no events, gave {other:?}"),
    }
    let info = within("stream_info", store.stream_info(stream))
        .await
        .expect("stream_info");
    assert!(!info.exists, "{stream} must not exist: {info:?}");
    assert_eq!(info.event_count, 0);
}

/// Checks that the store holds exactly `before` (the result of [`all_events`] taken earlier).
pub(crate) async fn assert_unchanged<S: EventStore>(store: &S, before: &[RecordedEvent]) {
    let now = all_events(store).await;
    assert_eq!(
        now.len(),
        before.len(),
        "a failed operation must write nothing, but the number of events changed"
    );
    assert_eq!(now, before, "a failed operation must write nothing");
    assert_eq!(head(store).await, before.last().map(|e| e.position));
}

pub(crate) fn expect_wrong_version(
    result: Result<AppendResult, AppendError>,
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: Option<u64>,
) {
    match result {
        Err(AppendError::WrongExpectedVersion {
            stream: s,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(&s, stream, "WrongExpectedVersion names the stream");
            assert_eq!(
                e, expected,
                "WrongExpectedVersion carries what was expected"
            );
            assert_eq!(
                a.0, actual,
                "WrongExpectedVersion carries the actual version"
            );
        }
        other => panic!(
            "appending to {stream} expecting {expected} (actual {actual:?}) must fail with \
             WrongExpectedVersion, got {other:?}"
        ),
    }
}

/// Returns the conflicting id after checking the error names `stream`.
pub(crate) fn expect_id_conflict(
    result: Result<AppendResult, AppendError>,
    stream: &StreamId,
) -> uuid::Uuid {
    match result {
        Err(AppendError::EventIdConflict {
            event_id,
            stream: s,
        }) => {
            assert_eq!(&s, stream, "EventIdConflict names the stream appended to");
            event_id
        }
        other => panic!("expected EventIdConflict appending to {stream}, got {other:?}"),
    }
}

pub(crate) fn expect_invalid_append(
    result: Result<AppendResult, AppendError>,
    what: &str,
) -> InvalidInput {
    match result {
        Err(AppendError::InvalidInput(e)) => e,
        other => panic!("{what}: expected AppendError::InvalidInput, got {other:?}"),
    }
}

pub(crate) fn expect_append_limit(
    result: Result<AppendResult, AppendError>,
    what: &str,
) -> LimitError {
    match result {
        Err(AppendError::Limit(e)) => {
            assert!(
                e.actual > e.max,
                "{what}: a LimitError has actual > max: {e:?}"
            );
            e
        }
        other => panic!("{what}: expected AppendError::Limit, got {other:?}"),
    }
}

pub(crate) fn expect_read_limit<T: std::fmt::Debug>(result: Result<T, ReadError>, what: &str) {
    match result {
        Err(ReadError::Limit(e)) => {
            assert!(
                e.actual > e.max,
                "{what}: a LimitError has actual > max: {e:?}"
            )
        }
        other => panic!("{what}: expected ReadError::Limit, got {other:?}"),
    }
}

/// The next event of `sub`, waiting at most [`WAIT`].
pub(crate) async fn next_event(sub: &mut Subscription, what: &str) -> RecordedEvent {
    within(what, sub.next())
        .await
        .unwrap_or_else(|e| panic!("{what}: the subscription failed: {e:?}"))
}

/// The next `count` events of `sub`.
pub(crate) async fn next_events(
    sub: &mut Subscription,
    count: usize,
    what: &str,
) -> Vec<RecordedEvent> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        out.push(next_event(sub, &format!("{what} (event {} of {count})", i + 1)).await);
    }
    out
}

/// Checks that `sub` delivers nothing more for [`QUIET`].
pub(crate) async fn assert_quiet(sub: &mut Subscription, what: &str) {
    if let Ok(result) = tokio::time::timeout(QUIET, sub.next()).await {
        panic!("{what}: the subscription delivered something it should not have: {result:?}");
    }
}

/// The event ids of `events`, for compact comparisons.
pub(crate) fn ids(events: &[RecordedEvent]) -> Vec<uuid::Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

/// Checks that positions strictly increase along `events`.
pub(crate) fn assert_increasing_positions(events: &[RecordedEvent], what: &str) {
    for pair in events.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "{what}: positions must strictly increase, got {} then {}",
            pair[0].position,
            pair[1].position
        );
    }
}

/// The current time truncated to microseconds, as stores record it.
pub(crate) fn now_micros() -> strata_core::Timestamp {
    strata_core::timestamp_from_micros(strata_core::timestamp_to_micros(chrono::Utc::now()))
}
