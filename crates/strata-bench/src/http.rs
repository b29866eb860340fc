//! Benchmarks of the HTTP server (`strata-bench --http`, or `strata-bench --server URL` against
//! a running server): appends/s and latency over HTTP with 1, 16 and 64 connections, delivery
//! latency of server-sent events to 100 subscribers of `$all` at 10,000 events/s, and, in the
//! same run, the in-process embedded append throughput with 64 writers that the HTTP numbers are
//! compared with.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_client::Client;
use strata_core::{EventData, ExpectedVersion};
use strata_log::LogStore;

use crate::log::{append_bench, AppendRow};
use crate::measure::{histogram, Latency, Throughput};
use crate::Scale;

/// Which server to measure.
#[derive(Debug, Clone)]
pub enum Target {
    /// A server started in this process on loopback, on the embedded store in the bench dir.
    InProcess,
    /// A running server.
    Server {
        /// Its base URL.
        url: String,
        /// A token with write and subscribe rights on `bench-` streams and `$all`.
        token: Option<String>,
    },
}

/// HTTP appends with one number of connections.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HttpAppendRow {
    /// Concurrent connections, one append in flight on each.
    pub connections: usize,
    /// Appends (one event each).
    pub throughput: Throughput,
    /// Time from sending the request to the answer.
    pub latency: Latency,
    /// Requests that failed.
    pub errors: u64,
    /// This process's CPU time (user + system) over the row, per request answered, in
    /// microseconds: load generator and server together when the server is in-process.
    pub cpu_us_per_request: f64,
}

/// Batch appends over HTTP (`POST /streams`) with one shape of batch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HttpBatchRow {
    /// Concurrent connections, one batch in flight on each.
    pub connections: usize,
    /// Appends in each request, each to its own stream.
    pub appends_per_request: usize,
    /// Events in each append.
    pub events_per_append: usize,
    /// Requests (ops) and events written.
    pub throughput: Throughput,
    /// Time from sending a request to its answer.
    pub latency: Latency,
    /// Requests that failed, or appends in them that did.
    pub errors: u64,
    /// This process's CPU time (user + system) over the row, per event written, in
    /// microseconds: load generator and server together when the server is in-process.
    pub cpu_us_per_event: f64,
}

/// Delivery of live events to SSE subscribers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryRow {
    /// Subscribers of `$all`.
    pub subscribers: usize,
    /// The append rate aimed at, events/s.
    pub target_events_per_sec: u64,
    /// Events appended (each delivered to every subscriber).
    pub events: u64,
    /// The append rate reached.
    pub events_per_sec: f64,
    /// From the start of the append request to one subscriber's receipt, over every
    /// (event, subscriber) pair.
    pub latency: Latency,
    /// From the start of the append request until the last of the subscribers has the event.
    pub latency_all: Latency,
    /// Deliveries missing when the run ended (should be 0).
    pub missing: u64,
}

/// Everything one HTTP run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HttpBenchReport {
    /// Where the server was.
    pub server: String,
    /// In-process appends with 64 writers on the embedded store, measured in this run.
    pub in_process: AppendRow,
    /// HTTP appends.
    pub http: Vec<HttpAppendRow>,
    /// HTTP batch appends, 100 events per request in two shapes.
    pub batch: Vec<HttpBatchRow>,
    /// The same requests, with 64 connections, to a server on the same stack whose handler
    /// only reads the body and answers (no store): what any HTTP API can reach on this
    /// machine with this load generator. `None` against a running server.
    pub transport_floor: Option<HttpAppendRow>,
    /// SSE delivery.
    pub delivery: DeliveryRow,
}

/// A client of `url`, with `token` when given.
fn client(url: &str, token: &Option<String>) -> Result<Client, String> {
    let mut b = Client::builder(url);
    if let Some(t) = token {
        b = b.token(t);
    }
    b.build().map_err(|e| with_causes(&e))
}

/// `e` and its causes, joined by `": "`, for the benchmark's error messages.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

fn ev(i: u64) -> EventData {
    EventData::json(
        "MoneyDeposited",
        &serde_json::json!({ "amount": i % 1000, "currency": "EUR", "note": "x".repeat(40) }),
    )
    .unwrap_or_else(|_| unreachable!("a JSON literal serializes"))
}

