//! Subject keys in PostgreSQL: tables beside a store's events, in its schema.
//!
//! - `strata_subject_keys (subject_ref bytea PRIMARY KEY, wrapped bytea)`: a subject's key
//!   wrapped under the master key, `NULL` once forgotten;
//! - `strata_subject_forgets (subject_ref bytea PRIMARY KEY, subject text)`: pending forgets;
//! - `strata_key_check (id, check_value)`: the master key's check value;
//! - `strata_store_secrets (id, check_value, sealed)`, once the master key was rotated: the
//!   check value of the master key in force and the store's secrets sealed under it.
//!
//! A forget records the pending row and nulls the key in one transaction. The row's old
//! version keeps the wrapped key until `VACUUM` removes it, and the WAL until it is recycled;
//! the key is wrapped under the master key, which the database never holds. `docs/gdpr.md`
//! says what an operator does about it.

use async_trait::async_trait;
use sqlx::{PgPool, Row};

use crate::keys::{KeyError, KeyStorage, PendingForget, StoredKey};
use crate::master::SubjectRef;
use crate::rotation::StoredSecrets;
use crate::seal::WRAPPED_KEY_BYTES;

/// Subject keys in tables of a PostgreSQL schema (the store's own: `PostgresStore::schema`).
pub struct PgKeys {
    pool: PgPool,
    schema: String,
}

fn db(e: sqlx::Error) -> KeyError {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            KeyError::Unavailable(format!("PostgreSQL: {e}"))
        }
        e => KeyError::Backend(format!("PostgreSQL: {e}")),
    }
}

impl PgKeys {
    /// The key tables in `schema`, created if missing. `schema` is a store's schema name (an
    /// identifier PostgresStore checked).
    pub async fn open(pool: PgPool, schema: &str) -> Result<PgKeys, KeyError> {
        if !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(KeyError::Backend(format!(
                "the schema name `{schema}` is not a plain identifier"
            )));
        }
        let keys = PgKeys {
            pool,
            schema: schema.to_owned(),
        };
        for ddl in [
            "CREATE TABLE IF NOT EXISTS {s}.strata_subject_keys (
                subject_ref bytea PRIMARY KEY, wrapped bytea)",
            "CREATE TABLE IF NOT EXISTS {s}.strata_subject_forgets (
                subject_ref bytea PRIMARY KEY, subject text NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {s}.strata_key_check (
                id int PRIMARY KEY CHECK (id = 1), check_value bytea NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {s}.strata_store_secrets (
                id int PRIMARY KEY CHECK (id = 1), check_value bytea NOT NULL,
                sealed bytea NOT NULL)",
        ] {
            sqlx::query(&keys.sql(ddl))
                .execute(&keys.pool)
                .await
                .map_err(db)?;
        }
        Ok(keys)
    }

    fn sql(&self, text: &str) -> String {
        text.replace("{s}", &self.schema)
    }

    /// A transaction holding the master key's row locked `FOR {mode}` (`SHARE` or `UPDATE`),
    /// and the check value of the master key in force, read once the lock is held. Read
    /// committed: each statement sees what committed before it, so after waiting for a
    /// rotation's lock it reads the check value the rotation wrote (a snapshot taken before
    /// the wait would show the old one).
    async fn in_force(
        &self,
        mode: &str,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Postgres>, Option<Vec<u8>>), KeyError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(&self.sql(&format!(
            "SELECT 1 FROM {{s}}.strata_key_check WHERE id = 1 FOR {mode}"
        )))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let in_force: Option<Vec<u8>> =
            sqlx::query_scalar(&self.sql(&format!("SELECT {IN_FORCE}")))
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        Ok((tx, in_force))
    }
}

/// The check value of the master key in force, in SQL: the secrets', or the one recorded at
/// set-up.
const IN_FORCE: &str = "COALESCE((SELECT check_value FROM {s}.strata_store_secrets WHERE id = 1),
                                 (SELECT check_value FROM {s}.strata_key_check WHERE id = 1))";

/// The subject reference in column `i` of `row`.
fn subject_ref_at(row: &sqlx::postgres::PgRow, i: usize) -> Result<SubjectRef, KeyError> {
    let r: Vec<u8> = row.try_get(i).map_err(db)?;
    Ok(SubjectRef(r.try_into().map_err(|_| {
        KeyError::Backend("a subject reference is not 16 bytes".into())
    })?))
}

fn stored(wrapped: Option<Vec<u8>>, subject: SubjectRef) -> Result<StoredKey, KeyError> {
    match wrapped {
        None => Ok(StoredKey::Forgotten),
        Some(w) => Ok(StoredKey::Wrapped(w.try_into().map_err(|_| {
            KeyError::Damaged {
                subject,
                reason: "its wrapped key has the wrong length".to_owned(),
            }
        })?)),
    }
}

#[async_trait]
impl KeyStorage for PgKeys {
    async fn check_master(&self, check: [u8; 16]) -> Result<bool, KeyError> {
        let row = sqlx::query(&self.sql(
            "INSERT INTO {s}.strata_key_check (id, check_value) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET id = 1 RETURNING check_value",
        ))
        .bind(check.as_slice())
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let stored: Vec<u8> = row.try_get(0).map_err(db)?;
        Ok(stored == check)
    }

