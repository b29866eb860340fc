//! The router: one file per route group.

mod admin;
mod all;
mod encryption;
mod lifecycle;
mod listing;
mod projections;
mod streams;
mod subscriptions;
mod system;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use strata_core::StreamId;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Principal;
use crate::error::{finish_problem, ApiError, ErrorCode, REQUEST_ID};
use crate::AppState;

/// Every route of the API as (method, path template): the OpenAPI document is checked against
/// this list, and a test checks that each is routed.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/streams/{stream}"),
    ("GET", "/streams/{stream}"),
    ("DELETE", "/streams/{stream}"),
    ("GET", "/streams/{stream}/info"),
    ("GET", "/streams/{stream}/metadata"),
    ("PUT", "/streams/{stream}/metadata"),
    ("POST", "/streams/{stream}/truncate"),
    ("GET", "/streams"),
    ("POST", "/streams"),
    ("GET", "/categories"),
    ("GET", "/all"),
    ("GET", "/all/head"),
    ("GET", "/all/position-at"),
    ("GET", "/subscriptions/all"),
    ("GET", "/subscriptions/streams/{stream}"),
    ("GET", "/subscriptions/categories/{category}"),
    ("GET", "/projections"),
    ("GET", "/projections/{name}"),
    ("POST", "/projections/{name}/pause"),
    ("POST", "/projections/{name}/resume"),
    ("POST", "/projections/{name}/reset"),
    ("POST", "/projections/{name}/rebuild"),
    ("POST", "/admin/scavenge"),
    ("GET", "/admin/scavenge"),
    ("POST", "/admin/archive"),
    ("GET", "/admin/archive"),
    ("GET", "/encryption/schemas"),
    ("PUT", "/encryption/schemas/{eventType}"),
    ("DELETE", "/subjects/{subject}"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// The whole API over `state`, with request ids, tracing, metrics and panic safety.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(
            "/streams/{stream}",
            post(streams::append)
                .get(streams::read)
                .delete(lifecycle::delete),
        )
        .route("/streams/{stream}/info", get(streams::info))
        .route(
            "/streams/{stream}/metadata",
            get(lifecycle::get_metadata).put(lifecycle::put_metadata),
        )
        .route("/streams/{stream}/truncate", post(lifecycle::truncate))
        .route(
            "/streams",
            get(listing::streams).post(streams::append_batch),
        )
        .route("/categories", get(listing::categories))
        .route("/all", get(all::read))
        .route("/all/head", get(all::head))
        .route("/all/position-at", get(all::position_at))
        .route("/subscriptions/all", get(subscriptions::all))
        .route("/subscriptions/streams/{stream}", get(subscriptions::stream))
        .route(
            "/subscriptions/categories/{category}",
            get(subscriptions::category),
        )
        .route("/projections", get(projections::list))
        .route("/projections/{name}", get(projections::status))
        .route("/projections/{name}/pause", post(projections::pause))
        .route("/projections/{name}/resume", post(projections::resume))
        .route("/projections/{name}/reset", post(projections::reset))
        .route("/projections/{name}/rebuild", post(projections::rebuild))
        .route(
            "/admin/scavenge",
            post(admin::start_scavenge).get(admin::scavenge_status),
        )
        .route(
            "/admin/archive",
            post(admin::start_archive).get(admin::archive_status),
        )
        .route("/encryption/schemas", get(encryption::list))
        .route(
            "/encryption/schemas/{event_type}",
            axum::routing::put(encryption::put),
        )
        .route(
            "/subjects/{subject}",
            axum::routing::delete(encryption::forget),
        )
        .route("/health", get(system::health))
        .route("/ready", get(system::ready))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi))
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        // One layer built from the whole stack (outermost first), not one `Router::layer` per
        // middleware: each `Router::layer` wraps every route in another boxed, cloned-per-request
        // service, which cost about 30 allocations per request.
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                        let id = req
                            .headers()
                            .get(REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("request", method = %req.method(), path = %logged_path(req.uri().path()), request_id = %id)
                    }),
                )
                // Sees responses after the next layer put the request id on them: problems get
                // it as `requestId`, and their internal detail is logged once with it.
                .layer(tower::util::MapResponseLayer::new(finish_problem))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
                    ApiError::internal("a handler panicked").into_response()
                }))
                .layer(tower::util::MapResponseLayer::new({
                    let state = state.clone();
                    move |res: Response| count_responses(&state, res)
                }))
                .layer(tower::layer::layer_fn(CheckPath)),
        )
        .with_state(state)
}

