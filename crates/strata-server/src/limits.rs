//! The server's bounds: what a request may hold (body size, events per append, the default
//! page, subscriptions per token), tokens, connections, request bodies and subscriber buffers.
//! Each value here is the default of a `ServerConfig` field where one exists; relations are
//! checked at compile time. The bounds of the event model (payload sizes, filters, the store's
//! pages) and the most events and bytes of an HTTP read page, which clients rely on too
//! ([`SERVER_PAGE_MAX_EVENTS`](core::SERVER_PAGE_MAX_EVENTS),
//! [`SERVER_PAGE_MAX_BYTES`](core::SERVER_PAGE_MAX_BYTES)), are in [`strata_core::limits`].

use strata_core::limits as core;

/// Largest HTTP request body, in bytes. Room for one event at
/// [`EVENT_DATA_MAX_BYTES`](core::EVENT_DATA_MAX_BYTES) even when its JSON is escaped or
/// base64-encoded, or many small events; a bigger batch is split by the client. The server reads
/// a body whole before it appends (an append is atomic), so this also bounds the memory one
/// request can hold.
pub const SERVER_REQUEST_BODY_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Most events in one HTTP append. The same bound as the store's own.
pub const SERVER_APPEND_EVENTS_MAX: usize = core::APPEND_EVENTS_MAX;

/// Most appends in one batch request (`POST /streams`). Each is checked before any is
/// written, so this bounds the work done before the first write.
pub const SERVER_BATCH_APPENDS_MAX: usize = 1_000;

/// Most events in one batch request, over all its appends: as many as one append may hold.
pub const SERVER_BATCH_EVENTS_MAX: usize = core::APPEND_EVENTS_MAX;

/// Streams of one batch request appended to at once; the rest wait for one to finish. Enough
/// for the store to commit a batch of single-event appends in few group commits, without one
/// request taking the whole append queue (or, on PostgreSQL, the whole connection pool).
pub const SERVER_BATCH_STREAMS_IN_FLIGHT_MAX: usize = 64;

/// Events in a read page when the client does not say.
pub const SERVER_PAGE_DEFAULT_EVENTS: usize = 100;

/// Most open server-sent-event subscriptions per API token (all anonymous callers count as
/// one token). Each costs a task, a cursor and a buffer of [`SERVER_SSE_BUFFER_EVENTS`]; 128
/// leaves room for the benchmark's 100 subscribers of one token.
pub const SERVER_SUBSCRIPTIONS_PER_TOKEN_MAX: usize = 128;

/// Most open subscriptions in one server, across tokens.
pub const SERVER_SUBSCRIPTIONS_MAX: usize = 4_096;

/// Events buffered between a subscription and its HTTP connection. Two storage pages: the
/// subscription can read ahead one page while the connection writes the other.
pub const SERVER_SSE_BUFFER_EVENTS: usize = 2 * core::SUBSCRIPTION_PAGE_EVENTS;

/// How long a subscriber's buffer may stay full before the subscriber is disconnected with
/// its resume position. Long enough for a GC pause or a slow network; short enough that a
/// stuck client does not hold a slot for long.
pub const SERVER_SSE_SLOW_SUBSCRIBER_TIMEOUT_MS: u64 = 10_000;

/// Interval of server-sent-event keep-alive comments: under the 30 to 60 s idle timeouts of
/// common proxies and load balancers.
pub const SERVER_SSE_KEEP_ALIVE_INTERVAL_MS: u64 = 15_000;

/// Most configured API tokens.
pub const SERVER_TOKENS_MAX: usize = 10_000;

/// Most stream-prefix grants of one token.
pub const SERVER_TOKEN_GRANTS_MAX: usize = 256;

/// How long a stopping server waits for open requests and subscriptions before it closes them.
pub const SERVER_SHUTDOWN_GRACE_MS: u64 = 5_000;

/// Bytes in a projection's name (the server refuses longer names in paths).
pub const PROJECTION_NAME_MAX_BYTES: usize = 128;

const _: () = assert!(SERVER_APPEND_EVENTS_MAX <= core::APPEND_EVENTS_MAX);
const _: () = assert!(SERVER_BATCH_EVENTS_MAX <= core::APPEND_EVENTS_MAX);
const _: () = assert!(SERVER_PAGE_DEFAULT_EVENTS <= core::SERVER_PAGE_MAX_EVENTS);
// One event at the payload limit fits in one request, even base64-encoded (4/3) with metadata.
const _: () = assert!(
    core::EVENT_DATA_MAX_BYTES / 3 * 4 + core::EVENT_METADATA_MAX_BYTES
        < SERVER_REQUEST_BODY_MAX_BYTES
);
const _: () = assert!(SERVER_SUBSCRIPTIONS_PER_TOKEN_MAX <= SERVER_SUBSCRIPTIONS_MAX);
const _: () = assert!(SERVER_SSE_BUFFER_EVENTS >= core::SUBSCRIPTION_PAGE_EVENTS);

/// Default for `header_read_timeout_ms`: how long a connection may take to send a whole
/// request head, counted from its accept (the first request) or from the first byte of the
/// head (later requests). Ten seconds is ample for a few KiB of headers over a slow mobile link,
/// and frees the slot of a connection that sends nothing (or a byte at a time) quickly.
pub const SERVER_HEADER_READ_TIMEOUT_MS: u64 = 10_000;

/// Default for `keep_alive_idle_timeout_ms`: how long a kept-alive connection may wait,
/// between the end of one answer and the first byte of the next request, before the server
/// closes it. Longer than the 60 s idle timeouts of common load balancers and proxies, so the
/// balancer, which knows when it will reuse a connection, closes it first and never sends a
/// request into a connection the server is closing (nginx's `keepalive_timeout` is 75 s too).
pub const SERVER_KEEP_ALIVE_IDLE_TIMEOUT_MS: u64 = 75_000;