    async fn load(&self, subject: SubjectRef) -> Result<StoredKey, KeyError> {
        let row = sqlx::query(
            &self.sql("SELECT wrapped FROM {s}.strata_subject_keys WHERE subject_ref = $1"),
        )
        .bind(subject.as_bytes().as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        match row {
            None => Ok(StoredKey::Absent),
            Some(row) => stored(row.try_get(0).map_err(db)?, subject),
        }
    }

    async fn create(
        &self,
        subject: SubjectRef,
        wrapped: [u8; WRAPPED_KEY_BYTES],
        check: [u8; 16],
    ) -> Result<StoredKey, KeyError> {
        // The insert, or the row a concurrent creation or a forget left. Nothing is inserted
        // when another master key is in force: the rotation that put it there re-wrapped
        // every key under a wrapping key this process does not have.
        // Shared: rotations (which take it exclusively) wait for creations, and back.
        let (mut tx, in_force) = self.in_force("SHARE").await?;
        if in_force.as_deref() != Some(check.as_slice()) {
            return Err(KeyError::Rotation(
                "the master key was rotated since this process started: restart it with the new \
                 master key"
                    .to_owned(),
            ));
        }
        let row = sqlx::query(&self.sql(
            "WITH ins AS (INSERT INTO {s}.strata_subject_keys (subject_ref, wrapped)
                          VALUES ($1, $2) ON CONFLICT (subject_ref) DO NOTHING RETURNING wrapped)
             SELECT wrapped FROM ins
             UNION ALL
             SELECT wrapped FROM {s}.strata_subject_keys WHERE subject_ref = $1
             LIMIT 1",
        ))
        .bind(subject.as_bytes().as_slice())
        .bind(wrapped.as_slice())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        match row {
            Some(row) => stored(row.try_get(0).map_err(db)?, subject),
            // A concurrent creation committed while this statement ran: its snapshot does not
            // show the row its insert gave way to. Read it now.
            None => self.load(subject).await,
        }
    }

    async fn forget(&self, pending: &PendingForget) -> Result<StoredKey, KeyError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let r = pending.subject_ref.as_bytes().as_slice();
        sqlx::query(&self.sql(
            "INSERT INTO {s}.strata_subject_forgets (subject_ref, subject) VALUES ($1, $2)
             ON CONFLICT (subject_ref) DO NOTHING",
        ))
        .bind(r)
        .bind(&pending.subject)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let before =
            sqlx::query(&self.sql(
                "SELECT wrapped FROM {s}.strata_subject_keys WHERE subject_ref = $1 FOR UPDATE",
            ))
            .bind(r)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let before = match before {
            None => StoredKey::Absent,
            Some(row) => stored(row.try_get(0).map_err(db)?, pending.subject_ref)
                .unwrap_or(StoredKey::Wrapped([0; WRAPPED_KEY_BYTES])),
        };
        sqlx::query(&self.sql(
            "INSERT INTO {s}.strata_subject_keys (subject_ref, wrapped) VALUES ($1, NULL)
             ON CONFLICT (subject_ref) DO UPDATE SET wrapped = NULL",
        ))
        .bind(r)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(before)
    }

    async fn pending(&self) -> Result<Vec<PendingForget>, KeyError> {
        let rows =
            sqlx::query(&self.sql("SELECT subject_ref, subject FROM {s}.strata_subject_forgets"))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(PendingForget {
                    subject_ref: subject_ref_at(row, 0)?,
                    subject: row.try_get(1).map_err(db)?,
                })
            })
            .collect()
    }

    async fn settle(&self, subject: SubjectRef) -> Result<(), KeyError> {
        sqlx::query(&self.sql("DELETE FROM {s}.strata_subject_forgets WHERE subject_ref = $1"))
            .bind(subject.as_bytes().as_slice())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    fn name(&self) -> String {
        format!("PostgreSQL schema {}", self.schema)
    }

    async fn secrets(&self) -> Result<Option<StoredSecrets>, KeyError> {
        let row = sqlx::query(
            &self.sql("SELECT check_value, sealed FROM {s}.strata_store_secrets WHERE id = 1"),
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let check: Vec<u8> = row.try_get(0).map_err(db)?;
        Ok(Some(StoredSecrets {
            check: check
                .try_into()
                .map_err(|_| KeyError::Backend("a check value is not 16 bytes".into()))?,
            sealed: row.try_get(1).map_err(db)?,
        }))
    }

    async fn set_secrets(&self, expected: [u8; 16], new: &StoredSecrets) -> Result<bool, KeyError> {
        // Exclusive: no key is created under the old master key while the new one comes in.
        let (mut tx, in_force) = self.in_force("UPDATE").await?;
        let in_force = in_force.as_deref();
        if in_force != Some(expected.as_slice()) && in_force != Some(new.check.as_slice()) {
            return Ok(false);
        }
        sqlx::query(&self.sql(
            "INSERT INTO {s}.strata_store_secrets (id, check_value, sealed) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET check_value = $1, sealed = $2",
        ))
        .bind(new.check.as_slice())
        .bind(new.sealed.as_slice())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn subjects(&self, prefix: u8) -> Result<Vec<SubjectRef>, KeyError> {
        // A range of the primary key: the references starting with `prefix`.
        let rows = sqlx::query(&self.sql(
            "SELECT subject_ref FROM {s}.strata_subject_keys
             WHERE subject_ref >= $1 AND ($2::bytea IS NULL OR subject_ref < $2)
               AND wrapped IS NOT NULL",
        ))
        .bind(vec![prefix])
        .bind(prefix.checked_add(1).map(|p| vec![p]))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|row| subject_ref_at(row, 0)).collect()
    }

    async fn rewrap(
        &self,
        subject: SubjectRef,
        from: [u8; WRAPPED_KEY_BYTES],
        to: [u8; WRAPPED_KEY_BYTES],
    ) -> Result<bool, KeyError> {
        let done = sqlx::query(&self.sql(
            "UPDATE {s}.strata_subject_keys SET wrapped = $3
             WHERE subject_ref = $1 AND wrapped = $2",
        ))
        .bind(subject.as_bytes().as_slice())
        .bind(from.as_slice())
        .bind(to.as_slice())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}
