//! The crypto-shredding benchmark (`cargo bench -p strata-bench --bench shred`), on the
//! embedded store, each row beside its plain baseline in the same run:
//!
//! - 64 writers appending single events with two personal fields (a name and an email) to a
//!   store wrapped for crypto-shredding, beside the same appends to the bare store, and beside
//!   plain events padded to the sealed ones' stored size (what sealing costs besides the bytes
//!   it adds);
//! - loading an aggregate of 10,000 such events, sealed beside plain: through the toolkit's
//!   repository (no snapshot, no cache: every event read, opened, decoded and applied), and
//!   as a bare read of its stream with each event's data parsed;
//! - forgetting a subject with 100,000 events, beside one with 10.
//!
//! Rounds alternate (plain, sealed, same size; the order turns by one each round) in fresh
//! stores, and each row reports the median of the rounds.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::scavenge_log::Scratch;
use serde::{Deserialize, Serialize};
use strata::{Aggregate, DomainEvent, Repository, SnapshotStore};
use strata_core::{EventData, EventStore, ExpectedVersion, ReadStreamOptions, StreamId};
use strata_log::LogStore;
use strata_shred::{
    DirKeys, EncryptionSchema, Keyring, MasterKey, PersonalData, Shredded, SubjectSource,
};

/// Writers appending at once.
pub const WRITERS: usize = 64;
/// Events of the aggregate that is loaded.
pub const AGGREGATE_EVENTS: u64 = 10_000;
/// Loads of the aggregate measured per round (the median is kept).
const LOADS: usize = 9;
/// Events of the subject that is forgotten.
pub const FORGET_EVENTS: u64 = 100_000;

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct ShredScale {
    /// Seconds each append round runs.
    pub append_secs: f64,
    /// Rounds of each kind.
    pub rounds: usize,
    /// Events of the subject forgotten.
    pub forget_events: u64,
}

impl ShredScale {
    /// `STRATA_BENCH_QUICK=1`: short rounds, a smaller forget.
    pub fn from_env() -> ShredScale {
        if std::env::var("STRATA_BENCH_QUICK").is_ok_and(|v| v == "1") {
            ShredScale {
                append_secs: 0.5,
                rounds: 1,
                forget_events: 10_000,
            }
        } else {
            ShredScale {
                append_secs: 3.0,
                rounds: 5,
                forget_events: FORGET_EVENTS,
            }
        }
    }
}

/// What one run measured (medians over the rounds).
#[derive(Debug, Clone)]
pub struct ShredReport {
    /// Events/s of the plain appends, per round.
    pub plain_appends: Vec<f64>,
    /// Events/s of the sealed appends, per round.
    pub sealed_appends: Vec<f64>,
    /// Events/s of plain appends as large as the sealed ones, per round.
    pub same_size_appends: Vec<f64>,
    /// Bytes of the plain event's data, and of the sealed one's as stored.
    pub event_bytes: (usize, usize),
    /// Loads of the plain aggregate, per round.
    pub plain_loads: Vec<Duration>,
    /// Loads of the sealed aggregate, per round.
    pub sealed_loads: Vec<Duration>,
    /// Loads of the plain aggregate of events as large as the sealed ones, per round.
    pub same_size_loads: Vec<Duration>,
    /// Repository loads of the plain aggregate, per round.
    pub plain_repository_loads: Vec<Duration>,
    /// Repository loads of the sealed aggregate, per round.
    pub sealed_repository_loads: Vec<Duration>,
    /// Microseconds per event of reading 10,000 events through the wrapper with no, one and
    /// two sealed fields, all of the same stored size (no parse: the opening's own cost).
    pub opening_us: [f64; 3],
    /// Events of the big subject.
    pub forget_events: u64,
    /// How long forgetting it took.
    pub forget_big: Duration,
    /// How long forgetting a subject of 10 events took.
    pub forget_small: Duration,
}

