//! Live subscriptions as server-sent events.
//!
//! Each subscription runs in its own task: it reads from the store (catch-up, then live) and
//! hands rendered events to the connection through a bounded channel. When the channel stays
//! full for the slow-subscriber timeout, the task stops reading, the connection is sent what is
//! already buffered and then one `lagged` event whose id is the last delivered position (or
//! version), and the connection closes: the client resumes from there with `Last-Event-ID`.
//! Memory per subscriber is bounded by the channel; the store is never read ahead further.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use serde_json::json;
use strata_core::{Filter, Position, SubscribeFrom, SubscriptionTarget};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use super::all::{check_all, filter};
use super::{caller, path_param, request_id, stream_param};
use crate::auth::{forbidden, Principal};
use crate::config::Action;
use crate::error::ApiError;
use crate::hub::{sse_frame, Rendered};

/// Most bytes one write to a subscriber's connection gathers from its buffer.
const COALESCE_MAX_BYTES: usize = 256 * 1024;
use crate::query::Query;
use crate::AppState;

const PARAMS_ALL: &[&str] = &[
    "from",
    "after",
    "eventType",
    "category",
    "prefix",
    ACCESS_TOKEN,
];
const PARAMS_STREAM: &[&str] = &["from", "after", ACCESS_TOKEN];
const PARAMS_CATEGORY: &[&str] = &["from", "after", "eventType", ACCESS_TOKEN];

/// The query parameter that carries the API token for clients that cannot send headers (a
/// browser's `EventSource`), as RFC 6750 section 2.3 describes.
const ACCESS_TOKEN: &str = "access_token";

/// The caller of a subscription: the `Authorization` header, or the `access_token` parameter
/// (never both).
fn subscriber(st: &AppState, headers: &HeaderMap, q: &Query) -> Result<Arc<Principal>, ApiError> {
    let Some(token) = q.one(ACCESS_TOKEN)? else {
        return caller(st, headers);
    };
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(ApiError::invalid(
            ACCESS_TOKEN,
            "give the token in the Authorization header or in access_token, not both",
        ));
    }
    st.auth().authenticate_token(token)
}

/// Where to start, before `end` is resolved.
enum Start {
    Beginning,
    End,
    After(u64),
}

/// Where to start: `Last-Event-ID` wins over `after`, which wins over `from`; all of them are
/// checked even when another wins.
fn start(q: &Query, headers: &HeaderMap) -> Result<Start, ApiError> {
    let from = match q.one("from")? {
        None | Some("end") => Start::End,
        Some("start") => Start::Beginning,
        Some(f) => {
            return Err(ApiError::invalid(
                "from",
                format!("must be start or end (or use after=N), not {f:?}"),
            ))
        }
    };
    let after = q.u64("after")?;
    if let Some(v) = headers.get("last-event-id") {
        let s = v
            .to_str()
            .map_err(|_| ApiError::invalid("Last-Event-ID", "is not ASCII"))?
            .trim();
        if !s.is_empty() {
            return s.parse::<u64>().map(Start::After).map_err(|_| {
                ApiError::invalid(
                    "Last-Event-ID",
                    format!("must be a position or version number, not {s:?}"),
                )
            });
        }
    }
    Ok(match after {
        Some(n) => Start::After(n),
        None => from,
    })
}

enum Frame {
    Events(Vec<Bytes>, Charge),
    Lagged(Option<u64>),
    Error(ApiError, Option<u64>),
}

fn frame_bytes(frame: Frame) -> Bytes {
    match frame {
        Frame::Events(mut frames, _charge) if frames.len() == 1 => frames.pop().unwrap_or_default(),
        Frame::Events(frames, _charge) => {
            let mut out = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
            for f in &frames {
                out.extend_from_slice(f);
            }
            out.freeze()
        }
        Frame::Lagged(resume) => sse_frame(
            strata_wire::sse::LAGGED,
            resume,
            &json!({
                "code": "slow_subscriber",
                "detail": "this subscriber fell behind and was disconnected; resume after resumeAfter (the SSE id) with Last-Event-ID",
                "resumeAfter": resume,
            })
            .to_string(),
        ),
        Frame::Error(err, resume) => {
            let mut doc = err.to_json();
            doc["resumeAfter"] = json!(resume);
            err.log();
            sse_frame(strata_wire::sse::ERROR, None, &doc.to_string())
        }
    }
}

/// Which events of the hub a subscription wants, and its id for them.
enum Matcher {
    All(Filter),
    Stream(String),
}

impl Matcher {
    fn matches(&self, r: &Rendered) -> bool {
        match self {
            Matcher::All(f) => f.matches_parts(&r.stream_id, &r.event_type),
            Matcher::Stream(s) => r.stream_id == *s,
        }
    }
    fn id(&self, r: &Rendered) -> u64 {
        match self {
            Matcher::All(_) => r.position,
            Matcher::Stream(_) => r.stream_version,
        }
    }
}

