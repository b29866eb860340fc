//! Archiving from a running server: a background task copies the store's sealed segments to
//! the archive every interval, and at once on `POST /admin/archive`. A pass that fails is
//! tried again with a backoff (1 s, doubling, at most [`ARCHIVE_RETRY_MAX`], never later than
//! the interval), and the failure shows in `GET /admin/archive`, `/health` and the metrics;
//! appends never wait for the archive.

use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use strata_wire::{ArchiveState, ArchiveStatus};

/// Longest wait before a failed pass is tried again.
pub const ARCHIVE_RETRY_MAX: Duration = Duration::from_secs(300);
/// Wait before trying again when a scavenge held the sealed segments.
const BUSY_RETRY: Duration = Duration::from_secs(5);

/// What one archive pass copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchivePass {
    /// Segments copied.
    pub segments: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Every event below this position is archived.
    pub archived_below: u64,
}

/// Why an archive pass did not copy what it should have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchivePassError {
    /// A scavenge held the sealed segments: the pass runs again shortly, not counted as a
    /// failure.
    #[error("a scavenge of the store is running")]
    Busy,
    /// The pass failed (an unreachable archive, a damaged object): `message` is what admins
    /// are shown (no local paths), `detail` what the server's log says.
    #[error("{message}")]
    Failed {
        /// For `GET /admin/archive` and `/health`.
        message: String,
        /// For the server's log.
        detail: String,
    },
}

/// What copies the store's sealed segments to the archive: `strata serve --archive URL`
/// gives the server one over the embedded store.
pub trait Archiver: Send + Sync + 'static {
    /// The archive's address, as shown to admins.
    fn target(&self) -> String;
    /// Copies the sealed segments the archive does not hold yet.
    fn archive_sealed(&self) -> BoxFuture<'_, Result<ArchivePass, ArchivePassError>>;
}

/// The server's archiving: its archiver, the latest status, and the wake-up of its task.
pub(crate) struct Archives {
    archiver: Arc<dyn Archiver>,
    status: Mutex<ArchiveStatus>,
    /// Shared with the task, which holds nothing else between passes.
    wake: Arc<tokio::sync::Notify>,
}

impl Archives {
    pub(crate) fn new(archiver: Arc<dyn Archiver>) -> Archives {
        Archives {
            status: Mutex::new(ArchiveStatus {
                state: ArchiveState::Idle,
                target: archiver.target(),
                last_run_at: None,
                last_success_at: None,
                next_run_at: None,
                consecutive_failures: 0,
                last_error: None,
                segments_archived: 0,
                bytes_archived: 0,
                archived_below_position: None,
            }),
            archiver,
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub(crate) fn status(&self) -> ArchiveStatus {
        self.status.lock().clone()
    }

    /// Asks the task for a pass now (one that runs already is followed by another).
    pub(crate) fn request(&self) {
        self.wake.notify_one();
    }

    /// Runs one pass and records its outcome; returns the wait before the next.
    async fn pass(&self, metrics: &crate::metrics::Metrics, every: Duration) -> Duration {
        {
            let mut s = self.status.lock();
            s.state = ArchiveState::Running;
            s.last_run_at = Some(Utc::now());
            s.next_run_at = None;
        }
        // A pass that panics is a failed pass, not a task gone with the status `running`.
        let outcome = {
            use futures::FutureExt;
            std::panic::AssertUnwindSafe(self.archiver.archive_sealed())
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Err(ArchivePassError::Failed {
                        message: "the archive pass stopped unexpectedly (see the server log)"
                            .to_owned(),
                        detail: "the archive pass panicked".to_owned(),
                    })
                })
        };
        let mut s = self.status.lock();
        let wait = match outcome {
            Ok(pass) => {
                s.state = ArchiveState::Ok;
                s.last_success_at = Some(Utc::now());
                s.consecutive_failures = 0;
                s.last_error = None;
                s.segments_archived += pass.segments;
                s.bytes_archived += pass.bytes;
                s.archived_below_position = Some(pass.archived_below);
                metrics.archive_pass(true, pass.segments, pass.bytes);
                every
            }
            Err(ArchivePassError::Busy) => {
                // As it was before the pass.
                s.state = if s.consecutive_failures > 0 {
                    ArchiveState::Failing
                } else if s.last_success_at.is_some() {
                    ArchiveState::Ok
                } else {
                    ArchiveState::Idle
                };
                BUSY_RETRY.min(every)
            }
            Err(ArchivePassError::Failed { message, detail }) => {
                tracing::warn!(target = %s.target, %detail, "archive pass failed; appends go on, and it is tried again");
                s.state = ArchiveState::Failing;
                s.consecutive_failures += 1;
                s.last_error = Some(message);
                metrics.archive_pass(false, 0, 0);
                retry_delay(s.consecutive_failures, every)
            }
        };
        s.next_run_at = chrono::Duration::from_std(wait)
            .ok()
            .map(|d| Utc::now() + d);
        wait
    }
}

/// The wait before trying again after `failures` failed passes in a row: 1 s, doubling, at
/// most [`ARCHIVE_RETRY_MAX`] and never more than the interval `every`.
pub(crate) fn retry_delay(failures: u64, every: Duration) -> Duration {
    let doubled = Duration::from_secs(1u64 << failures.saturating_sub(1).min(16));
    doubled.min(ARCHIVE_RETRY_MAX).min(every)
}

/// The task: a pass at once, then one after each wait or request, for as long as the server's
/// state lives. Between passes it holds only the wake-up: a state dropped meanwhile (with its
/// archiver, and the store the archiver holds) ends the task at its next wake.
pub(crate) async fn run(state: Weak<crate::StateInner>, every: Duration) {
    loop {
        let Some(st) = state.upgrade() else { return };
        let Some(archives) = st.archives.read().clone() else {
            return;
        };
        let wait = archives.pass(&st.metrics, every).await;
        let wake = Arc::clone(&archives.wake);
        drop((st, archives));
        let _ = tokio::time::timeout(wait, wake.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_up_to_a_bound_and_the_interval() {
        let hour = Duration::from_secs(3600);
        let waits: Vec<u64> = (1..=12).map(|n| retry_delay(n, hour).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(retry_delay(u64::MAX, hour), ARCHIVE_RETRY_MAX);
        assert_eq!(
            retry_delay(9, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }
}