fn median_f64(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn median_d(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

impl fmt::Display for ShredReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (plain, sealed) = (
            median_f64(&self.plain_appends),
            median_f64(&self.sealed_appends),
        );
        writeln!(
            f,
            "Crypto-shredding, embedded store (medians of {} rounds, alternating)",
            self.plain_appends.len()
        )?;
        writeln!(
            f,
            "  {WRITERS} writers, single events with 2 personal fields: plain {plain:.0}/s, sealed {sealed:.0}/s = {:.2}x  (rounds: plain {:?}, sealed {:?})",
            sealed / plain,
            self.plain_appends.iter().map(|r| r.round() as u64).collect::<Vec<_>>(),
            self.sealed_appends.iter().map(|r| r.round() as u64).collect::<Vec<_>>(),
        )?;
        let same = median_f64(&self.same_size_appends);
        writeln!(
            f,
            "  the same beside plain events of the sealed ones' size ({} bytes of data, plain {}): {same:.0}/s, sealed = {:.2}x  (rounds: {:?})",
            self.event_bytes.1,
            self.event_bytes.0,
            sealed / same,
            self.same_size_appends.iter().map(|r| r.round() as u64).collect::<Vec<_>>(),
        )?;
        let (pl, sl, ml) = (
            median_d(&self.plain_loads),
            median_d(&self.sealed_loads),
            median_d(&self.same_size_loads),
        );
        let (pr, sr) = (
            median_d(&self.plain_repository_loads),
            median_d(&self.sealed_repository_loads),
        );
        writeln!(
            f,
            "  aggregate load through the repository, {AGGREGATE_EVENTS} events: plain {:.1} ms, sealed {:.1} ms = {:.2}x the plain rate",
            pr.as_secs_f64() * 1e3,
            sr.as_secs_f64() * 1e3,
            pr.as_secs_f64() / sr.as_secs_f64(),
        )?;
        writeln!(
            f,
            "  bare read of its stream, data parsed, {AGGREGATE_EVENTS} events: plain {:.1} ms, sealed {:.1} ms = {:.2}x the plain rate; plain of the sealed size {:.1} ms = {:.2}x",
            pl.as_secs_f64() * 1e3,
            sl.as_secs_f64() * 1e3,
            pl.as_secs_f64() / sl.as_secs_f64(),
            ml.as_secs_f64() * 1e3,
            ml.as_secs_f64() / sl.as_secs_f64()
        )?;
        let [none, one, two] = self.opening_us;
        writeln!(
            f,
            "  reading {AGGREGATE_EVENTS} events of one stored size through the wrapper, per event: no sealed field {none:.3} us, one {one:.3} us (+{:.3}), two {two:.3} us (+{:.3})",
            one - none,
            two - none
        )?;
        writeln!(
            f,
            "  forget: a subject with {} events {:.2} ms, one with 10 events {:.2} ms",
            self.forget_events,
            self.forget_big.as_secs_f64() * 1e3,
            self.forget_small.as_secs_f64() * 1e3
        )
    }
}

/// The events of the benchmark's customer, as an application declares them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all_fields = "camelCase")]
enum CustomerEvent {
    CustomerUpdated {
        customer_id: String,
        name: Option<String>,
        email: Option<String>,
        tier: u64,
        balance_cents: u64,
        country: String,
    },
}

impl DomainEvent for CustomerEvent {}

impl PersonalData for CustomerEvent {
    fn personal_data() -> Vec<EncryptionSchema> {
        vec![EncryptionSchema::new(
            "CustomerUpdated",
            SubjectSource::Pointer("/customerId".into()),
        )
        .field("/name")
        .field("/email")]
    }
}

/// The aggregate loaded: what its events add up to.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Customer {
    updates: u64,
    name_bytes: u64,
    balance_cents: u64,
}

impl Aggregate for Customer {
    type Event = CustomerEvent;
    type Command = ();
    type Error = std::convert::Infallible;
    const CATEGORY: &'static str = "customer";

    fn handle(&self, (): ()) -> Result<Vec<CustomerEvent>, Self::Error> {
        Ok(Vec::new())
    }

    fn apply(&mut self, event: &CustomerEvent) {
        let CustomerEvent::CustomerUpdated {
            name,
            balance_cents,
            ..
        } = event;
        self.updates += 1;
        self.name_bytes += name.as_ref().map_or(0, |n| n.len() as u64);
        self.balance_cents += balance_cents;
    }
}

/// Loads the aggregate `customer-aggregate` through a repository with neither snapshots nor a
/// cache: every event is read, opened when sealed, decoded and applied.
async fn repository_load<S: EventStore + SnapshotStore>(store: S) -> Result<Duration, String> {
    let repository = Repository::<Customer, S>::new(store)
        .with_snapshot_interval(0)
        .with_cache_capacity(0);
    let start = Instant::now();
    let loaded = repository
        .load("aggregate")
        .await
        .map_err(|e| e.to_string())?;
    let took = start.elapsed();
    if loaded.updates != AGGREGATE_EVENTS || loaded.name_bytes == 0 {
        return Err(format!("the aggregate folded {} events", loaded.updates));
    }
    Ok(took)
}

