//! Sealed segments given back to an archive (`LogStore::evict_archived`): every read falls
//! through to the archive and answers as before, across reopens, with a cache bounded in
//! bytes; a store holding such segments opens only with its archive; a scavenge leaves them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use strata_core::{
    EventData, EventStore, ExpectedVersion, Filter, ReadAllOptions, ReadError, ReadStreamOptions,
    StreamId,
};
use strata_log::{LogConfig, LogStore, OpenError, SegmentSource};

/// An archive that is a directory of segment files copied whole, counting its fetches and
/// failing on command.
struct DirArchive {
    dir: PathBuf,
    fetches: AtomicU64,
    failing: AtomicBool,
    /// Requests made: each `fetch_many` is one, whatever its ranges.
    requests: AtomicU64,
}

impl SegmentSource for DirArchive {
    fn fetch(&self, segment_no: u64, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the archive is unreachable"));
        }
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let (name, _) = strata_log::sealed_file_names(segment_no);
        let f = std::fs::File::open(self.dir.join(name))?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
    fn name(&self) -> String {
        format!("test archive {}", self.dir.display())
    }
    fn fetch_many(
        &self,
        segment_no: u64,
        ranges: &[(u64, usize)],
    ) -> std::io::Result<Vec<Vec<u8>>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        ranges
            .iter()
            .map(|&(offset, len)| self.fetch(segment_no, offset, len))
            .collect()
    }
}

fn archive_in(dir: &Path) -> Arc<DirArchive> {
    Arc::new(DirArchive {
        dir: dir.to_path_buf(),
        fetches: AtomicU64::new(0),
        failing: AtomicBool::new(false),
        requests: AtomicU64::new(0),
    })
}

