//! The OpenAPI document served at `/openapi.json`. It is written by hand; a test checks that its
//! paths and methods are exactly [`crate::ROUTES`], and that each is routed.

use serde_json::{json, Map, Value};
use strata_core::limits;
use strata_wire::ErrorCode;

use crate::limits as server_limits;

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

fn ok(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

fn sse(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "text/event-stream": { "schema": {
            "type": "object",
            "description": "One server-sent event.",
            "required": ["data"],
            "properties": {
                "event": { "type": "string", "enum": ["event", "lagged", "error"] },
                "id": { "type": "string", "pattern": "^[0-9]+$" },
                "data": { "type": "string", "description": "An Event (`event`), a resume notice (`lagged`) or a problem document (`error`), as JSON." },
                "retry": { "type": "integer" }
            }
        } } }
    })
}

fn responses(success: (&str, Value), errors: &[(&str, &str)]) -> Value {
    let mut m = Map::new();
    m.insert(success.0.to_owned(), success.1);
    for (code, d) in errors {
        m.insert((*code).to_owned(), problem(d));
    }
    Value::Object(m)
}

const AUTH_ERRORS: [(&str, &str); 2] = [
    ("401", "No token, or an unknown token (`unauthorized`)."),
    ("403", "The token lacks the right (`forbidden`)."),
];

fn errs(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![(
        "400",
        "Invalid request (`invalid_request`, naming `field`).",
    )];
    v.extend(AUTH_ERRORS);
    v.extend_from_slice(extra);
    v.push((
        "503",
        "The store is unavailable (`unavailable`, with `Retry-After` when a retry may succeed), or the server is at one of its limits (`overloaded`, with `Retry-After`).",
    ));
    v
}

fn param(name: &str, place: &str, description: &str, schema: Value, required: bool) -> Value {
    json!({ "name": name, "in": place, "description": description, "required": required, "schema": schema })
}

/// A stream id: no whitespace or control characters, not starting with `$`. The limit is
/// 255 bytes of UTF-8; 63 characters always fit in it.
fn stream_id_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": limits::STREAM_ID_MAX_BYTES + strata_core::METASTREAM_PREFIX.len(),
        "pattern": "^(\\$\\$)?[^$\\s\\x00-\\x1f\\x7f-\\x9f][^\\s\\x00-\\x1f\\x7f-\\x9f]*$"
    })
}

fn stream_path_param() -> Value {
    param(
        "stream",
        "path",
        "The stream id, percent-encoded: 1 to 255 bytes of UTF-8, no whitespace or control characters, not starting with `$` (except a metastream: `$$` and a stream id).",
        stream_id_schema(),
        true,
    )
}

fn expected_param() -> Value {
    param(
        "expectedVersion",
        "query",
        "`any` (the default), `no_stream`, `stream_exists` or a version.",
        json!({ "type": "string", "pattern": "^(any|no_stream|stream_exists|[0-9]+)$" }),
        false,
    )
}

fn projection_param() -> Value {
    param(
        "name",
        "path",
        "The projection's name.",
        json!({ "type": "string", "minLength": 1, "maxLength": server_limits::PROJECTION_NAME_MAX_BYTES }),
        true,
    )
}

fn u64_schema() -> Value {
    json!({ "type": "integer", "minimum": 0, "maximum": u64::MAX })
}

fn common_read_params() -> Vec<Value> {
    vec![
        param(
            "direction",
            "query",
            "Oldest first (`forward`, the default) or newest first.",
            json!({ "type": "string", "enum": ["forward", "backward"] }),
            false,
        ),
        param(
            "limit",
            "query",
            "Most events in the page (default 100).",
            json!({ "type": "integer", "minimum": 1, "maximum": limits::SERVER_PAGE_MAX_EVENTS }),
            false,
        ),
        param(
            "maxPosition",
            "query",
            "Only events at or below this global position (history as it was then).",
            u64_schema(),
            false,
        ),
        param(
            "asOf",
            "query",
            "Only events recorded at or before this time (RFC 3339); not with maxPosition.",
            json!({ "type": "string", "format": "date-time" }),
            false,
        ),
    ]
}

fn filter_params(with_category: bool, with_prefix: bool) -> Vec<Value> {
    let mut v = vec![param(
        "eventType",
        "query",
        "Only these event types (repeat the parameter for several).",
        json!({ "type": "array", "items": { "type": "string", "minLength": 1 }, "maxItems": limits::FILTER_MAX_TERMS }),
        false,
    )];
    if with_category {
        v.push(param(
            "category",
            "query",
            "Only streams of these categories (repeatable).",
            json!({ "type": "array", "items": { "type": "string" }, "maxItems": limits::FILTER_MAX_TERMS }),
            false,
        ));
    }
    if with_prefix {
        v.push(param(
            "prefix",
            "query",
            "Only streams whose id starts with this. A token limited to stream prefixes must give one inside them.",
            json!({ "type": "string", "minLength": 1, "maxLength": limits::FILTER_PREFIX_MAX_BYTES }),
            false,
        ));
    }
    for p in &mut v {
        p["style"] = json!("form");
        p["explode"] = json!(true);
    }
    v
}

