//! The embedded engine's bounds: the writer's queue and group-commit batches, segment sizes
//! and preallocation, and how reads are split across threads. Each says why its value was
//! chosen; relations between them are checked at compile time at the bottom. The bounds of
//! the event model (payload sizes, pages, filters) are core's, in [`strata_core::limits`].

use strata_core::limits as core;

/// Appends waiting for the writer. Callers beyond this wait (back-pressure) instead of
/// queueing without bound. Large enough that 64+ concurrent writers never wait on the queue.
pub const WRITER_QUEUE_MAX_APPENDS: usize = 4096;

/// Most appends the writer combines into one write + fdatasync (group commit).
pub const WRITER_BATCH_MAX_APPENDS: usize = 1024;

/// Most bytes the writer combines into one write + fdatasync. Past a few MiB, a bigger batch
/// no longer amortises the fsync better but delays every waiter in it.
pub const WRITER_BATCH_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Longest the writer waits, after answering a batch, for those appenders to send their next
/// append so that it joins the next batch. Without it, concurrent appenders split into two
/// cohorts that take turns, each batch holding half of them. Only spent while appenders that
/// were just answered have not come back; an idle store never waits.
pub const WRITER_LINGER_US: u64 = 200;

/// Zeros the writer lays down ahead of the tail segment's end, so that most appends overwrite
/// bytes the file already has: their fdatasync then flushes data only, not a new file size
/// (on ext4 and XFS, growing a file costs a journal commit per fdatasync). Recovery cuts the
/// zeros off again; the tail is never preallocated past the segment's maximum size.
pub const SEGMENT_PREALLOCATE_BYTES: u64 = 1024 * 1024;

/// Events from which one read (a stream or `$all` page) is split across threads.
pub const READ_PARALLEL_MIN_EVENTS: usize = 2_048;

/// Most threads one read is split across (and never more than the machine's cores).
pub const READ_PARALLEL_MAX_THREADS: usize = 4;

/// Most threads reading split reads at once, over all the reads of a process: a read that
/// finds fewer free is split across those, or read on its caller's thread when none is.
pub const READ_PARALLEL_THREADS_TOTAL_MAX: usize = 8;

const _: () = assert!(READ_PARALLEL_MAX_THREADS <= READ_PARALLEL_THREADS_TOTAL_MAX);

/// Entries (or names) an index checkpoint encodes per hold of the store's state lock: about
/// 640 KiB of index file, a fraction of a millisecond, which is as long as it can delay an
/// append's publication or a read. The whole index is encoded in such chunks, so a checkpoint
/// of a large store never stalls appends for the length of its encode.
pub const INDEX_ENCODE_CHUNK_ENTRIES: usize = 16_384;

/// Rounds of reading a `$all` walk may take outside the state lock: a walk along category or
/// type postings runs under the lock on the blocks it has, notes those it lacks, and gives
/// up; they are read without the lock and the walk runs again (see
/// [`crate::postings::Blocks`]). Past this many rounds, or [`WALK_FETCH_BYTES_MAX`], the
/// walk reads what it still lacks under the lock, as a bound on the work of running again.
pub const WALK_FETCH_ROUNDS_MAX: usize = 64;

/// Bytes one `$all` walk keeps after reading them outside the state lock: a safety net (a
/// round reads one range, at most 60 KiB of postings or 80 KiB of entries, so the rounds'
/// bound comes first, near 5 MiB).
pub const WALK_FETCH_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Blocks of postings a walk that lacks one reads on each side of it, itself included: those
/// before it and after it in the same list (up to 15 blocks, 60 KiB), which a walk backward or
/// forward reads next. One read and one round of the walk instead of fifteen.
pub const WALK_READAHEAD_BLOCKS: usize = 8;

/// Entries a walk that lacks a run of them reads at once, from the run on in the walk's
/// direction (80 KiB): eight runs of 256 of a walk over every position, or as many of the
/// entries a walk along a category's or type's positions tests one at a time.
pub const WALK_READAHEAD_ENTRIES: usize = 2048;

/// Default size at which a segment is sealed and a new one started.
pub const SEGMENT_MAX_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;

/// Smallest segment size a store may be configured with (tests use small segments to
/// exercise rotation).
pub const SEGMENT_MAX_BYTES_MIN: u64 = 4 * 1024;

