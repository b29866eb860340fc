//! Hosted projections: the `rebuild` member of `GET /projections/{name}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a projection's latest rebuild stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RebuildState {
    /// Still catching up (the serving copy goes on serving).
    Running,
    /// Swapped in; `checkpoint` is where the new copy serves from.
    Done,
    /// Stopped; `error` says why. The serving copy was left as it was.
    Failed,
    /// A state this version does not know (a newer server's): read as still running.
    #[serde(other)]
    Unknown,
}

/// The latest rebuild of a projection, as a server reports it while it runs and after.
///
/// ```
/// use strata_wire::{RebuildReport, RebuildState};
///
/// let doc = r#"{"state":"done","startedAt":"2026-11-27T13:45:39Z","finishedAt":"2026-11-27T13:45:42Z",
///   "appliedEvents":1000,"position":999,"head":999,"remainingEvents":0,"eventsPerSecond":350.0,
///   "etaSeconds":null,"elapsedSeconds":2.9,"checkpoint":999,"error":null}"#;
/// let report: RebuildReport = serde_json::from_str(doc).unwrap();
/// assert_eq!(report.state, RebuildState::Done);
/// assert_eq!(report.checkpoint, Some(999));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildReport {
    /// Running, done or failed.
    pub state: RebuildState,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended, if it has.
    pub finished_at: Option<DateTime<Utc>>,
    /// Events applied to the fresh copy so far.
    pub applied_events: u64,
    /// The last position the fresh copy has passed.
    pub position: Option<u64>,
    /// The store's head when progress was last reported.
    pub head: Option<u64>,
    /// Positions between `position` and `head`.
    pub remaining_events: u64,
    /// Positions passed per second since the start.
    pub events_per_second: f64,
    /// The estimated seconds left, when there is a rate to estimate from.
    pub eta_seconds: Option<f64>,
    /// Seconds since the start.
    pub elapsed_seconds: f64,
    /// When done: the checkpoint the swapped-in copy serves from.
    pub checkpoint: Option<u64>,
    /// When failed: why.
    pub error: Option<String>,
}
