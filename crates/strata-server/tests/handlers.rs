//! Handler tests without a socket: `app(...).oneshot(request)`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use strata::projection::{EventTypeCounts, Projections, SqliteReadModels};
use strata_core::{
    async_trait, AllPage, AppendError, AppendResult, CategorySummary, Corruption,
    CorruptionLocation, EventData, EventStore, ExpectedVersion, ListOptions, Page, Position,
    ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent, StreamId, StreamInfo,
    StreamSummary, SubscribeFrom, Subscription, SubscriptionTarget, Timestamp,
};
use strata_server::{
    app, hash_token, Action, AppState, ConfigProblem, Role, ServerConfig, TokenConfig, TokenRef,
    ROUTES,
};
use strata_testkit::MemoryStore;
use tokio::sync::watch;
use tower::ServiceExt;

/// Where [`Faulty`]'s errors say its files are: no answer may show it.
const SECRET_DIR: &str = "/var/lib/strata/secret-dir";

/// A store that can be made to fail like a stopped log or an unreachable database.
#[derive(Clone)]
struct Faulty {
    inner: MemoryStore,
    down: Arc<AtomicBool>,
    /// Reads of position 1 and after fail their integrity checks.
    corrupt: Arc<AtomicBool>,
    /// While set, a subscription to all of `$all` from its end (what the server's live
    /// fan-out opens) waits at its start.
    hub_gate: Arc<watch::Sender<bool>>,
    /// Told when such a subscription has started, and after every `$all` read.
    hub_started: Arc<tokio::sync::Notify>,
    all_read: Arc<tokio::sync::Notify>,
    /// While set, it cannot scavenge (as a store without scavenging answers).
    no_scavenge: Arc<AtomicBool>,
}

impl Faulty {
    fn check(&self, events: &[RecordedEvent]) -> Result<(), ReadError> {
        match events.iter().find(|e| e.position.0 >= 1) {
            Some(e) if self.corrupt.load(Ordering::SeqCst) => Err(Corruption::new(
                CorruptionLocation::LogFile {
                    file: format!("{SECRET_DIR}/00000001.seg").into(),
                    offset: 4096,
                },
                Some(e.position),
                "CRC mismatch",
            )
            .into()),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl EventStore for Faulty {
    async fn append(
        &self,
        s: &StreamId,
        e: ExpectedVersion,
        ev: Vec<EventData>,
    ) -> Result<AppendResult, AppendError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(AppendError::Stopped(
                (format!(
                "fdatasync of {SECRET_DIR}/00000003.seg failed: Input/output error (os error 5)"
            ))
                .into(),
            ));
        }
        self.inner.append(s, e, ev).await
    }
    async fn read_stream(
        &self,
        s: &StreamId,
        o: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ReadError::Storage(
                (format!("reading {SECRET_DIR}/index: disk on fire")).into(),
            ));
        }
        let events = self.inner.read_stream(s, o).await?;
        self.check(&events)?;
        Ok(events)
    }
    async fn read_all(&self, o: ReadAllOptions) -> Result<AllPage, ReadError> {
        let page = self.inner.read_all(o).await?;
        self.check(&page.events)?;
        self.all_read.notify_one();
        Ok(page)
    }
    async fn stream_info(&self, s: &StreamId) -> Result<StreamInfo, ReadError> {
        self.inner.stream_info(s).await
    }
    async fn list_streams(&self, o: ListOptions) -> Result<Page<StreamSummary>, ReadError> {
        self.inner.list_streams(o).await
    }
    async fn list_categories(&self, o: ListOptions) -> Result<Page<CategorySummary>, ReadError> {
        self.inner.list_categories(o).await
    }
    async fn position_at(&self, at: Timestamp) -> Result<Option<Position>, ReadError> {
        self.inner.position_at(at).await
    }
    async fn head(&self) -> Result<Option<Position>, ReadError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ReadError::Unavailable(
                ("connecting to /run/postgresql/.s.PGSQL.5432: Connection refused (os error 111)"
                    .to_owned())
                .into(),
            ));
        }
        self.inner.head().await
    }
    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }
    async fn scavenge(
        &self,
        progress: strata_core::scavenge::ProgressFn<'_>,
    ) -> Result<strata_core::scavenge::ScavengeReport, strata_core::scavenge::ScavengeError> {
        if self.no_scavenge.load(Ordering::SeqCst) {
            return Err(strata_core::scavenge::ScavengeError::Unsupported);
        }
        self.inner.scavenge(progress).await
    }
    async fn subscribe(
        &self,
        t: SubscriptionTarget,
        f: SubscribeFrom,
    ) -> Result<Subscription, ReadError> {
        let hub = f == SubscribeFrom::End
            && matches!(&t, SubscriptionTarget::All(filter) if *filter == Default::default());
        if hub {
            let mut gate = self.hub_gate.subscribe();
            let _ = gate.wait_for(|closed| !closed).await;
        }
        let sub = Subscription::start(Arc::new(self.clone()), t, f).await;
        if hub {
            self.hub_started.notify_one();
        }
        sub
    }
}

struct T {
    app: Router,
    store: Faulty,
    /// Set by [`setup_with_projections`]: the hosted runner and its read-model directory.
    projections: Option<(Projections, tempfile::TempDir)>,
}

const PROJECTION: &str = EventTypeCounts::NAME;

/// [`setup`], with the built-in event-type-counts projection hosted (async, SQLite), and an
/// archiver.
async fn setup_with_projections(config: ServerConfig) -> T {
    let store = Faulty {
        inner: MemoryStore::new(),
        down: Arc::new(AtomicBool::new(false)),
        corrupt: Arc::new(AtomicBool::new(false)),
        hub_gate: Arc::new(watch::channel(false).0),
        hub_started: Arc::new(tokio::sync::Notify::new()),
        all_read: Arc::new(tokio::sync::Notify::new()),
        no_scavenge: Arc::new(AtomicBool::new(false)),
    };
    let dir = tempfile::tempdir().unwrap();
    let models = SqliteReadModels::next_to(dir.path().join("data")).unwrap();
    let projections = Projections::new(Arc::new(store.clone()), models);
    projections.spawn(EventTypeCounts).await.unwrap();
    // And an archiver that succeeds, for the archive endpoints.
    let (called, _) = tokio::sync::mpsc::unbounded_channel();
    let archiver = Arc::new(ScriptedArchiver {
        fail: 0,
        calls: std::sync::atomic::AtomicU64::new(0),
        called,
    });
    // And crypto-shredding, for the encryption endpoints: the store is served through it.
    let keys = strata_shred::Keyring::open(
        Arc::new(strata_shred::MemoryKeys::new()),
        strata_shred::MasterKey::from_bytes([9; 32]),
    )
    .await
    .unwrap();
    let shredded = strata_shred::Shredded::open(Arc::new(store.clone()), keys)
        .await
        .unwrap();
    let state = AppState::new(Arc::new(shredded.clone()), config)
        .unwrap()
        .with_projections(Arc::new(projections.clone()))
        .with_archiver(archiver, std::time::Duration::from_secs(3600))
        .with_shredding(shredded);
    T {
        app: app(state),
        store,
        projections: Some((projections, dir)),
    }
}

fn setup(config: ServerConfig) -> T {
    let store = Faulty {
        inner: MemoryStore::new(),
        down: Arc::new(AtomicBool::new(false)),
        corrupt: Arc::new(AtomicBool::new(false)),
        hub_gate: Arc::new(watch::channel(false).0),
        hub_started: Arc::new(tokio::sync::Notify::new()),
        all_read: Arc::new(tokio::sync::Notify::new()),
        no_scavenge: Arc::new(AtomicBool::new(false)),
    };
    let state = AppState::new(Arc::new(store.clone()), config).unwrap();
    T {
        app: app(state),
        store,
        projections: None,
    }
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
    fn code(&self) -> String {
        assert_eq!(
            self.headers["content-type"], "application/problem+json",
            "{}",
            self.text
        );
        self.json()["code"].as_str().unwrap().to_owned()
    }
}

