//! One stream: append, read, info.

use std::borrow::Cow;
use std::time::Instant;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::StreamExt;
use serde_json::json;
use strata_core::{
    AppendError, AppendResult, Direction, EventData, ExpectedVersion, Position, ReadStreamOptions,
    RecordedEvent, StreamId,
};
use strata_wire::{
    paths, AppendBody, Appended, BatchAppendBody, BatchAppended, BatchResult, EventJson, StreamPage,
};

use super::{
    allowed_stream, caller, json_response, paged_response, read_body, request_id, stream_param,
};
use crate::auth::forbidden;
use crate::config::Action;
use crate::error::{ApiError, ErrorCode};
use crate::limits;
use crate::query::Query;
use crate::AppState;

/// `POST /streams/{stream}`
///
/// Appends are the hot path of the API, so this handler takes the whole request (the headers
/// are read in place rather than copied by a `HeaderMap` extractor) and writes its answer
/// without building a `serde_json::Value`.
pub(crate) async fn append(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let who = caller(&st, headers)?;
    let stream = stream_param(path)?;
    if !who.can(Action::Write, stream.as_str()) {
        return Err(forbidden(&who, Action::Write, &format!("stream {stream}")));
    }
    refuse_metastream(&stream, "stream")?;
    Query::parse(raw.as_deref(), &[])?;
    let (bytes, _charge) =
        read_body(&st, body, headers, st.config().request_body_max_bytes).await?;
    let body = AppendBody::parse(&bytes)?;
    if body.events.len() > limits::SERVER_APPEND_EVENTS_MAX {
        return Err(too_large(
            "events in one append",
            limits::SERVER_APPEND_EVENTS_MAX,
            body.events.len(),
        ));
    }
    let (expected, events) = body.into_events()?;
    let r = append_counted(&st, &stream, expected, events).await?;
    Ok(json_response(&appended(&stream, &r)))
}

/// A metastream is written only by the lifecycle endpoints, which keep its rules (deletion
/// and truncation only move forward, a tombstone is for good); crypto-shredding's own streams
/// only by their endpoints, on every server (one without a master key too).
fn refuse_metastream(stream: &StreamId, field: &str) -> Result<(), ApiError> {
    if strata_core::lifecycle::is_shredding_stream(stream) {
        return Err(ApiError::invalid(
            field,
            "is kept by Strata for crypto-shredding: schemas are registered at \
             PUT /encryption/schemas/{eventType}, and subjects forgotten at \
             DELETE /subjects/{subject}",
        ));
    }
    if stream.is_metastream() {
        return Err(ApiError::invalid(
            field,
            "is a metastream: a stream's metadata changes through DELETE /streams/{stream}, \
             POST /streams/{stream}/truncate and PUT /streams/{stream}/metadata",
        ));
    }
    Ok(())
}

/// `413 payload_too_large`: more of `what` than `max`; nothing was written.
fn too_large(what: &str, max: usize, actual: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("at most {max} {what}, this request has {actual}; nothing was written"),
    )
    .with("what", json!(what))
    .with("limit", json!(max))
    .with("actual", json!(actual))
}

/// One append to the store, counted in the metrics.
async fn append_counted(
    st: &AppState,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<EventData>,
) -> Result<AppendResult, AppendError> {
    let n = events.len();
    let started = Instant::now();
    let result = st.store().append(stream, expected, events).await;
    match &result {
        Ok(r) => st.metrics().append_ok(n, r.replayed, started.elapsed()),
        Err(e) => st
            .metrics()
            .append_failed(e.is_wrong_expected_version(), started.elapsed()),
    }
    result
}

/// The answer to an append.
fn appended<'a>(stream: &'a StreamId, r: &'a AppendResult) -> Appended<'a> {
    Appended {
        positions: Cow::Borrowed(&r.positions),
        stream_id: Cow::Borrowed(stream.as_str()),
        version: r.stream_version,
        replayed: r.replayed,
    }
}

/// One append of a batch, checked: its stream, expected version and events.
type Checked = (StreamId, ExpectedVersion, Vec<EventData>);

