//! Reads: one stream, `$all` below the watermark, stream info, listings, temporal lookups.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Row, ValueRef};
use strata_core::{
    limits as core_limits, AllPage, CategorySummary, Corruption, CorruptionLocation, Direction,
    ListOptions, Metadata, Page, Position, ReadAllOptions, ReadError, ReadStreamOptions,
    RecordedEvent, StreamId, StreamInfo, StreamSummary, Timestamp, Uuid,
};

use crate::error::read_error;
use crate::limits;
use crate::store::PostgresStore;

/// A `u64` position or version as the database's `BIGINT`, saturating.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A row of the events table (its key is the position) whose values cannot be decoded.
fn corruption(position: i64, reason: String) -> ReadError {
    Corruption::new(
        CorruptionLocation::Row {
            table: "events".to_owned(),
            key: position.to_string(),
        },
        u64::try_from(position).ok().map(Position),
        reason,
    )
    .into()
}

/// Decodes an event from the columns of [`crate::sql`]'s `EVENT_COLUMNS`, starting at `at`.
///
/// The column types are fixed by our own SQL, so values are decoded without sqlx's per-column
/// type check, and text and bytes are read straight from the row buffer: this is the hot loop
/// of every catch-up.
pub(crate) fn event_from_row(row: &PgRow, at: usize) -> Result<RecordedEvent, ReadError> {
    let get_err = |e: sqlx::Error| ReadError::Storage(crate::error::backend(e));
    let raw = |i: usize| -> Result<Option<&[u8]>, ReadError> {
        let v = row.try_get_raw(at + i).map_err(get_err)?;
        if v.is_null() {
            return Ok(None);
        }
        v.as_bytes()
            .map(Some)
            .map_err(|e| ReadError::Storage(format!("column {}: {e}", at + i).into()))
    };
    let position: i64 = row.try_get_unchecked(at).map_err(get_err)?;
    let event_id: Uuid = row.try_get_unchecked(at + 1).map_err(get_err)?;
    let stream = raw(2)?.unwrap_or_default();
    let version: i64 = row.try_get_unchecked(at + 3).map_err(get_err)?;
    let recorded_at: DateTime<Utc> = row.try_get_unchecked(at + 4).map_err(get_err)?;
    let text = |i: usize| -> Result<String, ReadError> {
        let bytes = raw(i)?.unwrap_or_default();
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| corruption(position, format!("column {} is not UTF-8: {e}", at + i)))
    };
    let event_type = text(5)?;
    let content_type = text(6)?;
    let data = raw(7)?.unwrap_or_default().to_vec();
    let metadata = raw(8)?;
    if position < 0 || version < 0 {
        return Err(corruption(
            position,
            format!("negative position or version {version}"),
        ));
    }
    let stream = std::str::from_utf8(stream)
        .map_err(|e| corruption(position, format!("stream id is not UTF-8: {e}")))?;
    let stream_id = StreamId::new(stream)
        .map_err(|e| corruption(position, format!("stored stream id is invalid: {e}")))?;
    let metadata = match metadata {
        None => Metadata::new(),
        Some(m) => Metadata::from_bytes(m)
            .map_err(|e| corruption(position, format!("metadata does not decode: {e}")))?,
    };
    Ok(RecordedEvent {
        event_id,
        stream_id,
        stream_version: version as u64,
        position: Position(position as u64),
        recorded_at,
        event_type,
        content_type,
        data,
        metadata,
    })
}

/// Which index drives a filtered forward read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// (aggregate_type, position): the keys are categories.
    Category,
    /// (event_type, position): the keys are event types.
    EventType,
}

/// How a filtered forward `$all` read uses an index: the rows of `keys` in `driver`'s index
/// include every match; with `residual`, the rest of the filter is checked on each of them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexPlan {
    driver: Driver,
    keys: Vec<String>,
    residual: bool,
}

impl IndexPlan {
    /// The plan for `filter`, or `None` when no index narrows it (an unfiltered read, or a
    /// stream prefix without `-` alone: it reads position windows).
    ///
    /// A stream's category is its id up to the first `-`. So a prefix with a `-` names one
    /// category, and a prefix without one matches exactly the streams whose category starts
    /// with it.
    fn of(filter: &strata_core::Filter) -> Option<IndexPlan> {
        let prefix = filter.stream_prefix.as_deref().filter(|p| !p.is_empty());
        let prefix_category = prefix
            .filter(|p| p.contains('-'))
            .map(strata_core::category_of);
        let dedup = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        };
        if !filter.categories.is_empty() {
            // Only the categories the prefix allows: then a prefix without `-` is implied.
            let keys: Vec<String> = dedup(&filter.categories)
                .into_iter()
                .filter(|c| match (prefix, prefix_category) {
                    (_, Some(pc)) => c == pc,
                    (Some(p), None) => c.starts_with(p),
                    (None, _) => true,
                })
                .collect();
            return Some(IndexPlan {
                driver: Driver::Category,
                keys,
                residual: !filter.event_types.is_empty() || prefix_category.is_some(),
            });
        }
        if let Some(pc) = prefix_category {
            return Some(IndexPlan {
                driver: Driver::Category,
                keys: vec![pc.to_owned()],
                residual: true,
            });
        }
        if !filter.event_types.is_empty() {
            return Some(IndexPlan {
                driver: Driver::EventType,
                keys: dedup(&filter.event_types),
                residual: prefix.is_some(),
            });
        }
        None
    }
}

