//! What an embed user's session token reaches: its datasets, their columns,
//! and fetch. The organization, user and filters come from the verified
//! session only; a dataset outside it answers 404.
use std::convert::Infallible;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, AppState, Body, Embed, ErrorBody};
use silo_control::{ColumnInfo, EmbedDataset, error_code};
use silo_core::batch::Batch;
use silo_metadata::Payload;
use silo_metadata::llm::Summary;

/// The NDJSON media type.
const NDJSON: &str = "application/x-ndjson";

/// The router.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(describe))
        .routes(routes!(fetch))
        .routes(routes!(metadata))
        .routes(routes!(summary))
}

/// The dataset's metadata (`silo.metadata.v1`) as this session sees it:
/// statistics under the dataset's privacy policy, never rows.
#[utoipa::path(get, path = "/v1/embed/datasets/{id}/metadata", tag = "embed",
    params(("id" = String, Path)), security(("session" = [])),
    responses((status = 200, body = Payload), (status = 404, body = ErrorBody)))]
async fn metadata(
    State(s): State<AppState>,
    Embed(e): Embed,
    Path(id): Path<String>,
) -> ApiResult<Json<Payload>> {
    Ok(Json(s.cp.embed_metadata(&e, &id).await?))
}

/// A plain-language summary of the dataset's metadata, written by the
/// configured LLM (only the metadata is sent) or the built-in summarizer.
#[utoipa::path(post, path = "/v1/embed/datasets/{id}/summary", tag = "embed",
    params(("id" = String, Path)), security(("session" = [])),
    responses((status = 200, body = Summary), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
async fn summary(
    State(s): State<AppState>,
    Embed(e): Embed,
    Path(id): Path<String>,
) -> ApiResult<Json<Summary>> {
    Ok(Json(s.cp.embed_summary(&e, &id).await?))
}

/// `POST /v1/embed/datasets/{id}/fetch`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchInput {
    /// Columns (default: all the session's groups allow).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Most rows wanted.
    #[serde(default)]
    pub limit: Option<u64>,
}

/// A whole fetch as one JSON document.
#[derive(Debug, Serialize, ToSchema)]
pub struct FetchResult {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows, each an array of cells in column order. A cell is any JSON
    /// value: numbers stay numbers, decimals are exact strings, dates and
    /// timestamps ISO 8601 strings, bytes hex strings, JSON embedded.
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// One line of a streamed fetch: a row as an object, keys in column order.
/// A stream that fails after its first row ends with a line
/// `{"error": {"code", "message"}}` instead.
#[derive(Debug, Serialize, ToSchema)]
pub struct NdjsonRow(pub std::collections::BTreeMap<String, serde_json::Value>);

/// The datasets this session may use.
#[utoipa::path(get, path = "/v1/embed/datasets", tag = "embed", operation_id = "list_embed_datasets",
    security(("session" = [])),
    responses((status = 200, body = Vec<EmbedDataset>), (status = 401, body = ErrorBody)))]
async fn list(State(s): State<AppState>, Embed(e): Embed) -> ApiResult<Json<Vec<EmbedDataset>>> {
    Ok(Json(s.cp.embed_datasets(&e).await?))
}

/// The columns of a dataset this session may see.
#[utoipa::path(get, path = "/v1/embed/datasets/{id}/describe", tag = "embed",
    params(("id" = String, Path)), security(("session" = [])),
    responses((status = 200, body = Vec<ColumnInfo>), (status = 404, body = ErrorBody)))]
