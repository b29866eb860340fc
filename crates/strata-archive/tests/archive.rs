//! Archiving the embedded store's sealed segments, restoring them, and what a damaged or
//! foreign archive answers: against a local directory always, and against a real
//! S3-compatible server when `STRATA_TEST_S3_ENDPOINT` names one (`.ci/run` starts one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use strata_archive::{Archive, ArchiveError, KeepLocal};
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

/// A store's data directory, an archive's, and one for restores.
fn three_dirs() -> (tempfile::TempDir, tempfile::TempDir, tempfile::TempDir) {
    (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    )
}

fn open_store(dir: &Path) -> LogStore {
    LogStore::open_with(dir, config()).unwrap()
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

fn ev(i: usize) -> EventData {
    EventData::json(
        "Deposited",
        &serde_json::json!({ "amount": i, "pad": "x".repeat(300) }),
    )
    .unwrap()
}

/// `rounds` rounds of one event in each of 20 streams, from round `from`.
async fn fill(store: &LogStore, from: usize, rounds: usize) {
    for round in from..from + rounds {
        for s in 0..20 {
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
}

/// Every answer a reader gets (see [`strata_testkit::every_answer`]) for the test's streams.
async fn answers(store: &LogStore) -> String {
    let streams: Vec<StreamId> = (0..20).map(|s| sid(&format!("account-{s}"))).collect();
    strata_testkit::every_answer(store, &streams).await
}

/// Runs a scavenge; returns the events it removed.
async fn scavenged(store: &LogStore) -> u64 {
    let report = store.scavenge(&|_| {}).await.unwrap();
    report.progress.events_removed
}

fn open_local(dir: &Path) -> Archive {
    Archive::open(&dir.display().to_string()).unwrap()
}

/// The archive's files, by name under `segments/`.
fn archived(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// A store archived twice as it grows restores, each time, to exactly what it answered when
/// archived; the restored store appends after the last archived position; a second archive
/// run copies only the segments sealed since.
async fn round_trip(archive: &Archive) {
    let (data, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = open_store(data.path());
    fill(&store, 0, 10).await;
    store
        .delete_stream(&sid("account-3"), ExpectedVersion::Any)
        .await
        .unwrap();
    let meta = StreamMetadata {
        max_count: Some(4),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&sid("account-4"), ExpectedVersion::Any, meta)
        .await
        .unwrap();
    store.seal_open_segment().await.unwrap();
    let first = store.sealed_files().await.unwrap().segments.len() as u64;
    assert!(first >= 3, "the store spans several segments ({first})");
    let report = archive.archive_store(&store, &|_| {}).await.unwrap();
    assert_eq!(report.segments, first);
    assert_eq!(report.already_archived, 0);
    assert_eq!(
        report.events, 202,
        "200 deposits, a deletion and a metadata event"
    );
    let archived_answers = answers(&store).await;

    // Appends after the archive are not in it.
    fill(&store, 10, 2).await;
    let target = scratch.path().join("restored");
    let restored = archive.restore(&target, &|_| {}).await.unwrap();
    assert_eq!(restored.segments, first);
    assert_eq!(restored.events, 202);
    let back = LogStore::open(&target).unwrap();
    assert_eq!(answers(&back).await, archived_answers);
    let next = back
        .append(&sid("account-0"), ExpectedVersion::Any, vec![ev(99)])
        .await
        .unwrap();
    assert_eq!(next.positions[0].0, restored.next_position);
    assert_eq!(next.stream_version, 10);
    back.close().await.unwrap();
    let verified = strata_log::verify(&target).unwrap();
    assert_eq!(verified.events, 203);

    // The second run copies what was sealed since, and nothing twice.
    store.seal_open_segment().await.unwrap();
    let second = archive.archive_store(&store, &|_| {}).await.unwrap();
    assert_eq!(second.already_archived, first);
    assert_eq!(second.events, 40);
    assert_eq!(
        archive
            .archive_store(&store, &|_| {})
            .await
            .unwrap()
            .segments,
        0,
        "a third run with nothing new sealed"
    );
    let target = scratch.path().join("restored-again");
    archive.restore(&target, &|_| {}).await.unwrap();
    let again = LogStore::open(&target).unwrap();
    assert_eq!(answers(&again).await, answers(&store).await);
    again.close().await.unwrap();

    let checked = archive.verify(scratch.path()).await.unwrap();
    assert_eq!(checked.events, 242);
    assert_eq!(checked.store.events, 242);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_local_archive_restores_what_was_archived() {
    let copies = tempfile::tempdir().unwrap();
    round_trip(&open_local(copies.path())).await;
    // What a plain listing of the archive shows: a root object and, per segment, its
    // two files and a manifest.
    assert!(copies.path().join("strata-archive.json").is_file());
    let segs = archived(copies.path(), "seg");
    assert_eq!(segs.len(), archived(copies.path(), "idx").len());
    assert_eq!(segs.len(), archived(copies.path(), "json").len());
}

/// Sealed segments given back to the archive after it holds them: every answer the same,
/// after more appends and archive runs, and after a reopen (with the archive given, and for
/// a local archive also from the address the stubs record); restores and checks still whole.
async fn evicted_round_trip(archive: &Archive, reopen_from_stubs: bool) {
    let (data, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = open_store(data.path());
    fill(&store, 0, 10).await;
    store.seal_open_segment().await.unwrap();
    let sealed = store.sealed_files().await.unwrap().segments.len() as u64;
    let before = answers(&store).await;
    // Nothing archived yet: nothing to give back.
    let none = archive.evict_archived(&store, 0).await.unwrap();
    assert_eq!(none.evicted, 0);
    archive.archive_store(&store, &|_| {}).await.unwrap();
    let bytes_before = local_segment_bytes(data.path());
    let report = archive.evict_archived(&store, 1).await.unwrap();
    assert_eq!(report.evicted, sealed - 1, "{report:?}");
    assert_eq!(
        local_segment_bytes(data.path()),
        bytes_before - report.bytes,
        "their files are gone"
    );
    assert_eq!(
        answers(&store).await,
        before,
        "reads fall through to the archive"
    );

    fill(&store, 10, 3).await;
    store.seal_open_segment().await.unwrap();
    let second = archive.archive_store(&store, &|_| {}).await.unwrap();
    assert!(second.segments > 0 && second.already_archived == sealed);
    let all = archive.evict_archived(&store, 0).await.unwrap();
    assert!(all.evicted > 1);
    let now_sealed = store.sealed_files().await.unwrap().segments.len() as u64;
    assert_eq!(
        all.archived_segments, now_sealed,
        "every sealed segment is archived"
    );
    let after = answers(&store).await;
    store.close().await.unwrap();

    let with_archive = LogConfig {
        archive: Some(archive.segment_source().unwrap()),
        ..config()
    };
    let back = LogStore::open_with(data.path(), with_archive).unwrap();
    assert_eq!(answers(&back).await, after);
    back.close().await.unwrap();
    if reopen_from_stubs {
        let back = strata_archive::open_store(data.path(), config()).unwrap();
        assert_eq!(answers(&back).await, after);
        back.close().await.unwrap();
        let checked = strata_archive::verify_store(data.path()).unwrap();
        assert_eq!(
            checked.events, 260,
            "every deposit, archived ones checked too"
        );
    }
    let target = scratch.path().join("restored");
    archive.restore(&target, &|_| {}).await.unwrap();
    let restored = LogStore::open(&target).unwrap();
    assert_eq!(
        answers(&restored).await,
        after,
        "the archive restores as before"
    );
    restored.close().await.unwrap();
}

fn local_segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Segments of several MiB given back: reads going through them ask for several blocks in
/// one request, split back into blocks; every answer is the same.
async fn long_reads_through(archive: &Archive) {
    let data = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 8 << 20,
        ..config()
    };
    let store = LogStore::open_with(data.path(), config.clone()).unwrap();
    for round in 0..12 {
        for s in 0..20 {
            let e = EventData::json(
                "Deposited",
                &serde_json::json!({ "round": round, "pad": "y".repeat(20_000 + s) }),
            )
            .unwrap();
            store
                .append(&sid(&format!("account-{s}")), ExpectedVersion::Any, vec![e])
                .await
                .unwrap();
        }
    }
    store.seal_open_segment().await.unwrap();
    archive.archive_store(&store, &|_| {}).await.unwrap();
    let before = answers(&store).await;
    let report = archive.evict_archived(&store, 0).await.unwrap();
    assert!(report.evicted >= 1 && report.bytes > 4 << 20, "{report:?}");
    store.close().await.unwrap();
    let store = LogStore::open_with(
        data.path(),
        LogConfig {
            archive: Some(archive.segment_source().unwrap()),
            ..config
        },
    )
    .unwrap();
    assert_eq!(answers(&store).await, before);
    let stats = store.archive_cache().unwrap();
    assert!(stats.fetches >= 4, "{stats:?}");
    store.close().await.unwrap();
}

#[tokio::test]
async fn long_reads_through_a_local_archive_answer_alike() {
    let copies = tempfile::tempdir().unwrap();
    long_reads_through(&open_local(copies.path())).await;
}

#[tokio::test]
async fn long_reads_through_an_s3_archive_answer_alike() {
    let Some(archive) = fresh_s3_archive("long").await else {
        return;
    };
    long_reads_through(&archive).await;
}

#[tokio::test]
async fn segments_given_back_to_a_local_archive_are_read_from_it() {
    let copies = tempfile::tempdir().unwrap();
    evicted_round_trip(&open_local(copies.path()), true).await;
}

/// What stays local: segments holding recent events, or positions at or above a mark, or the
/// newest few; the rest are given back.
#[tokio::test]
async fn what_stays_local_is_what_a_rule_keeps() {
    let (data, copies, _) = three_dirs();
    let archive = open_local(copies.path());
    let store = open_store(data.path());
    fill(&store, 0, 10).await;
    store.seal_open_segment().await.unwrap();
    let sealed = store.sealed_files().await.unwrap().segments;
    assert!(sealed.len() >= 4);
    archive.archive_store(&store, &|_| {}).await.unwrap();
    let hour = std::time::Duration::from_secs(3600);
    let recent = KeepLocal::newest_segments(0).newer_than(hour);
    let kept = archive.evict_archived_with(&store, &recent).await.unwrap();
    assert_eq!(kept.evicted, 0, "every event is recent: {kept:?}");
    assert!(
        kept.missing.is_empty() && kept.differ.is_empty(),
        "{kept:?}"
    );
    // A pass that gives nothing back leaves the store as it was: no archive to read from.
    assert!(store.archive_cache().is_none());
    assert_eq!(store.backend_metrics().await.unwrap(), "");
    // Segments ending at or below the second's end go; the rest stay.
    let mark = sealed[1].end_position;
    let from = KeepLocal::newest_segments(0).from_position(mark);
    let some = archive.evict_archived_with(&store, &from).await.unwrap();
    assert_eq!(some.evicted, 2, "{some:?}");
    let answers_now = answers(&store).await;
    let all = KeepLocal::newest_segments(1).newer_than(std::time::Duration::ZERO);
    let rest = archive.evict_archived_with(&store, &all).await.unwrap();
    assert_eq!(rest.evicted, sealed.len() as u64 - 3, "{rest:?}");
    assert_eq!(answers(&store).await, answers_now);
    store.close().await.unwrap();
}

/// A segment whose archived object is gone or cut short (a lifecycle rule, a hand) is not
/// given back: its local file is the only copy.
#[tokio::test]
async fn a_segment_missing_from_the_archive_stays_local() {
    let (data, copies, _) = three_dirs();
    let archive = open_local(copies.path());
    let store = open_store(data.path());
    fill(&store, 0, 10).await;
    store.seal_open_segment().await.unwrap();
    let sealed = store.sealed_files().await.unwrap().segments.len() as u64;
    archive.archive_store(&store, &|_| {}).await.unwrap();
    let segs = archived(copies.path(), "seg");
    std::fs::remove_file(&segs[0]).unwrap();
    let cut = std::fs::read(&segs[1]).unwrap();
    std::fs::write(&segs[1], &cut[..cut.len() - 8]).unwrap();
    let report = archive.evict_archived(&store, 0).await.unwrap();
    assert_eq!(report.evicted, sealed - 2, "{report:?}");
    assert_eq!(report.missing, vec![0, 1], "{report:?}");
    assert!(report.differ.is_empty(), "{report:?}");
    for no in [0, 1] {
        let (name, _) = strata_log::sealed_file_names(no);
        assert!(data.path().join("segments").join(name).is_file());
    }
    store.close().await.unwrap();
}

/// A scavenged store's rewritten segments (format version 2) archive and restore too.
#[tokio::test]
async fn scavenged_segments_archive_and_restore() {
    let (data, copies, scratch) = three_dirs();
    let store = open_store(data.path());
    fill(&store, 0, 10).await;
    for s in 0..15 {
        store
            .delete_stream(&sid(&format!("account-{s}")), ExpectedVersion::Any)
            .await
            .unwrap();
    }
    let removed = store
        .scavenge(&|_| {})
        .await
        .unwrap()
        .progress
        .events_removed;
    assert_eq!(
        removed,
        15 * 8,
        "each deleted stream keeps its first and last"
    );
    store.seal_open_segment().await.unwrap();
    let archive = open_local(copies.path());
    archive.archive_store(&store, &|_| {}).await.unwrap();
    let target = scratch.path().join("restored");
    archive.restore(&target, &|_| {}).await.unwrap();
    let back = LogStore::open(&target).unwrap();
    assert_eq!(answers(&back).await, answers(&store).await);
    back.close().await.unwrap();
    archive.verify(scratch.path()).await.unwrap();
    store.close().await.unwrap();
}

/// An archived store: its data directory, the archive's directory, and the archive.
async fn archived_store() -> (tempfile::TempDir, tempfile::TempDir, Archive) {
    let (data, copies) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = open_store(data.path());
    fill(&store, 0, 10).await;
    store.seal_open_segment().await.unwrap();
    let archive = open_local(copies.path());
    archive.archive_store(&store, &|_| {}).await.unwrap();
    store.close().await.unwrap();
    (data, copies, archive)
}

/// A damaged or missing archived file is named by the restore and by the check, and the
/// target directory is left as it was (not there).
#[tokio::test]
async fn a_damaged_archive_is_named_and_restores_nothing() {
    let (_data, copies, archive) = archived_store().await;
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("restored");
    let expect_damaged = |e: ArchiveError, object: &str, reason: &str| match e {
        ArchiveError::Damaged {
            object: o,
            reason: r,
        } => {
            assert!(o.ends_with(object), "{o} names {object}");
            assert!(r.contains(reason), "{r} says {reason}");
        }
        other => panic!("expected Damaged, got {other:?}"),
    };

    // One byte of a segment flipped.
    let seg = archived(copies.path(), "seg")[1].clone();
    let name = seg.file_name().unwrap().to_str().unwrap().to_owned();
    let good = std::fs::read(&seg).unwrap();
    let mut bad = good.clone();
    bad[200] ^= 1;
    std::fs::write(&seg, &bad).unwrap();
    let e = archive.restore(&target, &|_| {}).await.unwrap_err();
    expect_damaged(e, &name, "SHA-256");
    assert!(!target.exists(), "a failed restore leaves nothing");
    let e = archive.verify(scratch.path()).await.unwrap_err();
    expect_damaged(e, &name, "SHA-256");
    std::fs::write(&seg, &good).unwrap();

    // An index file missing.
    let idx = archived(copies.path(), "idx")[0].clone();
    let idx_name = idx.file_name().unwrap().to_str().unwrap().to_owned();
    let kept = std::fs::read(&idx).unwrap();
    std::fs::remove_file(&idx).unwrap();
    let e = archive.restore(&target, &|_| {}).await.unwrap_err();
    expect_damaged(e, &idx_name, "missing");
    std::fs::write(&idx, &kept).unwrap();

    // A manifest missing between two others (a missing last one is a segment not archived
    // yet).
    assert!(archived(copies.path(), "json").len() >= 3);
    let manifest = archived(copies.path(), "json")[1].clone();
    let m_name = manifest.file_name().unwrap().to_str().unwrap().to_owned();
    let kept = std::fs::read(&manifest).unwrap();
    std::fs::remove_file(&manifest).unwrap();
    let e = archive.restore(&target, &|_| {}).await.unwrap_err();
    expect_damaged(e, &m_name, "missing");
    std::fs::write(&manifest, &kept).unwrap();

    // A manifest that lies about the events its segment holds, with a matching digest.
    let mut m: serde_json::Value = serde_json::from_slice(&kept).unwrap();
    m["events"] = serde_json::json!(m["events"].as_u64().unwrap() - 1);
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let e = archive.restore(&target, &|_| {}).await.unwrap_err();
    expect_damaged(e, &name, "manifest names segment");
    std::fs::write(&manifest, &kept).unwrap();

    // Manifests whose chain breaks, or whose segment's salt is not the one they name.
    let mut m: serde_json::Value = serde_json::from_slice(&kept).unwrap();
    m["first_position"] = serde_json::json!(m["first_position"].as_u64().unwrap() + 1);
    m["end_position"] = serde_json::json!(m["end_position"].as_u64().unwrap() + 1);
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let e = archive.restore(&target, &|_| {}).await.unwrap_err();
    expect_damaged(e, &m_name, "where the segment before ends");
    let mut m: serde_json::Value = serde_json::from_slice(&kept).unwrap();
    m["salt"] = serde_json::json!("0000000000000001");
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let e = archive.restore(&target, &|_| {}).await.unwrap_err();
    expect_damaged(e, &name, "(salt 0000000000000001)");
    std::fs::write(&manifest, &kept).unwrap();

    // Every failed restore above removed what it had built.
    let left: Vec<String> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // Whole again, it restores.
    archive.restore(&target, &|_| {}).await.unwrap();
}

/// A run that dies before its end leaves segments the mark does not cover: a restore goes
/// as far as the last whole run reached, no further.
#[tokio::test]
async fn a_restore_goes_as_far_as_the_last_whole_run() {
    let (data, copies, scratch) = three_dirs();
    let store = open_store(data.path());
    let archive = open_local(copies.path());
    fill(&store, 0, 5).await;
    store.seal_open_segment().await.unwrap();
    let first = archive.archive_store(&store, &|_| {}).await.unwrap();
    let mark = std::fs::read(copies.path().join("strata-archive-complete.json")).unwrap();
    fill(&store, 5, 5).await;
    store.seal_open_segment().await.unwrap();
    let second = archive.archive_store(&store, &|_| {}).await.unwrap();
    assert!(second.segments > 0);
    // As if the second run had died after its segments, before its mark.
    std::fs::write(copies.path().join("strata-archive-complete.json"), &mark).unwrap();
    let target = scratch.path().join("restored");
    let restored = archive.restore(&target, &|_| {}).await.unwrap();
    assert_eq!(restored.events, first.events);
    assert_eq!(restored.next_position, first.archived_below);
    // The next run writes the mark again, and a restore then goes all the way.
    archive.archive_store(&store, &|_| {}).await.unwrap();
    let restored_all = archive
        .restore(&scratch.path().join("restored-all"), &|_| {})
        .await
        .unwrap();
    assert_eq!(restored_all.events, first.events + second.events);

    // Had the second run died before its mark, and the store been lost: the store restored
    // then goes on from the mark and archives to the same place, the segments the unfinished
    // run left above the mark written again; the lost store, were it back, has diverged.
    std::fs::write(copies.path().join("strata-archive-complete.json"), &mark).unwrap();
    let back = open_store(&target);
    fill(&back, 100, 3).await;
    back.seal_open_segment().await.unwrap();
    let again = archive.archive_store(&back, &|_| {}).await.unwrap();
    assert!(again.segments > 0);
    let whole = archive
        .restore(&scratch.path().join("restored-after"), &|_| {})
        .await
        .unwrap();
    assert_eq!(whole.events, first.events + 60);
    back.close().await.unwrap();
    let e = archive.archive_store(&store, &|_| {}).await.unwrap_err();
    assert!(matches!(e, ArchiveError::Diverged { .. }), "{e:?}");
    store.close().await.unwrap();
}

/// Two copies of one store that went separate ways cannot both archive to one place: the
/// second is told where they differ, and the archive is left as the first wrote it.
#[tokio::test]
async fn copies_of_a_store_that_diverged_do_not_share_an_archive() {
    let (data, copies, scratch) = three_dirs();
    let store = open_store(data.path());
    fill(&store, 0, 5).await;
    store.seal_open_segment().await.unwrap();
    let archive = open_local(copies.path());
    archive.archive_store(&store, &|_| {}).await.unwrap();
    store.close().await.unwrap();
    // The copy: restored from the archive; then each grows its own way.
    let twin_dir = scratch.path().join("twin");
    archive.restore(&twin_dir, &|_| {}).await.unwrap();
    let store = open_store(data.path());
    let twin = LogStore::open_with(&twin_dir, config()).unwrap();
    fill(&store, 5, 5).await;
    fill(&twin, 50, 5).await;
    store.seal_open_segment().await.unwrap();
    twin.seal_open_segment().await.unwrap();
    archive.archive_store(&store, &|_| {}).await.unwrap();
    let e = archive.archive_store(&twin, &|_| {}).await.unwrap_err();
    assert!(matches!(e, ArchiveError::Diverged { .. }), "{e:?}");
    let restored = archive
        .restore(&scratch.path().join("back"), &|_| {})
        .await
        .unwrap();
    assert_eq!(restored.events, 200);
    store.close().await.unwrap();
    twin.close().await.unwrap();
}

/// The sealed files handed out are the files as they were when handed out. A scavenge after
/// a close and a reopen rewrites the segment under its name and frees the old file a few MiB
/// at a time: read through the held handle, it is the old segment whole or an error (its
/// blocks read as zeros), never a crash and never the new segment.
#[tokio::test]
async fn held_sealed_files_read_whole_or_fail_after_a_scavenge_elsewhere() {
    let data = tempfile::tempdir().unwrap();
    let store = open_store(data.path());
    fill(&store, 0, 5).await;
    for s in 0..10 {
        store
            .delete_stream(&sid(&format!("account-{s}")), ExpectedVersion::Any)
            .await
            .unwrap();
    }
    store.seal_open_segment().await.unwrap();
    let held = store.sealed_files().await.unwrap();
    let seg = held.segments[0].clone();
    let before =
        strata_log::check_sealed_segment_file(seg.segment_file.as_ref().unwrap(), seg.end_position)
            .unwrap();
    store.close().await.unwrap();
    let store = open_store(data.path());
    assert!(scavenged(&store).await > 0);
    let now = strata_log::check_sealed_segment(&seg.segment_path, seg.end_position).unwrap();
    assert!(now.header.scavenged && now.events < before.events);
    match strata_log::check_sealed_segment_file(
        seg.segment_file.as_ref().unwrap(),
        seg.end_position,
    ) {
        Ok(still) => assert_eq!(still, before),
        // Its blocks given back: zeros, which no check takes for a segment.
        Err(e) => assert!(!e.is_empty()),
    }
    drop(held);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_restore_into_a_directory_with_anything_in_it_is_refused() {
    let (data, _copies, archive) = archived_store().await;
    let e = archive.restore(data.path(), &|_| {}).await.unwrap_err();
    assert!(matches!(e, ArchiveError::NotEmpty { .. }), "{e:?}");
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("note.txt"), "mine").unwrap();
    let e = archive.restore(scratch.path(), &|_| {}).await.unwrap_err();
    assert!(matches!(e, ArchiveError::NotEmpty { .. }), "{e:?}");
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("note.txt")).unwrap(),
        "mine"
    );
    // An empty directory is fine.
    let empty = scratch.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    archive.restore(&empty, &|_| {}).await.unwrap();
    assert!(empty.join("segments").is_dir());
}

#[tokio::test]
async fn an_archive_holds_one_store() {
    let (_data, copies, _archive) = archived_store().await;
    let other = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(other.path(), config()).unwrap();
    fill(&store, 0, 3).await;
    store.seal_open_segment().await.unwrap();
    let e = open_local(copies.path())
        .archive_store(&store, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, ArchiveError::OtherStore { .. }), "{e:?}");
    store.close().await.unwrap();
}

#[tokio::test]
async fn an_empty_archive_restores_nothing_and_bad_addresses_are_refused() {
    let copies = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let e = open_local(copies.path())
        .restore(&scratch.path().join("x"), &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, ArchiveError::Empty { .. }), "{e:?}");
    for url in ["", "gs://bucket/x", "file://relative/path", "s3:///prefix"] {
        let e = Archive::open(url).unwrap_err();
        assert!(
            matches!(e, ArchiveError::InvalidAddress { .. }),
            "{url}: {e:?}"
        );
    }
}

/// While the sealed files are held (an archive copying them), a scavenge waits its turn, and
/// an archive waits for a scavenge's.
#[tokio::test]
async fn archives_and_scavenges_take_turns() {
    let (data, copies) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = open_store(data.path());
    fill(&store, 0, 3).await;
    let held = store.sealed_files().await.unwrap();
    let e = store.scavenge(&|_| {}).await.unwrap_err();
    assert!(
        matches!(e, strata_core::scavenge::ScavengeError::AlreadyRunning),
        "{e:?}"
    );
    let e = open_local(copies.path())
        .archive_store(&store, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, ArchiveError::Busy), "{e:?}");
    drop(held);
    store.scavenge(&|_| {}).await.unwrap();
    store.close().await.unwrap();
}

/// The S3-compatible server `.ci/run` starts (`STRATA_TEST_S3_ENDPOINT`, e.g.
/// `http://127.0.0.1:5005`); a bucket of its own per test.
fn s3_endpoint() -> Option<String> {
    match std::env::var("STRATA_TEST_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "STRATA_TEST_S3_ENDPOINT is not set under CI: .ci/run starts an S3-compatible server and sets it"
            );
            eprintln!("skipped: STRATA_TEST_S3_ENDPOINT is not set (no S3-compatible server to test against)");
            None
        }
    }
}

