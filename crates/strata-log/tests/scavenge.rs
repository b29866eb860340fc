//! Scavenging the embedded store: segments rewritten without the events readers can no
//! longer see, what a reopen finds, and the files a crash can leave at each step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use strata_core::lifecycle::StreamMetadata;
use strata_core::{
    EventData, EventStore, ExpectedVersion, ReadAllOptions, ReadStreamOptions, StreamId,
};
use strata_log::{LogConfig, LogStore};

fn config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 16 * 1024,
        ..LogConfig::default()
    }
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

fn ev(i: usize) -> EventData {
    EventData::json(
        "Deposited",
        &serde_json::json!({ "amount": i, "pad": "x".repeat(40) }),
    )
    .unwrap()
}

/// 40 streams of 25 events, appended a round at a time (each segment holds events of many
/// streams); then 36 of them soft-deleted, one tombstoned among them.
async fn fill(store: &LogStore) {
    for round in 0..25 {
        for s in 0..40 {
            store
                .append(
                    &sid(&format!("account-{s}")),
                    ExpectedVersion::Any,
                    vec![ev(round)],
                )
                .await
                .unwrap();
        }
    }
    for s in 0..36 {
        let stream = sid(&format!("account-{s}"));
        if s == 7 {
            store
                .tombstone_stream(&stream, ExpectedVersion::Any)
                .await
                .unwrap();
        } else {
            store
                .delete_stream(&stream, ExpectedVersion::Any)
                .await
                .unwrap();
        }
    }
    let meta = StreamMetadata {
        max_count: Some(5),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&sid("account-39"), ExpectedVersion::Any, meta)
        .await
        .unwrap();
}

/// Every answer a reader gets (see [`strata_testkit::every_answer`]) for the test's streams.
async fn answers(store: &LogStore) -> String {
    let streams: Vec<StreamId> = (0..40).map(|s| sid(&format!("account-{s}"))).collect();
    strata_testkit::every_answer(store, &streams).await
}

fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

async fn scavenge(store: &LogStore) -> u64 {
    let report = store.scavenge(&|_| {}).await.expect("a scavenge");
    report.progress.events_removed
}

/// A scavenge removes what readers could not see and changes no answer; the store reopens
/// from the rewritten segments and their index files with the same answers, `strata verify`
/// finds it sound, and a second scavenge removes nothing.
#[tokio::test]
async fn a_scavenged_store_answers_the_same_before_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    fill(&store).await;
    let before = answers(&store).await;
    let bytes_before = segment_bytes(dir.path());
    let removed = scavenge(&store).await;
    // 35 deleted streams lose versions 1..24 (23 each), the tombstoned one 0..25 (25), and
    // the one with maxCount 5 versions 1..20 (19).
    assert_eq!(removed, 35 * 23 + 25 + 19);
    assert_eq!(answers(&store).await, before, "answers after the scavenge");
    assert_eq!(scavenge(&store).await, 0, "a second scavenge");
    store.close().await.unwrap();
    let bytes_after = segment_bytes(dir.path());
    assert!(
        bytes_after * 4 < bytes_before,
        "{bytes_after} of {bytes_before}"
    );

    let report = strata_log::verify(dir.path()).expect("verify runs");
    assert!(report.torn_tail.is_none(), "{report:?}");
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    assert_eq!(
        store.open_report().events_scanned,
        0,
        "{:?}",
        store.open_report()
    );
    assert_eq!(answers(&store).await, before, "answers after a reopen");
    // Versions go on after the removed ones.
    let r = store
        .append(&sid("account-39"), ExpectedVersion::Exact(24), vec![ev(99)])
        .await
        .unwrap();
    assert_eq!(r.stream_version, 25);
}

fn seg_path(dir: &Path, no: u64, ext: &str) -> std::path::PathBuf {
    dir.join("segments").join(format!("{no:020}.{ext}"))
}

