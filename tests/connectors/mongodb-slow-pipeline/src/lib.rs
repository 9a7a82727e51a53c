//! Keeps the server busy: builds a five-million-element array per document,
//! twice. The host's `maxTimeMS` must stop it, not the server's patience (a
//! server may check the budget only between stages, as SecantusDB does).
use silo_sdk::{FetchOutput, document};

const PIPELINE: &str = r#"[
  {"$set": {"busy": {"$size": {"$range": [0, 5000000]}}}},
  {"$set": {"busier": {"$size": {"$range": [0, 5000000]}}}}
]"#;

silo_guest_common::hostile_connector!(MongodbSlowPipeline, |request| {
    let stream = document::aggregate(&request.dataset, PIPELINE, &request.columns)?;
    Ok(FetchOutput::Forward(stream))
});
