//! The client's limits, and why each value was chosen. The server's are in `strata-server`'s
//! `limits.rs`; the bounds of the event model and of a read page that this client sizes its
//! answers by (`SERVER_PAGE_MAX_EVENTS`, `SERVER_PAGE_MAX_BYTES`) are in `strata_core::limits`.

use strata_core::limits::{
    EVENT_DATA_MAX_BYTES, EVENT_METADATA_MAX_BYTES, SERVER_PAGE_MAX_BYTES, SERVER_PAGE_MAX_EVENTS,
};

/// Room for an event's fields besides its payload and metadata (ids, names, times; names may
/// be JSON-escaped).
const EVENT_FIELDS_MAX_BYTES: usize = 4 * 1024;

/// The largest JSON event a server sends: a payload of the largest size in base64, the
/// largest metadata, and the other fields.
const EVENT_JSON_MAX_BYTES: usize =
    EVENT_DATA_MAX_BYTES.div_ceil(3) * 4 + EVENT_METADATA_MAX_BYTES + EVENT_FIELDS_MAX_BYTES;

/// The largest page a server sends to this client, which asks for at most
/// `SERVER_PAGE_MAX_EVENTS`: the server stops adding events once their payloads pass
/// `SERVER_PAGE_MAX_BYTES` (the first event always goes in), but it counts metadata by entry,
/// so every event may still carry the largest metadata.
const PAGE_JSON_MAX_BYTES: usize = (SERVER_PAGE_MAX_BYTES + EVENT_DATA_MAX_BYTES).div_ceil(3) * 4
    + SERVER_PAGE_MAX_EVENTS * (EVENT_METADATA_MAX_BYTES + EVENT_FIELDS_MAX_BYTES);

/// Most bytes of one answer the client reads: above the largest page (about 90 MiB, all of it
/// metadata and base64 at the limits), so a real page always fits, while a broken or hostile
/// answer cannot take the client's memory.
pub const ANSWER_MAX_BYTES: usize = 128 * 1024 * 1024;
const _: () = assert!(ANSWER_MAX_BYTES >= PAGE_JSON_MAX_BYTES);

/// Most bytes of one server-sent event the client buffers while it waits for the blank line
/// that ends it: the largest event (about 1.4 MiB), with room for the `event:` and `id:`
/// lines.
pub const SSE_FRAME_MAX_BYTES: usize = 4 * 1024 * 1024;
const _: () = assert!(SSE_FRAME_MAX_BYTES >= EVENT_JSON_MAX_BYTES + 1024);

/// How long a connection attempt may take by default: a server on the network answers in well
/// under a second; ten is for a loaded one, and shorter than a person's patience.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;

/// Idle connections kept open per server: the HTTP benchmark runs 64 writers and 100
/// subscribers on one client each; 256 keeps a busy program from reconnecting on every
/// request, and bounds the sockets an idle one holds.
pub const IDLE_CONNECTIONS_PER_HOST_MAX: usize = 256;

/// Attempts in a row a [`Follow`](crate::Follow) makes to reach the server before it gives
/// up: with [`FOLLOW_CONNECT_RETRY_DELAY_MS`] between them, about ten seconds, long enough for
/// a server restart.
pub const FOLLOW_CONNECT_ATTEMPTS_MAX: u32 = 50;

/// The pause between two failed connection attempts of a [`Follow`](crate::Follow).
pub const FOLLOW_CONNECT_RETRY_DELAY_MS: u64 = 200;

/// The pause before a [`Follow`](crate::Follow) reconnects after its connection dropped or the
/// server dropped it as a slow subscriber: short, since the server is up, but not a busy loop.
pub const FOLLOW_RESUME_DELAY_MS: u64 = 50;

/// How long the client first waits between two looks at a running scavenge
/// (`GET /admin/scavenge`); each wait doubles, up to [`SCAVENGE_POLL_MAX_MS`].
pub const SCAVENGE_POLL_MIN_MS: u64 = 50;

/// The longest wait between two looks at a running scavenge: a second keeps a progress bar
/// moving while a long scavenge costs the server one small request a second.
pub const SCAVENGE_POLL_MAX_MS: u64 = 1_000;
