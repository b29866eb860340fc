//! Typed errors for connecting and migrating, and the mapping of driver errors into the
//! `strata-core` error enums.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use strata_core::{AppendError, BackendError, ReadError, SnapshotError};

/// Why [`crate::PostgresStore::connect`] failed. Each variant's message is one line that says
/// what was wrong, without the driver's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The database URL could not be parsed.
    #[error("invalid PostgreSQL URL: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing listens at the address (the server is down or the port is wrong).
    #[error("cannot connect to PostgreSQL at {host}:{port}: connection refused (is the server running?)")]
    ConnectionRefused {
        /// Host from the URL.
        host: String,
        /// Port from the URL.
        port: u16,
    },
    /// The address could not be reached at all (unknown host, no route, network error).
    #[error("cannot reach PostgreSQL at {host}:{port}: {reason}")]
    Unreachable {
        /// Host from the URL.
        host: String,
        /// Port from the URL.
        port: u16,
        /// The kind of failure, as a short phrase.
        reason: String,
    },
    /// The server answered but the database does not exist.
    #[error("PostgreSQL at {host}:{port} has no database named {database:?}")]
    DatabaseNotFound {
        /// Host from the URL.
        host: String,
        /// Port from the URL.
        port: u16,
        /// The missing database.
        database: String,
    },
    /// The server refused the user or password.
    #[error("PostgreSQL refused user {user:?}: authentication failed")]
    AuthenticationFailed {
        /// The user from the URL.
        user: String,
    },
    /// Connecting took longer than the connect timeout.
    #[error("connecting to PostgreSQL at {host}:{port} timed out after {timeout_ms} ms")]
    Timeout {
        /// Host from the URL.
        host: String,
        /// Port from the URL.
        port: u16,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// `target_session_attrs=read-write` was asked and no host of the URL accepts writes (the
    /// ones that answered are standbys or read-only; the others could not be reached).
    #[error("no PostgreSQL host of the URL accepts writes ({hosts}): is a primary running?")]
    NoReadWriteHost {
        /// The hosts tried, `host:port` comma-separated.
        hosts: String,
    },
    /// The configured schema name is not a plain lower-case identifier.
    #[error("invalid schema name {name:?}: {reason}")]
    InvalidSchemaName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database was migrated by a newer Strata than this one; this code refuses to touch it.
    #[error(
        "schema {schema:?} is at version {found} but this Strata supports up to version \
         {supported}; upgrade Strata"
    )]
    SchemaTooNew {
        /// The schema.
        schema: String,
        /// The version recorded in the database.
        found: i32,
        /// The newest version this code knows.
        supported: i32,
    },
    /// A migration failed.
    #[error("migrating schema {schema:?} to version {version} failed: {reason}")]
    Migration {
        /// The schema.
        schema: String,
        /// The migration that failed.
        version: i32,
        /// The server's error message.
        reason: String,
    },
    /// Any other error from the server, with its SQLSTATE code.
    #[error("PostgreSQL error {code}: {message}")]
    Database {
        /// The SQLSTATE code.
        code: String,
        /// The server's message.
        message: String,
    },
}

/// Where a connection attempt was going, to name it in errors.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub timeout_ms: u64,
}

/// Turns a driver error met while connecting into a one-line [`ConnectError`].
pub(crate) fn connect_error(err: &sqlx::Error, target: &Target) -> ConnectError {
    let host = target.host.clone();
    let port = target.port;
    match err {
        sqlx::Error::Configuration(e) => ConnectError::InvalidUrl {
            reason: first_line(&e.to_string()),
        },
        sqlx::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => ConnectError::ConnectionRefused { host, port },
            std::io::ErrorKind::TimedOut => ConnectError::Timeout {
                host,
                port,
                timeout_ms: target.timeout_ms,
            },
            kind => ConnectError::Unreachable {
                host,
                port,
                reason: io_reason(kind, io),
            },
        },
        sqlx::Error::PoolTimedOut => ConnectError::Timeout {
            host,
            port,
            timeout_ms: target.timeout_ms,
        },
        sqlx::Error::Tls(_) => ConnectError::Unreachable {
            host,
            port,
            reason: "TLS negotiation failed".to_owned(),
        },
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("3D000") => ConnectError::DatabaseNotFound {
                host,
                port,
                database: target.database.clone(),
            },
            Some("28P01") | Some("28000") => ConnectError::AuthenticationFailed {
                user: target.user.clone(),
            },
            code => ConnectError::Database {
                code: code.unwrap_or("?????").to_owned(),
                message: first_line(db.message()),
            },
        },
        other => ConnectError::Unreachable {
            host,
            port,
            reason: first_line(&other.to_string()),
        },
    }
}

fn io_reason(kind: std::io::ErrorKind, io: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match kind {
        NotFound => "host not found".to_owned(),
        AddrNotAvailable => "address not available".to_owned(),
        ConnectionReset | ConnectionAborted | UnexpectedEof => {
            "the server closed the connection".to_owned()
        }
        PermissionDenied => "permission denied".to_owned(),
        _ => first_line(&io.to_string()),
    }
}

