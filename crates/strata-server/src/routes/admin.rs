//! Operations on the whole store, for admins: starting a scavenge and following it.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{caller, json_response, require_admin};
use crate::error::ApiError;
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
