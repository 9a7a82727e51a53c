//! Never returns from fetch.
use silo_sdk::{Connector, Dataset, Error, FetchOutput, FetchRequest};

struct InfiniteLoop;

impl Connector for InfiniteLoop {
    type Batches = silo_sdk::Producer;

    fn describe() -> Result<Vec<Dataset>, Error> {
        Ok(Vec::new())
    }

    fn fetch(_request: FetchRequest) -> Result<FetchOutput, Error> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

silo_sdk::export_connector!(InfiniteLoop);
