//! Catch-up subscriptions shared by every backend.
//!
//! A subscription reads pages from storage after its cursor; when it has read everything it
//! waits for the store's change signal (or the poll interval) and reads again. Because every
//! delivered event comes from a storage read strictly after the cursor, there is no seam where
//! an event could be skipped or repeated. It holds at most one page in memory, so a slow
//! consumer costs nothing but its cursor: it simply reads older pages later.
//!
//! This is the one implementation of "catch up, then go live" in Strata: the server's live
//! subscriptions, the CLI's `tail` and the projection runners all read the log through it,
//! event by event ([`Subscription::next`]) or a page at a time ([`Subscription::next_batch`],
//! [`Subscription::try_next_batch`]), so the seam proof of the conformance suite covers them
//! all.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{InvalidInput, ReadError};
use crate::event::{Position, RecordedEvent};
use crate::limits;
use crate::options::{ReadAllOptions, ReadStreamOptions, SubscribeFrom, SubscriptionTarget};
use crate::store::EventStore;

/// Where a subscription is: the last delivered position (for `$all`) or version (for a stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Not started; resolves on the first read.
    Unresolved(SubscribeFrom),
    /// `$all`: the next read starts at this position (inclusive).
    AllNext(Position),
    /// A stream: the next read starts at this version.
    StreamNext(u64),
}

/// A live subscription. Call [`Subscription::next`] in a loop, or turn it into a
/// `futures::Stream` with [`Subscription::into_stream`].
pub struct Subscription {
    store: Arc<dyn EventStore>,
    target: SubscriptionTarget,
    cursor: Cursor,
    buffer: VecDeque<RecordedEvent>,
    changes: watch::Receiver<u64>,
    poll_interval: Duration,
    page_events: usize,
    last_delivered: Option<RecordedEventKey>,
    /// Whether the last storage read reached the end of what was readable.
    at_end: bool,
}

/// One page of a subscription: the events it delivers and how far the read behind them went.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The events, in order; empty when the read found nothing new (see `through`).
    pub events: Vec<RecordedEvent>,
    /// For `$all`: every position up to and including this one is accounted for: each event
    /// there that the filter matches was delivered (in this batch or an earlier one) or lies
    /// before where the subscription started or was last moved to with `seek`. A consumer that
    /// applied what it was delivered may store it as its checkpoint and resume with
    /// [`SubscribeFrom::AfterPosition`], also when a sparse filter skipped the events before
    /// it. `None` while nothing before the cursor is accounted for (a subscription from the
    /// start that has read nothing yet).
    ///
    /// For a stream: the position of the last event delivered since the start or the last
    /// `seek`. A stream consumer resumes by version, with [`Subscription::last_version`].
    pub through: Option<Position>,
    /// Whether the read reached the end of what the store could show.
    pub is_end: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecordedEventKey {
    position: Position,
    stream_version: u64,
}

impl Subscription {
    /// A subscription on `store`, its starting point fixed before it returns (so `End` means
    /// the head as of this call). Backends call this from [`EventStore::subscribe`].
    pub async fn start(
        store: Arc<dyn EventStore>,
        target: SubscriptionTarget,
        from: SubscribeFrom,
    ) -> Result<Self, ReadError> {
        let changes = store.changes();
        let mut sub = Subscription {
            store,
            target,
            cursor: Cursor::Unresolved(from),
            buffer: VecDeque::new(),
            changes,
            poll_interval: Duration::from_millis(limits::SUBSCRIPTION_POLL_INTERVAL_MS),
            page_events: limits::SUBSCRIPTION_PAGE_EVENTS,
            last_delivered: None,
            at_end: false,
        };
        sub.cursor = sub.resolve(from).await?;
        Ok(sub)
    }

    /// Changes how long a caught-up subscription waits before it looks at storage anyway.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Changes how many events one storage read fetches (default
    /// [`limits::SUBSCRIPTION_PAGE_EVENTS`], at most [`limits::READ_PAGE_MAX_EVENTS`]): the
    /// most a subscription holds in memory.
    pub fn with_page_events(mut self, events: usize) -> Self {
        self.page_events = events.clamp(1, limits::READ_PAGE_MAX_EVENTS);
        self
    }

