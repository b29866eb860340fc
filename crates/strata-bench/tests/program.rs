//! The `strata-bench` program end to end: `--large` fills a store, opens it in fresh
//! processes (`open-measure`) with and without its index file, and removes it afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_strata-bench");

fn strata_bench(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("STRATA_SERVER")
        .env_remove("STRATA_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn large_opens_the_store_in_fresh_processes_with_and_without_its_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("large");
    let out = strata_bench(&[
        "--large".as_ref(),
        "2000".as_ref(),
        "--dir".as_ref(),
        dir.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (run, index_loaded) in [
        ("withIndex", true),
        ("fromSegmentIndexes", false),
        ("rebuilt", false),
    ] {
        assert_eq!(v[run]["events"], 2000, "{v}");
        assert_eq!(v[run]["index_loaded"], index_loaded, "{v}");
        let rss = v[run]["rss_bytes"].as_u64().unwrap();
        let anon = v[run]["rss_anon_bytes"].as_u64().unwrap();
        assert!(anon > 0 && anon <= rss, "{v}");
        // The long stream has one event in every 10,000: its first here, read cold and warm.
        assert_eq!(v[run]["long_stream_events"], 1, "{v}");
        assert!(v[run]["long_stream_cold_us"].as_u64().unwrap() > 0, "{v}");
        // Every stream read at random was found (one without events fails the run).
        assert_eq!(v[run]["random_streams_read"], 10_000, "{v}");
        assert!(
            v[run]["rss_after_random_streams_bytes"].as_u64().unwrap() > 0,
            "{v}"
        );
    }
    // The last open read every event from the log (the events fit in one segment, so the
    // second did too); the first read none of them.
    assert_eq!(v["rebuilt"]["events_scanned"], 2000, "{v}");
    assert_eq!(v["withIndex"]["events_scanned"], 0, "{v}");
    assert!(!dir.exists(), "the store is removed afterwards");
}

#[test]
fn open_measure_of_a_store_without_the_benchmark_streams_fails_with_why() {
    let tmp = tempfile::tempdir().unwrap();
    let out = strata_bench(&[
        "open-measure".as_ref(),
        "--data".as_ref(),
        tmp.path().as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("account-7"), "names the stream it read: {err}");
}

#[test]
fn run_options_and_open_measure_do_not_mix() {
    let out = strata_bench(&["--quick".as_ref(), "open-measure".as_ref()]);
    assert_eq!(out.status.code(), Some(2), "a usage error: {out:?}");
    assert!(out.stdout.is_empty(), "nothing ran: {out:?}");
}

#[test]
fn scan_measure_reads_all_of_a_store_in_a_fresh_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    // More events than one page of the scan (10,000), so it must follow `next`.
    let events = 25_000u64;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = strata_log::LogStore::open(&dir).unwrap();
        let target = strata_core::StreamId::new("target-1").unwrap();
        strata_bench::log::populate(&store, events, &target)
            .await
            .unwrap();
        store.close().await.unwrap();
    });
    let out = strata_bench(&["scan-measure".as_ref(), "--data".as_ref(), dir.as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["all_read"]["events"], events, "{v}");
    assert!(v["all_read"]["secs"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn scan_measure_of_a_directory_without_events_fails_with_why() {
    let tmp = tempfile::tempdir().unwrap();
    let out = strata_bench(&[
        "scan-measure".as_ref(),
        "--data".as_ref(),
        tmp.path().join("typo").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no events"), "{err}");
}