/// A request's path as the log shows it: a data subject's id is personal data, so the log
/// never holds the path that names one.
fn logged_path(path: &str) -> &str {
    if path.starts_with("/subjects/") {
        "/subjects/{subject}"
    } else {
        path
    }
}

/// Refuses, before routing, a request whose head is longer than `SERVER_REQUEST_HEAD_MAX_BYTES`
/// (`431 headers_too_large`) or whose path has a broken percent-encoding (`%` not followed by
/// two hex digits; the router would otherwise take `a%zzb` as it is).
#[derive(Clone)]
struct CheckPath<S>(S);

impl<S> tower::Service<Request<Body>> for CheckPath<S>
where
    S: tower::Service<Request<Body>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future =
        futures::future::Either<std::future::Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The HTTP parser bounds its read buffer by this too, but may take a head somewhat
        // longer in one read; the bound on what is accepted is exact here.
        let head_bytes = req.uri().to_string().len()
            + req
                .headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if head_bytes > crate::limits::SERVER_REQUEST_HEAD_MAX_BYTES {
            let error = ApiError::new(
                ErrorCode::HeadersTooLarge,
                format!(
                    "the request's head (request line and headers) is larger than the server reads ({} bytes)",
                    crate::limits::SERVER_REQUEST_HEAD_MAX_BYTES
                ),
            );
            let mut res = error.into_response();
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return futures::future::Either::Left(std::future::ready(Ok(res)));
        }
        if broken_percent_encoding(req.uri().path()) {
            let error = ApiError::invalid(
                "path",
                "has a broken percent-encoding: `%` must be followed by two hex digits",
            );
            return futures::future::Either::Left(std::future::ready(Ok(error.into_response())));
        }
        futures::future::Either::Right(self.0.call(req))
    }
}

fn broken_percent_encoding(path: &str) -> bool {
    let b = path.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// Counts a response by status class (a plain response map: no boxed future per request).
fn count_responses(state: &AppState, res: Response) -> Response {
    state.metrics().response(res.status().as_u16());
    if res.extensions().get::<ErrorCode>() == Some(&ErrorCode::Corruption) {
        state.metrics().corruption();
    }
    res
}

/// The request's id, as the router's first layer set it (the caller's, or a new UUID).
pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Authenticates the caller.
pub(crate) fn caller(state: &AppState, headers: &HeaderMap) -> Result<Arc<Principal>, ApiError> {
    state.auth().authenticate(headers)
}

/// Refuses `who` with `403 forbidden` unless it has the admin role; `what` says what it may
/// not do ("read metrics").
pub(crate) fn require_admin(who: &Principal, what: &str) -> Result<(), ApiError> {
    if who.is_admin() {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "token {:?} may not {what}: that needs the admin role",
            who.name
        ),
    ))
}

/// A path parameter, with rejections as `invalid_request`.
pub(crate) fn path_param(
    p: Result<Path<String>, PathRejection>,
    name: &str,
) -> Result<String, ApiError> {
    p.map(|Path(s)| s)
        .map_err(|e| ApiError::invalid(name.to_owned(), e.body_text()))
}

/// The stream id from the path, after checking that the caller (authenticated from
/// `headers`) may do `action` on it.
pub(crate) fn allowed_stream(
    st: &AppState,
    headers: &HeaderMap,
    path: Result<Path<String>, PathRejection>,
    action: crate::config::Action,
) -> Result<StreamId, ApiError> {
    let who = caller(st, headers)?;
    let stream = stream_param(path)?;
    if !who.can(action, stream.as_str()) {
        return Err(crate::auth::forbidden(
            &who,
            action,
            &format!("stream {stream}"),
        ));
    }
    Ok(stream)
}