/// Every segment file's bytes, by name.
fn segment_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The files a crash can leave at each step of a rewrite: the temp files (before the
/// renames), the new index file beside the old segment (between them), and the new segment
/// without its index file (a lost or damaged file). Each reopens with every answer as
/// before the scavenge, `strata verify` clean; a scavenge then removes again what came back.
#[tokio::test]
async fn every_state_a_crash_leaves_reopens_with_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    fill(&store).await;
    let before = answers(&store).await;
    store.close().await.unwrap();
    let old = segment_files(dir.path());
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    assert!(scavenge(&store).await > 0);
    store.close().await.unwrap();
    let new = segment_files(dir.path());
    let rewritten: Vec<&String> = new.keys().filter(|k| old.get(*k) != new.get(*k)).collect();
    assert!(rewritten.len() >= 3, "{rewritten:?}");
    let no = |name: &str| name.trim_end_matches(".seg").parse::<u64>().unwrap();

    // Between the renames: the old segment back beside its new index file.
    let first = rewritten[0];
    std::fs::write(dir.path().join("segments").join(first), &old[first]).unwrap();
    // Before them: temp files of a rewrite that did not finish.
    let second = no(rewritten[1]);
    std::fs::write(seg_path(dir.path(), second, "stmp"), b"half a segment").unwrap();
    std::fs::write(seg_path(dir.path(), second, "tmp"), b"half an index").unwrap();
    // A scavenged segment whose index file is lost.
    let third = no(rewritten[2]);
    std::fs::remove_file(seg_path(dir.path(), third, "idx")).unwrap();

    let report = strata_log::verify(dir.path()).expect("verify runs");
    assert!(report.torn_tail.is_none(), "{report:?}");
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    assert_eq!(answers(&store).await, before, "answers after the reopen");
    assert!(
        !seg_path(dir.path(), second, "stmp").exists(),
        "temp file removed"
    );
    assert!(
        !seg_path(dir.path(), second, "tmp").exists(),
        "temp file removed"
    );
    assert!(
        seg_path(dir.path(), third, "idx").exists(),
        "index file written again"
    );
    // What the restored segment holds again is removed again.
    assert!(scavenge(&store).await > 0);
    assert_eq!(answers(&store).await, before);
    store.close().await.unwrap();
    strata_log::verify(dir.path()).expect("sound");
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    assert_eq!(answers(&store).await, before);
}

/// A second scavenge after more appends, deletions and a tombstone on streams scavenged
/// before: each stream's removed versions grow (at their end, and at their start when a
/// stream is tombstoned since), in segments rewritten twice, and the store reopens the
/// same; a segment that loses every event still answers temporal reads.
#[tokio::test]
async fn a_second_scavenge_grows_what_the_first_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    fill(&store).await;
    assert_eq!(scavenge(&store).await, 35 * 23 + 25 + 19);
    // account-1 (deleted) comes back and is deleted again; account-2 (deleted) is
    // tombstoned; account-39 (maxCount 5) gets more events.
    for round in 0..10 {
        store
            .append(&sid("account-1"), ExpectedVersion::Any, vec![ev(round)])
            .await
            .unwrap();
        store
            .append(&sid("account-39"), ExpectedVersion::Any, vec![ev(round)])
            .await
            .unwrap();
    }
    store
        .delete_stream(&sid("account-1"), ExpectedVersion::Any)
        .await
        .unwrap();
    store
        .tombstone_stream(&sid("account-2"), ExpectedVersion::Any)
        .await
        .unwrap();
    let before = answers(&store).await;
    let at = store.head().await.unwrap();
    let removed = scavenge(&store).await;
    // account-1: versions 24..34 (its last kept before, the ten new ones) but the new last;
    // account-2: its version 0 and its last before the tombstone; account-39: ten more.
    assert_eq!(removed, 10 + 2 + 10, "removed");
    assert_eq!(answers(&store).await, before);
    let now = strata_core::timestamp_from_micros(i64::MAX / 4);
    let p = store.position_at(now).await.unwrap();
    assert!(p >= at, "{p:?} {at:?}");
    store.close().await.unwrap();
    strata_log::verify(dir.path()).expect("sound");
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    assert_eq!(answers(&store).await, before, "after a reopen");
    assert_eq!(store.position_at(now).await.unwrap(), p);
    // The tombstoned stream leaves its category's count.
    let page = store
        .list_categories(strata_core::ListOptions::default())
        .await
        .unwrap();
    assert_eq!(page.items[0].stream_count, 38, "{page:?}");
}

/// Appends and `$all` readers go on while scavenges run: every append succeeds, a reader
/// paging `$all` across them sees each event it could see once and in order, and the store
/// reopens with the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_and_reads_go_on_while_a_scavenge_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    fill(&store).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                store
                    .append(
                        &sid(&format!("order-{}", n % 7)),
                        ExpectedVersion::Any,
                        vec![ev(n)],
                    )
                    .await
                    .expect("an append during a scavenge");
                n += 1;
            }
            n
        })
    };
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut passes = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || passes == 0 {
                let mut last: Option<u64> = None;
                let mut from = strata_core::Position(0);
                loop {
                    let page = store
                        .read_all(ReadAllOptions::forward().from(from).limit(50))
                        .await
                        .expect("a read during a scavenge");
                    for e in &page.events {
                        assert!(last.is_none_or(|l| e.position.0 > l), "in order, once");
                        last = Some(e.position.0);
                    }
                    from = page.next.unwrap();
                    if page.is_end {
                        break;
                    }
                }
                passes += 1;
            }
            passes
        })
    };
    let mut removed = 0;
    for _ in 0..3 {
        removed += scavenge(&store).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let appended = writer.await.unwrap();
    let passes = reader.await.unwrap();
    assert!(
        removed > 0 && appended > 0 && passes > 0,
        "{removed} {appended} {passes}"
    );
    let before = answers(&store).await;
    store.close().await.unwrap();
    strata_log::verify(dir.path()).expect("sound");
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    assert_eq!(answers(&store).await, before);
}

