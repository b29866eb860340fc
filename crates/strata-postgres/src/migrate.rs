//! Embedded, versioned migrations, run under an advisory lock.
//!
//! Each migration is a SQL file in `src/sql/`, applied once in order. The versions applied are
//! recorded in `<schema>.strata_migrations`. Everything runs in one transaction that first takes
//! a transaction-level advisory lock derived from the schema name, so two processes starting at
//! once apply each migration exactly once: the second waits, then finds nothing left to do.
//! A database whose recorded version is newer than this code's is refused with
//! [`ConnectError::SchemaTooNew`].

use sqlx::{Executor, PgPool, Row};

use crate::error::{first_line, ConnectError};

/// One embedded migration.
struct Migration {
    version: i32,
    description: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "events and snapshots tables, append and position_at functions",
        sql: include_str!("sql/0001_events.sql"),
    },
    Migration {
        version: 2,
        description: "indexes for filtered reads and category listings",
        sql: include_str!("sql/0002_filter_indexes.sql"),
    },
    Migration {
        version: 3,
        description: "strata_readable_head: the readable head's search below a held watermark",
        sql: include_str!("sql/0003_readable_head.sql"),
    },
    Migration {
        version: 4,
        description: "the events table is append-only: triggers refuse other writes",
        sql: include_str!("sql/0004_append_only.sql"),
    },
    Migration {
        version: 5,
        description: "stream lifecycles: tombstones refuse appends, deleted streams re-created",
        sql: include_str!("sql/0005_lifecycle.sql"),
    },
    Migration {
        version: 6,
        description: "strata_append reads a batch's soft-delete state in one statement",
        sql: include_str!("sql/0006_batch_lifecycle_checks.sql"),
    },
    Migration {
        version: 7,
        description: "the store's id, and strata_import for restores from an archive",
        sql: include_str!("sql/0007_import.sql"),
    },
];

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: i32 = 7;

const _: () = assert!(MIGRATIONS.len() as i32 == SCHEMA_VERSION);

/// FNV-1a, 64 bits: a stable hash for advisory lock keys (the same in every process and
/// version, unlike `std`'s hasher).
pub(crate) fn lock_key(purpose: &str, schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in purpose.bytes().chain([0u8]).chain(schema.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// The key of the append critical section's advisory lock for `schema`.
pub(crate) fn append_lock_key(schema: &str) -> i64 {
    lock_key("strata-append", schema)
}

fn render(sql: &str, schema: &str) -> String {
    sql.replace("{schema}", schema)
        .replace("{lock_key}", &append_lock_key(schema).to_string())
}

fn db_error(schema: &str, version: i32, e: &sqlx::Error) -> ConnectError {
    let reason = match e {
        sqlx::Error::Database(db) => first_line(db.message()),
        other => first_line(&other.to_string()),
    };
    ConnectError::Migration {
        schema: schema.to_owned(),
        version,
        reason,
    }
}

/// Brings `schema` up to [`SCHEMA_VERSION`]; when `apply` is false only checks it is there.
pub(crate) async fn migrate(pool: &PgPool, schema: &str, apply: bool) -> Result<(), ConnectError> {
    let err0 = |e: &sqlx::Error| db_error(schema, 0, e);
    let mut tx = pool.begin().await.map_err(|e| err0(&e))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key("strata-migrate", schema))
        .execute(&mut *tx)
        .await
        .map_err(|e| err0(&e))?;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'strata_migrations')",
    )
    .bind(schema)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| err0(&e))?;
    if !exists {
        if !apply {
            return Err(ConnectError::Migration {
                schema: schema.to_owned(),
                version: 0,
                reason: "the schema has no Strata tables and migrations are turned off".to_owned(),
            });
        }
        let sql = render(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.strata_migrations (
                 version     INT PRIMARY KEY,
                 description TEXT NOT NULL,
                 applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
             );",
            schema,
        );
        // A plain string runs as a simple query, which may hold several statements.
        tx.execute(sql.as_str()).await.map_err(|e| err0(&e))?;
    }
    let current: i32 = sqlx::query(&render(
        "SELECT coalesce(max(version), 0) AS v FROM {schema}.strata_migrations",
        schema,
    ))
    .fetch_one(&mut *tx)
    .await
    .and_then(|row| row.try_get("v"))
    .map_err(|e| err0(&e))?;
    if current > SCHEMA_VERSION {
        return Err(ConnectError::SchemaTooNew {
            schema: schema.to_owned(),
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    if current < SCHEMA_VERSION && !apply {
        return Err(ConnectError::Migration {
            schema: schema.to_owned(),
            version: current + 1,
            reason: format!(
                "the schema is at version {current}, this code needs {SCHEMA_VERSION}, and \
                 migrations are turned off"
            ),
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tracing::info!(
            schema,
            version = m.version,
            "applying migration: {}",
            m.description
        );
        let sql = render(m.sql, schema);
        tx.execute(sql.as_str())
            .await
            .map_err(|e| db_error(schema, m.version, &e))?;
        sqlx::query(&render(
            "INSERT INTO {schema}.strata_migrations (version, description) VALUES ($1, $2)",
            schema,
        ))
        .bind(m.version)
        .bind(m.description)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(schema, m.version, &e))?;
    }
    tx.commit().await.map_err(|e| err0(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("a", "b"), lock_key("a", "b"));
        assert_ne!(
            lock_key("strata-append", "x"),
            lock_key("strata-migrate", "x")
        );
        assert_ne!(append_lock_key("x"), append_lock_key("y"));
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.description);
        }
    }

    #[test]
    fn render_replaces_placeholders() {
        let sql = render(
            "SELECT pg_advisory_lock({lock_key}) FROM {schema}.events",
            "s1",
        );
        assert!(sql.contains("s1.events"));
        assert!(!sql.contains('{'));
    }
}