fn config(archive: Option<Arc<DirArchive>>) -> LogConfig {
    LogConfig {
        segment_max_bytes: 16 * 1024,
        archive: archive.map(|a| a as Arc<dyn SegmentSource>),
        ..LogConfig::default()
    }
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

fn streams() -> Vec<StreamId> {
    (0..12).map(|s| sid(&format!("account-{s}"))).collect()
}

/// 12 streams of 30 events, a round at a time, so each segment holds events of many.
async fn fill(store: &LogStore, rounds: std::ops::Range<usize>) {
    for round in rounds {
        for s in streams() {
            let kind = if round % 3 == 0 {
                "Opened"
            } else {
                "Deposited"
            };
            let e = EventData::json(
                kind,
                &serde_json::json!({ "round": round, "pad": "x".repeat(4000) }),
            )
            .unwrap();
            store
                .append(&s, ExpectedVersion::Any, vec![e])
                .await
                .unwrap();
        }
    }
}

/// Every answer a reader gets, filtered `$all` reads by category and type included.
async fn answers(store: &LogStore) -> String {
    let mut out = strata_testkit::every_answer(store, &streams()).await;
    for filter in [
        Filter::default().categories(["account"]),
        Filter::default().event_types(["Opened"]),
    ] {
        let page = store
            .read_all(ReadAllOptions::forward().filter(filter).limit(10_000))
            .await
            .unwrap();
        out.push_str(&format!("{:?}\n", page.events));
    }
    out
}

/// Copies the store's sealed segment files into `archive` (as an archive run does); returns
/// how many.
async fn copy_sealed(store: &LogStore, archive: &Path) -> u64 {
    let held = store.sealed_files().await.unwrap();
    for seg in &held.segments {
        let (name, _) = strata_log::sealed_file_names(seg.segment_no);
        std::fs::copy(&seg.segment_path, archive.join(name)).unwrap();
    }
    held.segments.len() as u64
}

fn files_with(dir: &Path, ext: &str) -> Vec<u64> {
    let mut out: Vec<u64> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
        .collect();
    out.sort_unstable();
    out
}

/// A data directory, a directory of copies, and the archive serving those copies.
fn dirs() -> (tempfile::TempDir, tempfile::TempDir, Arc<DirArchive>) {
    let (data, copies) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let archive = archive_in(copies.path());
    (data, copies, archive)
}

/// A store filled with 30 rounds, its open segment sealed and every sealed segment copied to
/// an archive: its directories, the archive, the store, and the segments copied.
async fn filled_and_copied() -> (
    tempfile::TempDir,
    tempfile::TempDir,
    Arc<DirArchive>,
    LogStore,
    u64,
) {
    let (data, copies, archive) = dirs();
    let store = LogStore::open_with(data.path(), config(None)).unwrap();
    fill(&store, 0..30).await;
    let sealed = seal_and_copy(&store, copies.path()).await;
    (data, copies, archive, store, sealed)
}

/// Seals the open segment and copies every sealed segment to `archive`; returns how many.
async fn seal_and_copy(store: &LogStore, archive: &Path) -> u64 {
    store.seal_open_segment().await.unwrap();
    copy_sealed(store, archive).await
}

/// Gives back the segments below `below` the archive of `copies` holds, keeping `keep`.
async fn evict(
    store: &LogStore,
    archive: &Arc<DirArchive>,
    copies: &Path,
    below: u64,
    keep: u64,
) -> strata_log::EvictReport {
    store
        .evict_archived(archive.clone(), below, keep, same_as(copies))
        .await
        .unwrap()
}

/// `n` events of `pad` bytes appended to `stream`, one append each.
async fn append_n(store: &LogStore, stream: &StreamId, n: usize, pad: usize) {
    for _ in 0..n {
        store
            .append(stream, ExpectedVersion::Any, vec![big(pad)])
            .await
            .unwrap();
    }
}

/// Runs a scavenge; returns the events it removed.
async fn scavenged(store: &LogStore) -> u64 {
    store
        .scavenge(&|_| {})
        .await
        .unwrap()
        .progress
        .events_removed
}

/// Compares the local file with the archive's copy, as `strata-archive` does by SHA-256.
fn same_as(archive: &Path) -> strata_log::SameAsArchived {
    let archive = archive.to_path_buf();
    Box::new(move |no, file| {
        use std::io::Read;
        let (name, _) = strata_log::sealed_file_names(no);
        let mut local = Vec::new();
        (&*file).read_to_end(&mut local)?;
        Ok(match std::fs::read(archive.join(name)) {
            Ok(copy) if copy == local => strata_log::ArchivedCopy::Same,
            Ok(_) => strata_log::ArchivedCopy::Differs,
            Err(_) => strata_log::ArchivedCopy::Missing,
        })
    })
}

/// Evicted segments are read from the archive, and every answer is the same before and after,
/// after appending more, and after reopening with a cache of one block; without the archive
/// the store does not open, and `verify` checks it through the archive.
#[tokio::test]
async fn archived_segments_answer_as_local_ones_across_reopens() {
    let (data, copies, archive, store, archived) = filled_and_copied().await;
    assert!(archived >= 5, "the fill seals several segments: {archived}");
    let before = answers(&store).await;

    let report = evict(&store, &archive, copies.path(), archived, 2).await;
    assert_eq!(report.evicted, archived - 2, "{report:?}");
    assert_eq!(report.archived_segments, archived - 2);
    assert!(report.differ.is_empty());
    let evicted: Vec<u64> = (0..archived - 2).collect();
    assert_eq!(files_with(data.path(), "archived"), evicted);
    let local = files_with(data.path(), "seg");
    assert!(evicted.iter().all(|no| !local.contains(no)), "{local:?}");
    assert!(evicted
        .iter()
        .all(|no| files_with(data.path(), "idx").contains(no)));

    assert_eq!(
        answers(&store).await,
        before,
        "reads fall through to the archive"
    );
    let stats = store
        .archive_cache()
        .expect("the store reads from an archive");
    assert!(stats.fetches > 0 && archive.fetches.load(Ordering::SeqCst) == stats.fetches);
    // A second round of reads comes from the cache.
    let fetched = archive.fetches.load(Ordering::SeqCst);
    assert_eq!(answers(&store).await, before);
    assert_eq!(
        archive.fetches.load(Ordering::SeqCst),
        fetched,
        "the cache holds them"
    );

    // An eviction again gives back nothing more; appends go on.
    let again = evict(&store, &archive, copies.path(), archived, 2).await;
    assert_eq!(again.evicted, 0);
    fill(&store, 30..33).await;
    let after_more = answers(&store).await;
    store.close().await.unwrap();

    match LogStore::open_with(data.path(), config(None)) {
        Err(OpenError::Archived {
            segment,
            archive: name,
        }) => {
            assert_eq!(segment, 0);
            assert_eq!(name, archive.name(), "the stub names its archive");
        }
        other => panic!("opening without the archive gave {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        strata_log::verify(data.path()),
        Err(OpenError::Archived { .. })
    ));
    let checked = strata_log::verify_with(data.path(), Some(archive.clone())).unwrap();
    assert_eq!(
        checked.events,
        12 * 33,
        "every event checked, archived ones too"
    );

    let small = LogConfig {
        archive_cache_bytes: strata_log::limits::ARCHIVE_CACHE_BYTES_MIN,
        ..config(Some(archive.clone()))
    };
    let store = LogStore::open_with(data.path(), small).unwrap();
    assert_eq!(answers(&store).await, after_more, "the same after a reopen");
    let stats = store.archive_cache().unwrap();
    assert!(stats.cached_bytes <= stats.limit_bytes, "{stats:?}");
    assert!(
        stats.fetches > archived - 2,
        "a cache of one block fetches again: {stats:?}"
    );
    store.close().await.unwrap();
}

/// An archive that cannot be reached fails the reads that need it, with a storage error;
/// appends and reads of local segments go on.
#[tokio::test]
async fn an_unreachable_archive_fails_its_reads_only() {
    let (_data, copies, archive, store, archived) = filled_and_copied().await;
    evict(&store, &archive, copies.path(), archived, 0).await;
    archive.failing.store(true, Ordering::SeqCst);
    let s = sid("account-3");
    match store.read_stream(&s, ReadStreamOptions::forward()).await {
        Err(ReadError::Storage(_)) => {}
        other => panic!("a read of archived events with the archive down gave {other:?}"),
    }
    let e = EventData::json("Deposited", &serde_json::json!({})).unwrap();
    let r = store
        .append(&s, ExpectedVersion::Any, vec![e])
        .await
        .unwrap();
    assert_eq!(r.stream_version, 30);
    let tail = store
        .read_stream(&s, ReadStreamOptions::backward().limit(1))
        .await
        .unwrap();
    assert_eq!(tail[0].stream_version, 30);
    let metrics = store.backend_metrics().await.unwrap();
    assert!(
        metrics.contains("\nstrata_archive_fetch_errors_total 1\n"),
        "the failed fetch is counted: {metrics}"
    );
    assert!(metrics.contains("\nstrata_archived_segments "), "{metrics}");
    archive.failing.store(false, Ordering::SeqCst);
    let all = store
        .read_stream(&s, ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(all.len(), 31, "the same reads work once it answers");
    store.close().await.unwrap();
}

/// A segment whose local file is not the archive's copy stays local; a stub left beside its
/// segment file (an eviction cut short by a crash) leaves the file read locally, and the
/// open removes it.
#[tokio::test]
async fn only_identical_segments_are_evicted_and_a_leftover_stub_is_removed() {
    let (data, copies, archive, store, archived) = filled_and_copied().await;
    // The archive's copy of segment 1 differs.
    let (name1, _) = strata_log::sealed_file_names(1);
    let mut other = std::fs::read(copies.path().join(&name1)).unwrap();
    let last = other.len() - 1;
    other[last] ^= 1;
    std::fs::write(copies.path().join(&name1), &other).unwrap();
    let before = answers(&store).await;
    let report = evict(&store, &archive, copies.path(), 3, 0).await;
    assert_eq!(report.differ, vec![1]);
    assert_eq!(report.evicted, 2);
    assert_eq!(files_with(data.path(), "archived"), vec![0, 2]);
    assert!(archived > 3);
    store.close().await.unwrap();

    // Segment 2's file is back beside its stub, as if the eviction had stopped before the
    // file's removal: it is the one read.
    let (name2, _) = strata_log::sealed_file_names(2);
    std::fs::copy(
        copies.path().join(&name2),
        data.path().join("segments").join(&name2),
    )
    .unwrap();
    let store = LogStore::open_with(data.path(), config(Some(archive.clone()))).unwrap();
    assert_eq!(answers(&store).await, before);
    let fetched = store.archive_cache().unwrap().fetched_bytes;
    let seg0 = std::fs::metadata(copies.path().join(strata_log::sealed_file_names(0).0))
        .unwrap()
        .len();
    assert!(
        fetched <= seg0,
        "only segment 0 comes from the archive: {fetched} bytes fetched, segment 0 is {seg0}"
    );
    assert_eq!(
        files_with(data.path(), "archived"),
        vec![0],
        "the open removed the stub its file outlived"
    );
    store.close().await.unwrap();
}

/// A scavenge leaves archived segments as they are and rewrites local ones; every answer
/// stays what the lifecycle says, across a reopen.
#[tokio::test]
async fn a_scavenge_leaves_archived_segments_alone() {
    let (data, copies, archive, store, archived) = filled_and_copied().await;
    evict(&store, &archive, copies.path(), archived / 2, 0).await;
    for s in 0..6 {
        store
            .delete_stream(&sid(&format!("account-{s}")), ExpectedVersion::Any)
            .await
            .unwrap();
    }
    store.seal_open_segment().await.unwrap();
    let before = answers(&store).await;
    let stubs = files_with(data.path(), "archived");
    assert!(scavenged(&store).await > 0, "local segments are rewritten");
    assert_eq!(files_with(data.path(), "archived"), stubs);
    let local = files_with(data.path(), "seg");
    assert!(
        stubs.iter().all(|no| !local.contains(no)),
        "no archived segment was written locally again: stubs {stubs:?}, files {local:?}"
    );
    assert_eq!(answers(&store).await, before);
    store.close().await.unwrap();
    let store = LogStore::open_with(data.path(), config(Some(archive))).unwrap();
    assert_eq!(answers(&store).await, before);
    store.close().await.unwrap();
}

fn big(pad: usize) -> EventData {
    EventData::json("E", &serde_json::json!({ "pad": "x".repeat(pad) })).unwrap()
}

/// A stream truncated and scavenged once, the segments after evicted, then truncated
/// further: the next scavenge removes only versions that join those removed before, so the
/// store still opens and answers alike.
#[tokio::test]
async fn a_scavenge_after_an_eviction_keeps_one_removed_run_per_stream() {
    let (data, copies, archive) = dirs();
    let s = sid("acct-1");
    let store = LogStore::open_with(data.path(), config(None)).unwrap();
    append_n(&store, &s, 30, 5000).await;
    store.truncate_stream(&s, 2).await.unwrap();
    store.seal_open_segment().await.unwrap();
    assert!(scavenged(&store).await > 0);
    let sealed = copy_sealed(&store, copies.path()).await;
    assert!(sealed > 8);
    let evicted = evict(&store, &archive, copies.path(), 4, 0).await;
    assert!(evicted.evicted > 0, "{evicted:?}");
    store.truncate_stream(&s, 25).await.unwrap();
    store.seal_open_segment().await.unwrap();
    store
        .scavenge(&|_| {})
        .await
        .expect("a scavenge beside archived segments");
    let visible = store
        .read_stream(&s, ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(visible.first().unwrap().stream_version, 25);
    store.close().await.unwrap();
    let store = LogStore::open_with(data.path(), config(Some(archive))).expect("it opens");
    let again = store
        .read_stream(&s, ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(again, visible);
    store.close().await.unwrap();
}

/// The writer never reads from the archive to check an append: a stream's last metadata
/// event, in an archived segment, is pinned in its stub. With the archive down, appends with
/// an expected version go on, and nothing is fetched.
#[tokio::test]
async fn appends_never_read_from_the_archive() {
    use strata_core::lifecycle::StreamMetadata;
    let (data, copies, archive) = dirs();
    let (s, other) = (sid("acct-1"), sid("other-1"));
    let store = LogStore::open_with(data.path(), config(None)).unwrap();
    store
        .append(&s, ExpectedVersion::Any, vec![big(5000)])
        .await
        .unwrap();
    let meta = StreamMetadata {
        max_count: Some(1000),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&s, ExpectedVersion::Any, meta)
        .await
        .unwrap();
    for _ in 0..40 {
        store
            .append(&other, ExpectedVersion::Any, vec![big(5000)])
            .await
            .unwrap();
    }
    let sealed = seal_and_copy(&store, copies.path()).await;
    evict(&store, &archive, copies.path(), sealed, 0).await;
    store.close().await.unwrap();
    archive.failing.store(true, Ordering::SeqCst);
    let store = LogStore::open_with(data.path(), config(Some(archive.clone()))).unwrap();
    let r = store
        .append(&s, ExpectedVersion::Exact(0), vec![big(10)])
        .await
        .expect("an append checked against metadata in an archived segment");
    assert_eq!(r.stream_version, 1);
    assert_eq!(archive.fetches.load(Ordering::SeqCst), 0);
    assert_eq!(store.archive_cache().unwrap().fetches, 0);
    store.close().await.unwrap();
}

/// Opening reads nothing from the archive when the index files match: with the archive down
/// and records larger than a stub's tail, the store opens (and reads of archived events fail).
#[tokio::test]
async fn a_store_opens_with_its_archive_down() {
    for pad in [1000, 5000] {
        let (data, copies, archive) = dirs();
        let s = sid("acct-1");
        let store = LogStore::open_with(data.path(), config(None)).unwrap();
        append_n(&store, &s, 40, pad).await;
        let sealed = seal_and_copy(&store, copies.path()).await;
        evict(&store, &archive, copies.path(), sealed, 0).await;
        store.close().await.unwrap();
        archive.failing.store(true, Ordering::SeqCst);
        let store = LogStore::open_with(data.path(), config(Some(archive.clone())))
            .unwrap_or_else(|e| panic!("records of {pad} bytes: {e}"));
        assert!(store
            .read_stream(&s, ReadStreamOptions::forward())
            .await
            .is_err());
        store.close().await.unwrap();
    }
}

/// A stub whose index file is gone: `verify` changes nothing, and the store opens from the
/// archived segment, answers alike, and writes the index file again.
#[tokio::test]
async fn an_archived_segment_without_its_index_file_is_read_from_the_archive() {
    let (data, copies, archive) = dirs();
    let s = sid("acct-1");
    let store = LogStore::open_with(data.path(), config(None)).unwrap();
    append_n(&store, &s, 30, 5000).await;
    let sealed = seal_and_copy(&store, copies.path()).await;
    evict(&store, &archive, copies.path(), sealed, 0).await;
    let before = store
        .read_stream(&s, ReadStreamOptions::forward())
        .await
        .unwrap();
    store.close().await.unwrap();
    let idx = data
        .path()
        .join("segments")
        .join(strata_log::sealed_file_names(1).1);
    std::fs::remove_file(&idx).unwrap();
    let listing = || {
        let mut v: Vec<String> = std::fs::read_dir(data.path().join("segments"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let files = listing();
    strata_log::verify_with(data.path(), Some(archive.clone())).unwrap();
    assert_eq!(listing(), files, "verify changed nothing");
    let store = LogStore::open_with(data.path(), config(Some(archive.clone()))).unwrap();
    assert_eq!(
        store
            .read_stream(&s, ReadStreamOptions::forward())
            .await
            .unwrap(),
        before
    );
    store.wait_for_segment_indexes().await;
    assert!(idx.exists(), "the index file is written again");
    store.close().await.unwrap();
}

/// Reads running while segments are evicted all give the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_an_eviction_answer_alike() {
    let (data, copies, archive) = dirs();
    let s = sid("acct-1");
    let store = LogStore::open_with(data.path(), config(None)).unwrap();
    append_n(&store, &s, 200, 5000).await;
    let sealed = seal_and_copy(&store, copies.path()).await;
    let before = store
        .read_stream(&s, ReadStreamOptions::forward())
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (st, s, stop, before, reads) = (
            store.clone(),
            s.clone(),
            stop.clone(),
            before.clone(),
            reads.clone(),
        );
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let got = st
                    .read_stream(&s, ReadStreamOptions::forward())
                    .await
                    .unwrap();
                assert_eq!(got, before);
                reads.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let wait_for = |n: u64| {
        let reads = reads.clone();
        async move {
            while reads.load(Ordering::SeqCst) < n {
                tokio::task::yield_now().await;
            }
        }
    };
    wait_for(3).await;
    let evicted = evict(&store, &archive, copies.path(), sealed, 0).await;
    assert_eq!(evicted.evicted, sealed);
    let after = reads.load(Ordering::SeqCst);
    wait_for(after + 3).await;
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.unwrap();
    }
    store.close().await.unwrap();
}

/// A read going through an archived segment asks for several blocks per request; lone reads
/// ask for one.
#[tokio::test]
async fn a_read_through_a_segment_fetches_ahead() {
    let (data, copies, archive) = dirs();
    let config = |archive: Option<Arc<DirArchive>>| LogConfig {
        segment_max_bytes: 64 << 20,
        ..config(archive)
    };
    let store = LogStore::open_with(data.path(), config(None)).unwrap();
    let s = sid("acct-1");
    for _ in 0..6 {
        let events = (0..1_000).map(|_| big(5000)).collect();
        store
            .append(&s, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let sealed = seal_and_copy(&store, copies.path()).await;
    assert_eq!(sealed, 1, "one segment of about 30 MiB");
    evict(&store, &archive, copies.path(), sealed, 0).await;
    let one = store
        .read_stream(&s, ReadStreamOptions::forward().from_version(1000).limit(1))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(archive.requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        archive.fetches.load(Ordering::SeqCst),
        1,
        "a lone read asks for its block"
    );
    let all = store
        .read_stream(&s, ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(all.len(), 6_000);
    let (blocks, requests) = (
        archive.fetches.load(Ordering::SeqCst) - 1,
        archive.requests.load(Ordering::SeqCst) - 1,
    );
    assert!(blocks >= 28, "{blocks} blocks");
    assert!(
        requests <= blocks.div_ceil(strata_log::limits::ARCHIVE_READ_AHEAD_BLOCKS) + 1,
        "{requests} requests for {blocks} blocks: a read through the segment asks for several"
    );
    store.close().await.unwrap();
}

/// An idempotent retry of an append whose events now lie in an archived segment is answered
/// from the index (ids, positions, types), with the archive down and nothing fetched; a retry
/// that does not match is a conflict.
#[tokio::test]
async fn a_retry_of_archived_events_is_answered_without_the_archive() {
    let (data, copies, archive) = dirs();
    let s = sid("acct-1");
    let ids: Vec<strata_core::Uuid> = (0..3).map(|_| strata_core::Uuid::now_v7()).collect();
    let append = |kind: &'static str| {
        ids.iter()
            .map(|&id| big(5000).with_id(id))
            .map(move |e| EventData {
                event_type: kind.to_owned(),
                ..e
            })
            .collect::<Vec<_>>()
    };
    let store = LogStore::open_with(data.path(), config(None)).unwrap();
    let first = store
        .append(&s, ExpectedVersion::NoStream, append("E"))
        .await
        .unwrap();
    for _ in 0..20 {
        store
            .append(&sid("other-1"), ExpectedVersion::Any, vec![big(5000)])
            .await
            .unwrap();
    }
    let sealed = seal_and_copy(&store, copies.path()).await;
    evict(&store, &archive, copies.path(), sealed, 0).await;
    archive.failing.store(true, Ordering::SeqCst);
    let again = store
        .append(&s, ExpectedVersion::NoStream, append("E"))
        .await
        .expect("a retry answered from the index");
    assert!(again.replayed);
    assert_eq!(again.positions, first.positions);
    match store
        .append(&s, ExpectedVersion::NoStream, append("Other"))
        .await
    {
        Err(strata_core::AppendError::EventIdConflict { .. }) => {}
        other => panic!("a retry with another type gave {other:?}"),
    }
    assert_eq!(archive.fetches.load(Ordering::SeqCst), 0);
    store.close().await.unwrap();
}

/// Segments mostly of metadata events (each pinned in its stub), read from every position,
/// both ways: each read's window starts in a pinned range and stops at its end, and every
/// answer is the one before the eviction.
#[tokio::test]
async fn reads_starting_in_pinned_records_answer_alike() {
    use strata_core::lifecycle::StreamMetadata;
    let (data, copies, archive) = dirs();
    let store = LogStore::open_with(data.path(), config(None)).unwrap();
    for i in 0..120 {
        let s = sid(&format!("acct-{i}"));
        let e = big(10 + (i * 37) % 300);
        store
            .append(&s, ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
        let meta = StreamMetadata {
            max_count: Some(1000 + i as u64),
            ..StreamMetadata::default()
        };
        store
            .set_stream_metadata(&s, ExpectedVersion::Any, meta)
            .await
            .unwrap();
    }
    let sealed = seal_and_copy(&store, copies.path()).await;
    let pages = || async {
        let mut out = Vec::new();
        for p in 0..240u64 {
            for options in [ReadAllOptions::forward(), ReadAllOptions::backward()] {
                let page = options.from(strata_core::Position(p)).limit(50);
                out.push(store.read_all(page).await.unwrap().events);
            }
        }
        out
    };
    let before = pages().await;
    assert!(
        evict(&store, &archive, copies.path(), sealed, 0)
            .await
            .evicted
            > 0
    );
    assert!(pages().await == before);
    store.close().await.unwrap();
}

fn peak_rss_kib() -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The record after a pinned one, whose length field the archive's copy has damaged: the
/// read that stops at the pinned range's end checks the next header before using its length
/// (it would otherwise allocate and fetch 1 GiB before reporting the corruption).
#[tokio::test]
async fn a_damaged_length_after_a_pinned_record_is_checked_before_use() {
    use std::os::unix::fs::FileExt;
    use strata_core::lifecycle::StreamMetadata;
    let (data, copies, archive) = dirs();
    let store = LogStore::open_with(data.path(), config(None)).unwrap();
    let s = sid("acct-1");
    append_n(&store, &s, 1, 100).await;
    let meta = StreamMetadata {
        max_count: Some(1000),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&s, ExpectedVersion::Any, meta)
        .await
        .unwrap();
    append_n(&store, &sid("other-1"), 30, 1000).await;
    let sealed = seal_and_copy(&store, copies.path()).await;
    evict(&store, &archive, copies.path(), sealed, 0).await;
    // The archive's copy of segment 0: the record after the metadata event (position 2).
    let (name, _) = strata_log::sealed_file_names(0);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(copies.path().join(name))
        .unwrap();
    let len_at = |off: u64| {
        let mut b = [0u8; 4];
        f.read_exact_at(&mut b, off).unwrap();
        (u32::from_le_bytes(b) as u64).div_ceil(8) * 8
    };
    let p1 = 64 + len_at(64);
    let p2 = p1 + len_at(p1);
    f.write_all_at(&(1u32 << 30).to_le_bytes(), p2).unwrap();
    drop(f);
    let before = peak_rss_kib();
    let r = store
        .read_all(
            ReadAllOptions::forward()
                .from(strata_core::Position(1))
                .limit(5),
        )
        .await;
    let after = peak_rss_kib();
    assert!(r.is_err(), "{r:?}");
    assert!(
        after - before < 100 * 1024,
        "the read allocated {} MiB",
        (after - before) / 1024
    );
    store.close().await.unwrap();
}

/// Segments the caller keeps (`ArchivedCopy::Kept`) stay local and are reported neither as
/// differing nor as missing.
#[tokio::test]
async fn segments_the_caller_keeps_stay_and_are_not_reported() {
    let (data, copies, archive, store, sealed) = filled_and_copied().await;
    let mut check = same_as(copies.path());
    let keep_odd = Box::new(move |no: u64, file: &std::fs::File| match no % 2 {
        1 => Ok(strata_log::ArchivedCopy::Kept),
        _ => check(no, file),
    });
    let report = store
        .evict_archived(archive.clone(), sealed, 0, keep_odd)
        .await
        .unwrap();
    assert_eq!(report.evicted, sealed.div_ceil(2), "{report:?}");
    assert!(
        report.differ.is_empty() && report.missing.is_empty(),
        "{report:?}"
    );
    let stubs = files_with(data.path(), "archived");
    assert!(stubs.iter().all(|no| no % 2 == 0), "{stubs:?}");
    store.close().await.unwrap();
}
