//! Crash test for async projections: a child process appends events while an async
//! projection applies them in batches; the parent kills it with SIGKILL at a random moment,
//! then reopens the store and read models, lets the projection catch up from its checkpoint,
//! and checks the read model against the fold of the whole log (a from-scratch rebuild):
//! nothing counted twice, nothing missing. At the end the projection's own blue/green rebuild
//! must produce the same model.
//!
//! `STRATA_PROJECTION_CRASH_CYCLES` sets the number of kill cycles (25 by default).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use strata::projection::{
    HandlerError, ProjectedStore, Projection, Projections, Sql, SqliteReadModels,
};
use strata::{
    EventData, EventStore, ExpectedVersion, Filter, Position, ReadAllOptions, RecordedEvent,
    StreamId,
};
use strata_log::LogStore;

const CHILD_ENV: &str = "STRATA_PROJECTION_CRASH_DIR";

struct Tally;

impl Projection for Tally {
    fn name(&self) -> &str {
        "tally"
    }
    fn filter(&self) -> Filter {
        Filter::default().categories(["account"])
    }
    fn tables(&self) -> &[&'static str] {
        &["tally"]
    }
    fn setup(&self, sql: &Sql<'_>) -> Result<(), HandlerError> {
        sql.execute_batch(
            "CREATE TABLE {tally} (account TEXT PRIMARY KEY, total INTEGER NOT NULL,
                                   events INTEGER NOT NULL, last_position INTEGER NOT NULL)",
        )
    }
    fn apply(&self, sql: &Sql<'_>, event: &RecordedEvent) -> Result<(), HandlerError> {
        let amount = event
            .data_json()
            .and_then(|d| d["amount"].as_i64())
            .unwrap_or(0);
        // Deliberately not idempotent: a double application would show in `events`.
        sql.execute(
            "INSERT INTO {tally} VALUES (?1, ?2, 1, ?3) ON CONFLICT (account)
             DO UPDATE SET total = total + ?2, events = events + 1, last_position = ?3",
            rusqlite::params![
                event.stream_id.as_str(),
                amount,
                i64::try_from(event.position.0).unwrap()
            ],
        )?;
        Ok(())
    }
}

type Model = BTreeMap<String, (i64, i64, i64)>;

fn read_model(models: &SqliteReadModels) -> Model {
    let conn = models.connect().unwrap();
    let mut stmt = conn
        .prepare("SELECT account, total, events, last_position FROM tally")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

async fn fold(store: &LogStore) -> Model {
    let mut out = Model::new();
    let mut from = Position::START;
    loop {
        let page = store
            .read_all(
                ReadAllOptions::forward()
                    .from(from)
                    .limit(1000)
                    .filter(Filter::default().categories(["account"])),
            )
            .await
            .unwrap();
        for e in &page.events {
            let amount = e.data_json().unwrap()["amount"].as_i64().unwrap();
            let entry = out.entry(e.stream_id.to_string()).or_insert((0, 0, 0));
            entry.0 += amount;
            entry.1 += 1;
            entry.2 = i64::try_from(e.position.0).unwrap();
        }
        if page.is_end {
            return out;
        }
        from = page.next.unwrap();
    }
}

/// The child's body: runs only when started by the parent below.
#[test]
fn projection_crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var("STRATA_PROJECTION_CRASH_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let data = Path::new(&dir).join("data");
        let store = LogStore::open(&data).unwrap();
        let models = SqliteReadModels::next_to(&data).unwrap();
        let projections = Projections::new(Arc::new(store.clone()), models);
        let inline = std::env::var("STRATA_PROJECTION_CRASH_INLINE").is_ok();
        if inline {
            projections.inline(Tally).await.unwrap();
        } else {
            projections.spawn(Tally).await.unwrap();
        }
        // Inline: every append goes through the projected store (applied before it returns).
        let store = ProjectedStore::new(store, projections.clone());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        loop {
            // Other categories interleave: they move the checkpoint, not the model.
            let category = if rng.gen_bool(0.8) {
                "account"
            } else {
                "audit"
            };
            let stream = StreamId::new(format!("{category}-{}", rng.gen_range(0..20))).unwrap();
            let n = rng.gen_range(1..30);
            let events = (0..n)
                .map(|_| {
                    EventData::json(
                        "Moved",
                        &serde_json::json!({ "amount": rng.gen_range(1..1000) }),
                    )
                    .unwrap()
                })
                .collect();
            store
                .append(&stream, ExpectedVersion::Any, events)
                .await
                .unwrap();
        }
    });
}

