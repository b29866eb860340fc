//! # strata-server
//!
//! Strata over HTTP: a JSON API for appends and reads, live subscriptions as server-sent events,
//! API tokens with per-stream-prefix rights, Prometheus metrics and an OpenAPI document. It is a
//! library: [`app`] builds an [`axum::Router`] over any [`EventStore`] (the embedded log or
//! PostgreSQL), and [`serve`] runs it on a listener, with TLS when given a certificate. The
//! `strata serve` command is a thin shell around these two.
//!
//! Every error is an RFC 9457 problem document (`application/problem+json`) with a stable
//! `code`; see [`ErrorCode`]. Every input is bounded by the server's limits in [`limits`] and
//! the model's in [`strata_core::limits`]. The HTTP API is described in `docs/http-api.md` and at
//! `GET /openapi.json`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use axum::body::Body;
//! use axum::http::Request;
//! use tower::ServiceExt;
//!
//! let store = Arc::new(strata_testkit::MemoryStore::new());
//! let state = strata_server::AppState::new(store, strata_server::ServerConfig::default()).unwrap();
//! let app = strata_server::app(state);
//! let append = Request::post("/streams/account-1")
//!     .body(Body::from(r#"{"expectedVersion":"no_stream","events":[{"eventType":"AccountOpened","data":{"initialBalance":100}}]}"#))
//!     .unwrap();
//! let response = app.clone().oneshot(append).await.unwrap();
//! assert_eq!(response.status(), 200);
//! let read = Request::get("/streams/account-1").body(Body::empty()).unwrap();
//! assert_eq!(app.oneshot(read).await.unwrap().status(), 200);
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod archives;
mod auth;
mod config;
mod connections;
mod error;
mod hub;
pub mod limits;
mod metrics;
pub mod openapi;
mod query;
mod rebuilds;
mod routes;
mod scavenges;

/// Entry points for the fuzz targets into parsers that are otherwise private. Not part of the
/// API: names and shapes may change at any time.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::query::Query;
    pub use strata_wire::query::encode as encode_query_value;
}

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use strata::projection::ProjectionControl;
use strata_core::EventStore;

pub use archives::{ArchivePass, ArchivePassError, Archiver, ARCHIVE_RETRY_MAX};
pub use auth::{hash_token, new_token, Principal};
pub use config::{
    Action, ConfigError, ConfigProblem, GrantConfig, Role, ServerConfig, TokenConfig, TokenRef,
};
pub use error::ApiError;
pub use metrics::Metrics;
pub use routes::{app, ROUTES};
pub use strata_wire::{ErrorCode, PROBLEM_JSON};

/// What every handler shares: the store, the configuration, the token table, the metrics.
/// Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    store: Arc<dyn EventStore>,
    config: ServerConfig,
    auth: auth::Auth,
    metrics: Metrics,
    subscriptions: Mutex<Subscriptions>,
    hub: hub::Hub,
    projections: RwLock<Option<Arc<dyn ProjectionControl>>>,
    rebuilds: rebuilds::Rebuilds,
    scavenges: scavenges::Scavenges,
    /// The archiving, when the server was given an archiver.
    archives: RwLock<Option<Arc<archives::Archives>>>,
    /// Crypto-shredding, when the server was given a master key.
    shredding: RwLock<Option<strata_shred::Shredded>>,
    /// One permit per connection [`serve`] may hold open (`connections_max`).
    connection_slots: Arc<tokio::sync::Semaphore>,
    /// One permit per request-body byte the server may hold at once
    /// (`request_bodies_in_flight_max_bytes`).
    body_bytes: Arc<tokio::sync::Semaphore>,
    /// One permit per byte of events buffered for subscribers (`sse_buffers_total_max_bytes`).
    sse_bytes: Arc<tokio::sync::Semaphore>,
}

#[derive(Default)]
struct Subscriptions {
    per_token: HashMap<String, usize>,
    total: usize,
}