/// What a read-ahead page was read for: a later read uses it only when it asks for exactly this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadAheadKey {
    from: Option<Position>,
    limit: usize,
    max_position: Option<Position>,
    filter: strata_core::Filter,
}

impl ReadAheadKey {
    fn of(o: &ReadAllOptions) -> Self {
        ReadAheadKey {
            from: o.from,
            limit: o.limit,
            max_position: o.max_position,
            filter: o.filter.clone(),
        }
    }
}

/// One page of a read-ahead chunk and where it starts.
pub(crate) struct AheadPage {
    from: Option<Position>,
    page: AllPage,
}

/// Splits a chunk read from `from` into full pages of `limit` events that are not at the end.
/// Each keeps the cursor rule of a fresh read: `next` just past its last event. Pages whose
/// bytes exceed [`limits::READ_AHEAD_MAX_BYTES`] in total are not kept.
fn split_pages(chunk: AllPage, from: Option<Position>, limit: usize) -> Vec<AheadPage> {
    let mut pages = Vec::new();
    let total = chunk.events.len();
    let chunk_end = chunk.is_end;
    let mut from = from;
    let mut bytes = 0usize;
    let mut events = chunk.events.into_iter().peekable();
    let mut taken = 0usize;
    while total - taken >= limit {
        let page_events: Vec<RecordedEvent> = events.by_ref().take(limit).collect();
        taken += limit;
        // The last full page of a chunk that reached the end is at the end: not kept.
        if taken == total && chunk_end {
            break;
        }
        bytes += page_events
            .iter()
            .map(|e| e.data.len() + e.event_type.len() + e.stream_id.as_str().len() + 64)
            .sum::<usize>();
        if bytes > limits::READ_AHEAD_MAX_BYTES {
            break;
        }
        let next = page_events.last().map(|e| Position(e.position.0 + 1));
        pages.push(AheadPage {
            from,
            page: AllPage {
                events: page_events,
                next,
                is_end: false,
            },
        });
        from = next;
    }
    pages
}

/// A read-ahead entry: a chunk still being read, or one page of a chunk already read.
pub(crate) enum Slot {
    Pending(tokio::task::JoinHandle<Result<Vec<AheadPage>, ReadError>>),
    Ready(AllPage),
}

/// Pages being read ahead, at most [`limits::READ_AHEAD_SLOTS`]; the oldest is dropped (and
/// its read cancelled) to make room.
#[derive(Default)]
pub(crate) struct ReadAhead {
    slots: std::sync::Mutex<std::collections::VecDeque<(ReadAheadKey, Slot)>>,
}

impl ReadAhead {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(ReadAheadKey, Slot)>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether no page is being read ahead right now.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn settled(&self) -> bool {
        self.lock().iter().all(|(_, slot)| match slot {
            Slot::Pending(task) => task.is_finished(),
            Slot::Ready(_) => true,
        })
    }

    fn take(&self, key: &ReadAheadKey) -> Option<Slot> {
        let mut slots = self.lock();
        let i = slots.iter().position(|(k, _)| k == key)?;
        slots.remove(i).map(|(_, t)| t)
    }

    fn put(&self, key: ReadAheadKey, slot: Slot) {
        let mut slots = self.lock();
        if let Some(i) = slots.iter().position(|(k, _)| *k == key) {
            if let Some((_, Slot::Pending(old))) = slots.remove(i) {
                old.abort();
            }
        }
        while slots.len() >= limits::READ_AHEAD_SLOTS {
            if let Some((_, Slot::Pending(old))) = slots.pop_front() {
                old.abort();
            }
        }
        slots.push_back((key, slot));
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        for (_, slot) in self.lock().drain(..) {
            if let Slot::Pending(t) = slot {
                t.abort();
            }
        }
    }
}

/// Waits for this store's own commits to become readable, with backoff, up to a bound: at most
/// [`limits::READ_YOUR_WRITES_WAIT_MS`] after the read started, and after the store first saw
/// the watermark at the transaction holding it (see [`crate::watermark::Stall`]). So a
/// transaction held open elsewhere delays reads for that long once, not every read.
struct ReadYourWrites<'a> {
    store: &'a PostgresStore,
    own: u64,
    started: Instant,
    pause: Duration,
    counted: bool,
}

