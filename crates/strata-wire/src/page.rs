//! The pages of reads and listings, and the small answers of `/all/head` and
//! `/all/position-at`. Pages are generic over their entries: the server fills them with
//! [`EventJson`](crate::EventJson)s that borrow the events it read, a client reads them into
//! owned ones.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use strata_core::Direction;

/// A page of one stream: `GET /streams/{stream}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamPage<'a, E> {
    /// The stream.
    pub stream_id: Cow<'a, str>,
    /// The direction of the read.
    pub direction: Direction,
    /// The events, in `direction`.
    pub events: Vec<E>,
    /// The path of the next page; `None` on the last one.
    pub next: Option<String>,
}

/// A page of `$all`: `GET /all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllPage<E> {
    /// The direction of the read.
    pub direction: Direction,
    /// The events, in `direction`.
    pub events: Vec<E>,
    /// Where the next page starts (`from`); `None` when there is none.
    pub next_position: Option<u64>,
    /// Whether no event past this page passes the filter right now.
    pub is_end: bool,
    /// The path of the next page; `None` on the last one.
    pub next: Option<String>,
}

/// A page of a listing: `GET /streams` (of
/// [`StreamSummary`](strata_core::StreamSummary)) and `GET /categories` (of
/// [`CategorySummary`](strata_core::CategorySummary)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPage<T> {
    /// The entries, in name order.
    pub items: Vec<T>,
    /// The cursor of the next page (its `after`); `None` on the last one.
    pub next_after: Option<String>,
    /// The path of the next page; `None` on the last one.
    pub next: Option<String>,
}

/// The answer of `GET /all/head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The position of the last event; `None` when the store is empty.
    pub head: Option<u64>,
}

/// The answer of `GET /all/position-at?time=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionAt {
    /// The position of the last event recorded at or before the time; `None` when there is
    /// none.
    pub position: Option<u64>,
}

/// The answer of `GET /streams/{stream}/metadata` and `PUT` to it: the stream's metadata and
/// its version (`null` before the first metadata).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataAnswer {
    /// The stream described.
    pub stream_id: String,
    /// The metadata's version (its metastream's), for the next change's `expectedVersion`.
    pub version: Option<u64>,
    /// The metadata.
    pub metadata: strata_core::StreamMetadata,
    /// Where the change was appended (in the metastream): in the answer to a `PUT` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}
