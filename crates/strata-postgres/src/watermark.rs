//! What holds the `$all` watermark back: [`PostgresStore::watermark`], the typed
//! [`WatermarkBlocked`] error that tells an operator what to do, and the store's memory of a
//! stalled watermark that bounds read-your-writes waits.
//!
//! The watermark is the oldest transaction still running anywhere in the PostgreSQL cluster
//! (docs/guarantees.md, "PostgreSQL ordering"). A transaction held open (an idle session in
//! another database, a forgotten `BEGIN` in `psql`, a prepared transaction) keeps every event
//! appended after it out of `$all` until it ends: stream reads still see them, `$all` readers
//! and subscriptions do not, and the head stays where it was.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::Row;
use strata_core::{Position, ReadError};

use crate::error::read_error;
use crate::limits;
use crate::store::PostgresStore;

/// The `$all` watermark of a store, from [`PostgresStore::watermark`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Watermark {
    /// The oldest transaction id still running in the cluster (`pg_snapshot_xmin`): events of
    /// transactions below it are readable in `$all`.
    pub transaction_id: u64,
    /// The readable head: the newest position `$all` readers see (what `head()` answers).
    pub head: Option<Position>,
    /// The newest committed position (stream reads see it).
    pub newest: Option<Position>,
    /// The oldest committed event `$all` readers cannot see yet, when there is one.
    pub held_back_from: Option<Position>,
    /// How long ago that event was appended: how long the watermark has held committed events
    /// back (zero when it holds none).
    pub blocked_for: Duration,
    /// The transaction holding the watermark, when committed events are held back.
    pub holder: Option<WatermarkHolder>,
}

/// The transaction at the watermark: the oldest one still running in the cluster.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WatermarkHolder {
    /// A session's transaction (`pg_stat_activity`). Fields PostgreSQL hides from a role
    /// without `pg_read_all_stats` (another user's session) are `None`.
    Session {
        /// The transaction id.
        transaction_id: u64,
        /// The backend's process id: `SELECT pg_terminate_backend(pid)` ends it.
        pid: i32,
        /// Its database (any database of the cluster holds the watermark).
        database: Option<String>,
        /// Its user.
        user: Option<String>,
        /// Its `application_name`.
        application_name: Option<String>,
        /// `active`, `idle in transaction`, ...
        state: Option<String>,
        /// How long its transaction has been open.
        transaction_age: Option<Duration>,
    },
    /// A prepared transaction (`PREPARE TRANSACTION`, `pg_prepared_xacts`), which belongs to
    /// no session: it ends with `COMMIT PREPARED` or `ROLLBACK PREPARED`.
    Prepared {
        /// The transaction id.
        transaction_id: u64,
        /// Its global id, the name `COMMIT PREPARED` takes.
        gid: String,
        /// Its database.
        database: Option<String>,
        /// How long ago it was prepared.
        prepared_age: Option<Duration>,
    },
    /// Neither: it ended between the two looks, or it is not visible to this role.
    Unknown {
        /// The transaction id.
        transaction_id: u64,
    },
}

impl WatermarkHolder {
    /// The holder's transaction id.
    pub fn transaction_id(&self) -> u64 {
        match self {
            WatermarkHolder::Session { transaction_id, .. }
            | WatermarkHolder::Prepared { transaction_id, .. }
            | WatermarkHolder::Unknown { transaction_id } => *transaction_id,
        }
    }