/// A read that found its events' places in a segment's old file and reads them after a
/// scavenge swapped the segment in runs again, and answers as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_overlapping_a_swap_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    fill(&store).await;
    // A stream without metadata: its first read of records is its events', in every segment.
    let stream = sid("account-37");
    let want = store
        .read_stream(&stream, ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(want.len(), 25);
    // The read stops between finding its places and reading: the scavenge runs then.
    let (reached, at) = std::sync::mpsc::channel::<()>();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    let first = std::sync::atomic::AtomicBool::new(true);
    store.set_before_record_reads(Some(std::sync::Arc::new(move || {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            reached.send(()).unwrap();
            wait.lock().unwrap().recv().unwrap();
        }
    })));
    let read = {
        let (store, stream) = (store.clone(), stream.clone());
        tokio::spawn(async move {
            store
                .read_stream(&stream, ReadStreamOptions::forward())
                .await
        })
    };
    tokio::task::spawn_blocking(move || at.recv().unwrap())
        .await
        .unwrap();
    assert!(scavenge(&store).await > 0);
    go.send(()).unwrap();
    assert_eq!(read.await.unwrap().expect("the read, run again"), want);
}

async fn append_n(store: &LogStore, s: &str, n: usize) {
    store
        .append(&sid(s), ExpectedVersion::Any, (0..n).map(ev).collect())
        .await
        .unwrap();
}

fn segments(dir: &Path) -> u64 {
    segment_files(dir).len() as u64
}

/// An index file from an earlier close carries on at a segment whose own index file does not
/// match it (a crash between the renames of its rewrite), with a scavenged segment after it:
/// that one is read from its index file, not scanned, and the store opens.
#[tokio::test]
async fn a_scavenged_segment_after_where_the_index_file_carries_on_is_read_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    append_n(&store, "a-1", 1).await;
    for _ in 0..4 {
        append_n(&store, "a-1", 1).await;
    }
    store.close().await.unwrap();
    let k = segments(dir.path()) - 1;
    let index_bin = std::fs::read(dir.path().join("index.bin")).unwrap();
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    append_n(&store, "c-1", 10).await;
    assert_eq!(scavenge(&store).await, 0, "seals segment {k}");
    for _ in 0..30 {
        append_n(&store, "b-1", 1).await;
    }
    let meta = |n| StreamMetadata {
        max_count: Some(n),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&sid("b-1"), ExpectedVersion::Any, meta(2))
        .await
        .unwrap();
    assert!(scavenge(&store).await > 0);
    let old_k = std::fs::read(seg_path(dir.path(), k, "seg")).unwrap();
    store
        .set_stream_metadata(&sid("a-1"), ExpectedVersion::Any, meta(1))
        .await
        .unwrap();
    assert!(scavenge(&store).await > 0);
    let before = answers(&store).await;
    store.close().await.unwrap();
    // The crash: segment k's old file beside its new index file, and the index file of the
    // first close.
    std::fs::write(seg_path(dir.path(), k, "seg"), &old_k).unwrap();
    std::fs::write(dir.path().join("index.bin"), &index_bin).unwrap();
    let store = LogStore::open_with(dir.path(), config()).expect("the store opens");
    assert_eq!(answers(&store).await, before);
}

/// A kept first event whose append's last events were removed ends its append in the new
/// segment: `strata verify` finds the store sound, and an open without its index files
/// (written again from the segments) opens it.
#[tokio::test]
async fn a_kept_event_whose_append_lost_its_end_still_ends_an_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    append_n(&store, "c-1", 3).await;
    append_n(&store, "s-1", 5).await;
    assert_eq!(scavenge(&store).await, 0, "seals segment 0");
    append_n(&store, "s-1", 1).await;
    store
        .delete_stream(&sid("s-1"), ExpectedVersion::Any)
        .await
        .unwrap();
    assert_eq!(scavenge(&store).await, 4, "versions 1 to 4 of s-1");
    let before = answers(&store).await;
    store.close().await.unwrap();
    strata_log::verify(dir.path()).expect("sound");
    std::fs::remove_file(seg_path(dir.path(), 0, "idx")).unwrap();
    std::fs::remove_file(dir.path().join("index.bin")).unwrap();
    let store = LogStore::open_with(dir.path(), config()).expect("the store opens");
    assert_eq!(answers(&store).await, before);
}