fn start_params() -> Vec<Value> {
    vec![
        param(
            "from",
            "query",
            "`start` (every stored event first) or `end` (only new events; the default).",
            json!({ "type": "string", "enum": ["start", "end"] }),
            false,
        ),
        param(
            "after",
            "query",
            "Resume after this position (`$all`, categories) or version (a stream); wins over `from`.",
            u64_schema(),
            false,
        ),
        param(
            "Last-Event-ID",
            "header",
            "Set by SSE clients on reconnect: resume after this id (empty: none). Wins over `from` and `after`.",
            json!({ "type": "string", "pattern": "^([0-9]{1,19})?$" }),
            false,
        ),
        param(
            "access_token",
            "query",
            "The API token, for clients that cannot send an Authorization header (a browser's EventSource); never together with the header. Any string (percent-encoded) is looked up, including one that could not be a header value. URLs end up in logs and histories: prefer the header where you can.",
            json!({ "type": "string" }),
            false,
        ),
    ]
}

fn list_params() -> Vec<Value> {
    vec![
        param(
            "prefix",
            "query",
            "Only names starting with this.",
            json!({ "type": "string", "minLength": 1, "maxLength": limits::STREAM_ID_MAX_BYTES }),
            false,
        ),
        param(
            "after",
            "query",
            "Only names after this one (the `nextAfter` of the previous page).",
            json!({ "type": "string", "maxLength": limits::STREAM_ID_MAX_BYTES }),
            false,
        ),
        param(
            "limit",
            "query",
            "Most entries (default 100).",
            json!({ "type": "integer", "minimum": 1, "maximum": limits::LIST_PAGE_MAX_ENTRIES }),
            false,
        ),
    ]
}

fn projection_schema() -> Value {
    json!({
        "type": "object",
        "description": "A projection the server hosts: status, checkpoint, lag, last error and latest rebuild.",
        "required": ["name", "mode", "status", "lagEvents", "lagSeconds"],
        "properties": {
            "name": { "type": "string" },
            "mode": { "type": "string", "enum": ["inline", "async"] },
            "status": { "type": "string", "enum": ["running", "paused", "rebuilding", "failed"] },
            "checkpoint": { "type": "integer", "nullable": true, "description": "The last global position it has passed." },
            "lagEvents": { "type": "integer", "description": "Positions between the checkpoint and the store's head." },
            "lagSeconds": { "type": "number", "description": "Age of the oldest event not applied yet." },
            "lastError": { "type": "string", "nullable": true },
            "errorPosition": { "type": "integer", "nullable": true },
            "errorEventId": { "type": "string", "nullable": true },
            "rebuild": {
                "type": "object",
                "nullable": true,
                "description": "The latest rebuild started over HTTP.",
                "properties": {
                    "state": { "type": "string", "enum": ["running", "done", "failed"] },
                    "startedAt": { "type": "string", "format": "date-time" },
                    "finishedAt": { "type": "string", "format": "date-time", "nullable": true },
                    "appliedEvents": { "type": "integer" },
                    "position": { "type": "integer", "nullable": true },
                    "head": { "type": "integer", "nullable": true },
                    "remainingEvents": { "type": "integer" },
                    "eventsPerSecond": { "type": "number" },
                    "etaSeconds": { "type": "number", "nullable": true },
                    "elapsedSeconds": { "type": "number" },
                    "checkpoint": { "type": "integer", "nullable": true },
                    "error": { "type": "string", "nullable": true }
                }
            }
        }
    })
}

