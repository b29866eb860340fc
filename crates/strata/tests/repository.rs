//! The repository on every backend (embedded, in-memory reference, PostgreSQL): loads,
//! commands, metadata, retries, snapshots, temporal loads, decode errors. Each case is a
//! generic function; `cases!` at the bottom runs every case on every backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use strata::{
    ActualVersion, CommandEnvelope, DecodeErrorKind, EventData, ExecuteError, ExpectedVersion,
    LoadError, Metadata, ReadStreamOptions, Repository, Snapshot, SnapshotStore, StreamId,
    UpcastError, Uuid,
};
use support::{
    seed, Backend, FailingSnapshots, Interfering, ReadCounting, Tally, TallyCommand, TallyError,
    TallyEvent,
};

fn stream(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

async fn a_command_appends_its_events_and_a_load_replays_them<S: Backend>(store: S) {
    let repo = Repository::<Tally, _>::new(store.clone()).with_cache_capacity(0);

    let missing = repo.load("1").await.unwrap();
    assert_eq!(missing.version, None);
    assert!(!missing.exists());
    assert_eq!(*missing, Tally::default());

    let first = repo.execute("1", TallyCommand::Add(5)).await.unwrap();
    assert_eq!(first.version, Some(0));
    assert_eq!(first.attempts, 1);
    assert_eq!(first.events, vec![TallyEvent::Added { amount: 5 }]);
    assert_eq!(first.state.total, 5);

    let second = repo
        .execute("1", TallyCommand::AddMany(vec![1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(second.version, Some(3));
    assert!(second.position > first.position);

    let loaded = repo.load("1").await.unwrap();
    assert_eq!(loaded.version, Some(3));
    assert_eq!(loaded.total, 11);
    assert_eq!(loaded.count, 4);
    assert_eq!(loaded.events_replayed, 4);
    assert_eq!(loaded.last_position, second.position);

    // The stream is `<category>-<id>` and the stored types are the variant names.
    let raw = store
        .read_stream(&stream("tally-1"), ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(raw.len(), 4);
    assert!(raw.iter().all(|e| e.event_type == "Added"));
    assert_eq!(raw[0].data_json(), Some(json!({"amount": 5})));
}

async fn metadata_flows_from_the_command_to_every_event<S: Backend>(store: S) {
    let repo = Repository::<Tally, _>::new(store.clone());
    let command_id = Uuid::now_v7();
    let envelope = CommandEnvelope::new(TallyCommand::AddMany(vec![1, 2]))
        .command_id(command_id)
        .correlation_id("req-789")
        .user_id("user-456")
        .with("channel", "test")
        // Reserved keys cannot be spoofed through custom fields.
        .with("causationId", "forged")
        .with("schemaVersion", 7);
    repo.execute("m", envelope).await.unwrap();

    let raw = store
        .read_stream(&stream("tally-m"), ReadStreamOptions::forward())
        .await
        .unwrap();
    for (i, e) in raw.iter().enumerate() {
        assert_eq!(e.metadata.correlation_id(), Some("req-789"));
        assert_eq!(
            e.metadata.causation_id(),
            Some(command_id.to_string().as_str())
        );
        assert_eq!(e.metadata.user_id(), Some("user-456"));
        assert_eq!(e.metadata.get("channel"), Some(&json!("test")));
        assert_eq!(
            e.metadata.get("schemaVersion"),
            None,
            "version 1 is implicit"
        );
        // Derived from the command id (so a retry gives the same ids), and time-ordered like
        // it: a UUIDv7 with the command's timestamp.
        assert_eq!(
            e.event_id,
            strata::CommandContext::new()
                .command_id(command_id)
                .event_id(i)
        );
        assert_eq!(e.event_id.get_version_num(), 7);
        assert_eq!(e.event_id.as_bytes()[..6], command_id.as_bytes()[..6]);
    }
    assert_ne!(raw[0].event_id, raw[1].event_id);

    // Without a correlation id, the command starts a conversation: correlation = command id.
    let done = repo.execute("n", TallyCommand::Add(1)).await.unwrap();
    let raw = repo.read_events("n", 0, 10).await.unwrap();
    assert_eq!(done.version, Some(0));
    assert_eq!(
        raw[0].metadata.correlation_id(),
        raw[0].metadata.causation_id()
    );
    assert_eq!(raw[0].metadata.user_id(), None);
}

async fn a_rejected_command_writes_nothing<S: Backend>(store: S) {
    let repo = Repository::<Tally, _>::new(store.clone());
    let err = repo.execute("r", TallyCommand::Add(0)).await.unwrap_err();
    assert_eq!(err.rejection(), Some(&TallyError::Zero));
    assert!(err.to_string().contains("adding zero"), "{err}");
    assert!(matches!(
        store
            .read_stream(&stream("tally-r"), ReadStreamOptions::forward())
            .await,
        Err(strata::ReadError::StreamNotFound(_))
    ));

    repo.execute("r", TallyCommand::Close).await.unwrap();
    let err = repo.execute("r", TallyCommand::Add(1)).await.unwrap_err();
    assert!(matches!(err, ExecuteError::Rejected(TallyError::Closed)));
    assert_eq!(repo.load("r").await.unwrap().version, Some(0));
}

async fn a_command_that_causes_nothing_appends_nothing<S: Backend>(store: S) {
    let repo = Repository::<Tally, _>::new(store);
    let none = repo.execute("z", TallyCommand::Nothing).await.unwrap();
    assert_eq!(none.version, None);
    assert!(none.events.is_empty());
    let added = repo.execute("z", TallyCommand::Add(2)).await.unwrap();
    let again = repo.execute("z", TallyCommand::Nothing).await.unwrap();
    assert_eq!(again.version, Some(0));
    assert_eq!(again.position, added.position);
}

async fn a_conflict_is_retried_against_the_new_state<S: Backend>(store: S) {
    let competing = EventData::json("Added", &json!({"amount": 1000})).unwrap();
    let store = Interfering::new(store, 2, competing);
    let repo = Repository::<Tally, _>::new(store.clone());

    let done = repo.execute("c", TallyCommand::Add(1)).await.unwrap();
    assert_eq!(done.attempts, 3, "two conflicts, then success");
    // The command was decided on top of both competing events.
    assert_eq!(done.state.total, 2001);
    assert_eq!(done.version, Some(2));
    assert_eq!(repo.load("c").await.unwrap().total, 2001);
}

async fn a_conflict_that_outlasts_the_retries_is_returned<S: Backend>(store: S) {
    let competing = EventData::json("Added", &json!({"amount": 1000})).unwrap();
    let store = Interfering::new(store, 10, competing);
    let repo = Repository::<Tally, _>::new(store.clone()).with_max_retries(2);

    let err = repo.execute("c", TallyCommand::Add(1)).await.unwrap_err();
    match &err {
        ExecuteError::Conflict {
            stream,
            attempts,
            expected,
            actual,
        } => {
            assert_eq!(stream.as_str(), "tally-c");
            assert_eq!(*attempts, 3);
            assert_eq!(*expected, ExpectedVersion::Exact(1));
            assert_eq!(*actual, ActualVersion(Some(2)));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(err.is_conflict());
    // Only the competing writer's events are there.
    let loaded = repo.load("c").await.unwrap();
    assert_eq!((loaded.total, loaded.count), (3000, 3));
}

async fn concurrent_commands_on_one_aggregate_lose_no_update<S: Backend>(store: S) {
    let repo = Repository::<Tally, _>::new(store).with_max_retries(100);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0i64;
            for _ in 0..10 {
                match repo.execute("hot", TallyCommand::Add(1)).await {
                    Ok(_) => ok += 1,
                    Err(e) if e.is_conflict() => {}
                    Err(e) => panic!("{e}"),
                }
            }
            ok
        }));
    }
    let mut succeeded = 0;
    for t in tasks {
        succeeded += t.await.unwrap();
    }
    let loaded = repo.load("hot").await.unwrap();
    assert_eq!(loaded.total, succeeded);
    assert_eq!(loaded.version, Some(succeeded as u64 - 1));
    assert!(succeeded > 0);
}

async fn the_same_command_id_cannot_record_its_events_twice<S: Backend>(store: S) {
    let repo = Repository::<Tally, _>::new(store);
    let envelope = CommandEnvelope::new(TallyCommand::Add(10)).command_id(Uuid::now_v7());
    repo.execute("d", envelope.clone()).await.unwrap();
    let err = repo.execute("d", envelope.clone()).await.unwrap_err();
    assert!(
        matches!(&err, ExecuteError::DuplicateCommand { command_id, .. } if *command_id == envelope.context.command_id),
        "{err:?}"
    );
    assert_eq!(repo.load("d").await.unwrap().total, 10);
}

async fn snapshots_are_written_every_interval_and_used_by_loads<S: Backend>(store: S) {
    let repo = Repository::<Tally, _>::new(store.clone())
        .with_snapshot_interval(10)
        .with_cache_capacity(0);
    let mut snapshots = Vec::new();
    for _ in 0..25 {
        let done = repo.execute("s", TallyCommand::Add(1)).await.unwrap();
        snapshots.extend(done.snapshot_version);
    }
    assert_eq!(snapshots, vec![9, 19]);

    let loaded = repo.load("s").await.unwrap();
    assert_eq!(loaded.snapshot_version, Some(19));
    assert_eq!(loaded.events_replayed, 5);
    assert_eq!((loaded.total, loaded.version), (25, Some(24)));

    // A multi-event command crossing the interval snapshots at its last event.
    let done = repo
        .execute("s", TallyCommand::AddMany(vec![1; 7]))
        .await
        .unwrap();
    assert_eq!(done.snapshot_version, Some(31));

    // Snapshots are derived data: delete them and the state is rebuilt from the events.
    assert_eq!(repo.delete_snapshots("s").await.unwrap(), 3);
    let replayed = repo.load("s").await.unwrap();
    assert_eq!(replayed.snapshot_version, None);
    assert_eq!(replayed.events_replayed, 32);
    assert_eq!(replayed.state, done.state);
    // ... and the next command rebuilds one (32 events since "no snapshot").
    let next = repo.execute("s", TallyCommand::Add(1)).await.unwrap();
    assert_eq!(next.snapshot_version, Some(32));

    // Interval 0 never snapshots; an explicit snapshot works whatever the interval.
    let never = Repository::<Tally, _>::new(store)
        .with_snapshot_interval(0)
        .with_cache_capacity(0);
    for _ in 0..3 {
        assert_eq!(
            never
                .execute("t", TallyCommand::Add(1))
                .await
                .unwrap()
                .snapshot_version,
            None
        );
    }
    assert_eq!(never.snapshot("t").await.unwrap(), Some(2));
    assert_eq!(never.snapshot("nobody").await.unwrap(), None);
    assert_eq!(never.load("t").await.unwrap().snapshot_version, Some(2));
}

async fn a_failing_snapshot_write_never_fails_the_command<S: Backend>(store: S) {
    let store = FailingSnapshots::new(store);
    let repo = Repository::<Tally, _>::new(store.clone()).with_snapshot_interval(1);
    for i in 0..3 {
        let done = repo.execute("f", TallyCommand::Add(1)).await.unwrap();
        assert_eq!(done.version, Some(i));
        assert_eq!(done.snapshot_version, None);
    }
    assert_eq!(store.attempts.load(Ordering::SeqCst), 3);
    assert_eq!(repo.load("f").await.unwrap().total, 3);
}

async fn snapshots_of_another_schema_or_unreadable_ones_are_ignored<S: Backend>(store: S) {
    let repo = Repository::<Tally, _>::new(store.clone())
        .with_snapshot_interval(0)
        .with_cache_capacity(0);
    for _ in 0..4 {
        repo.execute("x", TallyCommand::Add(2)).await.unwrap();
    }
    // A snapshot written by an older state type (schema version 0): ignored.
    store
        .save_snapshot(Snapshot {
            stream_id: stream("tally-x"),
            stream_version: 3,
            schema_version: 0,
            data: br#"{"old":"shape"}"#.to_vec(),
            taken_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let loaded = repo.load("x").await.unwrap();
    assert_eq!(loaded.snapshot_version, None);
    assert_eq!(loaded.total, 8);

    // A snapshot claiming the right schema but not decodable: logged, full replay.
    store
        .save_snapshot(Snapshot {
            stream_id: stream("tally-x"),
            stream_version: 2,
            schema_version: 1,
            data: br#"{"total":"not a number"}"#.to_vec(),
            taken_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let loaded = repo.load("x").await.unwrap();
    assert_eq!(loaded.snapshot_version, None);
    assert_eq!(loaded.total, 8);
}

/// A cold load takes the events after the snapshot from the store's combined read where it
/// has one (PostgreSQL: one query instead of two) and reads on only past a full page.
async fn a_cold_load_reads_the_events_with_the_snapshot_where_the_store_can<S: Backend>(store: S) {
    let store = ReadCounting::new(store);
    let combined = store
        .load_snapshot_and_events(&stream("tally-c"), 1, 1)
        .await
        .unwrap()
        .events
        .is_some();
    // Reads the store answers with the snapshot instead.
    let saved = u32::from(combined);
    let repo = Repository::<Tally, _>::new(store.clone())
        .with_snapshot_interval(10)
        .with_cache_capacity(0)
        .with_page_events(5);
    for _ in 0..23 {
        repo.execute("c", TallyCommand::Add(1)).await.unwrap();
    }
    // Snapshot at 19, three events after it: one page, not full.
    store.reads.store(0, Ordering::SeqCst);
    let loaded = repo.load("c").await.unwrap();
    assert_eq!((loaded.total, loaded.version), (23, Some(22)));
    assert_eq!(
        (loaded.snapshot_version, loaded.events_replayed),
        (Some(19), 3)
    );
    assert_eq!(store.reads.load(Ordering::SeqCst), 1 - saved);
    // Five events after it fill the page: the load reads on, and finds nothing more.
    for _ in 0..2 {
        repo.execute("c", TallyCommand::Add(1)).await.unwrap();
    }
    store.reads.store(0, Ordering::SeqCst);
    let loaded = repo.load("c").await.unwrap();
    assert_eq!((loaded.total, loaded.events_replayed), (25, 5));
    assert_eq!(store.reads.load(Ordering::SeqCst), 2 - saved);
    // A stream with no events and no snapshot loads empty.
    let nobody = repo.load("nobody").await.unwrap();
    assert_eq!((nobody.version, nobody.total), (None, 0));
}

/// A snapshot left for a stream that has no events (written elsewhere, or its events gone)
/// is not a state: the load starts empty, and the next command creates the stream.
async fn a_snapshot_of_a_stream_without_events_is_ignored<S: Backend>(store: S) {
    store
        .save_snapshot(Snapshot {
            stream_id: stream("tally-ghost"),
            stream_version: 4,
            schema_version: 1,
            data: serde_json::to_vec(&Tally {
                total: 99,
                count: 5,
                closed: false,
            })
            .unwrap(),
            taken_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let repo = Repository::<Tally, _>::new(store).with_cache_capacity(0);
    let loaded = repo.load("ghost").await.unwrap();
    assert_eq!((loaded.version, loaded.total), (None, 0));
    assert_eq!(loaded.snapshot_version, None);
    let done = repo.execute("ghost", TallyCommand::Add(1)).await.unwrap();
    assert_eq!((done.version, done.state.total), (Some(0), 1));
}

/// A soft-deleted aggregate is a new one: its snapshot and its cached state (of the history
/// that is gone) are not used, and its next command re-creates the stream with versions
/// continuing; a truncation past a snapshot replays what is left.
async fn a_deleted_aggregate_starts_anew<S: Backend>(store: S) {
    let cached = Repository::<Tally, _>::new(store.clone()).with_snapshot_interval(5);
    let cold = Repository::<Tally, _>::new(store.clone())
        .with_snapshot_interval(5)
        .with_cache_capacity(0);
    for _ in 0..5 {
        cached.execute("d", TallyCommand::Add(10)).await.unwrap();
    }
    let before = cold.load("d").await.unwrap();
    assert_eq!((before.total, before.snapshot_version), (50, Some(4)));
    store
        .delete_stream(&stream("tally-d"), ExpectedVersion::Exact(4))
        .await
        .unwrap();

    // Loaded cold: the snapshot at version 4 is of the deleted history.
    let gone = cold.load("d").await.unwrap();
    assert_eq!(
        (gone.version, gone.total, gone.snapshot_version),
        (None, 0, None)
    );
    // A command decided on the cached state (version 4) is refused by the store and decided
    // again on the new aggregate.
    let done = cached.execute("d", TallyCommand::Add(1)).await.unwrap();
    assert_eq!((done.version, done.state.total), (Some(5), 1));
    assert_eq!(done.attempts, 2);
    for repo in [&cached, &cold] {
        let loaded = repo.load("d").await.unwrap();
        assert_eq!(
            (loaded.version, loaded.total, loaded.count),
            (Some(5), 1, 1)
        );
    }

    // Truncated past its newest snapshot: the load replays the events left, from the first
    // one kept.
    for _ in 0..7 {
        cold.execute("d", TallyCommand::Add(1)).await.unwrap();
    }
    let snapshot = cold.load("d").await.unwrap().snapshot_version.unwrap();
    assert!((5..12).contains(&snapshot), "{snapshot}");
    store
        .truncate_stream(&stream("tally-d"), snapshot + 1)
        .await
        .unwrap();
    let left = cold.load("d").await.unwrap();
    let kept = 12 - snapshot as i64;
    assert_eq!(
        (left.version, left.total, left.snapshot_version),
        (Some(12), kept, None)
    );
    let cached_left = cached.load("d").await.unwrap();
    assert_eq!((cached_left.version, cached_left.total), (Some(12), kept));
}

async fn loads_page_through_long_streams<S: Backend>(store: S) {
    for page in [1, 7, 10, 50, 51] {
        let repo = Repository::<Tally, _>::new(store.clone())
            .with_snapshot_interval(0)
            .with_cache_capacity(0)
            .with_page_events(page);
        let id = format!("p{page}");
        repo.execute(&id, TallyCommand::AddMany((1..=50).collect()))
            .await
            .unwrap();
        let loaded = repo.load(&id).await.unwrap();
        assert_eq!(loaded.total, 1275, "page size {page}");
        assert_eq!(loaded.version, Some(49));
        let at = repo.load_at_version(&id, 20).await.unwrap();
        assert_eq!(at.total, 231, "page size {page}"); // 1 + ... + 21
    }
}

async fn load_at_version_uses_snapshots_at_or_below_it<S: Backend>(store: S) {
    let repo = Repository::<Tally, _>::new(store).with_snapshot_interval(10);
    for amount in 1..=30 {
        repo.execute("v", TallyCommand::Add(amount)).await.unwrap();
    }
    for version in [0u64, 5, 9, 10, 19, 25, 29] {
        let loaded = repo.load_at_version("v", version).await.unwrap();
        let n = version as i64 + 1;
        assert_eq!(loaded.total, n * (n + 1) / 2, "at version {version}");
        assert_eq!(loaded.version, Some(version));
        let expected_snapshot = match version {
            0..=8 => None,
            9..=18 => Some(9),
            19..=28 => Some(19),
            _ => Some(29),
        };
        assert_eq!(loaded.snapshot_version, expected_snapshot, "at {version}");
    }
    let err = repo.load_at_version("v", 30).await.unwrap_err();
    assert!(
        matches!(
            &err,
            LoadError::VersionNotFound {
                requested: 30,
                current: ActualVersion(Some(29)),
                ..
            }
        ),
        "{err:?}"
    );
    let err = repo.load_at_version("nobody", 0).await.unwrap_err();
    assert!(matches!(
        err,
        LoadError::VersionNotFound {
            current: ActualVersion(None),
            ..
        }
    ));
}

async fn load_as_of_a_time_sees_only_what_was_recorded_by_then<S: Backend>(store: S) {
    let repo = Repository::<Tally, _>::new(store.clone()).with_snapshot_interval(3);
    let before_anything = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut marks = Vec::new();
    for amount in 1..=10 {
        repo.execute("t", TallyCommand::Add(amount)).await.unwrap();
        // Another aggregate's events in between must not matter.
        repo.execute("other", TallyCommand::Add(100)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
        marks.push(chrono::Utc::now());
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let empty = repo.load_as_of("t", before_anything).await.unwrap();
    assert_eq!(empty.version, None);
    for (i, at) in marks.iter().enumerate() {
        let loaded = repo.load_as_of("t", *at).await.unwrap();
        let n = i as i64 + 1;
        assert_eq!(loaded.total, n * (n + 1) / 2, "as of mark {i}");
        assert_eq!(loaded.version, Some(i as u64));
        // Snapshots exist at versions 2, 5, 8; only ones at or before that point are used.
        if let Some(s) = loaded.snapshot_version {
            assert!(s <= i as u64);
        }
        if i >= 2 {
            assert!(loaded.snapshot_version.is_some(), "as of mark {i}");
        }
    }
    // An aggregate created after the time does not exist yet then.
    repo.execute("late", TallyCommand::Add(1)).await.unwrap();
    assert_eq!(
        repo.load_as_of("late", marks[9]).await.unwrap().version,
        None
    );
}

async fn an_event_that_cannot_be_decoded_is_a_typed_error_naming_it<S: Backend>(store: S) {
    // The cached path (catching up on the new event) and the cold path fail the same way.
    let cached = Repository::<Tally, _>::new(store.clone());
    cached.execute("e1", TallyCommand::Add(1)).await.unwrap();
    seed(
        &store,
        "tally-e1",
        vec![EventData::json("Renamed", &json!({})).unwrap()],
    )
    .await;
    let LoadError::Decode(d) = cached.load("e1").await.unwrap_err() else {
        panic!()
    };
    assert_eq!((d.version, d.kind), (1, DecodeErrorKind::UnknownEventType));
    let repo = Repository::<Tally, _>::new(store.clone()).with_cache_capacity(0);
    let err = repo.load("e1").await.unwrap_err();
    let LoadError::Decode(d) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (d.stream.as_str(), d.version, d.event_type.as_str()),
        ("tally-e1", 1, "Renamed")
    );
    assert_eq!(d.kind, DecodeErrorKind::UnknownEventType);
    let message = err.to_string();
    assert!(
        message.contains("tally-e1@1") && message.contains("Renamed"),
        "{message}"
    );

    // A schema version newer than any upcaster knows.
    let newer = EventData::json("Added", &json!({"amount": 1}))
        .unwrap()
        .with_metadata(Metadata::new().with("schemaVersion", json!(3)));
    seed(&store, "tally-e2", vec![newer]).await;
    let LoadError::Decode(d) = repo.load("e2").await.unwrap_err() else {
        panic!()
    };
    assert_eq!(d.schema_version, 3);
    assert_eq!(
        d.kind,
        DecodeErrorKind::Upcast(UpcastError::TooNew {
            stored: 3,
            latest: 1
        })
    );

    // A malformed schema version.
    let bad = EventData::json("Added", &json!({"amount": 1}))
        .unwrap()
        .with_metadata(Metadata::new().with("schemaVersion", json!("two")));
    seed(&store, "tally-e3", vec![bad]).await;
    let LoadError::Decode(d) = repo.load("e3").await.unwrap_err() else {
        panic!()
    };
    assert!(matches!(d.kind, DecodeErrorKind::InvalidSchemaVersion(_)));

    // A payload that does not fit the type.
    seed(
        &store,
        "tally-e4",
        vec![EventData::json("Added", &json!({"amount": "x"})).unwrap()],
    )
    .await;
    let LoadError::Decode(d) = repo.load("e4").await.unwrap_err() else {
        panic!()
    };
    assert!(
        matches!(d.kind, DecodeErrorKind::Payload(_)),
        "{:?}",
        d.kind
    );

    // A payload that is not JSON at all.
    seed(
        &store,
        "tally-e5",
        vec![EventData::binary(
            "Added",
            "application/octet-stream",
            vec![1, 2],
        )],
    )
    .await;
    let LoadError::Decode(d) = repo.load("e5").await.unwrap_err() else {
        panic!()
    };
    assert!(matches!(d.kind, DecodeErrorKind::NotJson { .. }));

    // Commands on such an aggregate fail the same way, without writing.
    let err = repo.execute("e5", TallyCommand::Add(1)).await.unwrap_err();
    assert!(
        matches!(err, ExecuteError::Load(LoadError::Decode(_))),
        "{err:?}"
    );
}

async fn invalid_ids_are_refused<S: Backend>(store: S) {
    let repo = Repository::<Tally, _>::new(store);
    assert!(matches!(repo.load("").await, Err(LoadError::InvalidId(_))));
    assert!(matches!(
        repo.execute("a\nb", TallyCommand::Add(1)).await,
        Err(ExecuteError::Load(LoadError::InvalidId(_)))
    ));
}

async fn history_reads_decoded_events_with_their_metadata<S: Backend>(store: S) {
    let repo = Repository::<Tally, _>::new(store);
    repo.execute(
        "h",
        CommandEnvelope::new(TallyCommand::AddMany(vec![1, 2, 3])).user_id("u1"),
    )
    .await
    .unwrap();
    let events = repo.read_events("h", 1, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event, TallyEvent::Added { amount: 2 });
    assert_eq!(events[0].stream_version, 1);
    assert_eq!(events[1].metadata.user_id(), Some("u1"));
    assert!(repo.read_events("nobody", 0, 10).await.unwrap().is_empty());
}

async fn the_cache_catches_up_with_writes_from_elsewhere<S: Backend>(store: S) {
    let here = Repository::<Tally, _>::new(store.clone());
    // Another process (or another repository) writing to the same aggregate.
    let elsewhere = Repository::<Tally, _>::new(store.clone()).with_cache_capacity(0);
    here.execute("k", TallyCommand::Add(1)).await.unwrap();
    let hit = here.load("k").await.unwrap();
    assert!(hit.from_cache);
    assert_eq!((hit.events_replayed, hit.total), (0, 1));

    elsewhere
        .execute("k", TallyCommand::AddMany(vec![10, 20]))
        .await
        .unwrap();
    let caught_up = here.load("k").await.unwrap();
    assert!(caught_up.from_cache);
    assert_eq!((caught_up.events_replayed, caught_up.total), (2, 31));
    assert_eq!(caught_up.version, Some(2));

    // A command decided on the cached state sees the other writes first (no conflict needed).
    elsewhere.execute("k", TallyCommand::Close).await.unwrap();
    let err = here.execute("k", TallyCommand::Add(1)).await.unwrap_err();
    assert_eq!(err.rejection(), Some(&TallyError::Closed));

    // A refusal or a no-op decided on a cached state is checked against the events stored
    // since: here the cache says 31, the store says 41.
    let other = elsewhere.execute("k2", TallyCommand::Add(1)).await.unwrap();
    assert_eq!(other.version, Some(0));
    here.load("k2").await.unwrap();
    elsewhere
        .execute("k2", TallyCommand::Add(10))
        .await
        .unwrap();
    let done = here
        .execute(
            "k2",
            TallyCommand::AddIfTotal {
                expected_total: 11,
                amount: 5,
            },
        )
        .await
        .unwrap();
    assert_eq!((done.total, done.version, done.attempts), (16, Some(2), 1));
    elsewhere
        .execute("k2", TallyCommand::Add(100))
        .await
        .unwrap();
    let none = here.execute("k2", TallyCommand::Nothing).await.unwrap();
    assert_eq!((none.version, none.total), (Some(3), 116));
    let err = here
        .execute(
            "k2",
            TallyCommand::AddIfTotal {
                expected_total: 16,
                amount: 1,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.rejection(),
        Some(&TallyError::WrongTotal {
            expected: 16,
            actual: 116
        })
    );

    // Evicting forgets the state; the next load is cold.
    here.evict("k");
    let cold = here.load("k").await.unwrap();
    assert!(!cold.from_cache);
    assert_eq!(cold.events_replayed, 4);
}

macro_rules! cases {
    ($($backend:ident => $make:expr),* $(,)?) => {$(
        support::backend_tests!($backend, $make, [
            a_command_appends_its_events_and_a_load_replays_them,
            metadata_flows_from_the_command_to_every_event,
            a_rejected_command_writes_nothing,
            a_command_that_causes_nothing_appends_nothing,
            a_conflict_is_retried_against_the_new_state,
            a_conflict_that_outlasts_the_retries_is_returned,
            concurrent_commands_on_one_aggregate_lose_no_update,
            the_same_command_id_cannot_record_its_events_twice,
            snapshots_are_written_every_interval_and_used_by_loads,
            a_failing_snapshot_write_never_fails_the_command,
            snapshots_of_another_schema_or_unreadable_ones_are_ignored,
            a_cold_load_reads_the_events_with_the_snapshot_where_the_store_can,
            a_snapshot_of_a_stream_without_events_is_ignored,
            a_deleted_aggregate_starts_anew,
            loads_page_through_long_streams,
            load_at_version_uses_snapshots_at_or_below_it,
            load_as_of_a_time_sees_only_what_was_recorded_by_then,
            an_event_that_cannot_be_decoded_is_a_typed_error_naming_it,
            invalid_ids_are_refused,
            history_reads_decoded_events_with_their_metadata,
            the_cache_catches_up_with_writes_from_elsewhere,
        ]);
    )*};
}

cases! {
    embedded => crate::support::log_backend(),
    memory => crate::support::memory_backend(),
    postgres => crate::support::postgres_backend(),
}
