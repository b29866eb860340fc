//! Live subscriptions as server-sent events.
//!
//! Each subscription runs in its own task: it reads from the store (catch-up, then live) and
//! hands rendered events to the connection through a bounded channel. When the channel stays
//! full for the slow-subscriber timeout, the task stops reading, the connection is sent what is
//! already buffered and then one `lagged` event whose id is the last delivered position (or
//! version), and the connection closes: the client resumes from there with `Last-Event-ID`.
//! Memory per subscriber is bounded by the channel; the store is never read ahead further.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use strata_core::{Filter, Position, SubscribeFrom, SubscriptionTarget};
use tokio::sync::{mpsc, oneshot};

use super::all::{check_all, filter};
use super::{caller, path_param, stream_param};
use crate::auth::forbidden;
use crate::config::Action;
use crate::error::ApiError;
use crate::query::Query;
use crate::wire::EventOut;
use crate::AppState;

const PARAMS_ALL: &[&str] = &["from", "after", "eventType", "category", "prefix"];
const PARAMS_STREAM: &[&str] = &["from", "after"];
const PARAMS_CATEGORY: &[&str] = &["from", "after", "eventType"];

/// Where to start, before `end` is resolved.
enum Start {
    Beginning,
    End,
    After(u64),
}

fn start(q: &Query, headers: &HeaderMap) -> Result<Start, ApiError> {
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
    match (q.one("from")?, q.u64("after")?) {
        (Some(_), Some(_)) => Err(ApiError::invalid("after", "give from or after, not both")),
        (None, Some(n)) => Ok(Start::After(n)),
        (None | Some("end"), None) => Ok(Start::End),
        (Some("start"), None) => Ok(Start::Beginning),
        (Some(f), None) => Err(ApiError::invalid(
            "from",
            format!("must be start or end (or use after=N), not {f:?}"),
        )),
    }
}

enum Frame {
    Event(u64, String),
    Lagged(Option<u64>),
    Error(ApiError, Option<u64>),
}

fn to_sse(frame: Frame) -> Event {
    match frame {
        Frame::Event(id, data) => Event::default()
            .event("event")
            .id(id.to_string())
            .data(data),
        Frame::Lagged(resume) => {
            let e = Event::default().event("lagged").data(
                json!({
                    "code": "slow_subscriber",
                    "detail": "this subscriber fell behind and was disconnected; resume after resumeAfter (the SSE id) with Last-Event-ID",
                    "resumeAfter": resume,
                })
                .to_string(),
            );
            match resume {
                Some(id) => e.id(id.to_string()),
                None => e,
            }
        }
        Frame::Error(err, resume) => {
            let mut doc = err.to_json();
            doc["resumeAfter"] = json!(resume);
            if let Some(what) = &err.internal {
                tracing::error!(error = %what, "subscription failed");
            }
            Event::default().event("error").data(doc.to_string())
        }
    }
}

/// Removes whitespace outside strings, so an event's JSON is one line (SSE data lines must not
/// hold a line break).
fn one_line(json: String) -> String {
    if !json.contains(['\n', '\r']) {
        return json;
    }
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

async fn open(
    st: AppState,
    who: &crate::auth::Principal,
    target: SubscriptionTarget,
    start: Start,
) -> Result<Response, ApiError> {
    let by_version = matches!(target, SubscriptionTarget::Stream(_));
    let slot = st.subscription_slot(who)?;
    // Resolve `end` here so the first resume point (and so every SSE id) is exact.
    let (from, mut resume) = match start {
        Start::Beginning => (SubscribeFrom::Start, None),
        Start::After(n) if by_version => (SubscribeFrom::AfterVersion(n), Some(n)),
        Start::After(n) => (SubscribeFrom::AfterPosition(Position(n)), Some(n)),
        Start::End => match &target {
            SubscriptionTarget::Stream(s) => match st.store().stream_info(s).await?.current_version
            {
                Some(v) => (SubscribeFrom::AfterVersion(v), Some(v)),
                None => (SubscribeFrom::Start, None),
            },
            SubscriptionTarget::All(_) => match st.store().head().await? {
                Some(p) => (SubscribeFrom::AfterPosition(p), Some(p.0)),
                None => (SubscribeFrom::Start, None),
            },
        },
    };
    let mut sub = st.store().subscribe(target, from).await?;
    let cfg = st.config();
    let (tx, rx) = mpsc::channel::<Frame>(cfg.sse_buffer_events as usize);
    let (fin_tx, fin_rx) = oneshot::channel::<Frame>();
    let slow = Duration::from_millis(cfg.sse_slow_subscriber_timeout_ms);
    let state = st.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let fin = loop {
            let next = tokio::select! {
                biased;
                _ = tx.closed() => break None,
                r = sub.next() => r,
            };
            let event = match next {
                Ok(e) => e,
                Err(e) => break Some(Frame::Error(e.into(), resume)),
            };
            let id = if by_version {
                event.stream_version
            } else {
                event.position.0
            };
            let data = match serde_json::to_string(&EventOut::new(&event)) {
                Ok(s) => one_line(s),
                Err(e) => {
                    break Some(Frame::Error(
                        ApiError::internal(format!("serializing an event: {e}")),
                        resume,
                    ))
                }
            };
            match tx.try_send(Frame::Event(id, data)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => break None,
                Err(mpsc::error::TrySendError::Full(frame)) => {
                    match tokio::time::timeout(slow, tx.send(frame)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break None,
                        Err(_) => {
                            state.metrics().lagged();
                            break Some(Frame::Lagged(resume));
                        }
                    }
                }
            }
            state.metrics().delivered();
            resume = Some(id);
        };
        if let Some(f) = fin {
            let _ = fin_tx.send(f);
        }
    });
    let stream = futures::stream::unfold((rx, Some(fin_rx)), |(mut rx, fin)| async move {
        match rx.recv().await {
            Some(frame) => Some((Ok::<_, Infallible>(to_sse(frame)), (rx, fin))),
            None => {
                // The task ended: after what it buffered comes its last word, if any.
                let last = fin?.await.ok()?;
                Some((Ok(to_sse(last)), (rx, None)))
            }
        }
    });
    let keep_alive = KeepAlive::new()
        .interval(Duration::from_millis(cfg.sse_keep_alive_interval_ms))
        .text("keep-alive");
    let mut res = Sse::new(stream).keep_alive(keep_alive).into_response();
    res.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

/// `GET /subscriptions/all`
pub(crate) async fn all(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    let q = Query::parse(raw.as_deref(), PARAMS_ALL)?;
    let f = filter(&q)?;
    check_all(&who, Action::Subscribe, &f)?;
    let start = start(&q, &headers)?;
    open(st, &who, SubscriptionTarget::All(f), start).await
}

/// `GET /subscriptions/streams/{stream}`
pub(crate) async fn stream(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    let stream = stream_param(path)?;
    if !who.can(Action::Subscribe, stream.as_str()) {
        return Err(forbidden(
            &who,
            Action::Subscribe,
            &format!("stream {stream}"),
        ));
    }
    let q = Query::parse(raw.as_deref(), PARAMS_STREAM)?;
    let start = start(&q, &headers)?;
    open(st, &who, SubscriptionTarget::Stream(stream), start).await
}

/// `GET /subscriptions/categories/{category}`
pub(crate) async fn category(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
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
    let q = Query::parse(raw.as_deref(), PARAMS_CATEGORY)?;
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
    open(st, &who, SubscriptionTarget::All(f), start).await
}
