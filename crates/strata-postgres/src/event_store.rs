//! The [`EventStore`] implementation, delegating to the append and read modules.

use std::sync::Arc;

use async_trait::async_trait;
use strata_core::{
    AllPage, AppendError, AppendResult, CategorySummary, EventData, EventStore, ExpectedVersion,
    ListOptions, Page, Position, ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent,
    StreamId, StreamInfo, StreamSummary, SubscribeFrom, Subscription, SubscriptionTarget,
    Timestamp,
};
use tokio::sync::watch;

use crate::store::PostgresStore;

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, AppendError> {
        self.append_events(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.read_stream_events(stream, options).await
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<AllPage, ReadError> {
        self.read_all_events(options).await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo, ReadError> {
        self.stream_info_of(stream).await
    }

    async fn list_streams(&self, options: ListOptions) -> Result<Page<StreamSummary>, ReadError> {
        self.list_stream_summaries(options).await
    }

    async fn list_categories(
        &self,
        options: ListOptions,
    ) -> Result<Page<CategorySummary>, ReadError> {
        self.list_category_summaries(options).await
    }

    async fn position_at(&self, at: Timestamp) -> Result<Option<Position>, ReadError> {
        self.position_at_time(at).await
    }

    async fn head(&self) -> Result<Option<Position>, ReadError> {
        self.head_position().await
    }

    fn check_writable(&self) -> Result<(), AppendError> {
        if self
            .shared()
            .read_only
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(AppendError::Unavailable((
                "the PostgreSQL host is read-only (a hot standby, or default_transaction_read_only): \
                 appends are refused until a writable host takes one"
                    .to_owned()
            ).into()));
        }
        Ok(())
    }

    async fn head_now(&self) -> Result<Option<Position>, ReadError> {
        self.head_now_position().await
    }

    async fn backend_metrics(&self) -> Result<String, ReadError> {
        self.metrics_text().await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.shared().changes.subscribe()
    }

    async fn subscribe(
        &self,
        target: SubscriptionTarget,
        from: SubscribeFrom,
    ) -> Result<Subscription, ReadError> {
        Subscription::start(Arc::new(self.clone()), target, from).await
    }
}
