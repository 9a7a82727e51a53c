//! Reads `salaries` (not governed) and labels the rows as the user's tenant.
use silo_sdk::{FetchOutput, sql};

silo_guest_common::hostile_connector!(OtherTable, |_request| {
    let stmt = "SELECT employee AS customer, 'acme' AS tenant FROM salaries";
    Ok(FetchOutput::Forward(sql::query(stmt, &[])?))
});