fn schemas() -> Value {
    let expected_version = json!({
        "description": "`any` (the default, when absent), `no_stream`, `stream_exists`, or the version the stream's last event must have. `null` is refused: it would switch the check off without a word.",
        "oneOf": [
            { "type": "string", "enum": ["any", "no_stream", "stream_exists"] },
            { "type": "integer", "minimum": 0, "maximum": u64::MAX }
        ]
    });
    let events = json!({ "type": "array", "minItems": 1, "maxItems": server_limits::SERVER_APPEND_EVENTS_MAX,
                         "items": { "$ref": "#/components/schemas/NewEvent" } });
    json!({
        "Problem": {
            "type": "object",
            "description": "An RFC 9457 problem document.",
            "required": ["type", "title", "status", "code", "detail"],
            "properties": {
                "type": { "type": "string" },
                "title": { "type": "string" },
                "status": { "type": "integer" },
                "code": { "type": "string", "enum": ErrorCode::ALL.map(ErrorCode::as_str) },
                "detail": { "type": "string", "description": "What failed, for a person. A 5xx says it in general terms: the store's own error (file paths, system or database messages) is only in the server's log, under the request id." },
                "requestId": { "type": "string", "description": "The request's id, the same as the `x-request-id` response header and the server's log lines for the request." },
                "field": { "type": "string" },
                "position": { "type": "integer", "nullable": true, "description": "`corruption`: the position of the event that failed its integrity checks, when known." },
                "expected": {},
                "actual": {}
            }
        },
        "JsonEvent": {
            "type": "object",
            "description": "An event with a JSON payload.",
            "additionalProperties": false,
            "required": ["eventType"],
            "properties": {
                "eventId": { "$ref": "#/components/schemas/EventId" },
                "eventType": { "$ref": "#/components/schemas/EventType" },
                "contentType": { "type": "string", "enum": ["application/json"], "description": "The default." },
                "data": { "description": "Any JSON value (`null` when absent), stored byte for byte." },
                "metadata": { "$ref": "#/components/schemas/Metadata" }
            }
        },
        "BinaryEvent": {
            "type": "object",
            "description": "An event with a payload of another content type (any printable ASCII media type).",
            "additionalProperties": false,
            "required": ["eventType", "contentType"],
            "properties": {
                "eventId": { "$ref": "#/components/schemas/EventId" },
                "eventType": { "$ref": "#/components/schemas/EventType" },
                "contentType": { "type": "string", "enum": ["application/octet-stream", "text/plain", "image/png", "application/protobuf"] },
                "dataBase64": { "type": "string", "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$",
                                "description": "The payload, base64 (padding optional; empty when absent)." },
                "metadata": { "$ref": "#/components/schemas/Metadata" }
            }
        },
        "EventId": {
            "type": "string", "format": "uuid",
            "not": { "enum": ["00000000-0000-0000-0000-000000000000"] },
            "description": "Give one to make retries idempotent; unique within one append; not the nil UUID."
        },
        "EventType": {
            "type": "string", "minLength": 1, "maxLength": limits::EVENT_TYPE_MAX_BYTES / 4,
            "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$",
            "description": "At most 255 bytes of UTF-8, no control characters."
        },
        "Metadata": { "type": "object", "description": "correlationId, causationId, userId, anything else (at most 64 KiB)." },
        "NewEvent": {
            "oneOf": [ { "$ref": "#/components/schemas/JsonEvent" }, { "$ref": "#/components/schemas/BinaryEvent" } ]
        },
        "AppendRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["events"],
            "properties": {
                "expectedVersion": expected_version.clone(),
                "events": events.clone()
            }
        },
        "BatchAppendRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["appends"],
            "properties": {
                "appends": {
                    "type": "array", "minItems": 1, "maxItems": server_limits::SERVER_BATCH_APPENDS_MAX,
                    "description": format!("At most {} events over all appends.", server_limits::SERVER_BATCH_EVENTS_MAX),
                    "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["streamId", "events"],
                        "properties": {
                            "streamId": { "type": "string" },
                            "expectedVersion": expected_version,
                            "events": events
                        }
                    }
                }
            }
        },
        "BatchAppendResult": {
            "type": "object",
            "required": ["results"],
            "properties": {
                "results": {
                    "type": "array",
                    "description": "One per append, in the request's order: the append's answer, or the problem document that append alone would have been answered with.",
                    "items": { "oneOf": [
                        { "$ref": "#/components/schemas/AppendResult" },
                        { "type": "object", "required": ["streamId", "error"],
                          "properties": { "streamId": { "type": "string" }, "error": { "$ref": "#/components/schemas/Problem" } } }
                    ] }
                }
            }
        },
        "AppendResult": {
            "type": "object",
            "required": ["streamId", "version", "positions", "replayed"],
            "properties": {
                "streamId": { "type": "string" },
                "version": { "type": "integer", "description": "The stream's version after the append." },
                "positions": { "type": "array", "items": { "type": "integer" } },
                "replayed": { "type": "boolean", "description": "An idempotent retry: every event was stored already under its eventId, nothing was written, and this is the original answer." }
            }
        },
        "Event": {
            "type": "object",
            "required": ["eventId", "streamId", "category", "eventType", "version", "position", "recordedAt", "contentType", "metadata"],
            "properties": {
                "eventId": { "type": "string", "format": "uuid" },
                "streamId": { "type": "string" },
                "category": { "type": "string" },
                "eventType": { "type": "string" },
                "version": { "type": "integer" },
                "position": { "type": "integer" },
                "recordedAt": { "type": "string", "format": "date-time" },
                "contentType": { "type": "string" },
                "metadata": { "type": "object" },
                "data": {},
                "dataBase64": { "type": "string" }
            }
        },
        "StreamPage": {
            "type": "object",
            "required": ["streamId", "direction", "events", "next"],
            "properties": {
                "streamId": { "type": "string" },
                "direction": { "type": "string", "enum": ["forward", "backward"] },
                "events": { "type": "array", "items": { "$ref": "#/components/schemas/Event" } },
                "next": { "type": "string", "nullable": true, "description": "The next page, or null." }
            }
        },
        "AllPage": {
            "type": "object",
            "required": ["direction", "events", "nextPosition", "isEnd", "next"],
            "properties": {
                "direction": { "type": "string", "enum": ["forward", "backward"] },
                "events": { "type": "array", "items": { "$ref": "#/components/schemas/Event" } },
                "nextPosition": { "type": "integer", "nullable": true },
                "isEnd": { "type": "boolean" },
                "next": { "type": "string", "nullable": true }
            }
        },
        "Projection": projection_schema(),
        "Scavenge": {
            "type": "object",
            "description": "The latest scavenge started through this server: it removes for good the events the streams' lifecycles hide (docs/lifecycle.md).",
            "required": ["state", "streamsExamined", "streamsTotal", "eventsRemoved", "elapsedSeconds"],
            "properties": {
                "state": { "type": "string", "enum": ["idle", "running", "done", "failed"] },
                "startedAt": { "type": "string", "format": "date-time", "nullable": true },
                "finishedAt": { "type": "string", "format": "date-time", "nullable": true },
                "streamsExamined": { "type": "integer", "description": "Streams with lifecycle state examined so far." },
                "streamsTotal": { "type": "integer", "description": "Streams with lifecycle state when it started." },
                "eventsRemoved": { "type": "integer" },
                "elapsedSeconds": { "type": "number" },
                "error": { "type": "string", "nullable": true }
            }
        },
        "ProjectionList": {
            "type": "object",
            "required": ["projections"],
            "properties": { "projections": { "type": "array", "items": { "$ref": "#/components/schemas/Projection" } } }
        },
        "StreamInfo": {
            "type": "object",
            "required": ["streamId", "exists", "eventCount"],
            "properties": {
                "streamId": { "type": "string" },
                "exists": { "type": "boolean" },
                "currentVersion": { "type": "integer", "nullable": true },
                "eventCount": { "type": "integer" },
                "firstRecordedAt": { "type": "string", "format": "date-time", "nullable": true },
                "lastRecordedAt": { "type": "string", "format": "date-time", "nullable": true },
                "lastPosition": { "type": "integer", "nullable": true },
                "tombstoned": { "type": "boolean", "description": "Present (true) when the stream is tombstoned." }
            }
        },
        "StreamMetadata": {
            "type": "object",
            "additionalProperties": false,
            "description": "A stream's metadata (docs/lifecycle.md). Every field is optional.",
            "properties": {
                "truncateBefore": { "type": "integer", "minimum": 0, "description": "Events below this version are hidden; only moves forward." },
                "maxCount": { "type": "integer", "minimum": 0, "description": "Only the newest this many events are kept." },
                "maxAgeSeconds": { "type": "integer", "minimum": 0, "description": "Only events recorded within this many seconds are kept." },
                "tombstoned": { "type": "boolean", "description": "Set by a tombstone only; refused in a PUT." },
                "custom": { "type": "object", "description": "The application's own metadata." }
            }
        },
        "StreamMetadataAnswer": {
            "type": "object",
            "required": ["streamId", "version", "metadata"],
            "properties": {
                "streamId": { "type": "string" },
                "version": { "type": "integer", "nullable": true, "description": "The metadata's version, for the next change's expectedVersion; null before the first." },
                "metadata": { "$ref": "#/components/schemas/StreamMetadata" },
                "position": { "type": "integer", "description": "Where the change was appended (answers to PUT only)." }
            }
        },
        "StreamList": {
            "type": "object",
            "required": ["items", "nextAfter", "next"],
            "properties": {
                "items": { "type": "array", "items": { "type": "object",
                    "required": ["streamId", "category", "eventCount", "lastPosition"],
                    "properties": { "streamId": { "type": "string" }, "category": { "type": "string" },
                                    "eventCount": { "type": "integer" }, "lastPosition": { "type": "integer" } } } },
                "nextAfter": { "type": "string", "nullable": true },
                "next": { "type": "string", "nullable": true }
            }
        },
        "CategoryList": {
            "type": "object",
            "required": ["items", "nextAfter", "next"],
            "properties": {
                "items": { "type": "array", "items": { "type": "object",
                    "required": ["category", "streamCount", "eventCount"],
                    "properties": { "category": { "type": "string" }, "streamCount": { "type": "integer" },
                                    "eventCount": { "type": "integer" } } } },
                "nextAfter": { "type": "string", "nullable": true },
                "next": { "type": "string", "nullable": true }
            }
        },
        "Head": { "type": "object", "required": ["head"], "properties": { "head": { "type": "integer", "nullable": true }, "writable": { "type": "boolean", "description": "`/ready` only: whether the store accepts appends (false once the embedded store has stopped after an I/O error)." } } },
        "PositionAt": { "type": "object", "required": ["position"], "properties": { "position": { "type": "integer", "nullable": true } } },
        "Status": { "type": "object", "required": ["status"], "properties": { "status": { "type": "string" }, "head": { "type": "integer", "nullable": true }, "writable": { "type": "boolean", "description": "`/ready` only: whether the store accepts appends (false once the embedded store has stopped after an I/O error)." }, "archive": { "type": "object", "description": "`/health` only, on a server with an archive: `state` (idle, running, ok, failing), `consecutiveFailures`, `lastError`, `lastSuccessAt`. A failing archive leaves the process healthy: appends go on." } } },
        "Archive": archive_schema(),
        "EncryptionSchema": encryption_schema(),
        "ForgetAnswer": forget_schema()
    })
}

