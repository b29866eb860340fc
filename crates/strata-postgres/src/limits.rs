//! The PostgreSQL backend's bounds: the append queue and its batch transactions, read-ahead,
//! read-your-writes, notifications, schema names and failover. Each says why its value was
//! chosen; relations between them are checked at compile time. The bounds of the event model
//! (payload sizes, pages, filters) are core's, in [`strata_core::limits`].

use strata_core::limits as core;

/// Longest schema name. The notification channel is `strata_<schema>` and PostgreSQL
/// identifiers are at most 63 bytes.
pub const SCHEMA_NAME_MAX_BYTES: usize = 48;

/// Longest a PostgreSQL batch task waits, after answering a batch of several appends, for as
/// many appends to be queued before it takes the next batch (see `strata-postgres`'s append
/// queue). The timer's resolution is a millisecond, so this is at most about one.
pub const PG_APPEND_LINGER_US: u64 = 500;

/// Most appends grouped into one transaction. Large enough that 16+ concurrent writers share a
/// commit; small enough that one failed batch (retried append by append) costs little.
pub const APPEND_BATCH_MAX_APPENDS: usize = 64;

/// Most events in one batch transaction: one append's maximum, so a batch never holds more in
/// memory than the largest single append.
pub const APPEND_BATCH_MAX_EVENTS: usize = core::APPEND_EVENTS_MAX;

/// Most payload bytes in one batch transaction, likewise one append's maximum.
pub const APPEND_BATCH_MAX_BYTES: usize = core::APPEND_MAX_BYTES;

/// Appends waiting for a writer. Callers beyond this wait to enqueue (back-pressure).
pub const APPEND_QUEUE_MAX: usize = 1024;

/// How often one append is retried after losing a race (a unique violation or deadlock)
/// before it gives up with a storage error. Each retry re-reads the stream, so only a stream
/// that is appended to without pause by others can exhaust this.
pub const APPEND_RACE_RETRIES_MAX: u32 = 100;

/// Most events one scavenge transaction deletes (a range of at most this many versions of one
/// stream): each transaction holds its deleted rows' locks and WAL only this long, and a
/// scavenge that stops part way has at most this much undone.
pub const SCAVENGE_BATCH_EVENTS: usize = 1_000;

/// Streams a scavenge lists per query while walking the streams with lifecycle state.
pub const SCAVENGE_STREAMS_PAGE: usize = 1_000;

/// Longest a read waits for this store's own committed appends to become readable in `$all`
/// (read-your-writes). They become readable when every older transaction in the cluster has
/// ended; a transaction left open elsewhere makes a read return without them after this.
pub const READ_YOUR_WRITES_WAIT_MS: u64 = 1_000;

/// Shortest time between two cross-process `NOTIFY`s. Each NOTIFY is a small transaction that
/// PostgreSQL serialises at commit, so they are coalesced: at most one per this interval.
pub const NOTIFY_MIN_INTERVAL_MS: u64 = 10;

/// Largest forward page that is read ahead: the subscription page size, so catch-ups overlap
/// reading the next page with delivering the current one.
pub const READ_AHEAD_MAX_EVENTS: usize = core::SUBSCRIPTION_PAGE_EVENTS;

/// Most events a read reserves room for before its rows arrive (the vector grows past it):
/// a poll at the head that finds nothing does not allocate a whole page.
pub const READ_RESERVE_EVENTS: usize = 256;

/// Pages read ahead in one query: one round trip and one watermark per this many pages.
pub const READ_AHEAD_PAGES: usize = 8;

/// Read-ahead entries (a chunk being read, or a page of one) kept per store: room for several
/// catching-up readers; the oldest entry is dropped to make room.
pub const READ_AHEAD_SLOTS: usize = 32;

/// A chunk read ahead keeps pages only up to this many bytes of events, so read-ahead memory
/// stays within `READ_AHEAD_SLOTS` times this.
pub const READ_AHEAD_MAX_BYTES: usize = 4 * 1024 * 1024;

