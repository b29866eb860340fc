//! Old on-disk formats keep opening: `fixtures/format-v1` was written by format version 1 and
//! is checked in, and so is `fixtures/format-v1-sealed`, written with 4 KiB segments by the
//! version whose whole index file (`index.bin`) and segment index files were both version 1. `cargo test -p strata-log --test fixture -- --ignored write_fixture`
//! regenerates it (only when the format changes on purpose, with a new directory name).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use strata_core::{
    EventData, EventStore, ExpectedVersion, Metadata, ReadAllOptions, ReadStreamOptions,
    SnapshotStore, StreamId, Uuid,
};
use strata_log::LogStore;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1")
}

fn events() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    vec![
        (
            "account-123",
            "AccountOpened",
            serde_json::json!({"initialBalance": 100}),
        ),
        (
            "account-123",
            "MoneyDeposited",
            serde_json::json!({"amount": 200}),
        ),
        ("order-9", "OrderPlaced", serde_json::json!({"total": 42})),
        (
            "account-123",
            "MoneyWithdrawn",
            serde_json::json!({"amount": 150}),
        ),
    ]
}

#[tokio::test]
#[ignore = "writes the checked-in fixture"]
async fn write_fixture() {
    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let store = LogStore::open(&dir).unwrap();
    for (i, (stream, kind, data)) in events().into_iter().enumerate() {
        let e = EventData::json(kind, &data)
            .unwrap()
            .with_id(Uuid::from_u128(i as u128 + 1))
            .with_metadata(Metadata::new().with_user_id("user-456"));
        store
            .append(
                &StreamId::new(stream).unwrap(),
                ExpectedVersion::Any,
                vec![e],
            )
            .await
            .unwrap();
    }
    store
        .append(
            &StreamId::new("blob-1").unwrap(),
            ExpectedVersion::NoStream,
            vec![
                EventData::binary("Uploaded", "application/octet-stream", vec![0, 1, 2, 255])
                    .with_id(Uuid::from_u128(99)),
            ],
        )
        .await
        .unwrap();
    store
        .save_snapshot(strata_core::Snapshot {
            stream_id: StreamId::new("account-123").unwrap(),
            stream_version: 2,
            schema_version: 1,
            data: br#"{"balance":150}"#.to_vec(),
            taken_at: strata_core::timestamp_from_micros(1_700_000_000_000_000),
        })
        .await
        .unwrap();
    store.close().await.unwrap();
    std::fs::remove_file(dir.join("LOCK")).unwrap();
}

