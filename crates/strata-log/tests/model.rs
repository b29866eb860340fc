//! Model-based test: random sequences of operations on the embedded store and on the
//! in-memory reference model, compared after every step, reopening the embedded store at
//! random points.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use strata_core::{
    AppendError, EventData, EventStore, ExpectedVersion, Filter, Position, ReadAllOptions,
    ReadError, ReadStreamOptions, RecordedEvent, StreamId, Uuid,
};
use strata_log::{LogConfig, LogStore};
use strata_testkit::MemoryStore;

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: u8,
        expected: u8,
        exact: u64,
        events: u8,
        kind: u8,
    },
    /// Sends one of the earlier appends again, unchanged (an idempotent retry).
    Retry(usize),
    ReadStream {
        stream: u8,
        backward: bool,
        from: Option<u64>,
        limit: usize,
    },
    ReadAll {
        backward: bool,
        from: Option<u64>,
        limit: usize,
        filter: u8,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0u8..4, 0u64..6, 1u8..5, 0u8..3).prop_map(|(stream, expected, exact, events, kind)| Op::Append { stream, expected, exact, events, kind }),
        1 => (0usize..64).prop_map(Op::Retry),
        2 => (0u8..4, any::<bool>(), proptest::option::of(0u64..6), 1usize..8).prop_map(|(stream, backward, from, limit)| Op::ReadStream { stream, backward, from, limit }),
        2 => (any::<bool>(), proptest::option::of(0u64..30), 1usize..10, 0u8..4).prop_map(|(backward, from, limit, filter)| Op::ReadAll { backward, from, limit, filter }),
        1 => Just(Op::Reopen),
    ]
}

const STREAMS: [&str; 4] = ["account-1", "account-2", "order-1", "user-x"];
const TYPES: [&str; 3] = ["Opened", "Deposited", "Closed"];

/// An event with its store-assigned time left out: the two stores record different times.
fn comparable(e: &RecordedEvent) -> (Uuid, String, u64, u64, String, Vec<u8>) {
    (
        e.event_id,
        e.stream_id.to_string(),
        e.stream_version,
        e.position.0,
        e.event_type.clone(),
        e.data.clone(),
    )
}

fn append_key(r: &Result<strata_core::AppendResult, AppendError>) -> String {
    match r {
        Ok(r) => format!("ok {} {:?}", r.stream_version, r.positions),
        Err(AppendError::WrongExpectedVersion { actual, .. }) => format!("wev {actual}"),
        Err(AppendError::EventIdConflict { event_id, .. }) => format!("conflict {event_id}"),
        Err(e) => format!("other error: {e}"),
    }
}

fn read_key(r: Result<Vec<RecordedEvent>, ReadError>) -> String {
    match r {
        Ok(evs) => format!("{:?}", evs.iter().map(comparable).collect::<Vec<_>>()),
        Err(ReadError::StreamNotFound(s)) => format!("not found {s}"),
        Err(e) => format!("other error: {e}"),
    }
}

fn filter_of(n: u8) -> Filter {
    match n {
        0 => Filter::default(),
        1 => Filter::default().categories(["account"]),
        2 => Filter::default().event_types(["Deposited", "Closed"]),
        _ => Filter::default()
            .stream_prefix("account-1")
            .event_types(["Opened"]),
    }
}

fn o_dir(backward: bool) -> ReadAllOptions {
    if backward {
        ReadAllOptions::backward()
    } else {
        ReadAllOptions::forward()
    }
}

fn o_rest(o: &ReadAllOptions, from: Position, filter: Filter) -> ReadAllOptions {
    o.clone().from(from).limit(10_000).filter(filter)
}

