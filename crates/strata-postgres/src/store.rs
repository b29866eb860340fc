//! [`PostgresStore`]: connecting, the shared state behind every clone, and the background
//! tasks (append writers, listener, notifier).

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection;
use strata_core::{AppendError, AppendResult, EventData, ExpectedVersion, StreamId};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::append::{self, AppendRequest, Queue};
use crate::error::{connect_error, ConnectError};
use crate::hosts::{self, Hosts};
use crate::options::PgStoreOptions;
use crate::sql::Sql;
use crate::{limits, migrate, notify};
use tokio::sync::Semaphore;

/// State shared by every clone of a store and by its background tasks.
pub(crate) struct Shared {
    pub pool: PgPool,
    pub schema: String,
    pub sql: Sql,
    /// Bumped whenever events may have become readable.
    pub changes: watch::Sender<u64>,
    /// The highest transaction id of an append this store committed: reads of `$all` wait
    /// (briefly) until it is below the watermark, so a caller reads its own writes.
    pub own_xid: AtomicU64,
    /// Wakes the notifier, which tells other processes.
    pub dirty: Notify,
    pub notify: bool,
    pub channel: String,
    /// Append transactions run (batches and single retries).
    pub append_transactions: AtomicU64,
    /// Appends answered.
    pub appends_answered: AtomicU64,
    /// Appends waiting for or in a transaction.
    pub queue: Queue,
    /// Bounds `queue`: an append takes a permit before it queues.
    pub queue_permits: Semaphore,
    /// Forward pages of `$all` being read ahead.
    pub read_ahead: crate::read::ReadAhead,
    /// Signalled when the current host may be gone or read-only: the monitor of a URL with
    /// several hosts then looks for the one to use (see `hosts.rs`).
    pub failover: Arc<Notify>,
    /// The watermark standing still while this store's appends wait above it.
    pub stall: crate::watermark::Stall,
    /// The last append met a read-only host (SQLSTATE 25006: a hot standby, or
    /// `default_transaction_read_only`); cleared by the next append that commits.
    /// `check_writable` reports it, so `/ready?write=true` takes the node out of write
    /// rotation instead of letting clients retry against it.
    pub read_only: std::sync::atomic::AtomicBool,
    /// Some stream of the store may have lifecycle state: set by the first `$all` read (or
    /// lifecycle change of this store) that finds a metastream or a tombstone, and never
    /// cleared (neither is ever removed). Until then `$all` pages skip the query for their
    /// streams' lifecycle state.
    pub lifecycle_seen: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Some stream may have lifecycle state from now on.
    pub(crate) fn note_lifecycle(&self) {
        self.lifecycle_seen
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether some stream may have lifecycle state (see `lifecycle_seen`).
    pub(crate) fn lifecycle_seen(&self) -> bool {
        self.lifecycle_seen
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records whether the host took the last append transaction: a read-only host (25006)
    /// marks the store not writable and has the monitor of a several-host URL look for the
    /// writable one; a commit clears the mark.
    pub(crate) fn note_host_writable<T>(&self, result: &Result<T, sqlx::Error>) {
        use std::sync::atomic::Ordering;
        match result {
            Ok(_) => self.read_only.store(false, Ordering::Relaxed),
            Err(e) if crate::error::sqlstate(e).as_deref() == Some("25006") => {
                if !self.read_only.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        schema = %self.schema,
                        "the PostgreSQL host refused an append as read-only (a hot standby?); \
                         this store reports itself not writable until an append commits"
                    );
                }
                self.failover.notify_one();
            }
            Err(_) => {}
        }
    }

    /// Called after every append transaction ends, committed or not: either may let events
    /// become readable (an aborted transaction can be the one that held the watermark back).
    pub(crate) fn appended(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
        if self.notify {
            self.dirty.notify_one();
        }
    }
}

/// Aborts the background tasks when the last clone of the store is dropped.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    _tasks: Tasks,
}

