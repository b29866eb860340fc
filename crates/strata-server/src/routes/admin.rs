//! Operations on the whole store, for admins: starting a scavenge and following it.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{caller, json_response};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::query::Query;
use crate::AppState;

fn may_administer(who: &Principal, what: &str) -> Result<(), ApiError> {
    if who.is_admin() {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "token {:?} may not {what}: that needs the admin role",
            who.name
        ),
    ))
}

/// `POST /admin/scavenge`: starts a scavenge; `202` with its status once it has begun.
pub(crate) async fn start_scavenge(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    may_administer(&who, "scavenge")?;
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
    may_administer(&who, "read the scavenge status")?;
    Query::parse(raw.as_deref(), &[])?;
    Ok(json_response(&st.scavenges().status()))
}
