//! Datasources (registered with their credential, which is never returned)
//! and datasets (the governed tables of a datasource).
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiResult, AppState, Body, ErrorBody, Key};
use silo_control::model::{Dataset, Datasource};
use silo_control::{DatasetInput, DatasourceInput, UploadSummary};
use silo_metadata::PrivacyPolicy;

/// The router.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_datasource, list_datasources))
        .routes(routes!(get_datasource, delete_datasource))
        .routes(routes!(create_dataset, list_datasets))
        .routes(routes!(delete_dataset))
        .routes(routes!(set_privacy))
        .routes(routes!(upload))
}

/// `POST /v1/datasets/{id}/upload` query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Split into one directory per value of this column (e.g. the tenant).
    pub partition_by: Option<String>,
}

/// Replace an upload dataset's data with the request body: CSV
/// (`Content-Type: text/csv`) or NDJSON (`application/x-ndjson`). The file
/// is validated whole (encoding, header, field counts, size); a bad one is
/// refused with its line and the previous data stays.
#[utoipa::path(post, path = "/v1/datasets/{id}/upload", tag = "datasources",
    params(("id" = String, Path), UploadQuery), request_body(content = String, content_type = "text/csv"),
    security(("api_key" = [])),
    responses((status = 200, body = UploadSummary), (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
async fn upload(
    State(s): State<AppState>,
    Key(p): Key,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<UploadQuery>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Json<UploadSummary>> {
    // Refused before the body is used: another org's or a missing dataset, a
    // wrong kind, a declared size over the limit. What the client is still
    // sending is then read and dropped (bounded) so it gets the answer.
    let checked = async {
        let ext = match headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        {
            Some(t) if t.starts_with("text/csv") => "csv",
            Some(t)
                if t.starts_with("application/x-ndjson") || t.starts_with("application/jsonl") =>
            {
                "ndjson"
            }
            _ => {
                return Err(silo_core::error::Error::Config(
                    "send the file as text/csv or application/x-ndjson".into(),
                )
                .into());
            }
        };
        s.cp.upload_target(&p, &id).await?;
        let declared = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > s.cp.max_upload_bytes()) {
            return Err(super::ApiError::too_large(format!(
                "the upload is larger than the limit of {} bytes",
                s.cp.max_upload_bytes()
            )));
        }
        Ok::<_, super::ApiError>(ext)
    };
    let ext = match checked.await {
        Ok(ext) => ext,
        Err(refused) => {
            super::upload::linger(&headers, body).await;
            return Err(refused);
        }
    };
    let staged =
        super::upload::stage(&s.cp.staging_dir(), ext, body, s.cp.max_upload_bytes()).await?;
    let result =
        s.cp.upload(&p, &id, staged.path().to_owned(), q.partition_by)
            .await;
    drop(staged);
    Ok(Json(result?))
}

/// Set what of a dataset's metadata may reach an LLM (`null` resets it to
/// the default). Cached metadata under the old policy is dropped.
#[utoipa::path(put, path = "/v1/datasets/{id}/privacy", tag = "datasources",
    params(("id" = String, Path)), request_body = Option<PrivacyPolicy>,
    security(("api_key" = [])),
    responses((status = 200, body = Dataset), (status = 404, body = ErrorBody)))]
async fn set_privacy(
    State(s): State<AppState>,
    Key(p): Key,
    Path(id): Path<String>,
    Body(policy): Body<Option<PrivacyPolicy>>,
) -> ApiResult<Json<Dataset>> {
    Ok(Json(s.cp.set_privacy(&p, &id, policy).await?))
}

/// Register a datasource. Silo connects with the credential first and
/// refuses one that can write, naming its privileges (403), unless
/// `accept_write_privileges` is set (recorded in the audit log).
#[utoipa::path(post, path = "/v1/datasources", tag = "datasources",
    request_body = DatasourceInput, security(("api_key" = [])),
    responses((status = 201, body = Datasource), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn create_datasource(
    State(s): State<AppState>,
    Key(p): Key,
    Body(input): Body<DatasourceInput>,
) -> ApiResult<(StatusCode, Json<Datasource>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.cp.create_datasource(&p, input).await?),
    ))
}

/// List datasources.
#[utoipa::path(get, path = "/v1/datasources", tag = "datasources", security(("api_key" = [])),
    responses((status = 200, body = Vec<Datasource>)))]
async fn list_datasources(
    State(s): State<AppState>,
    Key(p): Key,
) -> ApiResult<Json<Vec<Datasource>>> {
    Ok(Json(s.cp.datasources(&p).await?))
}

/// Get a datasource (never its credential).
#[utoipa::path(get, path = "/v1/datasources/{id}", tag = "datasources",
    params(("id" = String, Path, description = "Datasource id or name")),
    security(("api_key" = [])),
    responses((status = 200, body = Datasource), (status = 404, body = ErrorBody)))]
async fn get_datasource(
    State(s): State<AppState>,
    Key(p): Key,
    Path(id): Path<String>,
) -> ApiResult<Json<Datasource>> {
    Ok(Json(s.cp.datasource(&p, &id).await?))
}

/// Delete a datasource, its datasets and their grants.
#[utoipa::path(delete, path = "/v1/datasources/{id}", tag = "datasources",
    params(("id" = String, Path, description = "Datasource id or name")),
    security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_datasource(
    State(s): State<AppState>,
    Key(p): Key,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.cp.delete_datasource(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add a dataset (a governed table, collection or upload) to a datasource.
#[utoipa::path(post, path = "/v1/datasets", tag = "datasources", request_body = DatasetInput,
    security(("api_key" = [])),
    responses((status = 201, body = Dataset), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn create_dataset(
    State(s): State<AppState>,
    Key(p): Key,
    Body(input): Body<DatasetInput>,
) -> ApiResult<(StatusCode, Json<Dataset>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.cp.create_dataset(&p, input).await?),
    ))
}

/// List datasets.
#[utoipa::path(get, path = "/v1/datasets", tag = "datasources", security(("api_key" = [])),
    responses((status = 200, body = Vec<Dataset>)))]
async fn list_datasets(State(s): State<AppState>, Key(p): Key) -> ApiResult<Json<Vec<Dataset>>> {
    Ok(Json(s.cp.datasets(&p).await?))
}

/// Delete a dataset and its grants.
#[utoipa::path(delete, path = "/v1/datasets/{id}", tag = "datasources",
    params(("id" = String, Path)), security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_dataset(
    State(s): State<AppState>,
    Key(p): Key,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.cp.delete_dataset(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
