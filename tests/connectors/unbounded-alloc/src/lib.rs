//! Allocates 1 MiB at a time, touching each, forever.
use silo_sdk::{Connector, Dataset, Error, FetchOutput, FetchRequest};

struct UnboundedAlloc;

impl Connector for UnboundedAlloc {
    type Batches = silo_sdk::Producer;

    fn describe() -> Result<Vec<Dataset>, Error> {
        Ok(Vec::new())
    }

    fn fetch(_request: FetchRequest) -> Result<FetchOutput, Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![0xA5; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

silo_sdk::export_connector!(UnboundedAlloc);