async fn send(app: &Router, req: Request<Body>) -> Resp {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(app: &Router, uri: &str) -> Resp {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post(app: &Router, uri: &str, body: impl Into<Body>) -> Resp {
    send(
        app,
        Request::post(uri)
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap(),
    )
    .await
}

fn one(event_type: &str, data: Value) -> Value {
    json!({ "eventType": event_type, "data": data })
}

async fn append(app: &Router, stream: &str, expected: Value, events: Vec<Value>) -> Resp {
    post(
        app,
        &format!("/streams/{stream}"),
        json!({ "expectedVersion": expected, "events": events }).to_string(),
    )
    .await
}

#[tokio::test]
async fn append_read_info_and_listings() {
    let t = setup(ServerConfig::default());
    let app = &t.app;
    let r = append(
        app,
        "account-1",
        json!("no_stream"),
        vec![one("AccountOpened", json!({"initialBalance": 100}))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["version"], 0);
    let id = "0190a0f4-0000-7000-8000-000000000001";
    let deposit = json!({"eventId": id, "eventType": "MoneyDeposited", "data": {"amount": 200}, "metadata": {"userId": "u1"}});
    let r = append(app, "account-1", json!(0), vec![deposit.clone()]).await;
    assert_eq!(r.json()["version"], 1);
    let first_positions = r.json()["positions"].clone();
    // The same append again (a retry whose answer was lost) is acknowledged, not duplicated.
    let r = append(app, "account-1", json!(0), vec![deposit]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["positions"], first_positions);
    // Several events at once, binary payloads, stream_exists and any.
    let r = append(
        app,
        "account-1",
        json!("stream_exists"),
        vec![
            one("MoneyWithdrawn", json!({"amount": 50})),
            json!({"eventType": "Scan", "contentType": "image/png", "dataBase64": "iVBORw=="}),
        ],
    )
    .await;
    assert_eq!(r.json()["version"], 3);
    assert_eq!(r.json()["positions"].as_array().unwrap().len(), 2);
    let r = append(
        app,
        "order-9",
        json!("any"),
        vec![one("OrderPlaced", json!({}))],
    )
    .await;
    assert_eq!(r.status, 200);

    // Conflict: 409 with expected and actual, nothing written.
    let r = append(app, "account-1", json!(0), vec![one("X", json!(1))]).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "wrong_expected_version");
    assert_eq!(r.json()["expected"], 0);
    assert_eq!(r.json()["actual"], 3);
    let r = append(
        app,
        "account-1",
        json!("no_stream"),
        vec![one("X", json!(1))],
    )
    .await;
    assert_eq!(r.json()["expected"], "no_stream");
    let r = append(
        app,
        "nobody-1",
        json!("stream_exists"),
        vec![one("X", json!(1))],
    )
    .await;
    assert_eq!(r.json()["actual"], Value::Null);
    // The id reused for another event.
    let r = append(
        app,
        "order-9",
        json!("any"),
        vec![json!({"eventId": id, "eventType": "Other", "data": {}})],
    )
    .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "event_id_conflict");

    // Read forward, paged with explicit next links.
    let r = get(app, "/streams/account-1?limit=2").await;
    assert_eq!(r.status, 200);
    let page = r.json();
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["events"][0]["eventType"], "AccountOpened");
    assert_eq!(page["events"][0]["data"]["initialBalance"], 100);
    assert_eq!(page["events"][1]["metadata"]["userId"], "u1");
    let next = page["next"].as_str().unwrap().to_owned();
    assert!(r.headers["link"].to_str().unwrap().contains("rel=\"next\""));
    let page2 = get(app, &next).await.json();
    assert_eq!(page2["events"][0]["version"], 2);
    assert_eq!(page2["events"][1]["dataBase64"], "iVBORw==");
    assert_eq!(page2["events"][1]["contentType"], "image/png");
    // Backward.
    let r = get(app, "/streams/account-1?direction=backward&limit=3").await;
    let b = r.json();
    assert_eq!(b["events"][0]["version"], 3);
    assert_eq!(b["events"][2]["version"], 1);
    let last = get(app, b["next"].as_str().unwrap()).await.json();
    assert_eq!(last["events"].as_array().unwrap().len(), 1);
    assert_eq!(last["next"], Value::Null);
    // As of a position.
    let r = get(app, "/streams/account-1?maxPosition=0").await.json();
    assert_eq!(r["events"].as_array().unwrap().len(), 1);
    let r = get(
        app,
        "/streams/account-1?maxPosition=0&asOf=2999-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(
        r.json()["events"].as_array().unwrap().len(),
        1,
        "both bounds apply"
    );
    let r = get(app, "/streams/account-1?asOf=2000-01-01T00:00:00Z").await;
    assert_eq!(r.status, 404);
    let r = get(app, "/streams/account-1?asOf=2999-01-01T00:00:00Z")
        .await
        .json();
    assert_eq!(r["events"].as_array().unwrap().len(), 4);

    // $all, filtered and paged.
    let r = get(app, "/all?limit=2").await.json();
    assert_eq!(r["events"].as_array().unwrap().len(), 2);
    assert_eq!(r["isEnd"], false);
    let r2 = get(app, r["next"].as_str().unwrap()).await.json();
    assert_eq!(r2["events"][0]["position"], r["nextPosition"]);
    let r = get(app, "/all?category=order").await.json();
    assert_eq!(r["events"].as_array().unwrap().len(), 1);
    assert_eq!(r["isEnd"], true);
    let r = get(
        app,
        "/all?eventType=MoneyDeposited&eventType=MoneyWithdrawn",
    )
    .await
    .json();
    assert_eq!(r["events"].as_array().unwrap().len(), 2);
    let r = get(app, "/all?prefix=acc&direction=backward&limit=1")
        .await
        .json();
    assert_eq!(r["events"][0]["eventType"], "Scan");
    let r = get(app, "/all?from=1&limit=1").await.json();
    assert_eq!(r["events"][0]["position"].as_u64().unwrap(), 1);

    // Info, listings, head, position-at.
    let r = get(app, "/streams/account-1/info").await.json();
    assert_eq!(r["currentVersion"], 3);
    assert_eq!(r["eventCount"], 4);
    let r = get(app, "/streams/nobody-1/info").await.json();
    assert_eq!(r["exists"], false);
    let r = get(app, "/streams?limit=1").await.json();
    assert_eq!(r["items"][0]["streamId"], "account-1");
    assert_eq!(r["items"][0]["eventCount"], 4);
    assert_eq!(r["nextAfter"], "account-1");
    let r = get(app, r["next"].as_str().unwrap()).await.json();
    assert_eq!(r["items"][0]["streamId"], "order-9");
    let r = get(app, "/streams?prefix=ord").await.json();
    assert_eq!(r["items"].as_array().unwrap().len(), 1);
    let r = get(app, "/categories").await.json();
    assert_eq!(r["items"][0]["category"], "account");
    assert_eq!(r["items"][0]["streamCount"], 1);
    assert_eq!(r["items"][1]["eventCount"], 1);
    let r = get(app, "/all/head").await.json();
    assert_eq!(r["head"], 4);
    let r = get(app, "/all/position-at?time=2999-01-01T00:00:00Z")
        .await
        .json();
    assert_eq!(r["position"], 4);
    let r = get(app, "/all/position-at?time=2000-01-01T00:00:00%2B01:00")
        .await
        .json();
    assert_eq!(r["position"], Value::Null);

    // Health, readiness, metrics.
    assert_eq!(get(app, "/health").await.status, 200);
    assert_eq!(get(app, "/ready").await.json()["head"], 4);
    let m = get(app, "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.text.contains("strata_appends_total 5"), "{}", m.text);
    assert!(
        m.text.contains("strata_append_conflicts_total 3"),
        "{}",
        m.text
    );
    assert!(m.text.contains("strata_append_duration_seconds_count"));
    assert!(m.text.contains("strata_subscriptions_open 0"));
    // Every response carries a request id.
    assert!(get(app, "/health")
        .await
        .headers
        .contains_key("x-request-id"));
}

async fn batch(app: &Router, appends: Value) -> Resp {
    post(app, "/streams", json!({ "appends": appends }).to_string()).await
}

#[tokio::test]
async fn a_batch_answers_each_append_in_order() {
    let t = setup(ServerConfig::default());
    let app = &t.app;
    let id = "6f0e7c1a-0000-4000-8000-000000000001";
    let appends = json!([
        { "streamId": "a-1", "expectedVersion": "no_stream", "events": [one("A", json!(1))] },
        { "streamId": "b-1", "events": [one("B", json!(2)), one("B", json!(3))] },
        // The same stream again: after the first, so it may expect version 0.
        { "streamId": "a-1", "expectedVersion": 0,
          "events": [{ "eventType": "A", "eventId": id, "data": 4 }] },
        { "streamId": "c-1", "expectedVersion": 5, "events": [one("C", json!(5))] },
    ]);
    let r = batch(app, appends.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 4, "{}", r.text);
    assert_eq!(
        (&results[0]["streamId"], &results[0]["version"]),
        (&json!("a-1"), &json!(0))
    );
    assert_eq!(results[1]["streamId"], "b-1");
    assert_eq!(results[1]["version"], 1);
    assert_eq!(results[1]["positions"].as_array().unwrap().len(), 2);
    assert_eq!(
        (&results[2]["streamId"], &results[2]["version"]),
        (&json!("a-1"), &json!(1))
    );
    assert_eq!(results[2]["replayed"], false);
    // The failed one is the problem a single append would have had, and wrote nothing.
    assert_eq!(results[3]["streamId"], "c-1");
    assert_eq!(results[3]["error"]["code"], "wrong_expected_version");
    assert_eq!(results[3]["error"]["status"], 409);
    assert!(results[3].get("version").is_none(), "{}", results[3]);
    assert_eq!(get(app, "/streams/c-1").await.status, 404);
    let a = get(app, "/streams/a-1").await.json();
    assert_eq!(a["events"].as_array().unwrap().len(), 2);

    // The retried append with an id is a replay; the rest answer as they now would.
    let r = batch(app, json!([appends[2]])).await;
    assert_eq!(r.json()["results"][0]["replayed"], true, "{}", r.text);
    assert_eq!(r.json()["results"][0]["version"], 1);
}

#[tokio::test]
async fn a_batch_is_checked_whole_before_anything_is_written() {
    let t = setup(ServerConfig::default());
    let app = &t.app;
    let good = json!({ "streamId": "a-1", "events": [one("A", json!(1))] });
    let cases = [
        (
            json!([good, { "streamId": "$all", "events": [one("A", json!(1))] }]),
            "appends[1].streamId",
        ),
        (
            json!([good, { "streamId": "b-1", "events": [{ "eventType": "A", "dataBase64": "AA==" }] }]),
            "appends[1].events[0].dataBase64",
        ),
        (
            json!([good, { "streamId": "b-1", "events": [{ "eventType": 7 }] }]),
            "appends[1].events[0].eventType",
        ),
        // What only the store's own checks find: still found before anything is written.
        (
            json!([good, { "streamId": "b-1", "events": [] }]),
            "appends[1].events",
        ),
        (
            json!([good, { "streamId": "b-1", "events": [one("", json!(1))] }]),
            "appends[1].events[0].event_type",
        ),
        (
            json!([good, { "streamId": "b-1", "events": [
                { "eventType": "A", "eventId": "6f0e7c1a-0000-4000-8000-000000000001" },
                { "eventType": "A", "eventId": "6f0e7c1a-0000-4000-8000-000000000001" }] }]),
            "appends[1].events[1].event_id",
        ),
        (json!([]), "appends"),
    ];
    for (appends, field) in cases {
        let r = batch(app, appends).await;
        assert_eq!(r.status, 400, "{field}: {}", r.text);
        assert_eq!(r.code(), "invalid_request");
        assert_eq!(r.json()["field"], field, "{}", r.text);
    }
    let too_many: Vec<Value> = (0..=strata_server::limits::SERVER_BATCH_APPENDS_MAX)
        .map(|i| json!({ "streamId": format!("s-{i}"), "events": [one("A", json!(i))] }))
        .collect();
    let r = batch(app, json!(too_many)).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.json()["what"], "appends in a batch");
    let r = post(app, "/streams", "[]").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.json()["detail"].as_str().unwrap().contains("appends"),
        "{}",
        r.text
    );
    // None of the good appends before a bad one was written.
    assert_eq!(get(app, "/streams/a-1").await.status, 404);
    assert_eq!(get(app, "/all/head").await.json()["position"], Value::Null);
}