/// Smallest `segment_max_bytes` for which the embedded store reads through memory maps of its
/// segment files and their index files (`LogConfig::map_reads`): two maps per sealed segment
/// stay for the store's life, and the kernel bounds a process's maps (`vm.max_map_count`,
/// 65,530 by default), so 1 MiB segments reach that bound only past 32 GiB of log (and a file
/// that cannot be mapped is read with `pread`).
pub const MAP_READS_SEGMENT_MIN_BYTES: u64 = 1024 * 1024;

/// Largest segment: 256 GiB. Record locations keep 40 bits of offset, and a segment must hold
/// fewer than 2^32 events (the in-memory event-id tables index a segment's ids with 4 bytes):
/// a record takes at least 72 bytes, so 2^38 bytes hold at most 3.8 billion.
pub const SEGMENT_MAX_BYTES_MAX: u64 = 1 << 38;

/// Bytes of an archived segment fetched from the archive at a time, and kept in the archive
/// cache as one block (`crate::archived`): large enough that a stream's neighbouring events
/// and a page of `$all` come in one request (an object store answers a request in
/// milliseconds whatever its size up to a few MiB), small enough that a lone event does not
/// fetch much it will not read.
pub const ARCHIVE_READ_BLOCK_BYTES: u64 = 1024 * 1024;

/// Blocks a read going through an archived segment fetches at once, the one it needs first
/// (in one request when they follow one another): an object store's cost is per request
/// more than per byte, so a long read waits for one round trip per this many blocks (never
/// more than half the cache). 8 MiB, the size of the archive's upload and download parts.
pub const ARCHIVE_READ_AHEAD_BLOCKS: u64 = 8;

/// Default bound of the archive cache, in bytes ([`crate::LogConfig::archive_cache_bytes`]):
/// 64 blocks, the archived records recently read by streams and scans.
pub const ARCHIVE_CACHE_BYTES_DEFAULT: u64 = 64 * ARCHIVE_READ_BLOCK_BYTES;

/// Smallest archive cache: one block, so that a read always has the block it fetched.
pub const ARCHIVE_CACHE_BYTES_MIN: u64 = ARCHIVE_READ_BLOCK_BYTES;

/// Last bytes of an archived segment its stub keeps: open checks a segment against its index
/// file by reading its last record, and a stub that holds it lets open do that without the
/// archive (a larger last record is fetched). One page: most records are far smaller.
pub const ARCHIVED_STUB_TAIL_BYTES: u64 = 4096;

/// Most bytes of a scavenged segment's removed runs (read on open) its stub keeps; larger
/// ones are read from the archive on open.
pub const ARCHIVED_STUB_RUNS_MAX_BYTES: u64 = 64 * 1024;

/// Default pace of a scavenge, in bytes of segment data read per second
/// ([`crate::LogConfig::scavenge_bytes_per_sec`]; 0 is unpaced): 256 MiB/s. Unpaced, a
/// scavenge read 585–672 MiB/s on the benchmark machine (2 cores, one disk) and appends' p99
/// while it ran was 4.6–7.4× their p99 without it; at this pace, 2.75–2.94×, the rate still
/// above the 200 MB/s a scavenge must keep (`cargo bench -p strata-bench --bench
/// scavenge_log`, three alternating runs each).
pub const SCAVENGE_BYTES_PER_SEC_DEFAULT: u64 = 256 << 20;

const _: () = assert!(ARCHIVE_CACHE_BYTES_MIN <= ARCHIVE_CACHE_BYTES_DEFAULT);
const _: () = assert!(WRITER_BATCH_MAX_APPENDS <= WRITER_QUEUE_MAX_APPENDS);
const _: () = assert!(core::APPEND_MAX_BYTES as u64 <= SEGMENT_MAX_BYTES_MAX);
const _: () = assert!(SEGMENT_MAX_BYTES_MIN <= SEGMENT_MAX_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_MAX_BYTES_MAX <= 1 << 40);
// The smallest record: its header, a stream id and an event type of one byte, padded to 8.
const _: () = assert!(
    SEGMENT_MAX_BYTES_MAX / (crate::format::RECORD_HEADER_BYTES as u64 + 8) < u32::MAX as u64
);