/// A store's error as the subscription's last word; corruption is counted (a response's is
/// counted by the router's metrics layer, a subscription's error frame here).
fn store_error(st: &AppState, e: strata_core::ReadError) -> ApiError {
    let error = ApiError::from(e);
    if error.code == crate::error::ErrorCode::Corruption {
        st.metrics().corruption();
    }
    error
}

/// Events one message to the connection carries at most. Passing events in chunks keeps the
/// cost of the hand-over per chunk, not per event, when a hundred subscribers follow a busy
/// store; the buffer bound stays in events (capacity in chunks times the chunk size).
const CHUNK_EVENTS_MAX: usize = 64;

/// Bytes of events a subscription has buffered for its connection, counted against its own
/// `sse_buffer_max_bytes` and the server's `sse_buffers_total_max_bytes`; given back when the
/// connection takes them (or when they are dropped with it).
struct Charge {
    _own: tokio::sync::OwnedSemaphorePermit,
    _total: tokio::sync::OwnedSemaphorePermit,
}

/// A subscription's way to its connection: the channel, and the bounds on what it holds.
struct Out {
    tx: mpsc::Sender<Frame>,
    /// One permit per byte this subscription may hold buffered.
    own: Arc<Semaphore>,
    own_max: usize,
    total_max: usize,
    /// Most events in one chunk.
    chunk_max: usize,
    /// A chunk is handed over once it holds this many bytes: a quarter of the buffer, so a
    /// chunk waiting for room never holds more than a fraction of it uncounted.
    chunk_bytes_max: usize,
}

impl Out {
    fn full(&self, chunk: &[Bytes]) -> bool {
        chunk.len() >= self.chunk_max
            || chunk.iter().map(Bytes::len).sum::<usize>() >= self.chunk_bytes_max
    }

    /// Takes room for `bytes` in this subscription's buffer and in the server's, waiting until
    /// `deadline`; `None` when there was none in time. A chunk larger than a buffer takes the
    /// whole buffer (it waits for the buffer to empty).
    async fn charge(&self, st: &AppState, bytes: usize, deadline: Instant) -> Option<Charge> {
        let take = |sem: &Arc<Semaphore>, max: usize| {
            let n = u32::try_from(bytes.min(max)).unwrap_or(u32::MAX);
            let sem = sem.clone();
            async move {
                match sem.clone().try_acquire_many_owned(n) {
                    Ok(p) => Some(p),
                    Err(_) => tokio::time::timeout_at(deadline, sem.acquire_many_owned(n))
                        .await
                        .ok()?
                        .ok(),
                }
            }
        };
        let own = take(&self.own, self.own_max).await?;
        let total = take(st.sse_bytes(), self.total_max).await?;
        Some(Charge {
            _own: own,
            _total: total,
        })
    }
}

/// Hands a chunk of event frames to the connection (with `last`, the id of its last event);
/// `Err(Some(frame))` ends the subscription with that last word, `Err(None)` ends it silently
/// (the client left). On success `resume` moves to `last`.
async fn deliver(
    out: &Out,
    chunk: &mut Vec<Bytes>,
    last: Option<u64>,
    slow: Duration,
    st: &AppState,
    resume: &mut Option<u64>,
) -> Result<(), Option<Frame>> {
    if chunk.is_empty() {
        return Ok(());
    }
    let n = chunk.len();
    let deadline = Instant::now() + slow;
    let bytes = chunk.iter().map(Bytes::len).sum();
    let Some(charge) = out.charge(st, bytes, deadline).await else {
        st.metrics().lagged();
        return Err(Some(Frame::Lagged(*resume)));
    };
    let frame = Frame::Events(std::mem::take(chunk), charge);
    match out.tx.try_send(frame) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Closed(_)) => return Err(None),
        Err(mpsc::error::TrySendError::Full(frame)) => {
            match tokio::time::timeout_at(deadline, out.tx.send(frame)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(None),
                Err(_) => {
                    st.metrics().lagged();
                    return Err(Some(Frame::Lagged(*resume)));
                }
            }
        }
    }
    st.metrics().delivered(n as u64);
    *resume = last;
    Ok(())
}