#[tokio::test]
async fn bad_input_is_a_4xx_problem_and_writes_nothing() {
    let t = setup(ServerConfig {
        request_body_max_bytes: 4096,
        ..ServerConfig::default()
    });
    let app = &t.app;
    let good = json!({"events": [one("A", json!({}))]}).to_string();
    let cases: Vec<(&str, Body, u16, &str)> = vec![
        ("/streams/a-1", Body::from("{"), 400, "body"),
        ("/streams/a-1", Body::from("[]"), 400, "body"),
        ("/streams/a-1", Body::from(""), 400, "body"),
        (
            "/streams/a-1",
            Body::from(r#"{"events": [{"eventType": 5, "data": 1}]}"#),
            400,
            "events[0].eventType",
        ),
        (
            "/streams/a-1",
            Body::from(r#"{"events": [{"eventType": "A", "data": 1, "x": 2}]}"#),
            400,
            "events[0].x",
        ),
        (
            "/streams/a-1",
            Body::from(r#"{"expectedVersion": "maybe", "events": []}"#),
            400,
            "expectedVersion",
        ),
        (
            "/streams/a-1",
            Body::from(r#"{"expectedVersion": -3, "events": []}"#),
            400,
            "expectedVersion",
        ),
        (
            "/streams/a-1",
            Body::from(r#"{"expectedVersion": 1e400, "events": []}"#),
            400,
            "expectedVersion",
        ),
        (
            "/streams/a-1",
            Body::from(r#"{"events": []}"#),
            400,
            "events",
        ),
        (
            "/streams/a-1",
            Body::from(r#"{"events": [{"eventType": ""  , "data": 1}]}"#),
            400,
            "events[0].event_type",
        ),
        (
            "/streams/a-1",
            Body::from(r#"{"events": [{"eventType": "A", "data": 1, "dataBase64": "AA=="}]}"#),
            400,
            "events[0]",
        ),
        (
            "/streams/a-1",
            Body::from(r#"{"events": [{"eventType": "A", "dataBase64": "AA=="}]}"#),
            400,
            "events[0].dataBase64",
        ),
        (
            "/streams/a-1",
            Body::from(
                r#"{"events": [{"eventType": "A", "contentType": "x/y", "dataBase64": "***"}]}"#,
            ),
            400,
            "events[0].dataBase64",
        ),
        (
            "/streams/a-1",
            Body::from(r#"{"events": [{"eventType": "A", "data": 1, "eventId": "nope"}]}"#),
            400,
            "events[0].eventId",
        ),
        (
            "/streams/a-1",
            Body::from(b"{\"events\": [{\"eventType\": \"\xff\xfe\", \"data\": 1}]}".to_vec()),
            400,
            "events[0].eventType",
        ),
        ("/streams/a-1", Body::from("x".repeat(5000)), 413, ""),
        ("/streams/%20a", Body::from(good.clone()), 400, "stream"),
        ("/streams/%24all", Body::from(good.clone()), 400, "stream"),
        ("/streams/%ff%fe", Body::from(good.clone()), 400, "stream"),
        ("/streams/a-1?x=1", Body::from(good.clone()), 400, "x"),
    ];
    for (i, (uri, body, status, field)) in cases.into_iter().enumerate() {
        let r = send(app, Request::post(uri).body(body).unwrap()).await;
        assert_eq!(r.status.as_u16(), status, "case {i} {uri}: {}", r.text);
        let code = r.code();
        if status == 400 {
            assert_eq!(code, "invalid_request");
            assert_eq!(r.json()["field"], field, "{uri}: {}", r.text);
        } else {
            assert_eq!(code, "payload_too_large");
        }
    }
    // A body without a content length (chunked) over the limit.
    let chunks = futures::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1000]))),
    );
    let r = send(
        app,
        Request::post("/streams/a-1")
            .body(Body::from_stream(chunks))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 413);
    // Too many events in one append.
    let t2 = setup(ServerConfig::default());
    let many: Vec<Value> = (0..10_001)
        .map(|_| json!({"eventType": "A", "data": 0}))
        .collect();
    let r = append(&t2.app, "a-1", json!("any"), many).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.code(), "payload_too_large");
    // An event over the store's data limit.
    let big = "x".repeat(strata_core::limits::EVENT_DATA_MAX_BYTES + 10);
    let r = append(&t2.app, "a-1", json!("any"), vec![one("A", json!(big))]).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.json()["what"], "events[0].data bytes");

    // Reads.
    let reads = [
        ("/streams/a-1?limit=0", "limit"),
        ("/streams/a-1?limit=1001", "limit"),
        ("/streams/a-1?limit=-1", "limit"),
        ("/streams/a-1?from=x", "from"),
        ("/streams/a-1?from=1&from=2", "from"),
        ("/streams/a-1?direction=up", "direction"),
        ("/streams/a-1?asOf=yesterday", "asOf"),
        ("/streams/a-1?zzz=1", "zzz"),
        ("/streams/a-1?%ff=1", "query parameter name"),
        ("/streams/a-1?from=%ff", "from"),
        ("/streams/a-1?from=%f", "from"),
        ("/all?eventType=", "eventType"),
        ("/all?prefix=", "prefix"),
        ("/all?unknown", "unknown"),
        ("/all/position-at", "time"),
        ("/streams?limit=5000", "limit"),
        ("/categories?after=%C3%28", "after"),
        ("/subscriptions/all?from=yesterday", "from"),
        ("/subscriptions/all?from=start&from=end", "from"),
        ("/subscriptions/categories/a-b", "category"),
        ("/health?x=1", "x"),
    ];
    for (uri, field) in reads {
        let r = get(app, uri).await;
        assert_eq!(r.status, 400, "{uri}: {}", r.text);
        assert_eq!(r.code(), "invalid_request", "{uri}");
        assert_eq!(r.json()["field"], field, "{uri}: {}", r.text);
    }
    let many_types: String = (0..65).map(|i| format!("eventType=t{i}&")).collect();
    let r = get(app, &format!("/all?{many_types}")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = send(
        app,
        Request::get("/subscriptions/all")
            .header("last-event-id", "abc")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["field"], "Last-Event-ID");

    // Not found and method not allowed.
    let r = get(app, "/streams/a-1").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (404, "stream_not_found")
    );
    let r = get(app, "/nothing/here").await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "not_found"));
    let r = send(
        app,
        Request::patch("/streams/a-1").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (405, "method_not_allowed")
    );
    let r = post(app, "/all", "{}").await;
    assert_eq!(r.status, 405);

    // Nothing was written by any of it.
    assert_eq!(t.store.head().await.unwrap(), None);
}

#[tokio::test]
async fn unavailable_and_internal_errors() {
    let t = setup(ServerConfig::default());
    let app = &t.app;
    append(app, "a-1", json!("any"), vec![one("A", json!(1))]).await;
    t.store.down.store(true, Ordering::SeqCst);
    let r = append(app, "a-1", json!("any"), vec![one("A", json!(1))]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.code(), "unavailable");
    assert!(r.json()["detail"].as_str().unwrap().contains("stopped"));
    assert!(!r.text.contains(SECRET_DIR), "{}", r.text);
    let r = get(app, "/ready").await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (503, "unavailable"));
    // A storage failure is a generic 500: the details stay in the log.
    let r = get(app, "/streams/a-1").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.code(), "internal");
    assert!(!r.text.contains("fire"), "{}", r.text);
    let r = get(app, "/metrics").await;
    assert!(r.text.contains("strata_append_errors_total 1"));
}

const ADMIN: &str = "admin-token";
const WRITER: &str = "writer-token";
const READER: &str = "reader-token";
const OTHER: &str = "other-token";
const NOSUB: &str = "nosub-token";

fn auth_config() -> ServerConfig {
    ServerConfig {
        tokens: vec![
            TokenConfig::new("admin", &hash_token(ADMIN), Role::Admin),
            TokenConfig::new("writer", &hash_token(WRITER), Role::Writer)
                .with_prefixes(["account-"]),
            TokenConfig::new("reader", &hash_token(READER), Role::Reader)
                .with_prefixes(["account-"]),
            TokenConfig::new("other", &hash_token(OTHER), Role::Writer).with_prefixes(["other-"]),
            TokenConfig::new("nosub", &hash_token(NOSUB), Role::Reader)
                .with_prefixes(Vec::<String>::new())
                .with_grant("", &[Action::Read]),
        ],
        ..ServerConfig::default()
    }
}

