//! A client of the HTTP API, used by `strata --server URL` and the HTTP benchmarks.
//!
//! [`Client`] implements [`EventStore`], so code written against the trait works against a
//! remote server unchanged. Reads page through the server's page limit as needed. Live
//! subscriptions go over server-sent events with [`Client::follow`]; the trait's `subscribe`
//! (which polls) is there for completeness.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::Value;
use strata_core::{
    limits, ActualVersion, AllPage, AppendError, AppendResult, CategorySummary, Direction,
    EventData, EventStore, ExpectedVersion, Filter, InvalidInput, LimitError, ListOptions, Page,
    Position, ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent, StreamId, StreamInfo,
    StreamSummary, SubscribeFrom, Subscription, SubscriptionTarget, Timestamp,
};
use tokio::sync::watch;

use strata_wire::append_body;
use strata_wire::query::encode;

fn event_from_json(v: &Value) -> Result<RecordedEvent, String> {
    strata_wire::parse_event(v.to_string().as_bytes()).map_err(|e| e.to_string())
}

/// Why a request failed before the server could answer it with a problem document.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL or a certificate could not be used.
    #[error("{0}")]
    Config(String),
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the server: {0}")]
    Transport(String),
    /// The server answered with an error document.
    #[error("{status} {code}: {detail}")]
    Problem {
        /// HTTP status.
        status: u16,
        /// The problem's `code`.
        code: String,
        /// The problem's `detail`.
        detail: String,
        /// The whole document.
        doc: Value,
    },
    /// The server answered something this client does not understand.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

/// An HTTP client of a Strata server. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    changes: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

