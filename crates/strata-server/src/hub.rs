//! The live fan-out shared by every subscription of one server.
//!
//! One task follows `$all` from the store and renders each new event to JSON once; it publishes
//! them in batches, which it keeps for its subscribers within `sse_fan_out_max_bytes`. A subscription catches up from storage on its
//! own (so a subscriber far behind costs only its cursor), then switches to the hub, so that a
//! hundred live subscribers cost one storage read and one JSON rendering per event, not a
//! hundred. The seam is checked, not assumed: each batch says which position the hub had
//! covered before it (the first, empty, batch says where the hub started), and a subscription
//! knows which position its storage reads covered (the head it took before its last read). A
//! batch that starts past that would leave a gap (the hub started after the subscription's
//! last read, say), so the subscription reads from storage again first; events it already
//! covered are skipped by position. A subscription
//! that falls so far behind that batches it had not taken were dropped is told so (`Lagged`)
//! and goes back to reading storage from its last delivered event.
//!
//! The task stops when no subscription has listened for a while, releasing its handle on the
//! store, and starts again with the next subscription.

use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use strata_core::{Cursor, EventStore, RecordedEvent, SubscribeFrom, SubscriptionTarget};
use tokio::sync::Notify;

use crate::limits;

use strata_wire::EventJson;

/// How often the hub looks whether anyone still listens.
const HUB_IDLE_CHECK_MS: u64 = 2_000;

/// An event rendered once for every subscriber.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub position: u64,
    pub stream_version: u64,
    pub stream_id: String,
    pub event_type: String,
    /// The whole SSE frame with the position as id, as `$all` and category subscribers get it.
    pub frame_by_position: bytes::Bytes,
    /// Where the event's JSON (one line) starts in the frame; it ends two bytes before the
    /// frame does. Kept as a slice of the frame, so an event is held once.
    json_start: usize,
}

/// One SSE frame: `event: <name>`, `id: <id>` when given, `data: <one line>`.
pub(crate) fn sse_frame(name: &str, id: Option<u64>, data: &str) -> bytes::Bytes {
    let mut b = String::with_capacity(data.len() + name.len() + 40);
    b.push_str("event: ");
    b.push_str(name);
    if let Some(id) = id {
        b.push_str("\nid: ");
        b.push_str(&id.to_string());
    }
    b.push_str("\ndata: ");
    b.push_str(data);
    b.push_str("\n\n");
    bytes::Bytes::from(b)
}

impl Rendered {
    pub(crate) fn new(e: &RecordedEvent) -> Result<Self, serde_json::Error> {
        let json = one_line(serde_json::to_string(&EventJson::new(e))?);
        let frame = sse_frame(strata_wire::sse::EVENT, Some(e.position.0), &json);
        Ok(Rendered {
            position: e.position.0,
            stream_version: e.stream_version,
            stream_id: e.stream_id.as_str().to_owned(),
            event_type: e.event_type.clone(),
            json_start: frame.len() - json.len() - 2,
            frame_by_position: frame,
        })
    }

    /// The SSE frame with `id` (the position or the stream version).
    pub(crate) fn frame(&self, id: u64) -> bytes::Bytes {
        if id == self.position {
            self.frame_by_position.clone()
        } else {
            let json = &self.frame_by_position[self.json_start..self.frame_by_position.len() - 2];
            sse_frame(
                strata_wire::sse::EVENT,
                Some(id),
                &String::from_utf8_lossy(json),
            )
        }
    }

    /// Bytes this event holds.
    pub(crate) fn bytes(&self) -> usize {
        self.frame_by_position.len()
            + self.stream_id.len()
            + self.event_type.len()
            + std::mem::size_of::<Self>()
    }
}