    /// The backend's process id, for a session.
    pub fn pid(&self) -> Option<i32> {
        match self {
            WatermarkHolder::Session { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// Its database, when known.
    pub fn database(&self) -> Option<&str> {
        match self {
            WatermarkHolder::Session { database, .. }
            | WatermarkHolder::Prepared { database, .. } => database.as_deref(),
            WatermarkHolder::Unknown { .. } => None,
        }
    }
}

/// Committed events have waited longer than a limit to become readable in `$all`, because a
/// transaction older than them is still open somewhere in the cluster. From
/// [`Watermark::check`]; its message names the transaction and how to end it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub struct WatermarkBlocked {
    /// How long the oldest held-back event has waited.
    pub blocked_for: Duration,
    /// The oldest held-back event's position.
    pub held_back_from: Position,
    /// The newest committed position: everything from `held_back_from` up to it is held back
    /// (less the gaps of aborted appends).
    pub newest: Position,
    /// The transaction holding them back (boxed: it is most of the error's size).
    pub holder: Box<WatermarkHolder>,
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn quoted(s: Option<&str>) -> String {
    s.map_or_else(|| "unknown".to_owned(), |s| format!("{s:?}"))
}

impl fmt::Display for WatermarkBlocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "events appended from position {} on (to {}) have waited {} to become readable in \
             $all: ",
            self.held_back_from.0,
            self.newest.0,
            secs(self.blocked_for)
        )?;
        let why = "is older than them and still open, and until it ends PostgreSQL cannot say \
                   that no event will be committed below them";
        match &*self.holder {
            WatermarkHolder::Session {
                transaction_id,
                pid,
                database,
                state,
                transaction_age,
                ..
            } => {
                write!(
                    f,
                    "transaction {transaction_id} of backend pid {pid} in database {}",
                    quoted(database.as_deref())
                )?;
                if let Some(state) = state {
                    write!(f, " ({state}")?;
                    match transaction_age {
                        Some(age) => write!(f, ", open for {})", secs(*age))?,
                        None => write!(f, ")")?,
                    }
                }
                write!(
                    f,
                    " {why}; commit or roll it back, or end its session with \
                     SELECT pg_terminate_backend({pid})"
                )
            }
            WatermarkHolder::Prepared {
                transaction_id,
                gid,
                database,
                ..
            } => write!(
                f,
                "prepared transaction {gid:?} ({transaction_id}) in database {} {why}; finish it \
                 with COMMIT PREPARED '{gid}' or ROLLBACK PREPARED '{gid}'",
                quoted(database.as_deref())
            ),
            WatermarkHolder::Unknown { transaction_id } => write!(
                f,
                "transaction {transaction_id} {why}; find it in pg_stat_activity \
                 (backend_xid = '{transaction_id}') or pg_prepared_xacts and end it"
            ),
        }
    }
}

impl Watermark {
    /// `Err` when a committed event has waited longer than `limit` to become readable in
    /// `$all`: the error names the transaction holding it back and how to end it.
    pub fn check(&self, limit: Duration) -> Result<(), WatermarkBlocked> {
        let (Some(held_back_from), Some(newest)) = (self.held_back_from, self.newest) else {
            return Ok(());
        };
        if self.blocked_for <= limit {
            return Ok(());
        }
        Err(WatermarkBlocked {
            blocked_for: self.blocked_for,
            held_back_from,
            newest,
            holder: Box::new(self.holder.clone().unwrap_or(WatermarkHolder::Unknown {
                transaction_id: self.transaction_id,
            })),
        })
    }

    /// The watermark as Prometheus text: `strata_pg_watermark_blocked_seconds` (how long the
    /// oldest held-back event has waited, 0 when none is) and
    /// `strata_pg_watermark_held_back_positions`, and, while events are held back, one
    /// `strata_pg_watermark_holder_age_seconds` sample labelled with the holder's pid and
    /// database (one holder at a time, so the labels' cardinality stays bounded).
    pub fn prometheus(&self) -> String {
        use std::fmt::Write;
        let mut o = String::with_capacity(512);
        let held = match (self.held_back_from, self.newest) {
            (Some(from), Some(newest)) => newest.0.saturating_sub(from.0) + 1,
            _ => 0,
        };
        let _ = writeln!(
            o,
            "# HELP strata_pg_watermark_blocked_seconds How long the oldest committed event not \
             yet readable in $all has waited (a transaction older than it is still open).\n\
             # TYPE strata_pg_watermark_blocked_seconds gauge\n\
             strata_pg_watermark_blocked_seconds {:.3}",
            self.blocked_for.as_secs_f64()
        );
        let _ = writeln!(
            o,
            "# HELP strata_pg_watermark_held_back_positions Positions committed above the \
             readable head of $all.\n\
             # TYPE strata_pg_watermark_held_back_positions gauge\n\
             strata_pg_watermark_held_back_positions {held}"
        );
        if let Some(holder) = self.holder.as_ref().filter(|_| held > 0) {
            let age = match holder {
                WatermarkHolder::Session {
                    transaction_age, ..
                } => *transaction_age,
                WatermarkHolder::Prepared { prepared_age, .. } => *prepared_age,
                WatermarkHolder::Unknown { .. } => None,
            };
            let label = |v: &str| {
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            };
            let _ = writeln!(
                o,
                "# HELP strata_pg_watermark_holder_age_seconds How long the transaction holding \
                 the $all watermark back has been open (-1: not visible to this role).\n\
                 # TYPE strata_pg_watermark_holder_age_seconds gauge\n\
                 strata_pg_watermark_holder_age_seconds{{pid=\"{}\",database=\"{}\",transaction_id=\"{}\"}} {:.3}",
                holder.pid().map_or_else(String::new, |p| p.to_string()),
                label(holder.database().unwrap_or("")),
                holder.transaction_id(),
                age.map_or(-1.0, |a| a.as_secs_f64())
            );
        }
        o
    }
}

