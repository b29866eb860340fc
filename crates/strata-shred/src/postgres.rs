//! Subject keys in PostgreSQL: tables beside a store's events, in its schema.
//!
//! - `strata_subject_keys (subject_ref bytea PRIMARY KEY, wrapped bytea)`: a subject's key
//!   wrapped under the master key, `NULL` once forgotten;
//! - `strata_subject_forgets (subject_ref bytea PRIMARY KEY, subject text)`: pending forgets;
//! - `strata_key_check (id, check_value)`: the master key's check value.
//!
//! A forget records the pending row and nulls the key in one transaction. The row's old
//! version keeps the wrapped key until `VACUUM` removes it, and the WAL until it is recycled;
//! the key is wrapped under the master key, which the database never holds. `docs/gdpr.md`
//! says what an operator does about it.

use async_trait::async_trait;
use sqlx::{PgPool, Row};

use crate::keys::{KeyError, KeyStorage, PendingForget, StoredKey};
use crate::master::SubjectRef;
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
    ) -> Result<StoredKey, KeyError> {
        // The insert, or the row a concurrent creation or a forget left.
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
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
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
                let r: Vec<u8> = row.try_get(0).map_err(db)?;
                Ok(PendingForget {
                    subject_ref: SubjectRef(r.try_into().map_err(|_| {
                        KeyError::Backend("a pending forget's reference is not 16 bytes".into())
                    })?),
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
}
