//! The append path: validation, grouping concurrent appends into one transaction (group
//! commit), and turning the `strata_append` function's answers and races into typed results.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{Executor, Postgres, Row};
use strata_core::{
    validate_append, ActualVersion, AppendError, AppendResult, EventData, ExpectedVersion,
    InvalidInput, Position, StreamId, Uuid, CONTENT_TYPE_JSON,
};
use tokio::sync::oneshot;

use crate::error::{append_error, constraint, is_connection_lost, is_unavailable, sqlstate};
use crate::limits;
use crate::store::Shared;

/// One event ready for the database.
#[derive(Debug, Clone)]
pub(crate) struct PreparedEvent {
    pub id: Uuid,
    pub event_type: String,
    pub content_type: String,
    /// Also store a JSONB copy in `data`.
    pub json: bool,
    pub data: Vec<u8>,
    pub metadata: Option<String>,
}

/// One append waiting for a writer.
pub(crate) struct AppendRequest {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<PreparedEvent>,
    pub reply: oneshot::Sender<Result<AppendResult, AppendError>>,
}

impl AppendRequest {
    fn bytes(&self) -> usize {
        self.events
            .iter()
            .map(|e| e.data.len() + e.metadata.as_ref().map_or(0, String::len))
            .sum()
    }
}

/// Whether JSON text holds the escape `\u0000`, which PostgreSQL's jsonb cannot store.
pub(crate) use strata_core::json_has_nul_escape as has_nul_escape;

/// Validates an append and turns it into what the database stores.
pub(crate) fn prepare(
    stream: &StreamId,
    events: Vec<EventData>,
) -> Result<Vec<PreparedEvent>, AppendError> {
    let metas = validate_append(&events)?;
    strata_core::lifecycle::check_reserved(stream, &events)?;
    events
        .into_iter()
        .zip(metas)
        .enumerate()
        .map(|(i, (e, meta))| {
            let metadata = if meta.is_empty() {
                None
            } else {
                if has_nul_escape(&meta) {
                    return Err(InvalidInput::new(
                        format!("events[{i}].metadata"),
                        "holds the character U+0000, which PostgreSQL's jsonb cannot store",
                    )
                    .into());
                }
                Some(String::from_utf8(meta).map_err(|_| {
                    InvalidInput::new(format!("events[{i}].metadata"), "is not UTF-8")
                })?)
            };
            let json = e.content_type == CONTENT_TYPE_JSON
                && std::str::from_utf8(&e.data).is_ok()
                && !has_nul_escape(&e.data);
            Ok(PreparedEvent {
                id: e.event_id.unwrap_or_else(Uuid::now_v7),
                event_type: e.event_type,
                content_type: e.content_type,
                json,
                data: e.data,
                metadata,
            })
        })
        .collect()
}

/// Appends waiting for a transaction, and how many batch tasks are running.
///
/// Group commit without idle writer threads: an arriving append queues itself and, when fewer
/// than `max_in_flight` batch tasks run, spawns one. A batch task takes everything queued
/// (within the batch limits), runs it as one transaction, answers each append, and goes on
/// while appends are waiting. So a lone append costs one task spawn, and under load appends
/// that arrive during a transaction share the next one.
pub(crate) struct Queue {
    state: std::sync::Mutex<QueueState>,
    max_in_flight: usize,
    /// Woken when an append queues, for a batch task that lingers.
    arrived: tokio::sync::Notify,
}

#[derive(Default)]
struct QueueState {
    pending: std::collections::VecDeque<AppendRequest>,
    in_flight: usize,
}

