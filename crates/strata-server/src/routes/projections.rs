//! Projections hosted by the serving program: list, status with lag, pause, resume, reset and
//! rebuild with progress. Reading needs a read right; operating needs the admin role.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

use strata::projection::{ProjectionError, ProjectionInfo, ProjectionStatus};
use strata_core::Position;
use strata_wire::parse_body;

use super::{caller, json_response, path_param, read_body, require_admin};
use crate::auth::Principal;
use crate::config::Action;
use crate::error::{ApiError, ErrorCode};
use crate::limits;
use crate::query::Query;
use crate::rebuilds::RebuildRun;
use crate::AppState;

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> Self {
        match e {
            ProjectionError::UnknownProjection(name) => unknown(&name),
            ProjectionError::RebuildInProgress(name) => ApiError::new(
                ErrorCode::RebuildInProgress,
                format!("projection {name} is being rebuilt already; see GET /projections/{name}"),
            )
            .with("projection", json!(name)),
            ProjectionError::Read(r) => r.into(),
            ProjectionError::ReadModel(why) => ApiError::new(
                ErrorCode::Unavailable,
                "the read-model database is unavailable",
            )
            .with_internal(format!("read-model database: {why}")),
            other => ApiError::internal(other.to_string()),
        }
    }
}

fn unknown(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ProjectionNotFound,
        format!("this server hosts no projection named {name:?} (see GET /projections)"),
    )
    .with("projection", json!(name))
}

fn name_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let name = path_param(p, "name")?;
    if name.is_empty() || name.len() > limits::PROJECTION_NAME_MAX_BYTES {
        return Err(ApiError::invalid(
            "name",
            format!("must be 1 to {} bytes", limits::PROJECTION_NAME_MAX_BYTES),
        ));
    }
    Ok(name)
}

fn may_read(who: &Principal) -> Result<(), ApiError> {
    if who.has_any(Action::Read) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "token {:?} may not read projection status: that needs a read right",
            who.name
        ),
    ))
}

/// One projection as the API shows it: its info, and its latest rebuild when there was one.
fn info_json(info: &ProjectionInfo, rebuild: Option<&RebuildRun>) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert(
            "rebuild".to_owned(),
            rebuild.map_or(Value::Null, RebuildRun::to_json),
        );
    }
    v
}

async fn one(st: &AppState, name: &str) -> Result<Value, ApiError> {
    let Some(control) = st.projections() else {
        return Err(unknown(name));
    };
    let info = control.status(name).await?;
    Ok(info_json(&info, st.rebuilds().get(name).as_ref()))
}

/// `GET /projections`
pub(crate) async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    may_read(&who)?;
    Query::parse(raw.as_deref(), &[])?;
    let infos = match st.projections() {
        Some(control) => control.list().await?,
        None => Vec::new(),
    };
    let items: Vec<Value> = infos
        .iter()
        .map(|i| info_json(i, st.rebuilds().get(&i.name).as_ref()))
        .collect();
    Ok(json_response(&json!({ "projections": items })))
}

/// A `wait` parameter: `250ms`, `2s` or milliseconds, at most
/// [`limits::PROJECTION_WAIT_MAX_MS`].
fn wait_param(v: &str) -> Result<Duration, ApiError> {
    let (digits, unit_ms) = if let Some(ms) = v.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(s) = v.strip_suffix('s') {
        (s, 1000)
    } else {
        (v, 1)
    };
    let ms = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .ok_or_else(|| {
            ApiError::invalid(
                "wait",
                format!("must be a duration such as 250ms or 2s, not {v:?}"),
            )
        })?;
    if ms > limits::PROJECTION_WAIT_MAX_MS {
        return Err(ApiError::invalid(
            "wait",
            format!(
                "is {ms} ms; a wait is at most {} ms (PROJECTION_WAIT_MAX_MS)",
                limits::PROJECTION_WAIT_MAX_MS
            ),
        )
        .with("limit", json!(limits::PROJECTION_WAIT_MAX_MS)));
    }
    Ok(Duration::from_millis(ms))
}

