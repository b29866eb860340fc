//! Benchmarks of the PostgreSQL backend (`strata-postgres`), with the naive baseline measured
//! against the same server in the same run: one plain `INSERT` per transaction into the
//! mission's `events` table exactly as the mission writes it (UUID aggregate ids, no global
//! position, no ordering guarantee, no idempotency). Two drivers of that baseline: a sqlx loop
//! like Strata's own client code (`naive`), and `pgbench -n -M prepared` (`pgbench`: C,
//! prepared statements, a new random aggregate per INSERT), when `pgbench` is installed.
//!
//! Every schema it uses is dropped and created afresh (`bench_pg_naive`, `bench_pg_append`,
//! `bench_pg_store`), and dropped again at the end.
//!
//! Needs `strata-postgres`, `sqlx` (workspace) and `tokio` as dependencies of the crate that
//! includes it.
//!
//! ```no_run
//! # async fn demo() {
//! let report = strata_bench::postgres::run(
//!     "postgres://postgres@127.0.0.1:5432/test",
//!     strata_bench::postgres::PgBenchScale::Full,
//! )
//! .await
//! .unwrap();
//! println!("{report}");
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use strata_core::{
    EventData, EventStore, ExpectedVersion, Filter, ListOptions, ReadAllOptions, ReadStreamOptions,
    StreamId, SubscribeFrom, SubscriptionTarget, Uuid,
};
use strata_postgres::{PgStoreOptions, PostgresStore};

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgBenchScale {
    /// The sizes the targets are stated at: 1,000,000 events, 3 rounds of 3 s per append row.
    Full,
    /// A small run for smoke tests: 50,000 events, 1 s per append row.
    Quick,
}

impl PgBenchScale {
    /// Events loaded for the read benchmarks.
    pub fn store_events(self) -> u64 {
        match self {
            PgBenchScale::Full => 1_000_000,
            PgBenchScale::Quick => 50_000,
        }
    }
    /// Events in the one stream that is read back.
    pub fn stream_events(self) -> u64 {
        match self {
            PgBenchScale::Full => 10_000,
            PgBenchScale::Quick => 2_000,
        }
    }
    /// Seconds each append row runs.
    pub fn append_secs(self) -> f64 {
        match self {
            PgBenchScale::Full => 3.0,
            PgBenchScale::Quick => 1.0,
        }
    }
    /// How many times each single-event row is measured, alternating the systems; the
    /// report keeps the median round of each, so one stall of a shared machine's disk does
    /// not decide a row.
    pub fn append_rounds(self) -> usize {
        match self {
            PgBenchScale::Full => 3,
            PgBenchScale::Quick => 1,
        }
    }
}

/// The round with the median events/s.
fn median_row(mut rows: Vec<PgAppendRow>) -> Result<PgAppendRow, String> {
    rows.sort_by(|a, b| a.events_per_sec().total_cmp(&b.events_per_sec()));
    let mid = rows.len() / 2;
    rows.into_iter()
        .nth(mid)
        .ok_or_else(|| "no rounds were measured".to_owned())
}

/// One append measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct PgAppendRow {
    /// `"strata"`, `"naive"` (the sqlx loop) or `"pgbench"`.
    pub system: &'static str,
    /// Concurrent writers.
    pub writers: usize,
    /// Events per append (per transaction, for the baseline).
    pub events_per_append: usize,
    /// Appends completed.
    pub appends: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Median acknowledgement latency of one append, in µs (for `pgbench`: the mean).
    pub latency_us_p50: u64,
    /// 99th percentile acknowledgement latency, in µs (0 for `pgbench`, which reports none).
    pub latency_us_p99: u64,
}

impl PgAppendRow {
    /// Events per second.
    pub fn events_per_sec(&self) -> f64 {
        (self.appends * self.events_per_append as u64) as f64 / self.elapsed.as_secs_f64()
    }
}