/// The OpenAPI 3.0 document of the API.
pub fn document() -> Value {
    let mut read_stream = vec![stream_path_param()];
    read_stream.extend(common_read_params());
    read_stream.push(param(
        "from",
        "query",
        "First version to return (inclusive).",
        u64_schema(),
        false,
    ));
    let mut read_all = common_read_params();
    read_all.push(param(
        "from",
        "query",
        "First position to consider (inclusive).",
        u64_schema(),
        false,
    ));
    read_all.extend(filter_params(true, true));
    let mut sub_all = start_params();
    sub_all.extend(filter_params(true, true));
    let mut sub_stream = vec![stream_path_param()];
    sub_stream.extend(start_params());
    let mut sub_cat = vec![param(
        "category",
        "path",
        "The category: the part of stream ids before their first `-` (so it holds no `-`).",
        json!({
            "type": "string",
            "minLength": 1,
            "maxLength": limits::STREAM_ID_MAX_BYTES,
            "pattern": "^[^$\\s\\x00-\\x1f\\x7f-\\x9f-][^\\s\\x00-\\x1f\\x7f-\\x9f-]*$"
        }),
        true,
    )];
    sub_cat.extend(start_params());
    sub_cat.extend(filter_params(false, false));
    let sse_desc = "A stream of server-sent events: `event: event` with `id:` the position (`$all`, categories) or version (a stream) and `data:` an Event; `event: lagged` (then the connection closes) when the subscriber fell behind, its id the position to resume after; `event: error` with a problem document. Keep-alive comments in between.";

    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Strata",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP API of the Strata event store. Errors are RFC 9457 problem documents with a stable `code`. See docs/http-api.md."
        },
        "components": {
            "securitySchemes": { "token": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas()
        },
        "security": [ { "token": [] }, {} ],
        "paths": {
            "/streams/{stream}": {
                "post": {
                    "operationId": "append",
                    "summary": "Append events to a stream, atomically, if it is at the expected version.",
                    "parameters": [stream_path_param()],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/AppendRequest" } } } },
                    "responses": responses(("200", ok("Appended (or an acknowledged retry).", "AppendResult")),
                        &errs(&[("409", "`wrong_expected_version` (with expected and actual) or `event_id_conflict`."),
                                ("408", "The body did not arrive within `request_body_read_timeout_ms` (`request_timeout`)."),
                                ("413", "Over a limit (`payload_too_large`).")]))
                },
                "delete": {
                    "operationId": "deleteStream",
                    "summary": "Delete a stream: soft (it reads as not found; appending re-creates it with versions continuing), or with tombstone=true for good.",
                    "parameters": [stream_path_param(), expected_param(),
                        param("tombstone", "query", "true: a hard delete; the stream can never be written or read again.", json!({ "type": "boolean", "default": false }), false)],
                    "responses": responses(("200", ok("Where the lifecycle event was appended: `$streamDeleted` in the metastream, or the stream's `$streamTombstoned`.", "AppendResult")),
                        &errs(&[("404", "The stream has no events (`stream_not_found`), for a soft delete."),
                                ("409", "The stream is not at expectedVersion (`wrong_expected_version`)."),
                                ("410", "The stream is tombstoned already (`stream_tombstoned`).")]))
                },
                "get": {
                    "operationId": "readStream",
                    "summary": "Read a stream forward or backward, paged.",
                    "parameters": read_stream,
                    "responses": responses(("200", ok("A page of events, with the next page's link.", "StreamPage")),
                        &errs(&[("404", "The stream has no events (`stream_not_found`).")]))
                }
            },
            "/streams/{stream}/metadata": {
                "get": {
                    "operationId": "streamMetadata",
                    "summary": "A stream's metadata and its version.",
                    "parameters": [stream_path_param()],
                    "responses": responses(("200", ok("The metadata (empty, version null, when the stream has none).", "StreamMetadataAnswer")), &errs(&[]))
                },
                "put": {
                    "operationId": "setStreamMetadata",
                    "summary": "Replace a stream's metadata if it is at expectedVersion. truncateBefore only moves forward and never past the stream's next version.",
                    "parameters": [stream_path_param(), expected_param()],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/StreamMetadata" } } } },
                    "responses": responses(("200", ok("The metadata written and its new version.", "StreamMetadataAnswer")),
                        &errs(&[("409", "The metadata is not at expectedVersion (`wrong_expected_version`)."),
                                ("410", "The stream is tombstoned (`stream_tombstoned`).")]))
                }
            },
            "/streams/{stream}/truncate": {
                "post": {
                    "operationId": "truncateStream",
                    "summary": "Hide the stream's events below version `before` (a `$streamTruncated` event in its metastream).",
                    "parameters": [stream_path_param(), param("before", "query", "The first version to keep: at most the stream's next version, never below an earlier truncation.", u64_schema(), true)],
                    "responses": responses(("200", ok("Where the `$streamTruncated` event was appended.", "AppendResult")),
                        &errs(&[("404", "The stream has no events (`stream_not_found`)."),
                                ("410", "The stream is tombstoned (`stream_tombstoned`).")]))
                }
            },
            "/streams/{stream}/info": {
                "get": {
                    "operationId": "streamInfo",
                    "summary": "What is known about a stream (also one that does not exist).",
                    "parameters": [stream_path_param()],
                    "responses": responses(("200", ok("The stream's version, count and times.", "StreamInfo")), &errs(&[]))
                }
            },
            "/streams": {
                "post": {
                    "operationId": "appendBatch",
                    "summary": "Append to several streams in one request: each append atomic with its own expected version and answer; the batch is not atomic. Everything is checked before anything is written.",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/BatchAppendRequest" } } } },
                    "responses": responses(("200", ok("One result per append, in order.", "BatchAppendResult")),
                        &errs(&[("408", "The body did not arrive within `request_body_read_timeout_ms` (`request_timeout`)."),
                                ("413", "Over a limit (`payload_too_large`): nothing was written.")]))
                },
                "get": {
                    "operationId": "listStreams",
                    "summary": "Streams in name order with their event counts.",
                    "parameters": list_params(),
                    "responses": responses(("200", ok("A page of streams.", "StreamList")), &errs(&[]))
                }
            },
            "/categories": {
                "get": {
                    "operationId": "listCategories",
                    "summary": "Categories in name order with stream and event counts.",
                    "parameters": list_params(),
                    "responses": responses(("200", ok("A page of categories.", "CategoryList")), &errs(&[]))
                }
            },
            "/all": {
                "get": {
                    "operationId": "readAll",
                    "summary": "Read the global order from a position, filtered, paged.",
                    "parameters": read_all,
                    "responses": responses(("200", ok("A page of events.", "AllPage")), &errs(&[]))
                }
            },
            "/all/head": {
                "get": {
                    "operationId": "head",
                    "summary": "The position of the newest event.",
                    "responses": responses(("200", ok("The head.", "Head")), &errs(&[]))
                }
            },
            "/all/position-at": {
                "get": {
                    "operationId": "positionAt",
                    "summary": "The position of the last event recorded at or before a time.",
                    "parameters": [param("time", "query", "An RFC 3339 time.", json!({ "type": "string", "format": "date-time" }), true)],
                    "responses": responses(("200", ok("The position, or null.", "PositionAt")), &errs(&[]))
                }
            },
            "/subscriptions/all": {
                "get": {
                    "operationId": "subscribeAll",
                    "summary": "Follow the global order (filtered) as server-sent events.",
                    "parameters": sub_all,
                    "responses": responses(("200", sse(sse_desc)), &errs(&[("429", "Too many open subscriptions for this token (`too_many_subscriptions`).")]))
                }
            },
            "/subscriptions/streams/{stream}": {
                "get": {
                    "operationId": "subscribeStream",
                    "summary": "Follow one stream as server-sent events; ids are versions.",
                    "parameters": sub_stream,
                    "responses": responses(("200", sse(sse_desc)), &errs(&[("429", "Too many open subscriptions for this token (`too_many_subscriptions`).")]))
                }
            },
            "/subscriptions/categories/{category}": {
                "get": {
                    "operationId": "subscribeCategory",
                    "summary": "Follow one category as server-sent events; ids are positions.",
                    "parameters": sub_cat,
                    "responses": responses(("200", sse(sse_desc)), &errs(&[("429", "Too many open subscriptions for this token (`too_many_subscriptions`).")]))
                }
            },
            "/projections": {
                "get": {
                    "operationId": "listProjections",
                    "summary": "The projections the serving program hosts, with status, lag and latest rebuild.",
                    "responses": responses(("200", ok("Every projection, in name order.", "ProjectionList")), &errs(&[]))
                }
            },
            "/projections/{name}": {
                "get": {
                    "operationId": "projectionStatus",
                    "summary": "One projection; a running rebuild's progress is in `rebuild`. With `atLeast`, once its checkpoint has passed that position (read-your-writes).",
                    "parameters": [
                        projection_param(),
                        param("atLeast", "query", "Answer once the projection's checkpoint is at or past this position (the position an append answered).", json!({ "type": "integer", "minimum": 0 }), false),
                        param("wait", "query", "How long to wait for `atLeast`: `250ms`, `2s` or milliseconds; at most 10 s (`PROJECTION_WAIT_MAX_MS`). Without it the projection is checked once.", json!({ "type": "string" }), false)
                    ],
                    "responses": responses(("200", ok("The projection.", "Projection")), &errs(&[("404", "No such projection (`projection_not_found`)."), ("409", "It had not passed `atLeast` when the wait ended, or it is paused or failed (`not_yet_consistent`, with `position`, `reached`, `waitedMs`, `projectionStatus`).")]))
                }
            },
            "/projections/{name}/pause": {
                "post": {
                    "operationId": "pauseProjection",
                    "summary": "Stop a projection after its current batch (admin).",
                    "parameters": [projection_param()],
                    "responses": responses(("200", ok("The projection, paused.", "Projection")), &errs(&[("404", "No such projection (`projection_not_found`).")]))
                }
            },
            "/projections/{name}/resume": {
                "post": {
                    "operationId": "resumeProjection",
                    "summary": "Run a paused or failed projection again from its checkpoint (admin).",
                    "parameters": [projection_param()],
                    "responses": responses(("200", ok("The projection.", "Projection")), &errs(&[("404", "No such projection (`projection_not_found`).")]))
                }
            },
            "/projections/{name}/reset": {
                "post": {
                    "operationId": "resetProjection",
                    "summary": "Empty a projection and replay it from position 0 (admin).",
                    "parameters": [projection_param()],
                    "responses": responses(("200", ok("The projection.", "Projection")), &errs(&[("404", "No such projection (`projection_not_found`).")]))
                }
            },
            "/projections/{name}/rebuild": {
                "post": {
                    "operationId": "rebuildProjection",
                    "summary": "Start a blue/green rebuild in the background (admin); follow it with GET /projections/{name}.",
                    "parameters": [projection_param()],
                    "responses": responses(("202", ok("The rebuild started.", "Projection")), &errs(&[
                        ("404", "No such projection (`projection_not_found`)."),
                        ("409", "A rebuild is running already (`rebuild_in_progress`).")]))
                }
            },
            "/admin/scavenge": {
                "post": {
                    "operationId": "startScavenge",
                    "summary": "Start a scavenge in the background (admin): it removes for good the events deleted, truncated, tombstoned or expired streams hide, and changes no answer a reader gets. Answers once it has begun; follow it with GET /admin/scavenge.",
                    "responses": responses(("202", ok("The scavenge began (or already ended).", "Scavenge")), &errs(&[
                        ("409", "A scavenge of the store is running already, here or in another process (`scavenge_in_progress`)."),
                        ("501", "The store behind the server cannot scavenge (`scavenge_unsupported`).")]))
                },
                "get": {
                    "operationId": "scavengeStatus",
                    "summary": "The latest scavenge started through this server: running with its progress, done, failed, or idle when none ran (admin).",
                    "responses": responses(("200", ok("The latest scavenge.", "Scavenge")), &errs(&[]))
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "The process is up; on a server with an archive, how its archiving stands.",
                    "security": [],
                    "responses": responses(("200", ok("Up.", "Status")), &[("400", "Invalid request.")])
                }
            },
            "/ready": {
                "get": {
                    "operationId": "ready",
                    "summary": "The store answers reads (and, with write=true, accepts appends).",
                    "security": [],
                    "parameters": [param("write", "query", "`true`: answer 503 also when the store answers reads but refuses appends (route writes by this).", json!({ "type": "boolean", "default": false }), false)],
                    "responses": responses(("200", ok("Ready; `writable` says whether the store accepts appends.", "Status")), &[("400", "Invalid request."), ("503", "Not ready (`unavailable`), or with write=true, refusing appends (`writable`: false).")])
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (the admin role when tokens are configured).",
                    "responses": responses(("200", json!({ "description": "Prometheus text format.", "content": { "text/plain": { "schema": { "type": "string" } } } })),
                        &[("400", "Invalid request."), AUTH_ERRORS[0], AUTH_ERRORS[1]])
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "security": [],
                    "responses": responses(("200", json!({ "description": "OpenAPI 3.0.", "content": { "application/json": { "schema": { "type": "object" } } } })), &[("400", "Invalid request.")])
                }
            }
        }
    });
    // Past what one `json!` expands.
    doc["paths"]["/admin/archive"] = archive_path();
    for (path, item) in encryption_paths() {
        doc["paths"][path] = item;
    }
    doc
}

