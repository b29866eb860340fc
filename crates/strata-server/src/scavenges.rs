//! Scavenges started over HTTP (`POST /admin/scavenge`): one runs at a time as a background
//! task, and its latest progress (or its outcome) is kept here for `GET /admin/scavenge` and
//! the metrics.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use parking_lot::Mutex;
use strata_core::scavenge::{ScavengeError, ScavengeProgress};
use strata_wire::{ScavengeState, ScavengeStatus};

use crate::error::{ApiError, ErrorCode};
use crate::AppState;

/// The server's latest scavenge.
#[derive(Debug, Clone)]
pub(crate) struct Scavenges {
    run: Arc<Mutex<Run>>,
}

#[derive(Debug)]
struct Run {
    status: ScavengeStatus,
    started: Option<Instant>,
}

/// Why a scavenge did not run at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Unsupported,
    AlreadyRunning,
}

impl Default for Scavenges {
    fn default() -> Self {
        Scavenges {
            run: Arc::new(Mutex::new(Run {
                status: fresh(ScavengeState::Idle),
                started: None,
            })),
        }
    }
}

impl Scavenges {
    /// The latest scavenge, its elapsed time up to now while it runs.
    pub(crate) fn status(&self) -> ScavengeStatus {
        let run = self.run.lock();
        let mut status = run.status.clone();
        if status.state == ScavengeState::Running {
            if let Some(started) = run.started {
                status.elapsed_seconds = started.elapsed().as_secs_f64();
            }
        }
        status
    }

    /// Whether one runs now.
    pub(crate) fn running(&self) -> bool {
        self.run.lock().status.state == ScavengeState::Running
    }

    /// Starts a scavenge of `st`'s store in the background and answers once it has begun (its
    /// first progress report) or ended: `scavenge_in_progress` when one runs already (here
    /// or in another process), `scavenge_unsupported` when the store cannot scavenge; after
    /// either, the status is the one before.
    pub(crate) async fn start(&self, st: &AppState) -> Result<ScavengeStatus, ApiError> {
        let previous = {
            let mut run = self.run.lock();
            if run.status.state == ScavengeState::Running {
                return Err(in_progress());
            }
            let previous = (run.status.clone(), run.started);
            run.status = ScavengeStatus {
                started_at: Some(Utc::now()),
                ..fresh(ScavengeState::Running)
            };
            run.started = Some(Instant::now());
            previous
        };
        // Told once: the status when the scavenge began (or ended), or why it did not run.
        type Began = Result<ScavengeStatus, Refusal>;
        let (began, began_rx) = tokio::sync::oneshot::channel::<Began>();
        let began = Arc::new(Mutex::new(Some(began)));
        let tell = move |began: &Mutex<Option<tokio::sync::oneshot::Sender<Began>>>,
                         what: Began| {
            if let Some(tx) = began.lock().take() {
                let _ = tx.send(what);
            }
        };
        let task = {
            let run = Arc::clone(&self.run);
            let st = st.clone();
            let began = Arc::clone(&began);
            async move {
                let _unfinished = Unfinished(Arc::clone(&run), st.clone());
                let progress = |p: ScavengeProgress| {
                    let now = {
                        let mut run = run.lock();
                        record(&mut run, &st, p);
                        run.status.clone()
                    };
                    tell(&began, Ok(now));
                };
                let result = st.store().scavenge(&progress).await;
                // Whether the `POST` is still waiting: nothing was reported yet.
                let unreported = began.lock().is_some();
                let mut r = run.lock();
                let answer = match result {
                    // Nothing ran: the status is the one before, and nothing is counted.
                    Err(ScavengeError::Unsupported) if unreported => {
                        (r.status, r.started) = previous;
                        Err(Refusal::Unsupported)
                    }
                    Err(ScavengeError::AlreadyRunning) if unreported => {
                        (r.status, r.started) = previous;
                        Err(Refusal::AlreadyRunning)
                    }
                    Ok(report) => {
                        record(&mut r, &st, report.progress);
                        r.status.state = ScavengeState::Done;
                        finish(&mut r);
                        st.metrics().scavenge_ended(true);
                        Ok(r.status.clone())
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "scavenge failed");
                        r.status.error = Some(public_error(&e));
                        r.status.state = ScavengeState::Failed;
                        finish(&mut r);
                        st.metrics().scavenge_ended(false);
                        Ok(r.status.clone())
                    }
                };
                drop(r);
                tell(&began, answer);
            }
        };
        tokio::spawn(task);
        // The task holds the only sender: it sends, or drops it when it ends (a panic
        // included, after which the status says failed).
        drop(began);
        match began_rx.await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(Refusal::Unsupported)) => Err(ApiError::new(
                ErrorCode::ScavengeUnsupported,
                "the store behind this server cannot scavenge",
            )),
            Ok(Err(Refusal::AlreadyRunning)) => Err(in_progress()),
            // The task ended without a word (a panic): its guard marked the run failed.
            Err(_) => Ok(self.status()),
        }
    }
}

/// A status in `state` with nothing done yet.
fn fresh(state: ScavengeState) -> ScavengeStatus {
    ScavengeStatus {
        state,
        started_at: None,
        finished_at: None,
        streams_examined: 0,
        streams_total: 0,
        events_removed: 0,
        elapsed_seconds: 0.0,
        error: None,
    }
}

/// Takes `p` into the run's status, and the events removed since the last report into the
/// metrics.
fn record(r: &mut Run, st: &AppState, p: ScavengeProgress) {
    st.metrics()
        .scavenge_removed(p.events_removed.saturating_sub(r.status.events_removed));
    r.status.streams_examined = p.streams_examined;
    r.status.streams_total = p.streams_total;
    r.status.events_removed = p.events_removed;
}

/// Stamps the end of the run.
fn finish(r: &mut Run) {
    r.status.finished_at = Some(Utc::now());
    if let Some(started) = r.started {
        r.status.elapsed_seconds = started.elapsed().as_secs_f64();
    }
}

fn in_progress() -> ApiError {
    ApiError::new(
        ErrorCode::ScavengeInProgress,
        "a scavenge of this store is running already; see GET /admin/scavenge",
    )
}

/// What a scavenge's failure says to clients: the error's own text for the ones they can act
/// on, a general one for storage failures (whose details go to the log).
fn public_error(e: &ScavengeError) -> String {
    match e {
        ScavengeError::Store(_) => "the store failed during the scavenge (see the server log)",
        ScavengeError::Unsupported => "the store behind this server cannot scavenge",
        ScavengeError::AlreadyRunning => "a scavenge of this store is running in another process",
        _ => "the scavenge failed (see the server log)",
    }
    .to_owned()
}

/// Marks the run failed if its task ends without an outcome (a panic, a shutdown), so that it
/// never shows as running for good.
struct Unfinished(Arc<Mutex<Run>>, AppState);

impl Drop for Unfinished {
    fn drop(&mut self) {
        let mut run = self.0.lock();
        if run.status.state == ScavengeState::Running {
            run.status.state = ScavengeState::Failed;
            run.status.finished_at = Some(Utc::now());
            run.status.error = Some("the scavenge stopped without finishing".to_owned());
            self.1.metrics().scavenge_ended(false);
        }
    }
}