async fn http_appends(
    url: &str,
    token: &Option<String>,
    connections: usize,
    secs: f64,
) -> Result<HttpAppendRow, String> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let cpu_start = crate::cpu::process_cpu_time();
    let mut tasks = Vec::new();
    // Plain HTTP goes through the lean generator (see [`crate::lean`]); HTTPS through the
    // full client.
    if let Some(ep) = crate::lean::Endpoint::parse(url) {
        for c in 0..connections {
            let stream = format!("bench-http{connections}-{c}");
            // A random id base per connection; each request adds its sequence number.
            let id_base = strata_core::Uuid::new_v4().as_u128() & !u128::from(u64::MAX);
            tasks.push(tokio::spawn(crate::lean::append_loop(
                ep.clone(),
                token.clone(),
                stream,
                id_base,
                deadline,
                u64::MAX,
            )));
        }
    } else {
        for c in 0..connections {
            // One client per connection, so each task really has its own connection.
            let client = client(url, token)?;
            tasks.push(tokio::spawn(async move {
                let stream = format!("bench-http{connections}-{c}");
                let mut h = histogram();
                let (mut ops, mut errors) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match client
                        .append_raw(&stream, ExpectedVersion::Any, &[ev(ops)])
                        .await
                    {
                        Ok(_) => {
                            let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                            ops += 1;
                        }
                        Err(_) => errors += 1,
                    }
                }
                (h, ops, errors)
            }));
        }
    }
    let mut all = histogram();
    let (mut ops, mut errors) = (0, 0);
    for t in tasks {
        let (h, o, e) = t.await.map_err(|e| e.to_string())?;
        let _ = all.add(&h);
        ops += o;
        errors += e;
    }
    let cpu = crate::cpu::process_cpu_time().saturating_sub(cpu_start);
    Ok(HttpAppendRow {
        connections,
        throughput: Throughput::new(ops, ops, start.elapsed()),
        latency: Latency::from_histogram(&all),
        errors,
        cpu_us_per_request: cpu.as_secs_f64() * 1e6 / ops.max(1) as f64,
    })
}

