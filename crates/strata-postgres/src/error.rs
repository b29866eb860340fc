//! Typed errors for connecting and migrating, and the mapping of driver errors into the
//! `strata-core` error enums.

use strata_core::{AppendError, ReadError, SnapshotError};

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

/// Whether an error means the database could not be reached (as opposed to a failed statement).
pub(crate) fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
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

pub(crate) fn read_error(err: sqlx::Error) -> ReadError {
    if is_unavailable(&err) {
        ReadError::Unavailable(describe(&err))
    } else {
        ReadError::Storage(describe(&err))
    }
}

pub(crate) fn append_error(err: &sqlx::Error) -> AppendError {
    if is_unavailable(err) {
        AppendError::Unavailable(describe(err))
    } else {
        AppendError::Storage(describe(err))
    }
}

pub(crate) fn snapshot_error(err: sqlx::Error) -> SnapshotError {
    if is_unavailable(&err) {
        SnapshotError::Unavailable(describe(&err))
    } else {
        SnapshotError::Storage(describe(&err))
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