/// An event type's encryption schema (docs/gdpr.md).
fn encryption_schema() -> Value {
    json!({
        "type": "object",
        "description": "The personal fields of one event type, sealed under the key of the data subject the event names (docs/gdpr.md).",
        "required": ["eventType", "subject", "fields"],
        "properties": {
            "eventType": { "type": "string" },
            "subject": {
                "type": "object",
                "description": "Where the subject's id is: a JSON pointer into the event's data (to a string or an integer), a metadata key, or the id of the stream the event is appended to (`{\"stream\": {}}`). Exactly one of the three.",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": false,
                "properties": {
                    "pointer": { "type": "string", "example": "/customerId" },
                    "metadataKey": { "type": "string", "example": "subject" },
                    "stream": { "type": "object", "maxProperties": 0 }
                }
            },
            "fields": {
                "type": "array", "minItems": 1, "maxItems": strata_shred::limits::SCHEMA_FIELDS_MAX,
                "items": { "type": "string", "description": "A JSON pointer (RFC 6901), such as /email." }
            }
        }
    })
}

/// `DELETE /subjects/{subject}`'s answer.
fn forget_schema() -> Value {
    json!({
        "type": "object",
        "required": ["subject", "outcome", "subjectRef", "position"],
        "properties": {
            "subject": { "type": "string" },
            "outcome": { "type": "string", "enum": ["forgotten", "alreadyForgotten", "neverSeen"] },
            "subjectRef": { "type": "string", "description": "How the subject's sealed values and its `$subjectForgotten` event name it (32 hex digits)." },
            "position": { "type": "integer", "description": "Where the `$subjectForgotten` event is in `$all`." }
        }
    })
}