/// Removes whitespace outside strings, so an event's JSON is one line (SSE data lines must not
/// hold a line break).
pub(crate) fn one_line(json: String) -> String {
    if !json.contains(['\n', '\r']) {
        return json;
    }
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

/// Events the hub publishes together, with what the hub had covered before them.
#[derive(Debug)]
pub(crate) struct HubBatch {
    /// Every event of `$all` at or below this position was published before this batch (or
    /// was already stored when the hub started); every event after it up to the batch's last
    /// is in the batch. `None`: nothing before. A subscriber that has covered less than this
    /// from storage would miss events between the two, so it reads them from storage first.
    pub prev: Option<u64>,
    /// The events, in position order; empty in the first batch, which announces where the
    /// hub starts.
    pub events: Vec<Rendered>,
}

impl HubBatch {
    /// Bytes the batch holds.
    pub(crate) fn bytes(&self) -> usize {
        self.events.iter().map(Rendered::bytes).sum::<usize>() + std::mem::size_of::<Self>()
    }
}

pub(crate) type Batch = Arc<HubBatch>;

/// The batches the hub keeps for its subscribers, bounded in bytes: the oldest are dropped to
/// stay within `sse_fan_out_max_bytes` (the newest is always kept), and a subscriber that has
/// not taken a dropped batch yet is told it lagged.
struct Ring {
    state: Mutex<RingState>,
    published: Notify,
    receivers: AtomicUsize,
    max_bytes: usize,
}

#[derive(Default)]
struct RingState {
    /// Batches with their sequence numbers, oldest first.
    batches: VecDeque<(u64, Batch)>,
    /// The next batch's sequence number.
    next: u64,
    bytes: usize,
    closed: bool,
}

impl Ring {
    fn publish(&self, batch: Batch) {
        let mut st = self.state.lock();
        let seq = st.next;
        st.next += 1;
        st.bytes += batch.bytes();
        st.batches.push_back((seq, batch));
        while st.bytes > self.max_bytes && st.batches.len() > 1 {
            if let Some((_, old)) = st.batches.pop_front() {
                st.bytes -= old.bytes();
            }
        }
        drop(st);
        self.published.notify_waiters();
    }

    fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        st.batches.clear();
        st.bytes = 0;
        drop(st);
        self.published.notify_waiters();
    }
}

/// Why [`HubReceiver::recv`] has no batch.
#[derive(Debug)]
pub(crate) enum Missed {
    /// The subscriber fell behind and batches it had not taken were dropped.
    Lagged,
    /// The hub stopped.
    Closed,
}

/// One subscriber's place in the hub's batches.
pub(crate) struct HubReceiver {
    ring: Arc<Ring>,
    next: u64,
}

impl HubReceiver {
    /// The next batch, waiting for one to be published.
    pub(crate) async fn recv(&mut self) -> Result<Batch, Missed> {
        loop {
            let published = self.ring.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            {
                let st = self.ring.state.lock();
                if st.closed {
                    return Err(Missed::Closed);
                }
                if let Some((first, _)) = st.batches.front() {
                    if self.next < *first {
                        return Err(Missed::Lagged);
                    }
                    if let Some((_, batch)) = st.batches.get((self.next - first) as usize) {
                        self.next += 1;
                        return Ok(batch.clone());
                    }
                }
            }
            published.await;
        }
    }
}