async fn call(app: &Router, method: &str, uri: &str, token: Option<&str>) -> Resp {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    // Appends take events; the projection operations take no body.
    let body = if method == "PUT" && uri.starts_with("/encryption/schemas/") {
        Body::from(json!({"subject": {"pointer": "/id"}, "fields": ["/name"]}).to_string())
    } else if method == "PUT" {
        Body::from("{}")
    } else if method == "POST" && uri.starts_with("/streams/") {
        Body::from(json!({"events": [one("A", json!(1))]}).to_string())
    } else if method == "POST" && uri == "/streams" {
        let append = json!({"streamId": "account-1", "events": [one("A", json!(1))]});
        Body::from(json!({ "appends": [append] }).to_string())
    } else {
        Body::empty()
    };
    let res = app.clone().oneshot(b.body(body).unwrap()).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    // Subscriptions stream forever: read only a first chunk of those.
    let text = if headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"))
    {
        String::new()
    } else {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Resp {
        status,
        headers,
        text,
    }
}

#[tokio::test]
async fn permission_matrix() {
    let t = setup_with_projections(auth_config()).await;
    let app = &t.app;
    // Some data, written with the admin token.
    for s in ["account-1", "other-1"] {
        let r = call(app, "POST", &format!("/streams/{s}"), Some(ADMIN)).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // (method, uri, tokens that may, tokens that may not)
    let matrix: Vec<(&str, &str, Vec<&str>, Vec<&str>)> = vec![
        (
            "POST",
            "/streams/account-1",
            vec![ADMIN, WRITER],
            vec![READER, OTHER, NOSUB],
        ),
        (
            "POST",
            "/streams",
            vec![ADMIN, WRITER],
            vec![READER, OTHER, NOSUB],
        ),
        (
            "GET",
            "/streams/account-1",
            vec![ADMIN, WRITER, READER, NOSUB],
            vec![OTHER],
        ),
        (
            "GET",
            "/streams/account-1/info",
            vec![ADMIN, WRITER, READER, NOSUB],
            vec![OTHER],
        ),
        (
            "GET",
            "/streams/account-1/metadata",
            vec![ADMIN, WRITER, READER, NOSUB],
            vec![OTHER],
        ),
        // Only writers change a stream's lifecycle. Metadata and a truncation to version 0
        // can be set again and again; the DELETE is preceded by an append (below), so each
        // token deletes a stream with events.
        (
            "PUT",
            "/streams/account-1/metadata",
            vec![ADMIN, WRITER],
            vec![READER, OTHER, NOSUB],
        ),
        (
            "POST",
            "/streams/account-1/truncate?before=0",
            vec![ADMIN, WRITER],
            vec![READER, OTHER, NOSUB],
        ),
        (
            "DELETE",
            "/streams/account-1",
            vec![ADMIN, WRITER],
            vec![READER, OTHER, NOSUB],
        ),
        (
            "GET",
            "/streams",
            vec![ADMIN, NOSUB],
            vec![WRITER, READER, OTHER],
        ),
        (
            "GET",
            "/streams?prefix=account-",
            vec![ADMIN, WRITER, READER, NOSUB],
            vec![OTHER],
        ),
        (
            "GET",
            "/categories",
            vec![ADMIN, NOSUB],
            vec![WRITER, READER, OTHER],
        ),
        (
            "GET",
            "/all",
            vec![ADMIN, NOSUB],
            vec![WRITER, READER, OTHER],
        ),
        (
            "GET",
            "/all?category=account",
            vec![ADMIN, NOSUB],
            vec![WRITER, READER, OTHER],
        ),
        (
            "GET",
            "/all?prefix=account-",
            vec![ADMIN, WRITER, READER, NOSUB],
            vec![OTHER],
        ),
        (
            "GET",
            "/all?prefix=acc",
            vec![ADMIN, NOSUB],
            vec![WRITER, READER, OTHER],
        ),
        (
            "GET",
            "/all/head",
            vec![ADMIN, WRITER, READER, OTHER, NOSUB],
            vec![],
        ),
        (
            "GET",
            "/all/position-at?time=2020-01-01T00:00:00Z",
            vec![ADMIN, WRITER, READER, OTHER, NOSUB],
            vec![],
        ),
        (
            "GET",
            "/subscriptions/all",
            vec![ADMIN],
            vec![WRITER, READER, OTHER, NOSUB],
        ),
        (
            "GET",
            "/subscriptions/all?prefix=account-",
            vec![ADMIN, WRITER, READER],
            vec![OTHER, NOSUB],
        ),
        (
            "GET",
            "/subscriptions/streams/account-1",
            vec![ADMIN, WRITER, READER],
            vec![OTHER, NOSUB],
        ),
        (
            "GET",
            "/subscriptions/categories/account",
            vec![ADMIN, WRITER, READER],
            vec![OTHER, NOSUB],
        ),
        (
            "GET",
            "/subscriptions/categories/other",
            vec![ADMIN, OTHER],
            vec![WRITER, READER, NOSUB],
        ),
        (
            "GET",
            "/metrics",
            vec![ADMIN],
            vec![WRITER, READER, OTHER, NOSUB],
        ),
        (
            "GET",
            "/projections",
            vec![ADMIN, WRITER, READER, OTHER, NOSUB],
            vec![],
        ),
        (
            "GET",
            "/projections/event-type-counts",
            vec![ADMIN, WRITER, READER, OTHER, NOSUB],
            vec![],
        ),
        (
            "POST",
            "/projections/event-type-counts/pause",
            vec![ADMIN],
            vec![WRITER, READER, OTHER, NOSUB],
        ),
        (
            "POST",
            "/projections/event-type-counts/resume",
            vec![ADMIN],
            vec![WRITER, READER, OTHER, NOSUB],
        ),
        (
            "POST",
            "/projections/event-type-counts/reset",
            vec![ADMIN],
            vec![WRITER, READER, OTHER, NOSUB],
        ),
        (
            "POST",
            "/projections/event-type-counts/rebuild",
            vec![ADMIN],
            vec![WRITER, READER, OTHER, NOSUB],
        ),
        (
            "POST",
            "/admin/scavenge",
            vec![ADMIN],
            vec![WRITER, READER, OTHER, NOSUB],
        ),
        (
            "GET",
            "/admin/scavenge",
            vec![ADMIN],
            vec![WRITER, READER, OTHER, NOSUB],
        ),
        (
            "POST",
            "/admin/archive",
            vec![ADMIN],
            vec![WRITER, READER, OTHER, NOSUB],
        ),
        (
            "GET",
            "/admin/archive",
            vec![ADMIN],
            vec![WRITER, READER, OTHER, NOSUB],
        ),
        (
            "GET",
            "/encryption/schemas",
            vec![ADMIN],
            vec![WRITER, READER, OTHER, NOSUB],
        ),
        (
            "PUT",
            "/encryption/schemas/Registered",
            vec![ADMIN],
            vec![WRITER, READER, OTHER, NOSUB],
        ),
        (
            "DELETE",
            "/subjects/customer-1",
            vec![ADMIN],
            vec![WRITER, READER, OTHER, NOSUB],
        ),
    ];
    let mut covered = std::collections::HashSet::new();
    for (method, uri, allowed, denied) in &matrix {
        covered.insert((*method, uri.split('?').next().unwrap()));
        for token in [None, Some("wrong-token")] {
            let r = call(app, method, uri, token).await;
            assert_eq!(r.status, 401, "{method} {uri} with {token:?}: {}", r.text);
            assert_eq!(r.code(), "unauthorized");
            assert!(r.headers.contains_key("www-authenticate"));
        }
        for token in allowed {
            if *method == "DELETE" && uri.starts_with("/streams/") {
                let r = call(app, "POST", uri, Some(ADMIN)).await;
                assert_eq!(r.status, 200, "an append before {method} {uri}: {}", r.text);
            }
            let r = call(app, method, uri, Some(token)).await;
            assert!(
                r.status.is_success(),
                "{method} {uri} with {token}: {} {}",
                r.status,
                r.text
            );
        }
        for token in denied {
            let r = call(app, method, uri, Some(token)).await;
            assert_eq!(r.status, 403, "{method} {uri} with {token}: {}", r.text);
            assert_eq!(r.code(), "forbidden");
        }
    }
    // Every route that needs a token is in the matrix; the open ones answer without one.
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{stream}", "account-1")
            .replace("{category}", "account")
            .replace("{name}", PROJECTION)
            .replace("{eventType}", "Registered")
            .replace("{subject}", "customer-1");
        if ["/health", "/ready", "/openapi.json"].contains(path) {
            let r = call(app, method, &concrete, None).await;
            assert_eq!(r.status, 200, "{path}");
        } else {
            assert!(
                covered.contains(&(*method, concrete.as_str())),
                "{method} {path} not in the matrix"
            );
        }
    }
    // A malformed Authorization header.
    let r = send(
        app,
        Request::get("/all")
            .header("authorization", "Basic abc")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401);
}

/// Reads SSE events from a body until `n` events (not keep-alives) have arrived.
async fn sse_events(
    body: &mut (impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin),
    buf: &mut String,
    n: usize,
) -> Vec<(String, Option<String>, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut ev, mut id, mut data) = ("message".to_owned(), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    ev = v.to_owned();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !data.is_empty() {
                out.push((ev, id, data));
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an SSE event in time")
            .expect("the stream still open")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    out
}

async fn open_sse(
    app: &Router,
    uri: &str,
    last_event_id: Option<&str>,
) -> axum::body::BodyDataStream {
    let mut b = Request::get(uri);
    if let Some(id) = last_event_id {
        b = b.header("last-event-id", id);
    }
    let res = app
        .clone()
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    res.into_body().into_data_stream()
}

#[tokio::test]
async fn subscriptions_catch_up_go_live_and_resume() {
    let t = setup(ServerConfig::default());
    let app = &t.app;
    for i in 0..3 {
        append(app, "account-1", json!("any"), vec![one("A", json!(i))]).await;
        append(app, "order-1", json!("any"), vec![one("B", json!(i))]).await;
    }
    // $all from the start: ids are positions.
    let mut body = open_sse(app, "/subscriptions/all?from=start", None).await;
    let mut buf = String::new();
    let evs = sse_events(&mut body, &mut buf, 6).await;
    let ids: Vec<_> = evs.iter().map(|e| e.1.clone().unwrap()).collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4", "5"]);
    assert_eq!(evs[0].0, "event");
    let e0: Value = serde_json::from_str(&evs[0].2).unwrap();
    assert_eq!(e0["streamId"], "account-1");
    // Live.
    append(
        app,
        "order-1",
        json!("any"),
        vec![one(
            "B",
            json!({"multi":
        "line"}),
        )],
    )
    .await;
    let live = sse_events(&mut body, &mut buf, 1).await;
    assert_eq!(live[0].1.as_deref(), Some("6"));
    drop(body);

    // Resume with Last-Event-ID: no gap, no duplicate (it wins over `from`).
    let mut body = open_sse(app, "/subscriptions/all?from=end", Some("3")).await;
    let mut buf = String::new();
    let evs = sse_events(&mut body, &mut buf, 3).await;
    let ids: Vec<_> = evs.iter().map(|e| e.1.clone().unwrap()).collect();
    assert_eq!(ids, ["4", "5", "6"]);
    drop(body);

    // A stream: ids are versions; `after`.
    let mut body = open_sse(app, "/subscriptions/streams/account-1?after=0", None).await;
    let mut buf = String::new();
    let evs = sse_events(&mut body, &mut buf, 2).await;
    let ids: Vec<_> = evs.iter().map(|e| e.1.clone().unwrap()).collect();
    assert_eq!(ids, ["1", "2"]);
    drop(body);

    // A category from now: only new events of that category.
    let mut body = open_sse(app, "/subscriptions/categories/order", None).await;
    let mut buf = String::new();
    append(app, "account-1", json!("any"), vec![one("A", json!(9))]).await;
    append(app, "order-2", json!("any"), vec![one("B", json!(9))]).await;
    let evs = sse_events(&mut body, &mut buf, 1).await;
    let e: Value = serde_json::from_str(&evs[0].2).unwrap();
    assert_eq!(e["streamId"], "order-2");
    assert_eq!(evs[0].1.as_deref(), Some("8"));
    drop(body);

    // $all filtered by event type.
    let mut body = open_sse(app, "/subscriptions/all?from=start&eventType=A", None).await;
    let mut buf = String::new();
    let evs = sse_events(&mut body, &mut buf, 4).await;
    assert!(evs.iter().all(|e| e.2.contains("\"eventType\":\"A\"")));
}

#[tokio::test]
async fn slow_subscriber_is_disconnected_with_its_resume_position() {
    let t = setup(ServerConfig {
        sse_buffer_events: 4,
        sse_slow_subscriber_timeout_ms: 200,
        ..ServerConfig::default()
    });
    let app = &t.app;
    let mut body = open_sse(app, "/subscriptions/all?from=start", None).await;
    for i in 0..20 {
        append(app, "a-1", json!("any"), vec![one("A", json!(i))]).await;
    }
    // Do not read: the buffer fills and stays full past the timeout.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut buf = String::new();
    let mut got = Vec::new();
    loop {
        let evs = sse_events(&mut body, &mut buf, 1).await;
        got.push(evs[0].clone());
        if evs[0].0 != "event" {
            break;
        }
    }
    let last = got.last().unwrap();
    assert_eq!(last.0, "lagged");
    let doc: Value = serde_json::from_str(&last.2).unwrap();
    let delivered = got.len() - 1;
    assert!(
        delivered <= 6,
        "at most the buffer (and one in flight) is held: {delivered}"
    );
    assert_eq!(doc["resumeAfter"], json!(delivered as u64 - 1));
    assert_eq!(
        last.1.as_deref(),
        Some((delivered - 1).to_string().as_str())
    );
    // The connection then ends.
    let end = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .unwrap();
    assert!(end.is_none());
    assert!(get(app, "/metrics")
        .await
        .text
        .contains("strata_subscribers_lagged_total 1"));
    // Resuming from there delivers the rest, once each.
    let mut body = open_sse(app, "/subscriptions/all", last.1.as_deref()).await;
    let mut buf = String::new();
    let rest = sse_events(&mut body, &mut buf, 20 - delivered).await;
    assert_eq!(rest[0].1, Some(delivered.to_string()));
    assert_eq!(rest.last().unwrap().1.as_deref(), Some("19"));
}

#[tokio::test]
async fn a_subscriber_left_behind_by_the_live_fan_out_goes_back_to_storage() {
    let t = setup(ServerConfig {
        sse_buffer_events: 2,
        ..ServerConfig::default()
    });
    let app = &t.app;
    let mut body = open_sse(app, "/subscriptions/all?from=start", None).await;
    let mut buf = String::new();
    append(app, "a-1", json!("any"), vec![one("A", json!(0))]).await;
    assert_eq!(
        sse_events(&mut body, &mut buf, 1).await[0].1.as_deref(),
        Some("0")
    );
    // Live now. 200 separate commits (more batches than the fan-out channel holds) while the
    // subscriber does not read.
    for i in 1..200 {
        append(app, "a-1", json!("any"), vec![one("A", json!(i))]).await;
    }
    let evs = sse_events(&mut body, &mut buf, 199).await;
    let ids: Vec<u64> = evs
        .iter()
        .map(|e| e.1.as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (1..200).collect::<Vec<u64>>());
}

#[tokio::test]
async fn idle_subscriptions_get_keep_alives() {
    let t = setup(ServerConfig {
        sse_keep_alive_interval_ms: 100,
        ..ServerConfig::default()
    });
    let res = t
        .app
        .clone()
        .oneshot(
            Request::get("/subscriptions/all")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "no-cache");
    let mut body = res.into_body().into_data_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&chunk[..], b": keep-alive\n\n");
}

#[tokio::test]
async fn subscriptions_per_token_are_bounded() {
    let t = setup(ServerConfig {
        subscriptions_per_token_max: 2,
        ..ServerConfig::default()
    });
    let a = open_sse(&t.app, "/subscriptions/all", None).await;
    let b = open_sse(&t.app, "/subscriptions/all", None).await;
    let r = get(&t.app, "/subscriptions/all").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "too_many_subscriptions");
    assert!(get(&t.app, "/metrics")
        .await
        .text
        .contains("strata_subscriptions_open 2"));
    drop(a);
    drop(b);
    // The slots come back once the connections are gone.
    let mut ok = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let res = t
            .app
            .clone()
            .oneshot(
                Request::get("/subscriptions/all")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        if res.status() == 200 {
            ok = true;
            break;
        }
    }
    assert!(ok);
}

