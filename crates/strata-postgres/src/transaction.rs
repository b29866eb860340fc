//! Appending inside a caller's transaction ([`PostgresStore::append_in_transaction`]), so the
//! caller's other writes (a read model, an outbox) commit or roll back with the events.
//!
//! The ordering proof (`docs/guarantees.md`, "PostgreSQL ordering") needs the transaction id
//! to be assigned inside the append's critical section, so the append must be the
//! transaction's first write: `strata_append` refuses otherwise (SQLSTATE `SX001`), and this
//! module turns that into [`AppendError::InvalidInput`]. Reads before it are fine; writes
//! after it are fine (they reuse the id the critical section assigned).

use std::time::{Duration, Instant};

use sqlx::{Acquire, Postgres, Transaction};
use strata_core::{
    AppendError, AppendResult, EventData, ExpectedVersion, InvalidInput, Position, ReadError,
    RecordedEvent, StreamId,
};
use tokio::sync::oneshot;

use crate::append::{self, AppendRequest};
use crate::error::{append_error, constraint, describe, is_unavailable, sqlstate};
use crate::store::PostgresStore;

/// Whether `error` (from [`PostgresStore::append_in_transaction`]) means the append lost a
/// race with a concurrent append (to the same stream, or with the same event ids) after its
/// transaction id was assigned: it cannot be retried inside that transaction. Roll the
/// transaction back and run it again; the new attempt gives the definite answer (success,
/// idempotent replay, wrong expected version or event-id conflict). The same as matching
/// [`AppendError::Race`].
pub fn is_transaction_race(error: &AppendError) -> bool {
    matches!(error, AppendError::Race { .. })
}

/// What [`PostgresStore::wait_for_earlier_appends`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlierAppends {
    /// Every older append has ended: the positions below this transaction's are final.
    Ended,
    /// The transaction appended nothing (an idempotent retry): there is nothing to wait for.
    NothingAppended,
    /// An older append waits, directly or through other sessions, for a lock this transaction
    /// holds, so it cannot end first: waiting for it could never end, or could close a circle
    /// of waits that no database deadlock check sees. Nothing is final yet: roll the
    /// transaction back and run it again. The blocked append goes on, and the new attempt
    /// comes after it.
    RollBack,
}