/// How often the notifier looks whether this store's appends are readable yet before it
/// sends its `NOTIFY`.
pub const NOTIFY_SETTLE_POLL_MS: u64 = 2;

/// Backoff bounds for reconnecting the `LISTEN` connection.
pub const LISTEN_RECONNECT_MIN_MS: u64 = 100;
/// See [`LISTEN_RECONNECT_MIN_MS`].
pub const LISTEN_RECONNECT_MAX_MS: u64 = 5_000;

/// Most rows an index-driven filtered read on PostgreSQL checks one by one (a filter on a
/// category and an event type walks one index and checks the other field per row) in one
/// call. Each check is a lookup by position, dearer than a window scan's row, hence the
/// smaller bound.
pub const READ_INDEXED_CHECK_MAX_ROWS: usize = 20_000;

// Every key of a filter gets a share of at least a few hundred rows.
const _: () = assert!(READ_INDEXED_CHECK_MAX_ROWS / core::FILTER_MAX_TERMS >= 256);
const _: () = assert!(READ_INDEXED_CHECK_MAX_ROWS >= core::READ_PAGE_MAX_EVENTS);
const _: () = assert!(READ_AHEAD_MAX_EVENTS * READ_AHEAD_PAGES <= core::READ_PAGE_MAX_EVENTS);
const _: () = assert!(LISTEN_RECONNECT_MIN_MS <= LISTEN_RECONNECT_MAX_MS);
const _: () = assert!(APPEND_BATCH_MAX_EVENTS >= core::APPEND_EVENTS_MAX);
const _: () = assert!(APPEND_BATCH_MAX_BYTES >= core::APPEND_MAX_BYTES);
const _: () = assert!(SCHEMA_NAME_MAX_BYTES + "strata_".len() <= 63);

/// The schema used when none is configured (a name, not a bound).
pub const DEFAULT_SCHEMA: &str = "strata";

/// Most hosts a database URL may list (`postgres://u@h1:p1,h2:p2/db`). Connecting tries them
/// in order, each up to the connect timeout, so the list bounds how long a failed connect
/// takes; a primary and a few standbys fit.
pub const DATABASE_HOSTS_MAX: usize = 8;

/// Backoff bounds for trying a URL's hosts again after the current one was lost (see
/// `hosts.rs`). The first retry is quick because a promotion usually takes about a second;
/// the cap keeps the wait after a promotion under a second and a half while costing each
/// server at most one connection per second during an outage.
pub const FAILOVER_PROBE_MIN_MS: u64 = 100;
/// See [`FAILOVER_PROBE_MIN_MS`].
pub const FAILOVER_PROBE_MAX_MS: u64 = 1_000;

const _: () = assert!(FAILOVER_PROBE_MIN_MS <= FAILOVER_PROBE_MAX_MS);
/// How often an append is run again on another connection after its connection was found lost
/// (ended by `pg_terminate_backend`, a server restart, a network failure). Once: the retry's
/// connection is new, or was checked with a ping because it sat idle through the loss, so a
/// second loss means the server itself is going away, and the caller gets
/// `AppendError::Unavailable` (which it may retry with the same event ids).
pub const APPEND_RECONNECT_RETRIES_MAX: u32 = 1;

/// Most committed rows a read of `$all` walks down the position index from the top looking
/// for the readable head (the newest row whose transaction is below the watermark). Rows of
/// appends in flight are invisible and do not count; the rows that do are those committed
/// while an older transaction is still open, which under load is a batch or so, so the first
/// row or two usually is the head. Past this many, the head is searched for in O(log n) probes
/// (`strata_readable_head`) instead, so a transaction held open elsewhere in the cluster does
/// not make every read walk every row appended since. 64 rows cost some tens of microseconds
/// and hold a full group-commit batch of single-event appends (`APPEND_BATCH_MAX_APPENDS`).
pub const WATERMARK_SCAN_ROWS: usize = 64;

const _: () = assert!(WATERMARK_SCAN_ROWS >= APPEND_BATCH_MAX_APPENDS);
