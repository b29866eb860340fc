//! The names of server-sent events on a subscription (the `event:` field).

/// An event: `data` is one [`EventJson`](crate::EventJson), `id` its position (or its stream
/// version on a stream subscription).
pub const EVENT: &str = "event";

/// The subscriber fell behind and is disconnected: `data` holds `resumeAfter`, the id to give
/// as `Last-Event-ID` when reconnecting.
pub const LAGGED: &str = "lagged";

/// The subscription failed: `data` is a problem document with `resumeAfter`; the server
/// closes the stream after it.
pub const ERROR: &str = "error";
