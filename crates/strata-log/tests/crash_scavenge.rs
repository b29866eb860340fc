//! Crash test of scavenging: a child process appends with concurrent writers, deletes
//! streams and scavenges in a loop, reporting each acknowledgement; the parent kills it with
//! SIGKILL at random moments, reopens the store and checks that every acknowledged event of
//! a stream never deleted is there exactly once, where it was acknowledged; that no event of
//! a stream whose deletion was acknowledged is visible; and that `strata verify` finds the
//! directory sound.
//!
//! `STRATA_CRASH_SCAVENGE_CYCLES` sets the number of kill cycles (20 by default).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use strata_core::{
    EventData, EventStore, ExpectedVersion, ReadError, ReadStreamOptions, StreamId, Uuid,
};
use strata_log::{LogConfig, LogStore};

const CHILD_ENV: &str = "STRATA_CRASH_SCAVENGE_DIR";

fn config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}

/// The child's body: runs only when started by the parent below.
#[test]
fn scavenge_crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var("STRATA_CRASH_SEED").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = LogStore::open_with(&dir, config()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        // Writers of streams never deleted.
        for w in 0..4u64 {
            let (store, tx) = (store.clone(), tx.clone());
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 100 + w);
                loop {
                    let stream = StreamId::new(format!("keep{w}-{}", rng.gen_range(0..3))).unwrap();
                    let n = rng.gen_range(1..4);
                    let events: Vec<EventData> = (0..n)
                        .map(|k| {
                            EventData::json("Kept", &serde_json::json!({ "k": k, "pad": "p".repeat(rng.gen_range(0..200)) }))
                                .unwrap()
                                .with_id(Uuid::new_v4())
                        })
                        .collect();
                    let ids: Vec<String> =
                        events.iter().map(|e| e.event_id.unwrap().to_string()).collect();
                    let r = store.append(&stream, ExpectedVersion::Any, events).await.unwrap();
                    let line = format!(
                        "ACK {stream} {} {} {}",
                        r.stream_version + 1 - n as u64,
                        r.positions[0].0,
                        ids.join(",")
                    );
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        // A deleter: streams written, then soft-deleted (hiding all but the deletion).
        {
            let (store, tx) = (store.clone(), tx.clone());
            tokio::spawn(async move {
                for n in 0u64.. {
                    let stream = StreamId::new(format!("gone{seed}x{n}")).unwrap();
                    let events: Vec<EventData> = (0..5)
                        .map(|k| EventData::json("Doomed", &serde_json::json!({ "k": k })).unwrap())
                        .collect();
                    store.append(&stream, ExpectedVersion::NoStream, events).await.unwrap();
                    store
                        .delete_stream(&stream, ExpectedVersion::Exact(4))
                        .await
                        .unwrap();
                    if tx.send(format!("DEL {stream}")).is_err() {
                        return;
                    }
                }
            });
        }
        // The scavenger.
        {
            let (store, tx) = (store.clone(), tx.clone());
            tokio::spawn(async move {
                loop {
                    let report = store.scavenge(&|_| {}).await.unwrap();
                    let line = format!("SCAV {}", report.progress.events_removed);
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut out = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        }
    });
}

struct Ack {
    stream: String,
    first_version: u64,
    first_position: u64,
    ids: Vec<Uuid>,
}

enum Line {
    Ack(Ack),
    Deleted(String),
    Scavenged(u64),
}

fn parse(line: &str) -> Option<Line> {
    if let Some(rest) = line.strip_prefix("DEL ") {
        return Some(Line::Deleted(rest.to_owned()));
    }
    if let Some(rest) = line.strip_prefix("SCAV ") {
        return Some(Line::Scavenged(rest.parse().ok()?));
    }
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    Some(Line::Ack(Ack {
        stream: parts.next()?.to_owned(),
        first_version: parts.next()?.parse().ok()?,
        first_position: parts.next()?.parse().ok()?,
        ids: parts
            .next()?
            .split(',')
            .map(|s| s.parse().unwrap())
            .collect(),
    }))
}

#[test]
fn sigkill_during_scavenges_loses_nothing_and_resurrects_nothing() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let cycles = strata_testkit::harness::cycles("STRATA_CRASH_SCAVENGE_CYCLES", 20);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(std::process::id()));
    let mut acked: Vec<Ack> = Vec::new();
    let mut deleted: Vec<String> = Vec::new();
    let (mut scavenges, mut removed) = (0u64, 0u64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for cycle in 0..cycles {
        // A random moment: the kill lands anywhere in appends, deletions and rewrites.
        let seed = (cycle + 1).to_string();
        let lines = strata_testkit::harness::run_child_then_kill(
            "scavenge_crash_child_entry",
            &[
                (CHILD_ENV, dir.path().as_os_str()),
                ("STRATA_CRASH_SEED", seed.as_ref()),
            ],
            Duration::from_millis(rng.gen_range(50..400)),
        );
        for line in lines.iter().filter_map(|l| parse(l)) {
            match line {
                Line::Ack(a) => acked.push(a),
                Line::Deleted(s) => deleted.push(s),
                Line::Scavenged(n) => {
                    scavenges += 1;
                    removed += n;
                }
            }
        }

        let store = LogStore::open_with(dir.path(), config())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        let all = rt.block_on(strata_testkit::all_events(&store, 5000));
        // Positions increase; each event once.
        let mut by_id = HashMap::new();
        for w in all.windows(2) {
            assert!(w[0].position < w[1].position, "cycle {cycle}: order");
        }
        for e in &all {
            assert!(
                by_id.insert(e.event_id, e).is_none(),
                "cycle {cycle}: duplicate event id"
            );
        }
        // Every acknowledged event of a kept stream is there, where it was acknowledged.
        for a in &acked {
            for (k, id) in a.ids.iter().enumerate() {
                let e = by_id
                    .get(id)
                    .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged event {id} is missing"));
                assert_eq!(e.stream_id.as_str(), a.stream);
                assert_eq!(e.stream_version, a.first_version + k as u64);
                assert_eq!(e.position.0, a.first_position + k as u64);
            }
        }
        // Nothing of a stream whose deletion was acknowledged is visible.
        for s in &deleted {
            assert!(
                !all.iter().any(|e| e.stream_id.as_str() == s),
                "cycle {cycle}: an event of deleted stream {s} is visible in $all"
            );
            let read = rt.block_on(store.read_stream(
                &StreamId::new(s.as_str()).unwrap(),
                ReadStreamOptions::forward(),
            ));
            assert!(
                matches!(read, Err(ReadError::StreamNotFound(_))),
                "cycle {cycle}: deleted stream {s} reads {read:?}"
            );
        }
        rt.block_on(store.close()).unwrap();
        strata_log::verify(dir.path())
            .unwrap_or_else(|e| panic!("cycle {cycle}: verify failed: {e}"));
    }
    assert!(!acked.is_empty(), "the child never acknowledged anything");
    assert!(
        scavenges > 0 && removed > 0,
        "no scavenge removed anything: {scavenges} scavenges"
    );
    eprintln!(
        "{cycles} kill cycles: {} acknowledged appends, {} deletions, {scavenges} scavenges removing {removed} events",
        acked.len(),
        deleted.len()
    );
}
