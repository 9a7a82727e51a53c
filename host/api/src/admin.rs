//! Organizations and API keys (operator keys), an organization's own keys,
//! and its audit records.
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, AppState, Body, ErrorBody, Key};
use silo_control::Principal;
use silo_control::audit::{self, AuditRecord};
use silo_control::model::{ApiKeyInfo, Organization};
use silo_core::error::Error;

/// `POST /v1/orgs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgInput {
    /// Unique name.
    pub name: String,
}

/// `POST …/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    /// A label.
    pub name: String,
}

/// A new key: the token appears here once and is never retrievable again.
#[derive(Serialize, ToSchema)]
pub struct NewKey {
    /// The record.
    pub key: ApiKeyInfo,
    /// `silo_key_….…`: send as `Authorization: Bearer …`.
    pub token: String,
}

/// The router.
pub fn router() -> OpenApiRouter<super::AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_org, list_orgs))
        .routes(routes!(create_org_key, list_org_keys))
        .routes(routes!(revoke_org_key))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
        .routes(routes!(list_audit))
}

fn minted(
    (key, token): (ApiKeyInfo, zeroize::Zeroizing<String>),
) -> ApiResult<(StatusCode, Json<NewKey>)> {
    Ok((
        StatusCode::CREATED,
        Json(NewKey {
            key,
            token: token.to_string(),
        }),
    ))
}

fn operator(p: &Principal) -> ApiResult<()> {
    match p {
        Principal::Org { .. } => {
            Err(Error::Unauthorized("an operator key is required".into()).into())
        }
        _ => Ok(()),
    }
}

/// Create an organization.
#[utoipa::path(post, path = "/v1/orgs", tag = "operator", request_body = OrgInput,
    security(("api_key" = [])),
    responses((status = 201, body = Organization), (status = 409, body = ErrorBody)))]
async fn create_org(
    State(s): State<AppState>,
    Key(p): Key,
    Body(input): Body<OrgInput>,
) -> ApiResult<(StatusCode, Json<Organization>)> {
    operator(&p)?;
    Ok((
        StatusCode::CREATED,
        Json(s.cp.create_org(&p, &input.name).await?),
    ))
}

/// List organizations.
#[utoipa::path(get, path = "/v1/orgs", tag = "operator", security(("api_key" = [])),
    responses((status = 200, body = Vec<Organization>)))]
async fn list_orgs(State(s): State<AppState>, Key(p): Key) -> ApiResult<Json<Vec<Organization>>> {
    Ok(Json(s.cp.orgs(&p).await?))
}

/// Mint an API key for an organization (shown once).
#[utoipa::path(post, path = "/v1/orgs/{org}/api-keys", tag = "operator", request_body = KeyInput,
    params(("org" = String, Path, description = "Organization id or name")),
    security(("api_key" = [])), responses((status = 201, body = NewKey)))]
async fn create_org_key(
    State(s): State<AppState>,
    Key(p): Key,
    Path(org): Path<String>,
    Body(input): Body<KeyInput>,
) -> ApiResult<(StatusCode, Json<NewKey>)> {
    operator(&p)?;
    minted(s.cp.create_api_key(&p, Some(&org), &input.name).await?)
}

/// List an organization's API keys.
#[utoipa::path(get, path = "/v1/orgs/{org}/api-keys", tag = "operator",
    params(("org" = String, Path, description = "Organization id or name")),
    security(("api_key" = [])), responses((status = 200, body = Vec<ApiKeyInfo>)))]
async fn list_org_keys(
    State(s): State<AppState>,
    Key(p): Key,
    Path(org): Path<String>,
) -> ApiResult<Json<Vec<ApiKeyInfo>>> {
    operator(&p)?;
    Ok(Json(s.cp.api_keys(&p, Some(&org)).await?))
}

/// Revoke an organization's API key.
#[utoipa::path(delete, path = "/v1/orgs/{org}/api-keys/{id}", tag = "operator",
    params(("org" = String, Path), ("id" = String, Path)),
    security(("api_key" = [])), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_org_key(
    State(s): State<AppState>,
    Key(p): Key,
    Path((org, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    operator(&p)?;
    s.cp.revoke_api_key(&p, Some(&org), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Mint another API key for the caller's organization (shown once).
#[utoipa::path(post, path = "/v1/api-keys", tag = "keys", request_body = KeyInput,
    security(("api_key" = [])), responses((status = 201, body = NewKey)))]
async fn create_key(
    State(s): State<AppState>,
    Key(p): Key,
    Body(input): Body<KeyInput>,
) -> ApiResult<(StatusCode, Json<NewKey>)> {
    let org = p.clone();
    let Principal::Org { org, .. } = org else {
        return Err(Error::Unauthorized("an organization's API key is required".into()).into());
    };
    minted(s.cp.create_api_key(&p, Some(&org), &input.name).await?)
}

/// The caller's organization's API keys.
#[utoipa::path(get, path = "/v1/api-keys", tag = "keys", security(("api_key" = [])),
    responses((status = 200, body = Vec<ApiKeyInfo>)))]
async fn list_keys(State(s): State<AppState>, Key(p): Key) -> ApiResult<Json<Vec<ApiKeyInfo>>> {
    Ok(Json(s.cp.api_keys(&p, None).await?))
}

/// Revoke one of the caller's organization's API keys.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "keys",
    params(("id" = String, Path)), security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_key(
    State(s): State<AppState>,
    Key(p): Key,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.cp.revoke_api_key(&p, None, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where a page of the audit log starts, and how long it is.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// The `next` cursor of the previous page (sequence number); from the
    /// start when absent.
    pub after: Option<i64>,
    /// Records per page: 1 to 1000, 100 when absent.
    pub limit: Option<i64>,
}

/// Most records one page holds.
pub const MAX_AUDIT_PAGE: i64 = 1000;

/// A page of the audit log.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Records, oldest first.
    pub records: Vec<AuditRecord>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<i64>,
}

/// The caller's organization's audit records, oldest first, a page at a
/// time (an operator key sees every organization's).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("api_key" = [])),
    params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody)))]
async fn list_audit(
    State(s): State<AppState>,
    Key(p): Key,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let org = match &p {
        Principal::Org { org, .. } => Some(org.as_str()),
        _ => None,
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_AUDIT_PAGE}"
        )));
    }
    let after = q.after.unwrap_or(0).max(0);
    // One more than asked tells whether another page follows.
    let mut records = audit::page(s.cp.store(), org, after, limit + 1).await?;
    let next = if records.len() as i64 > limit {
        records.truncate(limit as usize);
        records.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(Json(AuditPage { records, next }))
}
