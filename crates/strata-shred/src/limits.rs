//! The bounds of crypto-shredding, each beside the reason for its value.

/// Longest subject id, in bytes of UTF-8. A subject is an id the application chooses (a
/// customer id, a user id); 255 bytes holds any of them, as a stream id does.
pub const SUBJECT_MAX_BYTES: usize = 255;

/// Most personal fields one event type's schema names. Each costs a seal per event; 32 covers
/// any domain event's personal data many times over.
pub const SCHEMA_FIELDS_MAX: usize = 32;

/// Longest JSON pointer in a schema, in bytes.
pub const POINTER_MAX_BYTES: usize = 255;

/// Most event types with a schema. Schemas are held in memory and read at open.
pub const SCHEMAS_MAX: usize = 4096;

/// Subject keys kept unwrapped in memory (32 bytes each, with their derived keys about 200
/// bytes): a read or append of a subject in the cache costs no file or database read. A
/// cache this size is about 13 MiB; it is cleared whole when full (appends and reads of one
/// subject come in bursts, so a rough bound is enough).
pub const KEY_CACHE_ENTRIES: usize = 65_536;

/// Longest master key text read from a file, a variable or a command, in bytes: 64 hex
/// digits and some white space.
pub const MASTER_KEY_TEXT_MAX_BYTES: usize = 1024;

/// How often, at most, a store looks for schemas registered and subjects forgotten by other
/// processes sharing its backend (a PostgreSQL store served by several servers): once per
/// append or read that comes this long after the last look. The bound on how long another
/// process may still open a forgotten subject's fields from its key cache.
pub const SYNC_INTERVAL_MS: u64 = 250;

/// Most data subjects one sealed snapshot names (16 bytes each in its header, and a key each
/// to derive its key). An aggregate's state holds the data of a few people; one that holds
/// more is not snapshotted, and loads by replay.
pub const SNAPSHOT_SUBJECTS_MAX: usize = 1024;