impl Queue {
    pub(crate) fn new(max_in_flight: usize) -> Self {
        Queue {
            state: std::sync::Mutex::new(QueueState::default()),
            max_in_flight: max_in_flight.max(1),
            arrived: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the queue inconsistent (every
        // critical section is a few pushes and pops), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `request`; starts a batch task when one may start.
    pub(crate) fn submit(&self, shared: &Arc<Shared>, request: AppendRequest) {
        if let Some(batch) = self.push(request) {
            tokio::spawn(batch_task(shared.clone(), batch));
        }
    }

    /// Queues `request`; returns the batch of a task to start, when one may start.
    fn push(&self, request: AppendRequest) -> Option<Vec<AppendRequest>> {
        let mut state = self.lock();
        state.pending.push_back(request);
        if state.in_flight >= self.max_in_flight {
            drop(state);
            self.arrived.notify_waiters();
            return None;
        }
        state.in_flight += 1;
        Some(take_batch(&mut state.pending))
    }

    /// The next batch for a task that just answered `answered` appends, or `None` (and the
    /// task ends).
    ///
    /// After a batch of several appends the task lingers up to [`limits::PG_APPEND_LINGER_US`]
    /// for as many appends as it answered to be queued: those appenders usually send their
    /// next append at once, and taking it in this batch rather than the one after makes
    /// batches larger (each transaction costs about the same whatever it holds). It stops
    /// waiting the moment they are there; after a batch of one (a lone appender) it does not
    /// wait at all.
    async fn next(&self, answered: usize) -> Option<Vec<AppendRequest>> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_micros(limits::PG_APPEND_LINGER_US);
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            // Registered before looking at the queue, so an append queued after the look
            // still wakes this task.
            arrived.as_mut().enable();
            {
                let mut state = self.lock();
                let waited_enough = answered < 2
                    || state.pending.len() >= answered.min(limits::APPEND_BATCH_MAX_APPENDS)
                    || tokio::time::Instant::now() >= deadline;
                if waited_enough {
                    if state.pending.is_empty() {
                        state.in_flight -= 1;
                        return None;
                    }
                    return Some(take_batch(&mut state.pending));
                }
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }
}

/// Takes the oldest queued appends that fit in one batch (always at least one). An append to
/// a metastream goes in a batch of its own: it changes what the checks of the others read (a
/// deletion makes its stream exist for no expected version), and `strata_append` checks every
/// append of a batch against what was stored before it.
fn take_batch(pending: &mut std::collections::VecDeque<AppendRequest>) -> Vec<AppendRequest> {
    let mut batch = Vec::new();
    let (mut events, mut bytes) = (0usize, 0usize);
    while let Some(next) = pending.front() {
        let alone = next.stream.is_metastream();
        let fits = batch.len() < limits::APPEND_BATCH_MAX_APPENDS
            && events + next.events.len() <= limits::APPEND_BATCH_MAX_EVENTS
            && bytes + next.bytes() <= limits::APPEND_BATCH_MAX_BYTES
            && !alone;
        if !batch.is_empty() && !fits {
            break;
        }
        events += next.events.len();
        bytes += next.bytes();
        batch.extend(pending.pop_front());
        if alone {
            break;
        }
    }
    batch
}

async fn batch_task(shared: Arc<Shared>, mut batch: Vec<AppendRequest>) {
    loop {
        let answered = batch.len();
        run_batch(&shared, batch).await;
        match shared.queue.next(answered).await {
            Some(next) => batch = next,
            None => return,
        }
    }
}

/// What the database said about one append.
pub(crate) enum Outcome {
    Done(Result<AppendResult, AppendError>),
}

impl Outcome {
    pub(crate) fn into_result(self) -> Result<AppendResult, AppendError> {
        match self {
            Outcome::Done(r) => r,
        }
    }
}

async fn run_batch(shared: &Shared, mut batch: Vec<AppendRequest>) {
    // Appends to the same stream sit next to each other (the function relies on it to track a
    // stream's version within the batch) and every batch inserts streams in the same order,
    // which keeps two batches from deadlocking on each other's index entries.
    batch.sort_by(|a, b| a.stream.cmp(&b.stream));
    let result = execute_on_pool(shared, &batch, true).await;
    shared.appended();
    shared.note_host_writable(&result);
    match result {
        Ok(outcomes) => {
            for (req, Outcome::Done(r)) in batch.into_iter().zip(outcomes) {
                let _ = req.reply.send(r);
            }
        }
        Err(e) if batch.len() == 1 || is_unavailable(&e) => {
            for req in batch {
                let r = match is_unavailable(&e) {
                    true => Err(append_error(&e)),
                    false => run_single(shared, &req, Some(FirstError::from(&e))).await,
                };
                let _ = req.reply.send(r);
            }
        }
        Err(_) => {
            // One append lost a race or is bad: settle each on its own.
            for req in batch {
                let r = run_single(shared, &req, None).await;
                let _ = req.reply.send(r);
            }
        }
    }
}

/// What matters of a failed attempt (sqlx errors are not `Clone`).
pub(crate) struct FirstError {
    code: Option<String>,
    constraint: Option<String>,
    unavailable: bool,
    error: AppendError,
}

impl From<&sqlx::Error> for FirstError {
    fn from(e: &sqlx::Error) -> Self {
        FirstError {
            code: sqlstate(e),
            constraint: constraint(e),
            unavailable: is_unavailable(e),
            error: append_error(e),
        }
    }
}

/// Runs one append on its own, retrying races, until it has a definite answer. `first` is the
/// error of an attempt already made with exactly this request, if any.
pub(crate) async fn run_single(
    shared: &Shared,
    req: &AppendRequest,
    mut first: Option<FirstError>,
) -> Result<AppendResult, AppendError> {
    let mut json = true;
    for attempt in 0..=limits::APPEND_RACE_RETRIES_MAX {
        let err = match first.take() {
            Some(e) => e,
            None => {
                let single = std::slice::from_ref(req);
                let r = execute_on_pool(shared, single, json).await;
                shared.appended();
                match r {
                    Ok(mut outcomes) => {
                        let Some(Outcome::Done(r)) = outcomes.pop() else {
                            return Err(AppendError::Storage(
                                ("strata_append returned no row".to_owned()).into(),
                            ));
                        };
                        return r;
                    }
                    Err(e) => FirstError::from(&e),
                }
            }
        };
        if err.unavailable {
            return Err(err.error);
        }
        match (err.code.as_deref(), err.constraint.as_deref()) {
            // Another transaction appended to this stream first: read its version again.
            (Some("23505"), Some("idx_aggregate")) | (Some("40P01"), _) | (Some("40001"), _) => {}
            (Some("23505"), Some("events_pkey")) => {
                // An id of this append was stored meanwhile. A later id: a conflict. The first
                // id: the next attempt decides between retry and conflict.
                if let Some(used) = first_used_id(shared, req).await? {
                    if Some(&used) != req.events.first().map(|e| &e.id) {
                        return Err(AppendError::EventIdConflict {
                            event_id: used,
                            stream: req.stream.clone(),
                        });
                    }
                }
            }
            (Some(code), _) if code.starts_with("22") => {
                if json {
                    // The payload is valid JSON that jsonb cannot hold (a number out of its
                    // range, say): keep the bytes only.
                    json = false;
                } else {
                    return Err(InvalidInput::new(
                        "events.metadata",
                        "is JSON that PostgreSQL's jsonb cannot store",
                    )
                    .into());
                }
            }
            _ => return Err(err.error),
        }
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(20)))).await;
        }
    }
    Err(AppendError::Race {
        stream: req.stream.clone(),
        reason: format!(
            "gave up after {} retries of an append racing with others",
            limits::APPEND_RACE_RETRIES_MAX
        ),
    })
}