pub(crate) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_owned()
}

/// Whether an error means the database could not serve the statement (as opposed to a
/// statement that failed): it could not be reached, it ended the session (an operator's
/// `pg_terminate_backend`, a fast or crash shutdown: SQLSTATE class 57 and class 08), it is
/// not accepting connections, or it has no connection slot left (53300). The statement's
/// transaction did not commit, unless the session was lost during the commit itself; either
/// way a retry with the same event ids is safe (it appends, or answers the stored result).
pub(crate) fn is_unavailable(err: &sqlx::Error) -> bool {
    // First, so a lost connection is always recorded.
    let lost = is_connection_lost(err);
    let unavailable = match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| unavailable_sqlstate(&c)),
        _ => false,
    };
    unavailable || lost
}

/// The SQLSTATEs of [`is_unavailable`]: class 08 (connection exception), class 57 (operator
/// intervention: admin or crash shutdown, a cancelled statement, the server starting or
/// stopping), 53300 (too many connections) and 25006 (a read-only transaction: the host is a
/// hot standby, as when a failover left this connection on the old primary's replica; the
/// statement changed nothing, and the new primary takes the retry).
fn unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57") || code == "53300" || code == "25006"
}

/// Whether the error ended the session itself (the connection is gone, not just the
/// statement): the socket failed, or the server said it is terminating the connection
/// (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now, class 08). A retry
/// on another connection may succeed. Records the loss ([`note_connection_lost`]).
pub(crate) fn is_connection_lost(err: &sqlx::Error) -> bool {
    let lost = match err {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    };
    if lost {
        note_connection_lost();
    }
    lost
}

/// When a connection to PostgreSQL was last found lost, in microseconds since [`epoch`] plus
/// one (0: never). Process-wide: a lost connection usually means the server restarted or an
/// operator ended sessions, which concerns every pool's idle connections.
static CONNECTION_LOST_AT_US: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Records that a connection was just found lost: idle connections older than now are then
/// checked before use ([`check_before_use`]).
pub(crate) fn note_connection_lost() {
    let now_us = epoch().elapsed().as_micros() as u64;
    CONNECTION_LOST_AT_US.fetch_max(now_us + 1, Ordering::Relaxed);
}

/// Whether a pooled connection idle for `idle_for` must be pinged before use: it was idle when
/// a connection was last found lost, so it may have been ended too (by the same restart or
/// `pg_terminate_backend`). The store's pools do not ping before every use (that would cost
/// each append and read a round trip); this pings only after a loss, so one dead connection
/// does not lead to the next.
pub(crate) fn check_before_use(idle_for: Duration) -> bool {
    let lost = CONNECTION_LOST_AT_US.load(Ordering::Relaxed);
    if lost == 0 {
        return false;
    }
    let idle_since_us = epoch().elapsed().saturating_sub(idle_for).as_micros() as u64;
    idle_since_us < lost
}

/// A short description of a driver error for `Storage` / `Unavailable` variants.
pub(crate) fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => format!(
            "PostgreSQL error {}: {}",
            db.code().as_deref().unwrap_or("?????"),
            first_line(db.message())
        ),
        other => first_line(&other.to_string()),
    }
}

/// `err` as a [`BackendError`]: described for people, kept for programs.
pub(crate) fn backend(err: sqlx::Error) -> BackendError {
    BackendError::with_source(describe(&err), err)
}

pub(crate) fn read_error(err: sqlx::Error) -> ReadError {
    if is_unavailable(&err) {
        ReadError::Unavailable(backend(err))
    } else {
        ReadError::Storage(backend(err))
    }
}

pub(crate) fn append_error(err: &sqlx::Error) -> AppendError {
    if is_unavailable(err) {
        AppendError::Unavailable(describe(err).into())
    } else {
        AppendError::Storage(describe(err).into())
    }
}

pub(crate) fn snapshot_error(err: sqlx::Error) -> SnapshotError {
    if is_unavailable(&err) {
        SnapshotError::Unavailable(backend(err))
    } else {
        SnapshotError::Storage(backend(err))
    }
}

/// The SQLSTATE of a database error.
pub(crate) fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The constraint a database error names, if any.
pub(crate) fn constraint(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.constraint().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_sessions_and_refused_connections_are_unavailable() {
        for code in [
            "57P01", "57P02", "57P03", "57014", "08006", "08003", "08P01", "53300", "25006",
        ] {
            assert!(unavailable_sqlstate(code), "{code}");
        }
        // Failed statements are not: a unique violation, a deadlock, bad data, disk full.
        for code in ["23505", "40P01", "22003", "53100", "XX000", "SX001"] {
            assert!(!unavailable_sqlstate(code), "{code}");
        }
    }
}