/// The store's memory of the watermark standing still while its own appends wait above it:
/// a read waits for them (read-your-writes) at most [`limits::READ_YOUR_WRITES_WAIT_MS`]
/// from the moment the store first saw the watermark at a transaction, so once one transaction
/// has held it that long, reads answer at once with what is readable instead of each waiting
/// the full bound.
#[derive(Default)]
pub(crate) struct Stall {
    state: Mutex<Option<StallState>>,
    /// Reads that waited for this store's own appends to become readable.
    waits: std::sync::atomic::AtomicU64,
}

struct StallState {
    xmin: i64,
    since: Instant,
    reported: bool,
}

impl Stall {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<StallState>> {
        // A few assignments under the lock: a panic cannot leave it inconsistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// When a wait for this store's own appends that started at `started` gives up, with the
    /// watermark at `xmin`.
    pub(crate) fn deadline(&self, xmin: i64, started: Instant) -> Instant {
        let now = Instant::now();
        let mut state = self.lock();
        let since = match &*state {
            Some(s) if s.xmin == xmin => s.since,
            _ => {
                *state = Some(StallState {
                    xmin,
                    since: now,
                    reported: false,
                });
                now
            }
        };
        since.min(started) + Duration::from_millis(limits::READ_YOUR_WRITES_WAIT_MS)
    }