async fn first_used_id(shared: &Shared, req: &AppendRequest) -> Result<Option<Uuid>, AppendError> {
    let ids: Vec<Uuid> = req.events.iter().map(|e| e.id).collect();
    sqlx::query_scalar(&shared.sql.first_used_id)
        .bind(ids)
        .fetch_optional(&shared.pool)
        .await
        .map_err(|e| append_error(&e))
}

/// Runs `batch` as one transaction on a pooled connection, once more on another connection
/// when the first was found lost (ended by `pg_terminate_backend` or a server restart while it
/// sat in the pool, or during the statement). The retry is safe either way: an append whose
/// first attempt committed before the connection went finds its event ids stored and answers
/// the stored result. That stored result is then this call's own write, so it is not reported
/// as `replayed` (a retry cannot tell its own lost commit from another caller's append of the
/// same ids; it takes the likelier one, and the events are stored once either way).
async fn execute_on_pool(
    shared: &Shared,
    batch: &[AppendRequest],
    json: bool,
) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut reconnects = 0;
    loop {
        match execute_on_connection(shared, batch, json).await {
            Err(e)
                if is_connection_lost(&e) && reconnects < limits::APPEND_RECONNECT_RETRIES_MAX =>
            {
                reconnects += 1;
                tracing::info!(
                    error = %crate::error::describe(&e),
                    "an append's connection was lost; retrying it on another"
                );
            }
            Ok(mut outcomes) if reconnects > 0 => {
                for Outcome::Done(result) in &mut outcomes {
                    if let Ok(appended) = result {
                        appended.replayed = false;
                    }
                }
                return Ok(outcomes);
            }
            result => return result,
        }
    }
}

