//! Old on-disk formats keep opening: `fixtures/format-v1` was written by format version 1 and
//! is checked in. `cargo test -p strata-log --test fixture -- --ignored write_fixture`
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

#[tokio::test]
async fn format_v1_fixture_opens_and_reads() {
    // Work on a copy: opening may rewrite the derived index file.
    let tmp = tempfile::tempdir().unwrap();
    for entry in walk(&fixture_dir()) {
        let rel = entry.strip_prefix(fixture_dir()).unwrap();
        let to = tmp.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
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
