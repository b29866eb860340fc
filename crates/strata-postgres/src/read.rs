//! Reads: one stream, `$all` below the watermark, stream info, listings, temporal lookups.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::Row;
use strata_core::{
    limits as core_limits, AllPage, CategorySummary, Direction, ListOptions, Metadata, Page,
    Position, ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent, StreamId, StreamInfo,
    StreamSummary, Timestamp, Uuid,
};

use crate::error::read_error;
use crate::limits;
use crate::store::PostgresStore;

/// A `u64` position or version as the database's `BIGINT`, saturating.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn corruption(position: i64, reason: String) -> ReadError {
    ReadError::Corruption {
        file: "events".to_owned(),
        offset: position.max(0) as u64,
        reason,
    }
}

/// Decodes an event from the columns of [`crate::sql`]'s `EVENT_COLUMNS`, starting at `at`.
pub(crate) fn event_from_row(row: &PgRow, at: usize) -> Result<RecordedEvent, ReadError> {
    let get_err = |e: sqlx::Error| ReadError::Storage(crate::error::describe(&e));
    let position: i64 = row.try_get(at).map_err(get_err)?;
    let event_id: Uuid = row.try_get(at + 1).map_err(get_err)?;
    let stream: String = row.try_get(at + 2).map_err(get_err)?;
    let version: i64 = row.try_get(at + 3).map_err(get_err)?;
    let recorded_at: DateTime<Utc> = row.try_get(at + 4).map_err(get_err)?;
    let event_type: String = row.try_get(at + 5).map_err(get_err)?;
    let content_type: String = row.try_get(at + 6).map_err(get_err)?;
    let data: Vec<u8> = row.try_get(at + 7).map_err(get_err)?;
    let metadata: Option<String> = row.try_get(at + 8).map_err(get_err)?;
    if position < 0 || version < 0 {
        return Err(corruption(
            position,
            format!("negative position or version {version}"),
        ));
    }
    let stream_id = StreamId::new(stream)
        .map_err(|e| corruption(position, format!("stored stream id is invalid: {e}")))?;
    let metadata = match metadata {
        None => Metadata::new(),
        Some(m) => Metadata::from_bytes(m.as_bytes())
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

/// Waits for this store's own commits to become readable, with backoff, up to a bound.
struct ReadYourWrites {
    own: u64,
    started: Instant,
    pause: Duration,
}

impl ReadYourWrites {
    fn new(store: &PostgresStore) -> Self {
        ReadYourWrites {
            own: store.shared().own_xid.load(Ordering::Acquire),
            started: Instant::now(),
            pause: Duration::from_micros(200),
        }
    }

    /// Whether to read again because the watermark `xmin` has not passed our own commits yet.
    async fn wait(&mut self, xmin: i64) -> bool {
        if (xmin as u64) > self.own
            || self.started.elapsed() >= Duration::from_millis(limits::READ_YOUR_WRITES_WAIT_MS)
        {
            return false;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(20));
        true
    }
}

impl PostgresStore {
    pub(crate) async fn read_stream_events(
        &self,
        stream: &StreamId,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        options.validate()?;
        let sql = &self.shared().sql;
        let max = options.max_position.map_or(i64::MAX, |p| to_i64(p.0));
        let (query, from) = match options.direction {
            Direction::Forward => (
                &sql.read_stream_forward,
                options.from_version.map_or(0, to_i64),
            ),
            Direction::Backward => (
                &sql.read_stream_backward,
                options.from_version.map_or(i64::MAX, to_i64),
            ),
        };
        let rows = sqlx::query(query)
            .bind(stream.as_str())
            .bind(from)
            .bind(max)
            .bind(options.limit as i64)
            .fetch_all(self.pool())
            .await
            .map_err(read_error)?;
        if rows.is_empty() {
            let first: Option<i64> = sqlx::query_scalar(&sql.stream_first)
                .bind(stream.as_str())
                .fetch_optional(self.pool())
                .await
                .map_err(read_error)?;
            if first.is_none_or(|p| p > max) {
                return Err(ReadError::StreamNotFound(stream.clone()));
            }
        }
        rows.iter().map(|r| event_from_row(r, 0)).collect()
    }

    pub(crate) async fn read_all_events(
        &self,
        options: ReadAllOptions,
    ) -> Result<AllPage, ReadError> {
        options.validate()?;
        let filtered = !options.filter.is_empty();
        let scan = core_limits::READ_SCAN_MAX_EVENTS as i64;
        let max = options.max_position.map_or(i64::MAX, |p| to_i64(p.0));
        let limit = options.limit;
        let mut ryw = ReadYourWrites::new(self);
        loop {
            let (query, start, bound) = match options.direction {
                Direction::Forward => {
                    let from = options.from.map_or(0, |p| to_i64(p.0));
                    let end = if filtered {
                        from.saturating_add(scan)
                    } else {
                        i64::MAX
                    };
                    (&self.shared().sql.read_all_forward, from, end)
                }
                Direction::Backward => {
                    let from = options.from.map_or(i64::MAX, |p| to_i64(p.0));
                    // Filled in below once the head is known; the SQL clamps `from` itself.
                    (&self.shared().sql.read_all_backward, from, -1)
                }
            };
            let rows = self
                .run_read_all(query, start, max, bound, &options, filtered, scan)
                .await?;
            let Some(first) = rows.first() else {
                return Err(ReadError::Storage(
                    "the $all read returned no row".to_owned(),
                ));
            };
            let xmin: i64 = first.try_get(0).map_err(read_error)?;
            let hi: Option<i64> = first.try_get(1).map_err(read_error)?;
            let lo: Option<i64> = first.try_get(2).map_err(read_error)?;
            let events = rows
                .iter()
                .filter(|r| matches!(r.try_get::<Option<i64>, _>(3), Ok(Some(_))))
                .map(|r| event_from_row(r, 3))
                .collect::<Result<Vec<_>, _>>()?;
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
    ) -> Result<Vec<PgRow>, ReadError> {
        let bound = match options.direction {
            Direction::Forward => bound,
            // The backward window's size below the (clamped) start.
            Direction::Backward if filtered => scan,
            Direction::Backward => i64::MAX,
        };
        sqlx::query(query)
            .bind(start)
            .bind(max)
            .bind(bound)
            .bind(&options.filter.event_types)
            .bind(&options.filter.categories)
            .bind(options.filter.stream_prefix.as_deref())
            .bind(options.limit as i64)
            .fetch_all(self.pool())
            .await
            .map_err(read_error)
    }

    pub(crate) async fn head_position(&self) -> Result<Option<Position>, ReadError> {
        let mut ryw = ReadYourWrites::new(self);
        loop {
            let row = sqlx::query(&self.shared().sql.head)
                .fetch_one(self.pool())
                .await
                .map_err(read_error)?;
            let xmin: i64 = row.try_get(0).map_err(read_error)?;
            let hi: Option<i64> = row.try_get(1).map_err(read_error)?;
            if ryw.wait(xmin).await {
                continue;
            }
            return Ok(hi.map(|h| Position(h as u64)));
        }
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

    pub(crate) async fn stream_info_of(&self, stream: &StreamId) -> Result<StreamInfo, ReadError> {
        let row = sqlx::query(&self.shared().sql.stream_info)
            .bind(stream.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(read_error)?;
        let Some(row) = row else {
            return Ok(StreamInfo {
                stream_id: stream.clone(),
                exists: false,
                current_version: None,
                event_count: 0,
                first_recorded_at: None,
                last_recorded_at: None,
                last_position: None,
            });
        };
        let version: i64 = row.try_get(0).map_err(read_error)?;
        let position: i64 = row.try_get(1).map_err(read_error)?;
        let last_at: DateTime<Utc> = row.try_get(2).map_err(read_error)?;
        let first_at: Option<DateTime<Utc>> = row.try_get(3).map_err(read_error)?;
        Ok(StreamInfo {
            stream_id: stream.clone(),
            exists: true,
            current_version: Some(version as u64),
            // Versions are dense from 0.
            event_count: version as u64 + 1,
            first_recorded_at: first_at,
            last_recorded_at: Some(last_at),
            last_position: Some(Position(position as u64)),
        })
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
            .bind("")
            .bind(options.prefix.as_deref().unwrap_or(""))
            .bind(options.limit as i64 + 1)
            .bind(options.after.as_deref().unwrap_or(""))
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
