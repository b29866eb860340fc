//! The hand-over from a subscription's storage catch-up to the server's live fan-out (the hub)
//! loses nothing, whenever the hub starts. An event committed after the subscriber's last
//! storage read but before the hub fixes where it starts is in neither unless the hub's
//! starting point is fixed before the subscriber reads: the store below commits one exactly
//! then, from inside the `head()` the hub starts with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use futures::StreamExt;
use strata_core::{
    async_trait, AllPage, AppendError, AppendResult, CategorySummary, EventData, EventStore,
    ExpectedVersion, ListOptions, Page, Position, ReadAllOptions, ReadError, ReadStreamOptions,
    RecordedEvent, StreamId, StreamInfo, StreamSummary, SubscribeFrom, Subscription,
    SubscriptionTarget, Timestamp,
};
use strata_server::{app, AppState, ServerConfig};
use strata_testkit::MemoryStore;
use tokio::sync::watch;
use tower::ServiceExt;

/// A memory store that commits one event during the first `head()`, once a read of `$all` has
/// finished (or, if none comes, after a while): the moment a slow commit from another
/// process could land while the hub starts.
#[derive(Clone)]
struct CommitDuringHead {
    inner: MemoryStore,
    reads: watch::Sender<u64>,
    committed: Arc<AtomicBool>,
}

#[async_trait]
impl EventStore for CommitDuringHead {
    async fn append(
        &self,
        s: &StreamId,
        e: ExpectedVersion,
        ev: Vec<EventData>,
    ) -> Result<AppendResult, AppendError> {
        self.inner.append(s, e, ev).await
    }
    async fn read_stream(
        &self,
        s: &StreamId,
        o: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_stream(s, o).await
    }
    async fn read_all(&self, o: ReadAllOptions) -> Result<AllPage, ReadError> {
        let page = self.inner.read_all(o).await;
        self.reads.send_modify(|n| *n += 1);
        page
    }
    async fn stream_info(&self, s: &StreamId) -> Result<StreamInfo, ReadError> {
        self.inner.stream_info(s).await
    }
    async fn list_streams(&self, o: ListOptions) -> Result<Page<StreamSummary>, ReadError> {
        self.inner.list_streams(o).await
    }
    async fn list_categories(&self, o: ListOptions) -> Result<Page<CategorySummary>, ReadError> {
        self.inner.list_categories(o).await
    }
    async fn position_at(&self, at: Timestamp) -> Result<Option<Position>, ReadError> {
        self.inner.position_at(at).await
    }
    async fn head(&self) -> Result<Option<Position>, ReadError> {
        if !self.committed.swap(true, Ordering::SeqCst) {
            // Paused time: this bound passes at once when nothing else can run.
            let mut reads = self.reads.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(1), reads.wait_for(|n| *n > 0)).await;
            let e = EventData::json("Late", &serde_json::json!({})).unwrap();
            self.inner
                .append(
                    &StreamId::new("late-1").unwrap(),
                    ExpectedVersion::Any,
                    vec![e],
                )
                .await
                .unwrap();
        }
        self.inner.head().await
    }
    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }
    async fn subscribe(
        &self,
        t: SubscriptionTarget,
        f: SubscribeFrom,
    ) -> Result<Subscription, ReadError> {
        Subscription::start(Arc::new(self.clone()), t, f).await
    }
}

#[tokio::test(start_paused = true)]
async fn an_event_committed_while_the_hub_starts_reaches_the_subscriber() {
    let store = CommitDuringHead {
        inner: MemoryStore::new(),
        reads: watch::channel(0).0,
        committed: Arc::new(AtomicBool::new(false)),
    };
    let state = AppState::new(Arc::new(store), ServerConfig::default()).unwrap();
    let res = app(state)
        .oneshot(
            Request::get("/subscriptions/all?from=start")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body().into_data_stream();
    let mut text = String::new();
    let arrived = tokio::time::timeout(Duration::from_secs(30), async {
        while !text.contains("event: event") {
            match body.next().await {
                Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
                None => break,
            }
        }
    })
    .await;
    assert!(
        arrived.is_ok() && text.contains("\"eventType\":\"Late\""),
        "the event committed while the hub started never reached the subscriber: {text:?}"
    );
    assert!(text.contains("id: 0\n"), "{text}");
}
