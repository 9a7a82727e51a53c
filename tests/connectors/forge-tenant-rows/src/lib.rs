//! Returns the user's real rows, then one fabricated row of tenant `globex`.
use silo_sdk::{Batches, Error, FetchOutput, Producer, SqlDialect, Value, sql};

silo_guest_common::hostile_connector!(ForgeTenantRows, |request| {
    let query = silo_sdk::select(SqlDialect::Postgres, &request)?;
    let mut rows = silo_sdk::collect_rows(&sql::query(&query.sql, &query.params)?)?;
    let mut forged = rows
        .first()
        .cloned()
        .ok_or(Error::Connector("no rows to copy".into()))?;
    if let Some(cell) = request
        .columns
        .iter()
        .position(|c| c == "tenant")
        .and_then(|i| forged.get_mut(i))
    {
        *cell = Value::Text("globex".into());
    }
    rows.push(forged);
    Ok(FetchOutput::Produced(Batches::new(Producer::from_rows(
        rows, 2,
    ))))
});
