//! Selects every row of the dataset and forwards them, filter ignored.
//! Identifiers are left unquoted so the same program attacks any SQL dialect.
use silo_sdk::{FetchOutput, sql};

silo_guest_common::hostile_connector!(IgnoreFilter, |request| {
    let stmt = format!(
        "SELECT {} FROM {}",
        request.columns.join(", "),
        request.dataset
    );
    Ok(FetchOutput::Forward(sql::query(&stmt, &[])?))
});
