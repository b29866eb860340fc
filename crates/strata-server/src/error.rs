//! Errors as RFC 9457 problem documents, each with a stable `code`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use strata_core::{AppendError, ReadError};

pub use strata_wire::{ErrorCode, PROBLEM_JSON};

/// The HTTP status of `code`.
pub(crate) fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An error answered as a problem document. Build with the constructors; `From` conversions
/// map the store's typed errors.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// A sentence a person understands.
    pub detail: String,
    /// Extra members of the document (`field`, `expected`, `actual`, ...).
    pub extra: Map<String, Value>,
    /// For internal errors: what really happened, logged once, never sent.
    pub internal: Option<String>,
    /// Seconds after which the same request may succeed, sent as `Retry-After` (a backend that
    /// is unreachable or dropped the connection; not a store stopped after an I/O error).
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    /// An error with `code` and `detail`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            detail: detail.into(),
            extra: Map::new(),
            internal: None,
            retry_after_s: None,
        }
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
        let mut e = ApiError::new(
            ErrorCode::Internal,
            "the server failed to handle the request; the details are in its log",
        );
        e.internal = Some(what.into());
        e
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
        }
        doc
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(what) = &self.internal {
            // The one place internal errors are logged; the request span carries the request id.
            tracing::error!(code = self.code.as_str(), error = %what, "request failed");
        }
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
        match e {
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
            AppendError::Stopped(why) => ApiError::new(
                ErrorCode::Unavailable,
                format!("the store has stopped accepting appends until it is reopened: {why}"),
            ),
            AppendError::Unavailable(why) => ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the store is unavailable: {why}; nothing was acknowledged, and retrying \
                     with the same event ids appends the events at most once"
                ),
            )
            .retry_after(crate::limits::UNAVAILABLE_RETRY_AFTER_S),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e.clone() {
            ReadError::StreamNotFound(s) => ApiError::new(
                ErrorCode::StreamNotFound,
                format!("stream {s} has no events"),
            )
            .with("streamId", json!(s.as_str())),
            ReadError::InvalidInput(i) => ApiError::invalid(i.field, i.reason),
            ReadError::Limit(l) => {
                ApiError::new(ErrorCode::InvalidRequest, l.to_string()).with("limit", json!(l.max))
            }
            ReadError::Unavailable(why) => ApiError::new(
                ErrorCode::Unavailable,
                format!("the store is unavailable: {why}"),
            )
            .retry_after(crate::limits::UNAVAILABLE_RETRY_AFTER_S),
            ReadError::Corruption { position, .. } => {
                let what = match position {
                    Some(p) => format!("the stored event at position {p}"),
                    None => "a stored event".to_owned(),
                };
                let mut error = ApiError::new(
                    ErrorCode::Corruption,
                    format!(
                        "{what} failed its integrity checks and cannot be read; the server's log names where it is stored"
                    ),
                )
                .with("position", json!(position.map(|p| p.0)));
                // The file and offset are for the operator's log only.
                error.internal = Some(e.to_string());
                error
            }
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
    fn an_unreachable_backend_is_503_with_retry_after() {
        let one = Some(crate::limits::UNAVAILABLE_RETRY_AFTER_S.to_string());
        let unavailable = "unavailable".to_owned();
        assert_eq!(
            retry_after(AppendError::Unavailable("57P01".to_owned()).into()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                one.clone(),
                unavailable.clone()
            )
        );
        // What an SSE stream's last frame carries, too.
        assert_eq!(
            retry_after(ReadError::Unavailable("57P01".to_owned()).into()),
            (StatusCode::SERVICE_UNAVAILABLE, one, unavailable.clone())
        );
        // A store stopped after an I/O error stays stopped until reopened: no Retry-After.
        assert_eq!(
            retry_after(AppendError::Stopped("EIO".to_owned()).into()),
            (StatusCode::SERVICE_UNAVAILABLE, None, unavailable)
        );
        assert_eq!(
            retry_after(ReadError::Storage("bad".to_owned()).into()),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "internal".to_owned()
            )
        );
    }
}