impl Client {
    /// A client of the server at `base_url` (`http://127.0.0.1:2113`), with an optional API
    /// token and, for `https` with a private CA, the CA certificate (PEM) to trust.
    pub fn new(
        base_url: &str,
        token: Option<String>,
        ca_cert: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "the server URL must start with http:// or https://, not {base_url:?}"
            )));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(256);
        if let Some(ca) = ca_cert {
            let pem = std::fs::read(ca)
                .map_err(|e| ClientError::Config(format!("reading {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ClientError::Config(format!("{}: {e}", ca.display())))?;
            b = b.add_root_certificate(cert);
        }
        let http = b
            .build()
            .map_err(|e| ClientError::Config(format!("building the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token,
            changes: Arc::new(watch::channel(0).0),
        })
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn answer(res: Result<reqwest::Response, reqwest::Error>) -> Result<Value, ClientError> {
        let res = res.map_err(|e| ClientError::Transport(error_chain(&e)))?;
        let status = res.status();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(error_chain(&e)))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Protocol(format!("{e}: {}", String::from_utf8_lossy(&bytes)))
            });
        }
        problem(status.as_u16(), &bytes)
    }

    /// `GET path` (with query) as JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        Self::answer(self.request(reqwest::Method::GET, path).send().await).await
    }

    /// `POST path` with an empty body, as JSON (the projection operations).
    pub async fn post_json(&self, path: &str) -> Result<Value, ClientError> {
        Self::answer(self.request(reqwest::Method::POST, path).send().await).await
    }

    /// Appends over HTTP; the answer as the server gave it.
    pub async fn append_raw(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<Value, ClientError> {
        let body = append_body(expected, events);
        Self::answer(
            self.request(
                reqwest::Method::POST,
                &format!("/streams/{}", encode(stream)),
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await,
        )
        .await
    }

    /// Opens a server-sent-event subscription at `path` (such as `/subscriptions/all?from=start`),
    /// resuming after `last_event_id` when given.
    pub async fn sse(
        &self,
        path: &str,
        last_event_id: Option<u64>,
    ) -> Result<SseStream, ClientError> {
        let mut r = self
            .request(reqwest::Method::GET, path)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            r = r.header("last-event-id", id.to_string());
        }
        let res = r
            .send()
            .await
            .map_err(|e| ClientError::Transport(error_chain(&e)))?;
        let status = res.status();
        if !status.is_success() {
            let bytes = res.bytes().await.unwrap_or_default();
            return problem::<SseStream>(status.as_u16(), &bytes);
        }
        Ok(SseStream {
            body: Box::pin(res.bytes_stream()),
            buf: Vec::new(),
            start: 0,
        })
    }

    /// Follows `path` as events, reconnecting with `Last-Event-ID` after a dropped connection or
    /// a `lagged` notice, so the caller sees each event once, in order. `after` is where to
    /// start (the last id already seen).
    pub fn follow(&self, path: String, after: Option<u64>) -> Follow {
        Follow {
            client: self.clone(),
            path,
            last_id: after,
            stream: None,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn problem<T>(status: u16, bytes: &[u8]) -> Result<T, ClientError> {
    let doc: Value = serde_json::from_slice(bytes).unwrap_or_else(
        |_| serde_json::json!({ "detail": String::from_utf8_lossy(bytes), "code": "unknown" }),
    );
    Err(ClientError::Problem {
        status,
        code: doc["code"].as_str().unwrap_or("unknown").to_owned(),
        detail: doc["detail"].as_str().unwrap_or("").to_owned(),
        doc,
    })
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `id:` field.
    pub id: Option<String>,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

/// A server-sent-event response, parsed as it arrives.
pub struct SseStream {
    body:
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send>>,
    buf: Vec<u8>,
    /// Where the unparsed part of `buf` starts.
    start: usize,
}

impl SseStream {
    /// The next chunk of the response as it came off the connection, unparsed (for load
    /// generators that scan it themselves); `None` when the server closed the stream.
    pub async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        match self.body.next().await {
            Some(Ok(chunk)) => Ok(Some(chunk)),
            Some(Err(e)) => Err(ClientError::Transport(error_chain(&e))),
            None => Ok(None),
        }
    }

    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            if let Some(e) = self.parse_one() {
                return Ok(Some(e));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    // Drop what was parsed before growing the buffer.
                    if self.start > 0 {
                        self.buf.drain(..self.start);
                        self.start = 0;
                    }
                    self.buf.extend_from_slice(&chunk)
                }
                Some(Err(e)) => return Err(ClientError::Transport(error_chain(&e))),
                None => return Ok(None),
            }
        }
    }

    fn parse_one(&mut self) -> Option<SseEvent> {
        loop {
            // An event ends at a blank line.
            let text = &self.buf[self.start..];
            let end = find_blank_line(text)?;
            let block = String::from_utf8_lossy(&text[..end.0]);
            let mut ev = SseEvent {
                event: String::new(),
                id: None,
                data: String::new(),
            };
            let mut has_data = false;
            for line in block.split('\n') {
                let line = line.strip_suffix('\r').unwrap_or(line);
                if line.starts_with(':') {
                    continue;
                }
                let (k, v) = line.split_once(':').unwrap_or((line, ""));
                let v = v.strip_prefix(' ').unwrap_or(v);
                match k {
                    "event" => ev.event = v.to_owned(),
                    "id" => ev.id = Some(v.to_owned()),
                    "data" => {
                        if has_data {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(v);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            self.start += end.1;
            if ev.event.is_empty() {
                ev.event.push_str("message");
            }
            if has_data || ev.id.is_some() {
                return Some(ev);
            }
        }
    }
}

/// (end of the block, start of the next) of the first blank line.
fn find_blank_line(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' {
            if b.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// A subscription that reconnects by itself; see [`Client::follow`].
pub struct Follow {
    client: Client,
    path: String,
    last_id: Option<u64>,
    stream: Option<SseStream>,
}

impl Follow {
    /// The id (position or version) of the last event returned.
    pub fn last_id(&self) -> Option<u64> {
        self.last_id
    }

    /// The next event. Reconnects (with a short pause) when the connection drops or the server
    /// says the subscriber lagged; returns an error only for answers a retry cannot fix.
    pub async fn next(&mut self) -> Result<RecordedEvent, ClientError> {
        let mut failures = 0u32;
        loop {
            if self.stream.is_none() {
                match self.client.sse(&self.path, self.last_id).await {
                    Ok(s) => self.stream = Some(s),
                    Err(ClientError::Transport(e)) => {
                        failures += 1;
                        if failures > 50 {
                            return Err(ClientError::Transport(e));
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.next().await {
                Ok(Some(e)) if e.event == "event" => {
                    let v: Value = serde_json::from_str(&e.data)
                        .map_err(|err| ClientError::Protocol(err.to_string()))?;
                    let event = event_from_json(&v).map_err(ClientError::Protocol)?;
                    self.last_id = e.id.as_deref().and_then(|s| s.parse().ok());
                    return Ok(event);
                }
                Ok(Some(e)) if e.event == "error" => {
                    let doc: Value = serde_json::from_str(&e.data).unwrap_or_default();
                    return Err(ClientError::Problem {
                        status: doc["status"].as_u64().unwrap_or(500) as u16,
                        code: doc["code"].as_str().unwrap_or("unknown").to_owned(),
                        detail: doc["detail"].as_str().unwrap_or("").to_owned(),
                        doc,
                    });
                }
                // `lagged`: the server closes after it; resume from our last id.
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    self.stream = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

// --- The EventStore trait over HTTP ---

fn append_error(stream: &StreamId, expected: ExpectedVersion, e: ClientError) -> AppendError {
    match e {
        ClientError::Problem {
            code, detail, doc, ..
        } => match code.as_str() {
            "wrong_expected_version" => AppendError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual: ActualVersion(doc["actual"].as_u64()),
            },
            "event_id_conflict" => AppendError::EventIdConflict {
                event_id: doc["eventId"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_default(),
                stream: stream.clone(),
            },
            "invalid_request" => AppendError::InvalidInput(invalid(&doc, &detail)),
            "payload_too_large" => match limit(&doc) {
                Some(l) => AppendError::Limit(l),
                None => AppendError::InvalidInput(InvalidInput::new("request", detail)),
            },
            "unavailable" => AppendError::Unavailable(detail),
            _ => AppendError::Unavailable(format!("{code}: {detail}")),
        },
        ClientError::Protocol(e) => AppendError::Storage(e),
        other => AppendError::Unavailable(other.to_string()),
    }
}

fn invalid(doc: &Value, detail: &str) -> InvalidInput {
    match (doc["field"].as_str(), doc["reason"].as_str()) {
        (Some(f), Some(r)) => InvalidInput::new(f, r),
        _ => InvalidInput::new("request", detail),
    }
}

fn limit(doc: &Value) -> Option<LimitError> {
    Some(LimitError {
        what: doc["what"].as_str()?.to_owned(),
        max: doc["limit"].as_u64()?,
        actual: doc["actual"].as_u64()?,
    })
}

fn read_error(e: ClientError) -> ReadError {
    match e {
        ClientError::Problem {
            code, detail, doc, ..
        } => match code.as_str() {
            "stream_not_found" => match doc["streamId"].as_str().map(StreamId::new) {
                Some(Ok(s)) => ReadError::StreamNotFound(s),
                _ => ReadError::Unavailable(detail),
            },
            "invalid_request" => ReadError::InvalidInput(invalid(&doc, &detail)),
            "unavailable" => ReadError::Unavailable(detail),
            _ => ReadError::Unavailable(format!("{code}: {detail}")),
        },
        ClientError::Protocol(e) => ReadError::Storage(e),
        other => ReadError::Unavailable(other.to_string()),
    }
}

fn events_of(v: &Value) -> Result<Vec<RecordedEvent>, ReadError> {
    v["events"]
        .as_array()
        .ok_or_else(|| ReadError::Storage("a page without events".to_owned()))?
        .iter()
        .map(|e| event_from_json(e).map_err(ReadError::Storage))
        .collect()
}

fn dir_str(d: Direction) -> &'static str {
    match d {
        Direction::Forward => "forward",
        Direction::Backward => "backward",
    }
}

fn filter_query(f: &Filter) -> String {
    let mut q = String::new();
    for t in &f.event_types {
        q.push_str(&format!("&eventType={}", encode(t)));
    }
    for c in &f.categories {
        q.push_str(&format!("&category={}", encode(c)));
    }
    if let Some(p) = &f.stream_prefix {
        q.push_str(&format!("&prefix={}", encode(p)));
    }
    q
}

fn ts(v: &Value) -> Option<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// The server's page limit for reads this client asks for.
const PAGE: usize = limits::SERVER_PAGE_MAX_EVENTS;

#[async_trait]
impl EventStore for Client {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, AppendError> {
        let v = self
            .append_raw(stream.as_str(), expected, &events)
            .await
            .map_err(|e| append_error(stream, expected, e))?;
        let positions = v["positions"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).map(Position).collect())
            .unwrap_or_default();
        Ok(AppendResult {
            stream_version: v["version"]
                .as_u64()
                .ok_or_else(|| AppendError::Storage("an answer without version".to_owned()))?,
            positions,
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        options.validate()?;
        let mut out = Vec::new();
        let mut from = options.from_version;
        while out.len() < options.limit {
            let want = (options.limit - out.len()).min(PAGE);
            let mut path = format!(
                "/streams/{}?direction={}&limit={want}",
                encode(stream.as_str()),
                dir_str(options.direction)
            );
            if let Some(f) = from {
                path.push_str(&format!("&from={f}"));
            }
            if let Some(m) = options.max_position {
                path.push_str(&format!("&maxPosition={}", m.0));
            }
            let v = self.get_json(&path).await.map_err(read_error)?;
            let events = events_of(&v)?;
            let more = v["next"].is_string();
            from = events.last().and_then(|e| match options.direction {
                Direction::Forward => e.stream_version.checked_add(1),
                Direction::Backward => e.stream_version.checked_sub(1),
            });
            let got = events.len();
            out.extend(events);
            if !more || got == 0 || from.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<AllPage, ReadError> {
        options.validate()?;
        let mut out = Vec::new();
        let mut from = options.from;
        let mut page = AllPage {
            events: Vec::new(),
            next: options.from,
            is_end: false,
        };
        if options.limit == 0 {
            return Ok(page);
        }
        loop {
            let want = (options.limit - out.len()).clamp(1, PAGE);
            let mut path = format!(
                "/all?direction={}&limit={want}{}",
                dir_str(options.direction),
                filter_query(&options.filter)
            );
            if let Some(f) = from {
                path.push_str(&format!("&from={}", f.0));
            }
            if let Some(m) = options.max_position {
                path.push_str(&format!("&maxPosition={}", m.0));
            }
            let v = self.get_json(&path).await.map_err(read_error)?;
            out.extend(events_of(&v)?);
            page.next = v["nextPosition"].as_u64().map(Position);
            page.is_end = v["isEnd"].as_bool().unwrap_or(true);
            from = page.next;
            if page.is_end || page.next.is_none() || out.len() >= options.limit {
                break;
            }
        }
        page.events = out;
        Ok(page)
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo, ReadError> {
        let v = self
            .get_json(&format!("/streams/{}/info", encode(stream.as_str())))
            .await
            .map_err(read_error)?;
        Ok(StreamInfo {
            stream_id: stream.clone(),
            exists: v["exists"].as_bool().unwrap_or(false),
            current_version: v["currentVersion"].as_u64(),
            event_count: v["eventCount"].as_u64().unwrap_or(0),
            first_recorded_at: ts(&v["firstRecordedAt"]),
            last_recorded_at: ts(&v["lastRecordedAt"]),
            last_position: v["lastPosition"].as_u64().map(Position),
        })
    }

    async fn list_streams(&self, options: ListOptions) -> Result<Page<StreamSummary>, ReadError> {
        let v = self
            .get_json(&list_path("/streams", &options))
            .await
            .map_err(read_error)?;
        let items = v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| StreamSummary {
                        stream_id: s["streamId"].as_str().unwrap_or("").to_owned(),
                        category: s["category"].as_str().unwrap_or("").to_owned(),
                        event_count: s["eventCount"].as_u64().unwrap_or(0),
                        last_position: Position(s["lastPosition"].as_u64().unwrap_or(0)),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Page {
            items,
            next: v["nextAfter"].as_str().map(str::to_owned),
        })
    }

    async fn list_categories(
        &self,
        options: ListOptions,
    ) -> Result<Page<CategorySummary>, ReadError> {
        let v = self
            .get_json(&list_path("/categories", &options))
            .await
            .map_err(read_error)?;
        let items = v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| CategorySummary {
                        category: s["category"].as_str().unwrap_or("").to_owned(),
                        stream_count: s["streamCount"].as_u64().unwrap_or(0),
                        event_count: s["eventCount"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Page {
            items,
            next: v["nextAfter"].as_str().map(str::to_owned),
        })
    }

    async fn position_at(&self, at: Timestamp) -> Result<Option<Position>, ReadError> {
        let t = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let v = self
            .get_json(&format!("/all/position-at?time={}", encode(&t)))
            .await
            .map_err(read_error)?;
        Ok(v["position"].as_u64().map(Position))
    }

    async fn head(&self) -> Result<Option<Position>, ReadError> {
        let v = self.get_json("/all/head").await.map_err(read_error)?;
        Ok(v["head"].as_u64().map(Position))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn subscribe(
        &self,
        target: SubscriptionTarget,
        from: SubscribeFrom,
    ) -> Result<Subscription, ReadError> {
        Subscription::start(Arc::new(self.clone()), target, from).await
    }
}

fn list_path(base: &str, o: &ListOptions) -> String {
    let mut p = format!("{base}?limit={}", o.limit);
    if let Some(a) = &o.after {
        p.push_str(&format!("&after={}", encode(a)));
    }
    if let Some(x) = &o.prefix {
        p.push_str(&format!("&prefix={}", encode(x)));
    }
    p
}

/// The subscription path for a target and starting point, as `strata tail` builds it.
pub fn subscription_path(target: &SubscriptionTarget, from_start: bool) -> String {
    let from = if from_start { "start" } else { "end" };
    match target {
        SubscriptionTarget::Stream(s) => {
            format!("/subscriptions/streams/{}?from={from}", encode(s.as_str()))
        }
        SubscriptionTarget::All(f) => format!("/subscriptions/all?from={from}{}", filter_query(f)),
    }
}

/// The path of a projection's resource, `/projections/{name}`, with `name` percent-encoded;
/// append `/pause`, `/resume`, `/reset` or `/rebuild` for an operation.
pub fn projection_path(name: &str) -> String {
    format!("/projections/{}", encode(name))
}
