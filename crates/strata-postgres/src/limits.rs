//! Bounds specific to the PostgreSQL backend. The shared limits are in
//! [`strata_core::limits`].

/// The schema used when none is configured.
pub const DEFAULT_SCHEMA: &str = "strata";

/// Longest schema name. The notification channel is `strata_<schema>` and PostgreSQL
/// identifiers are at most 63 bytes.
pub const SCHEMA_NAME_MAX_BYTES: usize = 48;

/// Most appends grouped into one transaction. Large enough that 16+ concurrent writers share a
/// commit; small enough that one failed batch (retried append by append) costs little.
pub const APPEND_BATCH_MAX_APPENDS: usize = 64;

/// Most events in one batch transaction: one append's maximum, so a batch never holds more in
/// memory than the largest single append.
pub const APPEND_BATCH_MAX_EVENTS: usize = strata_core::limits::APPEND_EVENTS_MAX;

/// Most payload bytes in one batch transaction, likewise one append's maximum.
pub const APPEND_BATCH_MAX_BYTES: usize = strata_core::limits::APPEND_MAX_BYTES;

/// Appends waiting for a writer. Callers beyond this wait to enqueue (back-pressure).
pub const APPEND_QUEUE_MAX: usize = 1024;

/// How often one append is retried after losing a race (a unique violation or deadlock)
/// before it gives up with a storage error. Each retry re-reads the stream, so only a stream
/// that is appended to without pause by others can exhaust this.
pub const APPEND_RACE_RETRIES_MAX: u32 = 100;

/// Longest a read waits for this store's own committed appends to become readable in `$all`
/// (read-your-writes). They become readable when every older transaction in the cluster has
/// ended; a transaction left open elsewhere makes a read return without them after this.
pub const READ_YOUR_WRITES_WAIT_MS: u64 = 1_000;

/// Shortest time between two cross-process `NOTIFY`s. Each NOTIFY is a small transaction that
/// PostgreSQL serialises at commit, so they are coalesced: at most one per this interval.
pub const NOTIFY_MIN_INTERVAL_MS: u64 = 10;

/// Largest forward page that is read ahead: the subscription page size, so catch-ups overlap
/// reading the next page with delivering the current one.
pub const READ_AHEAD_MAX_EVENTS: usize = strata_core::limits::SUBSCRIPTION_PAGE_EVENTS;

/// Pages read ahead in one query: one round trip and one watermark per this many pages.
pub const READ_AHEAD_PAGES: usize = 4;

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

const _: () =
    assert!(READ_AHEAD_MAX_EVENTS * READ_AHEAD_PAGES <= strata_core::limits::READ_PAGE_MAX_EVENTS);
const _: () = assert!(LISTEN_RECONNECT_MIN_MS <= LISTEN_RECONNECT_MAX_MS);
const _: () = assert!(APPEND_BATCH_MAX_EVENTS >= strata_core::limits::APPEND_EVENTS_MAX);
const _: () = assert!(APPEND_BATCH_MAX_BYTES >= strata_core::limits::APPEND_MAX_BYTES);
const _: () = assert!(SCHEMA_NAME_MAX_BYTES + "strata_".len() <= 63);