impl AppState {
    /// State over `store`; `config` is validated (the error lists every bad value; see
    /// [`ServerConfig::validate`]).
    pub fn new(store: Arc<dyn EventStore>, config: ServerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let connection_slots =
            Arc::new(tokio::sync::Semaphore::new(config.connections_max as usize));
        let body_bytes = Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(config.request_bodies_in_flight_max_bytes)
                .unwrap_or(usize::MAX)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        ));
        let hub =
            hub::Hub::new(usize::try_from(config.sse_fan_out_max_bytes).unwrap_or(usize::MAX));
        let sse_bytes = Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(config.sse_buffers_total_max_bytes)
                .unwrap_or(usize::MAX)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        ));
        Ok(AppState {
            inner: Arc::new(StateInner {
                store,
                auth: auth::Auth::new(&config),
                config,
                metrics: Metrics::default(),
                subscriptions: Mutex::new(Subscriptions::default()),
                hub,
                sse_bytes,
                projections: RwLock::new(None),
                rebuilds: rebuilds::Rebuilds::default(),
                scavenges: scavenges::Scavenges::default(),
                archives: RwLock::new(None),
                shredding: RwLock::new(None),
                connection_slots,
                body_bytes,
            }),
        })
    }

    /// Hosts `projections`: the `/projections` endpoints list and operate them, and
    /// `/metrics` reports their lag. Without this, the server hosts none.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use strata::projection::{EventTypeCounts, Projections, SqliteReadModels};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Arc::new(strata_log::LogStore::open(dir.path().join("data")).unwrap());
    /// let models = SqliteReadModels::next_to(dir.path().join("data")).unwrap();
    /// let projections = Projections::new(store.clone(), models);
    /// projections.spawn(EventTypeCounts).await.unwrap();
    /// let state = strata_server::AppState::new(store, strata_server::ServerConfig::default())
    ///     .unwrap()
    ///     .with_projections(Arc::new(projections.clone()));
    /// let _router = strata_server::app(state);
    /// projections.shutdown().await;
    /// # });
    /// ```
    pub fn with_projections(self, projections: Arc<dyn ProjectionControl>) -> Self {
        *self.inner.projections.write() = Some(projections);
        self
    }

    /// The projections this server hosts.
    pub fn projections(&self) -> Option<Arc<dyn ProjectionControl>> {
        self.inner.projections.read().clone()
    }

    pub(crate) fn rebuilds(&self) -> &rebuilds::Rebuilds {
        &self.inner.rebuilds
    }

    /// Archives the store's sealed segments with `archiver`: a pass at once, then every
    /// `every` and on `POST /admin/archive`, failures retried with a backoff (see
    /// [`ARCHIVE_RETRY_MAX`]). Starts a task: call it within a Tokio runtime. The task ends
    /// once the state is dropped.
    pub fn with_archiver(self, archiver: Arc<dyn Archiver>, every: std::time::Duration) -> Self {
        *self.inner.archives.write() = Some(Arc::new(archives::Archives::new(archiver)));
        tokio::spawn(archives::run(Arc::downgrade(&self.inner), every));
        self
    }

    /// Serves crypto-shredding's endpoints (`/encryption/schemas`, `/subjects/{subject}`) with
    /// `shredded`, which should be the store the state was made over: appends then seal and
    /// reads open through it.
    pub fn with_shredding(self, shredded: strata_shred::Shredded) -> Self {
        *self.inner.shredding.write() = Some(shredded);
        self
    }

    pub(crate) fn shredding(&self) -> Option<strata_shred::Shredded> {
        self.inner.shredding.read().clone()
    }

    pub(crate) fn archives(&self) -> Option<Arc<archives::Archives>> {
        self.inner.archives.read().clone()
    }

    pub(crate) fn scavenges(&self) -> &scavenges::Scavenges {
        &self.inner.scavenges
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn hub(&self) -> &hub::Hub {
        &self.inner.hub
    }

    pub(crate) fn connection_slots(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.connection_slots
    }

    pub(crate) fn body_bytes(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.body_bytes
    }

    pub(crate) fn sse_bytes(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.sse_bytes
    }

    /// Bytes of events buffered for subscribers now, waiting for their connections.
    pub fn sse_buffered_bytes(&self) -> u64 {
        let max = usize::try_from(self.inner.config.sse_buffers_total_max_bytes)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        max.saturating_sub(self.inner.sse_bytes.available_permits()) as u64
    }

    /// Bytes of recent batches the live fan-out keeps now.
    pub fn sse_fan_out_bytes(&self) -> u64 {
        self.inner.hub.bytes() as u64
    }

    /// Connections [`serve`] holds open now.
    pub fn connections_open(&self) -> u64 {
        let max = self.inner.config.connections_max as usize;
        max.saturating_sub(self.inner.connection_slots.available_permits()) as u64
    }

    /// Request-body bytes held now (charged by `Content-Length` before a body is read).
    pub fn request_body_bytes_in_flight(&self) -> u64 {
        let max = usize::try_from(self.inner.config.request_bodies_in_flight_max_bytes)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        max.saturating_sub(self.inner.body_bytes.available_permits()) as u64
    }

    pub(crate) fn auth(&self) -> &auth::Auth {
        &self.inner.auth
    }

    /// Takes a subscription slot for `principal`, or `too_many_subscriptions`.
    pub(crate) fn subscription_slot(
        &self,
        principal: &Principal,
    ) -> Result<SubscriptionSlot, ApiError> {
        let per_token_max = self.inner.config.subscriptions_per_token_max as usize;
        let mut subs = self.inner.subscriptions.lock();
        let mine = subs.per_token.get(&principal.key).copied().unwrap_or(0);
        if mine >= per_token_max {
            return Err(ApiError::new(
                ErrorCode::TooManySubscriptions,
                format!(
                    "token {:?} already has {mine} open subscriptions; the limit is {per_token_max}",
                    principal.name
                ),
            ));
        }
        if subs.total >= limits::SERVER_SUBSCRIPTIONS_MAX {
            return Err(ApiError::new(
                ErrorCode::TooManySubscriptions,
                format!(
                    "the server has {} open subscriptions, its limit",
                    subs.total
                ),
            ));
        }
        *subs.per_token.entry(principal.key.clone()).or_default() += 1;
        subs.total += 1;
        drop(subs);
        self.inner.metrics.subscription(1);
        Ok(SubscriptionSlot {
            state: self.clone(),
            key: principal.key.clone(),
        })
    }
}