/// Default for `connections_max`: open connections served at once. Room for every subscription
/// the server allows (`SERVER_SUBSCRIPTIONS_MAX`, each holding a connection) and as many again
/// for requests. An idle connection costs a task and an 8 KiB read buffer, 64 MiB at the cap.
/// The process needs an open-file limit above this (plus the store's files); a connection past
/// the cap is answered `503 overloaded`.
pub const SERVER_CONNECTIONS_MAX: usize = 8_192;

/// Connections past `connections_max` that are answered `503 overloaded` at once. Each is held
/// only until its request head arrives (or the header read timeout); beyond this many the
/// server closes new connections without an answer rather than spend more on refusing them.
pub const SERVER_REJECTING_CONNECTIONS_MAX: usize = 256;

/// The `Retry-After` of a `503 overloaded` answer, in seconds: a connection or a body budget
/// frees up as soon as one request finishes, so a prompt retry is worth it.
pub const SERVER_RETRY_AFTER_S: u32 = 1;

/// The `Retry-After` of a `503 unavailable` a retry may cure, in seconds: a PostgreSQL
/// connection that was lost or refused usually comes back within a second (a restart, a
/// failover, a terminated session), and an append retried with the same event ids is applied
/// at most once.
pub const UNAVAILABLE_RETRY_AFTER_S: u32 = 1;

/// Longest request head (request line and headers), which also bounds a connection's read
/// buffer: room for a URI at the HTTP parser's own 64 KiB limit plus ordinary headers. A
/// longer head is answered `431 headers_too_large`.
pub const SERVER_REQUEST_HEAD_MAX_BYTES: usize = 96 * 1024;

/// Default for `request_bodies_in_flight_max_bytes`: request-body bytes the server holds at
/// once, over every request. A body is charged its `Content-Length` before it is read (or as it
/// arrives without one) and released when its request is answered; a body that does not fit is
/// answered `503 overloaded` at once. An append holds about twice its body while it is parsed
/// and written, so 64 MiB (four bodies at the 16 MiB maximum) keeps appends near 150 MiB
/// however many clients send at once.
pub const SERVER_REQUEST_BODIES_IN_FLIGHT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Default for `request_body_read_timeout_ms`: how long a request body may take to arrive
/// once its head has. A 16 MiB body needs a 0.3 MB/s link to make it; a slower sender would
/// hold its share of the body budget from everyone else.
pub const SERVER_REQUEST_BODY_READ_TIMEOUT_MS: u64 = 60_000;

/// How long the accept loop waits after a failed accept (out of file descriptors, say) before
/// it tries again, so that it does not spin.
pub const SERVER_ACCEPT_ERROR_BACKOFF_MS: u64 = 50;

/// Default for `sse_buffer_max_bytes`: the bytes of events waiting for one subscriber's
/// connection. Room for a few of the largest events (a 1 MiB payload is about 1.4 MB as an SSE
/// frame), or thousands of ordinary ones; a subscriber that leaves it full for the
/// slow-subscriber timeout is disconnected with its resume point.
pub const SERVER_SSE_BUFFER_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Default for `sse_buffers_total_max_bytes`: the bytes waiting for every subscriber's
/// connection together. A subscriber that finds it spent waits (up to the slow-subscriber
/// timeout) for stalled ones to be disconnected, so a crowd of non-reading subscribers costs at
/// most this, not their number times `sse_buffer_max_bytes`.
pub const SERVER_SSE_BUFFERS_TOTAL_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Default for `sse_fan_out_max_bytes`: the bytes of recent batches the live fan-out keeps for
/// subscribers that have not taken them yet. Past it the oldest are dropped and a subscriber
/// that still needed one reads from storage instead (which costs it time, not the server
/// memory).
pub const SERVER_SSE_FAN_OUT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Most bytes of events in one batch of the live fan-out (a batch holds at least one event).
/// Small against `SERVER_SSE_FAN_OUT_MAX_BYTES`, so dropping the oldest batch frees little at a
/// time and a subscriber holds at most this of a batch it is working through.
pub const SERVER_SSE_FAN_OUT_BATCH_MAX_BYTES: usize = 1024 * 1024;

/// Longest a `GET /projections/{name}?atLeast=P&wait=…` may wait for the projection to pass
/// `P`. Read-your-writes waits are short (an async projection is usually milliseconds behind);
/// a longer one holds a connection for a caller that should rather answer "not yet".
pub const PROJECTION_WAIT_MAX_MS: u64 = 10_000;

const _: () =
    assert!(SERVER_SSE_FAN_OUT_BATCH_MAX_BYTES as u64 * 16 <= SERVER_SSE_FAN_OUT_MAX_BYTES);
const _: () = assert!(SERVER_SSE_BUFFER_MAX_BYTES <= SERVER_SSE_BUFFERS_TOTAL_MAX_BYTES);
const _: () = assert!(SERVER_CONNECTIONS_MAX >= 2 * SERVER_SUBSCRIPTIONS_MAX);
const _: () =
    assert!(SERVER_REQUEST_BODIES_IN_FLIGHT_MAX_BYTES >= SERVER_REQUEST_BODY_MAX_BYTES as u64);
// The HTTP parser refuses URIs past 64 KiB itself; the head bound leaves room for one.
const _: () = assert!(SERVER_REQUEST_HEAD_MAX_BYTES > u16::MAX as usize);
const _: () = assert!(SERVER_HEADER_READ_TIMEOUT_MS <= SERVER_KEEP_ALIVE_IDLE_TIMEOUT_MS);
