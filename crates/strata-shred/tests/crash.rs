//! Crash test of forgetting: a child process forgets subjects one after another on the
//! embedded store and reports each acknowledged forget; the parent kills it with SIGKILL at
//! random moments, opens the store (which finishes any forget a kill interrupted) and checks
//! that every acknowledged forget holds, that a subject's fields read as `null` exactly when
//! its `$subjectForgotten` event is there, and that no forget is left pending.
//!
//! `STRATA_FORGET_CRASH_CYCLES` sets the number of kill cycles (20 by default).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use strata_core::{EventData, EventStore, ExpectedVersion, ReadStreamOptions, StreamId};
use strata_log::LogStore;
use strata_shred::{
    DirKeys, EncryptionSchema, Keyring, MasterKey, Shredded, SubjectSource, FORGOTTEN_STREAM,
};

const CHILD_ENV: &str = "STRATA_FORGET_CRASH_CHILD_DIR";
const SUBJECTS: usize = 120;

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

/// The store in `dir`, wrapped; opening it finishes the forgets a kill interrupted.
async fn open(dir: &Path) -> (LogStore, Shredded) {
    let log = LogStore::open(dir.join("data")).unwrap();
    let keys = DirKeys::open(dir.join("data").join("keys"))
        .unwrap()
        .shared();
    let ring = Keyring::open(keys, MasterKey::from_bytes([11; 32]))
        .await
        .unwrap();
    let store = Shredded::open(Arc::new(log.clone()), ring).await.unwrap();
    (log, store)
}

/// The child's body: runs only when started by the parent below.
#[test]
fn forget_crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let (_log, store) = open(Path::new(&dir)).await;
        let mut out = std::io::stdout();
        for n in 0..SUBJECTS {
            store.forget(&format!("c-{n}")).await.unwrap();
            writeln!(out, "FORGOT {n}").unwrap();
            out.flush().unwrap();
        }
        // Wait to be killed.
        std::future::pending::<()>().await;
    });
}

#[test]
fn a_forget_killed_at_any_moment_is_whole_after_the_next_open() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let cycles = strata_testkit::harness::cycles("STRATA_FORGET_CRASH_CYCLES", 20);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (log, store) = open(dir.path()).await;
        store
            .register(EncryptionSchema {
                event_type: "CustomerRegistered".into(),
                subject: SubjectSource::Pointer("/customerId".into()),
                fields: vec!["/email".into()],
            })
            .await
            .unwrap();
        for n in 0..SUBJECTS {
            let e = EventData::json(
                "CustomerRegistered",
                &serde_json::json!({"customerId": format!("c-{n}"), "email": format!("c-{n}@example.org")}),
            )
            .unwrap();
            store
                .append(&sid(&format!("customer-{n}")), ExpectedVersion::NoStream, vec![e])
                .await
                .unwrap();
        }
        drop(store);
        log.close().await.unwrap();
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(std::process::id() as u64);
    let mut acked: HashSet<usize> = HashSet::new();
    for cycle in 0..cycles {
        let lines = strata_testkit::harness::run_child_then_kill(
            "forget_crash_child_entry",
            &[(CHILD_ENV, dir.path().as_os_str())],
            Duration::from_millis(rng.gen_range(20..400)),
        );
        acked.extend(
            lines
                .iter()
                .filter_map(|l| l.strip_prefix("FORGOT ")?.parse::<usize>().ok()),
        );

        rt.block_on(async {
            let (log, store) = open(dir.path()).await;
            let pending: Vec<String> =
                std::fs::read_dir(dir.path().join("data").join("keys").join("pending"))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
            assert_eq!(
                pending,
                Vec::<String>::new(),
                "cycle {cycle}: a forget left pending after the open"
            );
            let forgotten: HashSet<String> = match log
                .read_stream(&sid(FORGOTTEN_STREAM), ReadStreamOptions::forward())
                .await
            {
                Ok(events) => events
                    .iter()
                    .map(|e| {
                        e.data_json().unwrap()["subject"]
                            .as_str()
                            .unwrap()
                            .to_owned()
                    })
                    .collect(),
                Err(strata_core::ReadError::StreamNotFound(_)) => HashSet::new(),
                Err(e) => panic!("{e}"),
            };
            for n in 0..SUBJECTS {
                let read = store
                    .read_stream(&sid(&format!("customer-{n}")), ReadStreamOptions::forward())
                    .await
                    .unwrap();
                let email = &read[0].data_json().unwrap()["email"];
                let subject = format!("c-{n}");
                assert_eq!(
                    email.is_null(),
                    forgotten.contains(&subject),
                    "cycle {cycle}: {subject} reads {email} and its event is {}there",
                    if forgotten.contains(&subject) {
                        ""
                    } else {
                        "not "
                    }
                );
                if acked.contains(&n) {
                    assert!(
                        email.is_null(),
                        "cycle {cycle}: {subject} was acknowledged forgotten"
                    );
                } else if !email.is_null() {
                    assert_eq!(email, &serde_json::json!(format!("c-{n}@example.org")));
                }
            }
            drop(store);
            log.close().await.unwrap();
        });
    }
    assert!(
        !acked.is_empty(),
        "no forget was acknowledged in {cycles} cycles"
    );
}
