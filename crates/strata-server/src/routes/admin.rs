//! Operations on the whole store, for admins: starting a scavenge or an archive pass, and
//! following them.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{caller, json_response, require_admin};
use crate::error::{ApiError, ErrorCode};
use crate::query::Query;
use crate::AppState;

/// `POST /admin/scavenge`: starts a scavenge; `202` with its status once it has begun.
pub(crate) async fn start_scavenge(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    require_admin(&who, "scavenge")?;
    Query::parse(raw.as_deref(), &[])?;
    let status = st.scavenges().start(&st).await?;
    Ok((StatusCode::ACCEPTED, json_response(&status)).into_response())
}

/// `GET /admin/scavenge`: the latest scavenge, running or ended (`idle` when none ran).
pub(crate) async fn scavenge_status(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    require_admin(&who, "read the scavenge status")?;
    Query::parse(raw.as_deref(), &[])?;
    Ok(json_response(&st.scavenges().status()))
}

/// The server's archiving, or `archive_unconfigured`.
fn archives(st: &AppState) -> Result<std::sync::Arc<crate::archives::Archives>, ApiError> {
    st.archives().ok_or_else(|| {
        ApiError::new(
            ErrorCode::ArchiveUnconfigured,
            "this server has no archive: start it with --archive URL (the embedded store only)",
        )
    })
}

/// `POST /admin/archive`: asks for an archive pass now; `202` with the status (the pass runs
/// in the background; follow it with `GET /admin/archive`).
pub(crate) async fn start_archive(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    require_admin(&who, "archive")?;
    Query::parse(raw.as_deref(), &[])?;
    let archives = archives(&st)?;
    archives.request();
    Ok((StatusCode::ACCEPTED, json_response(&archives.status())).into_response())
}

/// `GET /admin/archive`: the archiving's status.
pub(crate) async fn archive_status(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    require_admin(&who, "read the archive status")?;
    Query::parse(raw.as_deref(), &[])?;
    Ok(json_response(&archives(&st)?.status()))
}