fn schema() -> EncryptionSchema {
    CustomerEvent::personal_data().remove(0)
}

/// An event of subject `customer` with two personal fields among others, and `filler` bytes
/// more in a field of its own when not 0.
fn event(customer: &str, n: u64, filler: usize) -> EventData {
    let mut data = serde_json::json!({
        "customerId": customer,
        "name": format!("Customer Name {n}"),
        "email": format!("customer.{n}@example.org"),
        "tier": n % 4,
        "balanceCents": n * 100,
        "country": "FR",
    });
    if filler > 0 {
        data["filler"] = serde_json::Value::String("x".repeat(filler));
    }
    EventData::json("CustomerUpdated", &data).expect("json")
}

/// What the benchmark compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The bare store, plain events.
    Plain,
    /// The bare store, plain events with a filler as long as sealing makes them.
    SameSize,
    /// The wrapped store: the two fields sealed.
    Sealed,
}

/// Bytes of a plain event's data, and of the same event's as sealed and stored.
async fn event_sizes() -> Result<(usize, usize), String> {
    let dir = Scratch(
        std::env::temp_dir().join(format!("strata-bench-shred-size-{}", std::process::id())),
    );
    let (log, store) = store(&dir.0, true).await?;
    let stream = sid("customer-size")?;
    let plain = event("c-size", 123_456, 0);
    store
        .append(&stream, ExpectedVersion::Any, vec![plain.clone()])
        .await
        .map_err(|e| e.to_string())?;
    let stored = log
        .read_stream(&stream, ReadStreamOptions::forward())
        .await
        .map_err(|e| e.to_string())?;
    drop(store);
    log.close().await.map_err(|e| e.to_string())?;
    Ok((plain.data.len(), stored[0].data.len()))
}

fn sid(s: &str) -> Result<StreamId, String> {
    StreamId::new(s).map_err(|e| e.to_string())
}

/// A fresh store in `dir`: bare, or wrapped with the schema registered.
async fn store(dir: &Path, sealed: bool) -> Result<(LogStore, Arc<dyn EventStore>), String> {
    let (log, shredded) = opened(dir, sealed).await?;
    Ok(match shredded {
        Some(s) => (log, Arc::new(s)),
        None => (log.clone(), Arc::new(log)),
    })
}

/// A fresh store in `dir`, and the wrapper over it with the schema registered when `sealed`.
async fn opened(dir: &Path, sealed: bool) -> Result<(LogStore, Option<Shredded>), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let log = LogStore::open(dir.join("data")).map_err(|e| e.to_string())?;
    if !sealed {
        return Ok((log, None));
    }
    let keys = DirKeys::open(dir.join("data").join("keys"))
        .map_err(|e| e.to_string())?
        .shared();
    let ring = Keyring::open(keys, MasterKey::from_bytes([5; 32]))
        .await
        .map_err(|e| e.to_string())?;
    let shredded = Shredded::open(Arc::new(log.clone()), ring)
        .await
        .map_err(|e| e.to_string())?;
    shredded
        .register(schema())
        .await
        .map_err(|e| e.to_string())?;
    Ok((log, Some(shredded)))
}

