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

/// Most events one [`crate::Repository::read_events`] call returns.
pub const HISTORY_PAGE_MAX_EVENTS: usize = READ_PAGE_MAX_EVENTS;

const _: () = assert!(LOAD_PAGE_EVENTS <= READ_PAGE_MAX_EVENTS);
const _: () = assert!(LOAD_PAGE_EVENTS > 0);
const _: () = assert!(COMMAND_RETRIES_DEFAULT <= COMMAND_RETRIES_MAX);
