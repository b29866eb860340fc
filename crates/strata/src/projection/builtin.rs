//! Projections that ship with Strata and need no application code, so `strata serve` can host
//! them: [`EventTypeCounts`], the number of events of each type in each category.

#[cfg(feature = "postgres")]
use std::collections::BTreeMap;

#[cfg(feature = "postgres")]
use async_trait::async_trait;
#[cfg(feature = "postgres")]
use sqlx::postgres::PgConnection;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use strata_core::{Filter, RecordedEvent};

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use super::HandlerError;
#[cfg(feature = "postgres")]
use super::PgProjection;
#[cfg(feature = "sqlite")]
use super::{Projection, Sql};

/// The built-in projections by name, for a command line that hosts them.
pub const BUILTIN_PROJECTIONS: &[&str] = &[EventTypeCounts::NAME];

/// Events per (category, event type), with the last position and time each was seen: what a
/// dashboard shows of a store. Table `event_type_counts (category, event_type, events,
/// last_position, last_recorded_at)`, in SQLite ([`Projection`]) or PostgreSQL
/// ([`PgProjection`]).
///
/// ```
/// # #[cfg(feature = "sqlite")] {
/// use strata::projection::{EventTypeCounts, Projection};
/// assert_eq!(Projection::name(&EventTypeCounts), "event-type-counts");
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct EventTypeCounts;

impl EventTypeCounts {
    /// Its name.
    pub const NAME: &'static str = "event-type-counts";
}

#[cfg(feature = "sqlite")]
impl Projection for EventTypeCounts {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn filter(&self) -> Filter {
        Filter::default()
    }

    fn tables(&self) -> &[&'static str] {
        &["event_type_counts"]
    }

    fn setup(&self, sql: &Sql<'_>) -> Result<(), HandlerError> {
        sql.execute_batch(
            "CREATE TABLE {event_type_counts} (
                 category TEXT NOT NULL,
                 event_type TEXT NOT NULL,
                 events INTEGER NOT NULL,
                 last_position INTEGER NOT NULL,
                 last_recorded_at TEXT NOT NULL,
                 PRIMARY KEY (category, event_type))",
        )
    }

    fn apply(&self, sql: &Sql<'_>, event: &RecordedEvent) -> Result<(), HandlerError> {
        let position = i64::try_from(event.position.0)
            .map_err(|_| HandlerError::new("position beyond i64"))?;
        sql.execute(
            "INSERT INTO {event_type_counts} VALUES (?1, ?2, 1, ?3, ?4)
             ON CONFLICT (category, event_type) DO UPDATE
             SET events = events + 1, last_position = ?3, last_recorded_at = ?4",
            rusqlite::params![
                event.category(),
                event.event_type.as_str(),
                position,
                event.recorded_at.to_rfc3339(),
            ],
        )?;
        Ok(())
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl PgProjection for EventTypeCounts {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn filter(&self) -> Filter {
        Filter::default()
    }

    async fn setup(&self, conn: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS event_type_counts (
                 category TEXT NOT NULL,
                 event_type TEXT NOT NULL,
                 events BIGINT NOT NULL,
                 last_position BIGINT NOT NULL,
                 last_recorded_at TIMESTAMPTZ NOT NULL,
                 PRIMARY KEY (category, event_type))",
        )
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), HandlerError> {
        self.apply_batch(conn, std::slice::from_ref(event))
            .await
            .map_err(|(_, e)| e)
    }

    /// One upsert per (category, event type) in the batch, not one per event.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), (usize, HandlerError)> {
        let mut groups: BTreeMap<(&str, &str), (i64, &RecordedEvent)> = BTreeMap::new();
        for event in events {
            let group = groups
                .entry((event.category(), event.event_type.as_str()))
                .or_insert((0, event));
            group.0 += 1;
            group.1 = event;
        }
        for ((category, event_type), (count, last)) in groups {
            let position = i64::try_from(last.position.0)
                .map_err(|_| (0, HandlerError::new("position beyond i64")))?;
            sqlx::query(
                "INSERT INTO event_type_counts VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (category, event_type) DO UPDATE
                 SET events = event_type_counts.events + EXCLUDED.events,
                     last_position = EXCLUDED.last_position,
                     last_recorded_at = EXCLUDED.last_recorded_at",
            )
            .bind(category)
            .bind(event_type)
            .bind(count)
            .bind(position)
            .bind(last.recorded_at)
            .execute(&mut *conn)
            .await
            .map_err(|e| (0, HandlerError::from(e)))?;
        }
        Ok(())
    }
}
