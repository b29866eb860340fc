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

/// The router's configuration. `Default` is the limits of [`crate::limits`] (and the read page
/// bounds of [`strata_core::limits`]) and no tokens: every caller is anonymous with every right,
/// which is only safe on loopback; the binary refuses to bind elsewhere without tokens.
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
            request_body_max_bytes: server_limits::SERVER_REQUEST_BODY_MAX_BYTES as u64,
            page_max_events: limits::SERVER_PAGE_MAX_EVENTS as u32,
            subscriptions_per_token_max: server_limits::SERVER_SUBSCRIPTIONS_PER_TOKEN_MAX as u32,
            sse_buffer_events: server_limits::SERVER_SSE_BUFFER_EVENTS as u32,
            sse_keep_alive_interval_ms: server_limits::SERVER_SSE_KEEP_ALIVE_INTERVAL_MS,
            sse_slow_subscriber_timeout_ms: server_limits::SERVER_SSE_SLOW_SUBSCRIBER_TIMEOUT_MS,
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

    /// Checks every value; the error lists every bad value, each naming it.
    ///
    /// ```
    /// use strata_server::{ConfigProblem, ServerConfig};
    /// let config = ServerConfig { page_max_events: 0, ..ServerConfig::default() };
    /// let error = config.validate().unwrap_err();
    /// assert!(matches!(
    ///     error.problems(),
    ///     [ConfigProblem::OutOfRange { name: "page_max_events", value: 0, .. }]
    /// ));
    /// assert_eq!(error.to_string(), "page_max_events is 0; it must be between 1 and 1000");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut range = |name: &'static str, value: u64, min: u64, max: u64| {
            if !(min..=max).contains(&value) {
                problems.push(ConfigProblem::OutOfRange {
                    name,
                    value,
                    min,
                    max,
                });
            }
        };
        range(
            "request_body_max_bytes",
            self.request_body_max_bytes,
            1024,
            server_limits::SERVER_REQUEST_BODY_MAX_BYTES as u64,
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
            server_limits::SERVER_SUBSCRIPTIONS_MAX as u64,
        );
        range(
            "sse_buffer_events",
            self.sse_buffer_events.into(),
            1,
            server_limits::SERVER_SSE_BUFFER_EVENTS as u64 * 16,
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
        if self.tokens.len() > server_limits::SERVER_TOKENS_MAX {
            problems.push(ConfigProblem::TooManyTokens {
                count: self.tokens.len(),
                max: server_limits::SERVER_TOKENS_MAX,
            });
        }
        let mut seen = std::collections::HashSet::new();
        for (index, t) in self.tokens.iter().enumerate() {
            let token = || TokenRef {
                index,
                name: t.name.clone(),
            };
            if t.name.is_empty() {
                problems.push(ConfigProblem::EmptyTokenName { index });
            }
            if t.sha256.len() != 64
                || !t
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                problems.push(ConfigProblem::MalformedTokenHash { token: token() });
            } else if !seen.insert(t.sha256.clone()) {
                problems.push(ConfigProblem::DuplicateTokenHash { token: token() });
            }
            if t.prefixes.len() + t.grants.len() > server_limits::SERVER_TOKEN_GRANTS_MAX {
                problems.push(ConfigProblem::TooManyGrants {
                    token: token(),
                    count: t.prefixes.len() + t.grants.len(),
                    max: server_limits::SERVER_TOKEN_GRANTS_MAX,
                });
            }
            for p in t.prefixes.iter().chain(t.grants.iter().map(|g| &g.prefix)) {
                if p.len() > limits::STREAM_ID_MAX_BYTES {
                    problems.push(ConfigProblem::PrefixTooLong {
                        token: token(),
                        prefix: p.clone(),
                    });
                }
            }
            for (grant, g) in t.grants.iter().enumerate() {
                if g.actions.is_empty() {
                    problems.push(ConfigProblem::EmptyGrantActions {
                        token: token(),
                        grant,
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// One configured token, as [`ConfigProblem`]s name it: `tokens[1] ("billing")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRef {
    /// Its index in `tokens`.
    pub index: usize,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for TokenRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tokens[{}] ({:?})", self.index, self.name)
    }
}

/// One bad value in a [`ServerConfig`]. Each displays as a sentence naming the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// A limit is outside the range the server accepts.
    #[error("{name} is {value}; it must be between {min} and {max}")]
    OutOfRange {
        /// The setting, as named in the configuration file.
        name: &'static str,
        /// What it was set to.
        value: u64,
        /// The least accepted value.
        min: u64,
        /// The greatest accepted value.
        max: u64,
    },
    /// More tokens than `SERVER_TOKENS_MAX`.
    #[error("{count} tokens are configured; the limit is {max}")]
    TooManyTokens {
        /// How many were configured.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A token without a name.
    #[error("tokens[{index}].name must not be empty")]
    EmptyTokenName {
        /// Its index in `tokens`.
        index: usize,
    },
    /// A token's `sha256` is not 64 lower-case hex digits.
    #[error(
        "{token}.sha256 must be 64 lower-case hex digits (the SHA-256 of the token; \
         `strata token new` prints one)"
    )]
    MalformedTokenHash {
        /// The token.
        token: TokenRef,
    },
    /// Two tokens have the same `sha256`.
    #[error("{token}.sha256 is the same as another token's")]
    DuplicateTokenHash {
        /// The later of the two.
        token: TokenRef,
    },
    /// A token has more prefixes and grants than `SERVER_TOKEN_GRANTS_MAX`.
    #[error("{token} has {count} prefixes and grants; the limit is {max}")]
    TooManyGrants {
        /// The token.
        token: TokenRef,
        /// Its prefixes and grants together.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A prefix longer than any stream id can be, so it would match nothing.
    #[error("{token}: prefix {prefix:?} is longer than any stream id")]
    PrefixTooLong {
        /// The token.
        token: TokenRef,
        /// The prefix.
        prefix: String,
    },
    /// A grant that allows nothing.
    #[error("{token}.grants[{grant}].actions must not be empty")]
    EmptyGrantActions {
        /// The token.
        token: TokenRef,
        /// The grant's index in the token's `grants`.
        grant: usize,
    },
}

/// Why a [`ServerConfig`] was refused: every bad value found, in the order of the settings.
/// Displays as their sentences joined by `"; "`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<ConfigProblem>,
}

impl ConfigError {
    /// Every bad value; never empty.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }

    /// The problems, to own.
    pub fn into_problems(self) -> Vec<ConfigProblem> {
        self.problems
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
