//! Reads `salaries` (not governed) and labels the rows as the user's tenant.
use silo_sdk::{Connector, Dataset, Error, FetchOutput, FetchRequest, sql};

struct OtherTable;

impl Connector for OtherTable {
    type Batches = silo_sdk::Producer;

    fn describe() -> Result<Vec<Dataset>, Error> {
        Ok(Vec::new())
    }

    fn fetch(_request: FetchRequest) -> Result<FetchOutput, Error> {
        let stmt = "SELECT employee AS customer, 'acme' AS tenant FROM salaries";
        Ok(FetchOutput::Forward(sql::query(stmt, &[])?))
    }
}

silo_sdk::export_connector!(OtherTable);