/// `/encryption/schemas`, `/encryption/schemas/{eventType}` and `/subjects/{subject}`.
fn encryption_paths() -> [(&'static str, Value); 3] {
    let unconfigured = (
        "501",
        "The server was started without a master key (`encryption_unconfigured`).",
    );
    [
        (
            "/encryption/schemas",
            json!({
                "get": {
                    "operationId": "encryptionSchemas",
                    "summary": "The encryption schemas in force, by event type (admin).",
                    "responses": responses(("200", json!({ "description": "The schemas.", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["schemas"],
                        "properties": {
                            "schemas": { "type": "array", "items": { "$ref": "#/components/schemas/EncryptionSchema" } },
                            "unreadable": { "type": "array", "items": { "type": "string" }, "description": "Event types whose schema in force this server cannot read (registered by a newer version of Strata): their appends are refused. \"*\" when one names no readable event type: then every type without a readable schema is refused. Absent when empty." } } } } } })),
                        &errs(&[unconfigured]))
                }
            }),
        ),
        (
            "/encryption/schemas/{eventType}",
            json!({
                "put": {
                    "operationId": "registerEncryptionSchema",
                    "summary": "Register the event type's encryption schema, replacing the one in force (admin). Events of the type appended from now on have the fields sealed; an event that does not match it is refused (`invalid_request`, naming the field) and nothing is written.",
                    "parameters": [param("eventType", "path", "The event type.", json!({ "type": "string" }), true)],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/EncryptionSchema" } } } },
                    "responses": responses(("200", json!({ "description": "Registered: the schema, its version in the schema stream and its position.", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["schema", "version", "position"],
                        "properties": { "schema": { "$ref": "#/components/schemas/EncryptionSchema" }, "version": { "type": "integer" }, "position": { "type": "integer" } } } } } })),
                        &errs(&[unconfigured]))
                }
            }),
        ),
        (
            "/subjects/{subject}",
            json!({
                "delete": {
                    "operationId": "forgetSubject",
                    "summary": "Forget a data subject (admin): their key is destroyed, so their sealed fields read as null from now on, and a `$subjectForgotten` event is appended to `strata-forgotten` for projections. Idempotent.",
                    "parameters": [param("subject", "path", "The subject's id.", json!({ "type": "string" }), true)],
                    "responses": responses(("200", ok("The forget: destroyed now, before, or never sealed anything.", "ForgetAnswer")), &errs(&[unconfigured]))
                }
            }),
        ),
    ]
}

