//! Options for reads, listings and subscriptions, as builders.

use serde::{Deserialize, Serialize};

use crate::error::{InvalidInput, LimitError, ReadError};
use crate::event::{Position, RecordedEvent};
use crate::limits;
use crate::stream_id::{category_of, StreamId};

/// Which way a read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forward,
    /// Newest first.
    Backward,
}

/// How to read one stream.
///
/// ```
/// use strata_core::ReadStreamOptions;
/// let o = ReadStreamOptions::forward().from_version(10).limit(100);
/// assert_eq!(o.limit, 100);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadStreamOptions {
    /// Forward or backward.
    pub direction: Direction,
    /// First version to return (inclusive). `None`: the start (forward) or the end (backward).
    pub from_version: Option<u64>,
    /// Most events to return, at most [`limits::READ_PAGE_MAX_EVENTS`]; 0 returns nothing.
    pub limit: usize,
    /// Only events at or below this global position: a read "as of" a point in history.
    pub max_position: Option<Position>,
}

impl ReadStreamOptions {
    /// Oldest first, from version 0, up to the page limit.
    pub fn forward() -> Self {
        ReadStreamOptions {
            direction: Direction::Forward,
            from_version: None,
            limit: limits::READ_PAGE_MAX_EVENTS,
            max_position: None,
        }
    }
    /// Newest first, from the last version.
    pub fn backward() -> Self {
        ReadStreamOptions {
            direction: Direction::Backward,
            ..Self::forward()
        }
    }
    /// Starts at `version` (inclusive).
    pub fn from_version(mut self, version: u64) -> Self {
        self.from_version = Some(version);
        self
    }
    /// Returns at most `limit` events.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
    /// Hides events after `position`.
    pub fn max_position(mut self, position: Position) -> Self {
        self.max_position = Some(position);
        self
    }
    /// Checks the limit.
    pub fn validate(&self) -> Result<(), ReadError> {
        LimitError::check(
            || "read limit".to_owned(),
            limits::READ_PAGE_MAX_EVENTS,
            self.limit,
        )?;
        Ok(())
    }
}

/// Which events of `$all` a read or subscription wants. Each kind of term that is set must
/// match (AND); within a kind, any term may match (OR). An empty filter matches everything.
///
/// ```
/// use strata_core::Filter;
/// let f = Filter::default().categories(["account"]).event_types(["MoneyDeposited"]);
/// assert!(f.matches_parts("account-1", "MoneyDeposited"));
/// assert!(!f.matches_parts("order-1", "MoneyDeposited"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Filter {
    /// Event types to keep.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Categories to keep.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Stream-id prefix to keep.
    #[serde(default)]
    pub stream_prefix: Option<String>,
}

impl Filter {
    /// Keeps these event types.
    pub fn event_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }
    /// Keeps these categories.
    pub fn categories<S: Into<String>>(mut self, cats: impl IntoIterator<Item = S>) -> Self {
        self.categories = cats.into_iter().map(Into::into).collect();
        self
    }
    /// Keeps streams whose id starts with `prefix`.
    pub fn stream_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.stream_prefix = Some(prefix.into());
        self
    }
    /// Whether the filter keeps everything.
    pub fn is_empty(&self) -> bool {
        self.event_types.is_empty() && self.categories.is_empty() && self.stream_prefix.is_none()
    }
    /// Whether an event of `event_type` in `stream_id` passes.
    pub fn matches_parts(&self, stream_id: &str, event_type: &str) -> bool {
        let category = category_of(stream_id);
        let described = category.strip_prefix(crate::METASTREAM_PREFIX);
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && (self.categories.is_empty()
                || self
                    .categories
                    .iter()
                    .any(|c| c == category || described == Some(c.as_str())))
            && self
                .stream_prefix
                .as_deref()
                .is_none_or(|p| stream_id.starts_with(p))
    }
    /// The categories a backend looks up for this filter: each category, and the category
    /// of its streams' metastreams (`$$account` for `account`), whose lifecycle events a
    /// category's readers are told of.
    pub fn category_terms(&self) -> Vec<String> {
        let mut terms = self.categories.clone();
        terms.extend(
            self.categories
                .iter()
                .map(|c| format!("{}{c}", crate::METASTREAM_PREFIX)),
        );
        terms
    }
    /// Whether `event` passes.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.matches_parts(event.stream_id.as_str(), &event.event_type)
    }
    /// Checks the filter's bounds.
    pub fn validate(&self) -> Result<(), ReadError> {
        LimitError::check(
            || "event types in a filter".to_owned(),
            limits::FILTER_MAX_TERMS,
            self.event_types.len(),
        )?;
        LimitError::check(
            || "categories in a filter".to_owned(),
            limits::FILTER_MAX_TERMS,
            self.categories.len(),
        )?;
        if let Some(p) = &self.stream_prefix {
            LimitError::check(
                || "stream prefix bytes".to_owned(),
                limits::FILTER_PREFIX_MAX_BYTES,
                p.len(),
            )?;
        }
        if self.event_types.iter().any(String::is_empty) {
            return Err(
                InvalidInput::new("filter.event_types", "must not contain empty names").into(),
            );
        }
        Ok(())
    }
}