/// Creates a bucket on the S3-compatible server with a plain HTTP request (the server takes
/// any credentials).
async fn create_bucket(endpoint: &str, bucket: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = tokio::net::TcpStream::connect(host)
        .await
        .unwrap_or_else(|e| panic!("the S3-compatible server at {endpoint} is unreachable: {e}"));
    let req = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "creating bucket {bucket}: {answer}"
    );
}

/// An archive at `prefix` in a new bucket of the S3-compatible server, when there is one.
async fn fresh_s3_archive(prefix: &str) -> Option<Archive> {
    let endpoint = s3_endpoint()?;
    let bucket = format!("strata-{}", uuid::Uuid::new_v4().simple());
    create_bucket(&endpoint, &bucket).await;
    Some(s3_archive(&endpoint, &bucket, prefix))
}

fn s3_archive(endpoint: &str, bucket: &str, prefix: &str) -> Archive {
    Archive::open_with_options(
        &format!("s3://{bucket}/{prefix}"),
        [
            ("aws_endpoint", endpoint),
            ("aws_access_key_id", "strata"),
            ("aws_secret_access_key", "strata"),
            ("aws_region", "us-east-1"),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn an_s3_archive_restores_what_was_archived() {
    let Some(archive) = fresh_s3_archive("archive/one").await else {
        return;
    };
    round_trip(&archive).await;
}

#[tokio::test]
async fn segments_given_back_to_an_s3_archive_are_read_from_it() {
    let Some(archive) = fresh_s3_archive("evicted").await else {
        return;
    };
    evicted_round_trip(&archive, false).await;
}

#[tokio::test]
async fn an_unreachable_s3_archive_is_a_typed_error() {
    let (data, _copies) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = open_store(data.path());
    fill(&store, 0, 3).await;
    store.seal_open_segment().await.unwrap();
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let archive = Archive::open_with_options(
        "s3://nowhere/x",
        [
            ("aws_endpoint", format!("http://127.0.0.1:{port}")),
            ("aws_access_key_id", "k".to_owned()),
            ("aws_secret_access_key", "s".to_owned()),
        ],
    )
    .unwrap();
    let e = archive.archive_store(&store, &|_| {}).await.unwrap_err();
    assert!(matches!(e, ArchiveError::Unavailable { .. }), "{e:?}");
    // The store goes on.
    fill(&store, 3, 1).await;
    store.close().await.unwrap();
}

/// The archive is readable without Strata: `scripts/strata-archive-read.py`, standard-library
/// Python following docs/format.md, checks every file's SHA-256 and record's CRC32C and prints
/// the events the archive holds (here, with no deletion, every event of the store), in their
/// order, with their ids, versions and data.
#[tokio::test]
async fn a_plain_script_reads_the_archive_without_strata() {
    let (_data, copies, _archive) = archived_store().await;
    let restored = tempfile::tempdir().unwrap();
    let target = restored.path().join("store");
    open_local(copies.path())
        .restore(&target, &|_| {})
        .await
        .unwrap();
    let store = LogStore::open(&target).unwrap();
    let events = store
        .read_all(ReadAllOptions::forward().limit(10_000))
        .await
        .unwrap()
        .events;
    store.close().await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/strata-archive-read.py");
    let out = match std::process::Command::new("python3")
        .arg(&script)
        .arg(copies.path())
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "python3 is missing under CI: {e}"
            );
            eprintln!("skipped: no python3 ({e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), events.len());
    for (line, e) in lines.iter().zip(&events) {
        assert_eq!(line["position"], e.position.0);
        assert_eq!(line["stream"], e.stream_id.as_str());
        assert_eq!(line["version"], e.stream_version);
        assert_eq!(line["type"], e.event_type.as_str());
        assert_eq!(line["id"], e.event_id.to_string());
        let data: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
        assert_eq!(line["data"], data);
    }

    // A flipped byte inside a record, its manifest's digest made to match: the CRC finds it.
    let seg = archived(copies.path(), "seg")[0].clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[64 + 70] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let manifest = archived(copies.path(), "json")[0].clone();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    use sha2::Digest;
    m["files"][0]["sha256"] = serde_json::json!(hex::encode(sha2::Sha256::digest(&bytes)));
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(copies.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fails its CRC"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Segments archived between two scavenges that both removed versions of one stream: the
/// first scavenge's copy of an early segment, an untouched middle one, the second's copy of a
/// later one. The restored store opens, with the answers of the store: the versions between
/// the two runs, which the second scavenge removed from the store, are left out.
#[tokio::test]
async fn segments_archived_between_scavenges_restore() {
    let (data, copies, scratch) = three_dirs();
    let store = open_store(data.path());
    let archive = open_local(copies.path());
    let x = sid("account-x");
    let append_x = |n: usize| {
        let store = store.clone();
        let x = x.clone();
        async move {
            for i in 0..n {
                store
                    .append(&x, ExpectedVersion::Any, vec![ev(i)])
                    .await
                    .unwrap();
                fill(&store, 0, 1).await;
            }
        }
    };
    append_x(6).await;
    store.truncate_stream(&x, 3).await.unwrap();
    assert!(scavenged(&store).await > 0);
    // The first scavenge's segments archived: account-x's versions 0..3 removed there.
    archive.archive_store(&store, &|_| {}).await.unwrap();
    append_x(6).await;
    store.seal_open_segment().await.unwrap();
    // Versions 3..6 in an archived segment, 6..12 in segments sealed since.
    store.truncate_stream(&x, 10).await.unwrap();
    store.scavenge(&|_| {}).await.unwrap();
    archive.archive_store(&store, &|_| {}).await.unwrap();
    let target = scratch.path().join("restored");
    let restored = archive.restore(&target, &|_| {}).await.unwrap();
    // Versions 3..6, removed by the second scavenge, were archived before it.
    assert_eq!(restored.removed, 3);
    let back = LogStore::open(&target).unwrap();
    assert_eq!(answers(&back).await, answers(&store).await);
    let checked = archive.verify(scratch.path()).await.unwrap();
    assert_eq!(checked.events, checked.store.events);
    let xs = |s: &LogStore| {
        let (s, x) = (s.clone(), x.clone());
        async move {
            format!(
                "{:?}",
                s.read_stream(&x, ReadStreamOptions::forward()).await
            )
        }
    };
    assert_eq!(xs(&back).await, xs(&store).await);
    back.close().await.unwrap();
    store.close().await.unwrap();
}
