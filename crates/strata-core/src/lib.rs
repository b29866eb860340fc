//! # strata-core
//!
//! The event model and the [`EventStore`] trait shared by every Strata backend. No I/O lives
//! here: the embedded log (`strata-log`), PostgreSQL (`strata-postgres`) and the in-memory
//! reference store (`strata-testkit`) implement the trait, and one conformance suite checks
//! them all.
//!
//! ```
//! use strata_core::{EventData, ExpectedVersion, StreamId};
//! let stream = StreamId::new("account-123").unwrap();
//! assert_eq!(stream.category(), "account");
//! let event = EventData::json("AccountOpened", &serde_json::json!({"initialBalance": 100})).unwrap();
//! assert!(ExpectedVersion::NoStream.matches(None));
//! # let _ = event;
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod event;
mod json;
pub mod lifecycle;
pub mod limits;
mod options;
pub mod scavenge;
mod snapshot;
mod store;
mod stream_id;
mod subscription;

pub use async_trait::async_trait;
pub use error::{
    AccessDenied, ActualVersion, AppendError, BackendError, Corruption, CorruptionLocation,
    InvalidInput, LimitError, ReadError,
};
pub use event::{
    timestamp_from_micros, timestamp_to_micros, validate_append, validate_event, AppendResult,
    EventData, ExpectedVersion, Metadata, Position, RecordedEvent, Timestamp, CAUSATION_ID_KEY,
    CONTENT_TYPE_JSON, CORRELATION_ID_KEY, USER_ID_KEY,
};
pub use json::has_nul_escape as json_has_nul_escape;
pub use lifecycle::{StreamMetadata, StreamMetadataRecord};
pub use options::{
    Direction, Filter, ListOptions, ReadAllOptions, ReadStreamOptions, SubscribeFrom,
    SubscriptionTarget,
};
pub use snapshot::{Snapshot, SnapshotAndEvents, SnapshotError, SnapshotStore};
pub use store::{AllPage, CategorySummary, EventStore, Page, StreamInfo, StreamSummary};
pub use stream_id::{category_of, StreamId, METASTREAM_PREFIX};
pub use subscription::{Batch, Cursor, Subscription};
pub use uuid::Uuid;