/// Runs `batch` as one transaction on a pooled connection. The function holds a session-level
/// advisory lock for a few statements; should it fail in between, the lock is released here on
/// the same connection (or the connection is closed) before the pool can hand it out again.
async fn execute_on_connection(
    shared: &Shared,
    batch: &[AppendRequest],
    json: bool,
) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut conn = shared.pool.acquire().await?;
    let result = match batch {
        // A metastream's append needs `strata_append`'s lifecycle checks and lock.
        [one] if !one.stream.is_metastream() => {
            match execute_one(shared, &mut conn, one, json).await {
                Ok(Some(outcome)) => Ok(vec![outcome]),
                Ok(None) => execute(shared, &mut *conn, batch, json).await,
                Err(e) => Err(e),
            }
        }
        _ => execute(shared, &mut *conn, batch, json).await,
    };
    if result.is_err() {
        release_locks(&mut conn).await;
    }
    result
}

/// The one-statement path for a single append (`APPEND_ONE` in `sql.rs`). `None`: it did not
/// append (the first id is stored, or the expected version does not match) and the caller
/// asks `strata_append` for the precise answer.
async fn execute_one(
    shared: &Shared,
    conn: &mut sqlx::pool::PoolConnection<Postgres>,
    req: &AppendRequest,
    json: bool,
) -> Result<Option<Outcome>, sqlx::Error> {
    let (kind, version) = expected_parts(req.expected);
    let n = req.events.len();
    let ids: Vec<Uuid> = req.events.iter().map(|e| e.id).collect();
    let types: Vec<&str> = req.events.iter().map(|e| e.event_type.as_str()).collect();
    let content_types: Vec<&str> = req.events.iter().map(|e| e.content_type.as_str()).collect();
    let jsons: Vec<bool> = req.events.iter().map(|e| json && e.json).collect();
    let data: Vec<&[u8]> = req.events.iter().map(|e| e.data.as_slice()).collect();
    let metadata: Vec<Option<&str>> = req.events.iter().map(|e| e.metadata.as_deref()).collect();
    shared.append_transactions.fetch_add(1, Ordering::Relaxed);
    let row: PgRow = sqlx::query(&shared.sql.append_one)
        .bind(req.stream.as_str())
        .bind(req.stream.category())
        .bind(kind)
        .bind(version)
        .bind(ids)
        .bind(types)
        .bind(content_types)
        .bind(jsons)
        .bind(data)
        .bind(metadata)
        .fetch_one(&mut **conn)
        .await?;
    let first: Option<i64> = row.try_get(0)?;
    let xid: Option<i64> = row.try_get(1)?;
    let (Some(first), Some(xid)) = (first, xid) else {
        return Ok(None);
    };
    let cur: Option<i64> = row.try_get(2)?;
    shared.appends_answered.fetch_add(1, Ordering::Relaxed);
    shared.own_xid.fetch_max(xid as u64, Ordering::AcqRel);
    let first = first as u64;
    Ok(Some(Outcome::Done(Ok(AppendResult {
        stream_version: (cur.unwrap_or(-1) + n as i64) as u64,
        positions: (first..first + n as u64).map(Position).collect(),
        replayed: false,
    }))))
}

/// The expected version as the SQL functions take it: a kind (0 any, 1 no stream, 2 stream
/// exists, 3 exact) and a version.
fn expected_parts(expected: ExpectedVersion) -> (i16, i64) {
    match expected {
        ExpectedVersion::Any => (0, 0),
        ExpectedVersion::NoStream => (1, 0),
        ExpectedVersion::StreamExists => (2, 0),
        // A version above i64::MAX cannot exist; -2 never matches a stored version.
        ExpectedVersion::Exact(v) => (3, i64::try_from(v).unwrap_or(-2)),
    }
}