/// `POST /streams`: several appends in one request, each to its own stream with its own
/// expected version and its own answer. Each append is atomic; the batch is not.
///
/// Everything is checked before anything is written: the body, every stream name, the
/// caller's right to write each stream, every append's events and the limits. A refusal there
/// answers the whole request and writes nothing. Then the appends run: those of different
/// streams at once (the embedded store commits them in as few group commits as it can), those
/// of one stream in the order given, so a later one may expect the version an earlier one
/// leaves. The answer is `200` with one result per append, in the request's order: the
/// single append's answer, or `{"streamId", "error"}` with the problem document that append
/// alone would have been answered with.
pub(crate) async fn append_batch(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let who = caller(&st, headers)?;
    Query::parse(raw.as_deref(), &[])?;
    let (bytes, _charge) =
        read_body(&st, body, headers, st.config().request_body_max_bytes).await?;
    let body = BatchAppendBody::parse(&bytes)?;
    let count = body.appends.len();
    if count == 0 {
        return Err(ApiError::invalid(
            "appends",
            "must hold at least one append",
        ));
    }
    // Rights first: a caller who may not write a stream learns that, not a limit.
    let mut streams: Vec<StreamId> = Vec::with_capacity(count);
    for (index, a) in body.appends.iter().enumerate() {
        let stream = StreamId::new(a.stream_id.as_str())
            .map_err(|e| ApiError::invalid(format!("appends[{index}].streamId"), e.reason))?;
        if !who.can(Action::Write, stream.as_str()) {
            return Err(forbidden(&who, Action::Write, &format!("stream {stream}")));
        }
        refuse_metastream(&stream, &format!("appends[{index}].streamId"))?;
        streams.push(stream);
    }
    if count > limits::SERVER_BATCH_APPENDS_MAX {
        return Err(too_large(
            "appends in a batch",
            limits::SERVER_BATCH_APPENDS_MAX,
            count,
        ));
    }
    let events: usize = body.appends.iter().map(|a| a.events.len()).sum();
    if events > limits::SERVER_BATCH_EVENTS_MAX {
        return Err(too_large(
            "events in a batch",
            limits::SERVER_BATCH_EVENTS_MAX,
            events,
        ));
    }
    // Every append as the store will check it, so that no append is written before a bad
    // one is found.
    let mut appends: Vec<Checked> = Vec::with_capacity(count);
    for ((index, a), stream) in body.appends.into_iter().enumerate().zip(&streams) {
        let (expected, events) = a.into_events(index)?;
        strata_core::validate_append(&events).map_err(|e| match e {
            AppendError::InvalidInput(i) => {
                ApiError::invalid(format!("appends[{index}].{}", i.field), i.reason)
            }
            AppendError::Limit(mut l) => {
                l.what = format!("appends[{index}]: {}", l.what);
                ApiError::from(AppendError::Limit(l))
            }
            other => ApiError::from(other),
        })?;
        appends.push((stream.clone(), expected, events));
    }

    // The appends of each stream, in order; streams in order of their first append. The
    // chains own the events (each is appended once); `streams` names every append's stream
    // for its answer.
    let mut chains: Vec<Vec<(usize, Checked)>> = Vec::new();
    let mut chain_of: std::collections::HashMap<StreamId, usize> = std::collections::HashMap::new();
    for (i, append) in appends.into_iter().enumerate() {
        let c = *chain_of.entry(append.0.clone()).or_insert_with(|| {
            chains.push(Vec::new());
            chains.len() - 1
        });
        chains[c].push((i, append));
    }
    let request_id = request_id(headers);
    let st = &st;
    let request_id = &request_id;
    let streams = &streams;
    let mut answers: Vec<Option<BatchResult<'_>>> = (0..count).map(|_| None).collect();
    let mut running = futures::stream::iter(chains)
        .map(|chain| async move {
            let mut out = Vec::with_capacity(chain.len());
            for (i, (stream, expected, events)) in chain {
                let result = match append_counted(st, &stream, expected, events).await {
                    Ok(r) => BatchResult::Appended(Appended {
                        positions: Cow::Owned(r.positions),
                        stream_id: Cow::Borrowed(streams[i].as_str()),
                        version: r.stream_version,
                        replayed: r.replayed,
                    }),
                    Err(e) => {
                        let mut problem = ApiError::from(e);
                        problem.request_id.clone_from(request_id);
                        problem.log();
                        BatchResult::Failed {
                            stream_id: Cow::Borrowed(streams[i].as_str()),
                            error: problem.to_json(),
                        }
                    }
                };
                out.push((i, result));
            }
            out
        })
        .buffer_unordered(limits::SERVER_BATCH_STREAMS_IN_FLIGHT_MAX);
    while let Some(done) = running.next().await {
        for (i, result) in done {
            answers[i] = Some(result);
        }
    }
    drop(running);
    let results = answers
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ApiError::internal("a batch append left an append unanswered"))?;
    Ok(json_response(&BatchAppended { results }))
}

