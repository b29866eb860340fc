//! # strata-log
//!
//! Strata's embedded storage engine and default backend: a segmented append-only log with
//! group commit, in-memory indexes persisted beside it, crash recovery, and a snapshot file.
//! The on-disk format is documented byte by byte in `docs/format.md` and in
//! [`format`](mod@format); the engine's bounds and why each was chosen are in [`limits`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_core::{EventData, EventStore, ExpectedVersion, StreamId};
//! let dir = tempfile::tempdir()?;
//! let store = strata_log::LogStore::open(dir.path())?;
//! let account = StreamId::new("account-123")?;
//! let opened = EventData::json("AccountOpened", &serde_json::json!({"initialBalance": 100}))?;
//! let r = store.append(&account, ExpectedVersion::NoStream, vec![opened]).await?;
//! assert_eq!(r.stream_version, 0);
//! // A second handle on the same directory is refused while this one is open.
//! assert!(strata_log::LogStore::open(dir.path()).is_err());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod archived;
mod entries;
mod error;
mod export;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
mod ids;
mod index;
pub mod io;
pub mod limits;
mod positions;
mod postings;
mod recovery;
mod scavenge;
mod sealed;
mod segment;
mod snapshots;
mod store;
mod verify;
mod writer;

pub use archived::{ArchiveCacheStats, ArchivedCopy, EvictReport, SameAsArchived, SegmentSource};
pub use error::{DataLoss, LossCause, OpenError};
pub use export::{each_sealed_event, ExportError, SegmentWriter};
pub use sealed::{
    check_sealed_segment, check_sealed_segment_file, finish_restored_segments,
    reconcile_copied_segments, sealed_file_names, segments_dir, SealedFiles, SealedFilesError,
    SealedSegment, SegmentSummary,
};
pub use store::{IndexStats, LogConfig, LogStore, OpenReport, LOCK_FILE};
pub use verify::{verify, verify_with, VerifyReport};