#[tokio::test]
async fn openapi_document_matches_the_router() {
    let t = setup_with_projections(ServerConfig::default()).await;
    let doc = get(&t.app, "/openapi.json").await.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let mut documented = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routed: std::collections::BTreeSet<_> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, routed);
    // Each route is really routed: never the router's own not_found or method_not_allowed.
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{stream}", "account-1")
            .replace("{category}", "account")
            .replace("{name}", PROJECTION)
            .replace(
                "/all/position-at",
                "/all/position-at?time=2020-01-01T00:00:00Z",
            )
            .replace("/truncate", "/truncate?before=1")
            .replace("{eventType}", "Registered")
            .replace("{subject}", "customer-1");
        let r = call(&t.app, method, &concrete, None).await;
        assert!(
            r.status.is_success() || r.status == 404 && r.text.contains("stream_not_found"),
            "{method} {path}: {} {}",
            r.status,
            r.text
        );
    }
    // Every documented parameter of each operation is accepted (not an unknown parameter).
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] != "query" {
                    continue;
                }
                let name = p["name"].as_str().unwrap();
                let concrete = path
                    .replace("{stream}", "account-1")
                    .replace("{category}", "account")
                    .replace("{name}", PROJECTION);
                let method = method.to_uppercase();
                let r = call(&t.app, &method, &format!("{concrete}?{name}=@@"), None).await;
                assert!(
                    !r.text.contains("is not a parameter"),
                    "{path}?{name}: {}",
                    r.text
                );
            }
        }
    }
}