/// An [`strata_core::EventStore`] and [`strata_core::SnapshotStore`] on PostgreSQL. Cloning is
/// cheap; clones share the connection pool and background tasks, which stop when the last
/// clone is dropped. Must be created inside a Tokio runtime.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.shared.schema)
            .finish()
    }
}

impl PostgresStore {
    /// Connects to `url` with default options (schema `strata`), creating or migrating the
    /// schema as needed.
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        Self::connect_with(PgStoreOptions::new(url)).await
    }

    /// Connects with `options`.
    pub async fn connect_with(options: PgStoreOptions) -> Result<Self, ConnectError> {
        options.validate()?;
        if !(options.url.starts_with("postgres://") || options.url.starts_with("postgresql://")) {
            return Err(ConnectError::InvalidUrl {
                reason: "it must start with postgres:// or postgresql://".to_owned(),
            });
        }
        // The store's reads walk indexes in order and stop at a limit; without statistics
        // (a young table) the planner may prefer a bitmap scan of the whole range plus a sort,
        // which is disastrous for paging through $all. Bitmap scans are off on its sessions.
        let session = |o: PgConnectOptions| {
            o.application_name("strata")
                .options([("enable_bitmapscan", "off")])
        };
        let hosts = Arc::new(Hosts::new(
            &hosts::split(&options.url)?,
            options.connect_timeout,
            session,
        )?);
        let current = if hosts.candidates.len() == 1 && !hosts.read_write {
            // One direct connection first: the pool retries failed connects until its timeout,
            // which would hide *why* it failed (refused, no such database, bad password).
            let target = hosts.target(0);
            match tokio::time::timeout(
                options.connect_timeout,
                PgConnection::connect_with(&hosts.candidates[0]),
            )
            .await
            {
                Ok(Ok(probe)) => {
                    let _ = probe.close().await;
                }
                Ok(Err(e)) => return Err(connect_error(&e, &target)),
                Err(_) => return Err(connect_error(&sqlx::Error::PoolTimedOut, &target)),
            }
            0
        } else {
            // Several hosts, or read-write sessions asked for: the first acceptable host, as
            // libpq chooses (see hosts.rs).
            hosts.find().await?
        };
        let failover = Arc::new(Notify::new());
        // No ping before every acquire: a broken connection fails its statement instead, which
        // every caller handles, and the ping would cost each append and read a round trip.
        // Once a connection has been found lost, the ones idle since before that are pinged
        // before use (and replaced when dead): one `pg_terminate_backend` or server restart
        // then costs one failed statement, not one per pooled connection.
        let mut pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.connect_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if crate::error::check_before_use(meta.idle_for) {
                        return Ok(conn.ping().await.is_ok());
                    }
                    Ok(true)
                })
            });
        if hosts.read_write {
            // libpq checks every new connection of a read-write session; so does the pool, and
            // a read-only server has the monitor look for the writable host again.
            let failover = failover.clone();
            pool = pool.after_connect(move |conn, _| {
                let failover = failover.clone();
                Box::pin(async move {
                    if hosts::accepts_writes(conn).await? {
                        return Ok(());
                    }
                    failover.notify_one();
                    Err(sqlx::Error::Protocol(
                        "the server accepts only read-only sessions and the URL asks for \
                         target_session_attrs=read-write"
                            .to_owned(),
                    ))
                })
            });
        }
        let pool = pool.connect_lazy_with(hosts.candidates[current].clone());
        migrate::migrate(&pool, &options.schema, options.migrate).await?;

        let (changes, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            pool: pool.clone(),
            schema: options.schema.clone(),
            sql: Sql::new(&options.schema),
            changes,
            own_xid: AtomicU64::new(0),
            dirty: Notify::new(),
            notify: options.notify,
            channel: format!("strata_{}", options.schema),
            append_transactions: AtomicU64::new(0),
            appends_answered: AtomicU64::new(0),
            queue: Queue::new(options.append_writers),
            queue_permits: Semaphore::new(limits::APPEND_QUEUE_MAX),
            read_ahead: Default::default(),
            failover,
            stall: Default::default(),
            read_only: Default::default(),
            lifecycle_seen: Default::default(),
        });
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(notify::listener(
            shared.channel.clone(),
            shared.clone(),
            options.connect_timeout,
        )));
        if hosts.candidates.len() > 1 {
            tasks.push(tokio::spawn(hosts::monitor(shared.clone(), hosts, current)));
        }
        if options.notify {
            tasks.push(tokio::spawn(notify::notifier(shared.clone())));
        }
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                shared,
                _tasks: Tasks(tasks),
            }),
        })
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The store's connection pool. Its sessions have `enable_bitmapscan` off (the store's
    /// reads are index-ordered scans with a limit); use your own pool for other queries.
    pub fn pool(&self) -> &PgPool {
        &self.inner.shared.pool
    }

    /// How many append transactions this store has run and how many appends they answered:
    /// their ratio is the average group-commit batch.
    pub fn append_stats(&self) -> (u64, u64) {
        let s = &self.inner.shared;
        (
            s.append_transactions
                .load(std::sync::atomic::Ordering::Relaxed),
            s.appends_answered
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.shared.schema
    }

    pub(crate) async fn append_events(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, AppendError> {
        let events = append::prepare(stream, events)?;
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            stream: stream.clone(),
            expected,
            events,
            reply,
        };
        let shared = &self.inner.shared;
        // Back-pressure: at most APPEND_QUEUE_MAX appends wait or run at once.
        let _permit = shared.queue_permits.acquire().await.map_err(|_| {
            AppendError::Unavailable(("the store is shutting down".to_owned()).into())
        })?;
        shared.queue.submit(shared, request);
        answer.await.unwrap_or_else(|_| {
            Err(AppendError::Unavailable(
                ("the append task stopped before answering".to_owned()).into(),
            ))
        })
    }

    /// Test hook: whether no page of `$all` is being read ahead right now. Only with the
    /// `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    pub fn read_ahead_settled(&self) -> bool {
        self.shared().read_ahead.settled()
    }

    /// Test hook: the statement that computes the watermark and the readable head (what
    /// `head()` runs), to examine the work it does. Only with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    pub fn watermark_sql(&self) -> &str {
        &self.shared().sql.head
    }

    /// Test hook: appends like [`strata_core::EventStore::append`] but in an explicit
    /// transaction that stays open for `hold` after the events are inserted and before it
    /// commits, as a slow or descheduled writer would. Bypasses batching. Only with the
    /// `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    pub async fn append_holding_transaction(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        hold: std::time::Duration,
    ) -> Result<AppendResult, AppendError> {
        let events = append::prepare(stream, events)?;
        let (reply, _answer) = oneshot::channel();
        let request = AppendRequest {
            stream: stream.clone(),
            expected,
            events,
            reply,
        };
        let shared = self.shared();
        let err = |e: sqlx::Error| crate::error::append_error(&e);
        let mut conn = shared.pool.acquire().await.map_err(err)?;
        sqlx::query("BEGIN")
            .execute(&mut *conn)
            .await
            .map_err(err)?;
        let outcome =
            append::execute(shared, &mut *conn, std::slice::from_ref(&request), true).await;
        tokio::time::sleep(hold).await;
        let result = match outcome {
            Ok(mut o) => {
                sqlx::query("COMMIT")
                    .execute(&mut *conn)
                    .await
                    .map_err(err)?;
                o.pop()
                    .map(append::Outcome::into_result)
                    .unwrap_or_else(|| {
                        Err(AppendError::Storage(
                            ("strata_append returned no row".to_owned()).into(),
                        ))
                    })
            }
            Err(e) => {
                // Lost a race (or worse): settle it the way the normal path does.
                let first = append::FirstError::from(&e);
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                append::release_locks(&mut conn).await;
                drop(conn);
                append::run_single(shared, &request, Some(first)).await
            }
        };
        shared.appended();
        result
    }
}
