//! # strata-fuzz
//!
//! The bodies of Strata's fuzz targets: every parser of bytes that come from outside the
//! process (records and segments read from disk, the index file, HTTP append bodies, metadata,
//! query strings, the configuration file). Each body checks a property, not only that the
//! parser does not panic: what a parser accepts must survive the way back out (a record
//! re-encodes to the same bytes, an accepted event renders to JSON that any parser reads, a
//! query value round-trips through the encoder of next links), and two parsers of the same
//! bytes must agree (opening a store and `strata verify`, the metadata check and a map parse).
//!
//! `fuzz/` runs them under libFuzzer (`cargo +nightly fuzz run NAME`, see `scripts/fuzz.sh`);
//! `tests/corpus.rs` runs every input of the checked-in corpus through them on the stable
//! toolchain, so a finding once made stays fixed.
//!
//! ```
//! // Any bytes at all: the target either accepts them with its property holding, or refuses.
//! strata_fuzz::metadata(br#"{"userId":"user-456"}"#);
//! strata_fuzz::metadata(b"\xff");
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::path::Path;

use serde_json::Value;
use strata_core::{
    validate_append, EventStore, Metadata, Position, ReadAllOptions, RecordedEvent, StreamId,
};
use strata_log::format::{
    decode_record, RecordRef, SegmentHeader, FLAG_BATCH_START, FLAG_COMMIT, RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
};

/// A fuzz target: its name (the directory of its corpus) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("record", record),
    ("segment", segment),
    ("index", index),
    ("segment_index", segment_index),
    ("append_body", append_body),
    ("metadata", metadata),
    ("query", query),
    ("config", config),
];

/// The salt the record target decodes with.
const SALT: u64 = 0x5eed_5a17;

/// Sets the CRC of the record at the start of `b` to what its bytes need, so that the fuzzer
/// reaches the checks behind the CRC.
fn fix_record_crc(salt: u64, b: &mut [u8]) {
    if b.len() < RECORD_HEADER_BYTES {
        return;
    }
    let len = (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize).clamp(8, b.len());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&salt.to_le_bytes()), &b[8..len]);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// The record decoder (`strata_log::format::decode_record`). The first byte chooses whether
/// the CRC is fixed up first. Property: a record that decodes re-encodes to the same bytes.
pub fn record(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut b = rest.to_vec();
    if mode & 1 == 1 {
        fix_record_crc(SALT, &mut b);
    }
    let Ok(r) = decode_record(SALT, &b) else {
        return;
    };
    let mut again = Vec::new();
    let reference = r.to_ref();
    let len = reference.encoded_len();
    reference.encode_into(SALT, &mut again);
    assert_eq!(
        &again[..len],
        &b[..len],
        "a decoded record re-encodes differently"
    );
    assert_eq!(again.len(), r.padded_len, "padded length differs");
    // Turning it into an event may refuse (a bad stream id, metadata that is not JSON) but
    // must not panic.
    let _ = r.to_event();
}

/// Reads `n` bytes from `data` at `*at`, or fewer at its end.
fn take<'a>(data: &'a [u8], at: &mut usize, n: usize) -> &'a [u8] {
    let start = (*at).min(data.len());
    let end = start.saturating_add(n).min(data.len());
    *at = end;
    &data[start..end]
}

fn take_u8(data: &[u8], at: &mut usize) -> u8 {
    take(data, at, 1).first().copied().unwrap_or(0)
}

fn take_u16(data: &[u8], at: &mut usize) -> u16 {
    let b = take(data, at, 2);
    u16::from_le_bytes([
        b.first().copied().unwrap_or(0),
        b.get(1).copied().unwrap_or(0),
    ])
}

