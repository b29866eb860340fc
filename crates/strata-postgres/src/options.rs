//! How to connect: [`PgStoreOptions`].

use std::time::Duration;

use crate::error::ConnectError;
use crate::limits;

/// Options for [`crate::PostgresStore::connect_with`]. Build with [`PgStoreOptions::new`] and
/// the `with_*` methods.
///
/// ```
/// use strata_postgres::PgStoreOptions;
/// let o = PgStoreOptions::new("postgres://postgres@127.0.0.1:5432/test")
///     .with_schema("bank")
///     .with_max_connections(16);
/// assert_eq!(o.schema, "bank");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgStoreOptions {
    /// `postgres://user[:password]@host[:port]/database[?options]`. Several hosts may be
    /// listed, as libpq allows (`postgres://user@host1:5432,host2:5432/database`): the store
    /// takes the first that accepts a connection, and with `target_session_attrs=read-write`
    /// (also accepted: `any`, the default) the first whose sessions accept writes, and follows
    /// the writable one after a failover (see `docs/guarantees.md`, "PostgreSQL failover").
    pub url: String,
    /// The schema holding Strata's tables, created when missing. Lower-case letters, digits
    /// and `_`, starting with a letter or `_`, at most [`limits::SCHEMA_NAME_MAX_BYTES`] bytes.
    pub schema: String,
    /// Most connections in the pool (appends, reads and the notifier share it; the listener
    /// has its own).
    pub max_connections: u32,
    /// How many append transactions may be in flight at once. Appends arriving while they
    /// run wait and are grouped into the next batch, one transaction each (group commit).
    /// Fewer means bigger batches and less work per append; more means less waiting when the
    /// database is slow to commit. 2 was best for 16 concurrent writers on this project's
    /// 2-core test machine (see `examples/pg_tune.rs`).
    pub append_writers: usize,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// Run the embedded migrations on connect (under an advisory lock). When off, the schema
    /// must already be at this code's version.
    pub migrate: bool,
    /// Send a coalesced `NOTIFY` after appends so subscribers in other processes wake up at
    /// once instead of at their poll interval.
    pub notify: bool,
}

impl PgStoreOptions {
    /// Defaults for `url`: schema `strata`, 16 connections, 2 append batches in flight, 5 s connect
    /// timeout, migrations and notifications on.
    pub fn new(url: impl Into<String>) -> Self {
        PgStoreOptions {
            url: url.into(),
            schema: limits::DEFAULT_SCHEMA.to_owned(),
            max_connections: 16,
            append_writers: 2,
            connect_timeout: Duration::from_secs(5),
            migrate: true,
            notify: true,
        }
    }
    /// Uses `schema` instead of `strata`.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }
    /// Sets the pool size.
    pub fn with_max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }
    /// Sets how many append batches may run at once.
    pub fn with_append_writers(mut self, n: usize) -> Self {
        self.append_writers = n;
        self
    }
    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Turns running migrations on connect on or off.
    pub fn with_migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }
    /// Turns cross-process `NOTIFY` on or off.
    pub fn with_notify(mut self, notify: bool) -> Self {
        self.notify = notify;
        self
    }

    /// Checks the options that can be checked without a server.
    pub fn validate(&self) -> Result<(), ConnectError> {
        validate_schema_name(&self.schema)?;
        if self.max_connections < 2 {
            return Err(ConnectError::InvalidUrl {
                reason: "max_connections must be at least 2".to_owned(),
            });
        }
        Ok(())
    }
}

/// Checks that `name` is a plain identifier that needs no quoting.
pub(crate) fn validate_schema_name(name: &str) -> Result<(), ConnectError> {
    let bad = |reason: &str| {
        Err(ConnectError::InvalidSchemaName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > limits::SCHEMA_NAME_MAX_BYTES {
        return bad("is too long");
    }
    let mut chars = name.chars();
    if !chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
    {
        return bad("must start with a lower-case letter or `_`");
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return bad("may hold only lower-case letters, digits and `_`");
    }
    if name.starts_with("pg_") {
        return bad("names starting with `pg_` are reserved by PostgreSQL");
    }
    Ok(())
}