    /// Moves the subscription to `from` (resolved now, like [`Subscription::start`]),
    /// dropping what it had read ahead. A consumer whose own checkpoint moved (another
    /// writer applied events, or its read model was reset) carries on from there.
    pub async fn seek(&mut self, from: SubscribeFrom) -> Result<(), ReadError> {
        self.cursor = self.resolve(from).await?;
        self.buffer.clear();
        self.at_end = false;
        // What was delivered before the seek says nothing about where it stands now.
        self.last_delivered = None;
        Ok(())
    }

    /// Where the next storage read starts. Resolved by the time [`Subscription::start`]
    /// returns, so a subscription from [`SubscribeFrom::End`] tells here which head it took.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// The position of the last delivered event, to resume `$all` from with
    /// [`SubscribeFrom::AfterPosition`].
    pub fn last_position(&self) -> Option<Position> {
        self.last_delivered.map(|k| k.position)
    }

    /// The version of the last delivered event, to resume a stream from with
    /// [`SubscribeFrom::AfterVersion`].
    pub fn last_version(&self) -> Option<u64> {
        self.last_delivered.map(|k| k.stream_version)
    }

    /// The next event; waits until one is appended when caught up.
    pub async fn next(&mut self) -> Result<RecordedEvent, ReadError> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.last_delivered = Some(RecordedEventKey {
                    position: event.position,
                    stream_version: event.stream_version,
                });
                return Ok(event);
            }
            // Mark the current change value as seen *before* reading, so a commit that lands
            // after the read wakes the wait below.
            self.changes.borrow_and_update();
            if self.fill().await? {
                continue;
            }
            // Caught up: wait for a change or the poll interval, whichever comes first.
            self.changed().await;
        }
    }

    /// Like [`Subscription::next`] but returns `None` instead of waiting when caught up.
    pub async fn try_next(&mut self) -> Result<Option<RecordedEvent>, ReadError> {
        while self.buffer.is_empty() {
            if !self.fill().await? {
                break;
            }
        }
        match self.buffer.is_empty() {
            true => Ok(None),
            false => self.next().await.map(Some),
        }
    }

    /// The next page: the events read ahead, or one storage read. Waits when caught up, like
    /// [`Subscription::next`]; returns an empty batch only when a sparse filter moved
    /// [`Batch::through`] past events it skipped, so the consumer's checkpoint can follow.
    pub async fn next_batch(&mut self) -> Result<Batch, ReadError> {
        loop {
            let before = self.through();
            let batch = self.try_next_batch().await?;
            if !batch.events.is_empty() || batch.through != before {
                return Ok(batch);
            }
            self.changed().await;
        }
    }

    /// Like [`Subscription::next_batch`] but never waits: one storage read at most, whose
    /// batch may be empty. [`Batch::is_end`] says whether it caught up; when it did not and
    /// the batch is empty (a backend holding newer events back), [`Subscription::changed`]
    /// is the way to wait.
    pub async fn try_next_batch(&mut self) -> Result<Batch, ReadError> {
        if self.buffer.is_empty() {
            // Seen before reading, so a commit that lands after the read wakes `changed`.
            self.changes.borrow_and_update();
            self.fill().await?;
        }
        // The whole buffer, without copying: a page read into an empty buffer is still the
        // read's own allocation (see `keep`).
        let events = Vec::from(std::mem::take(&mut self.buffer));
        if let Some(last) = events.last() {
            self.last_delivered = Some(RecordedEventKey {
                position: last.position,
                stream_version: last.stream_version,
            });
        }
        Ok(Batch {
            events,
            through: self.through(),
            is_end: self.at_end,
        })
    }

    /// Waits until the store reports a change since the last storage read, or the poll
    /// interval passes, whichever comes first.
    pub async fn changed(&mut self) {
        match tokio::time::timeout(self.poll_interval, self.changes.changed()).await {
            Ok(Ok(())) | Err(_) => {}
            // The store dropped its change signal (it is closing): fall back to the poll
            // interval rather than read again at once, forever.
            Ok(Err(_)) => tokio::time::sleep(self.poll_interval).await,
        }
    }

    /// How far delivery has gone; see [`Batch::through`]. Events in the read-ahead buffer
    /// count as delivered: only a whole batch reads it.
    fn through(&self) -> Option<Position> {
        match self.cursor {
            Cursor::AllNext(next) => next.0.checked_sub(1).map(Position),
            _ => self.last_delivered.map(|k| k.position),
        }
    }

    /// The subscription as a `futures::Stream` of results.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<RecordedEvent, ReadError>> {
        futures::stream::unfold(self, |mut sub| async move {
            let item = sub.next().await;
            Some((item, sub))
        })
    }

    async fn resolve(&mut self, from: SubscribeFrom) -> Result<Cursor, ReadError> {
        Ok(match (&self.target, from) {
            (SubscriptionTarget::All(_), SubscribeFrom::Start) => Cursor::AllNext(Position::START),
            (SubscriptionTarget::All(_), SubscribeFrom::AfterPosition(p)) => {
                Cursor::AllNext(Position(p.0.saturating_add(1)))
            }
            (SubscriptionTarget::All(_), SubscribeFrom::End) => match self.store.head().await? {
                Some(p) => Cursor::AllNext(Position(p.0 + 1)),
                None => Cursor::AllNext(Position::START),
            },
            (SubscriptionTarget::Stream(_), SubscribeFrom::Start) => Cursor::StreamNext(0),
            (SubscriptionTarget::Stream(_), SubscribeFrom::AfterVersion(v)) => {
                Cursor::StreamNext(v.saturating_add(1))
            }
            (SubscriptionTarget::Stream(s), SubscribeFrom::End) => {
                let info = self.store.stream_info(s).await?;
                Cursor::StreamNext(info.current_version.map_or(0, |v| v + 1))
            }
            (SubscriptionTarget::All(_), SubscribeFrom::AfterVersion(_)) => {
                return Err(InvalidInput::new(
                    "from",
                    "a subscription to $all resumes after a position, not a stream version",
                )
                .into())
            }
            (SubscriptionTarget::Stream(_), SubscribeFrom::AfterPosition(_)) => {
                return Err(InvalidInput::new(
                    "from",
                    "a stream subscription resumes after a stream version, not a position",
                )
                .into())
            }
        })
    }

    /// Adds a page read from storage to the buffer, taking over its allocation when the buffer
    /// is empty (as it is after every batch).
    fn keep(&mut self, events: Vec<RecordedEvent>) {
        if self.buffer.is_empty() {
            self.buffer = VecDeque::from(events);
        } else {
            self.buffer.extend(events);
        }
    }

    /// Reads the next page into the buffer. Returns whether it made progress: events were
    /// added, or the cursor moved past events that did not match and more remain.
    async fn fill(&mut self) -> Result<bool, ReadError> {
        if let Cursor::Unresolved(from) = self.cursor {
            self.cursor = self.resolve(from).await?;
        }
        match (&self.target, self.cursor) {
            (SubscriptionTarget::All(filter), Cursor::AllNext(from)) => {
                let page = self
                    .store
                    .read_all(
                        ReadAllOptions::forward()
                            .from(from)
                            .limit(self.page_events)
                            .filter(filter.clone()),
                    )
                    .await?;
                let mut moved = false;
                // A backend that names no continuation still moved past what it returned.
                let after_last = page.events.last().map(|e| Position(e.position.0 + 1));
                if let Some(next) = page.next.max(after_last) {
                    // A backend never moves a forward cursor backward; assert the pairing.
                    debug_assert!(next >= from);
                    moved = next > from;
                    self.cursor = Cursor::AllNext(next.max(from));
                }
                let added = !page.events.is_empty();
                self.at_end = page.is_end;
                self.keep(page.events);
                // A page of a sparse filter may hold nothing yet move the cursor: that is
                // progress, so read on at once instead of waiting for a change.
                Ok(added || (moved && !page.is_end))
            }
            (SubscriptionTarget::Stream(stream), Cursor::StreamNext(version)) => {
                let events = match self
                    .store
                    .read_stream(
                        stream,
                        ReadStreamOptions::forward()
                            .from_version(version)
                            .limit(self.page_events),
                    )
                    .await
                {
                    Ok(events) => events,
                    Err(ReadError::StreamNotFound(_)) => Vec::new(),
                    Err(e) => return Err(e),
                };
                if let Some(last) = events.last() {
                    self.cursor = Cursor::StreamNext(last.stream_version + 1);
                }
                let added = !events.is_empty();
                self.at_end = events.len() < self.page_events;
                self.keep(events);
                Ok(added)
            }
            _ => Err(ReadError::Storage(
                ("subscription cursor does not fit its target".to_owned()).into(),
            )),
        }
    }
}
