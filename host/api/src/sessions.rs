//! Sessions: minted by the customer's backend for one embed user, carried
//! by the browser as a short-lived signed token, revocable at once.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiResult, AppState, Body, ErrorBody, Key};
use silo_control::model::Session;
use silo_control::{Enforced, SessionInput, SessionToken};

/// The router.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_session, list_sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(enforced))
}

/// Create a session (or, with `id`, renew one) and get its token.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = SessionInput,
    security(("api_key" = [])),
    responses((status = 200, body = SessionToken), (status = 404, body = ErrorBody)))]
async fn put_session(
    State(s): State<AppState>,
    Key(p): Key,
    Body(input): Body<SessionInput>,
) -> ApiResult<Json<SessionToken>> {
    Ok(Json(s.cp.put_session(&p, input).await?))
}

/// List sessions.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", security(("api_key" = [])),
    responses((status = 200, body = Vec<Session>)))]
async fn list_sessions(State(s): State<AppState>, Key(p): Key) -> ApiResult<Json<Vec<Session>>> {
    Ok(Json(s.cp.sessions(&p).await?))
}

/// Revoke a session: its token stops working with the next request.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path)), security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_session(
    State(s): State<AppState>,
    Key(p): Key,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.cp.revoke_session(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What the host enforces when this session reads a dataset: the row
/// filter with the user's values bound, the columns it returns and those it
/// removes, and the limits. For checking a policy, as the console does.
#[utoipa::path(get, path = "/v1/sessions/{id}/enforced/{dataset}", tag = "sessions",
    params(("id" = String, Path), ("dataset" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = Enforced), (status = 404, body = ErrorBody)))]
async fn enforced(
    State(s): State<AppState>,
    Key(p): Key,
    Path((id, dataset)): Path<(String, String)>,
) -> ApiResult<Json<Enforced>> {
    Ok(Json(s.cp.enforced(&p, &id, &dataset).await?))
}
