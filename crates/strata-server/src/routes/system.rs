//! Health, readiness, metrics, the OpenAPI document, and the answers for unknown routes.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{caller, json_response, require_admin};
use crate::error::{ApiError, ErrorCode};
use crate::query::Query;
use crate::AppState;

/// `GET /health`: the process is up; with an archive, how its archiving stands (a failing
/// archive does not make the process unhealthy: appends go on).
pub(crate) async fn health(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    Query::parse(raw.as_deref(), &[])?;
    let mut body = json!({ "status": "ok" });
    if let Some(archives) = st.archives() {
        let a = archives.status();
        body["archive"] = json!({
            "state": a.state,
            "consecutiveFailures": a.consecutive_failures,
            "lastError": a.last_error,
            "lastSuccessAt": a.last_success_at,
        });
    }
    Ok(json_response(&body))
}

/// `GET /ready`: the store answers a read. `writable` says whether it accepts appends; with
/// `write=true` the answer is `503` when it does not (a load balancer routing writes asks this).
pub(crate) async fn ready(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref(), &["write"])?;
    let for_writes = match q.one("write")? {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "write",
                format!("must be true or false, not {other:?}"),
            ))
        }
    };
    let writable = st.store().check_writable();
    // head_now: a probe answers at once, whatever holds the PostgreSQL watermark.
    let head = match st.store().head_now().await {
        Ok(head) => head,
        Err(e) => {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "the store does not answer reads right now",
            )
            .with("writable", json!(writable.is_ok()))
            .with_internal(format!("not ready: {e}")));
        }
    };
    match writable {
        Err(e) if for_writes => Err(ApiError::new(
            ErrorCode::Unavailable,
            "the store answers reads but refuses appends",
        )
        .with_internal(format!("not ready for writes: {e}"))
        .with("writable", json!(false))
        .with("head", json!(head.map(|p| p.0)))),
        writable => Ok(json_response(&json!({
            "status": "ready",
            "head": head.map(|p| p.0),
            "writable": writable.is_ok(),
        }))),
    }
}

/// `GET /metrics`: Prometheus text; the admin role when tokens are configured.
pub(crate) async fn metrics(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    require_admin(&who, "read metrics")?;
    Query::parse(raw.as_deref(), &[])?;
    let mut text = st.metrics().render();
    crate::metrics::render_gauge(
        &mut text,
        "strata_connections_open",
        "Open connections (at most connections_max).",
        st.connections_open(),
    );
    crate::metrics::render_gauge(
        &mut text,
        "strata_sse_buffered_bytes",
        "Bytes of events buffered for subscribers' connections (at most sse_buffers_total_max_bytes).",
        st.sse_buffered_bytes(),
    );
    crate::metrics::render_gauge(
        &mut text,
        "strata_sse_fan_out_bytes",
        "Bytes of recent batches the live fan-out keeps (at most sse_fan_out_max_bytes).",
        st.sse_fan_out_bytes(),
    );
    crate::metrics::render_gauge(
        &mut text,
        "strata_request_body_bytes_in_flight",
        "Request-body bytes held now (at most request_bodies_in_flight_max_bytes).",
        st.request_body_bytes_in_flight(),
    );
    if let Some(archives) = st.archives() {
        let a = archives.status();
        crate::metrics::render_gauge(
            &mut text,
            "strata_archive_failing",
            "1 while archive passes fail (each is tried again with a backoff; a retry running counts), else 0.",
            u64::from(a.consecutive_failures > 0),
        );
        crate::metrics::render_gauge(
            &mut text,
            "strata_archived_below_position",
            "Every event below this position is in the archive (0 until a pass succeeds).",
            a.archived_below_position.unwrap_or(0),
        );
    }
    crate::metrics::render_gauge(
        &mut text,
        "strata_scavenge_running",
        "1 while a scavenge started through this server runs, else 0.",
        u64::from(st.scavenges().running()),
    );
    match st.store().backend_metrics().await {
        Ok(lines) => text.push_str(&lines),
        Err(e) => tracing::warn!(error = %e, "the store's own metrics are unavailable"),
    }
    if let Some(control) = st.projections() {
        match control.list().await {
            Ok(infos) => crate::metrics::render_projections(&mut text, &infos),
            // The store's own metrics are still worth scraping.
            Err(e) => tracing::warn!(error = %e, "projection metrics unavailable"),
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// `GET /openapi.json`
pub(crate) async fn openapi(RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    Query::parse(raw.as_deref(), &[])?;
    Ok(json_response(&crate::openapi::document()))
}

/// Any path the API does not have.
pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("there is no endpoint {} (see /openapi.json)", uri.path()),
    )
}

/// A known path with a method it does not take.
pub(crate) async fn method_not_allowed(method: Method) -> ApiError {
    method_not_allowed_for(&method)
}

fn method_not_allowed_for(method: &Method) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("this endpoint does not take {method} (see /openapi.json)"),
    )
}