impl Drop for HubReceiver {
    fn drop(&mut self) {
        self.ring.receivers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The hub's handle, kept in the app state.
pub(crate) struct Hub {
    ring: Arc<Mutex<Option<Arc<Ring>>>>,
    max_bytes: usize,
}

impl Hub {
    /// A hub whose kept batches hold at most `max_bytes` (the newest batch always stays).
    pub(crate) fn new(max_bytes: usize) -> Self {
        Hub {
            ring: Arc::new(Mutex::new(None)),
            max_bytes,
        }
    }

    /// A receiver of every batch published from now on; starts the hub task if needed.
    pub(crate) fn subscribe(&self, store: &Arc<dyn EventStore>) -> HubReceiver {
        let mut slot = self.ring.lock();
        let ring = match slot.as_ref() {
            Some(ring) => ring.clone(),
            None => {
                let ring = Arc::new(Ring {
                    state: Mutex::new(RingState::default()),
                    published: Notify::new(),
                    receivers: AtomicUsize::new(0),
                    max_bytes: self.max_bytes,
                });
                *slot = Some(ring.clone());
                tokio::spawn(run(store.clone(), ring.clone(), self.ring.clone()));
                ring
            }
        };
        ring.receivers.fetch_add(1, Ordering::AcqRel);
        let next = ring.state.lock().next;
        HubReceiver { ring, next }
    }

    /// Bytes the hub's kept batches hold now.
    pub(crate) fn bytes(&self) -> usize {
        self.ring
            .lock()
            .as_ref()
            .map_or(0, |ring| ring.state.lock().bytes)
    }
}

/// Stops the hub when dropped: no more batches, receivers told it closed, the slot freed for
/// the next subscription to start a new one.
struct Stopping {
    ring: Arc<Ring>,
    slot: Arc<Mutex<Option<Arc<Ring>>>>,
}

impl Drop for Stopping {
    fn drop(&mut self) {
        let mut slot = self.slot.lock();
        if slot.as_ref().is_some_and(|r| Arc::ptr_eq(r, &self.ring)) {
            *slot = None;
        }
        drop(slot);
        self.ring.close();
    }
}

async fn run(store: Arc<dyn EventStore>, ring: Arc<Ring>, slot: Arc<Mutex<Option<Arc<Ring>>>>) {
    let _stopping = Stopping {
        ring: ring.clone(),
        slot: slot.clone(),
    };
    // Whether nobody listens (checked under the slot's lock, which joining takes): then the
    // hub stops, releasing its handle on the store.
    let idle = || {
        let _slot = slot.lock();
        ring.receivers.load(Ordering::Acquire) == 0
    };
    let mut sub = match store
        .subscribe(
            SubscriptionTarget::All(Default::default()),
            SubscribeFrom::End,
        )
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "the subscription hub could not start");
            // Closing tells every receiver; they go back to storage.
            return;
        }
    };
    // Where the hub starts: the head it took, which may be past what a subscriber that joined
    // before this moment has read from storage. Announce it at once, so such a subscriber reads
    // the events in between from storage without waiting for the next append.
    let mut covered = match sub.cursor() {
        Cursor::AllNext(next) => next.0.checked_sub(1),
        _ => None,
    };
    ring.publish(Arc::new(HubBatch {
        prev: covered,
        events: Vec::new(),
    }));
    loop {
        let first = tokio::select! {
            r = sub.next() => r,
            _ = tokio::time::sleep(Duration::from_millis(HUB_IDLE_CHECK_MS)) => {
                if idle() { return; }
                continue;
            }
        };
        let first = match first {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "the subscription hub stopped");
                return;
            }
        };
        // Take what else is already readable, up to one page or HUB_BATCH_MAX_BYTES.
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut next = Some(first);
        while let Some(e) = next.take() {
            let r = match Rendered::new(&e) {
                Ok(r) => r,
                Err(err) => {
                    tracing::error!(error = %err, "the subscription hub could not render an event");
                    return;
                }
            };
            bytes += r.bytes();
            batch.push(r);
            if batch.len() >= strata_core::limits::SUBSCRIPTION_PAGE_EVENTS
                || bytes >= limits::SERVER_SSE_FAN_OUT_BATCH_MAX_BYTES
            {
                break;
            }
            match sub.try_next().await {
                Ok(e) => next = e,
                Err(e) => {
                    tracing::warn!(error = %e, "the subscription hub stopped");
                    return;
                }
            }
        }
        let prev = covered;
        covered = batch.last().map(|r| r.position).or(covered);
        ring.publish(Arc::new(HubBatch {
            prev,
            events: batch,
        }));
        if idle() {
            return;
        }
    }
}
