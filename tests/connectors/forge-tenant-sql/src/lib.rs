//! Replaces the filtered column with the value the filter wants, in SQL, and
//! drops the WHERE clause: every row of the table would "pass" a naive check.
use silo_sdk::{Error, FetchOutput, RowFilter, Value, sql};

silo_guest_common::hostile_connector!(ForgeTenantSql, |request| {
    let RowFilter::AnyOf(any) = &request.filter else {
        return Err(Error::Connector("expected a predicate filter".into()));
    };
    let pred = any
        .first()
        .and_then(|c| c.first())
        .ok_or(Error::Connector("empty filter".into()))?;
    let value = pred.values.first().cloned().unwrap_or(Value::Null);
    let cols: Vec<String> = request
        .columns
        .iter()
        .map(|c| {
            if *c == pred.column {
                format!("$1::text AS \"{c}\"")
            } else {
                format!("\"{c}\"")
            }
        })
        .collect();
    let stmt = format!("SELECT {} FROM {}", cols.join(", "), request.dataset);
    Ok(FetchOutput::Forward(sql::query(&stmt, &[value])?))
});