/// Builds a segment's bytes from `data`. Mode 0: the header, then `data` as it is. Mode 1:
/// well-formed appends described by `data` (stream, sizes, flags), then damage (a cut, a
/// flipped byte, a zeroed range) also chosen by `data`, so the fuzzer works on the recovery
/// logic rather than on finding CRCs.
fn build_segment(data: &[u8]) -> Vec<u8> {
    let mut at = 0usize;
    let mode = take_u8(data, &mut at);
    let header = SegmentHeader {
        salt: SALT,
        segment_no: 0,
        first_position: 0,
        created_at_us: 1_700_000_000_000_000,
        batch_marks: mode & 2 != 0,
        scavenged: false,
        runs_at: 0,
    };
    let mut out = header.encode().to_vec();
    if mode & 1 == 0 {
        out.extend_from_slice(&data[at.min(data.len())..]);
        return out;
    }
    let appends = take_u8(data, &mut at) % 16;
    let mut position = 0u64;
    let mut versions = [0u64; 4];
    for a in 0..appends {
        let spec = take_u8(data, &mut at);
        let stream_no = (spec & 3) as usize;
        let events = 1 + (spec >> 2) % 4;
        let stream = format!("s{stream_no}-x");
        for k in 0..events {
            let payload_len = (take_u8(data, &mut at) % 64) as usize;
            let payload = format!("{{\"p\":\"{}\"}}", "x".repeat(payload_len));
            let mut flags = if k + 1 == events { FLAG_COMMIT } else { 0 };
            if header.batch_marks && k == 0 && (a == 0 || spec & 0x40 != 0) {
                flags |= FLAG_BATCH_START;
            }
            RecordRef {
                position,
                recorded_at_us: 1_700_000_000_000_000 + position as i64,
                event_id: strata_core::Uuid::from_u128(u128::from(position) + 1),
                stream_version: versions[stream_no],
                stream_id: &stream,
                event_type: "Happened",
                content_type: "application/json",
                metadata: b"",
                data: payload.as_bytes(),
                flags,
            }
            .encode_into(SALT, &mut out);
            position += 1;
            versions[stream_no] += 1;
        }
    }
    // Damage.
    let damage = take_u8(data, &mut at);
    let spot = SEGMENT_HEADER_BYTES as usize
        + take_u16(data, &mut at) as usize % (out.len() - SEGMENT_HEADER_BYTES as usize + 1);
    match damage % 5 {
        0 => {}
        1 => out.truncate(spot),
        2 => {
            if let Some(b) = out.get_mut(spot) {
                *b ^= take_u8(data, &mut at) | 1;
            }
        }
        3 => {
            let n = take_u8(data, &mut at) as usize * 4;
            let end = spot.saturating_add(n).min(out.len());
            out[spot..end].fill(0);
        }
        _ => out.extend_from_slice(&vec![0u8; take_u16(data, &mut at) as usize % 8192]),
    }
    out
}

/// A scratch directory, in memory where the system offers it.
fn scratch_dir() -> Option<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return Some(d);
        }
    }
    tempfile::tempdir().ok()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The recovery scanner: a data directory whose one segment holds bytes built from `data`
/// (see `build_segment`). Properties: `strata verify` and opening agree (both refuse, or
/// both accept the same number of events); an opened store reads every event it reports,
/// takes an append, reopens, and then verifies clean with no torn tail.
pub fn segment(data: &[u8]) {
    let bytes = build_segment(data);
    let Some(dir) = scratch_dir() else {
        return;
    };
    let seg_dir = dir.path().join("segments");
    std::fs::create_dir_all(&seg_dir).expect("create the segments directory");
    std::fs::write(seg_dir.join("00000000000000000000.seg"), &bytes).expect("write a segment");
    let verified = strata_log::verify(dir.path());
    let config = || strata_log::LogConfig {
        map_reads: false,
        ..Default::default()
    };
    let opened = strata_log::LogStore::open_with(dir.path(), config());
    let store = match (verified, opened) {
        (Err(_), Err(_)) => return,
        (Ok(report), Err(e)) => panic!("verify accepted ({report:?}) what open refused: {e}"),
        (Err(e), Ok(_)) => panic!("open accepted what verify refused: {e}"),
        (Ok(report), Ok(store)) => {
            assert_eq!(
                store.open_report().events,
                report.events,
                "open and verify count different events"
            );
            store
        }
    };
    let events = store.open_report().events;
    let rt = runtime();
    rt.block_on(async {
        let mut seen = 0u64;
        let mut from = None;
        loop {
            let page = store
                .read_all(ReadAllOptions {
                    from,
                    ..ReadAllOptions::forward()
                })
                .await
                .expect("every event of an opened store reads");
            for e in &page.events {
                assert_eq!(e.position, Position(seen), "positions are dense from 0");
                seen += 1;
            }
            if page.is_end {
                break;
            }
            from = page.next;
        }
        assert_eq!(
            seen, events,
            "a read of $all sees every event open reported"
        );
        let stream = StreamId::new("fuzz-after").expect("a valid stream id");
        let e = strata_core::EventData::json("After", &serde_json::json!({"ok": true}))
            .expect("JSON data");
        store
            .append(&stream, strata_core::ExpectedVersion::Any, vec![e])
            .await
            .expect("an opened store takes an append");
    });
    drop(store);
    let again = strata_log::LogStore::open_with(dir.path(), config()).expect("the store reopens");
    assert_eq!(again.open_report().events, events + 1);
    drop(again);
    let report = strata_log::verify(dir.path()).expect("verify after a reopen");
    assert_eq!(report.torn_tail, None, "no torn tail after a clean close");
}

/// The file in `data` after its first byte, with its trailing CRC32C fixed up when that byte
/// is odd (so half the inputs reach the checks behind the CRC); `None` for empty input.
fn with_crc_fixed_up_or_not(data: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    let mut b = rest.to_vec();
    if mode & 1 == 1 && b.len() >= 4 {
        let body = b.len() - 4;
        let crc = crc32c::crc32c(&b[..body]);
        b[body..].copy_from_slice(&crc.to_le_bytes());
    }
    Some(b)
}

/// The index-file loader. The first byte chooses whether the file's CRC is fixed up first.
/// Property: no panic and no allocation beyond what the file's own size justifies (libFuzzer
/// enforces the memory limit).
pub fn index(data: &[u8]) {
    let Some(b) = with_crc_fixed_up_or_not(data) else {
        return;
    };
    if let Ok(events) = strata_log::fuzzing::decode_index(&b) {
        // Each indexed event takes at least 40 bytes of the file.
        assert!(
            events <= b.len() as u64 / 40,
            "more events than bytes allow"
        );
    }
}