/// Everything one run measured. Single-event rows are the median of
/// [`PgBenchScale::append_rounds`] alternating rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct PgBenchReport {
    /// The server's version string.
    pub server: String,
    /// Single-event appends (Strata and the naive baseline) and 100-event appends.
    pub appends: Vec<PgAppendRow>,
    /// Events bulk-loaded for the reads.
    pub store_events: u64,
    /// How long the bulk load took (multi-event appends from several writers).
    pub load_elapsed: Duration,
    /// Events in the stream read back.
    pub stream_events: u64,
    /// Reading that whole stream, median of several reads.
    pub stream_read: Duration,
    /// A catch-up subscription over all of `$all` (the generic subscription, 512-event pages):
    /// the median of [`PgBenchScale::append_rounds`] runs.
    pub catch_up: Duration,
    /// Every catch-up run, in the order run.
    pub catch_up_runs: Vec<Duration>,
    /// Reading `$all` with `read_all` pages of 10,000 events.
    pub read_all: Duration,
    /// Reading `$all` unfiltered in pages of [`FILTER_PAGE`] events (the baseline of the
    /// filtered rows).
    pub read_all_paged: PgPagedRead,
    /// Reading `$all` filtered on the rare category [`RARE_CATEGORY`] (1% of the events at
    /// full scale).
    pub filtered_category: PgPagedRead,
    /// Reading `$all` filtered on the rare event type [`RARE_EVENT_TYPE`] (the same events).
    pub filtered_type: PgPagedRead,
    /// `list_categories`, first page, median of several calls.
    pub list_categories: Duration,
}

/// Events per page of the paged `read_all` rows: a subscription's page.
pub const FILTER_PAGE: usize = strata_core::limits::SUBSCRIPTION_PAGE_EVENTS;
/// The category of the rare events (one append in 100 of the bulk load).
pub const RARE_CATEGORY: &str = "audit";
/// The event type of the rare events.
pub const RARE_EVENT_TYPE: &str = "AuditRecorded";

/// A paged `read_all` from the start to the end.
#[derive(Debug, Clone, PartialEq)]
pub struct PgPagedRead {
    /// Events returned.
    pub events: u64,
    /// Calls to `read_all`.
    pub pages: u64,
    /// Wall time of the whole read.
    pub elapsed: Duration,
}

impl PgPagedRead {
    /// Events per second.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
    /// Milliseconds per `read_all` call.
    pub fn ms_per_page(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e3 / self.pages.max(1) as f64
    }
}

impl PgBenchReport {
    fn row(&self, system: &str, writers: usize, per: usize) -> Option<&PgAppendRow> {
        self.appends
            .iter()
            .find(|r| r.system == system && r.writers == writers && r.events_per_append == per)
    }

    /// Strata's single-event events/s with 16 writers over the naive baseline's.
    pub fn ratio_16_writers(&self) -> Option<f64> {
        Some(
            self.row("strata", 16, 1)?.events_per_sec()
                / self.row("naive", 16, 1)?.events_per_sec(),
        )
    }

    /// Catch-up events/s.
    pub fn catch_up_events_per_sec(&self) -> f64 {
        self.store_events as f64 / self.catch_up.as_secs_f64()
    }
}

