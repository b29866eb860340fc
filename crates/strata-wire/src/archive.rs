//! The server's archiving as it reports it (`GET /admin/archive`, and `/health`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where the server's archiving stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ArchiveState {
    /// No pass has run since the server started.
    Idle,
    /// A pass is copying sealed segments.
    Running,
    /// The last pass copied everything sealed.
    Ok,
    /// The last pass failed; it is tried again after `nextRunAt`. Appends go on meanwhile.
    Failing,
    /// A state this version does not know (a newer server's).
    #[serde(other)]
    Unknown,
}

/// The server's archiving: the latest pass, and what it has copied since it started.
///
/// ```
/// use strata_wire::{ArchiveState, ArchiveStatus};
///
/// let doc = r#"{"state":"failing","target":"s3://backups/bank","lastRunAt":"2026-12-05T06:00:00Z",
///   "lastSuccessAt":null,"nextRunAt":"2026-12-05T06:00:04Z","consecutiveFailures":3,
///   "lastError":"the archive at s3://backups/bank failed: connection refused",
///   "segmentsArchived":0,"bytesArchived":0,"archivedBelowPosition":null}"#;
/// let status: ArchiveStatus = serde_json::from_str(doc).unwrap();
/// assert_eq!(status.state, ArchiveState::Failing);
/// assert_eq!(status.consecutive_failures, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveStatus {
    /// Idle, running, ok or failing.
    pub state: ArchiveState,
    /// Where the archive is (a directory or `s3://bucket/prefix`).
    pub target: String,
    /// When the latest pass started.
    pub last_run_at: Option<DateTime<Utc>>,
    /// When the latest pass that succeeded ended.
    pub last_success_at: Option<DateTime<Utc>>,
    /// When the next pass starts (none while one runs).
    pub next_run_at: Option<DateTime<Utc>>,
    /// Passes failed in a row since the last success.
    pub consecutive_failures: u64,
    /// Why the latest pass failed (none once one succeeds).
    pub last_error: Option<String>,
    /// Segments copied by this server since it started.
    pub segments_archived: u64,
    /// Their bytes.
    pub bytes_archived: u64,
    /// Every event below this position is in the archive (known after a pass succeeds).
    pub archived_below_position: Option<u64>,
}
