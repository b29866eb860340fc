//! What the router needs to know: tokens and limits. The binary resolves it from defaults, a
//! file, `STRATA_*` variables and flags; [`ServerConfig::validate`] checks it.

use serde::{Deserialize, Serialize};
use strata_core::limits;

use crate::limits as server_limits;

/// A role: the actions a token may take on the stream prefixes it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read and subscribe.
    Reader,
    /// Read, subscribe and append.
    Writer,
    /// Everything on every stream, and the operator endpoints (`/metrics`).
    Admin,
}

/// An action a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Read streams, `$all`, stream info and listings.
    Read,
    /// Append.
    Write,
    /// Open server-sent-event subscriptions.
    Subscribe,
}

/// Extra rights on one stream prefix, beyond those of the token's role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    /// Streams whose id starts with this (`""`: every stream).
    pub prefix: String,
    /// What the token may do there.
    pub actions: Vec<Action>,
}

/// One API token, as configured. The token itself is never stored: only its SHA-256.
///
/// ```
/// use strata_server::{hash_token, Role, TokenConfig};
/// let t = TokenConfig::new("billing", &hash_token("s3cret-token-value"), Role::Writer)
///     .with_prefixes(["account-"]);
/// assert_eq!(t.prefixes, vec!["account-".to_owned()]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// The token's SHA-256, as 64 lower-case hex digits (`strata token new` prints it).
    pub sha256: String,
    /// The role.
    pub role: Role,
    /// Stream prefixes the role applies to; `[""]` (the default) is every stream.
    #[serde(default = "all_streams")]
    pub prefixes: Vec<String>,
    /// Further per-prefix rights.
    #[serde(default)]
    pub grants: Vec<GrantConfig>,
}

fn all_streams() -> Vec<String> {
    vec![String::new()]
}

impl TokenConfig {
    /// A token with `role` on every stream.
    pub fn new(name: impl Into<String>, sha256: &str, role: Role) -> Self {
        TokenConfig {
            name: name.into(),
            sha256: sha256.to_owned(),
            role,
            prefixes: all_streams(),
            grants: Vec::new(),
        }
    }
    /// Limits the role to these stream prefixes.
    pub fn with_prefixes<S: Into<String>>(mut self, prefixes: impl IntoIterator<Item = S>) -> Self {
        self.prefixes = prefixes.into_iter().map(Into::into).collect();
        self
    }
    /// Adds rights on one prefix.
    pub fn with_grant(mut self, prefix: impl Into<String>, actions: &[Action]) -> Self {
        self.grants.push(GrantConfig {
            prefix: prefix.into(),
            actions: actions.to_vec(),
        });
        self
    }
}

/// The router's configuration. `Default` is the limits of `strata_core::limits` and no tokens:
/// every caller is anonymous with every right, which is only safe on loopback; the binary
/// refuses to bind elsewhere without tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// API tokens. Empty: no authentication.
    pub tokens: Vec<TokenConfig>,
    /// Largest request body.
    pub request_body_max_bytes: u64,
    /// Most events in one read page.
    pub page_max_events: u32,
    /// Most open subscriptions per token.
    pub subscriptions_per_token_max: u32,
    /// Events buffered per subscriber.
    pub sse_buffer_events: u32,
    /// Interval of keep-alive comments on subscriptions.
    pub sse_keep_alive_interval_ms: u64,
    /// How long a subscriber's buffer may stay full before it is disconnected.
    pub sse_slow_subscriber_timeout_ms: u64,
    /// How long a connection may take to send a whole request head (from its accept, or from
    /// the first byte of a later request's head); it is closed after that.
    pub header_read_timeout_ms: u64,
    /// How long a kept-alive connection may wait for its next request before it is closed.
    pub keep_alive_idle_timeout_ms: u64,
    /// Most open connections; more are answered `503 overloaded`.
    pub connections_max: u32,
    /// Most request-body bytes held at once over every request; a body that does not fit is
    /// answered `503 overloaded`.
    pub request_bodies_in_flight_max_bytes: u64,
    /// How long a request body may take to arrive once its head has (`408 request_timeout`).
    pub request_body_read_timeout_ms: u64,
    /// Bytes of events buffered per subscriber (beside `sse_buffer_events`; whichever is
    /// reached first).
    pub sse_buffer_max_bytes: u64,
    /// Bytes of events buffered for all subscribers together.
    pub sse_buffers_total_max_bytes: u64,
    /// Bytes of recent batches the live fan-out keeps for subscribers.
    pub sse_fan_out_max_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tokens: Vec::new(),
            request_body_max_bytes: limits::SERVER_REQUEST_BODY_MAX_BYTES as u64,
            page_max_events: limits::SERVER_PAGE_MAX_EVENTS as u32,
            subscriptions_per_token_max: limits::SERVER_SUBSCRIPTIONS_PER_TOKEN_MAX as u32,
            sse_buffer_events: limits::SERVER_SSE_BUFFER_EVENTS as u32,
            sse_keep_alive_interval_ms: limits::SERVER_SSE_KEEP_ALIVE_INTERVAL_MS,
            sse_slow_subscriber_timeout_ms: limits::SERVER_SSE_SLOW_SUBSCRIBER_TIMEOUT_MS,
            header_read_timeout_ms: server_limits::SERVER_HEADER_READ_TIMEOUT_MS,
            keep_alive_idle_timeout_ms: server_limits::SERVER_KEEP_ALIVE_IDLE_TIMEOUT_MS,
            connections_max: server_limits::SERVER_CONNECTIONS_MAX as u32,
            request_bodies_in_flight_max_bytes:
                server_limits::SERVER_REQUEST_BODIES_IN_FLIGHT_MAX_BYTES,
            request_body_read_timeout_ms: server_limits::SERVER_REQUEST_BODY_READ_TIMEOUT_MS,
            sse_buffer_max_bytes: server_limits::SERVER_SSE_BUFFER_MAX_BYTES,
            sse_buffers_total_max_bytes: server_limits::SERVER_SSE_BUFFERS_TOTAL_MAX_BYTES,
            sse_fan_out_max_bytes: server_limits::SERVER_SSE_FAN_OUT_MAX_BYTES,
        }
    }
}