    /// Counts one read that waits for this store's own appends.
    pub(crate) fn count_wait(&self) {
        self.waits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Reads that waited for this store's own appends since it was opened.
    pub(crate) fn waits(&self) -> u64 {
        self.waits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the stall at `xmin` is still to be reported (true once per stall).
    pub(crate) fn take_report(&self, xmin: i64) -> bool {
        match &mut *self.lock() {
            Some(s) if s.xmin == xmin && !s.reported => {
                s.reported = true;
                true
            }
            _ => false,
        }
    }
}

fn seconds(v: Option<f64>) -> Option<Duration> {
    v.filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

impl PostgresStore {
    /// The `$all` watermark now: the readable head, the newest committed position, how long
    /// committed events have been held back and by which transaction (its pid, database and
    /// age). Costs one query (a few index probes and a look at `pg_stat_activity`); meant for
    /// metrics and diagnosis, not for every request.
    pub async fn watermark(&self) -> Result<Watermark, ReadError> {
        let row = sqlx::query(&self.shared().sql.watermark_status)
            .fetch_one(self.pool())
            .await
            .map_err(read_error)?;
        let get = |e: sqlx::Error| read_error(e);
        let xmin: i64 = row.try_get(0).map_err(get)?;
        let head: Option<i64> = row.try_get(1).map_err(get)?;
        let newest: Option<i64> = row.try_get(2).map_err(get)?;
        let held: Option<i64> = row.try_get(3).map_err(get)?;
        let waited: Option<f64> = row.try_get(4).map_err(get)?;
        let pid: Option<i32> = row.try_get(5).map_err(get)?;
        let gid: Option<String> = row.try_get(11).map_err(get)?;
        let transaction_id = xmin as u64;
        let holder = match (held, pid, gid) {
            (None, _, _) => None,
            (Some(_), Some(pid), _) => Some(WatermarkHolder::Session {
                transaction_id,
                pid,
                database: row.try_get(6).map_err(get)?,
                user: row.try_get(7).map_err(get)?,
                application_name: row.try_get(8).map_err(get)?,
                state: row.try_get(9).map_err(get)?,
                transaction_age: seconds(row.try_get(10).map_err(get)?),
            }),
            (Some(_), None, Some(gid)) => Some(WatermarkHolder::Prepared {
                transaction_id,
                gid,
                database: row.try_get(12).map_err(get)?,
                prepared_age: seconds(row.try_get(13).map_err(get)?),
            }),
            (Some(_), None, None) => Some(WatermarkHolder::Unknown { transaction_id }),
        };
        let position = |p: Option<i64>| p.map(|p| Position(p as u64));
        Ok(Watermark {
            transaction_id,
            head: position(head),
            newest: position(newest),
            held_back_from: position(held),
            blocked_for: held.and_then(|_| seconds(waited)).unwrap_or(Duration::ZERO),
            holder,
        })
    }

    /// How many reads have waited for this store's own appends to become readable in `$all`
    /// (each at most [`READ_YOUR_WRITES_WAIT_MS`](crate::limits::READ_YOUR_WRITES_WAIT_MS),
    /// shared by all reads during one stall) since the store was opened. `head_now` never
    /// waits.
    pub fn read_your_writes_waits(&self) -> u64 {
        self.shared().stall.waits()
    }

    /// The readable head from one query, without the read-your-writes wait `head` does.
    pub(crate) async fn head_now_position(&self) -> Result<Option<Position>, ReadError> {
        Ok(self.head_row().await?.1)
    }

    /// The watermark and the read-your-writes waits as Prometheus text, for `/metrics`.
    pub(crate) async fn metrics_text(&self) -> Result<String, ReadError> {
        use std::fmt::Write;
        let mut text = self.watermark().await?.prometheus();
        let _ = writeln!(
            text,
            "# HELP strata_pg_read_your_writes_waits_total Reads that waited for this \
             server's own appends to become readable in $all.\n\
             # TYPE strata_pg_read_your_writes_waits_total counter\n\
             strata_pg_read_your_writes_waits_total {}",
            self.read_your_writes_waits()
        );
        Ok(text)
    }

    /// Logs, once per stall, why this store's own appends are not readable in `$all` yet.
    pub(crate) fn report_stall(&self, xmin: i64) {
        if !self.shared().stall.take_report(xmin) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            match store.watermark().await {
                Ok(w) => {
                    if let Err(blocked) = w.check(Duration::ZERO) {
                        tracing::warn!(schema = store.schema(), "{blocked}");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "could not look at the watermark"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(holder: WatermarkHolder) -> WatermarkBlocked {
        let w = Watermark {
            transaction_id: 7,
            head: Some(Position(9)),
            newest: Some(Position(19_009)),
            held_back_from: Some(Position(10)),
            blocked_for: Duration::from_secs(40),
            holder: Some(holder),
        };
        assert!(w.check(Duration::from_secs(41)).is_ok());
        w.check(Duration::from_secs(1)).unwrap_err()
    }

    #[test]
    fn the_message_names_the_holder_and_how_to_end_it() {
        let e = blocked(WatermarkHolder::Session {
            transaction_id: 7,
            pid: 4242,
            database: Some("postgres".to_owned()),
            user: Some("postgres".to_owned()),
            application_name: Some("psql".to_owned()),
            state: Some("idle in transaction".to_owned()),
            transaction_age: Some(Duration::from_secs(41)),
        })
        .to_string();
        assert_eq!(
            e,
            "events appended from position 10 on (to 19009) have waited 40.0 s to become \
             readable in $all: transaction 7 of backend pid 4242 in database \"postgres\" (idle \
             in transaction, open for 41.0 s) is older than them and still open, and until it \
             ends PostgreSQL cannot say that no event will be committed below them; commit or \
             roll it back, or end its session with SELECT pg_terminate_backend(4242)"
        );
        let e = blocked(WatermarkHolder::Prepared {
            transaction_id: 7,
            gid: "t1".to_owned(),
            database: None,
            prepared_age: None,
        })
        .to_string();
        assert!(
            e.contains("COMMIT PREPARED 't1' or ROLLBACK PREPARED 't1'"),
            "{e}"
        );
        let e = blocked(WatermarkHolder::Unknown { transaction_id: 7 }).to_string();
        assert!(e.contains("backend_xid = '7'"), "{e}");
    }

    #[test]
    fn nothing_held_back_is_not_blocked() {
        let w = Watermark {
            transaction_id: 7,
            head: Some(Position(9)),
            newest: Some(Position(9)),
            held_back_from: None,
            blocked_for: Duration::ZERO,
            holder: None,
        };
        assert!(w.check(Duration::ZERO).is_ok());
        assert!(w
            .prometheus()
            .contains("strata_pg_watermark_blocked_seconds 0.000\n"));
        assert!(!w.prometheus().contains("holder_age"));
    }

    #[test]
    fn a_stall_bounds_every_wait_at_its_xmin_from_when_it_was_first_seen() {
        let stall = Stall::default();
        let bound = Duration::from_millis(limits::READ_YOUR_WRITES_WAIT_MS);
        // A read that started long ago stops a bound after its start.
        let t0 = Instant::now();
        assert_eq!(stall.deadline(5, t0), t0 + bound);
        // A read starting later at the same xmin stops when the first one saw it plus the
        // bound, not a bound after its own start.
        let later = Instant::now() + Duration::from_secs(30);
        let first = stall.deadline(5, later);
        assert!(first <= Instant::now() + bound);
        assert_eq!(stall.deadline(5, later + Duration::from_secs(1)), first);
        assert!(stall.take_report(5));
        assert!(!stall.take_report(5));
        // Another xmin starts afresh.
        assert!(stall.deadline(6, later) >= first);
        assert!(stall.take_report(6));
    }
}