/// `WRITERS` tasks appending one event at a time to their own stream (their own subject) for
/// `secs`: events/s.
async fn appends(store: Arc<dyn EventStore>, secs: f64, filler: usize) -> Result<f64, String> {
    // Each writer's subject has its key before the clock starts: a subject's first sealed
    // event creates its key durably (a file and two fsyncs), once in its life.
    for w in 0..WRITERS {
        let stream = sid(&format!("customer-{w}"))?;
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![event(&format!("c-{w}"), 0, filler)],
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    let running = Arc::new(AtomicBool::new(true));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, running) = (store.clone(), running.clone());
        let stream = sid(&format!("customer-{w}"))?;
        tasks.push(tokio::spawn(async move {
            let mut n = 1u64;
            while running.load(Ordering::Relaxed) {
                store
                    .append(
                        &stream,
                        ExpectedVersion::Any,
                        vec![event(&format!("c-{w}"), n, filler)],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                n += 1;
            }
            Ok::<u64, String>(n - 1)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    running.store(false, Ordering::Relaxed);
    let mut total = 0;
    for t in tasks {
        total += t.await.map_err(|e| e.to_string())??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Reads `stream` whole, a page at a time, decoding each event's data: an aggregate's load.
async fn load(store: &dyn EventStore, stream: &StreamId) -> Result<Duration, String> {
    let start = Instant::now();
    let mut from = 0;
    let mut folded = 0u64;
    loop {
        let mut options = ReadStreamOptions::forward();
        options.from_version = Some(from);
        let page = store
            .read_stream(stream, options)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        from = last.stream_version + 1;
        for e in &page {
            let v: serde_json::Value =
                serde_json::from_slice(&e.data).map_err(|e| e.to_string())?;
            folded += v["balanceCents"].as_u64().unwrap_or(0)
                + v["name"].as_str().map_or(0, |s| s.len() as u64);
        }
    }
    if folded == 0 {
        return Err("the aggregate folded nothing".into());
    }
    Ok(start.elapsed())
}

/// Appends `events` events of subject `customer` to `stream`, 1,000 per append (with
/// `filler` bytes more each).
async fn fill(
    store: &dyn EventStore,
    stream: &StreamId,
    customer: &str,
    events: u64,
    filler: usize,
) -> Result<(), String> {
    let mut n = 0;
    while n < events {
        let batch: Vec<EventData> = (n..(n + 1000).min(events))
            .map(|i| event(customer, i, filler))
            .collect();
        n += batch.len() as u64;
        store
            .append(stream, ExpectedVersion::Any, batch)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Microseconds per event of reading `AGGREGATE_EVENTS` events through the wrapper, with no,
/// one and two sealed fields, padded to one stored size: the cost of opening, without
/// decoding anything or reading more bytes.
async fn opening_costs(dir: &Path) -> Result<[f64; 3], String> {
    let (log, shredded) = opened(dir, true).await?;
    let shredded = shredded.ok_or("the sealed store was not wrapped")?;
    shredded
        .register(
            EncryptionSchema::new("EmailUpdated", SubjectSource::Pointer("/customerId".into()))
                .field("/email"),
        )
        .await
        .map_err(|e| e.to_string())?;
    let types = ["PlainUpdated", "EmailUpdated", "CustomerUpdated"];
    let of_type = |event_type: &str, n: u64, filler: usize| EventData {
        event_type: event_type.to_owned(),
        ..event("c-opening", n, filler)
    };
    // Every kind padded to the stored size of the one with two sealed fields, so that the
    // rows differ by the opening alone, not by the bytes read.
    let mut stored = [0usize; 3];
    for (k, event_type) in types.iter().enumerate() {
        let probe = sid(&format!("opening-probe-{k}"))?;
        shredded
            .append(
                &probe,
                ExpectedVersion::Any,
                vec![of_type(event_type, 0, 0)],
            )
            .await
            .map_err(|e| e.to_string())?;
        let raw = log
            .read_stream(&probe, ReadStreamOptions::forward())
            .await
            .map_err(|e| e.to_string())?;
        stored[k] = raw[0].data.len();
    }
    let mut costs = [0.0; 3];
    for (sealed_fields, event_type) in types.into_iter().enumerate() {
        // The filler's field name and quotes take 12 bytes.
        let filler = (stored[2] - stored[sealed_fields]).saturating_sub(12);
        let stream = sid(&format!("opening-{sealed_fields}"))?;
        let mut n = 0;
        while n < AGGREGATE_EVENTS {
            let batch: Vec<EventData> = (n..(n + 1000).min(AGGREGATE_EVENTS))
                .map(|i| of_type(event_type, i, filler))
                .collect();
            n += batch.len() as u64;
            shredded
                .append(&stream, ExpectedVersion::Any, batch)
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut reads = Vec::new();
        for _ in 0..15 {
            let start = Instant::now();
            let mut from = 0;
            loop {
                let mut options = ReadStreamOptions::forward();
                options.from_version = Some(from);
                let page = shredded
                    .read_stream(&stream, options)
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(last) = page.last() else { break };
                from = last.stream_version + 1;
            }
            reads.push(start.elapsed());
        }
        costs[sealed_fields] = median_d(&reads).as_secs_f64() * 1e6 / AGGREGATE_EVENTS as f64;
    }
    drop(shredded);
    log.close().await.map_err(|e| e.to_string())?;
    Ok(costs)
}

/// Runs the benchmark in temporary directories under `base`.
pub async fn run(base: &Path, scale: ShredScale) -> Result<ShredReport, String> {
    let work = Scratch(base.join(format!("strata-bench-shred-{}", std::process::id())));
    let mut report = ShredReport {
        plain_appends: Vec::new(),
        sealed_appends: Vec::new(),
        same_size_appends: Vec::new(),
        event_bytes: event_sizes().await?,
        plain_loads: Vec::new(),
        sealed_loads: Vec::new(),
        same_size_loads: Vec::new(),
        plain_repository_loads: Vec::new(),
        sealed_repository_loads: Vec::new(),
        opening_us: [0.0; 3],
        forget_events: scale.forget_events,
        forget_big: Duration::ZERO,
        forget_small: Duration::ZERO,
    };
    let aggregate = sid("customer-aggregate")?;
    for round in 0..scale.rounds {
        let mut kinds = [Kind::Plain, Kind::Sealed, Kind::SameSize];
        kinds.rotate_left(round % 3);
        for kind in kinds {
            let sealed = kind == Kind::Sealed;
            // The filler makes a plain event's data as long as the sealed one's: its field's
            // name and quotes take 12 bytes.
            let filler = match kind {
                Kind::SameSize => (report.event_bytes.1 - report.event_bytes.0).saturating_sub(12),
                _ => 0,
            };
            let dir = work.0.join(format!("r{round}-{kind:?}"));
            let (log, shredded) = opened(&dir, sealed).await?;
            let store: Arc<dyn EventStore> = match &shredded {
                Some(s) => Arc::new(s.clone()),
                None => Arc::new(log.clone()),
            };
            let rate = appends(store.clone(), scale.append_secs, filler).await?;
            fill(
                store.as_ref(),
                &aggregate,
                "c-aggregate",
                AGGREGATE_EVENTS,
                filler,
            )
            .await?;
            // Warm once (page cache, key cache), then the median of the measured loads.
            load(store.as_ref(), &aggregate).await?;
            let mut loads = Vec::new();
            for _ in 0..LOADS {
                loads.push(load(store.as_ref(), &aggregate).await?);
            }
            let took = median_d(&loads);
            let mut repository_loads = Vec::new();
            for _ in 0..LOADS {
                repository_loads.push(match &shredded {
                    Some(s) => {
                        let s = s.clone().with_snapshots(Arc::new(log.clone()));
                        repository_load(s).await?
                    }
                    None => repository_load(log.clone()).await?,
                });
            }
            match kind {
                Kind::Plain => report
                    .plain_repository_loads
                    .push(median_d(&repository_loads)),
                Kind::Sealed => report
                    .sealed_repository_loads
                    .push(median_d(&repository_loads)),
                Kind::SameSize => {}
            }
            let (rates, times) = match kind {
                Kind::Plain => (&mut report.plain_appends, &mut report.plain_loads),
                Kind::Sealed => (&mut report.sealed_appends, &mut report.sealed_loads),
                Kind::SameSize => (&mut report.same_size_appends, &mut report.same_size_loads),
            };
            rates.push(rate);
            times.push(took);
            drop((store, shredded));
            log.close().await.map_err(|e| e.to_string())?;
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    report.opening_us = opening_costs(&work.0.join("opening")).await?;
    // Forgetting: the same call for a subject of many events and one of few.
    let dir = work.0.join("forget");
    let (log, shredded) = opened(&dir, true).await?;
    let shredded = shredded.ok_or("the sealed store was not wrapped")?;
    fill(
        &shredded,
        &sid("customer-big")?,
        "c-big",
        scale.forget_events,
        0,
    )
    .await?;
    fill(&shredded, &sid("customer-small")?, "c-small", 10, 0).await?;
    let t = Instant::now();
    shredded.forget("c-big").await.map_err(|e| e.to_string())?;
    report.forget_big = t.elapsed();
    let t = Instant::now();
    shredded
        .forget("c-small")
        .await
        .map_err(|e| e.to_string())?;
    report.forget_small = t.elapsed();
    // The forget took: the big subject's last event reads without its name.
    let mut last = ReadStreamOptions::backward();
    last.limit = 1;
    let read = shredded
        .read_stream(&sid("customer-big")?, last)
        .await
        .map_err(|e| e.to_string())?;
    if read[0].data_json().is_none_or(|d| !d["name"].is_null()) {
        return Err("the forgotten subject still reads".into());
    }
    drop(shredded);
    log.close().await.map_err(|e| e.to_string())?;
    Ok(report)
}