/// `direction` from a query.
pub(crate) fn direction(q: &Query) -> Result<Direction, ApiError> {
    match q.one("direction")? {
        None | Some("forward") => Ok(Direction::Forward),
        Some("backward") => Ok(Direction::Backward),
        Some(d) => Err(ApiError::invalid(
            "direction",
            format!("must be forward or backward, not {d:?}"),
        )),
    }
}

/// `maxPosition` and/or `asOf` from a query (both bounds apply when both are given):
/// `Ok(Some(None))` when `asOf` is before every event.
pub(crate) async fn max_position(
    st: &AppState,
    q: &Query,
) -> Result<Option<Option<Position>>, ApiError> {
    let max = q.u64("maxPosition")?.map(Position);
    let as_of = match q.timestamp("asOf")? {
        Some(t) => Some(st.store().position_at(t).await?),
        None => None,
    };
    Ok(match (max, as_of) {
        (Some(m), Some(Some(p))) => Some(Some(m.min(p))),
        (Some(_), Some(None)) | (None, Some(None)) => Some(None),
        (None, Some(Some(p))) => Some(Some(p)),
        (Some(m), None) => Some(Some(m)),
        (None, None) => None,
    })
}

/// Cuts `events` so that their payloads and metadata stay under the page byte limit; returns
/// whether it cut.
pub(crate) fn cut_to_bytes(events: &mut Vec<RecordedEvent>) -> bool {
    let mut total = 0usize;
    for (i, e) in events.iter().enumerate() {
        total += e.data.len() + e.metadata.as_map().len() * 16 + 256;
        if total > strata_core::limits::SERVER_PAGE_MAX_BYTES && i > 0 {
            events.truncate(i);
            return true;
        }
    }
    false
}

/// `GET /streams/{stream}`
pub(crate) async fn read(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let stream = allowed_stream(&st, &headers, path, Action::Read)?;
    let q = Query::parse(
        raw.as_deref(),
        &["direction", "from", "limit", "maxPosition", "asOf"],
    )?;
    let dir = direction(&q)?;
    let limit = q.limit(
        limits::SERVER_PAGE_DEFAULT_EVENTS.min(st.config().page_max_events as usize),
        st.config().page_max_events as usize,
    )?;
    let from = q.u64("from")?;
    let mut o = match dir {
        Direction::Forward => ReadStreamOptions::forward(),
        Direction::Backward => ReadStreamOptions::backward(),
    }
    .limit(limit);
    if let Some(f) = from {
        o = o.from_version(f);
    }
    let max = max_position(&st, &q).await?;
    match max {
        Some(None) => {
            return Err(ApiError::new(
                ErrorCode::StreamNotFound,
                format!("stream {stream} had no events at that time"),
            )
            .with("streamId", json!(stream.as_str())))
        }
        Some(Some(p)) => o = o.max_position(p),
        None => {}
    }
    let mut events = st.store().read_stream(&stream, o.clone()).await?;
    let cut = cut_to_bytes(&mut events);
    let next = next_stream_link(stream.as_str(), o, &events, cut);
    let page = StreamPage {
        stream_id: Cow::Borrowed(stream.as_str()),
        direction: dir,
        events: events.iter().map(EventJson::new).collect(),
        next: next.clone(),
    };
    Ok(paged_response(&page, next.as_deref()))
}

/// The link to the page after `events`, read with `o`: the same read from the version after
/// the last event. `None` when the page was the last (shorter than asked and not cut).
fn next_stream_link(
    stream: &str,
    o: ReadStreamOptions,
    events: &[RecordedEvent],
    cut: bool,
) -> Option<String> {
    let last = events.last()?;
    if events.len() < o.limit && !cut {
        return None;
    }
    let from = match o.direction {
        Direction::Forward => last.stream_version.checked_add(1)?,
        Direction::Backward => last.stream_version.checked_sub(1)?,
    };
    Some(paths::read_stream_path(stream, &o.from_version(from)))
}

/// `GET /streams/{stream}/info`
pub(crate) async fn info(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let stream = allowed_stream(&st, &headers, path, Action::Read)?;
    Query::parse(raw.as_deref(), &[])?;
    let info = st.store().stream_info(&stream).await?;
    Ok(json_response(&info))
}