impl<'a> ReadYourWrites<'a> {
    fn new(store: &'a PostgresStore) -> Self {
        ReadYourWrites {
            store,
            own: store.shared().own_xid.load(Ordering::Acquire),
            started: Instant::now(),
            pause: Duration::from_micros(200),
            counted: false,
        }
    }

    /// Whether to read again because the watermark `xmin` has not passed our own commits yet.
    async fn wait(&mut self, xmin: i64) -> bool {
        if (xmin as u64) > self.own {
            return false;
        }
        let deadline = self.store.shared().stall.deadline(xmin, self.started);
        let now = Instant::now();
        if now >= deadline {
            self.store.report_stall(xmin);
            return false;
        }
        if !self.counted {
            self.counted = true;
            self.store.shared().stall.count_wait();
        }
        tokio::time::sleep(self.pause.min(deadline - now)).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(20));
        true
    }
}

/// Runs `query` and hands each row to `f` as it arrives, so decoding overlaps with the
/// server producing the rest (and no row outlives its decoding).
async fn for_each_row<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    pool: &sqlx::PgPool,
    mut f: impl FnMut(&PgRow) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    use futures::TryStreamExt;
    let mut rows = query.fetch(pool);
    while let Some(row) = rows.try_next().await.map_err(read_error)? {
        f(&row)?;
    }
    Ok(())
}

/// The watermark columns every `$all` read returns on each row (see `crate::sql`).
#[derive(Debug, Clone, Copy)]
struct Head {
    xmin: i64,
    hi: Option<i64>,
    lo: Option<i64>,
    /// Some stream may have lifecycle state (a metastream or a tombstone exists).
    lifecycle: bool,
}

/// What one `$all` query returned: the watermark, the cut of an indexed read, the events.
struct Fetched {
    head: Option<Head>,
    cut: Option<i64>,
    events: Vec<RecordedEvent>,
}

impl Fetched {
    /// Runs an `$all` query whose rows are the watermark columns, the cut when `with_cut`,
    /// then an event's columns (all NULL on the one row of a read that matched nothing).
    async fn collect<'q>(
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        pool: &sqlx::PgPool,
        limit: usize,
        with_cut: bool,
    ) -> Result<Fetched, ReadError> {
        let at = if with_cut { 5 } else { 4 };
        let mut out = Fetched {
            head: None,
            cut: None,
            events: Vec::with_capacity(limit.min(limits::READ_RESERVE_EVENTS)),
        };
        for_each_row(query, pool, |r| {
            if out.head.is_none() {
                out.head = Some(Head {
                    xmin: r.try_get(0).map_err(read_error)?,
                    hi: r.try_get(1).map_err(read_error)?,
                    lo: r.try_get(2).map_err(read_error)?,
                    lifecycle: r.try_get(3).map_err(read_error)?,
                });
                if with_cut {
                    out.cut = r.try_get(4).map_err(read_error)?;
                }
            }
            // The LEFT JOIN yields one row of NULL event columns when no event matched.
            if !r.try_get_raw(at).map_err(read_error)?.is_null() {
                out.events.push(event_from_row(r, at)?);
            }
            Ok(())
        })
        .await?;
        Ok(out)
    }
}

/// A stream read with `options` as one of the statements `forward` or `backward` (bound: the
/// stream, the first version, the newest position allowed, the limit), and that position.
fn stream_read<'q>(
    forward: &'q str,
    backward: &'q str,
    stream: &'q StreamId,
    options: &ReadStreamOptions,
) -> (
    sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    i64,
) {
    let max = options.max_position.map_or(i64::MAX, |p| to_i64(p.0));
    let (query, from) = match options.direction {
        Direction::Forward => (forward, options.from_version.map_or(0, to_i64)),
        Direction::Backward => (backward, options.from_version.map_or(i64::MAX, to_i64)),
    };
    let query = sqlx::query(query)
        .bind(stream.as_str())
        .bind(from)
        .bind(max)
        .bind(options.limit as i64);
    (query, max)
}

impl PostgresStore {
    pub(crate) async fn read_stream_events(
        &self,
        stream: &StreamId,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        options.validate()?;
        let sql = &self.shared().sql;
        let (query, max) = stream_read(
            &sql.read_stream_forward,
            &sql.read_stream_backward,
            stream,
            &options,
        );
        let mut events = Vec::with_capacity(options.limit.min(limits::READ_RESERVE_EVENTS));
        for_each_row(query, self.pool(), |r| {
            events.push(event_from_row(r, 0)?);
            Ok(())
        })
        .await?;
        if events.is_empty() {
            self.check_stream_exists(stream, max).await?;
        }
        Ok(events)
    }