async fn describe(
    State(s): State<AppState>,
    Embed(e): Embed,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ColumnInfo>>> {
    Ok(Json(s.cp.embed_describe(&e, &id).await?))
}

/// Fetch the rows this session may see. With `Accept: application/x-ndjson`
/// rows stream as one JSON object per line; an error after the first row
/// ends the stream with a line `{"error": {...}}`. Otherwise one JSON
/// document.
#[utoipa::path(post, path = "/v1/embed/datasets/{id}/fetch", tag = "embed",
    params(("id" = String, Path)), request_body = FetchInput, security(("session" = [])),
    responses((status = 200, description = "The rows: one JSON document, or with \
            `Accept: application/x-ndjson` one JSON object per row (keys in column order)",
            content((FetchResult = "application/json"), (NdjsonRow = "application/x-ndjson"))),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn fetch(
    State(s): State<AppState>,
    Embed(e): Embed,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(input): Body<FetchInput>,
) -> ApiResult<Response> {
    let run = s.cp.embed_fetch(&e, &id, input.columns, input.limit).await;
    let run = match run {
        Ok(r) => r,
        Err(err) => {
            s.metrics.fetch(error_code(&err), 0, 0);
            return Err(err.into());
        }
    };
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(NDJSON));
    if !streaming {
        let silo_control::EmbedFetch { mut fetch, audit } = run;
        let mut batches = Vec::new();
        let outcome = loop {
            match fetch.next_batch().await {
                Ok(Some(batch)) => batches.push(batch),
                Ok(None) => break Ok(()),
                Err(err) => break Err(err),
            }
        };
        let code = outcome.as_ref().err().map_or("ok", error_code);
        s.metrics.fetch(code, fetch.rows(), fetch.bytes());
        if let Err(err) = outcome {
            audit.record(0, 0, code).await;
            return Err(err.into());
        }
        // The record says what the client is sent: these rows, these bytes.
        let count: u64 = batches.iter().map(|b| b.len() as u64).sum();
        // About the decoded size; growth past 1 MiB is left to the Vec.
        let mut body = Vec::with_capacity(64 + fetch.bytes().min(1 << 20) as usize);
        crate::output::write_json_rows(
            &mut body,
            fetch.columns(),
            batches.iter().flat_map(|b| b.iter()),
        )
        .map_err(|e| silo_core::error::Error::Internal(format!("encoding rows: {e}")))?;
        // One record, durable before the first byte: the body is whole.
        audit.commit(count, body.len() as u64, code).await?;
        return Ok((
            [(header::CONTENT_TYPE, "application/json")],
            axum::body::Body::from(body),
        )
            .into_response());
    }
    let metrics = s.metrics.clone();
    let columns: std::sync::Arc<[String]> = run.fetch.columns().into();
    // On record (`fetch.start`) before the first byte: a crash mid-stream
    // still leaves a trace. The append's fsync overlaps the first batch.
    let silo_control::EmbedFetch {
        mut fetch,
        mut audit,
    } = run;
    let (begun, first) = tokio::join!(audit.begin(), fetch.next_batch());
    if let Err(err) = begun {
        s.metrics.fetch(error_code(&err), 0, 0);
        audit.record(0, 0, error_code(&err)).await;
        return Err(err.into());
    }
    let run = silo_control::EmbedFetch { fetch, audit };
    let stream = futures_util::stream::unfold((Some(run), Some(first)), move |(state, first)| {
        let columns = columns.clone();
        let metrics = metrics.clone();
        async move {
            let silo_control::EmbedFetch {
                mut fetch,
                mut audit,
            } = state?;
            let next = match first {
                Some(first) => first,
                None => fetch.next_batch().await,
            };
            match next {
                Ok(Some(batch)) => {
                    let chunk = ndjson(&columns, &batch);
                    // Counted as it is handed to the connection: a stream
                    // the client abandons is recorded with what it got.
                    audit.release(batch.len() as u64, chunk.len() as u64);
                    Some((
                        Ok::<_, Infallible>(chunk),
                        (Some(silo_control::EmbedFetch { fetch, audit }), None),
                    ))
                }
                Ok(None) => {
                    metrics.fetch("ok", fetch.rows(), fetch.bytes());
                    let (rows, bytes) = audit.released();
                    audit.record(rows, bytes, "ok").await;
                    None
                }
                Err(err) => {
                    let code = error_code(&err);
                    metrics.fetch(code, fetch.rows(), fetch.bytes());
                    let (rows, bytes) = audit.released();
                    audit.record(rows, bytes, code).await;
                    let mut line =
                        serde_json::to_vec(&ApiError::from(err).body()).unwrap_or_default();
                    line.push(b'\n');
                    Some((Ok(Bytes::from(line)), (None, None)))
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, NDJSON)],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

fn ndjson(columns: &[String], batch: &Batch) -> Bytes {
    let mut out = Vec::with_capacity(batch.len() * 64);
    // Writing to a Vec cannot fail.
    let _ = crate::output::write_ndjson(&mut out, columns, batch);
    Bytes::from(out)
}
