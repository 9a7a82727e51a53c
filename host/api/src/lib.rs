//! The REST API (`silo serve`): what a customer's backend calls with its API
//! key, and what an embed user's browser calls with a session token.
//!
//! [`app`] builds the whole router from one `router()` per resource; the
//! OpenAPI document at `/openapi.json` is generated from the same handlers.
//! Every error is JSON, `{"error": {"code": "...", "message": "..."}}`, with
//! a stable code; internal details go to the log, never to the caller.
#![deny(missing_docs)]

pub mod admin;
pub mod connectors;
pub mod console;
pub mod datasources;
pub mod embed;
pub mod groups;
pub mod limits;
pub mod metrics;
pub mod sessions;
pub mod tls;
pub mod upload;

pub mod output;
pub mod server;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use silo_control::{ControlPlane, EmbedPrincipal, Principal, error_code};
use silo_core::error::Error;

/// Longest message an error carries to a client (connector messages are
/// the connector's words).
const MAX_MESSAGE: usize = 300;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The control plane.
    pub cp: Arc<ControlPlane>,
    /// Request and fetch counters for `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// Timeouts every request is held to.
    pub limits: crate::server::ServerLimits,
    /// Set when shutdown begins: the host is no longer ready.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

impl AppState {
    /// State over a control plane.
    pub fn new(cp: Arc<ControlPlane>) -> AppState {
        AppState {
            cp,
            metrics: Arc::default(),
            limits: crate::server::ServerLimits::default(),
            draining: Arc::default(),
        }
    }

    /// With other request limits.
    pub fn with_limits(mut self, limits: crate::server::ServerLimits) -> AppState {
        self.limits = limits;
        self
    }
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable code and a message safe to show.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What kind of failure: clients branch on this, never on the message.
    #[schema(value_type = ErrorCode)]
    pub code: String,
    /// What went wrong, without internals.
    pub message: String,
}

/// Every `code` an error body can carry. Listed in the OpenAPI document so
/// generated clients get a closed set to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or names something invalid (400).
    InvalidRequest,
    /// No credential, or one that is unknown, revoked, expired or badly signed (401).
    Unauthorized,
    /// The policy refused the operation (403).
    Forbidden,
    /// Not there, or not visible to this caller (404).
    NotFound,
    /// The request did not finish in time (408).
    RequestTimeout,
    /// It conflicts with the current state, e.g. a name in use (409).
    Conflict,
    /// A size, row, time or memory limit was reached (413, 422).
    LimitExceeded,
    /// Capacity is in use; retry after `Retry-After` seconds (503).
    Busy,
    /// The connector failed or misbehaved (502).
    ConnectorFailed,
    /// The datasource failed: unreachable, timeout, query error (502).
    DatasourceFailed,
    /// A host bug; details are in the host's log only (500).
    Internal,
}

impl ApiError {
    pub(crate) fn too_large(message: String) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "limit_exceeded",
            message,
        }
    }

    pub(crate) fn timeout(message: String) -> ApiError {
        ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "request_timeout",
            message,
        }
    }

    fn invalid(message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message,
        }
    }

    /// The JSON body, for streams that fail after their status was sent.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message.clone(),
            },
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match &e {
            Error::Config(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Policy(_) => StatusCode::FORBIDDEN,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Limit(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Connector(_) | Error::Datasource(_) => StatusCode::BAD_GATEWAY,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_owned()
            }
            other => {
                let mut m = other.to_string();
                if m.len() > MAX_MESSAGE {
                    let cut = (0..=MAX_MESSAGE)
                        .rev()
                        .find(|i| m.is_char_boundary(*i))
                        .unwrap_or(0);
                    m.truncate(cut);
                    m.push('…');
                }
                m
            }
        };
        ApiError {
            status,
            code: error_code(&e),
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Capacity in use by other requests: worth a retry shortly.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

/// Handler result.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// A JSON request body whose rejections are [`ApiError`]s.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            // Over the body limit: 413, not a malformed request.
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::too_large(e.body_text()))
            }
            Err(e) => Err(ApiError::invalid(e.body_text())),
        }
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // RFC 9110 §11.1: the scheme is case-insensitive.
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::Unauthorized("send `Authorization: Bearer <key or token>`".into()).into()
        })
}

