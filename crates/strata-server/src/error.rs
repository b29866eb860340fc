//! Errors as RFC 9457 problem documents, each with a stable `code`.
//!
//! A client is told what failed in general terms, never a file path, an operating-system error
//! or a backend's message: those go to [`ApiError::internal`], which the router's layer logs
//! once (at `ERROR` for a 500, `WARN` for a 503) with the request's id. The same id is the
//! document's `requestId` and the response's `x-request-id`, so an operator finds the log line
//! a client reports.

use axum::body::Bytes;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{Either, Full};
use serde_json::{json, Map, Value};
use strata_core::{AccessDenied, AppendError, Corruption, ReadError};

pub use strata_wire::{ErrorCode, PROBLEM_JSON};

/// The HTTP status of `code`.
pub(crate) fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An error answered as a problem document. Build with the constructors; `From` conversions
/// map the store's typed errors. Answered by a route of [`crate::app`], it gets its
/// `requestId` and its `internal` detail is logged by the router's layer; a route outside
/// that router gets neither.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// A sentence a person understands.
    pub detail: String,
    /// Extra members of the document (`field`, `expected`, `actual`, ...).
    pub extra: Map<String, Value>,
    /// What really happened (a store's error, with its file path or database message): logged
    /// once with the request id, never sent.
    pub internal: Option<String>,
    /// Seconds after which the same request may succeed, sent as `Retry-After` (a backend that
    /// is unreachable or dropped the connection; not a store stopped after an I/O error).
    pub retry_after_s: Option<u32>,
    /// The request's id (its `x-request-id`), sent as `requestId`. The router's layer sets it
    /// on every problem it answers; a subscription's last `error` event carries it too.
    pub request_id: Option<String>,
}

/// The header that carries a request's id, the caller's or a new UUID.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl ApiError {
    /// An error with `code` and `detail`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            detail: detail.into(),
            extra: Map::new(),
            internal: None,
            retry_after_s: None,
            request_id: None,
        }
    }

    /// Keeps `what` (the store's own error) for the server's log; the client sees `detail`.
    pub fn with_internal(mut self, what: impl Into<String>) -> Self {
        self.internal = Some(what.into());
        self
    }

    /// Sends `Retry-After: seconds` with the answer.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// `invalid_request` naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl AsRef<str>) -> Self {
        let field = field.into();
        let reason = reason.as_ref();
        let detail = format!("invalid {field}: {reason}");
        ApiError::new(ErrorCode::InvalidRequest, detail)
            .with("field", Value::String(field))
            .with("reason", Value::String(reason.to_owned()))
    }

    /// `internal`: the client gets a generic sentence, the log gets `what`.
    pub fn internal(what: impl Into<String>) -> Self {
        ApiError::new(
            ErrorCode::Internal,
            "the server failed to handle the request; its log has the details under this \
             request's id",
        )
        .with_internal(what)
    }

    /// Adds a member to the document.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// The problem document.
    pub fn to_json(&self) -> Value {
        let mut doc = json!({
            "type": format!("urn:strata:problem:{}", self.code.as_str()),
            "title": self.code.title(),
            "status": self.code.status(),
            "code": self.code.as_str(),
            "detail": self.detail,
        });
        if let Value::Object(m) = &mut doc {
            for (k, v) in &self.extra {
                m.insert(k.clone(), v.clone());
            }
            if let Some(id) = &self.request_id {
                m.insert("requestId".to_owned(), Value::String(id.clone()));
            }
        }
        doc
    }

    /// Logs what really happened, if anything was kept for the log: at `ERROR` for a 500, at
    /// `WARN` otherwise (a 503: the store is stopped or unreachable), with the request id.
    pub(crate) fn log(&self) {
        let Some(what) = &self.internal else {
            return;
        };
        let request_id = self.request_id.as_deref().unwrap_or("-");
        let code = self.code.as_str();
        if self.code.status() == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(request_id, code, error = %what, "request failed");
        } else {
            tracing::warn!(request_id, code, error = %what, "request failed");
        }
    }
}