/// A sealed segment's index-file loader. The first byte chooses whether the file's CRC is
/// fixed up first. Properties: no panic, no allocation beyond what the file's size justifies,
/// and no more events than its bytes can hold.
pub fn segment_index(data: &[u8]) {
    let Some(b) = with_crc_fixed_up_or_not(data) else {
        return;
    };
    if let Ok(events) = strata_log::fuzzing::decode_segment_index(&b) {
        // Each event takes at least 64 bytes of the file: its entry and its id pair.
        assert!(
            events <= b.len() as u64 / 64,
            "more events than bytes allow"
        );
    }
}

/// The HTTP append body parser, through everything an append checks before it is stored.
/// Properties: an accepted body is one JSON document (nothing ignored after it), and every
/// accepted event, stored and read back, renders to JSON that a plain JSON parser reads
/// (what is written can be read by every reader).
pub fn append_body(data: &[u8]) {
    let Ok(body) = strata_wire::AppendBody::parse(data) else {
        return;
    };
    assert!(
        serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok(),
        "an accepted append body is not one JSON document"
    );
    let Ok((_, events)) = body.into_events() else {
        return;
    };
    let Ok(metas) = validate_append(&events) else {
        return;
    };
    let stream = StreamId::new("fuzz-1").expect("a valid stream id");
    for (i, (e, meta)) in events.into_iter().zip(metas).enumerate() {
        let metadata = Metadata::from_bytes(&meta).expect("stored metadata reads back");
        let recorded = RecordedEvent {
            event_id: e
                .event_id
                .unwrap_or_else(|| strata_core::Uuid::from_u128(1)),
            stream_id: stream.clone(),
            stream_version: i as u64,
            position: Position(i as u64),
            recorded_at: strata_core::timestamp_from_micros(1_700_000_000_000_000),
            event_type: e.event_type,
            content_type: e.content_type,
            data: e.data,
            metadata,
        };
        let json = serde_json::to_string(&strata_wire::EventJson::new(&recorded))
            .expect("an accepted event renders");
        if let Err(err) = serde_json::from_str::<Value>(&json) {
            panic!("an accepted event renders to JSON that does not parse ({err}): {json}");
        }
    }
}

/// Stored metadata (`Metadata::from_bytes`). Property: it accepts exactly what parses as a
/// JSON object (or nothing but whitespace), but for serde_json's marker keys, and its map is
/// that object.
pub fn metadata(data: &[u8]) {
    let checked = Metadata::from_bytes(data);
    let blank = data.trim_ascii().is_empty();
    let parsed = serde_json::from_slice::<serde_json::Map<String, Value>>(data);
    match (checked, parsed) {
        (Ok(m), _) if blank => assert!(m.is_empty()),
        (Ok(m), Ok(map)) => assert_eq!(m.as_map(), &map, "the map differs from a plain parse"),
        (Err(_), Err(_)) => {}
        // serde_json's marker keys are refused even where a map parse takes them.
        (Err(e), Ok(_)) if e.to_string().contains("is reserved") => {}
        (Ok(_), Err(e)) => panic!("metadata accepted what a map parse refuses: {e}"),
        (Err(e), Ok(_)) => panic!("metadata refused what a map parse accepts: {e}"),
    }
}

/// The query-string parser. Properties: no panic on any input or accessor, and a value put in
/// a next link by the server's encoder comes back unchanged.
pub fn query(data: &[u8]) {
    use strata_server::fuzzing::{encode_query_value, Query};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let allowed = [
        "from",
        "limit",
        "direction",
        "asOf",
        "category",
        "type",
        "prefix",
    ];
    if let Ok(q) = Query::parse(Some(text), &allowed) {
        for name in allowed {
            let _ = q.one(name);
            let _ = q.all(name);
            let _ = q.u64(name);
            let _ = q.limit(20, 1000);
            let _ = q.timestamp(name);
            let _ = q.nonempty(name);
        }
    }
    let link = format!("prefix={}", encode_query_value(text));
    let q = Query::parse(Some(&link), &["prefix"]).expect("an encoded value parses");
    assert_eq!(
        q.one("prefix").expect("one value"),
        Some(text),
        "a value does not survive the encoder of next links"
    );
}

/// `strata serve`'s configuration file, resolved with no flags and no environment.
/// Property: any file is either resolved or refused with sentences, never a panic.
pub fn config(data: &[u8]) {
    let Some(dir) = scratch_dir() else {
        return;
    };
    let path = dir.path().join("strata.toml");
    std::fs::write(&path, data).expect("write the configuration file");
    let given = strata_cli::config::Given {
        config_file: Some(path),
        ..Default::default()
    };
    if let Err(errors) = strata_cli::config::resolve(&given, &|_| None) {
        assert!(!errors.is_empty(), "a refusal says why");
    }
}