/// Runs one subscription until the client leaves or it ends with a last word: catch up from
/// storage, then follow the hub; back to storage whenever the hub moved on without it.
async fn follow(
    st: &AppState,
    target: &SubscriptionTarget,
    matcher: &Matcher,
    mut resume: Option<u64>,
    out: &Out,
) -> Option<Frame> {
    let slow = Duration::from_millis(st.config().sse_slow_subscriber_timeout_ms);
    let from = |resume: Option<u64>| match (resume, matcher) {
        (None, _) => SubscribeFrom::Start,
        (Some(v), Matcher::Stream(_)) => SubscribeFrom::AfterVersion(v),
        (Some(p), Matcher::All(_)) => SubscribeFrom::AfterPosition(Position(p)),
    };
    let mut chunk: Vec<Bytes> = Vec::with_capacity(out.chunk_max);
    loop {
        // Join the hub before the last storage read: nothing falls between the two.
        let mut live = st.hub().subscribe(st.store());
        let mut sub = match st.store().subscribe(target.clone(), from(resume)).await {
            Ok(s) => s,
            Err(e) => return Some(Frame::Error(store_error(st, e), resume)),
        };
        // Catch up from storage, until a read that started after a look at the head finds
        // nothing more: then every event up to that head is covered.
        let mut last = resume;
        let mut head_seen: Option<Option<u64>> = None;
        let covered = loop {
            let next = tokio::select! {
                biased;
                _ = out.tx.closed() => return None,
                r = sub.try_next() => r,
            };
            let event = match next {
                Ok(Some(e)) => {
                    head_seen = None;
                    e
                }
                Ok(None) => match head_seen {
                    Some(head) => break head,
                    None => {
                        match st.store().head().await {
                            Ok(h) => head_seen = Some(h.map(|p| p.0)),
                            Err(e) => {
                                if let Err(end) =
                                    deliver(out, &mut chunk, last, slow, st, &mut resume).await
                                {
                                    return end;
                                }
                                return Some(Frame::Error(store_error(st, e), resume));
                            }
                        }
                        continue;
                    }
                },
                Err(e) => {
                    if let Err(end) = deliver(out, &mut chunk, last, slow, st, &mut resume).await {
                        return end;
                    }
                    return Some(Frame::Error(store_error(st, e), resume));
                }
            };
            let r = match Rendered::new(&event) {
                Ok(r) => r,
                Err(e) => {
                    return Some(Frame::Error(
                        ApiError::internal(format!("serializing an event: {e}")),
                        resume,
                    ))
                }
            };
            let id = matcher.id(&r);
            chunk.push(r.frame(id));
            last = Some(id);
            if out.full(&chunk) {
                if let Err(end) = deliver(out, &mut chunk, last, slow, st, &mut resume).await {
                    return end;
                }
            }
        };
        let mut covered = covered;
        if let Err(end) = deliver(out, &mut chunk, last, slow, st, &mut resume).await {
            return end;
        }
        drop(sub);
        // Live from the hub.
        loop {
            let batch = tokio::select! {
                biased;
                _ = out.tx.closed() => return None,
                b = live.recv() => b,
            };
            let batch = match batch {
                Ok(b) => b,
                // Fell behind the hub (or it stopped): back to storage from where we are.
                Err(_) => break,
            };
            // The hand-over: events between what storage covered and what the hub covered
            // before this batch would be missed. Read them from storage first (this happens
            // when the hub started after the last storage read).
            if batch.prev > covered {
                st.metrics().hand_over_gap();
                break;
            }
            let mut last = resume;
            for r in batch.events.iter() {
                let id = matcher.id(r);
                // At or below `covered`: delivered (or passed over) from storage already.
                if covered.is_some_and(|c| r.position <= c)
                    || last.is_some_and(|l| id <= l)
                    || !matcher.matches(r)
                {
                    continue;
                }
                chunk.push(r.frame(id));
                last = Some(id);
                if out.full(&chunk) {
                    if let Err(end) = deliver(out, &mut chunk, last, slow, st, &mut resume).await {
                        return end;
                    }
                }
            }
            if let Err(end) = deliver(out, &mut chunk, last, slow, st, &mut resume).await {
                return end;
            }
            if let Some(r) = batch.events.last() {
                covered = covered.max(Some(r.position));
            }
        }
    }
}

