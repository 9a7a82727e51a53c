//! Groups (grants of datasets with row filters and columns) and embed users
//! (upserted by the customer's own id, with attributes and groups).
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiResult, AppState, Body, ErrorBody, Key};
use silo_control::model::{EmbedUser, Group};
use silo_control::{EmbedUserInput, GroupInput};

/// The router.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_groups))
        .routes(routes!(put_group, get_group, delete_group))
        .routes(routes!(list_embed_users))
        .routes(routes!(put_embed_user, get_embed_user, delete_embed_user))
}

/// List groups.
#[utoipa::path(get, path = "/v1/groups", tag = "groups", security(("api_key" = [])),
    responses((status = 200, body = Vec<Group>)))]
async fn list_groups(State(s): State<AppState>, Key(p): Key) -> ApiResult<Json<Vec<Group>>> {
    Ok(Json(s.cp.groups(&p).await?))
}

/// Create or replace a group and its grants. A member of several groups
/// sees the union of their rows; no grant, no access.
#[utoipa::path(put, path = "/v1/groups/{name}", tag = "groups", request_body = GroupInput,
    params(("name" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = Group), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn put_group(
    State(s): State<AppState>,
    Key(p): Key,
    Path(name): Path<String>,
    Body(input): Body<GroupInput>,
) -> ApiResult<Json<Group>> {
    Ok(Json(s.cp.put_group(&p, &name, input).await?))
}

/// Get a group.
#[utoipa::path(get, path = "/v1/groups/{name}", tag = "groups",
    params(("name" = String, Path, description = "Group name or id")), security(("api_key" = [])),
    responses((status = 200, body = Group), (status = 404, body = ErrorBody)))]
async fn get_group(
    State(s): State<AppState>,
    Key(p): Key,
    Path(name): Path<String>,
) -> ApiResult<Json<Group>> {
    Ok(Json(s.cp.group(&p, &name).await?))
}

/// Delete a group.
#[utoipa::path(delete, path = "/v1/groups/{name}", tag = "groups",
    params(("name" = String, Path, description = "Group name or id")), security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_group(
    State(s): State<AppState>,
    Key(p): Key,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.cp.delete_group(&p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List embed users.
#[utoipa::path(get, path = "/v1/embed-users", tag = "embed users", security(("api_key" = [])),
    responses((status = 200, body = Vec<EmbedUser>)))]
async fn list_embed_users(
    State(s): State<AppState>,
    Key(p): Key,
) -> ApiResult<Json<Vec<EmbedUser>>> {
    Ok(Json(s.cp.embed_users(&p).await?))
}

/// Create or update an embed user by the customer's id.
#[utoipa::path(put, path = "/v1/embed-users/{id}", tag = "embed users",
    request_body = EmbedUserInput, params(("id" = String, Path, description = "External id")),
    security(("api_key" = [])),
    responses((status = 200, body = EmbedUser), (status = 404, body = ErrorBody)))]
async fn put_embed_user(
    State(s): State<AppState>,
    Key(p): Key,
    Path(id): Path<String>,
    Body(input): Body<EmbedUserInput>,
) -> ApiResult<Json<EmbedUser>> {
    Ok(Json(s.cp.put_embed_user(&p, &id, input).await?))
}

/// Get an embed user.
#[utoipa::path(get, path = "/v1/embed-users/{id}", tag = "embed users",
    params(("id" = String, Path, description = "External id or record id")),
    security(("api_key" = [])),
    responses((status = 200, body = EmbedUser), (status = 404, body = ErrorBody)))]
async fn get_embed_user(
    State(s): State<AppState>,
    Key(p): Key,
    Path(id): Path<String>,
) -> ApiResult<Json<EmbedUser>> {
    Ok(Json(s.cp.embed_user(&p, &id).await?))
}

/// Delete an embed user and its sessions.
#[utoipa::path(delete, path = "/v1/embed-users/{id}", tag = "embed users",
    params(("id" = String, Path, description = "External id or record id")),
    security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_embed_user(
    State(s): State<AppState>,
    Key(p): Key,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.cp.delete_embed_user(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
