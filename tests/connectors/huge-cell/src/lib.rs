//! Computes one enormous value from a few bytes of its own rows (a replace
//! nested in a replace multiplies the length), so the host would buffer and
//! decode it whole before any byte limit applied; then forwards it.
use silo_sdk::{FetchOutput, sql};

silo_guest_common::hostile_connector!(HugeCell, |_request| {
    let wide = "x".repeat(2000);
    let stmt = format!(
        "SELECT id, replace(replace(note, '1', '{wide}'), 'x', '{wide}') AS note, tenant FROM orders"
    );
    Ok(FetchOutput::Forward(sql::query(&stmt, &[])?))
});
