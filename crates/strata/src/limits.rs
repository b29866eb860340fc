//! Every bound Strata enforces: the store's limits (re-exported from `strata-core`) and the
//! toolkit's own, each with why its value was chosen.

pub use strata_core::limits::*;

/// Default number of events between two snapshots of an aggregate. The mission's figure: a
/// load then replays at most 99 events after its snapshot, a few hundred microseconds of
/// decoding, while snapshot writes stay rare (one per hundred events).
pub const SNAPSHOT_INTERVAL_DEFAULT: u64 = 100;

/// Events read per page while replaying an aggregate. Large enough that a 10,000-event stream
/// is five reads, small enough that a page of ordinary events stays around a megabyte.
pub const LOAD_PAGE_EVENTS: usize = 2_048;

/// Default number of times a command is retried after a concurrency conflict. Each retry
/// reads only the events that won the race, so a retry is cheap; three covers ordinary
/// contention, and a hotter aggregate should report the conflict rather than spin.
pub const COMMAND_RETRIES_DEFAULT: u32 = 3;

/// Most retries a repository may be configured with, so a misconfiguration cannot turn one
/// command into an unbounded loop.
pub const COMMAND_RETRIES_MAX: u32 = 100;

/// Default number of aggregates a repository keeps in memory between commands. A cached
/// aggregate is caught up with a single short read instead of a snapshot load and a replay;
/// a thousand covers the working set of a busy service while bounding memory to a thousand
/// states.
pub const AGGREGATE_CACHE_ENTRIES_DEFAULT: usize = 1_000;

/// Most aggregates a repository may be configured to keep in memory.
pub const AGGREGATE_CACHE_ENTRIES_MAX: usize = 1_000_000;

/// Most events one [`crate::Repository::read_events`] call returns.
pub const HISTORY_PAGE_MAX_EVENTS: usize = READ_PAGE_MAX_EVENTS;

const _: () = assert!(LOAD_PAGE_EVENTS <= READ_PAGE_MAX_EVENTS);
const _: () = assert!(LOAD_PAGE_EVENTS > 0);
const _: () = assert!(COMMAND_RETRIES_DEFAULT <= COMMAND_RETRIES_MAX);
const _: () = assert!(AGGREGATE_CACHE_ENTRIES_DEFAULT <= AGGREGATE_CACHE_ENTRIES_MAX);
