//! The toolkit's bounds: snapshots, replay pages, command retries, the aggregate cache, history
//! pages, and projections (batches, handler retries, the SQLite busy timeout, how many). Each
//! says why its value was chosen; relations are checked at compile time. The bounds of the event
//! model that every store enforces (payload sizes, pages, filters) are in
//! [`strata_core::limits`].

use strata_core::limits as core;

// --- Aggregates and the repository ---

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

/// Most events one `Repository::read_events` (in `strata`) call returns.
pub const HISTORY_PAGE_MAX_EVENTS: usize = core::READ_PAGE_MAX_EVENTS;

const _: () = assert!(LOAD_PAGE_EVENTS <= core::READ_PAGE_MAX_EVENTS);
const _: () = assert!(LOAD_PAGE_EVENTS > 0);
const _: () = assert!(COMMAND_RETRIES_DEFAULT <= COMMAND_RETRIES_MAX);
const _: () = assert!(AGGREGATE_CACHE_ENTRIES_DEFAULT <= AGGREGATE_CACHE_ENTRIES_MAX);

// --- Projections ---

/// Most events a projection applies in one read-model transaction. Batching amortises the
/// commit (an fsync in SQLite's WAL mode) over many events — the difference between a few
/// thousand and a few hundred thousand events per second — while one batch stays small enough
/// that a failed batch is cheap to redo and the write lock is held for milliseconds.
pub const PROJECTION_BATCH_MAX_EVENTS: usize = 1_000;

/// How many times a projection handler's error is retried (with backoff) before the
/// projection stops as failed. Transient errors (a locked database) clear within a few
/// retries; a bug does not, and then the projection must stop loudly rather than skip.
pub const PROJECTION_HANDLER_RETRIES: u32 = 5;

/// The first retry backoff of a failed handler; it doubles on each retry.
pub const PROJECTION_RETRY_BACKOFF_MS_INITIAL: u64 = 10;

/// The longest backoff between two retries of a failed handler.
pub const PROJECTION_RETRY_BACKOFF_MS_MAX: u64 = 1_000;

/// The longest an inline projection waits, in all, for a backend that holds newer events back
/// (PostgreSQL behind an open transaction) before it leaves the rest to the next append or the
/// background task. The wait ends at the store's change signal, usually within milliseconds.
pub const PROJECTION_CATCH_UP_STALL_MAX_MS: u64 = 1_000;

/// How long a read-model connection waits for SQLite's write lock before it reports the
/// database busy. Several projections share one file; a batch holds the lock for
/// milliseconds, so seconds of waiting means something is stuck.
pub const PROJECTION_SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;

/// Most projections one runner manages. Each costs a task and a connection.
pub const PROJECTIONS_MAX: usize = 256;

const _: () = assert!(PROJECTION_BATCH_MAX_EVENTS <= core::READ_PAGE_MAX_EVENTS);
const _: () = assert!(PROJECTION_BATCH_MAX_EVENTS > 0);
const _: () = assert!(PROJECTION_RETRY_BACKOFF_MS_INITIAL <= PROJECTION_RETRY_BACKOFF_MS_MAX);