impl fmt::Display for PgBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "PostgreSQL backend benchmark ({})", self.server)?;
        writeln!(
            f,
            "{:<8} {:>7} {:>12} {:>12} {:>10} {:>10}",
            "system", "writers", "events/app", "events/s", "p50 µs", "p99 µs"
        )?;
        for r in &self.appends {
            // pgbench reports a mean latency, no percentiles.
            let (p50, p99) = match r.system {
                "pgbench" => (format!("~{}", r.latency_us_p50), "-".to_owned()),
                _ => (r.latency_us_p50.to_string(), r.latency_us_p99.to_string()),
            };
            writeln!(
                f,
                "{:<8} {:>7} {:>12} {:>12.0} {:>10} {:>10}",
                r.system,
                r.writers,
                r.events_per_append,
                r.events_per_sec(),
                p50,
                p99
            )?;
        }
        for (w, target) in [(1, "0.9"), (4, "0.9"), (16, "1.2"), (64, "2")] {
            let Some(s) = self.row("strata", w, 1) else {
                continue;
            };
            if let Some(n) = self.row("naive", w, 1) {
                write!(
                    f,
                    "{w:>2} writers: Strata / naive = {:.2}x",
                    s.events_per_sec() / n.events_per_sec()
                )?;
            }
            match self.row("pgbench", w, 1) {
                Some(p) => writeln!(
                    f,
                    ", Strata / pgbench = {:.2}x (target >= {target}x)",
                    s.events_per_sec() / p.events_per_sec()
                )?,
                None => writeln!(f)?,
            }
        }
        if let Some(r) = self.row("strata", 8, 100) {
            write!(
                f,
                "100-event appends: {:.0} events/s (target >= 100,000)",
                r.events_per_sec()
            )?;
            match self.row("pgbench", 8, 100) {
                Some(p) => writeln!(
                    f,
                    ", Strata / pgbench 100-row INSERT = {:.2}x (target >= 1.0x)",
                    r.events_per_sec() / p.events_per_sec()
                )?,
                None => writeln!(f)?,
            }
        }
        writeln!(
            f,
            "bulk load: {} events in {:.2} s ({:.0} events/s)",
            self.store_events,
            self.load_elapsed.as_secs_f64(),
            self.store_events as f64 / self.load_elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "read one stream of {} events among {}: {:.2} ms ({:.0} events/s)",
            self.stream_events,
            self.store_events,
            self.stream_read.as_secs_f64() * 1e3,
            self.stream_events as f64 / self.stream_read.as_secs_f64()
        )?;
        writeln!(
            f,
            "catch-up subscription over $all: {:.2} s ({:.0} events/s, target >= 500,000; \
             median of {} runs: {})",
            self.catch_up.as_secs_f64(),
            self.catch_up_events_per_sec(),
            self.catch_up_runs.len(),
            self.catch_up_runs
                .iter()
                .map(|d| format!("{:.0}/s", self.store_events as f64 / d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
            f,
            "read_all in 10,000-event pages: {:.2} s ({:.0} events/s)",
            self.read_all.as_secs_f64(),
            self.store_events as f64 / self.read_all.as_secs_f64()
        )?;
        let base = &self.read_all_paged;
        writeln!(
            f,
            "read_all in {FILTER_PAGE}-event pages: {} events, {} pages, {:.2} s \
             ({:.0} events/s, {:.3} ms/page)",
            base.events,
            base.pages,
            base.elapsed.as_secs_f64(),
            base.events_per_sec(),
            base.ms_per_page()
        )?;
        for (what, r) in [
            (format!("category {RARE_CATEGORY}"), &self.filtered_category),
            (format!("event type {RARE_EVENT_TYPE}"), &self.filtered_type),
        ] {
            writeln!(
                f,
                "read_all filtered on {what} ({:.1}% of events), {FILTER_PAGE}-event pages: \
                 {} events, {} pages, {:.3} s ({:.0} events/s, {:.3} ms/page; \
                 events/s {:.2}x and ms/page {:.2}x the unfiltered read)",
                r.events as f64 * 100.0 / self.store_events as f64,
                r.events,
                r.pages,
                r.elapsed.as_secs_f64(),
                r.events_per_sec(),
                r.ms_per_page(),
                r.events_per_sec() / base.events_per_sec(),
                r.ms_per_page() / base.ms_per_page()
            )?;
        }
        write!(
            f,
            "list_categories (first page): {:.3} ms",
            self.list_categories.as_secs_f64() * 1e3
        )
    }
}

/// The mission's table, exactly as the mission writes it.
pub const NAIVE_SCHEMA: &str = "
CREATE TABLE events (
    event_id UUID PRIMARY KEY,
    aggregate_id UUID NOT NULL,
    aggregate_type VARCHAR(100) NOT NULL,
    event_type VARCHAR(100) NOT NULL,
    version INT NOT NULL,
    data JSONB NOT NULL,
    metadata JSONB,
    created_at TIMESTAMP DEFAULT NOW(),

    UNIQUE (aggregate_id, version)  -- Optimistic locking
);

CREATE INDEX idx_aggregate ON events(aggregate_id, version);
";

const NAIVE_INSERT: &str = "INSERT INTO bench_pg_naive.events \
     (event_id, aggregate_id, aggregate_type, event_type, version, data, metadata) \
     VALUES ($1, $2, 'BankAccount', 'MoneyDeposited', $3, $4::text::jsonb, $5::text::jsonb)";

/// Streams each writer cycles through, so appends go to existing streams at growing versions.
const STREAMS_PER_WRITER: usize = 64;

fn payload(i: u64) -> String {
    format!(
        r#"{{"amount":{},"currency":"EUR","note":"deposit at the counter"}}"#,
        i % 1000
    )
}