impl PostgresStore {
    /// Appends like [`strata_core::EventStore::append`] (same validation, expected-version
    /// check, idempotent retry and ordering critical section), but inside the caller's
    /// transaction `tx`: nothing is visible or durable until the caller commits, and a rollback
    /// discards the events with the caller's other writes. Bypasses group commit.
    ///
    /// - The append must be the transaction's **first write** (reads before it are fine), and
    ///   the transaction must be `READ COMMITTED` (the default); a transaction that already
    ///   wrote gets [`AppendError::InvalidInput`] (field `transaction`), because the ordering
    ///   guarantee needs the transaction id to be assigned in the append's critical section.
    ///   Write anything else after it.
    /// - Positions are returned before commit; readers of `$all` do not see them (nor anything
    ///   above them) until the transaction ends, so keep it short.
    /// - An idempotent retry (the events are already stored) returns their result and writes
    ///   nothing; a wrong expected version or event-id conflict writes nothing either, and the
    ///   transaction stays usable.
    /// - A race with a concurrent append, once this transaction's id is assigned, cannot be
    ///   settled inside it: the error is [`AppendError::Race`]; roll back and retry.
    /// - Wake-ups: after committing, call [`PostgresStore::notify_appended`] so this process's
    ///   subscriptions (and, with notifications on, other processes') wake at once; otherwise
    ///   they see the events at their next poll.
    pub async fn append_in_transaction(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, AppendError> {
        if crate::lifecycle::is_lifecycle_change(stream, &events) {
            self.shared().note_lifecycle();
        }
        let events = append::prepare(stream, events)?;
        let (reply, _answer) = oneshot::channel();
        let request = AppendRequest {
            stream: stream.clone(),
            expected,
            events,
            reply,
        };
        let shared = self.shared();
        let json = json_storable(tx, &request).await?;
        // A savepoint, so a failure leaves the caller's transaction usable and lets us release
        // the advisory lock if the statement failed inside the critical section.
        let mut sp = tx.begin().await.map_err(|e| append_error(&e))?;
        let outcome = append::execute(shared, &mut *sp, std::slice::from_ref(&request), json).await;
        match outcome {
            Ok(mut outcomes) => {
                sp.commit().await.map_err(|e| append_error(&e))?;
                outcomes
                    .pop()
                    .map(append::Outcome::into_result)
                    .unwrap_or_else(|| {
                        Err(AppendError::Storage(
                            ("strata_append returned no row".to_owned()).into(),
                        ))
                    })
            }
            Err(e) => {
                // Even when the connection looks gone: if it is not, the session-level lock
                // must not stay behind on a connection the pool hands out again.
                let released = match sp.rollback().await {
                    Ok(()) => {
                        let key = crate::migrate::append_lock_key(&shared.schema);
                        // Returns false (and PostgreSQL logs a warning) when it was not held.
                        sqlx::query("SELECT pg_advisory_unlock($1)")
                            .bind(key)
                            .execute(&mut **tx)
                            .await
                            .map(drop)
                    }
                    Err(e) => Err(e),
                };
                if is_unavailable(&e) {
                    return Err(append_error(&e));
                }
                released.map_err(|e| append_error(&e))?;
                Err(self.settle(tx, &request, &e).await)
            }
        }
    }

    /// The answer to a failed `strata_append` inside a caller's transaction.
    async fn settle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        request: &AppendRequest,
        e: &sqlx::Error,
    ) -> AppendError {
        match (sqlstate(e).as_deref(), constraint(e).as_deref()) {
            (Some("SX001"), _) => InvalidInput::new(
                "transaction",
                "has already written: append_in_transaction must be the transaction's first \
                 write (the ordering guarantee needs its transaction id assigned inside the \
                 append)",
            )
            .into(),
            (Some("23505"), Some("events_pkey")) => {
                let ids: Vec<_> = request.events.iter().map(|e| e.id).collect();
                let used: Result<Option<strata_core::Uuid>, _> =
                    sqlx::query_scalar(&self.shared().sql.first_used_id)
                        .bind(ids)
                        .fetch_optional(&mut **tx)
                        .await;
                match used {
                    Ok(Some(used)) if Some(&used) != request.events.first().map(|e| &e.id) => {
                        AppendError::EventIdConflict {
                            event_id: used,
                            stream: request.stream.clone(),
                        }
                    }
                    Ok(_) => race(request, e),
                    Err(e) => append_error(&e),
                }
            }
            (Some("23505"), Some("idx_aggregate")) | (Some("40P01"), _) | (Some("40001"), _) => {
                race(request, e)
            }
            _ => append_error(e),
        }
    }

    /// Wakes this process's subscriptions (and tells other processes, when notifications are
    /// on) after a transaction that used [`PostgresStore::append_in_transaction`] ended,
    /// committed or rolled back (a rollback can be what held the watermark back).
    pub fn notify_appended(&self) {
        self.shared().appended();
    }