/// Batch appends of `appends` appends of `events` events each (every append to its own
/// stream of this connection), with `connections` connections, through the full client.
async fn http_batch_appends(
    url: &str,
    token: &Option<String>,
    connections: usize,
    appends: usize,
    events: usize,
    secs: f64,
) -> Result<HttpBatchRow, String> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let cpu_start = crate::cpu::process_cpu_time();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let client = client(url, token)?;
        tasks.push(tokio::spawn(async move {
            let streams: Vec<String> = (0..appends)
                .map(|a| format!("bench-batch{appends}x{events}-{c}-{a}"))
                .collect();
            let payload: Vec<EventData> = (0..events as u64).map(ev).collect();
            let batch: Vec<(&str, ExpectedVersion, &[EventData])> = streams
                .iter()
                .map(|s| (s.as_str(), ExpectedVersion::Any, payload.as_slice()))
                .collect();
            let mut h = histogram();
            let (mut requests, mut written, mut errors) = (0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.append_batch_raw(&batch).await {
                    Ok(answer) => {
                        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                        requests += 1;
                        for r in &answer.results {
                            match r {
                                strata_wire::BatchResult::Appended(a) => {
                                    written += a.positions.len() as u64;
                                }
                                _ => errors += 1,
                            }
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (h, requests, written, errors)
        }));
    }
    let mut all = histogram();
    let (mut requests, mut written, mut errors) = (0, 0, 0);
    for t in tasks {
        let (h, r, w, e) = t.await.map_err(|e| e.to_string())?;
        let _ = all.add(&h);
        requests += r;
        written += w;
        errors += e;
    }
    let cpu = crate::cpu::process_cpu_time().saturating_sub(cpu_start);
    Ok(HttpBatchRow {
        connections,
        appends_per_request: appends,
        events_per_append: events,
        throughput: Throughput::new(requests, written, start.elapsed()),
        latency: Latency::from_histogram(&all),
        errors,
        cpu_us_per_event: cpu.as_secs_f64() * 1e6 / written.max(1) as f64,
    })
}

/// Finds the `"sentUs":N` and `"seq":N` marks the delivery benchmark puts in each event, in
/// raw SSE bytes, without parsing the stream: the load generator shares the machine with the
/// server, so it must cost as little as it can. Returns the marks found and how many bytes of
/// `buf` were consumed (a mark cut by the end of the buffer waits for the next chunk).
fn scan_marks(buf: &[u8], sent: &memchr::memmem::Finder<'_>, out: &mut Vec<(u64, u64)>) -> usize {
    let num = |b: &[u8]| -> Option<(u64, usize)> {
        let end = b.iter().position(|c| !c.is_ascii_digit())?;
        let mut n = 0u64;
        for c in &b[..end] {
            n = n * 10 + u64::from(c - b'0');
        }
        Some((n, end))
    };
    let mut at = 0;
    while let Some(i) = sent.find(&buf[at..]) {
        let start = at + i;
        let p = start + 9;
        let Some((sent_us, len)) = num(&buf[p..]) else {
            return start;
        };
        // `,"seq":` follows directly.
        let q = p + len + 7;
        if buf.len() <= q {
            return start;
        }
        let Some((seq, len2)) = num(&buf[q..]) else {
            return start;
        };
        out.push((sent_us, seq));
        at = q + len2;
    }
    // Keep a possible partial mark at the end.
    buf.len().saturating_sub(8).max(at)
}

/// The marks in one event's data (for tests and the text form).
#[cfg(test)]
fn parse_marks(data: &str) -> Option<(u64, u64)> {
    let f = memchr::memmem::Finder::new(b"\"sentUs\":");
    let mut out = Vec::new();
    scan_marks(format!("{data} ").as_bytes(), &f, &mut out);
    out.first().copied()
}

async fn delivery(
    url: &str,
    token: &Option<String>,
    subscribers: usize,
    rate: u64,
    secs: f64,
) -> Result<DeliveryRow, String> {
    let run = now_us();
    let total = (rate as f64 * secs) as u64;
    let writers = 20u64;
    let tick = Duration::from_millis(10);
    let per_append = (rate * tick.as_millis() as u64 / 1000 / writers).max(1);
    let total = total / (writers * per_append) * (writers * per_append);
    let all_done: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    // Subscribers first, from now, each on its own connection.
    let mut subs = Vec::new();
    for _ in 0..subscribers {
        let client = client(url, token)?;
        let mut stream = client
            .sse(
                &format!("/subscriptions/all?from=end&prefix=bench-live-{run}"),
                None,
            )
            .await
            .map_err(|e| format!("subscribing: {}", with_causes(&e)))?;
        let all_done = all_done.clone();
        subs.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut got = 0u64;
            let finder = memchr::memmem::Finder::new(b"\"sentUs\":");
            let mut buf: Vec<u8> = Vec::new();
            let mut marks = Vec::new();
            let deadline = Instant::now() + Duration::from_secs_f64(secs + 30.0);
            while got < total && Instant::now() < deadline {
                let next = tokio::time::timeout(Duration::from_secs(10), stream.next_chunk()).await;
                let Ok(Ok(Some(chunk))) = next else { break };
                buf.extend_from_slice(&chunk);
                let used = scan_marks(&buf, &finder, &mut marks);
                buf.drain(..used);
                if marks.is_empty() {
                    continue;
                }
                let now = now_us();
                for (sent, seq) in marks.drain(..) {
                    let _ = h.record(now.saturating_sub(sent).max(1));
                    if let Some(slot) = all_done.get(seq as usize) {
                        slot.fetch_max(now, Ordering::Relaxed);
                    }
                    got += 1;
                }
            }
            (h, got)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Writers: `writers` tasks, each appending `per_append` events every tick.
    let start = Instant::now();
    let mut ws = Vec::new();
    for w in 0..writers {
        let client = client(url, token)?;
        let sent_at = sent_at.clone();
        ws.push(tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            let stream = format!("bench-live-{run}-{w}");
            let mut seq = w * per_append;
            while seq < total {
                interval.tick().await;
                let sent = now_us();
                let events: Vec<EventData> = (seq..seq + per_append)
                    .map(|s| {
                        sent_at[s as usize].store(sent, Ordering::Relaxed);
                        EventData::json(
                            "Tick",
                            &serde_json::json!({ "sentUs": sent, "seq": s, "pad": "x".repeat(40) }),
                        )
                        .unwrap_or_else(|_| unreachable!("a JSON literal serializes"))
                    })
                    .collect();
                if let Err(e) = client
                    .append_raw(&stream, ExpectedVersion::Any, &events)
                    .await
                {
                    return Err(format!("append: {}", with_causes(&e)));
                }
                seq += writers * per_append;
            }
            Ok(())
        }));
    }
    for w in ws {
        w.await.map_err(|e| e.to_string())??;
    }
    let elapsed = start.elapsed();
    let mut all = histogram();
    let mut delivered = 0;
    for s in subs {
        let (h, got) = s.await.map_err(|e| e.to_string())?;
        let _ = all.add(&h);
        delivered += got;
    }
    let mut last = histogram();
    for (done, sent) in all_done.iter().zip(sent_at.iter()) {
        let (d, s) = (done.load(Ordering::Relaxed), sent.load(Ordering::Relaxed));
        if d > 0 && s > 0 {
            let _ = last.record(d.saturating_sub(s).max(1));
        }
    }
    Ok(DeliveryRow {
        subscribers,
        target_events_per_sec: rate,
        events: total,
        events_per_sec: total as f64 / elapsed.as_secs_f64(),
        latency: Latency::from_histogram(&all),
        latency_all: Latency::from_histogram(&last),
        missing: (total * subscribers as u64).saturating_sub(delivered),
    })
}

/// Runs the HTTP benchmarks; the stores live in `dir`.
pub async fn run(dir: &Path, target: Target, scale: Scale) -> Result<HttpBenchReport, String> {
    let _ = std::fs::remove_dir_all(dir);
    let secs = scale.append_secs();
    let delivery_secs = match scale {
        Scale::Full => 5.0,
        Scale::Quick => 1.0,
    };
    // The in-process comparison, on its own store in the same directory (same disk).
    let in_process = {
        let store = LogStore::open(dir.join("in-process")).map_err(|e| e.to_string())?;
        let row = append_bench(&store, 64, 1, secs).await?;
        store.close().await.map_err(|e| e.to_string())?;
        row
    };
    let mut served: Option<Arc<LogStore>> = None;
    let (url, token, server_task, label) = match target {
        Target::Server { url, token } => (url.clone(), token, None, url),
        Target::InProcess => {
            let store = Arc::new(LogStore::open(dir.join("served")).map_err(|e| e.to_string())?);
            served = Some(store.clone());
            let state = strata_server::AppState::new(store, strata_server::ServerConfig::default())
                .map_err(|e| e.to_string())?;
            let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(strata_server::serve(
                listener,
                state.clone(),
                strata_server::app(state),
                None,
                async move {
                    let _ = stopped.await;
                },
            ));
            (
                format!("http://{addr}"),
                None,
                Some((stop, task)),
                format!("in-process server on http://{addr}, embedded store"),
            )
        }
    };
    let mut http = Vec::new();
    for connections in [1, 16, 64] {
        http.push(http_appends(&url, &token, connections, secs).await?);
    }
    // 100 events per request: ten streams of ten events, and a hundred single events.
    let mut batch = Vec::new();
    for (appends, events) in [(10, 10), (100, 1)] {
        batch.push(http_batch_appends(&url, &token, 16, appends, events, secs).await?);
    }
    let delivery = delivery(&url, &token, 100, 10_000, delivery_secs).await?;
    // Last, so that nothing it leaves behind touches the rows above.
    let transport_floor = match server_task {
        Some(_) => Some(transport_floor(64, secs).await?),
        None => None,
    };
    if let Some((stop, task)) = server_task {
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    if let Some(store) = served {
        // Close the served store before the caller removes its directory: the server's last
        // tasks may still hold clones, and close ends the store for all of them.
        store
            .as_ref()
            .clone()
            .close()
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(HttpBenchReport {
        server: label,
        in_process,
        http,
        batch,
        transport_floor,
        delivery,
    })
}

/// Appends with `connections` connections to a server built like Strata's (the same `serve`,
/// so the same HTTP stack and socket options) whose `POST /streams/{stream}` reads the whole
/// body and answers `200` with an append's answer at once, touching no store.
async fn transport_floor(connections: usize, secs: f64) -> Result<HttpAppendRow, String> {
    let router = axum::Router::new().route(
        "/streams/{stream}",
        axum::routing::post(|body: axum::body::Bytes| async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                format!(
                    r#"{{"positions":[{}],"streamId":"bench","version":{}}}"#,
                    1_000_000 + body.len(),
                    body.len()
                ),
            )
        }),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    // `serve` takes its connection limits from a state; the router never touches its store.
    let dir = std::env::temp_dir().join(format!("strata-floor-{}", std::process::id()));
    let store = LogStore::open(&dir).map_err(|e| e.to_string())?;
    let state = strata_server::AppState::new(
        Arc::new(store.clone()),
        strata_server::ServerConfig::default(),
    )
    .map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(strata_server::serve(
        listener,
        state,
        router,
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    let row = http_appends(&url, &None, connections, secs).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    // Closed before its directory goes: a drop in async code leaves the writer finishing.
    store.close().await.map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    row
}

impl fmt::Display for HttpBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = self.in_process.throughput.ops_per_sec();
        writeln!(f, "HTTP server ({})", self.server)?;
        writeln!(
            f,
            "  in-process, 64 writers, 1 event/append: {base:.0} appends/s, {}",
            self.in_process.latency
        )?;
        writeln!(
            f,
            "  {:<28} {:>12} {:>14} {:>8}  latency",
            "HTTP append, 1 event", "appends/s", "of in-process", "CPU/req"
        )?;
        // One row: label, rate, its share of the in-process rate, CPU, latency, errors.
        let row = |f: &mut fmt::Formatter<'_>,
                   label: String,
                   rate: f64,
                   cpu_us: f64,
                   latency: &Latency,
                   errors: u64| {
            writeln!(
                f,
                "  {label:<28} {rate:>12.0} {:>13.0}% {cpu_us:>5.1} µs  {latency}{}",
                100.0 * rate / base.max(1e-9),
                if errors > 0 {
                    format!(" ({errors} errors)")
                } else {
                    String::new()
                }
            )
        };
        for r in &self.http {
            let label = format!("{} connection(s)", r.connections);
            let rate = r.throughput.ops_per_sec();
            row(f, label, rate, r.cpu_us_per_request, &r.latency, r.errors)?;
        }
        if let Some(r) = &self.transport_floor {
            let rate = r.throughput.ops_per_sec();
            let label = format!("no store, {} connection(s)", r.connections);
            row(f, label, rate, r.cpu_us_per_request, &r.latency, r.errors)?;
            writeln!(
                f,
                "    (the same server stack answering at once, touching no store: the HTTP ceiling on this machine; Strata with 64 connections reached {:.0}% of it)",
                100.0 * self.http.last().map_or(0.0, |h| h.throughput.ops_per_sec()) / rate.max(1e-9),
            )?;
        }
        writeln!(
            f,
            "  {:<28} {:>12} {:>14} {:>8}  latency per request",
            "HTTP batch, 100 events/req", "events/s", "of in-process", "CPU/ev"
        )?;
        for r in &self.batch {
            let label = format!(
                "{} x {} ev, {} conn",
                r.appends_per_request, r.events_per_append, r.connections
            );
            let rate = r.throughput.events_per_sec();
            row(f, label, rate, r.cpu_us_per_event, &r.latency, r.errors)?;
        }
        let d = &self.delivery;
        writeln!(
            f,
            "  SSE: {} subscribers of $all, {} events at {:.0} events/s (target {}):",
            d.subscribers, d.events, d.events_per_sec, d.target_events_per_sec
        )?;
        writeln!(
            f,
            "    append start to each subscriber:      {}, max {:.2} ms",
            d.latency,
            d.latency.max_us as f64 / 1000.0
        )?;
        writeln!(
            f,
            "    append start to the last subscriber:  {}, max {:.2} ms",
            d.latency_all,
            d.latency_all.max_us as f64 / 1000.0
        )?;
        writeln!(f, "    missing deliveries: {}", d.missing)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn marks() {
        assert_eq!(
            super::parse_marks(r#"{"sentUs":123,"seq":7,"pad":"x"}"#),
            Some((123, 7))
        );
    }
}
