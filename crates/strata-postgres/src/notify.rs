//! Wake-ups: a `LISTEN` task that bumps the store's change signal when any process appends, and
//! a notifier that sends one coalesced `NOTIFY` after this process's appends.
//!
//! The `NOTIFY` is deliberately not sent inside the append transaction: PostgreSQL serialises
//! the commits of all transactions that notify (they take a database-wide lock from pre-commit
//! until the commit record is flushed), which measured here cut 16-writer throughput about
//! fourfold. Local subscribers are woken directly when an append transaction ends; other
//! processes are woken by the notifier, at most one `NOTIFY` per
//! [`crate::limits::NOTIFY_MIN_INTERVAL_MS`]. Subscriptions poll as a fallback, so a lost
//! notification (a dropped `LISTEN` connection) delays delivery, never loses an event.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::Executor;

use crate::limits;
use crate::store::Shared;

/// Listens on `channel` until the store is dropped (the task is aborted), reconnecting with
/// exponential backoff when the connection drops. It connects wherever the store's pool
/// connects now, and a lost connection signals `shared.failover` (with several hosts in the
/// URL the monitor then looks for the one to use; see `hosts.rs`).
pub(crate) async fn listener(channel: String, shared: Arc<Shared>, connect_timeout: Duration) {
    let min = Duration::from_millis(limits::LISTEN_RECONNECT_MIN_MS);
    let max = Duration::from_millis(limits::LISTEN_RECONNECT_MAX_MS);
    let mut backoff = min;
    let mut said_standby = false;
    let bump = || shared.changes.send_modify(|v| *v = v.wrapping_add(1));
    loop {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(connect_timeout)
            .connect_lazy_with((*shared.pool.connect_options()).clone());
        let mut listener = match PgListener::connect_with(&pool).await {
            // Reconnecting is this loop's job, on whatever host the store's pool uses by then:
            // the listener's own reconnect would retry the lost host until its timeout.
            Ok(mut l) => {
                l.eager_reconnect(false);
                l
            }
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "LISTEN connection failed; retrying");
                shared.failover.notify_one();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max);
                continue;
            }
        };
        if let Err(e) = listener.listen(&channel).await {
            if crate::error::sqlstate(&e).as_deref() == Some(READ_ONLY_SQL_TRANSACTION) {
                // A hot standby: LISTEN is not allowed during recovery. Subscriptions here are
                // woken by polling; keep trying in case the server is promoted.
                if !said_standby {
                    tracing::info!(
                        "the server is a standby (LISTEN is not allowed in recovery): \
                         subscriptions poll for new events"
                    );
                    said_standby = true;
                }
                tokio::time::sleep(max).await;
                continue;
            }
            tracing::warn!(error = %e, ?backoff, "LISTEN failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(max);
            continue;
        }
        // Anything appended while we were not listening is found by the next read.
        bump();
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => {
                    backoff = min;
                    bump();
                }
                Ok(None) => {
                    // The connection was lost: notifications in between are gone, so have
                    // subscribers look, and reconnect wherever the pool connects now.
                    tracing::info!("LISTEN connection was lost; reconnecting");
                    shared.failover.notify_one();
                    bump();
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "LISTEN connection lost; reconnecting");
                    shared.failover.notify_one();
                    bump();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max);
                    break;
                }
            }
        }
    }
}

/// SQLSTATE `read_only_sql_transaction`, which `LISTEN` on a hot standby answers.
const READ_ONLY_SQL_TRANSACTION: &str = "25006";

/// Sends one `NOTIFY` per burst of appends, once they are readable: a reader woken before the
/// watermark has passed them would find nothing and go back to waiting until its next poll.
pub(crate) async fn notifier(shared: Arc<Shared>) {
    let pause = Duration::from_millis(limits::NOTIFY_MIN_INTERVAL_MS);
    let settle = Duration::from_millis(limits::NOTIFY_SETTLE_POLL_MS);
    loop {
        shared.dirty.notified().await;
        let own = shared.own_xid.load(std::sync::atomic::Ordering::Acquire);
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(limits::READ_YOUR_WRITES_WAIT_MS) {
            let xmin: Result<i64, _> =
                sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                    .fetch_one(&shared.pool)
                    .await;
            match xmin {
                Ok(x) if (x as u64) <= own => tokio::time::sleep(settle).await,
                _ => break,
            }
        }
        // A plain string runs as one simple query holding several statements.
        if let Err(e) = shared.pool.execute(shared.sql.notify.as_str()).await {
            tracing::debug!(error = %e, "NOTIFY failed; subscribers elsewhere will poll");
        }
        tokio::time::sleep(pause).await;
    }
}