/// Releases any session-level advisory lock a failed append left on `conn`, or closes it.
pub(crate) async fn release_locks(conn: &mut sqlx::pool::PoolConnection<Postgres>) {
    let released = sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut **conn)
        .await;
    if released.is_err() {
        conn.close_on_drop();
    }
}

/// Calls `strata_append` once for `batch` (one transaction when `executor` is the pool).
pub(crate) async fn execute<'e, E>(
    shared: &Shared,
    executor: E,
    batch: &[AppendRequest],
    json: bool,
) -> Result<Vec<Outcome>, sqlx::Error>
where
    E: Executor<'e, Database = Postgres>,
{
    let n_events: usize = batch.iter().map(|r| r.events.len()).sum();
    let mut streams = Vec::with_capacity(batch.len());
    let mut categories = Vec::with_capacity(batch.len());
    let mut kinds = Vec::with_capacity(batch.len());
    let mut expected = Vec::with_capacity(batch.len());
    let mut counts = Vec::with_capacity(batch.len());
    let mut event_append = Vec::with_capacity(n_events);
    let mut event_index = Vec::with_capacity(n_events);
    let mut ids = Vec::with_capacity(n_events);
    let mut types = Vec::with_capacity(n_events);
    let mut content_types = Vec::with_capacity(n_events);
    let mut jsons = Vec::with_capacity(n_events);
    let mut data: Vec<&[u8]> = Vec::with_capacity(n_events);
    let mut metadata: Vec<Option<&str>> = Vec::with_capacity(n_events);
    for (a, req) in batch.iter().enumerate() {
        streams.push(req.stream.as_str());
        categories.push(req.stream.category());
        let (kind, version) = expected_parts(req.expected);
        kinds.push(kind);
        expected.push(version);
        counts.push(req.events.len() as i32);
        for (k, e) in req.events.iter().enumerate() {
            event_append.push(a as i32 + 1);
            event_index.push(k as i32);
            ids.push(e.id);
            types.push(e.event_type.as_str());
            content_types.push(e.content_type.as_str());
            jsons.push(json && e.json);
            data.push(e.data.as_slice());
            metadata.push(e.metadata.as_deref());
        }
    }
    shared.append_transactions.fetch_add(1, Ordering::Relaxed);
    let row: PgRow = sqlx::query(&shared.sql.append)
        .bind(streams)
        .bind(categories)
        .bind(kinds)
        .bind(expected)
        .bind(counts)
        .bind(event_append)
        .bind(event_index)
        .bind(ids)
        .bind(types)
        .bind(content_types)
        .bind(jsons)
        .bind(data)
        .bind(metadata)
        .fetch_one(executor)
        .await?;
    let statuses: Vec<Option<i16>> = row.try_get(0)?;
    let versions: Vec<Option<i64>> = row.try_get(1)?;
    let firsts: Vec<Option<i64>> = row.try_get(2)?;
    let conflicts: Vec<Option<Uuid>> = row.try_get(3)?;
    let replayed: Vec<i64> = row.try_get(4)?;
    let xid: Option<i64> = row.try_get(5)?;
    let n = batch.len();
    if statuses.len() != n || versions.len() != n || firsts.len() != n || conflicts.len() != n {
        return Err(sqlx::Error::Protocol(format!(
            "strata_append answered {} of {n} appends",
            statuses.len()
        )));
    }
    let mut replayed = replayed.into_iter();
    let mut outcomes = Vec::with_capacity(n);
    for (i, req) in batch.iter().enumerate() {
        let count = req.events.len() as u64;
        let r = match statuses[i] {
            Some(0) => {
                let first = firsts[i].unwrap_or_default() as u64;
                Ok(AppendResult {
                    stream_version: versions[i].unwrap_or_default() as u64,
                    positions: (first..first + count).map(Position).collect(),
                    replayed: false,
                })
            }
            Some(1) => Err(AppendError::WrongExpectedVersion {
                stream: req.stream.clone(),
                expected: req.expected,
                actual: ActualVersion(versions[i].map(|v| v as u64)),
            }),
            Some(2) => Err(AppendError::EventIdConflict {
                event_id: conflicts[i].unwrap_or_default(),
                stream: req.stream.clone(),
            }),
            Some(3) => Ok(AppendResult {
                stream_version: versions[i].unwrap_or_default() as u64,
                positions: replayed
                    .by_ref()
                    .take(count as usize)
                    .map(|p| Position(p as u64))
                    .collect(),
                replayed: true,
            }),
            Some(4) => Err(AppendError::StreamTombstoned {
                stream: req.stream.clone(),
            }),
            other => Err(AppendError::Storage(
                (format!("strata_append returned status {other:?}")).into(),
            )),
        };
        outcomes.push(Outcome::Done(r));
    }
    shared
        .appends_answered
        .fetch_add(n as u64, Ordering::Relaxed);
    let committed_xid = statuses.contains(&Some(0)).then_some(xid).flatten();
    if let Some(xid) = committed_xid {
        shared.own_xid.fetch_max(xid as u64, Ordering::AcqRel);
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: usize) -> AppendRequest {
        named(&format!("account-{n}"))
    }

    fn named(stream: &str) -> AppendRequest {
        AppendRequest {
            stream: StreamId::new(stream).unwrap_or_else(|e| panic!("{e}")),
            expected: ExpectedVersion::Any,
            events: Vec::new(),
            reply: oneshot::channel().0,
        }
    }

    /// A deletion and an append to its stream queued together are decided in two batches,
    /// so that the append's check sees the deletion (or the deletion's the append).
    #[test]
    fn a_metastream_append_is_batched_alone() {
        let mut pending: std::collections::VecDeque<AppendRequest> = [
            named("account-1"),
            named("$$account-2"),
            named("account-2"),
            named("account-3"),
            named("$$account-4"),
        ]
        .into_iter()
        .collect();
        let mut batches = Vec::new();
        while !pending.is_empty() {
            let batch = take_batch(&mut pending);
            batches.push(
                batch
                    .iter()
                    .map(|r| r.stream.as_str().to_owned())
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(
            batches,
            [
                vec!["account-1"],
                vec!["$$account-2"],
                vec!["account-2", "account-3"],
                vec!["$$account-4"],
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_task_lingers_only_for_the_appenders_it_answered() {
        let q = Queue::new(1);
        // The first append starts the one task; a lone append's task never waits.
        assert_eq!(q.push(request(0)).map(|b| b.len()), Some(1));
        let t = tokio::time::Instant::now();
        assert!(q.next(1).await.is_none());
        assert_eq!(t.elapsed(), Duration::ZERO);

        // A task that answered 3 appends, with 2 queued, waits for a third, and takes all
        // three the moment it is queued.
        assert!(q.push(request(1)).is_some());
        assert!(q.push(request(2)).is_none());
        assert!(q.push(request(3)).is_none());
        let waiting = q.next(3);
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        assert!(q.push(request(4)).is_none());
        let batch = waiting.await.map(|b| b.len());
        assert_eq!(batch, Some(3));
        assert_eq!(t.elapsed(), Duration::ZERO);

        // When they do not come, it takes what is there once the linger is over.
        assert!(q.push(request(5)).is_none());
        let t = tokio::time::Instant::now();
        let batch = q.next(3).await.map(|b| b.len());
        assert_eq!(batch, Some(1));
        let waited = t.elapsed();
        assert!(waited >= Duration::from_micros(limits::PG_APPEND_LINGER_US));
        assert!(waited <= Duration::from_millis(2), "{waited:?}");
        // And ends when nothing came at all.
        assert!(q.next(3).await.is_none());
        assert!(
            q.push(request(6)).is_some(),
            "the next append starts a task"
        );
    }

    #[test]
    fn nul_escapes_are_found() {
        assert!(has_nul_escape(br#""\u0000""#));
        assert!(has_nul_escape(br#"{"a":"x\u0000y"}"#));
        assert!(!has_nul_escape(br#""\\u0000""#));
        assert!(has_nul_escape(br#""\\\u0000""#));
        assert!(!has_nul_escape(br#""u0000""#));
        assert!(!has_nul_escape(br#""\u0001""#));
    }
}