    /// An empty read's answer: `StreamNotFound` unless the stream has an event at or below
    /// position `max`.
    async fn check_stream_exists(&self, stream: &StreamId, max: i64) -> Result<(), ReadError> {
        let first: Option<i64> = sqlx::query_scalar(&self.shared().sql.stream_first)
            .bind(stream.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(read_error)?;
        if first.is_none_or(|p| p > max) {
            return Err(ReadError::StreamNotFound(stream.clone()));
        }
        Ok(())
    }

    /// `read_stream` of a stream (not a metastream) with its lifecycle state, in one
    /// statement: the events as stored, and what readers may see of them. The caller reads
    /// again, through the lifecycle's rules, only when the state hides something.
    pub(crate) async fn read_stream_with_lifecycle(
        &self,
        stream: &StreamId,
        options: &ReadStreamOptions,
    ) -> Result<(Vec<RecordedEvent>, crate::lifecycle::Lifecycle), ReadError> {
        let sql = &self.shared().sql;
        let (query, max) = stream_read(
            &sql.read_stream_forward_lifecycle,
            &sql.read_stream_backward_lifecycle,
            stream,
            options,
        );
        let mut events = Vec::with_capacity(options.limit.min(limits::READ_RESERVE_EVENTS));
        let mut state = None;
        for_each_row(query, self.pool(), |r| {
            if state.is_none() {
                state = Some(crate::lifecycle::Lifecycle::from_row(r, 9)?);
            }
            // The LEFT JOIN yields one row of NULL event columns when no event matched.
            if !r.try_get_raw(0).map_err(read_error)?.is_null() {
                events.push(event_from_row(r, 0)?);
            }
            Ok(())
        })
        .await?;
        let state = state.ok_or_else(|| {
            ReadError::Storage("a stream read returned no row at all".to_owned().into())
        })?;
        if events.is_empty() && state.visibility.is_all() {
            match state.last {
                None => return Err(ReadError::StreamNotFound(stream.clone())),
                Some(_) => self.check_stream_exists(stream, max).await?,
            }
        }
        Ok((events, state))
    }

    /// `read_all`, with read-ahead for forward paging: after a forward read returns a full
    /// page that is not at the end, the next [`limits::READ_AHEAD_PAGES`] pages (from its
    /// `next`, same options) are read in one query in the background, so a catch-up finds its
    /// next reads ready and overlaps reading with delivering. Pages below the watermark are
    /// final, so a page read ahead is exactly what a fresh read would return; only full pages
    /// not at the end are kept, anything else is read afresh.
    /// The caller validated `options` (`EventStore::read_all`, which also adds the
    /// metastreams' categories to a category filter, past the limit on terms).
    /// A page of `$all`, and whether it was read just now (rather than ahead, earlier).
    pub(crate) async fn read_all_events(
        &self,
        options: ReadAllOptions,
    ) -> Result<(AllPage, bool), ReadError> {
        let ahead = options.direction == Direction::Forward
            && options.limit > 0
            && options.limit <= limits::READ_AHEAD_MAX_EVENTS;
        if !ahead {
            return Ok((self.read_all_once(options).await?, true));
        }
        let read_ahead = &self.shared().read_ahead;
        let mut page = None;
        match read_ahead.take(&ReadAheadKey::of(&options)) {
            Some(Slot::Ready(p)) => page = Some(p),
            Some(Slot::Pending(task)) => {
                if let Ok(Ok(mut pages)) = task.await {
                    if !pages.is_empty() {
                        let first = pages.remove(0);
                        if first.from == options.from {
                            // Start reading the chunk after this one now, while this one is
                            // being delivered.
                            if let Some(last) = pages.last().or(Some(&first)) {
                                self.read_ahead_from(&options, last.page.next);
                            }
                            for p in pages {
                                let key = ReadAheadKey {
                                    from: p.from,
                                    ..ReadAheadKey::of(&options)
                                };
                                read_ahead.put(key, Slot::Ready(p.page));
                            }
                            page = Some(first.page);
                        }
                    }
                }
            }
            None => {}
        }
        match page {
            Some(p) => Ok((p, false)),
            None => {
                let p = self.read_all_once(options.clone()).await?;
                if p.events.len() == options.limit && !p.is_end {
                    self.read_ahead_from(&options, p.next);
                }
                Ok((p, true))
            }
        }
    }

    /// Starts reading ahead the pages after `next` (when there is one).
    fn read_ahead_from(&self, options: &ReadAllOptions, next: Option<Position>) {
        let Some(next) = next else {
            return;
        };
        let limit = options.limit;
        let chunk = options
            .clone()
            .from(next)
            .limit(limit * limits::READ_AHEAD_PAGES);
        let key = ReadAheadKey::of(&options.clone().from(next));
        let store = self.clone();
        let task = tokio::spawn(async move {
            let from = chunk.from;
            let page = store.read_all_once(chunk).await?;
            Ok(split_pages(page, from, limit))
        });
        self.shared().read_ahead.put(key, Slot::Pending(task));
    }

    async fn read_all_once(&self, options: ReadAllOptions) -> Result<AllPage, ReadError> {
        let filtered = !options.filter.is_empty();
        let scan = core_limits::READ_SCAN_MAX_EVENTS as i64;
        let max = options.max_position.map_or(i64::MAX, |p| to_i64(p.0));
        let limit = options.limit;
        let indexed = match options.direction {
            Direction::Forward => IndexPlan::of(&options.filter),
            Direction::Backward => None,
        };
        let mut ryw = ReadYourWrites::new(self);
        loop {
            let (fetched, start, bound) = match (&indexed, options.direction) {
                (Some(plan), _) => {
                    let from = options.from.map_or(0, |p| to_i64(p.0));
                    let fetched = self.run_indexed(plan, from, max, &options).await?;
                    // The cut, when there is one, ends what this read examined.
                    let bound = fetched.cut.map_or(i64::MAX, |c| c.saturating_add(1));
                    (fetched, from, bound)
                }
                (None, Direction::Forward) => {
                    let from = options.from.map_or(0, |p| to_i64(p.0));
                    let end = if filtered {
                        from.saturating_add(scan)
                    } else {
                        i64::MAX
                    };
                    let query = &self.shared().sql.read_all_forward;
                    let fetched = self
                        .run_read_all(query, from, max, end, &options, filtered, scan)
                        .await?;
                    (fetched, from, end)
                }
                (None, Direction::Backward) => {
                    let from = options.from.map_or(i64::MAX, |p| to_i64(p.0));
                    // The SQL clamps `from` itself.
                    let query = &self.shared().sql.read_all_backward;
                    let fetched = self
                        .run_read_all(query, from, max, -1, &options, filtered, scan)
                        .await?;
                    (fetched, from, -1)
                }
            };
            let Fetched {
                head,
                cut: _,
                mut events,
            } = fetched;
            let Some(Head {
                xmin,
                hi,
                lo,
                lifecycle,
            }) = head
            else {
                return Err(ReadError::Storage(
                    ("the $all read returned no row".to_owned()).into(),
                ));
            };
            if lifecycle {
                self.shared().note_lifecycle();
            }
            // The lateral subquery returns its rows in index order and the one-row outer side
            // keeps it; check rather than pay for a second sort in SQL.
            let in_order = match options.direction {
                Direction::Forward => events.windows(2).all(|w| w[0].position < w[1].position),
                Direction::Backward => events.windows(2).all(|w| w[0].position > w[1].position),
            };
            if !in_order {
                events.sort_by_key(|e| e.position);
                if options.direction == Direction::Backward {
                    events.reverse();
                }
            }
            let top = hi.map(|h| h.min(max));
            let page = match options.direction {
                Direction::Forward => forward_page(events, start, bound, top, limit),
                Direction::Backward => backward_page(events, start, top, lo, limit, filtered, scan),
            };
            // Read-your-writes: a read that reached the head waits until this store's own
            // committed appends are below the watermark.
            let at_head = match options.direction {
                Direction::Forward => page.is_end,
                Direction::Backward => options
                    .from
                    .is_none_or(|f| top.is_none_or(|t| to_i64(f.0) >= t)),
            };
            if at_head && options.max_position.is_none() && ryw.wait(xmin).await {
                continue;
            }
            return Ok(page);
        }
    }

    /// A forward filtered read over the index `plan` names (see `crate::sql`'s
    /// `indexed_forward`).
    async fn run_indexed(
        &self,
        plan: &IndexPlan,
        from: i64,
        max: i64,
        options: &ReadAllOptions,
    ) -> Result<Fetched, ReadError> {
        let sql = &self.shared().sql;
        let query = match (plan.driver, plan.residual) {
            (Driver::Category, false) => &sql.read_all_by_category,
            (Driver::Category, true) => &sql.read_all_by_category_filtered,
            (Driver::EventType, false) => &sql.read_all_by_type,
            (Driver::EventType, true) => &sql.read_all_by_type_filtered,
        };
        // With a residual filter each key examines at most its share of the scan bound, so
        // one call examines at most `READ_INDEXED_CHECK_MAX_ROWS` rows of the categories
        // asked for (a key whose share ends before a page's worth of matches sets the cut,
        // and the next read goes on from it). Their metastreams' categories (`$$account`,
        // which a category filter keeps too) hold only lifecycle events, few beside their
        // streams': each gets its category's share, so a call examines at most twice the
        // bound, and only when there are as many lifecycle events as events.
        let asked = plan
            .keys
            .iter()
            .filter(|k| !k.starts_with(strata_core::METASTREAM_PREFIX))
            .count();
        let share = limits::READ_INDEXED_CHECK_MAX_ROWS / asked.max(1);
        let cap = share.max(1) as i64;
        let query = sqlx::query(query)
            .bind(from)
            .bind(max)
            .bind(cap)
            .bind(&options.filter.event_types)
            .bind(&options.filter.categories)
            .bind(options.filter.stream_prefix.as_deref())
            .bind(options.limit as i64)
            .bind(&plan.keys);
        // Columns: xmin, hi, lo, cut, then the event's.
        Fetched::collect(query, self.pool(), options.limit, true).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_read_all(
        &self,
        query: &str,
        start: i64,
        max: i64,
        bound: i64,
        options: &ReadAllOptions,
        filtered: bool,
        scan: i64,
    ) -> Result<Fetched, ReadError> {
        let bound = match options.direction {
            Direction::Forward => bound,
            // The backward window's size below the (clamped) start.
            Direction::Backward if filtered => scan,
            Direction::Backward => i64::MAX,
        };
        let query = sqlx::query(query)
            .bind(start)
            .bind(max)
            .bind(bound)
            .bind(&options.filter.event_types)
            .bind(&options.filter.categories)
            .bind(options.filter.stream_prefix.as_deref())
            .bind(options.limit as i64);
        // Columns: xmin, hi, lo, then the event's.
        Fetched::collect(query, self.pool(), options.limit, false).await
    }

    pub(crate) async fn head_position(&self) -> Result<Option<Position>, ReadError> {
        let mut ryw = ReadYourWrites::new(self);
        loop {
            let (xmin, head) = self.head_row().await?;
            if ryw.wait(xmin).await {
                continue;
            }
            return Ok(head);
        }
    }

    /// One run of the head statement: the watermark (`xmin`) and the readable head.
    pub(crate) async fn head_row(&self) -> Result<(i64, Option<Position>), ReadError> {
        let row = sqlx::query(&self.shared().sql.head)
            .fetch_one(self.pool())
            .await
            .map_err(read_error)?;
        let xmin: i64 = row.try_get(0).map_err(read_error)?;
        let hi: Option<i64> = row.try_get(1).map_err(read_error)?;
        Ok((xmin, hi.map(|h| Position(h as u64))))
    }

    pub(crate) async fn position_at_time(
        &self,
        at: Timestamp,
    ) -> Result<Option<Position>, ReadError> {
        let mut ryw = ReadYourWrites::new(self);
        loop {
            let row = sqlx::query(&self.shared().sql.position_at)
                .bind(at)
                .fetch_one(self.pool())
                .await
                .map_err(read_error)?;
            let xmin: i64 = row.try_get(0).map_err(read_error)?;
            let p: Option<i64> = row.try_get(1).map_err(read_error)?;
            if ryw.wait(xmin).await {
                continue;
            }
            return Ok(p.map(|p| Position(p as u64)));
        }
    }

    /// What is stored of `stream`, and what readers may see of it.
    pub(crate) async fn stream_info_of(
        &self,
        stream: &StreamId,
    ) -> Result<(StreamInfo, strata_core::lifecycle::Visibility), ReadError> {
        let row = sqlx::query(&self.shared().sql.stream_info)
            .bind(stream.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(read_error)?;
        let Some(row) = row else {
            return Ok((
                StreamInfo {
                    stream_id: stream.clone(),
                    exists: false,
                    current_version: None,
                    event_count: 0,
                    first_recorded_at: None,
                    last_recorded_at: None,
                    last_position: None,
                    tombstoned: false,
                },
                strata_core::lifecycle::Visibility::ALL,
            ));
        };
        let version: i64 = row.try_get(0).map_err(read_error)?;
        let position: i64 = row.try_get(1).map_err(read_error)?;
        let last_at: DateTime<Utc> = row.try_get(2).map_err(read_error)?;
        let first_at: Option<DateTime<Utc>> = row.try_get(3).map_err(read_error)?;
        let metadata: Option<Vec<u8>> = row.try_get(4).map_err(read_error)?;
        let tombstone: Option<bool> = row.try_get(5).map_err(read_error)?;
        let visibility = crate::lifecycle::visibility(
            metadata.as_deref(),
            Some(version as u64),
            tombstone.unwrap_or(false),
        );
        Ok((
            StreamInfo {
                stream_id: stream.clone(),
                exists: true,
                current_version: Some(version as u64),
                // Versions are dense from 0.
                event_count: version as u64 + 1,
                first_recorded_at: first_at,
                last_recorded_at: Some(last_at),
                last_position: Some(Position(position as u64)),
                tombstoned: false,
            },
            visibility,
        ))
    }

    pub(crate) async fn list_stream_summaries(
        &self,
        options: ListOptions,
    ) -> Result<Page<StreamSummary>, ReadError> {
        options.validate()?;
        let rows = sqlx::query(&self.shared().sql.list_streams)
            .bind(options.after.as_deref().unwrap_or(""))
            .bind(options.prefix.as_deref().unwrap_or(""))
            .bind(options.limit as i64 + 1)
            .fetch_all(self.pool())
            .await
            .map_err(read_error)?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get(0).map_err(read_error)?;
            let version: i64 = row.try_get(1).map_err(read_error)?;
            let position: i64 = row.try_get(2).map_err(read_error)?;
            items.push(StreamSummary {
                category: strata_core::category_of(&id).to_owned(),
                stream_id: id,
                event_count: version as u64 + 1,
                last_position: Position(position as u64),
            });
        }
        Ok(page(items, options.limit, |s| s.stream_id.clone()))
    }

    pub(crate) async fn list_category_summaries(
        &self,
        options: ListOptions,
    ) -> Result<Page<CategorySummary>, ReadError> {
        options.validate()?;
        let rows = sqlx::query(&self.shared().sql.list_categories)
            .bind(options.after.as_deref().unwrap_or(""))
            .bind(options.prefix.as_deref().unwrap_or(""))
            .bind(options.limit as i64 + 1)
            .fetch_all(self.pool())
            .await
            .map_err(read_error)?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let category: String = row.try_get(0).map_err(read_error)?;
            let streams: i64 = row.try_get(1).map_err(read_error)?;
            let events: i64 = row.try_get(2).map_err(read_error)?;
            items.push(CategorySummary {
                category,
                stream_count: streams as u64,
                event_count: events as u64,
            });
        }
        Ok(page(items, options.limit, |c| c.category.clone()))
    }
}

/// Cuts `limit + 1` fetched items to a page with a `next` cursor when there are more.
fn page<T>(mut items: Vec<T>, limit: usize, name: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next = match more {
        true => items.last().map(name),
        false => None,
    };
    Page { items, next }
}

/// `next` and `is_end` of a forward read from `from` that examined positions up to `top` (the
/// newest readable position, capped by max_position) or up to the window end `bound`
/// (exclusive) for filtered reads.
fn forward_page(
    events: Vec<RecordedEvent>,
    from: i64,
    bound: i64,
    top: Option<i64>,
    limit: usize,
) -> AllPage {
    let from_p = Position(from as u64);
    let Some(top) = top else {
        return AllPage {
            events,
            next: Some(from_p),
            is_end: true,
        };
    };
    if limit > 0 && events.len() == limit {
        let last = events.last().map_or(from, |e| e.position.0 as i64);
        return AllPage {
            events,
            next: Some(Position(last as u64 + 1)),
            is_end: last >= top,
        };
    }
    if limit == 0 {
        return AllPage {
            events,
            next: Some(from_p),
            is_end: from > top,
        };
    }
    let scan_end = top.min(bound.saturating_sub(1));
    if scan_end < from {
        return AllPage {
            events,
            next: Some(from_p),
            is_end: from > top,
        };
    }
    AllPage {
        events,
        next: Some(Position(scan_end as u64 + 1)),
        is_end: scan_end >= top,
    }
}

/// `next` and `is_end` of a backward read starting at `from` (clamped to `top`), where `lo` is
/// the oldest stored position.
fn backward_page(
    events: Vec<RecordedEvent>,
    from: i64,
    top: Option<i64>,
    lo: Option<i64>,
    limit: usize,
    filtered: bool,
    scan: i64,
) -> AllPage {
    let (Some(top), Some(lo)) = (top, lo) else {
        return AllPage {
            events,
            next: None,
            is_end: true,
        };
    };
    let start = from.min(top);
    if start < lo {
        return AllPage {
            events,
            next: None,
            is_end: true,
        };
    }
    if limit == 0 {
        return AllPage {
            events,
            next: Some(Position(start as u64)),
            is_end: false,
        };
    }
    let oldest_examined = if events.len() == limit {
        events.last().map_or(start, |e| e.position.0 as i64)
    } else if filtered {
        // The SQL window was (from.min(max) - scan, ...]; the examined part starts at the
        // higher of that and the oldest position.
        (from.min(top) - scan + 1).max(lo)
    } else {
        lo
    };
    if oldest_examined <= lo {
        AllPage {
            events,
            next: None,
            is_end: true,
        }
    } else {
        AllPage {
            events,
            next: Some(Position(oldest_examined as u64 - 1)),
            is_end: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undecodable_row_names_its_table_and_key_not_a_file() {
        let e = corruption(42, "column 5 is not UTF-8".to_owned());
        let ReadError::Corruption(c) = &e else {
            panic!("expected corruption, got {e:?}");
        };
        assert_eq!(
            c.location,
            CorruptionLocation::Row {
                table: "events".to_owned(),
                key: "42".to_owned()
            }
        );
        assert_eq!(c.position, Some(Position(42)));
        assert_eq!(
            e.to_string(),
            "corruption in table events, row 42 (position 42): column 5 is not UTF-8"
        );
    }

    #[test]
    fn forward_page_cursor_rules() {
        // Empty store.
        let p = forward_page(Vec::new(), 7, i64::MAX, None, 10);
        assert_eq!((p.next, p.is_end), (Some(Position(7)), true));
        // Nothing at or after from, head below from.
        let p = forward_page(Vec::new(), 7, i64::MAX, Some(5), 10);
        assert_eq!((p.next, p.is_end), (Some(Position(7)), true));
        // Filtered window exhausted before the head.
        let p = forward_page(Vec::new(), 0, 100, Some(500), 10);
        assert_eq!((p.next, p.is_end), (Some(Position(100)), false));
        // Filtered window reaching the head.
        let p = forward_page(Vec::new(), 450, 550, Some(500), 10);
        assert_eq!((p.next, p.is_end), (Some(Position(501)), true));
        // Limit zero examines nothing.
        let p = forward_page(Vec::new(), 1, i64::MAX, Some(5), 0);
        assert_eq!((p.next, p.is_end), (Some(Position(1)), false));
    }

    fn event_at(position: u64) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::nil(),
            stream_id: StreamId::new("a-1").unwrap(),
            stream_version: position,
            position: Position(position),
            recorded_at: chrono::Utc::now(),
            event_type: "E".to_owned(),
            content_type: strata_core::CONTENT_TYPE_JSON.to_owned(),
            data: b"{}".to_vec(),
            metadata: Metadata::new(),
        }
    }

    #[test]
    fn read_ahead_keeps_only_full_pages_not_at_the_end() {
        // 10 events with gaps, pages of 3: pages [0,2,4], [5,6,9], [10,11,12]; 13 is a tail.
        let positions = [0u64, 2, 4, 5, 6, 9, 10, 11, 12, 13];
        let chunk = AllPage {
            events: positions.iter().map(|&p| event_at(p)).collect(),
            next: Some(Position(14)),
            is_end: false,
        };
        let pages = split_pages(chunk, Some(Position(0)), 3);
        assert_eq!(pages.len(), 3);
        assert_eq!(pages[0].from, Some(Position(0)));
        assert_eq!(pages[0].page.next, Some(Position(5)));
        assert_eq!(pages[1].from, Some(Position(5)));
        assert_eq!(pages[2].from, Some(Position(10)));
        assert_eq!(pages[2].page.next, Some(Position(13)));
        assert!(pages
            .iter()
            .all(|p| !p.page.is_end && p.page.events.len() == 3));
        // A chunk that reached the end: its last full page is at the end and is dropped.
        let chunk = AllPage {
            events: (0..6).map(event_at).collect(),
            next: Some(Position(6)),
            is_end: true,
        };
        let pages = split_pages(chunk, None, 3);
        assert_eq!(pages.len(), 1);
        assert_eq!(pages[0].from, None);
    }

    #[test]
    fn index_plans() {
        use strata_core::Filter;
        let plan = |f: Filter| IndexPlan::of(&f).map(|p| (p.driver, p.keys, p.residual));
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(plan(Filter::default()), None);
        assert_eq!(
            plan(Filter::default().categories(["b", "a", "b"])),
            Some((Driver::Category, keys(&["a", "b"]), false))
        );
        assert_eq!(
            plan(Filter::default().categories(["a"]).event_types(["T"])),
            Some((Driver::Category, keys(&["a"]), true))
        );
        assert_eq!(
            plan(Filter::default().event_types(["T", "S"])),
            Some((Driver::EventType, keys(&["S", "T"]), false))
        );
        // A prefix with `-` is one category, checked row by row.
        assert_eq!(
            plan(Filter::default().stream_prefix("acc-1")),
            Some((Driver::Category, keys(&["acc"]), true))
        );
        assert_eq!(
            plan(
                Filter::default()
                    .categories(["acc", "other"])
                    .stream_prefix("acc-1")
            ),
            Some((Driver::Category, keys(&["acc"]), true))
        );
        // A prefix without `-` keeps the categories starting with it, and nothing else is
        // needed; alone it has no index.
        assert_eq!(
            plan(
                Filter::default()
                    .categories(["account", "order", "acc"])
                    .stream_prefix("acc")
            ),
            Some((Driver::Category, keys(&["acc", "account"]), false))
        );
        assert_eq!(
            plan(Filter::default().event_types(["T"]).stream_prefix("acc")),
            Some((Driver::EventType, keys(&["T"]), true))
        );
        assert_eq!(plan(Filter::default().stream_prefix("acc")), None);
        assert_eq!(plan(Filter::default().stream_prefix("")), None);
        assert_eq!(
            plan(Filter::default().categories(["a"]).stream_prefix("b-")),
            Some((Driver::Category, Vec::new(), true))
        );
    }

    #[test]
    fn backward_page_cursor_rules() {
        let p = backward_page(Vec::new(), i64::MAX, None, None, 10, false, 100);
        assert_eq!((p.next, p.is_end), (None, true));
        let p = backward_page(Vec::new(), i64::MAX, Some(1000), Some(0), 10, true, 100);
        assert_eq!((p.next, p.is_end), (Some(Position(900)), false));
        let p = backward_page(Vec::new(), i64::MAX, Some(50), Some(0), 10, true, 100);
        assert_eq!((p.next, p.is_end), (None, true));
        let p = backward_page(Vec::new(), i64::MAX, Some(5), Some(0), 0, false, 100);
        assert_eq!((p.next, p.is_end), (Some(Position(5)), false));
    }
}