/// Waits until projection `name` has passed `position` or `wait` is over: its status then,
/// or `not_yet_consistent`. A paused or failed projection will not move, so it answers at once.
/// The wait is the runner's own ([`ProjectionControl::wait_for`]), woken by the projection's
/// progress.
async fn wait_until(
    st: &AppState,
    name: &str,
    position: u64,
    wait: Duration,
) -> Result<Value, ApiError> {
    let Some(control) = st.projections() else {
        return Err(unknown(name));
    };
    let started = Instant::now();
    let stuck = |info: &ProjectionInfo| {
        matches!(
            info.status,
            ProjectionStatus::Paused | ProjectionStatus::Failed
        )
    };
    let info = control.status(name).await?;
    let passed = |info: &ProjectionInfo| info.checkpoint.is_some_and(|c| c.0 >= position);
    if !passed(&info) && !stuck(&info) {
        match control.wait_for(name, Position(position), wait).await {
            Ok(())
            | Err(ProjectionError::NotYetConsistent { .. })
            | Err(ProjectionError::Failed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let info = if passed(&info) {
        info
    } else {
        control.status(name).await?
    };
    if passed(&info) {
        return Ok(info_json(&info, st.rebuilds().get(name).as_ref()));
    }
    let reached = info
        .checkpoint
        .map_or_else(|| "no position yet".to_owned(), |p| format!("position {p}"));
    let waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let why = if stuck(&info) {
        format!(
            "; it is {} and will not move until resumed",
            info.status.as_str()
        )
    } else {
        String::new()
    };
    Err(ApiError::new(
        ErrorCode::NotYetConsistent,
        format!(
            "projection {name} is not yet consistent with position {position}: it has \
             reached {reached} after waiting {waited_ms} ms{why}"
        ),
    )
    .with("projection", json!(name))
    .with("position", json!(position))
    .with("reached", json!(info.checkpoint.map(|p| p.0)))
    .with("waitedMs", json!(waited_ms))
    .with("projectionStatus", json!(info.status.as_str())))
}

/// `GET /projections/{name}`, and with `atLeast=P` (optionally `wait=2s`) once it has passed
/// position `P`: read-your-writes for HTTP clients.
pub(crate) async fn status(
    State(st): State<AppState>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    may_read(&who)?;
    let name = name_param(name)?;
    let q = Query::parse(raw.as_deref(), &["atLeast", "wait"])?;
    let at_least = q.u64("atLeast")?;
    let wait = q.one("wait")?.map(wait_param).transpose()?;
    match (at_least, wait) {
        (Some(position), wait) => Ok(json_response(
            &wait_until(&st, &name, position, wait.unwrap_or_default()).await?,
        )),
        (None, Some(_)) => Err(ApiError::invalid(
            "wait",
            "waits for atLeast: give the position to wait for (atLeast=P)",
        )),
        (None, None) => Ok(json_response(&one(&st, &name).await?)),
    }
}

/// What `POST /projections/{name}/{op}` does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Pause,
    Resume,
    Reset,
    Rebuild,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Pause => "pause",
            Op::Resume => "resume",
            Op::Reset => "reset",
            Op::Rebuild => "rebuild",
        }
    }
}

/// The body of an operation: nothing, or an empty JSON object.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParameters {}

/// Largest body an operation reads: it takes no parameters, so `{}` with some whitespace.
const OPERATION_BODY_MAX_BYTES: u64 = 1024;

async fn operate(
    st: AppState,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    raw: Option<String>,
    body: Body,
    op: Op,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    require_admin(&who, &format!("{} projections", op.verb()))?;
    let name = name_param(name)?;
    Query::parse(raw.as_deref(), &[])?;
    let (bytes, _charge) = read_body(&st, body, &headers, OPERATION_BODY_MAX_BYTES).await?;
    if !bytes.trim_ascii().is_empty() {
        let NoParameters {} = parse_body(&bytes)?;
    }
    let Some(control) = st.projections() else {
        return Err(unknown(&name));
    };
    tracing::info!(projection = %name, op = op.verb(), by = %who.name, "projection operation");
    if let Op::Rebuild = op {
        // Fails fast on an unknown name; the rebuild itself runs in the background and
        // reports its progress in GET /projections/{name}.
        control.status(&name).await?;
        st.rebuilds().start(control, &name)?;
        let body = one(&st, &name).await?;
        return Ok((StatusCode::ACCEPTED, json_response(&body)).into_response());
    }
    // Pause, resume and reset take several steps: each runs in its own task, so a client
    // that goes away does not stop one halfway.
    let task_name = name.clone();
    tokio::spawn(async move {
        match op {
            Op::Pause => control.pause(&task_name).await,
            Op::Resume => control.resume(&task_name).await,
            Op::Reset | Op::Rebuild => control.reset(&task_name).await,
        }
    })
    .await
    .map_err(|e| ApiError::internal(format!("projection {}: {e}", op.verb())))??;
    Ok(json_response(&one(&st, &name).await?))
}

macro_rules! op_handler {
    ($fn_name:ident, $op:expr, $doc:literal) => {
        #[doc = $doc]
        pub(crate) async fn $fn_name(
            State(st): State<AppState>,
            headers: HeaderMap,
            name: Result<Path<String>, PathRejection>,
            RawQuery(raw): RawQuery,
            body: Body,
        ) -> Result<Response, ApiError> {
            operate(st, headers, name, raw, body, $op).await
        }
    };
}

op_handler!(pause, Op::Pause, "`POST /projections/{name}/pause`");
op_handler!(resume, Op::Resume, "`POST /projections/{name}/resume`");
op_handler!(reset, Op::Reset, "`POST /projections/{name}/reset`");
op_handler!(rebuild, Op::Rebuild, "`POST /projections/{name}/rebuild`");
