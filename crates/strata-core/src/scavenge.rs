//! Scavenging: removing for good the events readers can no longer see.
//!
//! Deleting, truncating and tombstoning a stream, and its `maxCount` and `maxAgeSeconds`,
//! hide events at once ([`crate::lifecycle`]); a scavenge then removes them from storage, so
//! that their space comes back. It changes no answer a reader gets: what it removes was
//! already hidden from every read, and the events that remain keep their positions and
//! versions. What it keeps of each stream with lifecycle state:
//!
//! - the stream's **last event**, even when hidden: it holds the stream's version, so that an
//!   append re-creating a deleted stream continues after it, and a tombstoned stream's last
//!   event is its tombstone;
//! - its **first event**, unless it is tombstoned: category listings find streams by it,
//!   and a soft-deleted stream may be re-created; a tombstoned stream keeps only its
//!   tombstone, and leaves category listings;
//! - every event of its **metastream**: the history of its metadata, and the `$streamDeleted`
//!   notices subscribers read in `$all`.
//!
//! Removal is final: raising `maxCount` or `maxAgeSeconds` afterwards shows only the events a
//! scavenge has not removed yet. An event id that was removed is forgotten: a retry of an
//! append whose events were all removed is no longer recognised as a retry (with
//! [`ExpectedVersion::Any`](crate::ExpectedVersion::Any) it appends them again), and a retry
//! of one whose events were partly removed is an
//! [`AppendError::EventIdConflict`](crate::AppendError::EventIdConflict).
//!
//! ```
//! use strata_core::lifecycle::{StreamMetadata, Visibility};
//! use strata_core::scavenge::removable;
//! let now = chrono::Utc::now();
//! // A stream truncated before version 3, whose last version is 9: versions 1 and 2 go.
//! let m = StreamMetadata { truncate_before: Some(3), ..Default::default() };
//! assert_eq!(removable(Visibility::new(Some(&m), Some(9), false, now), 9, None), 1..3);
//! // Soft-deleted (truncated before its next version, 10): all but the first and last go.
//! let m = StreamMetadata { truncate_before: Some(10), ..Default::default() };
//! assert_eq!(removable(Visibility::new(Some(&m), Some(9), false, now), 9, None), 1..9);
//! ```

use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ReadError;
use crate::lifecycle::Visibility;

/// How far a running scavenge has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScavengeProgress {
    /// Streams with lifecycle state examined so far.
    pub streams_examined: u64,
    /// Streams with lifecycle state when the scavenge started (streams given metadata while
    /// it runs may be examined too, or left for the next one).
    pub streams_total: u64,
    /// Events removed so far.
    pub events_removed: u64,
}

/// What a finished scavenge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScavengeReport {
    /// Where it ended.
    pub progress: ScavengeProgress,
    /// How long it took.
    pub elapsed: Duration,
}

/// Why a scavenge failed. What it removed before failing stays removed (it was hidden
/// anyway), and running it again carries on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScavengeError {
    /// This store cannot scavenge.
    #[error("this store cannot scavenge")]
    Unsupported,
    /// Another scavenge of the same store is running (in this process or another), or, on
    /// the embedded store, an archive is copying its sealed segments.
    #[error("a scavenge of this store is already running, or an archive is copying its segments")]
    AlreadyRunning,
    /// Reading or removing failed.
    #[error(transparent)]
    Store(#[from] ReadError),
}

/// Receives a scavenge's progress as it goes (at least once, at its end).
pub type ProgressFn<'a> = &'a (dyn Fn(ScavengeProgress) + Send + Sync);

/// The versions a scavenge removes of a stream whose readers see `visibility` and whose last
/// stored version is `last`: every event hidden for good, but never the last one, nor the
/// first one unless the stream is tombstoned (category listings find streams by it, and a
/// soft-deleted stream may come back).
/// `first_recent`: when `visibility` hides events by age, the first version recorded at or
/// after its `not_before_us` (`None` when no event is that recent); events are recorded in
/// version order, so the ones hidden by age come first.
pub fn removable(visibility: Visibility, last: u64, first_recent: Option<u64>) -> Range<u64> {
    let mut before = if visibility.tombstoned {
        last
    } else {
        visibility.from_version
    };
    if visibility.not_before_us.is_some() {
        before = before.max(first_recent.unwrap_or(last.saturating_add(1)));
    }
    let from = if visibility.tombstoned { 0 } else { 1 };
    from..before.min(last).max(from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::StreamMetadata;

    fn vis(m: &StreamMetadata, last: u64, tomb: bool) -> Visibility {
        Visibility::new(Some(m), Some(last), tomb, chrono::Utc::now())
    }

    #[test]
    fn only_what_readers_cannot_see_goes_and_never_the_last_event() {
        let none = StreamMetadata::default();
        assert!(removable(vis(&none, 9, false), 9, None).is_empty());
        // maxCount 4 of 0..=9 keeps 6..=9, and 0 while the stream exists.
        let count = StreamMetadata {
            max_count: Some(4),
            ..Default::default()
        };
        assert_eq!(removable(vis(&count, 9, false), 9, None), 1..6);
        // A tombstone at 9: all of 0..9 goes, the tombstone stays.
        assert_eq!(removable(vis(&none, 9, true), 9, None), 0..9);
        // maxAge: up to the first recent version, and all but the last when none is recent.
        let age = StreamMetadata {
            max_age_seconds: Some(60),
            truncate_before: Some(2),
            ..Default::default()
        };
        assert_eq!(removable(vis(&age, 9, false), 9, Some(5)), 1..5);
        assert_eq!(removable(vis(&age, 9, false), 9, Some(1)), 1..2);
        assert_eq!(removable(vis(&age, 9, false), 9, None), 1..9);
        // A truncation past the end (a soft delete) keeps the first and the last event.
        let deleted = StreamMetadata {
            truncate_before: Some(10),
            ..Default::default()
        };
        assert_eq!(removable(vis(&deleted, 9, false), 9, None), 1..9);
        // A stream of one event keeps it.
        assert!(removable(vis(&deleted, 0, false), 0, None).is_empty());
        assert!(removable(vis(&count, 0, false), 0, None).is_empty());
    }
}
