//! `strata verify` and `strata repair` on the real binary: exit 0 for a sound data directory
//! (also with a torn, never acknowledged tail), 2 when acknowledged events are missing or a
//! record is corrupt, 1 when the check cannot run; `repair` reports what it would cut, cuts it
//! only with `--accept-data-loss`, and the store is sound afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_core::{EventData, EventStore, ExpectedVersion, StreamId};
use strata_log::LogStore;

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// Runs `strata --data DIR ARGS`: (exit code, stdout, stderr).
fn strata(data: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("STRATA_SERVER")
        .env_remove("STRATA_DATA")
        .env_remove("STRATA_DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn append_n(store: &LogStore, n: usize) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async {
            for i in 0..n {
                let s = StreamId::new(format!("account-{}", i % 3)).unwrap();
                let e = EventData::json("Deposited", &serde_json::json!({ "amount": i })).unwrap();
                store
                    .append(&s, ExpectedVersion::Any, vec![e])
                    .await
                    .unwrap();
            }
        });
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

/// Offsets of the records of a segment file, read from their length fields.
fn record_offsets(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 64usize;
    while at + 64 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len < 64 || at + len > bytes.len() {
            break;
        }
        out.push(at as u64);
        at += len.div_ceil(8) * 8;
    }
    out
}

fn set_len(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn verify_exits_0_when_sound_and_2_when_acknowledged_events_are_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store = LogStore::open(&data).unwrap();
    append_n(&store, 40);
    store.checkpoint_index().unwrap();
    let index_at_40 = std::fs::read(data.join("index.bin")).unwrap();
    append_n(&store, 1);
    drop(store);

    let (code, out, err) = strata(&data, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK: 41 events"), "{out}");
    assert!(out.contains("records 41 acknowledged events"), "{out}");

    // A torn write past everything the index file records (as a crash leaves it): exit 0,
    // with a note.
    let seg = last_segment(&data);
    let full = std::fs::read(&seg).unwrap();
    let offsets = record_offsets(&seg);
    std::fs::write(data.join("index.bin"), &index_at_40).unwrap();
    set_len(&seg, offsets[40] + 30);
    let (code, out, err) = strata(&data, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("note: an incomplete write"), "{out}");

    // Cut below what the index file records: exit 2, naming the file, the position and the
    // count; repair without the flag changes nothing and exits 2 as well.
    set_len(&seg, offsets[25] + 10);
    for args in [&["verify"][..], &["repair"][..], &["read", "$all"][..]] {
        let (code, out, err) = strata(&data, args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains("acknowledged events are missing")
                && err.contains("at least 15 events from position 25")
                && err.contains(&seg.file_name().unwrap().to_string_lossy().into_owned())
                && err.contains("--accept-data-loss"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), offsets[25] + 10);

    // Repair: says what it cut, and the store is sound afterwards.
    let (code, out, err) = strata(&data, &["repair", "--accept-data-loss"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("cut for good") && out.contains("at least 15 events from position 25"),
        "{out}"
    );
    assert!(out.contains("now holds 25 events"), "{out}");
    let (code, out, err) = strata(&data, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK: 25 events"), "{out}");
    let (code, out, err) = strata(&data, &["repair", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["changed"], false);

    // A corrupt record with valid ones after it: exit 2.
    std::fs::write(&seg, &full).unwrap();
    let _ = std::fs::remove_file(data.join("index.bin"));
    let mut bytes = full.clone();
    bytes[offsets[10] as usize + 70] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let (code, out, err) = strata(&data, &["verify"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("corruption in"), "{err}");

    // Not a data directory: the check cannot run, exit 1.
    let (code, _, err) = strata(&tmp.path().join("nothing-here"), &["verify"]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn a_deleted_newest_segment_is_reported_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Small segments: several of them.
    let config = strata_log::LogConfig {
        segment_max_bytes: 4 * 1024,
        ..strata_log::LogConfig::default()
    };
    let store = LogStore::open_with(&data, config).unwrap();
    append_n(&store, 200);
    drop(store);
    let newest = last_segment(&data);
    std::fs::remove_file(&newest).unwrap();
    let (code, out, err) = strata(&data, &["verify", "--json"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("the segment file is missing")
            && err.contains(&newest.file_name().unwrap().to_string_lossy().into_owned()),
        "{err}"
    );
    let (code, out, err) = strata(&data, &["repair", "--accept-data-loss", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["changed"], true);
    let kept = doc["events"].as_u64().unwrap();
    assert_eq!(
        doc["dataLoss"]["fromPosition"].as_u64().unwrap(),
        kept,
        "{doc}"
    );
    assert_eq!(
        doc["dataLoss"]["eventsAtLeast"].as_u64().unwrap(),
        200 - kept
    );
    let (code, out, err) = strata(&data, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
}
