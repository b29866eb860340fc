//! `strata info --store` on the real binary: the embedded store's events, and how many of its
//! event ids are in memory against those looked up in segment index files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_core::{EventData, EventStore, ExpectedVersion, StreamId};
use strata_log::{LogConfig, LogStore};

mod support;
use support::run_cli;

#[test]
fn info_store_reports_the_event_ids_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 4096,
        ..LogConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = LogStore::open_with(dir.path(), config).unwrap();
        for i in 0..300 {
            let s = StreamId::new(format!("account-{}", i % 3)).unwrap();
            let e = EventData::json("Deposited", &serde_json::json!({ "amount": i })).unwrap();
            store
                .append(&s, ExpectedVersion::Any, vec![e])
                .await
                .unwrap();
        }
        store.close().await.unwrap();
    });
    let sealed = support::segment_files(dir.path(), "seg") - 1;
    assert!(sealed >= 5, "{sealed} sealed segments");
    let data = dir.path().to_str().unwrap();
    let (ok, out, err) = run_cli(&["--data", data, "--json", "info", "--store"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["events"], 300);
    assert_eq!(v["eventIdFiles"], sealed);
    assert!(
        v["eventIdsInMemory"].as_u64().unwrap() < 300 / sealed * 2,
        "{v}"
    );
    assert!(v["eventIdBytes"].as_u64().unwrap() > 0);
    let (ok, out, _) = run_cli(&["--data", data, "info", "--store"]);
    assert!(ok);
    assert!(out.contains("events                300"), "{out}");

    // Only the embedded store has one.
    let (ok, _, err) = run_cli(&["--server", "http://127.0.0.1:9", "info", "--store"]);
    assert!(!ok);
    assert!(
        err.contains("--store describes the embedded store"),
        "{err}"
    );
}
