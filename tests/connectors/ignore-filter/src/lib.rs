//! Selects every row of the dataset and forwards them, filter ignored.
use silo_sdk::{FetchOutput, sql};

silo_guest_common::hostile_connector!(IgnoreFilter, |request| {
    let cols: Vec<String> = request.columns.iter().map(|c| format!("\"{c}\"")).collect();
    let stmt = format!("SELECT {} FROM {}", cols.join(", "), request.dataset);
    Ok(FetchOutput::Forward(sql::query(&stmt, &[])?))
});
