//! Every bound Strata enforces, in one place.
//!
//! Each limit says why its value was chosen. Exceeding a limit on input is a typed error
//! ([`crate::LimitError`]) and nothing is written. Relations between limits are checked at
//! compile time at the bottom of this file.

/// Longest stream id, in bytes of UTF-8. Long enough for `tenant-aggregate-<uuid>` ids with
/// room to spare; short enough that a stream name fits in one index entry and a log line.
pub const STREAM_ID_MAX_BYTES: usize = 255;

/// Longest event type name, in bytes. Event types are stable names chosen by the application.
pub const EVENT_TYPE_MAX_BYTES: usize = 255;

/// Longest content type, in bytes (`application/json`, `application/octet-stream`, ...).
pub const CONTENT_TYPE_MAX_BYTES: usize = 127;

/// Largest event payload (`data`), in bytes. Events are facts, not blobs: 1 MiB is far above
/// any domain event and keeps one event well inside one write batch.
pub const EVENT_DATA_MAX_BYTES: usize = 1024 * 1024;

/// Largest metadata document, in bytes.
pub const EVENT_METADATA_MAX_BYTES: usize = 64 * 1024;

/// Deepest nesting of arrays and objects in a JSON payload or a metadata document (an array of
/// numbers is one level). Readers parse an event inside a page (the page, its `events` array and
/// the event are three levels more), and serde_json, which the client, the CLI and the toolkit
/// use, refuses documents nested past 128 levels: 64 leaves room for the page and for any
/// envelope a client wraps events in, and is far beyond what a domain event nests. A store
/// refuses deeper data on append rather than keep an event that readers then cannot parse.
pub const JSON_NESTING_MAX_DEPTH: usize = 64;

/// Most events in one append call. An append is atomic, so it is held in memory whole.
pub const APPEND_EVENTS_MAX: usize = 10_000;

/// Most bytes (payload plus metadata, summed over events) in one append call.
pub const APPEND_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Most events a single read call returns. Reading a 10,000-event stream is one page.
pub const READ_PAGE_MAX_EVENTS: usize = 10_000;

/// Page size a subscription reads from storage while catching up; also the most events a
/// subscription holds in memory at once.
pub const SUBSCRIPTION_PAGE_EVENTS: usize = 512;

/// Most stream or category entries in one page of a listing.
pub const LIST_PAGE_MAX_ENTRIES: usize = 1_000;

/// Most event types and most categories in one read filter.
pub const FILTER_MAX_TERMS: usize = 64;

/// Longest stream-id prefix in a filter; a prefix longer than any id cannot match.
pub const FILTER_PREFIX_MAX_BYTES: usize = STREAM_ID_MAX_BYTES;

const _: () = assert!(SUBSCRIPTION_PAGE_EVENTS <= READ_PAGE_MAX_EVENTS);
const _: () = assert!(APPEND_EVENTS_MAX <= READ_PAGE_MAX_EVENTS);
const _: () = assert!(EVENT_DATA_MAX_BYTES + EVENT_METADATA_MAX_BYTES <= APPEND_MAX_BYTES);
// Lengths are written to disk as u16 (names) and u32 (payloads).
const _: () = assert!(STREAM_ID_MAX_BYTES <= u16::MAX as usize);
const _: () = assert!(EVENT_TYPE_MAX_BYTES <= u16::MAX as usize);
const _: () = assert!(CONTENT_TYPE_MAX_BYTES <= u8::MAX as usize);
const _: () = assert!(APPEND_MAX_BYTES <= u32::MAX as usize);

/// How long a caught-up subscription waits for a wake-up before it looks at storage anyway.
/// Wake-ups are the fast path; this is the fallback when one is lost (a dropped notification
/// connection, for example), so it bounds delivery latency in the worst case.
pub const SUBSCRIPTION_POLL_INTERVAL_MS: u64 = 500;

/// Most non-matching events a filtered read examines in one call before it returns what it
/// has with a cursor to continue from. Bounds the work of one call on a sparse filter.
pub const READ_SCAN_MAX_EVENTS: usize = 100_000;

const _: () = assert!(READ_SCAN_MAX_EVENTS >= READ_PAGE_MAX_EVENTS);

/// Largest snapshot, in bytes. A snapshot is one aggregate's state; 16 MiB is far beyond any
/// sane aggregate and still bounded.
pub const SNAPSHOT_MAX_BYTES: usize = 16 * 1024 * 1024;

// --- The HTTP API's read pages ---
//
// The server cuts its read pages at these bounds and an HTTP client sizes its requests and its
// answer buffer by them, so they live here, where both sides find them; the server's other
// bounds are in `strata_server::limits`.

/// Most events in one HTTP read page. Lower than the store's page: a page is one JSON
/// document held in memory while it is written.
pub const SERVER_PAGE_MAX_EVENTS: usize = 1_000;

/// Most payload and metadata bytes in one read page; a page is cut short (with a next link)
/// before it would pass this, so 1,000 events of 1 MiB never become one 1 GiB response.
pub const SERVER_PAGE_MAX_BYTES: usize = 16 * 1024 * 1024;

const _: () = assert!(SERVER_PAGE_MAX_EVENTS <= READ_PAGE_MAX_EVENTS);
// One event at the payload limit fits in one read page.
const _: () = assert!(EVENT_DATA_MAX_BYTES + EVENT_METADATA_MAX_BYTES <= SERVER_PAGE_MAX_BYTES);

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

/// How long a read-model connection waits for SQLite's write lock before it reports the
/// database busy. Several projections share one file; a batch holds the lock for
/// milliseconds, so seconds of waiting means something is stuck.
pub const PROJECTION_SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;

/// Most projections one runner manages. Each costs a task and a connection.
pub const PROJECTIONS_MAX: usize = 256;

const _: () = assert!(PROJECTION_BATCH_MAX_EVENTS <= READ_PAGE_MAX_EVENTS);
const _: () = assert!(PROJECTION_BATCH_MAX_EVENTS > 0);
const _: () = assert!(PROJECTION_RETRY_BACKOFF_MS_INITIAL <= PROJECTION_RETRY_BACKOFF_MS_MAX);

// --- The toolkit (`strata`) ---

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
pub const HISTORY_PAGE_MAX_EVENTS: usize = READ_PAGE_MAX_EVENTS;

const _: () = assert!(LOAD_PAGE_EVENTS <= READ_PAGE_MAX_EVENTS);
const _: () = assert!(LOAD_PAGE_EVENTS > 0);
const _: () = assert!(COMMAND_RETRIES_DEFAULT <= COMMAND_RETRIES_MAX);
const _: () = assert!(AGGREGATE_CACHE_ENTRIES_DEFAULT <= AGGREGATE_CACHE_ENTRIES_MAX);

// --- The benchmarks' HTTP load generator (`strata bench --http`) ---

/// Bytes the load generator reads from a connection at a time (an append's answer is about
/// 200 bytes; a longer one is read in several steps).
pub const BENCH_HTTP_READ_BUFFER_BYTES: usize = 4096;

/// The load generator's pause after a failed connect, so a server that is down is not
/// hammered.
pub const BENCH_HTTP_RECONNECT_DELAY_MS: u64 = 10;
