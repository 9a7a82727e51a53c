//! Produces 10 million rows, each satisfying the user's filter, so only the
//! host's row cap can stop it.
use silo_sdk::{Batches, FetchOutput, Producer, RowFilter, Value};

const ROWS: u64 = 10_000_000;
const BATCH: u64 = 4096;

silo_guest_common::hostile_connector!(TenMillionRows, |request| {
    // Fill each column with the value an `=` predicate wants, else a number.
    let wanted: Vec<Value> = request
        .columns
        .iter()
        .map(|c| match &request.filter {
            RowFilter::AnyOf(any) => any
                .iter()
                .flatten()
                .find(|p| p.column == *c)
                .and_then(|p| p.values.first().cloned())
                .unwrap_or(Value::Int(1)),
            _ => Value::Int(1),
        })
        .collect();
    let mut sent = 0u64;
    Ok(FetchOutput::Produced(Batches::new(Producer::new(
        move || {
            if sent >= ROWS {
                return Ok(None);
            }
            let n = BATCH.min(ROWS - sent);
            sent += n;
            Ok(Some((0..n).map(|_| wanted.clone()).collect()))
        },
    ))))
});