/// An open subscription's place in the per-token count; freed on drop.
pub(crate) struct SubscriptionSlot {
    state: AppState,
    key: String,
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        let mut subs = self.state.inner.subscriptions.lock();
        if let Some(n) = subs.per_token.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                subs.per_token.remove(&self.key);
            }
        }
        subs.total = subs.total.saturating_sub(1);
        drop(subs);
        self.state.inner.metrics.subscription(-1);
    }
}

/// A TLS certificate chain and private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert_file: PathBuf,
    /// The private key.
    pub key_file: PathBuf,
}

/// Why [`serve`] stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The TLS files could not be loaded.
    #[error("cannot load the TLS certificate {cert} and key {key}: {source}")]
    Tls {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The listener failed.
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves `router` on `listener` (already bound) until `shutdown` completes, then lets open
/// requests finish for up to `SERVER_SHUTDOWN_GRACE_MS` (subscriptions are closed).
///
/// `router` is usually [`app`]`(state.clone())`, perhaps merged with an application's own
/// routes; `state` gives the connection limits (its [`ServerConfig`]: `connections_max`,
/// `header_read_timeout_ms`, `keep_alive_idle_timeout_ms`) and the metrics they are counted
/// in. See `docs/http-api.md`, "Limits".
pub async fn serve(
    listener: std::net::TcpListener,
    state: AppState,
    router: axum::Router,
    tls: Option<TlsFiles>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    connections::serve(listener, state, router, tls, shutdown).await
}

/// Checks that the TLS files can be loaded, for validating a configuration at start.
pub async fn check_tls(files: &TlsFiles) -> Result<(), ServeError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert_file, &files.key_file)
        .await
        .map(|_| ())
        .map_err(|source| ServeError::Tls {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
            source,
        })
}
