//! The stable error codes of problem documents.

/// The media type of problem documents (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The stable, machine-readable error codes the server answers with, in a problem document's
/// `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: the request was malformed; `field` names what was wrong.
    InvalidRequest,
    /// 401: no token, or a token the server does not know.
    Unauthorized,
    /// 403: the token is known but lacks the right for this stream or endpoint.
    Forbidden,
    /// 404: the stream has no events.
    StreamNotFound,
    /// 410: the stream is tombstoned: it can never be read or written again.
    StreamTombstoned,
    /// 404: no such endpoint.
    NotFound,
    /// 404: the server hosts no projection of this name.
    ProjectionNotFound,
    /// 405: the endpoint exists but not with this method.
    MethodNotAllowed,
    /// 409: optimistic concurrency; carries `expected` and `actual`.
    WrongExpectedVersion,
    /// 409: an event id is already used by a different event.
    EventIdConflict,
    /// 413: the body, or the append, is over a limit.
    PayloadTooLarge,
    /// 409: a rebuild of this projection is running already.
    RebuildInProgress,
    /// 409: a scavenge of the store is running already (started by this server or another
    /// process).
    ScavengeInProgress,
    /// 501: the store behind the server cannot scavenge.
    ScavengeUnsupported,
    /// 501: the server was started without an archive (`strata serve --archive URL`).
    ArchiveUnconfigured,
    /// 501: the server was started without a master key, so it seals nothing and forgets no
    /// one (`strata serve --master-key-file PATH`, docs/gdpr.md).
    EncryptionUnconfigured,
    /// 409: a projection had not passed the position asked for (`atLeast`) when the wait
    /// ended; carries `projection`, `position`, `reached` and `waitedMs`, like the library's
    /// `ProjectionError::NotYetConsistent`.
    NotYetConsistent,
    /// 429: too many open subscriptions for this token (or this server).
    TooManySubscriptions,
    /// 500: a failure inside the server; the details are in its log, not in the answer.
    Internal,
    /// 503: the store cannot serve right now (stopped after an I/O error, database down).
    Unavailable,
    /// 503: the server is at one of its limits (open connections, request bodies in flight);
    /// comes with `Retry-After`.
    Overloaded,
    /// 408: the request body did not arrive in time.
    RequestTimeout,
    /// 414: the request's URI is longer than the server reads.
    UriTooLong,
    /// 431: the request's head (request line and headers) is larger than the server reads.
    HeadersTooLarge,
    /// 500: a stored event failed its integrity checks; `position` names it when known. The
    /// file and offset are in the server's log, not in the answer.
    Corruption,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 25] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::StreamNotFound,
        ErrorCode::StreamTombstoned,
        ErrorCode::NotFound,
        ErrorCode::ProjectionNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::WrongExpectedVersion,
        ErrorCode::EventIdConflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RebuildInProgress,
        ErrorCode::ScavengeInProgress,
        ErrorCode::ScavengeUnsupported,
        ErrorCode::ArchiveUnconfigured,
        ErrorCode::EncryptionUnconfigured,
        ErrorCode::NotYetConsistent,
        ErrorCode::TooManySubscriptions,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::Overloaded,
        ErrorCode::RequestTimeout,
        ErrorCode::UriTooLong,
        ErrorCode::HeadersTooLarge,
        ErrorCode::Corruption,
    ];

    /// The code as it appears in documents.
    ///
    /// ```
    /// use strata_wire::ErrorCode;
    /// assert_eq!(ErrorCode::WrongExpectedVersion.as_str(), "wrong_expected_version");
    /// assert_eq!(ErrorCode::from_code("wrong_expected_version"), Some(ErrorCode::WrongExpectedVersion));
    /// assert_eq!(ErrorCode::from_code("no_such_code"), None);
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::StreamNotFound => "stream_not_found",
            ErrorCode::StreamTombstoned => "stream_tombstoned",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ProjectionNotFound => "projection_not_found",
            ErrorCode::RebuildInProgress => "rebuild_in_progress",
            ErrorCode::ScavengeInProgress => "scavenge_in_progress",
            ErrorCode::ScavengeUnsupported => "scavenge_unsupported",
            ErrorCode::ArchiveUnconfigured => "archive_unconfigured",
            ErrorCode::EncryptionUnconfigured => "encryption_unconfigured",
            ErrorCode::NotYetConsistent => "not_yet_consistent",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::WrongExpectedVersion => "wrong_expected_version",
            ErrorCode::EventIdConflict => "event_id_conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::Corruption => "corruption",
        }
    }

    /// The code a document's `code` names; `None` for one this version does not know.
    pub fn from_code(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::StreamNotFound | ErrorCode::NotFound | ErrorCode::ProjectionNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::StreamTombstoned => 410,
            ErrorCode::WrongExpectedVersion
            | ErrorCode::EventIdConflict
            | ErrorCode::RebuildInProgress
            | ErrorCode::ScavengeInProgress
            | ErrorCode::NotYetConsistent => 409,
            ErrorCode::ScavengeUnsupported
            | ErrorCode::ArchiveUnconfigured
            | ErrorCode::EncryptionUnconfigured => 501,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::TooManySubscriptions => 429,
            ErrorCode::Internal | ErrorCode::Corruption => 500,
            ErrorCode::Unavailable | ErrorCode::Overloaded => 503,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::UriTooLong => 414,
            ErrorCode::HeadersTooLarge => 431,
        }
    }

    /// The problem document's `title`.
    pub fn title(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "Invalid request",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::StreamNotFound => "Stream not found",
            ErrorCode::StreamTombstoned => "Stream tombstoned",
            ErrorCode::NotFound => "Not found",
            ErrorCode::ProjectionNotFound => "Projection not found",
            ErrorCode::RebuildInProgress => "Rebuild in progress",
            ErrorCode::ScavengeInProgress => "Scavenge in progress",
            ErrorCode::ScavengeUnsupported => "Scavenge unsupported",
            ErrorCode::ArchiveUnconfigured => "No archive configured",
            ErrorCode::EncryptionUnconfigured => "No master key configured",
            ErrorCode::NotYetConsistent => "Not yet consistent",
            ErrorCode::MethodNotAllowed => "Method not allowed",
            ErrorCode::WrongExpectedVersion => "Wrong expected version",
            ErrorCode::EventIdConflict => "Event id conflict",
            ErrorCode::PayloadTooLarge => "Payload too large",
            ErrorCode::TooManySubscriptions => "Too many subscriptions",
            ErrorCode::Internal => "Internal error",
            ErrorCode::Unavailable => "Unavailable",
            ErrorCode::Overloaded => "Overloaded",
            ErrorCode::RequestTimeout => "Request timeout",
            ErrorCode::UriTooLong => "URI too long",
            ErrorCode::HeadersTooLarge => "Request header fields too large",
            ErrorCode::Corruption => "Corruption",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(c.as_str()), Some(c));
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert!((400..600).contains(&c.status()), "{c}");
        }
    }
}
