//! A stream's lifecycle: delete (soft, or a tombstone), truncate, metadata.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use strata_core::{AppendResult, ExpectedVersion, StreamId, StreamMetadata};
use strata_wire::{Appended, MetadataAnswer};

use super::{allowed_stream, json_response, read_body};
use crate::config::Action;
use crate::error::ApiError;
use crate::query::Query;
use crate::AppState;

/// The body of `PUT /streams/{stream}/metadata` is metadata, which is small: a bound well
/// under an append's.
const METADATA_BODY_MAX_BYTES: u64 = 64 * 1024;

/// The stream of a lifecycle request, which the caller must be allowed to write.
fn writable_stream(
    st: &AppState,
    headers: &HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<StreamId, ApiError> {
    allowed_stream(st, headers, path, Action::Write)
}

/// The answer to a lifecycle change: where its event was appended (the metastream's, or the
/// stream's tombstone).
fn written(stream: &StreamId, r: &AppendResult) -> Response {
    json_response(&Appended {
        positions: std::borrow::Cow::Borrowed(&r.positions),
        stream_id: std::borrow::Cow::Borrowed(stream.as_str()),
        version: r.stream_version,
        replayed: r.replayed,
    })
}

/// `DELETE /streams/{stream}?expectedVersion=&tombstone=`
pub(crate) async fn delete(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let stream = writable_stream(&st, &headers, path)?;
    let q = Query::parse(raw.as_deref(), &["expectedVersion", "tombstone"])?;
    let expected = q.expected("expectedVersion", ExpectedVersion::Any)?;
    if q.flag("tombstone")? {
        let r = st.store().tombstone_stream(&stream, expected).await?;
        Ok(written(&stream, &r))
    } else {
        let r = st.store().delete_stream(&stream, expected).await?;
        Ok(written(&stream.metastream(), &r))
    }
}

/// `POST /streams/{stream}/truncate?before=`
pub(crate) async fn truncate(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let stream = writable_stream(&st, &headers, path)?;
    let q = Query::parse(raw.as_deref(), &["before"])?;
    let before = q
        .u64("before")?
        .ok_or_else(|| ApiError::invalid("before", "is required: the first version to keep"))?;
    let r = st.store().truncate_stream(&stream, before).await?;
    Ok(written(&stream.metastream(), &r))
}

/// `GET /streams/{stream}/metadata`
pub(crate) async fn get_metadata(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let stream = allowed_stream(&st, &headers, path, Action::Read)?;
    Query::parse(raw.as_deref(), &[])?;
    let record = st.store().stream_metadata(&stream).await?;
    Ok(json_response(&MetadataAnswer {
        stream_id: stream.into_string(),
        version: record.version,
        metadata: record.metadata,
        position: None,
    }))
}

/// `PUT /streams/{stream}/metadata?expectedVersion=` with the metadata as the body.
pub(crate) async fn put_metadata(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let stream = writable_stream(&st, &parts.headers, path)?;
    let q = Query::parse(raw.as_deref(), &["expectedVersion"])?;
    let expected = q.expected("expectedVersion", ExpectedVersion::Any)?;
    let (bytes, _charge) = read_body(&st, body, &parts.headers, METADATA_BODY_MAX_BYTES).await?;
    let metadata =
        StreamMetadata::from_json(&bytes).map_err(|e| ApiError::invalid("body", e.reason))?;
    let r = st
        .store()
        .set_stream_metadata(&stream, expected, metadata)
        .await?;
    // The metadata as stored (a `truncateBefore` left out is kept, say).
    let stored = st.store().stream_metadata(&stream).await?;
    Ok(json_response(&MetadataAnswer {
        stream_id: stream.into_string(),
        version: Some(r.stream_version),
        metadata: stored.metadata,
        position: r.positions.first().map(|p| p.0),
    }))
}