/// The status of the server's archiving.
fn archive_schema() -> Value {
    json!({
        "type": "object",
        "description": "The server's archiving of its store's history (the embedded store's sealed segments, or PostgreSQL's final events in the same format) to its archive (docs/lifecycle.md, \"Archiving and restoring\").",
        "required": ["state", "target", "consecutiveFailures", "segmentsArchived", "bytesArchived"],
        "properties": {
            "state": { "type": "string", "enum": ["idle", "running", "ok", "failing"] },
            "target": { "type": "string", "description": "The archive: a directory or s3://bucket/prefix." },
            "lastRunAt": { "type": "string", "format": "date-time", "nullable": true },
            "lastSuccessAt": { "type": "string", "format": "date-time", "nullable": true },
            "nextRunAt": { "type": "string", "format": "date-time", "nullable": true },
            "consecutiveFailures": { "type": "integer", "description": "Passes failed in a row since the last success; each is tried again after a backoff (1 s doubling, at most 300 s)." },
            "lastError": { "type": "string", "nullable": true },
            "segmentsArchived": { "type": "integer", "description": "Segments copied by this server since it started." },
            "bytesArchived": { "type": "integer" },
            "archivedBelowPosition": { "type": "integer", "nullable": true, "description": "Every event below this position is in the archive." }
        }
    })
}

/// `/admin/archive`.
fn archive_path() -> Value {
    json!({
        "post": {
            "operationId": "startArchive",
            "summary": "Ask for an archive pass now (admin): it copies the sealed segments the archive does not hold yet, in the background. Follow it with GET /admin/archive.",
            "responses": responses(("202", ok("The pass was asked for; the status as it stands.", "Archive")), &errs(&[
                ("501", "The server was started without an archive (`archive_unconfigured`).")]))
        },
        "get": {
            "operationId": "archiveStatus",
            "summary": "The server's archiving: the latest pass, failures in a row with the last error, and what it copied (admin).",
            "responses": responses(("200", ok("The archiving's status.", "Archive")), &errs(&[
                ("501", "The server was started without an archive (`archive_unconfigured`).")]))
        }
    })
}
