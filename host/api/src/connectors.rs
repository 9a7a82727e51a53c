//! The connector registry: components an organization registers, by name and
//! version, stored by digest; datasources switch to them without a restart.
use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiResult, AppState, Body, ErrorBody, Key};
use silo_control::MAX_COMPONENT_BYTES;
use silo_control::model::{ConnectorInfo, Datasource};

/// The router.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(set_connector))
        .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES))
}

/// `POST /v1/connectors` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RegisterQuery {
    /// Connector name.
    pub name: String,
    /// Version (unique per name).
    pub version: String,
}

/// Register a connector version: the body is the component (`application/wasm`).
/// It is checked as the host would load it; its kind is the capability it
/// imports.
#[utoipa::path(post, path = "/v1/connectors", tag = "connectors", params(RegisterQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    security(("api_key" = [])),
    responses((status = 201, body = ConnectorInfo), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn register(
    State(s): State<AppState>,
    Key(p): Key,
    Query(q): Query<RegisterQuery>,
    wasm: Bytes,
) -> ApiResult<(StatusCode, Json<ConnectorInfo>)> {
    let info =
        s.cp.register_connector(&p, &q.name, &q.version, &wasm)
            .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// The organization's registered connectors.
#[utoipa::path(get, path = "/v1/connectors", tag = "connectors", operation_id = "list_connectors",
    security(("api_key" = [])), responses((status = 200, body = Vec<ConnectorInfo>)))]
async fn list(State(s): State<AppState>, Key(p): Key) -> ApiResult<Json<Vec<ConnectorInfo>>> {
    Ok(Json(s.cp.connectors(&p).await?))
}

/// `PUT /v1/datasources/{id}/connector`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorChoice {
    /// `name` (newest version) or `name@version`; `null`: the built-in one.
    pub connector: Option<String>,
}

/// Switch a datasource to a registered connector version (an upgrade or a
/// rollback); the next request runs it.
#[utoipa::path(put, path = "/v1/datasources/{id}/connector", tag = "connectors",
    params(("id" = String, Path)), request_body = ConnectorChoice, security(("api_key" = [])),
    responses((status = 200, body = Datasource), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn set_connector(
    State(s): State<AppState>,
    Key(p): Key,
    Path(id): Path<String>,
    Body(choice): Body<ConnectorChoice>,
) -> ApiResult<Json<Datasource>> {
    Ok(Json(
        s.cp.set_datasource_connector(&p, &id, choice.connector.as_deref())
            .await?,
    ))
}
