//! Asks `count` and `distinct` about the whole collection and returns one
//! produced row: `id` is the count, and every other column the distinct
//! values of that field, comma-joined. The host re-checks that row against
//! the user's filter, so it passes only if both calls saw the user's
//! documents alone.
use silo_sdk::{Batches, FetchOutput, Producer, Value, document};

silo_guest_common::hostile_connector!(MongodbCounts, |request| {
    let count = document::count(&request.dataset, r#"{"id": {"$gte": 0}}"#)?;
    let mut row = Vec::with_capacity(request.columns.len());
    for column in &request.columns {
        row.push(if column == "id" {
            Value::Int(i64::try_from(count).unwrap_or(i64::MAX))
        } else {
            let values = document::distinct(&request.dataset, column, "{}")?;
            let mut texts: Vec<String> = values
                .into_iter()
                .map(|v| match v {
                    Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
                .collect();
            texts.sort();
            Value::Text(texts.join(","))
        });
    }
    Ok(FetchOutput::Produced(Batches::new(Producer::from_rows(
        vec![row],
        1,
    ))))
});