#[test]
fn killing_an_async_projection_never_double_applies_or_loses_events() {
    kill_cycles(
        strata_testkit::harness::cycles("STRATA_PROJECTION_CRASH_CYCLES", 25),
        false,
    );
}

/// Inline: the child is killed between an append being durable and its inline application
/// (or anywhere else); registering the projection again repairs it by catching up.
#[test]
fn killing_an_inline_projection_is_repaired_on_restart() {
    kill_cycles(10, true);
}

fn kill_cycles(cycles: u64, inline: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut behind_at_kill = 0;
    for cycle in 0..cycles {
        let seed = cycle.to_string();
        let mut env = vec![
            (CHILD_ENV, dir.path().as_os_str()),
            ("STRATA_PROJECTION_CRASH_SEED", seed.as_ref()),
        ];
        if inline {
            env.push(("STRATA_PROJECTION_CRASH_INLINE", "1".as_ref()));
        }
        strata_testkit::harness::run_child_then_kill(
            "projection_crash_child_entry",
            &env,
            Duration::from_millis(rng.gen_range(50..400)),
        );

        rt.block_on(async {
            let data = dir.path().join("data");
            let store = LogStore::open(&data).unwrap();
            let models = SqliteReadModels::next_to(&data).unwrap();
            let projections = Projections::new(Arc::new(store.clone()), models.clone());
            // Where the killed projection had got to, against the log it left.
            let head = store.head().await.unwrap();
            let at_restart = if inline {
                // Registering an inline projection catches it up before it returns.
                let stored = SqliteReadModels::next_to(&data).unwrap().connect().unwrap();
                let cp: Option<i64> = stored
                    .query_row(
                        "SELECT checkpoint FROM strata_projections WHERE name = 'tally'",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap_or(None);
                projections.inline(Tally).await.unwrap();
                assert_eq!(projections.checkpoint("tally").unwrap(), head);
                cp.map(|c| Position(u64::try_from(c).unwrap()))
            } else {
                projections.spawn(Tally).await.unwrap();
                projections.checkpoint("tally").unwrap()
            };
            if at_restart < head {
                behind_at_kill += 1;
            }
            if let Some(head) = head {
                projections
                    .wait_for("tally", head, Duration::from_secs(30))
                    .await
                    .unwrap();
            }
            projections.shutdown().await;
            assert_eq!(
                read_model(&models),
                fold(&store).await,
                "cycle {cycle}: the read model differs from the fold of the log"
            );
            // The next cycle's child opens the directory: let go of it first.
            store.close().await.unwrap();
        });
    }
    // The kills landed while the projection had work left (otherwise the test shows nothing).
    assert!(behind_at_kill > 0, "no kill left the projection behind");

    // And the projection's own rebuild from scratch produces the same model.
    rt.block_on(async {
        let data = dir.path().join("data");
        let store = LogStore::open(&data).unwrap();
        let models = SqliteReadModels::next_to(&data).unwrap();
        let projections = Projections::new(Arc::new(store.clone()), models.clone());
        if inline {
            projections.inline(Tally).await.unwrap();
        } else {
            projections.spawn(Tally).await.unwrap();
        }
        let before = read_model(&models);
        projections.rebuild("tally", |_| {}).await.unwrap();
        projections.shutdown().await;
        assert_eq!(read_model(&models), before);
        assert_eq!(before, fold(&store).await);
        eprintln!("{cycles} kill cycles; {behind_at_kill} left the projection behind the log");
    });
}