/// Temporal reads after a scavenge empties one segment and another then thins the segment
/// before it: every answer is a position, in time order.
#[tokio::test]
async fn position_at_stays_in_order_when_segments_empty_and_thin() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    append_n(&store, "q-1", 1).await;
    append_n(&store, "p-1", 1).await;
    scavenge(&store).await;
    for _ in 0..10 {
        append_n(&store, "p-1", 1).await;
    }
    append_n(&store, "q-1", 5).await;
    scavenge(&store).await;
    for _ in 0..6 {
        append_n(&store, "t-1", 1).await;
    }
    scavenge(&store).await;
    let all = store
        .read_all(ReadAllOptions::forward().limit(1000))
        .await
        .unwrap()
        .events;
    store
        .tombstone_stream(&sid("t-1"), ExpectedVersion::Any)
        .await
        .unwrap();
    append_n(&store, "q-1", 1).await;
    assert!(scavenge(&store).await > 0, "t-1's segment emptied");
    append_n(&store, "p-1", 1).await;
    store
        .delete_stream(&sid("p-1"), ExpectedVersion::Any)
        .await
        .unwrap();
    assert!(scavenge(&store).await > 0, "p-1's segment thinned");
    let mut times: Vec<i64> = all
        .iter()
        .flat_map(|e| {
            let us = strata_core::timestamp_to_micros(e.recorded_at);
            [us - 1, us, us + 1]
        })
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut last = None;
    for us in times {
        let at = store
            .position_at(strata_core::timestamp_from_micros(us))
            .await
            .expect("a position");
        assert!(
            last.is_none_or(|l| l <= at),
            "{at:?} after {last:?} at {us}"
        );
        last = Some(at);
    }
    assert!(last.flatten().is_some());
}

/// A handle of a store that was closed (readers are not refused after a close) reads the old
/// segments' files, through maps, while a store opened again on the directory scavenges
/// them and gives their blocks back: it gets answers or errors, never a crash (the blocks are
/// punched out, the files' lengths kept, so nothing reads past the end of a map).
#[tokio::test]
async fn a_closed_handle_reading_while_another_store_frees_old_segments_does_not_crash() {
    let dir = tempfile::tempdir().unwrap();
    // Segments of 1 MiB: read through maps.
    let config = || LogConfig {
        segment_max_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let a = LogStore::open_with(dir.path(), config()).unwrap();
    for round in 0..60 {
        let events = (0..40).map(|i| {
            EventData::json(
                "E",
                &serde_json::json!({ "n": round * 40 + i, "pad": "x".repeat(300) }),
            )
            .unwrap()
        });
        for (s, e) in events.enumerate() {
            a.append(&sid(&format!("s-{s}")), ExpectedVersion::Any, vec![e])
                .await
                .unwrap();
        }
    }
    for s in 0..36 {
        a.delete_stream(&sid(&format!("s-{s}")), ExpectedVersion::Any)
            .await
            .unwrap();
    }
    let all = ReadAllOptions::forward().limit(10_000);
    let before = a.read_all(all.clone()).await.unwrap().events.len();
    let a2 = a.clone();
    a.close().await.unwrap();
    let b = LogStore::open_with(dir.path(), config()).unwrap();
    assert!(scavenge(&b).await > 0);
    // Long enough for the old files to be given back (a step of 4 MiB each, 20 ms apart).
    for _ in 0..200 {
        if let Ok(page) = a2.read_all(all.clone()).await {
            assert!(page.events.len() <= before);
        }
    }
    b.close().await.unwrap();
}

/// A close does not wait out a paced scavenge's sleep: with a pace of one byte a second, the
/// rewrite would sleep for a minute before its first record; the close stops it (the guard
/// below fails the test where the close waited), the scavenge answers an error, and the
/// store reopens answering as before, its removed events still there and hidden.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_stops_a_paced_scavenge() {
    let dir = tempfile::tempdir().unwrap();
    let paced = LogConfig {
        scavenge_bytes_per_sec: 1,
        ..config()
    };
    let store = LogStore::open_with(dir.path(), paced.clone()).unwrap();
    fill(&store).await;
    let before = answers(&store).await;
    let scavenging = {
        let store = store.clone();
        tokio::spawn(async move { store.scavenge(&|_| {}).await })
    };
    // The rewrite runs on a thread of its own: wait until it exists.
    let started = std::time::Instant::now();
    while !std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .any(|name| name.trim() == "strata-scavenge")
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no rewrite started"
        );
        tokio::task::yield_now().await;
    }
    tokio::time::timeout(std::time::Duration::from_secs(30), store.close())
        .await
        .expect("the close waited for the paced rewrite")
        .unwrap();
    assert!(scavenging.await.unwrap().is_err());
    let again = LogStore::open_with(dir.path(), paced).unwrap();
    assert_eq!(answers(&again).await, before);
    again.close().await.unwrap();
}