const METADATA: &str = r#"{"correlationId":"req-789","userId":"user-456"}"#;

pub(crate) fn event(i: u64) -> EventData {
    EventData {
        event_id: None,
        event_type: "MoneyDeposited".to_owned(),
        content_type: strata_core::CONTENT_TYPE_JSON.to_owned(),
        data: payload(i).into_bytes(),
        metadata: strata_core::Metadata::from_bytes(METADATA.as_bytes()).unwrap_or_default(),
    }
}

pub(crate) fn sid(s: String) -> Result<StreamId, String> {
    StreamId::new(s).map_err(|e| e.to_string())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Drops `schema` and everything in it.
pub async fn reset_schema(pool: &PgPool, schema: &str) -> Result<(), String> {
    pool.execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
        .await
        .map_err(|e| format!("dropping {schema}: {e}"))?;
    Ok(())
}

/// The naive baseline: `writers` tasks each running one plain `INSERT` per transaction into
/// `bench_pg_naive.events` for `secs` seconds.
pub async fn naive_rows(
    database_url: &str,
    writers: usize,
    secs: f64,
) -> Result<PgAppendRow, String> {
    // A pool of its own, closed at the end, so that its connections do not count against the
    // server's limit while pgbench runs 64 clients. Tuned like the store's: no ping before
    // every acquire.
    let pool = PgPoolOptions::new()
        .max_connections(writers.min(20) as u32)
        .test_before_acquire(false)
        .connect(database_url)
        .await
        .map_err(|e| format!("connecting to {database_url}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let aggregates: Vec<Uuid> = (0..STREAMS_PER_WRITER).map(|_| Uuid::now_v7()).collect();
            let mut versions = vec![0i32; STREAMS_PER_WRITER];
            let mut lat = Vec::new();
            let mut i = 0usize;
            while Instant::now() < deadline {
                let k = i % STREAMS_PER_WRITER;
                let t = Instant::now();
                sqlx::query(NAIVE_INSERT)
                    .bind(Uuid::now_v7())
                    .bind(aggregates[k])
                    .bind(versions[k])
                    .bind(payload(i as u64))
                    .bind(METADATA)
                    .execute(&pool)
                    .await
                    .map_err(|e| format!("naive insert: {e}"))?;
                lat.push(t.elapsed().as_micros() as u64);
                versions[k] += 1;
                i += 1;
            }
            Ok::<_, String>(lat)
        }));
    }
    let row = finish("naive", writers, 1, start, tasks).await;
    pool.close().await;
    row
}

/// `pgbench`'s script: the naive INSERT with a new random aggregate each time (so version 0
/// never collides), prepared once per connection by `-M prepared`. With `rows` above 1, one
/// INSERT of `rows` events of one new aggregate (versions 0 to `rows - 1`), the payloads made
/// by the server, so that nothing but the statement's execution crosses the wire: the
/// strongest naive baseline for a multi-event append.
fn pgbench_script(rows: usize) -> String {
    const PAYLOAD: &str =
        "'{\"amount\":1,\"currency\":\"EUR\",\"note\":\"deposit at the counter\"}'::jsonb, \
         '{\"correlationId\":\"req-789\",\"userId\":\"user-456\"}'::jsonb";
    const COLUMNS: &str = "INSERT INTO bench_pg_naive.events \
         (event_id, aggregate_id, aggregate_type, event_type, version, data, metadata)";
    if rows <= 1 {
        format!(
            "{COLUMNS} VALUES (gen_random_uuid(), gen_random_uuid(), 'BankAccount', \
             'MoneyDeposited', 0, {PAYLOAD});\n"
        )
    } else {
        format!(
            "{COLUMNS} SELECT gen_random_uuid(), a.id, 'BankAccount', 'MoneyDeposited', g.v, \
             {PAYLOAD} FROM (SELECT gen_random_uuid() AS id) a \
             CROSS JOIN generate_series(0, {}) AS g(v);\n",
            rows - 1
        )
    }
}

