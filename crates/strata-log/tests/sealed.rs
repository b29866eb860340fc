//! A sealed segment checked on its own (`check_sealed_segment`), as an archive checks what it
//! copies and a restore what it downloads: each rule it holds a segment to, broken once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_core::{EventData, EventStore, ExpectedVersion, StreamId};
use strata_log::format::{decode_record, RecordRef, FLAG_COMMIT, SEGMENT_HEADER_BYTES};
use strata_log::{check_sealed_segment, LogConfig, LogStore};

/// A sealed segment's bytes and the position it ends at.
async fn sealed_segment() -> (Vec<u8>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 16 * 1024,
        ..LogConfig::default()
    };
    let store = LogStore::open_with(dir.path(), config).unwrap();
    for i in 0..30 {
        let e = EventData::json("E", &serde_json::json!({ "i": i })).unwrap();
        store
            .append(
                &StreamId::new("s-1").unwrap(),
                ExpectedVersion::Any,
                vec![e],
            )
            .await
            .unwrap();
    }
    store.seal_open_segment().await.unwrap();
    let held = store.sealed_files().await.unwrap();
    let seg = &held.segments[0];
    let bytes = std::fs::read(&seg.segment_path).unwrap();
    let end = seg.end_position;
    drop(held);
    store.close().await.unwrap();
    (bytes, end)
}

/// The segment's records re-encoded after `change` (same salt, valid CRCs).
fn reencoded(bytes: &[u8], change: impl Fn(usize, RecordRef<'_>) -> RecordRef<'_>) -> Vec<u8> {
    let header = strata_log::format::SegmentHeader::decode(bytes).unwrap();
    let mut out = bytes[..SEGMENT_HEADER_BYTES as usize].to_vec();
    let mut at = SEGMENT_HEADER_BYTES as usize;
    let mut i = 0;
    while at < bytes.len() {
        let r = decode_record(header.salt, &bytes[at..]).unwrap();
        change(i, r.to_ref()).encode_into(header.salt, &mut out);
        at += r.padded_len;
        i += 1;
    }
    out
}

fn check(bytes: &[u8], end: u64) -> Result<u64, String> {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    check_sealed_segment(f.path(), end).map(|s| s.events)
}

#[tokio::test]
async fn each_rule_of_a_sealed_segment_is_checked() {
    let (bytes, end) = sealed_segment().await;
    assert_eq!(check(&bytes, end), Ok(30));
    assert_eq!(
        check(&reencoded(&bytes, |_, r| r), end),
        Ok(30),
        "re-encoding changes nothing"
    );

    let e = check(&bytes, end - 1).unwrap_err();
    assert!(e.contains("below 29"), "{e}");
    let e = check(&bytes, end + 1).unwrap_err();
    assert!(e.contains("not at 31"), "{e}");

    // A position skipped in a segment never scavenged.
    let gap = reencoded(&bytes, |i, r| RecordRef {
        position: r.position + u64::from(i >= 10),
        ..r
    });
    let e = check(&gap, end + 1).unwrap_err();
    assert!(
        e.contains("holds position 11, where 10 below 31 was expected"),
        "{e}"
    );

    // The last record not ending an append.
    let open = reencoded(&bytes, |i, r| RecordRef {
        flags: if i == 29 {
            r.flags & !FLAG_COMMIT
        } else {
            r.flags
        },
        ..r
    });
    let e = check(&open, end).unwrap_err();
    assert!(e.contains("does not end an append"), "{e}");

    // Bytes after the last record.
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0u8; 8]);
    let e = check(&longer, end).unwrap_err();
    assert!(e.contains("the record at offset"), "{e}");
    assert!(!e.contains("Invalid("), "no debug formatting: {e}");

    // A flipped byte.
    let mut flipped = bytes.clone();
    flipped[100] ^= 1;
    let e = check(&flipped, end).unwrap_err();
    assert!(e.contains("CRC"), "{e}");
}