/// The router's layer for problem answers, outside the one that puts `x-request-id` on every
/// response: gives the problem its `requestId` (the header's value) and logs its internal
/// detail once. Any other response passes as it is.
pub(crate) fn finish_problem<B>(res: Response<B>) -> Response<Either<B, Full<Bytes>>> {
    let (mut parts, body) = res.into_parts();
    let Some(mut error) = parts.extensions.remove::<ApiError>() else {
        return Response::from_parts(parts, Either::Left(body));
    };
    error.request_id = parts
        .headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    error.log();
    if error.request_id.is_none() {
        return Response::from_parts(parts, Either::Left(body));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    let doc = Full::new(Bytes::from(error.to_json().to_string()));
    Response::from_parts(parts, Either::Right(doc))
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(self.code);
        let body = self.to_json().to_string();
        let mut res = (status, body).into_response();
        // For the metrics layer, which counts some codes.
        res.extensions_mut().insert(self.code);
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        let retry_after_s =
            self.retry_after_s
                .or((self.code == ErrorCode::Overloaded)
                    .then_some(crate::limits::SERVER_RETRY_AFTER_S));
        if let Some(seconds) = retry_after_s {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.code == ErrorCode::Unauthorized {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"strata\""),
            );
        }
        // For `finish_problem`, which adds the request id and logs `internal` once.
        res.extensions_mut().insert(self);
        res
    }
}

impl From<strata_wire::BodyError> for ApiError {
    fn from(e: strata_wire::BodyError) -> Self {
        ApiError::invalid(e.field(), e.reason())
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match e.clone() {
            AppendError::WrongExpectedVersion {
                stream,
                expected,
                actual,
            } => ApiError::new(
                ErrorCode::WrongExpectedVersion,
                format!(
                    "stream {stream} was expected at {expected} but is at {actual}; nothing was written"
                ),
            )
            .with("streamId", json!(stream.as_str()))
            .with("expected", strata_wire::expected_to_json(expected))
            .with("actual", json!(actual.0)),
            AppendError::EventIdConflict { event_id, stream } => ApiError::new(
                ErrorCode::EventIdConflict,
                format!(
                    "event id {event_id} is already used by another event; nothing was written to {stream}"
                ),
            )
            .with("eventId", json!(event_id)),
            AppendError::InvalidInput(i) => ApiError::invalid(i.field, i.reason),
            AppendError::Limit(l) => ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("{l}; nothing was written"),
            )
            .with("what", json!(l.what))
            .with("limit", json!(l.max))
            .with("actual", json!(l.actual)),
            AppendError::Stopped(_) => ApiError::new(
                ErrorCode::Unavailable,
                "the store stopped after a storage failure and refuses appends until it is \
                 reopened; nothing was written",
            )
            .with_internal(e.to_string()),
            AppendError::Unavailable(_) => ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the store is unavailable: retry after {} s with the same event ids; \
                     nothing was acknowledged, and the retry appends the events at most once",
                    crate::limits::UNAVAILABLE_RETRY_AFTER_S
                ),
            )
            .retry_after(crate::limits::UNAVAILABLE_RETRY_AFTER_S)
            .with_internal(e.to_string()),
            AppendError::Race { .. } => ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the append raced with concurrent appends and wrote nothing: retry after {} s \
                     with the same event ids",
                    crate::limits::UNAVAILABLE_RETRY_AFTER_S
                ),
            )
            .retry_after(crate::limits::UNAVAILABLE_RETRY_AFTER_S)
            .with_internal(e.to_string()),
            AppendError::Denied(d) => denied(d),
            AppendError::StreamTombstoned { stream } => tombstoned(&stream),
            AppendError::StreamNotFound(s) => ApiError::new(
                ErrorCode::StreamNotFound,
                format!("stream {s} has no events; nothing was written"),
            )
            .with("streamId", json!(s.as_str())),
            AppendError::Corruption(c) => corruption(
                &c,
                ", so this append (a retry of its event id) cannot be checked against it and \
                 wrote nothing",
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// `410 stream_tombstoned`: the stream was hard-deleted.
fn tombstoned(stream: &strata_core::StreamId) -> ApiError {
    ApiError::new(
        ErrorCode::StreamTombstoned,
        format!("stream {stream} is tombstoned: it can never be read or written again"),
    )
    .with("streamId", json!(stream.as_str()))
}

/// The store behind the server refused the server itself (a server in front of another one
/// whose token is wrong, a database role without rights). The caller's own credentials were
/// checked already and are fine, so answering `401`/`403` would send them to fix the wrong
/// thing: it is `503`, the operator's to fix, and the store's words go to the server's log.
fn denied(d: AccessDenied) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "the store behind this server refused the server's own credentials; nothing was \
         read or written (the server's log says why, its operator has to fix its configuration)",
    )
    .with_internal(d.to_string())
}