/// Opens the subscription; `request_id` goes into its last `error` event, if it ends with one.
async fn open(
    st: AppState,
    who: &crate::auth::Principal,
    target: SubscriptionTarget,
    start: Start,
    request_id: Option<String>,
) -> Result<Response, ApiError> {
    let matcher = match &target {
        SubscriptionTarget::All(f) => Matcher::All(f.clone()),
        SubscriptionTarget::Stream(s) => Matcher::Stream(s.as_str().to_owned()),
    };
    let slot = st.subscription_slot(who)?;
    // Resolve `end` here so the first resume point (and so every SSE id) is exact.
    let resume = match start {
        Start::Beginning => None,
        Start::After(n) => Some(n),
        Start::End => match &target {
            SubscriptionTarget::Stream(s) => st.store().stream_info(s).await?.current_version,
            SubscriptionTarget::All(_) => st.store().head().await?.map(|p| p.0),
        },
    };
    let cfg = st.config();
    let chunk_max = CHUNK_EVENTS_MAX.min(cfg.sse_buffer_events as usize).max(1);
    let (tx, rx) = mpsc::channel::<Frame>((cfg.sse_buffer_events as usize / chunk_max).max(1));
    let own_max = usize::try_from(cfg.sse_buffer_max_bytes)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS);
    let out = Out {
        tx,
        own: Arc::new(Semaphore::new(own_max)),
        own_max,
        total_max: usize::try_from(cfg.sse_buffers_total_max_bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS),
        chunk_max,
        chunk_bytes_max: (own_max / 4).clamp(1, COALESCE_MAX_BYTES),
    };
    let (fin_tx, fin_rx) = oneshot::channel::<Frame>();
    let state = st.clone();
    tokio::spawn(async move {
        let _slot = slot;
        if let Some(mut last) = follow(&state, &target, &matcher, resume, &out).await {
            if let Frame::Error(error, _) = &mut last {
                error.request_id = request_id;
            }
            let _ = fin_tx.send(last);
        }
    });
    let keep_alive = Duration::from_millis(cfg.sse_keep_alive_interval_ms);
    let stream = futures::stream::unfold((rx, Some(fin_rx)), move |(mut rx, fin)| async move {
        let first = match tokio::time::timeout(keep_alive, rx.recv()).await {
            Err(_) => {
                return Some((
                    Ok::<_, Infallible>(Bytes::from_static(b": keep-alive\n\n")),
                    (rx, fin),
                ))
            }
            Ok(Some(frame)) => frame_bytes(frame),
            // The task ended: after what it buffered comes its last word, if any.
            Ok(None) => {
                let last = fin?.await.ok()?;
                return Some((Ok(frame_bytes(last)), (rx, None)));
            }
        };
        // Whatever else is already waiting goes out in the same write.
        let mut more = match rx.try_recv() {
            Ok(frame) => frame_bytes(frame),
            Err(_) => return Some((Ok(first), (rx, fin))),
        };
        let mut out = BytesMut::with_capacity(first.len() * 8);
        out.extend_from_slice(&first);
        loop {
            out.extend_from_slice(&more);
            if out.len() >= COALESCE_MAX_BYTES {
                break;
            }
            more = match rx.try_recv() {
                Ok(frame) => frame_bytes(frame),
                Err(_) => break,
            };
        }
        Some((Ok(out.freeze()), (rx, fin)))
    });
    let mut res = Response::new(Body::from_stream(stream));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

/// `GET /subscriptions/all`
pub(crate) async fn all(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref(), PARAMS_ALL)?;
    let who = subscriber(&st, &headers, &q)?;
    let f = filter(&q)?;
    check_all(&who, Action::Subscribe, &f)?;
    let start = start(&q, &headers)?;
    open(
        st,
        &who,
        SubscriptionTarget::All(f),
        start,
        request_id(&headers),
    )
    .await
}

/// `GET /subscriptions/streams/{stream}`
pub(crate) async fn stream(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref(), PARAMS_STREAM)?;
    let who = subscriber(&st, &headers, &q)?;
    let stream = stream_param(path)?;
    if !who.can(Action::Subscribe, stream.as_str()) {
        return Err(forbidden(
            &who,
            Action::Subscribe,
            &format!("stream {stream}"),
        ));
    }
    let start = start(&q, &headers)?;
    open(
        st,
        &who,
        SubscriptionTarget::Stream(stream),
        start,
        request_id(&headers),
    )
    .await
}

/// `GET /subscriptions/categories/{category}`
pub(crate) async fn category(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref(), PARAMS_CATEGORY)?;
    let who = subscriber(&st, &headers, &q)?;
    let category = path_param(path, "category")?;
    if category.is_empty()
        || category.contains('-')
        || category.len() > strata_core::limits::STREAM_ID_MAX_BYTES
        || category.starts_with('$')
        || category
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(ApiError::invalid(
            "category",
            "must be the part of a stream id before its first `-`",
        ));
    }
    let Some(narrow) = who.can_category(Action::Subscribe, &category) else {
        return Err(forbidden(
            &who,
            Action::Subscribe,
            &format!("category {category}"),
        ));
    };
    let mut f = Filter::default()
        .categories([category.clone()])
        .event_types(q.all("eventType"));
    f.stream_prefix = narrow;
    if f.event_types.iter().any(String::is_empty) {
        return Err(ApiError::invalid("eventType", "must not be empty"));
    }
    f.validate()
        .map_err(|e| ApiError::invalid("eventType", e.to_string()))?;
    let start = start(&q, &headers)?;
    open(
        st,
        &who,
        SubscriptionTarget::All(f),
        start,
        request_id(&headers),
    )
    .await
}
