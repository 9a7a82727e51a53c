//! Calls functions that read files, run nested queries, reach other
//! databases, change settings or stall the server.
use silo_sdk::{Connector, Dataset, Error, FetchOutput, FetchRequest, sql};

struct ForbiddenFunction;

const ATTEMPTS: &[&str] = &[
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT query_to_xml('SELECT * FROM salaries', true, true, '')",
    "SELECT * FROM dblink('dbname=test', 'SELECT 1') AS t(a int)",
    "SELECT set_config('transaction_read_only', 'off', true)",
    "SELECT pg_sleep(100)",
    "SELECT id FROM orders WHERE amount > (SELECT max(salary) FROM salaries)",
];

impl Connector for ForbiddenFunction {
    type Batches = silo_sdk::Producer;

    fn describe() -> Result<Vec<Dataset>, Error> {
        Ok(Vec::new())
    }

    fn fetch(_request: FetchRequest) -> Result<FetchOutput, Error> {
        let mut refusals = Vec::new();
        for stmt in ATTEMPTS {
            match sql::query(stmt, &[]) {
                Ok(_) => return Err(Error::Connector(format!("ACCEPTED: {stmt}"))),
                Err(e) => refusals.push(format!("{stmt} => {e}")),
            }
        }
        Err(Error::Denied(refusals.join("\n")))
    }
}

silo_sdk::export_connector!(ForbiddenFunction);