/// `corruption`, naming the event's position when known; where the record is kept (a file
/// and offset, a table row) goes to the operator's log only.
fn corruption(c: &Corruption, so: &str) -> ApiError {
    let what = match c.position {
        Some(p) => format!("the stored event at position {p}"),
        None => "a stored event".to_owned(),
    };
    ApiError::new(
        ErrorCode::Corruption,
        format!(
            "{what} failed its integrity checks{so}; the server's log names where it is stored"
        ),
    )
    .with("position", json!(c.position.map(|p| p.0)))
    .with_internal(c.to_string())
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e.clone() {
            ReadError::StreamNotFound(s) => ApiError::new(
                ErrorCode::StreamNotFound,
                format!("stream {s} has no events"),
            )
            .with("streamId", json!(s.as_str())),
            ReadError::StreamTombstoned(s) => tombstoned(&s),
            ReadError::InvalidInput(i) => ApiError::invalid(i.field, i.reason),
            ReadError::Limit(l) => {
                ApiError::new(ErrorCode::InvalidRequest, l.to_string()).with("limit", json!(l.max))
            }
            ReadError::Unavailable(_) => ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the store is unavailable: retry after {} s",
                    crate::limits::UNAVAILABLE_RETRY_AFTER_S
                ),
            )
            .retry_after(crate::limits::UNAVAILABLE_RETRY_AFTER_S)
            .with_internal(e.to_string()),
            ReadError::Corruption(c) => corruption(&c, " and cannot be read"),
            ReadError::Denied(d) => denied(d),
            other => ApiError::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_after(e: ApiError) -> (StatusCode, Option<String>, String) {
        let code = e.to_json()["code"].as_str().unwrap_or_default().to_owned();
        let res = e.into_response();
        let header = res
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        (res.status(), header, code)
    }

    #[test]
    fn corruption_names_the_position_and_keeps_the_place_for_the_log() {
        let c = Corruption::new(
            strata_core::CorruptionLocation::Row {
                table: "strata.events".to_owned(),
                key: "7".to_owned(),
            },
            Some(strata_core::Position(7)),
            "column 5 is not UTF-8",
        );
        // A read that meets the row, and an append retrying the event's id.
        for e in [
            ApiError::from(ReadError::from(c.clone())),
            ApiError::from(AppendError::from(c)),
        ] {
            assert_eq!(e.code, ErrorCode::Corruption);
            let doc = e.to_json();
            assert_eq!(doc["position"], 7);
            let text = doc.to_string();
            assert!(text.contains("position 7"), "{text}");
            for secret in ["strata.events", "row", "UTF-8"] {
                assert!(!text.contains(secret), "shows {secret}: {text}");
            }
            let logged = e.internal.unwrap_or_default();
            assert!(logged.contains("table strata.events, row 7"), "{logged}");
        }
    }

    #[test]
    fn an_unreachable_backend_is_503_with_retry_after() {
        let one = Some(crate::limits::UNAVAILABLE_RETRY_AFTER_S.to_string());
        let unavailable = "unavailable".to_owned();
        assert_eq!(
            retry_after(AppendError::Unavailable("57P01".to_owned().into()).into()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                one.clone(),
                unavailable.clone()
            )
        );
        // What an SSE stream's last frame carries, too.
        assert_eq!(
            retry_after(ReadError::Unavailable("57P01".to_owned().into()).into()),
            (StatusCode::SERVICE_UNAVAILABLE, one, unavailable.clone())
        );
        // A store stopped after an I/O error stays stopped until reopened: no Retry-After.
        assert_eq!(
            retry_after(AppendError::Stopped("EIO".to_owned().into()).into()),
            (StatusCode::SERVICE_UNAVAILABLE, None, unavailable)
        );
        assert_eq!(
            retry_after(ReadError::Storage("bad".to_owned().into()).into()),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "internal".to_owned()
            )
        );
    }

    #[test]
    fn a_store_refusing_the_server_is_503_not_the_callers_401() {
        for e in [
            ApiError::from(AppendError::from(AccessDenied::Unauthenticated(
                "this server needs an API token".to_owned(),
            ))),
            ApiError::from(ReadError::from(AccessDenied::Forbidden(
                "token ops may not read stream audit-1".to_owned(),
            ))),
        ] {
            let text = e.to_json().to_string();
            assert!(
                !text.contains("token"),
                "shows the inner store's words: {text}"
            );
            let logged = e.internal.clone().unwrap_or_default();
            assert!(logged.contains("token"), "{logged}");
            let (status, retry, code) = retry_after(e);
            assert_eq!((status, retry), (StatusCode::SERVICE_UNAVAILABLE, None));
            assert_eq!(code, "unavailable");
        }
    }
}
