//! Crash test: a child process appends with several concurrent writers and reports each
//! acknowledgement; the parent kills it with SIGKILL at random moments, reopens the store and
//! checks that every acknowledged event is there exactly once, versions are dense, positions
//! increase, and no part of an unacknowledged multi-event append is visible.
//!
//! `STRATA_CRASH_CYCLES` sets the number of kill cycles (50 by default; nightly runs use more).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use strata_core::{EventData, EventStore, ExpectedVersion, StreamId, Uuid};
use strata_log::LogStore;

const CHILD_ENV: &str = "STRATA_CRASH_CHILD_DIR";

/// The child's body: runs only when started by the parent below.
#[test]
fn crash_child_entry() {
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
        let store = LogStore::open(&dir).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for w in 0..8u64 {
            let store = store.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 100 + w);
                loop {
                    let shared = rng.gen_bool(0.3);
                    let stream = if shared {
                        StreamId::new(format!("shared-{}", rng.gen_range(0..3))).unwrap()
                    } else {
                        StreamId::new(format!("writer{w}-{}", rng.gen_range(0..4))).unwrap()
                    };
                    let n = if rng.gen_bool(0.5) { 1 } else { rng.gen_range(2..20) };
                    let batch = Uuid::new_v4();
                    let events: Vec<EventData> = (0..n)
                        .map(|k| {
                            EventData::json("Happened", &serde_json::json!({"batch": batch, "n": n, "k": k, "pad": "p".repeat(rng.gen_range(0..300))}))
                                .unwrap()
                                .with_id(Uuid::new_v4())
                        })
                        .collect();
                    let ids: Vec<String> = events.iter().map(|e| e.event_id.unwrap().to_string()).collect();
                    let r = store.append(&stream, ExpectedVersion::Any, events).await.unwrap();
                    let line = format!("ACK {} {} {} {}", stream, r.stream_version + 1 - n as u64, r.positions[0].0, ids.join(","));
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

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    Some(Ack {
        stream: parts.next()?.to_owned(),
        first_version: parts.next()?.parse().ok()?,
        first_position: parts.next()?.parse().ok()?,
        ids: parts
            .next()?
            .split(',')
            .map(|s| s.parse().unwrap())
            .collect(),
    })
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let cycles = strata_testkit::harness::cycles("STRATA_CRASH_CYCLES", 50);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(std::process::id() as u64);
    let mut acked: Vec<Ack> = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for cycle in 0..cycles {
        // Let it run until it has acknowledged something, plus a random while.
        let seed = (cycle + 1).to_string();
        let got = strata_testkit::harness::run_child_then_kill(
            "crash_child_entry",
            &[
                (CHILD_ENV, dir.path().as_os_str()),
                ("STRATA_CRASH_SEED", seed.as_ref()),
            ],
            Duration::from_millis(rng.gen_range(30..300)),
        );
        let got = got.iter().filter_map(|l| parse_ack(l));
        acked.extend(got);

        // Reopen and check everything.
        let store = LogStore::open(dir.path())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        let all = rt.block_on(strata_testkit::all_events(&store, 5000));
        drop(store);
        // Positions dense and increasing; versions dense per stream; ids unique.
        let mut versions: HashMap<String, u64> = HashMap::new();
        let mut by_id = HashMap::new();
        for (i, e) in all.iter().enumerate() {
            assert_eq!(
                e.position.0, i as u64,
                "cycle {cycle}: positions must be dense"
            );
            let v = versions.entry(e.stream_id.to_string()).or_insert(0);
            assert_eq!(
                e.stream_version, *v,
                "cycle {cycle}: versions must be dense in {}",
                e.stream_id
            );
            *v += 1;
            assert!(
                by_id.insert(e.event_id, e).is_none(),
                "cycle {cycle}: duplicate event id"
            );
        }
        // Every acknowledged event is there, exactly where it was acknowledged.
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
        // No partial append: every batch is whole and contiguous.
        let mut seen_batches: HashSet<String> = HashSet::new();
        let mut i = 0;
        while i < all.len() {
            let d: serde_json::Value = all[i].data_as().unwrap();
            let n = d["n"].as_u64().unwrap() as usize;
            let batch = d["batch"].as_str().unwrap().to_owned();
            assert_eq!(
                d["k"], 0,
                "cycle {cycle}: an append starts in the middle at position {i}"
            );
            assert!(
                i + n <= all.len(),
                "cycle {cycle}: a partial append is visible at the end"
            );
            for k in 0..n {
                let dk: serde_json::Value = all[i + k].data_as().unwrap();
                assert_eq!(dk["batch"].as_str().unwrap(), batch);
                assert_eq!(dk["k"].as_u64().unwrap() as usize, k);
            }
            assert!(seen_batches.insert(batch));
            i += n;
        }
    }
    assert!(!acked.is_empty(), "the child never acknowledged anything");
    eprintln!(
        "{cycles} kill cycles, {} acknowledged appends checked",
        acked.len()
    );
}