fn run(ops: Vec<Op>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_max_bytes: 4096,
            ..LogConfig::default()
        };
        let mut log = Some(LogStore::open_with(dir.path(), config.clone()).unwrap());
        let model = MemoryStore::new();
        let mut sent: Vec<(StreamId, ExpectedVersion, Vec<EventData>)> = Vec::new();
        let mut next_id = 1u128;
        for (step, op) in ops.into_iter().enumerate() {
            let store = log.as_ref().unwrap();
            match op {
                Op::Append {
                    stream,
                    expected,
                    exact,
                    events,
                    kind,
                } => {
                    let s = StreamId::new(STREAMS[stream as usize]).unwrap();
                    let expected = match expected {
                        0 => ExpectedVersion::Any,
                        1 => ExpectedVersion::NoStream,
                        2 => ExpectedVersion::StreamExists,
                        _ => ExpectedVersion::Exact(exact),
                    };
                    let evs: Vec<EventData> = (0..events)
                        .map(|k| {
                            next_id += 1;
                            EventData::json(
                                TYPES[((kind + k) % 3) as usize],
                                &serde_json::json!({ "step": step, "k": k }),
                            )
                            .unwrap()
                            .with_id(Uuid::from_u128(next_id))
                        })
                        .collect();
                    let a = store.append(&s, expected, evs.clone()).await;
                    let b = model.append(&s, expected, evs.clone()).await;
                    assert_eq!(append_key(&a), append_key(&b), "step {step}: append");
                    sent.push((s, expected, evs));
                }
                Op::Retry(i) => {
                    if sent.is_empty() {
                        continue;
                    }
                    let (s, expected, evs) = sent[i % sent.len()].clone();
                    let a = store.append(&s, expected, evs.clone()).await;
                    let b = model.append(&s, expected, evs).await;
                    assert_eq!(append_key(&a), append_key(&b), "step {step}: retry");
                }
                Op::ReadStream {
                    stream,
                    backward,
                    from,
                    limit,
                } => {
                    let s = StreamId::new(STREAMS[stream as usize]).unwrap();
                    let mut o = if backward {
                        ReadStreamOptions::backward()
                    } else {
                        ReadStreamOptions::forward()
                    }
                    .limit(limit);
                    if let Some(f) = from {
                        o = o.from_version(f);
                    }
                    let a = read_key(store.read_stream(&s, o.clone()).await);
                    let b = read_key(model.read_stream(&s, o).await);
                    assert_eq!(a, b, "step {step}: read_stream");
                }
                Op::ReadAll {
                    backward,
                    from,
                    limit,
                    filter,
                } => {
                    let f = filter_of(filter);
                    let mut o = if backward {
                        ReadAllOptions::backward()
                    } else {
                        ReadAllOptions::forward()
                    }
                    .limit(limit)
                    .filter(f);
                    if let Some(p) = from {
                        o = o.from(Position(p));
                    }
                    let a = store.read_all(o.clone()).await.unwrap();
                    let b = model.read_all(o).await.unwrap();
                    assert_eq!(
                        a.events.iter().map(comparable).collect::<Vec<_>>(),
                        b.events.iter().map(comparable).collect::<Vec<_>>(),
                        "step {step}: read_all events"
                    );
                    // Backends may examine different amounts (an index knows where the next
                    // match is); what must hold is that nothing matching lies past a cursor
                    // that claims the end.
                    if a.is_end {
                        let rest = match a.next {
                            Some(n) => {
                                model
                                    .read_all(o_rest(&o_dir(backward), n, filter_of(filter)))
                                    .await
                                    .unwrap()
                                    .events
                            }
                            None => Vec::new(),
                        };
                        assert!(
                            rest.is_empty(),
                            "step {step}: the log claimed the end but {} matching events follow",
                            rest.len()
                        );
                    } else {
                        assert!(
                            a.next.is_some(),
                            "step {step}: a read that did not end must say where to continue"
                        );
                    }
                }
                Op::Reopen => {
                    drop(log.take());
                    log = Some(LogStore::open_with(dir.path(), config.clone()).unwrap());
                }
            }
            let store = log.as_ref().unwrap();
            assert_eq!(
                store.head().await.unwrap(),
                model.head().await.unwrap(),
                "step {step}: head"
            );
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn log_store_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..48)) {
        run(ops);
    }
}
