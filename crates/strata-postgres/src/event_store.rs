//! The [`EventStore`] implementation, delegating to the append and read modules.

use std::sync::Arc;

use async_trait::async_trait;
use strata_core::lifecycle;
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
        // Marked before: a store that may have lifecycle state while it has none only asks
        // for it in vain.
        if crate::lifecycle::is_lifecycle_change(stream, &events) {
            self.shared().note_lifecycle();
        }
        self.append_events(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        options.validate()?;
        if stream.is_metastream() {
            return self.read_stream_events(stream, options).await;
        }
        // One statement reads the events and the stream's lifecycle state; a stream whose
        // state hides something is read again through the lifecycle's rules.
        let (events, state) = self.read_stream_with_lifecycle(stream, &options).await?;
        if state.visibility.is_all() {
            return Ok(events);
        }
        lifecycle::read_visible(stream, state.visibility, state.last, options, |options| {
            self.read_stream_events(stream, options)
        })
        .await
    }

    async fn read_all(&self, mut options: ReadAllOptions) -> Result<AllPage, ReadError> {
        options.validate()?;
        options.filter.categories = options.filter.category_terms();
        let (page, fresh) = self.read_all_events(options).await?;
        // While no metastream or tombstone exists, no stream has lifecycle state and the page
        // is what readers see. A page read just now said so in its own statement (which
        // marks the store once one exists, for good); one read ahead is asked again.
        if !self.shared().lifecycle_seen() && (fresh || !self.lifecycle_exists().await?) {
            return Ok(page);
        }
        let AllPage {
            events,
            next,
            is_end,
        } = page;
        Ok(AllPage {
            events: self.keep_visible(self.pool(), events).await?,
            next,
            is_end,
        })
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo, ReadError> {
        let (stored, visibility) = self.stream_info_of(stream).await?;
        lifecycle::visible_stream_info(self, stored, visibility).await
    }

    async fn list_streams(&self, options: ListOptions) -> Result<Page<StreamSummary>, ReadError> {
        let page = self.list_stream_summaries(options).await?;
        // The page's lifecycle states in one query, which answers nothing while no metastream
        // exists. A listed count is the stream's next version, as visibility counts.
        let names: Vec<&str> = page.items.iter().map(|i| i.stream_id.as_str()).collect();
        let states = if names.is_empty() {
            Default::default()
        } else {
            self.lifecycles(&names).await?
        };
        Ok(lifecycle::visible_listing_by(page, |name| {
            states.get(name).map(|s| s.visibility)
        }))
    }

    async fn list_categories(
        &self,
        options: ListOptions,
    ) -> Result<Page<CategorySummary>, ReadError> {
        let page = self.list_category_summaries(options).await?;
        Ok(lifecycle::visible_categories(page))
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

    async fn scavenge(
        &self,
        progress: strata_core::scavenge::ProgressFn<'_>,
    ) -> Result<strata_core::scavenge::ScavengeReport, strata_core::scavenge::ScavengeError> {
        self.scavenge_events(progress).await
    }

    async fn subscribe(
        &self,
        target: SubscriptionTarget,
        from: SubscribeFrom,
    ) -> Result<Subscription, ReadError> {
        Subscription::start(Arc::new(self.clone()), target, from).await
    }
}