    /// After [`PostgresStore::append_in_transaction`] appended in `tx`: waits until every
    /// other append transaction with an older transaction id (so with lower positions) has
    /// ended, at most `timeout`. Older transactions are recognised by their lock on the events
    /// table, which every append takes before its critical section and keeps to its end, so
    /// unrelated long transactions do not count. From then on every position below this
    /// transaction's first one is final, and [`PostgresStore::read_in_transaction`] reads them
    /// without gaps.
    ///
    /// The answer is [`EarlierAppends::Ended`], [`EarlierAppends::NothingAppended`] at once if
    /// `tx` has no transaction id (an idempotent retry), or [`EarlierAppends::RollBack`] as
    /// soon as an older append waits, directly or through other sessions, for a lock `tx`
    /// holds (the same stream version or event id, or a row `tx` wrote after its append): it
    /// cannot end before `tx` does, so waiting for it could never end, or could close a
    /// circle with other waiters that no database deadlock check sees. Then roll back and run
    /// the transaction again. A timeout is [`ReadError::Unavailable`].
    pub async fn wait_for_earlier_appends(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        timeout: Duration,
    ) -> Result<EarlierAppends, ReadError> {
        let started = Instant::now();
        let mut pause = Duration::from_micros(200);
        let assigned: Option<String> =
            sqlx::query_scalar("SELECT pg_current_xact_id_if_assigned()::text")
                .fetch_one(&mut **tx)
                .await
                .map_err(crate::error::read_error)?;
        if assigned.is_none() {
            return Ok(EarlierAppends::NothingAppended);
        }
        loop {
            let state: i32 = sqlx::query_scalar(&self.shared().sql.earlier_appends)
                .fetch_one(&mut **tx)
                .await
                .map_err(crate::error::read_error)?;
            match state {
                0 => return Ok(EarlierAppends::Ended),
                2 => return Ok(EarlierAppends::RollBack),
                _ => {}
            }
            if started.elapsed() >= timeout {
                return Err(ReadError::Unavailable(
                    (format!(
                        "an older append transaction kept running for more than {} ms",
                        timeout.as_millis()
                    ))
                    .into(),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// The events at positions `from..=through`, at most `limit`, as stored (see
    /// [`visible_in_transaction`](Self::visible_in_transaction)), read inside `tx` (so it sees
    /// the events `tx` appended), without the `$all` watermark: only gap-free below this
    /// transaction's positions after [`PostgresStore::wait_for_earlier_appends`] answered
    /// [`EarlierAppends::Ended`], and only in a `READ COMMITTED` transaction.
    pub async fn read_in_transaction(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        from: Position,
        through: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let as_i64 = |p: Position| i64::try_from(p.0).unwrap_or(i64::MAX);
        let rows = sqlx::query(&self.shared().sql.read_range)
            .bind(as_i64(from))
            .bind(as_i64(through))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut **tx)
            .await
            .map_err(crate::error::read_error)?;
        rows.iter()
            .map(|row| crate::read::event_from_row(row, 0))
            .collect()
    }

    /// `events` (read with [`read_in_transaction`](Self::read_in_transaction)) without those
    /// their streams' lifecycles hide (deleted, truncated, expired, tombstoned), as `read_all`
    /// leaves them out; the state is read inside `tx`. Page with the unfiltered events, filter
    /// each page with this.
    pub async fn visible_in_transaction(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.keep_visible(&mut **tx, events).await
    }
}

/// The race lost after the transaction id was assigned, with the driver's description.
fn race(request: &AppendRequest, e: &sqlx::Error) -> AppendError {
    AppendError::Race {
        stream: request.stream.clone(),
        reason: format!(
            "inside the caller's transaction, after its id was assigned ({}); roll the \
             transaction back and run it again",
            describe(e)
        ),
    }
}

/// Whether the payloads flagged as JSON can be stored as jsonb, checked before the append (a
/// failure inside it would come after the transaction id is assigned). A read in a savepoint.
async fn json_storable(
    tx: &mut Transaction<'_, Postgres>,
    request: &AppendRequest,
) -> Result<bool, AppendError> {
    let jsons: Vec<bool> = request.events.iter().map(|e| e.json).collect();
    let data: Vec<&[u8]> = request.events.iter().map(|e| e.data.as_slice()).collect();
    let metadata: Vec<Option<&str>> = request
        .events
        .iter()
        .map(|e| e.metadata.as_deref())
        .collect();
    let check = "SELECT count(CASE WHEN x.j THEN convert_from(x.d, 'UTF8')::jsonb END)
                      + count(x.m::jsonb)
                 FROM unnest($1::boolean[], $2::bytea[], $3::text[]) AS x(j, d, m)";
    for json in [true, false] {
        let flags: Vec<bool> = jsons.iter().map(|j| json && *j).collect();
        let mut sp = tx.begin().await.map_err(|e| append_error(&e))?;
        let r = sqlx::query(check)
            .bind(flags)
            .bind(&data)
            .bind(&metadata)
            .execute(&mut *sp)
            .await;
        match r {
            Ok(_) => {
                sp.commit().await.map_err(|e| append_error(&e))?;
                return Ok(json);
            }
            Err(e) if sqlstate(&e).is_some_and(|c| c.starts_with("22")) => {
                sp.rollback().await.map_err(|e| append_error(&e))?;
            }
            Err(e) => return Err(append_error(&e)),
        }
    }
    Err(InvalidInput::new(
        "events.metadata",
        "is JSON that PostgreSQL's jsonb cannot store",
    )
    .into())
}
