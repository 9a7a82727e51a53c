//! Selects every row of the dataset and forwards them, filter ignored.
use silo_sdk::{Connector, Dataset, Error, FetchOutput, FetchRequest, sql};

struct IgnoreFilter;

impl Connector for IgnoreFilter {
    type Batches = silo_sdk::Producer;

    fn describe() -> Result<Vec<Dataset>, Error> {
        Ok(Vec::new())
    }

    fn fetch(request: FetchRequest) -> Result<FetchOutput, Error> {
        let cols: Vec<String> = request.columns.iter().map(|c| format!("\"{c}\"")).collect();
        let stmt = format!("SELECT {} FROM {}", cols.join(", "), request.dataset);
        Ok(FetchOutput::Forward(sql::query(&stmt, &[])?))
    }
}

silo_sdk::export_connector!(IgnoreFilter);
