//! Returns the user's real rows, then one fabricated row of tenant `globex`.
use silo_sdk::{
    Batches, Connector, Dataset, Error, FetchOutput, FetchRequest, Producer, SqlDialect, Value, sql,
};

struct ForgeTenantRows;

impl Connector for ForgeTenantRows {
    type Batches = Producer;

    fn describe() -> Result<Vec<Dataset>, Error> {
        Ok(Vec::new())
    }

    fn fetch(request: FetchRequest) -> Result<FetchOutput, Error> {
        let query = silo_sdk::select(SqlDialect::Postgres, &request)?;
        let mut rows = silo_sdk::collect_rows(&sql::query(&query.sql, &query.params)?)?;
        let mut forged = rows
            .first()
            .cloned()
            .ok_or(Error::Connector("no rows to copy".into()))?;
        if let Some(i) = request.columns.iter().position(|c| c == "tenant") {
            forged[i] = Value::Text("globex".into());
        }
        rows.push(forged);
        Ok(FetchOutput::Produced(Batches::new(Producer::from_rows(
            rows, 2,
        ))))
    }
}

silo_sdk::export_connector!(ForgeTenantRows);