/// A caller holding an API key (an organization's or an operator's).
pub struct Key(pub Principal);

impl FromRequestParts<AppState> for Key {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Key(state.cp.authenticate_key(bearer(parts)?).await?))
    }
}

/// A caller holding a valid session token.
pub struct Embed(pub EmbedPrincipal);

impl FromRequestParts<AppState> for Embed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Embed(state.cp.authenticate_session(bearer(parts)?).await?))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Silo", description = "Sandboxed datasource connectors with row-level tenancy."),
    modifiers(&Security),
    components(schemas(ErrorBody, ErrorCode))
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what))
                    .build(),
            )
        };
        components
            .add_security_scheme("api_key", bearer("An organization's or operator's API key"));
        components.add_security_scheme("session", bearer("A session token (JWT)"));
    }
}

/// Liveness and store reachability.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Liveness: the process serves requests (restart it if not).
#[utoipa::path(get, path = "/livez", tag = "operations",
    responses((status = 200, body = Health)))]
async fn livez() -> Json<Health> {
    Json(Health {
        status: "alive".into(),
    })
}

/// Readiness: send traffic here. Ready means the store answers with the
/// master key this host holds, and the host is not shutting down; else 503.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(s): State<AppState>) -> ApiResult<Json<Health>> {
    if s.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Error::Busy("shutting down".into()).into());
    }
    s.cp.ready().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready");
        ApiError::from(Error::Busy(
            "the control-plane store is not reachable".into(),
        ))
    })?;
    Ok(Json(Health {
        status: "ready".into(),
    }))
}

/// Health: the process is up and its store answers.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Health), (status = 502, body = ErrorBody)))]
async fn health(State(s): State<AppState>) -> ApiResult<Json<Health>> {
    s.cp.store().meta("schema_version").await?;
    Ok(Json(Health {
        status: "ok".into(),
    }))
}

/// The OpenAPI document and the router, built from the same handlers.
pub fn parts() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(livez))
        .routes(routes!(readyz))
        .merge(admin::router())
        .merge(datasources::router())
        .merge(groups::router())
        .merge(sessions::router())
        .merge(embed::router())
        .merge(connectors::router())
        .split_for_parts()
}

/// The whole API over `state`.
pub fn app(state: AppState) -> Router {
    let (router, doc) = parts();
    let doc = Arc::new(doc);
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .route("/metrics", axum::routing::get(metrics::render))
        .merge(console::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::bounded,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated clients name a call by its operation id: each is unique.
    #[test]
    fn operation_ids_are_unique() {
        let doc = serde_json::to_value(parts().1).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if let Some(id) = op.get("operationId").and_then(|v| v.as_str()) {
                    assert!(seen.insert(id.to_owned()), "{method} {path}: `{id}` again");
                }
            }
        }
        assert!(seen.len() > 20, "{seen:?}");
    }

    /// The codes the document promises are the codes responses carry.
    #[test]
    fn every_error_code_sent_is_listed_in_the_document() {
        let errors = [
            Error::Config(String::new()),
            Error::NotFound(String::new()),
            Error::Policy(String::new()),
            Error::Limit(String::new()),
            Error::Busy(String::new()),
            Error::Connector(String::new()),
            Error::Datasource(String::new()),
            Error::Unauthorized(String::new()),
            Error::Conflict(String::new()),
            Error::Internal(String::new()),
        ];
        let sent = errors.into_iter().map(ApiError::from).chain([
            ApiError::too_large(String::new()),
            ApiError::timeout(String::new()),
            ApiError::invalid(String::new()),
        ]);
        for e in sent {
            let code = serde_json::Value::String(e.code.into());
            assert!(
                serde_json::from_value::<ErrorCode>(code.clone()).is_ok(),
                "{code} is not an ErrorCode"
            );
        }
    }
}
