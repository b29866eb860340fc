//! Projections hosted by the serving program: list, status with lag, pause, resume, reset and
//! rebuild with progress. Reading needs a read right; operating needs the admin role.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use strata::projection::{ProjectionError, ProjectionInfo};
use strata_wire::parse_body;

use super::{caller, json_response, path_param, read_body};
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

fn may_operate(who: &Principal, op: &str) -> Result<(), ApiError> {
    if who.is_admin() {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "token {:?} may not {op} projections: that needs the admin role",
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

/// `GET /projections/{name}`
pub(crate) async fn status(
    State(st): State<AppState>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    may_read(&who)?;
    let name = name_param(name)?;
    Query::parse(raw.as_deref(), &[])?;
    Ok(json_response(&one(&st, &name).await?))
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
    may_operate(&who, op.verb())?;
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
