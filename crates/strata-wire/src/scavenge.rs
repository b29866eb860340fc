//! A scavenge as the server reports it (`GET /admin/scavenge`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where the server's latest scavenge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ScavengeState {
    /// None has run since the server started.
    Idle,
    /// Removing.
    Running,
    /// Finished; the counts are final.
    Done,
    /// Stopped; `error` says why. What it removed stays removed (it was hidden anyway).
    Failed,
    /// A state this version does not know (a newer server's): read as still running.
    #[serde(other)]
    Unknown,
}

/// The server's latest scavenge, while it runs and after.
///
/// ```
/// use strata_wire::{ScavengeState, ScavengeStatus};
///
/// let doc = r#"{"state":"done","startedAt":"2026-12-05T06:00:00Z","finishedAt":"2026-12-05T06:00:02Z",
///   "streamsExamined":10,"streamsTotal":10,"eventsRemoved":900,"elapsedSeconds":2.0,"error":null}"#;
/// let status: ScavengeStatus = serde_json::from_str(doc).unwrap();
/// assert_eq!(status.state, ScavengeState::Done);
/// assert_eq!(status.events_removed, 900);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScavengeStatus {
    /// Idle, running, done or failed.
    pub state: ScavengeState,
    /// When it started (none while idle).
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended, if it has.
    pub finished_at: Option<DateTime<Utc>>,
    /// Streams with lifecycle state examined so far.
    pub streams_examined: u64,
    /// Streams with lifecycle state when it started.
    pub streams_total: u64,
    /// Events removed so far.
    pub events_removed: u64,
    /// Seconds since the start (until the end, once it ended).
    pub elapsed_seconds: f64,
    /// When failed: why.
    pub error: Option<String>,
}