/// How to read `$all`, the global order.
///
/// ```
/// use strata_core::{Filter, Position, ReadAllOptions};
/// let o = ReadAllOptions::forward().from(Position(100)).limit(50)
///     .filter(Filter::default().categories(["account"]));
/// assert_eq!(o.from, Some(Position(100)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAllOptions {
    /// Forward or backward.
    pub direction: Direction,
    /// First position to consider (inclusive). `None`: the start (forward) or end (backward).
    pub from: Option<Position>,
    /// Most events to return, at most [`limits::READ_PAGE_MAX_EVENTS`].
    pub limit: usize,
    /// Which events to return.
    pub filter: Filter,
    /// Only events at or below this position: a read "as of" a point in history.
    pub max_position: Option<Position>,
}

impl ReadAllOptions {
    /// Oldest first from the start.
    pub fn forward() -> Self {
        ReadAllOptions {
            direction: Direction::Forward,
            from: None,
            limit: limits::READ_PAGE_MAX_EVENTS,
            filter: Filter::default(),
            max_position: None,
        }
    }
    /// Newest first from the end.
    pub fn backward() -> Self {
        ReadAllOptions {
            direction: Direction::Backward,
            ..Self::forward()
        }
    }
    /// Starts at `position` (inclusive).
    pub fn from(mut self, position: Position) -> Self {
        self.from = Some(position);
        self
    }
    /// Returns at most `limit` events.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
    /// Keeps only events that pass `filter`.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }
    /// Hides events after `position`.
    pub fn max_position(mut self, position: Position) -> Self {
        self.max_position = Some(position);
        self
    }
    /// Checks the limit and the filter.
    pub fn validate(&self) -> Result<(), ReadError> {
        LimitError::check(
            || "read limit".to_owned(),
            limits::READ_PAGE_MAX_EVENTS,
            self.limit,
        )?;
        self.filter.validate()
    }
}

/// How to list streams or categories: by name, in pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOptions {
    /// Only names strictly after this one (the `next` cursor of the previous page).
    pub after: Option<String>,
    /// Only names starting with this prefix.
    pub prefix: Option<String>,
    /// Most entries, at most [`limits::LIST_PAGE_MAX_ENTRIES`].
    pub limit: usize,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            after: None,
            prefix: None,
            limit: 100,
        }
    }
}

impl ListOptions {
    /// Continues after `name`.
    pub fn after(mut self, name: impl Into<String>) -> Self {
        self.after = Some(name.into());
        self
    }
    /// Only names with this prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
    /// At most `limit` entries.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
    /// Checks the limit.
    pub fn validate(&self) -> Result<(), ReadError> {
        LimitError::check(
            || "list limit".to_owned(),
            limits::LIST_PAGE_MAX_ENTRIES,
            self.limit,
        )?;
        Ok(())
    }
}

/// What a subscription follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionTarget {
    /// Every event in the global order that passes the filter.
    All(Filter),
    /// One stream.
    Stream(StreamId),
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeFrom {
    /// From the first event.
    Start,
    /// Only events appended after the subscription starts.
    End,
    /// After this global position (for `$all`): resume from a checkpoint.
    AfterPosition(Position),
    /// After this stream version (for a stream): resume from a checkpoint.
    AfterVersion(u64),
}
