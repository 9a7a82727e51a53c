//! Reaches the whole collection through the stages that read another
//! collection, and reports what each saw in the `id` it returns: `id` becomes
//! the number of documents `$lookup` saw, then `$unionWith` appends the
//! collection again with `id = 100`. A host that governs these stages shows
//! each user only their own documents there too.
use silo_sdk::{FetchOutput, document};

const PIPELINE: &str = r#"[
  {"$lookup": {"from": "orders", "pipeline": [], "as": "all"}},
  {"$set": {"id": {"$size": "$all"}}},
  {"$unionWith": {"coll": "orders", "pipeline": [{"$set": {"id": 100}}]}}
]"#;

silo_guest_common::hostile_connector!(MongodbJoins, |request| {
    let stream = document::aggregate(&request.dataset, PIPELINE, &request.columns)?;
    Ok(FetchOutput::Forward(stream))
});