/// A copy of a checked-in fixture: opening may rewrite its derived index files.
fn copy_of(fixture: &std::path::Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in walk(fixture) {
        let rel = entry.strip_prefix(fixture).unwrap();
        let to = tmp.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    tmp
}

#[tokio::test]
async fn format_v1_fixture_opens_and_reads() {
    let tmp = copy_of(&fixture_dir());
    let store = LogStore::open(tmp.path()).unwrap();
    let all = store
        .read_all(ReadAllOptions::forward())
        .await
        .unwrap()
        .events;
    assert_eq!(all.len(), 5);
    for (i, (stream, kind, data)) in events().into_iter().enumerate() {
        let e = &all[i];
        assert_eq!(e.position.0, i as u64);
        assert_eq!(e.stream_id.as_str(), stream);
        assert_eq!(e.event_type, kind);
        assert_eq!(e.event_id, Uuid::from_u128(i as u128 + 1));
        assert_eq!(e.data_as::<serde_json::Value>().unwrap(), data);
        assert_eq!(e.metadata.user_id(), Some("user-456"));
    }
    assert_eq!(all[4].data, vec![0, 1, 2, 255]);
    assert_eq!(all[4].content_type, "application/octet-stream");
    let account = store
        .read_stream(
            &StreamId::new("account-123").unwrap(),
            ReadStreamOptions::forward(),
        )
        .await
        .unwrap();
    assert_eq!(
        account.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let snap = store
        .load_snapshot(&StreamId::new("account-123").unwrap(), 1, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap.stream_version, 2);
    assert_eq!(snap.data, br#"{"balance":150}"#.to_vec());
    drop(store);
    let report = strata_log::verify(tmp.path()).unwrap();
    assert_eq!(report.events, 5);
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The sealed fixture's events: 120 in 7 streams, ids 1 to 120.
fn sealed_event(i: u64) -> (String, String, Uuid) {
    (
        format!("account-{}", i % 7),
        format!("Type{}", i % 3),
        Uuid::from_u128(u128::from(i) + 1),
    )
}

fn sealed_config() -> strata_log::LogConfig {
    strata_log::LogConfig {
        segment_max_bytes: 4096,
        ..strata_log::LogConfig::default()
    }
}

async fn check_sealed_events(store: &LogStore) {
    let all = store
        .read_all(ReadAllOptions::forward())
        .await
        .unwrap()
        .events;
    assert_eq!(all.len(), 120);
    for (i, e) in all.iter().enumerate() {
        let (stream, kind, id) = sealed_event(i as u64);
        assert_eq!(
            (e.stream_id.as_str(), e.event_type.as_str(), e.event_id),
            (stream.as_str(), kind.as_str(), id)
        );
        assert_eq!(e.data_as::<serde_json::Value>().unwrap()["amount"], i);
    }
    // Every id is still known: retrying the first append is answered from the log.
    let (stream, kind, id) = sealed_event(0);
    let retry = EventData::json(kind, &serde_json::json!({ "amount": 0, "pad": "" }))
        .unwrap()
        .with_id(id);
    let r = store
        .append(
            &StreamId::new(stream).unwrap(),
            ExpectedVersion::Any,
            vec![retry],
        )
        .await
        .unwrap();
    assert!(r.replayed);
    assert_eq!(r.positions, vec![strata_core::Position(0)]);
}

/// A store of sealed segments with version 1 index files (whole and per segment) opens from
/// its whole index file, keeping every event id in memory; its segments' index files are
/// written again in the current version in the background, and the ids they hold leave
/// memory; the next open reads them, with only the open segment's ids in memory.
#[tokio::test]
async fn format_v1_sealed_fixture_opens_and_is_converted() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1-sealed");
    for without_segment_index_files in [false, true] {
        let tmp = copy_of(&fixture);
        let seg_dir = tmp.path().join("segments");
        let idx_files = || {
            let mut v: Vec<PathBuf> = walk(&seg_dir)
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "idx"))
                .collect();
            v.sort();
            v
        };
        let sealed = walk(&seg_dir)
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .count() as u64
            - 1;
        assert!(sealed >= 3, "{sealed} sealed segments");
        if without_segment_index_files {
            // As the version before segment index files left it.
            for f in idx_files() {
                std::fs::remove_file(f).unwrap();
            }
        }
        let store = LogStore::open_with(tmp.path(), sealed_config()).unwrap();
        let report = store.open_report().clone();
        assert!(report.index_loaded, "from its version 1 index file");
        assert_eq!(report.segment_indexes_loaded, 0);
        assert_eq!(report.segment_indexes_missing, sealed);
        check_sealed_events(&store).await;
        store.wait_for_segment_indexes().await;
        let stats = store.index_stats();
        assert_eq!(stats.event_id_files, sealed);
        assert!(stats.event_ids_in_memory < 120 / sealed, "{stats:?}");
        check_sealed_events(&store).await;
        store.close().await.unwrap();
        assert_eq!(idx_files().len() as u64, sealed);

        let store = LogStore::open_with(tmp.path(), sealed_config()).unwrap();
        let report = store.open_report().clone();
        assert_eq!(
            (
                report.segment_indexes_loaded,
                report.segment_indexes_missing
            ),
            (sealed, 0)
        );
        assert!(
            report.index_loaded,
            "the open segment's, from the index file"
        );
        assert_eq!(report.events_scanned, 0);
        let stats = store.index_stats();
        assert_eq!(stats.event_id_files, sealed);
        assert!(stats.event_ids_in_memory < 120 / sealed, "{stats:?}");
        check_sealed_events(&store).await;
        store.close().await.unwrap();
        assert_eq!(strata_log::verify(tmp.path()).unwrap().events, 120);
    }
}
