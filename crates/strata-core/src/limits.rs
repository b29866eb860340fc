//! The bounds of the event model and of the [`EventStore`](crate::EventStore) and
//! [`SnapshotStore`](crate::SnapshotStore) contracts, which every backend enforces alike: the
//! sizes of stream ids, event types, payloads and metadata, JSON nesting, appends, read and
//! listing pages, filters, subscriptions and snapshots; and the read pages of the HTTP API,
//! which the server and its clients share.
//!
//! Each limit says why its value was chosen. Exceeding a limit on input is a typed error
//! ([`crate::LimitError`]) and nothing is written. Relations between limits are checked at
//! compile time. Each crate keeps the bounds of its own machinery in its own `limits` module:
//! the embedded log's in `strata_log::limits`, PostgreSQL's in `strata_postgres::limits`, the
//! server's in `strata_server::limits`, the HTTP client's in `strata_client::limits`, the
//! toolkit's and projections' in `strata::limits`, the benchmark's in `strata_bench::limits`.

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
