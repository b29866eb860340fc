//! Crypto-shredding, for admins: the encryption schemas of event types, and forgetting a data
//! subject (docs/gdpr.md).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use strata_shred::{EncryptionSchema, KeyError, ShredError, Shredded, SubjectSource};
use strata_wire::{ForgetAnswer, ForgetOutcome};

use super::{caller, json_response, path_param, read_body, require_admin};
use crate::error::{ApiError, ErrorCode};
use crate::query::Query;
use crate::AppState;

/// Largest body of `PUT /encryption/schemas/{eventType}`: a schema names at most 32 pointers
/// of at most 255 bytes.
const SCHEMA_BODY_MAX_BYTES: u64 = 64 * 1024;

/// The server's crypto-shredding, or `encryption_unconfigured`.
fn shredding(st: &AppState) -> Result<Shredded, ApiError> {
    st.shredding().ok_or_else(|| {
        ApiError::new(
            ErrorCode::EncryptionUnconfigured,
            "this server has no master key, so it seals nothing and forgets no one: start it \
             with --master-key-file, --master-key-env or --master-key-command",
        )
    })
}

/// A crypto-shredding failure as a problem: what a caller can mend is named; the key store's
/// own failures are internal (the detail goes to the log, not to the caller).
fn shred_error(e: ShredError) -> ApiError {
    match e {
        ShredError::InvalidSchema(i) => ApiError::invalid(i.field, i.reason),
        ShredError::TooManySchemas(n) => ApiError::invalid(
            "eventType",
            format!("{n} event types already have a schema, the most a store keeps"),
        ),
        ShredError::Key(KeyError::InvalidSubject(why)) => ApiError::invalid("subject", why),
        ShredError::Key(e @ KeyError::Unavailable(_)) => {
            strata_core::AppendError::Unavailable(e.to_string().into()).into()
        }
        ShredError::Key(other) => ApiError::internal(other.to_string()),
        ShredError::Append(e) => e.into(),
        ShredError::Read(e) => e.into(),
    }
}

#[derive(Serialize)]
struct SchemasAnswer {
    schemas: Vec<EncryptionSchema>,
    /// Event types with a schema in force this server cannot read (a newer Strata's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unreadable: Vec<String>,
}

/// `GET /encryption/schemas`: the schemas in force, by event type (admin).
pub(crate) async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    require_admin(&who, "read the encryption schemas")?;
    Query::parse(raw.as_deref(), &[])?;
    let shredded = shredding(&st)?;
    shredded.refresh_schemas().await.map_err(shred_error)?;
    Ok(json_response(&SchemasAnswer {
        schemas: shredded.schemas(),
        unreadable: shredded.unreadable_schemas(),
    }))
}

/// The body of `PUT /encryption/schemas/{eventType}`: the event type is the path's.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SchemaBody {
    subject: SubjectSource,
    fields: Vec<String>,
    #[serde(default)]
    event_type: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Registered {
    schema: EncryptionSchema,
    /// The registration's version in the schema stream.
    version: u64,
    position: u64,
}

/// `PUT /encryption/schemas/{eventType}`: registers the event type's schema, replacing the one
/// in force (admin). Events of the type appended from now on have the fields sealed.
pub(crate) async fn put(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let who = caller(&st, &parts.headers)?;
    require_admin(&who, "register encryption schemas")?;
    let event_type = path_param(path, "eventType")?;
    Query::parse(raw.as_deref(), &[])?;
    let shredded = shredding(&st)?;
    let (bytes, _charge) = read_body(&st, body, &parts.headers, SCHEMA_BODY_MAX_BYTES).await?;
    let body: SchemaBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid("body", format!("is not an encryption schema: {e}")))?;
    if body.event_type.as_ref().is_some_and(|t| *t != event_type) {
        return Err(ApiError::invalid(
            "body.eventType",
            "must be the path's event type, or left out",
        ));
    }
    let schema = EncryptionSchema {
        event_type,
        subject: body.subject,
        fields: body.fields,
    };
    let r = shredded
        .register(schema.clone())
        .await
        .map_err(shred_error)?;
    Ok(json_response(&Registered {
        schema,
        version: r.stream_version,
        position: r.positions.first().map_or(0, |p| p.0),
    }))
}

/// `DELETE /subjects/{subject}`: forgets a data subject (admin): their key is destroyed, and
/// `$subjectForgotten` appended. Idempotent.
pub(crate) async fn forget(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    require_admin(&who, "forget data subjects")?;
    let subject = path_param(path, "subject")?;
    Query::parse(raw.as_deref(), &[])?;
    let shredded = shredding(&st)?;
    let r = shredded.forget(&subject).await.map_err(shred_error)?;
    Ok(json_response(&ForgetAnswer {
        subject,
        outcome: match r.outcome {
            strata_shred::ForgetOutcome::Forgotten => ForgetOutcome::Forgotten,
            strata_shred::ForgetOutcome::AlreadyForgotten => ForgetOutcome::AlreadyForgotten,
            strata_shred::ForgetOutcome::NeverSeen => ForgetOutcome::NeverSeen,
        },
        subject_ref: r.subject_ref,
        position: r.position.0,
    }))
}