impl ServerConfig {
    /// Whether callers must present a token.
    pub fn auth_enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks every value; returns one sentence per bad value, naming it.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let mut range = |name: &str, value: u64, min: u64, max: u64| {
            if !(min..=max).contains(&value) {
                errors.push(format!(
                    "{name} is {value}; it must be between {min} and {max}"
                ));
            }
        };
        range(
            "request_body_max_bytes",
            self.request_body_max_bytes,
            1024,
            limits::SERVER_REQUEST_BODY_MAX_BYTES as u64,
        );
        range(
            "page_max_events",
            self.page_max_events.into(),
            1,
            limits::SERVER_PAGE_MAX_EVENTS as u64,
        );
        range(
            "subscriptions_per_token_max",
            self.subscriptions_per_token_max.into(),
            0,
            limits::SERVER_SUBSCRIPTIONS_MAX as u64,
        );
        range(
            "sse_buffer_events",
            self.sse_buffer_events.into(),
            1,
            limits::SERVER_SSE_BUFFER_EVENTS as u64 * 16,
        );
        range(
            "sse_keep_alive_interval_ms",
            self.sse_keep_alive_interval_ms,
            100,
            3_600_000,
        );
        range(
            "sse_slow_subscriber_timeout_ms",
            self.sse_slow_subscriber_timeout_ms,
            1,
            3_600_000,
        );
        range(
            "header_read_timeout_ms",
            self.header_read_timeout_ms,
            100,
            600_000,
        );
        range(
            "keep_alive_idle_timeout_ms",
            self.keep_alive_idle_timeout_ms,
            100,
            3_600_000,
        );
        range("connections_max", self.connections_max.into(), 1, 1_000_000);
        range(
            "request_bodies_in_flight_max_bytes",
            self.request_bodies_in_flight_max_bytes,
            self.request_body_max_bytes,
            1 << 34,
        );
        range(
            "request_body_read_timeout_ms",
            self.request_body_read_timeout_ms,
            100,
            3_600_000,
        );
        range(
            "sse_buffer_max_bytes",
            self.sse_buffer_max_bytes,
            64 * 1024,
            u64::from(u32::MAX),
        );
        range(
            "sse_buffers_total_max_bytes",
            self.sse_buffers_total_max_bytes,
            self.sse_buffer_max_bytes,
            1 << 40,
        );
        range(
            "sse_fan_out_max_bytes",
            self.sse_fan_out_max_bytes,
            64 * 1024,
            1 << 40,
        );
        if self.tokens.len() > limits::SERVER_TOKENS_MAX {
            errors.push(format!(
                "{} tokens are configured; the limit is {}",
                self.tokens.len(),
                limits::SERVER_TOKENS_MAX
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let at = format!("tokens[{i}] ({:?})", t.name);
            if t.name.is_empty() {
                errors.push(format!("tokens[{i}].name must not be empty"));
            }
            if t.sha256.len() != 64
                || !t
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                errors.push(format!(
                    "{at}.sha256 must be 64 lower-case hex digits (the SHA-256 of the token; `strata token new` prints one)"
                ));
            } else if !seen.insert(t.sha256.clone()) {
                errors.push(format!("{at}.sha256 is the same as another token's"));
            }
            if t.prefixes.len() + t.grants.len() > limits::SERVER_TOKEN_GRANTS_MAX {
                errors.push(format!(
                    "{at} has {} prefixes and grants; the limit is {}",
                    t.prefixes.len() + t.grants.len(),
                    limits::SERVER_TOKEN_GRANTS_MAX
                ));
            }
            for p in t.prefixes.iter().chain(t.grants.iter().map(|g| &g.prefix)) {
                if p.len() > limits::STREAM_ID_MAX_BYTES {
                    errors.push(format!("{at}: prefix {p:?} is longer than any stream id"));
                }
            }
            for (j, g) in t.grants.iter().enumerate() {
                if g.actions.is_empty() {
                    errors.push(format!("{at}.grants[{j}].actions must not be empty"));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
