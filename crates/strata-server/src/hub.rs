//! The live fan-out shared by every subscription of one server.
//!
//! One task follows `$all` from the store and renders each new event to JSON once; it publishes
//! them in batches on a bounded broadcast channel. A subscription catches up from storage on its
//! own (so a subscriber far behind costs only its cursor), then switches to the hub, so that a
//! hundred live subscribers cost one storage read and one JSON rendering per event, not a
//! hundred. The seam is checked, not assumed: each batch says which position the hub had
//! covered before it (the first, empty, batch says where the hub started), and a subscription
//! knows which position its storage reads covered (the head it took before its last read). A
//! batch that starts past that would leave a gap (the hub started after the subscription's
//! last read, say), so the subscription reads from storage again first; events it already
//! covered are skipped by position. A subscription
//! that falls more than the channel's capacity behind is told so by the channel
//! (`Lagged`) and goes back to reading storage from its last delivered event.
//!
//! The task stops when no subscription has listened for a while, releasing its handle on the
//! store, and starts again with the next subscription.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use strata_core::{Cursor, EventStore, RecordedEvent, SubscribeFrom, SubscriptionTarget};
use tokio::sync::broadcast;

use crate::wire::EventOut;

/// Batches the channel holds: with batches of up to one storage page (512 events), a
/// subscriber may be up to about 32,000 events behind the head before it goes back to storage.
const HUB_CHANNEL_BATCHES: usize = 64;

/// How often the hub looks whether anyone still listens.
const HUB_IDLE_CHECK_MS: u64 = 2_000;

/// An event rendered once for every subscriber.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub position: u64,
    pub stream_version: u64,
    pub stream_id: String,
    pub event_type: String,
    /// The event as one line of JSON.
    pub json: Arc<str>,
    /// The whole SSE frame with the position as id, as `$all` and category subscribers get it.
    pub frame_by_position: bytes::Bytes,
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
        let json = one_line(serde_json::to_string(&EventOut::new(e))?);
        Ok(Rendered {
            position: e.position.0,
            stream_version: e.stream_version,
            stream_id: e.stream_id.as_str().to_owned(),
            event_type: e.event_type.clone(),
            frame_by_position: sse_frame("event", Some(e.position.0), &json),
            json: json.into(),
        })
    }

    /// The SSE frame with `id` (the position or the stream version).
    pub(crate) fn frame(&self, id: u64) -> bytes::Bytes {
        if id == self.position {
            self.frame_by_position.clone()
        } else {
            sse_frame("event", Some(id), &self.json)
        }
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

pub(crate) type Batch = Arc<HubBatch>;

/// The hub's handle, kept in the app state.
#[derive(Default)]
pub(crate) struct Hub {
    sender: Arc<Mutex<Option<broadcast::Sender<Batch>>>>,
}

impl Hub {
    /// A receiver of every event published from now on; starts the hub task if needed.
    pub(crate) fn subscribe(&self, store: &Arc<dyn EventStore>) -> broadcast::Receiver<Batch> {
        let mut slot = self.sender.lock();
        if let Some(tx) = slot.as_ref() {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(HUB_CHANNEL_BATCHES);
        *slot = Some(tx.clone());
        tokio::spawn(run(store.clone(), tx, self.sender.clone()));
        rx
    }
}

async fn run(
    store: Arc<dyn EventStore>,
    tx: broadcast::Sender<Batch>,
    slot: Arc<Mutex<Option<broadcast::Sender<Batch>>>>,
) {
    let stop = |slot: &Mutex<Option<broadcast::Sender<Batch>>>| {
        let mut s = slot.lock();
        // Only stop when nobody joined meanwhile (joining happens under this lock).
        if tx.receiver_count() == 0 {
            *s = None;
            true
        } else {
            false
        }
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
            // Dropping the sender closes every receiver; they go back to storage.
            *slot.lock() = None;
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
    let announce = Arc::new(HubBatch {
        prev: covered,
        events: Vec::new(),
    });
    if tx.send(announce).is_err() && stop(&slot) {
        return;
    }
    loop {
        let first = tokio::select! {
            r = sub.next() => r,
            _ = tokio::time::sleep(Duration::from_millis(HUB_IDLE_CHECK_MS)) => {
                if stop(&slot) { return; }
                continue;
            }
        };
        let mut events = match first {
            Ok(e) => vec![e],
            Err(e) => {
                tracing::warn!(error = %e, "the subscription hub stopped");
                *slot.lock() = None;
                return;
            }
        };
        // Take what else is already readable, up to one page.
        while events.len() < strata_core::limits::SUBSCRIPTION_PAGE_EVENTS {
            match sub.try_next().await {
                Ok(Some(e)) => events.push(e),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "the subscription hub stopped");
                    *slot.lock() = None;
                    return;
                }
            }
        }
        let mut batch = Vec::with_capacity(events.len());
        for e in &events {
            match Rendered::new(e) {
                Ok(r) => batch.push(r),
                Err(err) => {
                    tracing::error!(error = %err, "the subscription hub could not render an event");
                    *slot.lock() = None;
                    return;
                }
            }
        }
        let prev = covered;
        covered = batch.last().map(|r| r.position).or(covered);
        if tx
            .send(Arc::new(HubBatch {
                prev,
                events: batch,
            }))
            .is_err()
            && stop(&slot)
        {
            return;
        }
    }
}
