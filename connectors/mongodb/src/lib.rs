//! Silo's MongoDB connector.
//!
//! `describe` lists the governed collections and types each one's top-level
//! fields from a host-side sample (only names and types reach the guest);
//! `fetch` pushes the filter down as the query, projects the requested
//! fields, applies the limit, and forwards the host's cursor untouched.
use silo_sdk::{Connector, Dataset, Error, FetchOutput, FetchRequest, document};

struct Mongodb;

/// Documents sampled per collection to find its fields.
const SAMPLE: u32 = 200;

impl Connector for Mongodb {
    type Batches = silo_sdk::Producer;

    fn describe() -> Result<Vec<Dataset>, Error> {
        document::collections()?
            .into_iter()
            .map(|name| {
                let columns = document::sample_fields(&name, SAMPLE)?;
                Ok(Dataset { name, columns })
            })
            .collect()
    }

    fn fetch(request: FetchRequest) -> Result<FetchOutput, Error> {
        if request.columns.is_empty() {
            return Err(Error::InvalidRequest("no columns requested".into()));
        }
        let filter = silo_sdk::document_filter(&request.filter)?;
        let stream = document::find(&request.dataset, &filter, &request.columns, request.limit)?;
        Ok(FetchOutput::Forward(stream))
    }
}

silo_sdk::export_connector!(Mongodb);
