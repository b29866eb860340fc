//! Why a request failed.

use std::path::PathBuf;

use serde_json::Value;
use strata_wire::ErrorCode;

/// Why a request to the server failed. Each variant carries what caused it: the underlying
/// error as its [`source`](std::error::Error::source), or the server's problem document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL is not an `http://` or `https://` URL.
    #[error("the server URL must start with http:// or https://, not {url:?}")]
    InvalidUrl {
        /// The URL given.
        url: String,
    },
    /// The CA certificate file could not be read.
    #[error("cannot read the CA certificate {}", path.display())]
    ReadCaCert {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The CA certificate file is not a PEM certificate.
    #[error("the CA certificate {} is not a PEM certificate", path.display())]
    InvalidCaCert {
        /// The file.
        path: PathBuf,
        /// What the TLS stack said.
        source: reqwest::Error,
    },
    /// The HTTP client could not be set up (its TLS configuration, say).
    #[error("cannot set up the HTTP client")]
    Setup {
        /// What the HTTP stack said.
        source: reqwest::Error,
    },
    /// The server could not be reached, the connection broke, or it timed out. An append that
    /// fails so may or may not have been written: retry it with the same event ids, which
    /// appends the events at most once.
    #[error("cannot reach the server at {url}")]
    Transport {
        /// The server's base URL.
        url: String,
        /// What the HTTP stack said (its own source says more: refused, reset, TLS, ...).
        source: reqwest::Error,
    },
    /// The server answered with a problem document (RFC 9457).
    #[error("the server answered {status} {}: {detail}", code_text(.code, .doc))]
    Problem {
        /// The HTTP status.
        status: u16,
        /// The document's `code`; `None` for a code this client does not know, or an answer
        /// that is no problem document (a proxy's error page, say; then `detail` holds it).
        code: Option<ErrorCode>,
        /// The document's `detail`: a sentence for a person.
        detail: String,
        /// The whole document, with the members that go with the code (`field`, `actual`,
        /// ...).
        doc: Value,
    },
    /// The server's answer is not JSON of the shape this client expects.
    #[error("the server's answer is not what this client expects")]
    UnexpectedAnswer {
        /// What the JSON parser found.
        source: serde_json::Error,
    },
    /// The server sent an event this client cannot read back.
    #[error("the server sent an event this client cannot read")]
    UnreadableEvent {
        /// What was wrong with it.
        source: strata_wire::EventError,
    },
    /// An answer is larger than the client reads
    /// ([`ANSWER_MAX_BYTES`](crate::limits::ANSWER_MAX_BYTES)); nothing of it was used.
    #[error("the server's answer is larger than {limit_bytes} bytes, the most this client reads")]
    AnswerTooLarge {
        /// The limit.
        limit_bytes: u64,
    },
    /// A server-sent event is larger than the client buffers
    /// ([`SSE_FRAME_MAX_BYTES`](crate::limits::SSE_FRAME_MAX_BYTES)).
    #[error(
        "a server-sent event is larger than {limit_bytes} bytes, the most this client buffers"
    )]
    EventTooLarge {
        /// The limit.
        limit_bytes: u64,
    },
}

fn code_text<'a>(code: &Option<ErrorCode>, doc: &'a Value) -> &'a str {
    match code {
        Some(c) => c.as_str(),
        None => doc["code"].as_str().unwrap_or("(no code)"),
    }
}

impl ClientError {
    /// Whether the server answered with this error code.
    ///
    /// ```
    /// use strata_client::{ClientError, ErrorCode};
    /// let e = ClientError::problem(409, br#"{"code":"wrong_expected_version","detail":"no"}"#);
    /// assert!(e.is(ErrorCode::WrongExpectedVersion));
    /// assert!(!e.is(ErrorCode::StreamNotFound));
    /// ```
    pub fn is(&self, code: ErrorCode) -> bool {
        matches!(self, ClientError::Problem { code: Some(c), .. } if *c == code)
    }

    /// Whether nothing accepted the connection at the server's address (no server listens
    /// there): no request reached it.
    pub fn is_refused(&self) -> bool {
        let ClientError::Transport { source, .. } = self else {
            return false;
        };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::ConnectionRefused {
                    return true;
                }
            }
            cause = c.source();
        }
        false
    }

    /// Whether the server refused the request for want of a valid token (`401
    /// unauthorized`), whether or not the answer was a problem document.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ClientError::Problem { status: 401, .. }) || self.is(ErrorCode::Unauthorized)
    }

    /// Whether the server knew the token but refused it this request (`403 forbidden`).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, ClientError::Problem { status: 403, .. }) || self.is(ErrorCode::Forbidden)
    }

    /// One line for a person: what went wrong and what to do. For a connection nothing
    /// accepted it names the URL and suggests starting a server, instead of the HTTP stack's
    /// chain of causes.
    pub fn summary(&self) -> String {
        match self {
            ClientError::Transport { url, .. } if self.is_refused() => format!(
                "nothing answers at {url}: is a Strata server (`strata serve`) running there?"
            ),
            _ if self.is_unauthorized() => format!(
                "the server at this URL needs an API token: {}",
                self.detail_or_status()
            ),
            _ if self.is_forbidden() => format!(
                "the server refused this token the request: {}",
                self.detail_or_status()
            ),
            other => chain(other),
        }
    }

    fn detail_or_status(&self) -> String {
        match self {
            ClientError::Problem { detail, status, .. } if detail.is_empty() => {
                format!("HTTP {status}")
            }
            ClientError::Problem { detail, .. } => detail.clone(),
            other => other.to_string(),
        }
    }

    /// The error for an answer with `status` (not a success) and `body`: a problem document
    /// when the body is one, else a [`ClientError::Problem`] without a code whose `detail` is
    /// the body's text.
    pub fn problem(status: u16, body: &[u8]) -> ClientError {
        let doc: Value = match serde_json::from_slice(body) {
            Ok(doc @ Value::Object(_)) => doc,
            _ => serde_json::json!({ "detail": String::from_utf8_lossy(body) }),
        };
        Self::from_problem_doc(status, doc)
    }

    /// The error for a problem document `doc` that arrived with `status`.
    pub(crate) fn from_problem_doc(status: u16, doc: Value) -> ClientError {
        ClientError::Problem {
            status,
            code: doc["code"].as_str().and_then(ErrorCode::from_code),
            detail: doc["detail"].as_str().unwrap_or("").to_owned(),
            doc,
        }
    }
}

/// `e` and its sources, joined by `": "`, for the `String`s of the store's error types.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