/// A stream id from the path.
pub(crate) fn stream_param(p: Result<Path<String>, PathRejection>) -> Result<StreamId, ApiError> {
    let s = path_param(p, "stream")?;
    if s == "$all" {
        // The global order is no stream: point to where it is.
        return Err(ApiError::invalid(
            "stream",
            "$all is the global order, not a stream: read it at GET /all and follow it at \
             GET /subscriptions/all",
        ));
    }
    StreamId::new(s).map_err(|e| ApiError::invalid("stream", e.reason))
}

/// A request body's share of `request_bodies_in_flight_max_bytes`, given back when dropped:
/// keep it until the request is answered.
pub(crate) type BodyCharge = Option<tokio::sync::OwnedSemaphorePermit>;

/// Reads a request body up to `max` bytes: `payload_too_large` beyond. The body is charged
/// against the server's request-body budget first by its `Content-Length`, or frame by frame
/// as it arrives without one; a body that does not fit is `503 overloaded` at once, and one
/// that takes longer than `request_body_read_timeout_ms` is `408 request_timeout`.
pub(crate) async fn read_body(
    st: &AppState,
    body: Body,
    headers: &HeaderMap,
    max: u64,
) -> Result<(Bytes, BodyCharge), ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than {max} bytes; nothing was written"),
        )
        .with("limit", serde_json::json!(max))
    };
    let budget = st.body_bytes();
    let charge = |n: u64| -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        u32::try_from(n)
            .ok()
            .and_then(|n| budget.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| {
                st.metrics().body_refused();
                ApiError::new(
                    ErrorCode::Overloaded,
                    format!(
                        "the server holds as many request bodies as it may ({} bytes); retry shortly; nothing was written",
                        st.config().request_bodies_in_flight_max_bytes
                    ),
                )
            })
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut held: BodyCharge = None;
    if let Some(len) = declared {
        if len > max {
            return Err(too_large());
        }
        held = Some(charge(len)?);
    }
    let read = async {
        let mut body = body;
        let mut frames: Vec<Bytes> = Vec::new();
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| ApiError::invalid("body", format!("could not be read: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total += data.len() as u64;
            if total > max {
                return Err(too_large());
            }
            if declared.is_none() && !data.is_empty() {
                let more = charge(data.len() as u64)?;
                match &mut held {
                    Some(h) => h.merge(more),
                    None => held = Some(more),
                }
            }
            frames.push(data);
        }
        Ok(match frames.len() {
            0 => Bytes::new(),
            1 => frames.pop().unwrap_or_default(),
            _ => {
                let mut all = bytes::BytesMut::with_capacity(total as usize);
                for f in &frames {
                    all.extend_from_slice(f);
                }
                all.freeze()
            }
        })
    };
    let timeout = std::time::Duration::from_millis(st.config().request_body_read_timeout_ms);
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(bytes)) => Ok((bytes, held)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} ms; nothing was written",
                timeout.as_millis()
            ),
        )),
    }
}

/// A JSON response.
pub(crate) fn json_response(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("serializing a response: {e}")).into_response(),
    }
}

/// A JSON response with a `Link: <next>; rel="next"` header when there is a next page.
pub(crate) fn paged_response(value: &impl serde::Serialize, next: Option<&str>) -> Response {
    let mut res = json_response(value);
    if let Some(n) = next {
        if let Ok(v) = HeaderValue::from_str(&format!("<{n}>; rel=\"next\"")) {
            res.headers_mut().insert(header::LINK, v);
        }
    }
    res
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_log_never_names_a_data_subject() {
        assert_eq!(
            super::logged_path("/subjects/customer-42"),
            "/subjects/{subject}"
        );
        assert_eq!(
            super::logged_path("/streams/customer-42"),
            "/streams/customer-42"
        );
    }
}
