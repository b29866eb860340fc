//! [`ProjectionControl`]: the operations a serving program offers on its projections (list,
//! status, pause, resume, reset, rebuild), over either runner, so a server or a CLI can drive
//! projections without knowing which read-model database they write to.

use std::time::Duration;

use async_trait::async_trait;
use strata_core::Position;

#[cfg(feature = "postgres")]
use super::PgProjections;
#[cfg(feature = "sqlite")]
use super::Projections;
use super::{ProjectionError, ProjectionInfo, RebuildProgress};

/// The operator's view of a set of running projections.
///
/// Implemented by [`Projections`] (SQLite read models) and [`PgProjections`] (PostgreSQL read
/// models); `strata-server` takes one as `Arc<dyn ProjectionControl>` to serve its
/// `/projections` endpoints.
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use strata::projection::{EventTypeCounts, ProjectionControl, Projections, SqliteReadModels};
/// let dir = tempfile::tempdir().unwrap();
/// let store = strata_log::LogStore::open(dir.path().join("data")).unwrap();
/// let models = SqliteReadModels::next_to(dir.path().join("data")).unwrap();
/// let projections = Projections::new(Arc::new(store), models);
/// projections.spawn(EventTypeCounts).await.unwrap();
///
/// let control: Arc<dyn ProjectionControl> = Arc::new(projections.clone());
/// control.pause("event-type-counts").await.unwrap();
/// let listed = control.list().await.unwrap();
/// assert_eq!(listed[0].status, strata::projection::ProjectionStatus::Paused);
/// projections.shutdown().await;
/// # });
/// ```
#[async_trait]
pub trait ProjectionControl: Send + Sync + 'static {
    /// Every projection, in name order.
    async fn list(&self) -> Result<Vec<ProjectionInfo>, ProjectionError>;
    /// One projection.
    async fn status(&self, name: &str) -> Result<ProjectionInfo, ProjectionError>;
    /// Stops it after its current batch.
    async fn pause(&self, name: &str) -> Result<(), ProjectionError>;
    /// Runs a paused or failed projection again from its checkpoint.
    async fn resume(&self, name: &str) -> Result<(), ProjectionError>;
    /// Empties its read model and replays it from position 0.
    async fn reset(&self, name: &str) -> Result<(), ProjectionError>;
    /// Waits until it has passed `position`, at most `timeout`, woken by its own progress:
    /// [`ProjectionError::NotYetConsistent`] when the time runs out,
    /// [`ProjectionError::Failed`] when it fails first.
    async fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<(), ProjectionError>;
    /// Rebuilds it into a fresh copy and swaps it in once caught up; `on_progress` is called
    /// after every batch. Returns the checkpoint the new copy starts from.
    async fn rebuild(
        &self,
        name: &str,
        on_progress: &mut (dyn for<'p> FnMut(&'p RebuildProgress) + Send),
    ) -> Result<Option<Position>, ProjectionError>;
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl ProjectionControl for Projections {
    async fn list(&self) -> Result<Vec<ProjectionInfo>, ProjectionError> {
        Projections::list(self).await
    }
    async fn status(&self, name: &str) -> Result<ProjectionInfo, ProjectionError> {
        Projections::status(self, name).await
    }
    async fn pause(&self, name: &str) -> Result<(), ProjectionError> {
        Projections::pause(self, name).await
    }
    async fn resume(&self, name: &str) -> Result<(), ProjectionError> {
        Projections::resume(self, name).await
    }
    async fn reset(&self, name: &str) -> Result<(), ProjectionError> {
        Projections::reset(self, name).await
    }
    async fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        Projections::wait_for(self, name, position, timeout).await
    }
    async fn rebuild(
        &self,
        name: &str,
        on_progress: &mut (dyn for<'p> FnMut(&'p RebuildProgress) + Send),
    ) -> Result<Option<Position>, ProjectionError> {
        Projections::rebuild(self, name, on_progress).await
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl ProjectionControl for PgProjections {
    async fn list(&self) -> Result<Vec<ProjectionInfo>, ProjectionError> {
        PgProjections::list(self).await
    }
    async fn status(&self, name: &str) -> Result<ProjectionInfo, ProjectionError> {
        PgProjections::status(self, name).await
    }
    async fn pause(&self, name: &str) -> Result<(), ProjectionError> {
        PgProjections::pause(self, name).await
    }
    async fn resume(&self, name: &str) -> Result<(), ProjectionError> {
        PgProjections::resume(self, name).await
    }
    async fn reset(&self, name: &str) -> Result<(), ProjectionError> {
        PgProjections::reset(self, name).await.map(|_| ())
    }
    async fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        PgProjections::wait_for(self, name, position, timeout).await
    }
    async fn rebuild(
        &self,
        name: &str,
        on_progress: &mut (dyn for<'p> FnMut(&'p RebuildProgress) + Send),
    ) -> Result<Option<Position>, ProjectionError> {
        PgProjections::rebuild(self, name, on_progress).await
    }
}