/// Polls `GET /projections/{PROJECTION}` until `done` holds for it (at most 10 s).
async fn projection_until(app: &Router, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(app, &format!("/projections/{PROJECTION}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let v = r.json();
        if done(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "gave up waiting: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn hosted_projections_are_listed_paused_resumed_and_rebuilt() {
    let t = setup_with_projections(ServerConfig::default()).await;
    let app = &t.app;
    for (stream, ty) in [
        ("account-1", "AccountOpened"),
        ("account-1", "MoneyDeposited"),
        ("account-2", "AccountOpened"),
        ("order-1", "OrderPlaced"),
    ] {
        let r = append(app, stream, json!("any"), vec![one(ty, json!({}))]).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let v = projection_until(app, |v| v["checkpoint"] == 3).await;
    assert_eq!(v["status"], "running");
    assert_eq!(v["mode"], "async");
    assert_eq!(v["lagEvents"], 0);
    assert_eq!(v["rebuild"], Value::Null);
    let list = get(app, "/projections").await.json();
    assert_eq!(list["projections"].as_array().unwrap().len(), 1);
    assert_eq!(list["projections"][0]["name"], PROJECTION);

    // Paused: new events wait, and the lag shows in the status and in /metrics.
    let r = post(app, &format!("/projections/{PROJECTION}/pause"), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "paused");
    append(
        app,
        "account-1",
        json!("any"),
        vec![one("MoneyDeposited", json!({}))],
    )
    .await;
    let v = get(app, &format!("/projections/{PROJECTION}")).await.json();
    assert_eq!(
        (v["checkpoint"].clone(), v["lagEvents"].clone()),
        (json!(3), json!(1))
    );
    let metrics = get(app, "/metrics").await.text;
    assert!(
        metrics.contains(&format!(
            "strata_projection_lag_events{{projection=\"{PROJECTION}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "strata_projection_status{{projection=\"{PROJECTION}\",status=\"paused\"}} 1"
    )));
    let r = post(app, &format!("/projections/{PROJECTION}/resume"), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    projection_until(app, |v| v["checkpoint"] == 4 && v["status"] == "running").await;

    // A rebuild runs in the background; its progress and outcome are in the status.
    let r = post(app, &format!("/projections/{PROJECTION}/rebuild"), "").await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(r.json()["rebuild"]["startedAt"].is_string());
    let v = projection_until(app, |v| v["rebuild"]["state"] != "running").await;
    assert_eq!(v["rebuild"]["state"], "done", "{v}");
    assert_eq!(v["rebuild"]["checkpoint"], 4);
    assert_eq!(v["rebuild"]["appliedEvents"], 5);
    assert_eq!(v["rebuild"]["remainingEvents"], 0);
    assert_eq!(v["checkpoint"], 4);
    // The swapped-in read model counts every event once.
    let (projections, _) = t.projections.as_ref().unwrap();
    let conn = projections.read_models().connect().unwrap();
    let deposits: i64 = conn
        .query_row(
            "SELECT events FROM event_type_counts WHERE category = 'account' AND event_type = 'MoneyDeposited'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(deposits, 2);
    let total: i64 = conn
        .query_row("SELECT SUM(events) FROM event_type_counts", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(total, 5);

    // Reset replays from 0 and ends at the same counts.
    let r = post(app, &format!("/projections/{PROJECTION}/reset"), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    projection_until(app, |v| v["checkpoint"] == 4).await;

    // Unknown and malformed names, and a server that hosts none.
    let r = get(app, "/projections/nope").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (404, "projection_not_found")
    );
    let r = post(app, "/projections/nope/rebuild", "").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (404, "projection_not_found")
    );
    let long = "p".repeat(strata_server::limits::PROJECTION_NAME_MAX_BYTES + 1);
    let r = get(app, &format!("/projections/{long}")).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_request")
    );
    let r = get(app, "/projections?x=1").await;
    assert_eq!(r.status, 400);
    let bare = setup(ServerConfig::default());
    let r = get(&bare.app, "/projections").await;
    assert_eq!(r.json(), json!({ "projections": [] }));
    let r = get(&bare.app, &format!("/projections/{PROJECTION}")).await;
    assert_eq!(r.code(), "projection_not_found");
    projections.shutdown().await;
}

#[tokio::test]
async fn subscriptions_take_the_token_as_access_token_for_event_source() {
    let t = setup(auth_config());
    let app = &t.app;
    let ok = call(
        app,
        "GET",
        &format!("/subscriptions/streams/account-1?from=start&access_token={READER}"),
        None,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.headers["content-type"], "text/event-stream");
    // The token's rights still apply.
    let r = call(
        app,
        "GET",
        &format!("/subscriptions/categories/other?access_token={READER}"),
        None,
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (403, "forbidden"));
    let r = call(app, "GET", "/subscriptions/all?access_token=nope", None).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (401, "unauthorized")
    );
    // Header and parameter together are refused, as is the parameter off subscriptions.
    let r = call(
        app,
        "GET",
        &format!("/subscriptions/streams/account-1?access_token={READER}"),
        Some(READER),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_request")
    );
    let r = call(
        app,
        "GET",
        &format!("/streams/account-1?access_token={READER}"),
        Some(READER),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("is not a parameter"), "{}", r.text);
}

#[tokio::test]
async fn json_that_readers_cannot_parse_is_refused_and_writes_nothing() {
    let t = setup(ServerConfig::default());
    let app = &t.app;
    let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let depth = strata_core::limits::JSON_NESTING_MAX_DEPTH;
    let body = |data: &str| format!(r#"{{"events":[{{"eventType":"T","data":{data}}}]}}"#);
    for (what, data) in [
        ("a lone surrogate", r#""\ud800""#.to_owned()),
        ("a number out of range", "1e400".to_owned()),
        ("100,000 levels of nesting", nested(100_000)),
        ("one level past the limit", nested(depth + 1)),
    ] {
        let r = post(app, "/streams/poison-1", body(&data)).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        assert_eq!(r.code(), "invalid_request", "{what}");
        assert_eq!(r.json()["field"], "events[0].data", "{what}: {}", r.text);
    }
    let deep_metadata = format!(
        r#"{{"events":[{{"eventType":"T","data":1,"metadata":{{"a":{}}}}}]}}"#,
        nested(depth)
    );
    let r = post(app, "/streams/poison-1", deep_metadata).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["field"], "events[0].metadata", "{}", r.text);
    assert_eq!(t.store.head().await.unwrap(), None, "nothing was written");

    // Data at the limit is taken, and every reader parses it back: a page, `$all`, and the
    // live subscription.
    let r = post(app, "/streams/poison-1", body(&nested(depth))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let page = get(app, "/streams/poison-1").await.json();
    assert_eq!(
        page["events"][0]["data"],
        serde_json::from_str::<Value>(&nested(depth)).unwrap()
    );
    get(app, "/all").await.json();
    let mut sse = open_sse(app, "/subscriptions/all?from=start", None).await;
    let evs = sse_events(&mut sse, &mut String::new(), 1).await;
    serde_json::from_str::<Value>(&evs[0].2).unwrap();
}

#[tokio::test]
async fn trailing_input_after_a_body_is_refused_and_writes_nothing() {
    let t = setup_with_projections(ServerConfig::default()).await;
    let app = &t.app;
    let a = json!({"events": [one("A", json!(1))]}).to_string();
    let bc = json!({"events": [one("B", json!(2)), one("C", json!(3))]}).to_string();
    for (what, body) in [
        ("two documents", format!("{a}{bc}")),
        ("two documents with a space", format!("{a} {bc}")),
        ("trailing text", format!("{a} xyz")),
        ("a trailing brace", format!("{a}}}")),
    ] {
        let r = post(app, "/streams/trail-1", body).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        assert_eq!(r.code(), "invalid_request", "{what}");
        assert_eq!(r.json()["field"], "body", "{what}");
    }
    assert_eq!(
        get(app, "/streams/trail-1").await.status,
        404,
        "nothing was written"
    );
    // Whitespace after the document is fine.
    let r = post(app, "/streams/trail-1", format!("{a} \n\t")).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // The projection operations take no parameters: no body, or `{}`, and nothing after it.
    let op = format!("/projections/{PROJECTION}/pause");
    for (body, status) in [
        ("", 200),
        ("{}", 200),
        (" {} ", 200),
        ("{}{}", 400),
        ("{} x", 400),
        (r#"{"x":1}"#, 400),
    ] {
        let r = post(app, &op, body).await;
        assert_eq!(r.status, status, "{body:?}: {}", r.text);
    }
}

#[tokio::test]
async fn small_rejections_are_problems_and_write_nothing() {
    let t = setup(ServerConfig::default());
    let app = &t.app;
    // A broken percent-encoding in the path is refused, not taken literally.
    for uri in [
        "/streams/a%zzb",
        "/streams/a%2",
        "/streams/a%",
        "/streams/a%zzb/info",
    ] {
        let r = post(
            app,
            uri,
            json!({"events": [one("A", json!(1))]}).to_string(),
        )
        .await;
        assert_eq!(r.status, 400, "{uri}: {}", r.text);
        assert_eq!(r.code(), "invalid_request");
        assert_eq!(r.json()["field"], "path", "{uri}");
    }
    let r = get(app, "/streams/a%zzb").await;
    assert_eq!(r.status, 400);
    // `null` is not `any`: a concurrency check is never switched off by accident.
    let r = post(
        app,
        "/streams/a-1",
        r#"{"expectedVersion":null,"events":[{"eventType":"A","data":1}]}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["field"], "expectedVersion");
    assert_eq!(t.store.head().await.unwrap(), None, "nothing was written");
    // A valid escape still works, and absent is `any`.
    let r = post(
        app,
        "/streams/a%2D1",
        r#"{"events":[{"eventType":"A","data":1}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["streamId"], "a-1");
}

#[tokio::test]
async fn any_token_string_works_as_access_token() {
    // Tokens are any string; one that cannot be a header value still works in the query.
    let odd = "tök\u{1}en with spaces";
    let t = setup(ServerConfig {
        tokens: vec![TokenConfig::new("odd", &hash_token(odd), Role::Reader)],
        ..ServerConfig::default()
    });
    let encoded: String = odd.bytes().map(|b| format!("%{b:02X}")).collect();
    let r = t
        .app
        .clone()
        .oneshot(
            Request::get(format!("/subscriptions/all?access_token={encoded}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // An unknown one, however odd, is 401 like any unknown token.
    let r = get(&t.app, "/subscriptions/all?access_token=%01%02").await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.code(), "unauthorized");
}

#[tokio::test]
async fn ready_reports_whether_the_store_takes_writes() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = strata_log::io::FaultyVfs::new();
    let store = strata_log::LogStore::open_with(
        dir.path(),
        strata_log::LogConfig {
            vfs: Arc::new(vfs.clone()),
            ..strata_log::LogConfig::default()
        },
    )
    .unwrap();
    let app = app(AppState::new(Arc::new(store), ServerConfig::default()).unwrap());
    let r = append(&app, "a-1", json!("any"), vec![one("A", json!(1))]).await;
    assert_eq!(r.status, 200);
    let r = get(&app, "/ready?write=true").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["writable"], true);
    // An fdatasync fails: the store stops taking appends, and keeps serving reads.
    vfs.fail_after(0, 0);
    let r = append(&app, "a-1", json!("any"), vec![one("A", json!(2))]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (503, "unavailable"));
    let r = get(&app, "/ready").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["writable"], false);
    assert_eq!(r.json()["head"], 0);
    let r = get(&app, "/ready?write=true").await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (503, "unavailable"));
    assert_eq!(r.json()["writable"], false);
    let r = get(&app, "/ready?write=maybe").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["field"], "write");
}

#[tokio::test]
async fn a_corrupt_record_is_a_corruption_problem_naming_its_position() {
    let t = setup(ServerConfig::default());
    let app = &t.app;
    for i in 0..3 {
        append(app, "a-1", json!("any"), vec![one("A", json!(i))]).await;
    }
    t.store.corrupt.store(true, Ordering::SeqCst);
    for uri in ["/streams/a-1", "/all"] {
        let r = get(app, uri).await;
        assert_eq!(r.status, 500, "{uri}: {}", r.text);
        assert_eq!(r.code(), "corruption", "{uri}");
        assert_eq!(r.json()["position"], 1, "{uri}");
        let request_id = r.headers["x-request-id"].to_str().unwrap();
        assert_eq!(r.json()["requestId"], request_id);
        // The operator's details stay in the log. The request id is random
        // hex and may hold any of these by chance ("5a640967"), so it is
        // taken out before looking.
        let shown = r.text.replace(request_id, "");
        for secret in ["secret-dir", ".seg", "4096", "CRC"] {
            assert!(!shown.contains(secret), "{uri} shows {secret}: {}", r.text);
        }
    }
    // Reads that do not reach the bad record still work.
    let r = get(app, "/streams/a-1?limit=1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A subscription that meets it ends with the same problem, and a resume point.
    // Its request id (here the caller's) is in that last word too.
    let res = app
        .clone()
        .oneshot(
            Request::get("/subscriptions/all?from=start")
                .header("x-request-id", "sub-7")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "sub-7");
    let mut sse = res.into_body().into_data_stream();
    let evs = sse_events(&mut sse, &mut String::new(), 1).await;
    assert_eq!(evs[0].0, "error");
    let doc: Value = serde_json::from_str(&evs[0].2).unwrap();
    assert_eq!(doc["code"], "corruption");
    assert_eq!(doc["position"], 1);
    assert_eq!(doc["requestId"], "sub-7");
    assert!(!evs[0].2.contains("secret-dir"));
    let metrics = get(app, "/metrics").await.text;
    assert!(
        metrics.contains("strata_corruption_errors_total 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_fan_out_that_starts_after_a_subscriber_caught_up_loses_nothing() {
    let t = setup(ServerConfig::default());
    let app = &t.app;
    // The live fan-out will take its starting head only when let go.
    t.store.hub_gate.send_replace(true);
    let mut sse = open_sse(app, "/subscriptions/all?from=start", None).await;
    // The subscriber has read storage (empty) and turns to the fan-out, which has not started.
    t.store.all_read.notified().await;
    // An event lands in between: after the subscriber's read, before the fan-out's start.
    append(app, "a-1", json!("any"), vec![one("A", json!(0))]).await;
    t.store.hub_gate.send_replace(false);
    t.store.hub_started.notified().await;
    append(app, "a-1", json!("any"), vec![one("A", json!(1))]).await;
    let evs = sse_events(&mut sse, &mut String::new(), 2).await;
    let ids: Vec<_> = evs.iter().map(|e| e.1.clone().unwrap()).collect();
    assert_eq!(
        ids,
        ["0", "1"],
        "no event lost at the hand-over, none twice"
    );
    // A stream subscriber opened the same way loses nothing either.
    drop(sse);
}

/// A server over a memory store, with the state for its gauges.
fn served(config: ServerConfig) -> (Router, AppState) {
    let state = AppState::new(Arc::new(MemoryStore::new()), config).unwrap();
    (app(state.clone()), state)
}

/// Lets every task run until all wait (in paused time, the clock moves only then).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn subscriber_buffers_are_bounded_in_bytes() {
    const OWN: u64 = 256 * 1024;
    let big = json!("x".repeat(100_000));
    // Two subscribers that never read, 4 MB of events: each holds at most its own bound.
    let (app, state) = served(ServerConfig {
        sse_buffer_max_bytes: OWN,
        sse_buffers_total_max_bytes: 16 * OWN,
        sse_fan_out_max_bytes: 2 * OWN,
        ..ServerConfig::default()
    });
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(open_sse(&app, "/subscriptions/all?from=start", None).await);
    }
    settle().await;
    for _ in 0..40 {
        append(&app, "big-1", json!("any"), vec![one("Big", big.clone())]).await;
        settle().await;
        assert!(
            state.sse_buffered_bytes() <= 2 * OWN,
            "{}",
            state.sse_buffered_bytes()
        );
        // The fan-out keeps its bound too (it always keeps its newest batch, one event here).
        assert!(
            state.sse_fan_out_bytes() <= 2 * OWN + 110_000,
            "{}",
            state.sse_fan_out_bytes()
        );
    }
    assert!(
        state.sse_buffered_bytes() > OWN,
        "both subscribers hold events: {}",
        state.sse_buffered_bytes()
    );
    // Past the slow-subscriber timeout they are told where to resume, and let go.
    tokio::time::sleep(Duration::from_millis(
        strata_server::limits::SERVER_SSE_SLOW_SUBSCRIBER_TIMEOUT_MS + 1,
    ))
    .await;
    for mut body in stalled {
        let mut buf = String::new();
        loop {
            let ev = sse_events(&mut body, &mut buf, 1).await.remove(0);
            if ev.0 == "lagged" {
                break;
            }
            assert_eq!(ev.0, "event");
        }
    }
    settle().await;
    assert_eq!(state.sse_buffered_bytes(), 0);
    let metrics = get(&app, "/metrics").await.text;
    assert!(
        metrics.contains("strata_subscribers_lagged_total 2"),
        "{metrics}"
    );

    // Three such subscribers under a server-wide bound below three times their own: the
    // server holds at most its bound.
    let (app, state) = served(ServerConfig {
        sse_buffer_max_bytes: OWN,
        sse_buffers_total_max_bytes: OWN + OWN / 2,
        ..ServerConfig::default()
    });
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(open_sse(&app, "/subscriptions/all?from=start", None).await);
    }
    for _ in 0..40 {
        append(&app, "big-1", json!("any"), vec![one("Big", big.clone())]).await;
        settle().await;
        assert!(state.sse_buffered_bytes() <= OWN + OWN / 2);
    }
    assert!(state.sse_buffered_bytes() > OWN);
    drop(stalled);
    settle().await;
    assert_eq!(
        state.sse_buffered_bytes(),
        0,
        "dropped connections give their bytes back"
    );
}

#[test]
fn a_bad_configuration_is_refused_with_every_problem_typed() {
    let bad = ServerConfig {
        page_max_events: 0,
        tokens: vec![
            TokenConfig::new("", &hash_token(ADMIN), Role::Admin),
            TokenConfig::new("twice", &hash_token(ADMIN), Role::Reader).with_grant("account-", &[]),
            TokenConfig::new("short", "abc", Role::Reader),
        ],
        ..ServerConfig::default()
    };
    let Err(error) = AppState::new(Arc::new(MemoryStore::new()), bad) else {
        panic!("a bad configuration was accepted");
    };
    let twice = TokenRef {
        index: 1,
        name: "twice".to_owned(),
    };
    assert_eq!(
        error.problems(),
        [
            ConfigProblem::OutOfRange {
                name: "page_max_events",
                value: 0,
                min: 1,
                max: strata_core::limits::SERVER_PAGE_MAX_EVENTS as u64,
            },
            ConfigProblem::EmptyTokenName { index: 0 },
            ConfigProblem::DuplicateTokenHash {
                token: twice.clone()
            },
            ConfigProblem::EmptyGrantActions {
                token: twice,
                grant: 0
            },
            ConfigProblem::MalformedTokenHash {
                token: TokenRef {
                    index: 2,
                    name: "short".to_owned()
                }
            },
        ]
    );
    // The operator reads one sentence per problem, naming the value.
    let text = error.to_string();
    assert!(
        text.starts_with("page_max_events is 0; it must be between 1 and "),
        "{text}"
    );
    assert!(
        text.contains("; tokens[1] (\"twice\").sha256 is the same as another token's; "),
        "{text}"
    );
    let sentences: Vec<String> = error.problems().iter().map(ToString::to_string).collect();
    assert_eq!(text, sentences.join("; "));
}

/// Log lines written while it is the thread's default subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test]
async fn store_failures_are_generic_problems_with_the_request_id_and_logged_once() {
    let log = Captured::default();
    let writer = log.clone();
    let _default = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish(),
    );
    let t = setup(ServerConfig::default());
    let app = &t.app;
    append(app, "a-1", json!("any"), vec![one("A", json!(1))]).await;
    t.store.down.store(true, Ordering::SeqCst);
    let stopped = append(app, "a-1", json!("any"), vec![one("A", json!(2))]).await;
    let unreachable = get(app, "/all/head").await;
    let not_ready = get(app, "/ready").await;
    let storage = get(app, "/streams/a-1").await;
    let answers = [
        (&stopped, 503, "WARN", "fdatasync of"),
        (&unreachable, 503, "WARN", ".s.PGSQL.5432"),
        (&not_ready, 503, "WARN", ".s.PGSQL.5432"),
        (&storage, 500, "ERROR", "disk on fire"),
    ];
    let lines = log.lines();
    for (r, status, level, what) in answers {
        assert_eq!(r.status, status, "{}", r.text);
        // Nothing of the store's own error reaches the client.
        for secret in [SECRET_DIR, "/run/postgresql", "os error", "fire", what] {
            assert!(!r.text.contains(secret), "shows {secret:?}: {}", r.text);
        }
        // The request id is in the body and in the header, the same.
        let id = r.headers["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 36, "a UUID: {id}");
        assert_eq!(r.json()["requestId"], id, "{}", r.text);
        // The log has the whole error once, with that id.
        let logged: Vec<_> = lines.iter().filter(|l| l.contains(id)).collect();
        assert_eq!(logged.len(), 1, "{id}: {lines:#?}");
        assert!(logged[0].contains(level), "{}", logged[0]);
        assert!(logged[0].contains(what), "{}", logged[0]);
    }
    assert_eq!(unreachable.headers["retry-after"], "1");
    let detail = unreachable.json()["detail"].as_str().unwrap().to_owned();
    assert_eq!(detail, "the store is unavailable: retry after 1 s");
    assert!(stopped.headers.get("retry-after").is_none());
    // A caller's own request id is kept, in the header and in the document.
    let mine = Request::get("/streams/a-1")
        .header("x-request-id", "trace-42")
        .body(Body::empty())
        .unwrap();
    let r = send(app, mine).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.headers["x-request-id"], "trace-42");
    assert_eq!(r.json()["requestId"], "trace-42");
}

#[tokio::test]
async fn a_newcomers_mistakes_are_answered_with_what_to_do() {
    let t = setup(ServerConfig::default());
    // An array is not the body: the answer says what the body is.
    let r = post(&t.app, "/streams/account-1", "[]").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "invalid_request");
    assert_eq!(r.json()["field"], "body");
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("must be a JSON object with expectedVersion and events"),
        "{detail}"
    );
    assert!(!detail.contains("AppendBody"), "{detail}");
    // $all is not under /streams: the answer points to /all.
    let r = get(&t.app, "/streams/%24all").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("GET /all"), "{detail}");
    // The CLI's spelling of the expected version is accepted too.
    let r = append(
        &t.app,
        "account-1",
        json!("no-stream"),
        vec![one("Opened", json!({}))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = append(
        &t.app,
        "account-1",
        json!("exists"),
        vec![one("Deposited", json!({}))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = append(
        &t.app,
        "account-1",
        json!("no_stream"),
        vec![one("Opened", json!({}))],
    )
    .await;
    assert_eq!(r.code(), "wrong_expected_version");
}

#[tokio::test]
async fn an_idempotent_retry_says_so_and_is_not_counted_as_written() {
    let t = setup(ServerConfig::default());
    let body = json!({
        "expectedVersion": "no_stream",
        "events": [{ "eventId": "0192f3a4-5b6c-7d8e-9f00-112233445566", "eventType": "Opened", "data": {} }]
    })
    .to_string();
    let first = post(&t.app, "/streams/account-9", body.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json()["replayed"], false);
    let retry = post(&t.app, "/streams/account-9", body).await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.json()["replayed"], true);
    assert_eq!(retry.json()["positions"], first.json()["positions"]);
    let metrics = get(&t.app, "/metrics").await.text;
    assert!(metrics.contains("\nstrata_appends_total 2\n"), "{metrics}");
    assert!(
        metrics.contains("\nstrata_events_appended_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nstrata_append_replays_total 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_projection_read_waits_for_a_position_within_a_bound() {
    let t = setup_with_projections(ServerConfig::default()).await;
    let app = &t.app;
    let mut last = 0;
    for n in 0..3 {
        let r = append(
            app,
            "account-1",
            json!("any"),
            vec![one("Deposited", json!(n))],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        last = r.json()["positions"][0].as_u64().unwrap();
    }
    // Read-your-writes: the answer comes once the projection has passed the append.
    let r = get(
        app,
        &format!("/projections/{PROJECTION}?atLeast={last}&wait=5s"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json()["checkpoint"].as_u64().unwrap() >= last,
        "{}",
        r.text
    );
    // A position no event has: the typed answer once the wait is over.
    let r = get(
        app,
        &format!("/projections/{PROJECTION}?atLeast=1000&wait=30ms"),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.code(), "not_yet_consistent");
    let doc = r.json();
    assert_eq!(doc["position"], 1000);
    assert_eq!(doc["reached"], last);
    assert!(doc["waitedMs"].as_u64().unwrap() >= 30, "{doc}");
    // Paused: it will not move, so the answer comes at once.
    let r = post(app, &format!("/projections/{PROJECTION}/pause"), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = get(
        app,
        &format!("/projections/{PROJECTION}?atLeast=1000&wait=10s"),
    )
    .await;
    assert_eq!(r.code(), "not_yet_consistent");
    assert_eq!(r.json()["status"], 409);
    assert_eq!(r.json()["projectionStatus"], "paused");
    assert!(r.json()["waitedMs"].as_u64().unwrap() < 10_000);
    // The wait is bounded, and needs a position.
    let r = get(
        app,
        &format!("/projections/{PROJECTION}?atLeast=1&wait=11s"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["field"], "wait");
    assert_eq!(r.json()["limit"], 10_000);
    let r = get(app, &format!("/projections/{PROJECTION}?wait=1s")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["field"], "wait");
}

/// A stream's lifecycle over HTTP: metadata, truncation, soft delete and tombstone, each bad
/// request a typed problem that writes nothing.
#[tokio::test]
async fn lifecycle_endpoints_delete_truncate_and_describe_streams() {
    let t = setup(ServerConfig::default());
    let app = &t.app;
    let events: Vec<Value> = (0..3).map(|n| one("E", json!(n))).collect();
    assert_eq!(
        append(app, "account-1", json!("no_stream"), events)
            .await
            .status,
        200
    );
    let delete = |uri: &'static str| send(app, Request::delete(uri).body(Body::empty()).unwrap());
    let put = |uri: &'static str, body: &'static str| {
        send(
            app,
            Request::put(uri)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
    };

    // Metadata: none yet, then set with optimistic concurrency.
    let r = get(app, "/streams/account-1/metadata").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({"streamId": "account-1", "version": null, "metadata": {}})
    );
    let r = put(
        "/streams/account-1/metadata?expectedVersion=no_stream",
        r#"{"maxCount": 10, "custom": {"owner": "billing"}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["version"], 0);
    assert!(r.json()["position"].is_u64());
    let r = put(
        "/streams/account-1/metadata?expectedVersion=no_stream",
        "{}",
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "wrong_expected_version")
    );
    for (body, field) in [
        ("[]", "body"),
        (r#"{"maxCount": "ten"}"#, "body"),
        (r#"{"tombstoned": true}"#, "metadata.tombstoned"),
        (r#"{"truncateBefore": 9}"#, "truncate_before"),
    ] {
        let r = put("/streams/account-1/metadata", body).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (400, "invalid_request"),
            "{body}"
        );
        assert_eq!(r.json()["field"], field, "{body}");
    }
    let r = get(app, "/streams/account-1/metadata").await;
    assert_eq!(r.json()["version"], 0, "refused metadata wrote nothing");

    // Truncation: past the head is refused; then the stream reads from version 1.
    let r = post(app, "/streams/account-1/truncate?before=4", "").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_request")
    );
    let r = post(app, "/streams/account-1/truncate", "").await;
    assert_eq!(r.json()["field"], "before");
    let r = post(app, "/streams/account-1/truncate?before=1", "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["streamId"], "$$account-1");
    let r = get(app, "/streams/account-1").await;
    let versions: Vec<u64> = r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);

    // Soft delete: checked against expectedVersion, then the stream is not found.
    let r = delete("/streams/account-1?expectedVersion=0").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "wrong_expected_version")
    );
    let r = delete("/streams/account-1?expectedVersion=2").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["streamId"], "$$account-1");
    let r = get(app, "/streams/account-1").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (404, "stream_not_found")
    );
    let r = delete("/streams/account-1").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (404, "stream_not_found")
    );
    let r = get(app, "/streams/account-1/info").await;
    assert_eq!(r.json()["exists"], false);
    assert_eq!(r.json()["currentVersion"], 2);

    // Re-created, then tombstoned: gone for good.
    let r = append(
        app,
        "account-1",
        json!("no_stream"),
        vec![one("E", json!(3))],
    )
    .await;
    assert_eq!(r.json()["version"], 3, "{}", r.text);
    let r = delete("/streams/account-1?tombstone=true&expectedVersion=3").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["streamId"], "account-1");
    assert_eq!(r.json()["version"], 4);
    for r in [
        get(app, "/streams/account-1").await,
        append(app, "account-1", json!("any"), vec![one("E", json!(5))]).await,
        delete("/streams/account-1?tombstone=true").await,
        post(app, "/streams/account-1/truncate?before=4", "").await,
    ] {
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (410, "stream_tombstoned"),
            "{}",
            r.text
        );
        assert_eq!(r.json()["streamId"], "account-1");
    }
    let r = get(app, "/streams/account-1/info").await;
    assert_eq!(r.json()["tombstoned"], true);

    // Bad names and flags.
    let r = delete("/streams/$all").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_request")
    );
    let r = delete("/streams/account-2?tombstone=yes").await;
    assert_eq!(r.json()["field"], "tombstone");
    let r = delete("/streams/$$account-2").await;
    assert_eq!(r.json()["field"], "stream_id");
    // A metastream is written only through these endpoints.
    let r = append(
        app,
        "$$account-2",
        json!("any"),
        vec![one("$metadata", json!({}))],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["field"].as_str()),
        (400, Some("stream"))
    );
    let batch =
        json!({"appends": [{"streamId": "$$account-2", "events": [one("$metadata", json!({}))]}]});
    let r = post(app, "/streams", batch.to_string()).await;
    assert_eq!(r.json()["field"], "appends[0].streamId");
    // `$all` tells of each change, in the metastream's category.
    let r = get(app, "/all?category=account").await;
    let kinds: Vec<String> = r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "$metadata",
            "$streamTruncated",
            "$streamDeleted",
            "$streamTombstoned"
        ]
    );
}

/// `POST /admin/scavenge` starts a scavenge and `GET /admin/scavenge` follows it to its end;
/// the metrics count it; a store that cannot scavenge answers `501 scavenge_unsupported`.
/// (The embedded store's scavenge over HTTP: `the_embedded_store_scavenges_over_http`.)
/// The embedded store scavenges behind the server: a deleted stream's hidden events go.
#[tokio::test]
async fn the_embedded_store_scavenges_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let log = strata_log::LogStore::open(dir.path()).unwrap();
    let embedded =
        strata_server::app(AppState::new(Arc::new(log), ServerConfig::default()).unwrap());
    let events: Vec<Value> = (0..4).map(|n| one("E", json!(n))).collect();
    let r = append(&embedded, "account-1", json!("no_stream"), events).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(
        &embedded,
        Request::delete("/streams/account-1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = post(&embedded, "/admin/scavenge", "").await;
    assert_eq!(r.status, 202, "{}", r.text);
    let done = loop {
        let r = get(&embedded, "/admin/scavenge").await;
        if r.json()["state"] != "running" {
            break r.json();
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["eventsRemoved"], 2, "{done}");
}

#[tokio::test]
async fn scavenge_endpoints_start_report_and_count() {
    let t = setup(ServerConfig::default());
    let app = &t.app;
    let r = get(app, "/admin/scavenge").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["state"], "idle");
    let events: Vec<Value> = (0..4).map(|n| one("E", json!(n))).collect();
    assert_eq!(
        append(app, "account-1", json!("no_stream"), events)
            .await
            .status,
        200
    );
    let r = send(
        app,
        Request::delete("/streams/account-1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let r = post(app, "/admin/scavenge", "").await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(
        ["running", "done"].contains(&r.json()["state"].as_str().unwrap()),
        "{}",
        r.text
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let done = loop {
        let r = get(app, "/admin/scavenge").await;
        if r.json()["state"] != "running" {
            break r.json();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scavenge never ended"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(done["state"], "done", "{done}");
    // The deleted stream's versions 1 and 2 go, its first and last events stay.
    assert_eq!(done["eventsRemoved"], 2, "{done}");
    assert_eq!(done["streamsExamined"], 1, "{done}");
    assert!(done["finishedAt"].is_string(), "{done}");
    let metrics = get(app, "/metrics").await.text;
    for line in [
        "strata_scavenges_total 1",
        "strata_scavenges_failed_total 0",
        "strata_scavenge_events_removed_total 2",
        "strata_scavenge_running 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    let r = post(app, "/admin/scavenge?now=1", "").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_request")
    );

    // A store that cannot scavenge: a typed problem.
    let unable = setup(ServerConfig::default());
    unable.store.no_scavenge.store(true, Ordering::SeqCst);
    let r = post(&unable.app, "/admin/scavenge", "").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (501, "scavenge_unsupported"),
        "{}",
        r.text
    );
    // Nothing ran: the status is still the one before, and nothing is counted.
    let r = get(&unable.app, "/admin/scavenge").await;
    assert_eq!(r.json()["state"], "idle", "{}", r.text);
    let metrics = get(&unable.app, "/metrics").await.text;
    for line in [
        "strata_scavenges_total 0",
        "strata_scavenges_failed_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

/// An archiver that fails its first `fail` passes, then copies 3 segments each pass; every
/// call is counted and told.
struct ScriptedArchiver {
    fail: u64,
    calls: std::sync::atomic::AtomicU64,
    called: tokio::sync::mpsc::UnboundedSender<u64>,
}

impl strata_server::Archiver for ScriptedArchiver {
    fn target(&self) -> String {
        "s3://backups/bank".to_owned()
    }

    fn archive_sealed(
        &self,
    ) -> futures::future::BoxFuture<
        '_,
        Result<strata_server::ArchivePass, strata_server::ArchivePassError>,
    > {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = self.called.send(n);
            if n <= self.fail {
                return Err(strata_server::ArchivePassError::Failed {
                    message: "the archive at s3://backups/bank did not answer".to_owned(),
                    detail: "connection refused (/var/secret/path)".to_owned(),
                });
            }
            Ok(strata_server::ArchivePass {
                segments: 3,
                bytes: 100,
                archived_below: 42 * n,
            })
        })
    }
}

/// Polls `GET /admin/archive` until `done` holds.
async fn archive_status_until(app: &Router, done: impl Fn(&Value) -> bool) -> Value {
    loop {
        let r = get(app, "/admin/archive").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let status = r.json();
        if done(&status) {
            return status;
        }
        tokio::task::yield_now().await;
    }
}

/// A server archiving to an archive that fails twice: each failure shows in the status,
/// `/health` and the metrics, appends go on, the pass is tried again after 1 s then 2 s (the
/// backoff, in paused time), and succeeds; `POST /admin/archive` runs a pass at once rather
/// than after the interval.
#[tokio::test(start_paused = true)]
async fn a_failing_archive_is_retried_with_backoff_and_shown_while_appends_go_on() {
    let store = MemoryStore::new();
    let (tx, mut called) = tokio::sync::mpsc::unbounded_channel();
    let archiver = Arc::new(ScriptedArchiver {
        fail: 2,
        calls: std::sync::atomic::AtomicU64::new(0),
        called: tx,
    });
    let every = std::time::Duration::from_secs(600);
    let state = AppState::new(Arc::new(store), ServerConfig::default())
        .unwrap()
        .with_archiver(archiver.clone(), every);
    let app = app(state);
    let start = tokio::time::Instant::now();

    assert_eq!(called.recv().await, Some(1));
    let s = archive_status_until(&app, |s| s["consecutiveFailures"] == 1).await;
    assert_eq!(s["state"], "failing", "{s}");
    assert_eq!(s["target"], "s3://backups/bank");
    assert_eq!(
        s["lastError"],
        "the archive at s3://backups/bank did not answer"
    );
    assert!(!s.to_string().contains("/var/secret"), "{s}");
    let health = get(&app, "/health").await.json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["archive"]["state"], "failing", "{health}");
    let metrics = get(&app, "/metrics").await.text;
    assert!(metrics.contains("strata_archive_failing 1"), "{metrics}");
    assert!(
        metrics.contains("strata_archive_passes_failed_total 1"),
        "{metrics}"
    );
    let r = append(
        &app,
        "account-1",
        json!("no_stream"),
        vec![one("E", json!(1))],
    )
    .await;
    assert_eq!(
        r.status, 200,
        "appends go on while the archive fails: {}",
        r.text
    );

    assert_eq!(called.recv().await, Some(2));
    let after_first = start.elapsed();
    assert_eq!(called.recv().await, Some(3));
    let after_second = start.elapsed();
    assert_eq!(after_first.as_secs(), 1, "the first retry after 1 s");
    assert_eq!(
        (after_second - after_first).as_secs(),
        2,
        "the second after 2 s more"
    );
    let s = archive_status_until(&app, |s| s["state"] == "ok").await;
    assert_eq!(s["consecutiveFailures"], 0);
    assert_eq!(s["lastError"], Value::Null);
    assert_eq!(s["segmentsArchived"], 3);
    assert_eq!(s["archivedBelowPosition"], 126);
    let metrics = get(&app, "/metrics").await.text;
    assert!(metrics.contains("strata_archive_failing 0"), "{metrics}");
    assert!(
        metrics.contains("strata_archive_passes_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_archive_segments_total 3"),
        "{metrics}"
    );

    // Asked for, a pass runs now, not after the interval.
    let asked = tokio::time::Instant::now();
    let r = post(&app, "/admin/archive", "").await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(called.recv().await, Some(4));
    assert!(asked.elapsed() < every, "{:?}", asked.elapsed());
    let s = archive_status_until(&app, |s| s["segmentsArchived"] == 6).await;
    assert_eq!(s["archivedBelowPosition"], 168);
}

#[tokio::test]
async fn archive_endpoints_answer_501_without_an_archive() {
    let t = setup(ServerConfig::default());
    for r in [
        get(&t.app, "/admin/archive").await,
        post(&t.app, "/admin/archive", "").await,
    ] {
        assert_eq!(r.status, 501, "{}", r.text);
        assert_eq!(r.code(), "archive_unconfigured");
    }
    let health = get(&t.app, "/health").await.json();
    assert_eq!(health, json!({ "status": "ok" }));
}

/// Crypto-shredding through HTTP with plain JSON: a schema registered, personal fields sealed
/// in the store and read back, a subject forgotten (twice), and the mistakes a client can make.
#[tokio::test]
async fn personal_fields_are_sealed_read_and_forgotten_over_http() {
    let t = setup_with_projections(ServerConfig::default()).await;
    let put = |uri: &'static str, body: Value| {
        let app = t.app.clone();
        async move {
            send(
                &app,
                Request::put(uri)
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await
        }
    };
    let delete = |uri: &'static str| {
        let app = t.app.clone();
        async move { send(&app, Request::delete(uri).body(Body::empty()).unwrap()).await }
    };
    let r = put(
        "/encryption/schemas/CustomerRegistered",
        json!({"subject": {"pointer": "/customerId"}, "fields": ["/email"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["schema"]["fields"], json!(["/email"]));
    let r = get(&t.app, "/encryption/schemas").await;
    assert_eq!(r.json()["schemas"][0]["eventType"], "CustomerRegistered");

    let event = one(
        "CustomerRegistered",
        json!({"customerId": "c-1", "email": "sentinel-http-9d1@example.org"}),
    );
    let r = append(&t.app, "customer-1", json!("no_stream"), vec![event]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The store behind the server holds ciphertext; the API reads the email back.
    let stored = t
        .store
        .read_stream(
            &StreamId::new("customer-1").unwrap(),
            ReadStreamOptions::forward(),
        )
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&stored[0].data).contains("sentinel-http"));
    let r = get(&t.app, "/streams/customer-1").await;
    assert_eq!(
        r.json()["events"][0]["data"]["email"],
        "sentinel-http-9d1@example.org"
    );

    // An event that does not match the schema: a problem naming the field, nothing written.
    let r = append(
        &t.app,
        "customer-2",
        json!("no_stream"),
        vec![one("CustomerRegistered", json!({"customerId": "c-2"}))],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "invalid_request");
    assert_eq!(r.json()["field"], "events[0].data/email");
    assert_eq!(get(&t.app, "/streams/customer-2").await.status, 404);
    // A schema that is not one.
    let r = put(
        "/encryption/schemas/Bad",
        json!({"subject": {"pointer": "/id"}, "fields": ["email"]}),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "invalid_request".into())
    );
    assert_eq!(r.json()["field"], "fields[0]");
    let r = put("/encryption/schemas/Bad", json!({"fields": ["/e"], "x": 1})).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "invalid_request".into())
    );

    // Forget: the field reads as null, flagged; a second forget says it was done already.
    let r = delete("/subjects/c-1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["outcome"], "forgotten");
    let position = r.json()["position"].clone();
    let r = get(&t.app, "/streams/customer-1").await;
    assert_eq!(r.json()["events"][0]["data"]["email"], Value::Null);
    assert_eq!(
        r.json()["events"][0]["metadata"]["$forgotten"],
        json!(["/email"])
    );
    let r = delete("/subjects/c-1").await;
    assert_eq!(r.json()["outcome"], "alreadyForgotten");
    assert_eq!(r.json()["position"], position);
    let r = get(&t.app, "/streams/strata-forgotten").await;
    assert_eq!(r.json()["events"][0]["eventType"], "$subjectForgotten");
    // Strata's own streams are not for clients' appends.
    let r = append(
        &t.app,
        "strata-forgotten",
        json!("any"),
        vec![one("X", json!(1))],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["field"].clone()),
        (400, json!("stream"))
    );

    // A server without a master key says so, and its clients cannot write the system events
    // of crypto-shredding either.
    let plain = setup(ServerConfig::default());
    let r = get(&plain.app, "/encryption/schemas").await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (501, "encryption_unconfigured".into())
    );
    let forged = one(
        "$encryptionSchema",
        json!({"eventType": "X", "subject": {"pointer": "/id"}, "fields": ["/a"]}),
    );
    let r = append(&plain.app, "strata-encryption", json!("any"), vec![forged]).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["field"].clone()),
        (400, json!("stream"))
    );
}