/// The naive baseline driven by `pgbench -n -M prepared` with `writers` clients for `secs`
/// seconds (rounded up to whole seconds, as `-T` takes them), each transaction one INSERT of
/// `rows` events ([`pgbench_script`]). `None` when `pgbench` is not installed. Its latencies
/// are the mean only (`p50` is the mean, `p99` is 0).
pub fn pgbench_row(
    database_url: &str,
    writers: usize,
    rows: usize,
    secs: f64,
) -> Result<Option<PgAppendRow>, String> {
    let dir = std::env::temp_dir().join(format!("strata-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let script = dir.join("naive.sql");
    std::fs::write(&script, pgbench_script(rows))
        .map_err(|e| format!("writing {}: {e}", script.display()))?;
    let out = std::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-c"])
        .arg(writers.to_string())
        .arg("-j")
        .arg(writers.min(4).to_string())
        .arg("-T")
        .arg((secs.ceil() as u64).max(1).to_string())
        .arg("-f")
        .arg(&script)
        .arg(database_url)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = match out {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("running pgbench: {e}")),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "pgbench failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let (done, latency_ms, tps) = parse_pgbench(&text).ok_or_else(|| {
        format!("pgbench's report lacks a count or a rate, or some transactions failed: {text}")
    })?;
    Ok(Some(PgAppendRow {
        system: "pgbench",
        writers,
        events_per_append: rows,
        appends: done,
        elapsed: Duration::from_secs_f64(done as f64 / tps.max(1e-9)),
        latency_us_p50: (latency_ms * 1000.0) as u64,
        latency_us_p99: 0,
    }))
}

/// Transactions processed, mean latency in ms and transactions per second, from pgbench's
/// report; `None` when it lacks one of them or some transactions failed.
fn parse_pgbench(text: &str) -> Option<(u64, f64, f64)> {
    let after = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
    };
    if after("number of failed transactions:").is_some_and(|n| n != "0") {
        return None;
    }
    let done = after("number of transactions actually processed:")?
        .split('/')
        .next()?
        .parse()
        .ok()?;
    let latency = after("latency average =")?.parse().ok()?;
    let tps = after("tps =")?.parse().ok()?;
    Some((done, latency, tps))
}

/// Strata: `writers` tasks each appending `per_append` events per call for `secs` seconds
/// (streams are named with `tag`, so runs with different tags do not collide).
pub async fn strata_rows<S: EventStore + Clone + 'static>(
    store: &S,
    writers: usize,
    per_append: usize,
    secs: f64,
    tag: &str,
) -> Result<PgAppendRow, String> {
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let timer = {
        let running = running.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            running.store(false, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let row = strata_rows_while(store, writers, per_append, tag, running).await;
    timer.abort();
    row
}

/// [`strata_rows`] while `running` is set.
pub async fn strata_rows_while<S: EventStore + Clone + 'static>(
    store: &S,
    writers: usize,
    per_append: usize,
    tag: &str,
    running: Arc<std::sync::atomic::AtomicBool>,
) -> Result<PgAppendRow, String> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let running = running.clone();
        let streams: Vec<StreamId> = (0..STREAMS_PER_WRITER)
            .map(|k| sid(format!("account-{tag}w{writers}x{w}s{k}")))
            .collect::<Result<_, _>>()?;
        tasks.push(tokio::spawn(async move {
            let mut versions: Vec<Option<u64>> = vec![None; STREAMS_PER_WRITER];
            let mut lat = Vec::new();
            let mut i = 0usize;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let k = i % STREAMS_PER_WRITER;
                let expected =
                    versions[k].map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                let events = (0..per_append as u64)
                    .map(|j| event(i as u64 + j))
                    .collect();
                let t = Instant::now();
                let r = store
                    .append(&streams[k], expected, events)
                    .await
                    .map_err(|e| format!("strata append: {e}"))?;
                lat.push(t.elapsed().as_micros() as u64);
                versions[k] = Some(r.stream_version);
                i += 1;
            }
            Ok::<_, String>(lat)
        }));
    }
    finish("strata", writers, per_append, start, tasks).await
}

async fn finish(
    system: &'static str,
    writers: usize,
    per_append: usize,
    start: Instant,
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<u64>, String>>>,
) -> Result<PgAppendRow, String> {
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.map_err(|e| e.to_string())??);
    }
    let elapsed = start.elapsed();
    lat.sort_unstable();
    Ok(PgAppendRow {
        system,
        writers,
        events_per_append: per_append,
        appends: lat.len() as u64,
        elapsed,
        latency_us_p50: percentile(&lat, 0.5),
        latency_us_p99: percentile(&lat, 0.99),
    })
}

