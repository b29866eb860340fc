//! Rebuilds started over HTTP: each runs as a background task, and its latest progress (or
//! its outcome) is kept here for `GET /projections/{name}`. One entry per projection, so the
//! table is bounded by the number of projections the program registers.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde_json::Value;
use strata::limits;
use strata::projection::{ProjectionControl, ProjectionError, RebuildProgress};

use strata_wire::{RebuildReport, RebuildState};

use crate::error::ApiError;

/// Where a rebuild stands.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Running,
    Done { checkpoint: Option<u64> },
    Failed { error: String },
}

/// The latest rebuild of one projection.
#[derive(Debug, Clone)]
pub(crate) struct RebuildRun {
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    progress: Option<RebuildProgress>,
    outcome: Outcome,
}

impl RebuildRun {
    /// The `rebuild` member of a projection document.
    pub(crate) fn to_json(&self) -> Value {
        let (state, checkpoint, error) = match &self.outcome {
            Outcome::Running => (RebuildState::Running, None, None),
            Outcome::Done { checkpoint } => (RebuildState::Done, *checkpoint, None),
            Outcome::Failed { error } => (RebuildState::Failed, None, Some(error.clone())),
        };
        let p = self.progress.as_ref();
        let report = RebuildReport {
            state,
            started_at: self.started_at,
            finished_at: self.finished_at,
            applied_events: p.map_or(0, |p| p.applied_events),
            position: p.and_then(|p| p.position).map(|p| p.0),
            head: p.and_then(|p| p.head).map(|p| p.0),
            remaining_events: p.map_or(0, |p| p.remaining_events),
            events_per_second: p.map_or(0.0, |p| p.events_per_second),
            eta_seconds: p.and_then(|p| p.eta).map(|d| d.as_secs_f64()),
            elapsed_seconds: p.map_or(0.0, |p| p.elapsed.as_secs_f64()),
            checkpoint,
            error,
        };
        serde_json::to_value(report).unwrap_or(Value::Null)
    }
}

/// The rebuilds of this server's projections.
#[derive(Debug, Default, Clone)]
pub(crate) struct Rebuilds {
    runs: Arc<Mutex<HashMap<String, RebuildRun>>>,
}

impl Rebuilds {
    /// The latest rebuild of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<RebuildRun> {
        self.runs.lock().get(name).cloned()
    }

    /// Starts rebuilding `name` in the background, or `rebuild_in_progress`.
    pub(crate) fn start(
        &self,
        control: Arc<dyn ProjectionControl>,
        name: &str,
    ) -> Result<(), ApiError> {
        {
            let mut runs = self.runs.lock();
            if runs
                .get(name)
                .is_some_and(|r| matches!(r.outcome, Outcome::Running))
            {
                return Err(ProjectionError::RebuildInProgress(name.to_owned()).into());
            }
            if !runs.contains_key(name) && runs.len() >= limits::PROJECTIONS_MAX {
                return Err(ApiError::internal(
                    "more rebuild records than projections can exist",
                ));
            }
            runs.insert(
                name.to_owned(),
                RebuildRun {
                    started_at: Utc::now(),
                    finished_at: None,
                    progress: None,
                    outcome: Outcome::Running,
                },
            );
        }
        let runs = Arc::clone(&self.runs);
        let name = name.to_owned();
        tokio::spawn(async move {
            // Marks the run failed if the task ends without an outcome (a panic, a shutdown),
            // so it never shows as running for good.
            let _unfinished = Unfinished {
                runs: Arc::clone(&runs),
                name: name.clone(),
            };
            let progress_runs = Arc::clone(&runs);
            let progress_name = name.clone();
            let mut on_progress = move |p: &RebuildProgress| {
                if let Some(run) = progress_runs.lock().get_mut(&progress_name) {
                    run.progress = Some(p.clone());
                }
            };
            let result = control.rebuild(&name, &mut on_progress).await;
            let outcome = match result {
                Ok(checkpoint) => Outcome::Done {
                    checkpoint: checkpoint.map(|c| c.0),
                },
                Err(e) => {
                    tracing::warn!(projection = %name, error = %e, "rebuild failed");
                    Outcome::Failed {
                        error: e.to_string(),
                    }
                }
            };
            // A statement, not the block's tail: the lock must be released before
            // `_unfinished` is dropped (it takes the same lock).
            let mut all = runs.lock();
            if let Some(run) = all.get_mut(&name) {
                run.outcome = outcome;
                run.finished_at = Some(Utc::now());
            }
            drop(all);
        });
        Ok(())
    }
}

/// See its use in [`Rebuilds::start`].
struct Unfinished {
    runs: Arc<Mutex<HashMap<String, RebuildRun>>>,
    name: String,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(run) = self.runs.lock().get_mut(&self.name) {
            if matches!(run.outcome, Outcome::Running) {
                run.outcome = Outcome::Failed {
                    error: "the rebuild task ended without finishing".to_owned(),
                };
                run.finished_at = Some(Utc::now());
            }
        }
    }
}