/// Loads `total` events with multi-event appends from 4 writers: 1,000-event appends to
/// `account-<n>` streams, `stream_events` events to `account-target` spread through the
/// load, and one append in 100 to an `audit-<n>` stream with events of type
/// [`RARE_EVENT_TYPE`] (the rare category of the filtered reads).
async fn bulk_load(
    store: &PostgresStore,
    total: u64,
    stream_events: u64,
) -> Result<Duration, String> {
    const PER_APPEND: u64 = 1_000;
    const WRITERS: u64 = 4;
    let appends = total / PER_APPEND;
    let target_appends = stream_events / PER_APPEND;
    let every = (appends / target_appends.max(1)).max(1);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let target = Arc::new(tokio::sync::Mutex::new(None::<u64>));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let (store, next, target) = (store.clone(), next.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= appends {
                    return Ok::<_, String>(());
                }
                let events: Vec<EventData> =
                    (0..PER_APPEND).map(|j| event(n * PER_APPEND + j)).collect();
                if n % every == 0 && n / every < target_appends {
                    // The target stream's appends are serialised so its versions stay in order.
                    let mut version = target.lock().await;
                    let expected =
                        version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                    let r = store
                        .append(&sid("account-target".to_owned())?, expected, events)
                        .await
                        .map_err(|e| format!("bulk load: {e}"))?;
                    *version = Some(r.stream_version);
                } else if is_rare(n) {
                    let events = events
                        .into_iter()
                        .map(|mut e| {
                            e.event_type = RARE_EVENT_TYPE.to_owned();
                            e
                        })
                        .collect();
                    store
                        .append(
                            &sid(format!("{RARE_CATEGORY}-{n}"))?,
                            ExpectedVersion::NoStream,
                            events,
                        )
                        .await
                        .map_err(|e| format!("bulk load: {e}"))?;
                } else {
                    store
                        .append(
                            &sid(format!("account-{n}"))?,
                            ExpectedVersion::NoStream,
                            events,
                        )
                        .await
                        .map_err(|e| format!("bulk load: {e}"))?;
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(start.elapsed())
}

/// Whether the bulk load's append `n` goes to the rare category (unless it is the target
/// stream's).
fn is_rare(n: u64) -> bool {
    n % 100 == 1
}

/// How many rare events [`bulk_load`] writes.
fn rare_events(total: u64, stream_events: u64) -> u64 {
    let appends = total / 1_000;
    let target_appends = stream_events / 1_000;
    let every = (appends / target_appends.max(1)).max(1);
    (0..appends)
        .filter(|&n| is_rare(n) && !(n % every == 0 && n / every < target_appends))
        .count() as u64
        * 1_000
}

/// Runs every PostgreSQL benchmark against `database_url` and returns what it measured.
pub async fn run(database_url: &str, scale: PgBenchScale) -> Result<PgBenchReport, String> {
    // The baseline's pool is tuned like the store's: no ping before every acquire.
    let admin = PgPoolOptions::new()
        .max_connections(4)
        .test_before_acquire(false)
        .connect(database_url)
        .await
        .map_err(|e| format!("connecting to {database_url}: {e}"))?;
    let server: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&admin)
        .await
        .map_err(|e| e.to_string())?;
    let server = server.split(" on ").next().unwrap_or(&server).to_owned();
    for schema in ["bench_pg_naive", "bench_pg_append", "bench_pg_store"] {
        reset_schema(&admin, schema).await?;
    }
    admin
        .execute(
            format!(
                "CREATE SCHEMA bench_pg_naive; SET search_path TO bench_pg_naive; {NAIVE_SCHEMA} \
                 RESET search_path;"
            )
            .as_str(),
        )
        .await
        .map_err(|e| format!("creating the naive schema: {e}"))?;
    // STRATA_BENCH_PG_WRITERS (append writer tasks) and STRATA_BENCH_PG_NOTIFY=0 tune the store
    // for experiments; the defaults are the store's own.
    let writers_env = std::env::var("STRATA_BENCH_PG_WRITERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let notify_env = std::env::var("STRATA_BENCH_PG_NOTIFY").map_or(true, |v| v != "0");
    let connect = |schema: &str| {
        let mut options = PgStoreOptions::new(database_url)
            .with_schema(schema)
            .with_max_connections(20)
            .with_notify(notify_env);
        if let Some(w) = writers_env {
            options = options.with_append_writers(w);
        }
        PostgresStore::connect_with(options)
    };
    let store = connect("bench_pg_append")
        .await
        .map_err(|e| e.to_string())?;
    let secs = scale.append_secs();
    let mut appends = Vec::new();
    // STRATA_BENCH_PG_READS_ONLY=1 skips the append rows (for working on the read path).
    let reads_only = std::env::var_os("STRATA_BENCH_PG_READS_ONLY").is_some();
    // Interleave the systems so that load from elsewhere on the machine hits them alike.
    let mut pgbench_missing = false;
    for writers in [1usize, 4, 16, 64] {
        if reads_only {
            break;
        }
        let (mut naive, mut pgbench, mut strata) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..scale.append_rounds() {
            naive.push(naive_rows(database_url, writers, secs).await?);
            let url = database_url.to_owned();
            let row = tokio::task::spawn_blocking(move || pgbench_row(&url, writers, 1, secs))
                .await
                .map_err(|e| e.to_string())?;
            match row {
                Ok(Some(row)) => pgbench.push(row),
                Ok(None) => pgbench_missing = true,
                // Too few free connections for 64 clients, say: the other rows still count.
                Err(e) => eprintln!("pgbench row with {writers} writers left out: {e}"),
            }
            strata.push(strata_rows(&store, writers, 1, secs, &format!("single{round}")).await?);
        }
        appends.push(median_row(naive)?);
        if !pgbench.is_empty() {
            appends.push(median_row(pgbench)?);
        }
        appends.push(median_row(strata)?);
    }
    if pgbench_missing {
        eprintln!("pgbench is not installed: its baseline rows are left out");
    }
    if !reads_only {
        // 8 writers, as in the embedded store's benchmark, beside pgbench's 100-row INSERT.
        let (mut pgbench, mut rounds) = (Vec::new(), Vec::new());
        for round in 0..scale.append_rounds() {
            let url = database_url.to_owned();
            let row = tokio::task::spawn_blocking(move || pgbench_row(&url, 8, 100, secs))
                .await
                .map_err(|e| e.to_string())?;
            match row {
                Ok(Some(row)) => pgbench.push(row),
                Ok(None) => {}
                Err(e) => eprintln!("pgbench row with 100-row INSERTs left out: {e}"),
            }
            rounds.push(strata_rows(&store, 8, 100, secs, &format!("hundred{round}")).await?);
        }
        if !pgbench.is_empty() {
            appends.push(median_row(pgbench)?);
        }
        appends.push(median_row(rounds)?);
    }
    let (transactions, answered) = store.append_stats();
    if std::env::var_os("STRATA_BENCH_PG_VERBOSE").is_some() {
        eprintln!("append transactions {transactions}, appends {answered}");
    }
    drop(store);

    let store = connect("bench_pg_store").await.map_err(|e| e.to_string())?;
    let total = scale.store_events();
    let stream_events = scale.stream_events();
    let load_elapsed = bulk_load(&store, total, stream_events).await?;
    admin
        .execute("VACUUM ANALYZE bench_pg_store.events")
        .await
        .map_err(|e| format!("vacuum: {e}"))?;

    let target = sid("account-target".to_owned())?;
    let mut reads = Vec::new();
    for _ in 0..11 {
        let t = Instant::now();
        let events = store
            .read_stream(
                &target,
                ReadStreamOptions::forward().limit(stream_events as usize),
            )
            .await
            .map_err(|e| e.to_string())?;
        reads.push(t.elapsed());
        if events.len() as u64 != stream_events {
            return Err(format!("read {} events of the target stream", events.len()));
        }
    }
    reads.sort();
    let stream_read = reads[reads.len() / 2];

    let mut catch_up_runs = Vec::new();
    for _ in 0..scale.append_rounds() {
        catch_up_runs.push(catch_up(&store, total).await?);
    }
    let mut sorted = catch_up_runs.clone();
    sorted.sort();
    let catch_up = sorted[sorted.len() / 2];

    let t = Instant::now();
    let mut from = None;
    let mut read = 0u64;
    loop {
        let mut o = ReadAllOptions::forward().limit(10_000);
        if let Some(f) = from {
            o = o.from(f);
        }
        let page = store.read_all(o).await.map_err(|e| e.to_string())?;
        read += page.events.len() as u64;
        from = page.next;
        if page.is_end {
            break;
        }
    }
    let read_all = t.elapsed();
    if read != total {
        return Err(format!(
            "read_all returned {read} events, {total} were loaded"
        ));
    }

    let rare = rare_events(total, stream_events);
    let read_all_paged = paged_read(&store, Filter::default()).await?;
    if read_all_paged.events != total {
        return Err(format!(
            "paged read_all returned {} events, {total} were loaded",
            read_all_paged.events
        ));
    }
    let filtered_category =
        paged_read(&store, Filter::default().categories([RARE_CATEGORY])).await?;
    let filtered_type =
        paged_read(&store, Filter::default().event_types([RARE_EVENT_TYPE])).await?;
    for r in [&filtered_category, &filtered_type] {
        if r.events != rare {
            return Err(format!(
                "a filtered read returned {} events, {rare} rare events were loaded",
                r.events
            ));
        }
    }
    let mut lists = Vec::new();
    for _ in 0..11 {
        let t = Instant::now();
        let page = store
            .list_categories(ListOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        lists.push(t.elapsed());
        if page.items.len() != 2 {
            return Err(format!("list_categories returned {:?}", page.items));
        }
    }
    lists.sort();
    let list_categories = lists[lists.len() / 2];

    drop(store);
    for schema in ["bench_pg_naive", "bench_pg_append", "bench_pg_store"] {
        reset_schema(&admin, schema).await?;
    }
    Ok(PgBenchReport {
        server,
        appends,
        store_events: total,
        load_elapsed,
        stream_events,
        stream_read,
        catch_up,
        catch_up_runs,
        read_all,
        read_all_paged,
        filtered_category,
        filtered_type,
        list_categories,
    })
}

/// How long a catch-up subscription over `$all` takes to deliver its first `events` events.
pub async fn catch_up(store: &PostgresStore, events: u64) -> Result<Duration, String> {
    let t = Instant::now();
    let mut sub = store
        .subscribe(
            SubscriptionTarget::All(Default::default()),
            SubscribeFrom::Start,
        )
        .await
        .map_err(|e| e.to_string())?;
    for _ in 0..events {
        std::hint::black_box(sub.next().await.map_err(|e| e.to_string())?);
    }
    Ok(t.elapsed())
}

/// Reads `$all` with `filter` from the start to the end in pages of [`FILTER_PAGE`] events.
pub async fn paged_read(store: &PostgresStore, filter: Filter) -> Result<PgPagedRead, String> {
    let t = Instant::now();
    let mut from = None;
    let (mut events, mut pages) = (0u64, 0u64);
    loop {
        let mut o = ReadAllOptions::forward()
            .limit(FILTER_PAGE)
            .filter(filter.clone());
        if let Some(f) = from {
            o = o.from(f);
        }
        let page = store.read_all(o).await.map_err(|e| e.to_string())?;
        pages += 1;
        for e in &page.events {
            if !filter.matches(e) {
                return Err(format!("a filtered read returned {e:?}"));
            }
        }
        events += page.events.len() as u64;
        from = page.next;
        if page.is_end {
            break;
        }
    }
    Ok(PgPagedRead {
        events,
        pages,
        elapsed: t.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_pgbench;

    const REPORT: &str = "pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: /tmp/naive.sql
scaling factor: 1
query mode: prepared
number of clients: 1
number of threads: 1
maximum number of tries: 1
duration: 2 s
number of transactions actually processed: 583
number of failed transactions: 0 (0.000%)
latency average = 3.424 ms
initial connection time = 13.118 ms
tps = 292.055928 (without initial connection time)
";

    #[test]
    fn pgbench_report_gives_count_latency_and_rate() {
        assert_eq!(parse_pgbench(REPORT), Some((583, 3.424, 292.055928)));
        let failed = REPORT.replace(
            "failed transactions: 0 (0.000%)",
            "failed transactions: 2 (0.343%)",
        );
        assert_eq!(
            parse_pgbench(&failed),
            None,
            "failures make the row invalid"
        );
        let no_rate = REPORT.replace("tps = ", "rate: ");
        assert_eq!(parse_pgbench(&no_rate), None);
    }
}
