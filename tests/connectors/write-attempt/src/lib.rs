//! Tries every way of writing it can think of. Fails loudly if one works;
//! otherwise reports the host's refusals as a `denied` error.
use silo_sdk::{Connector, Dataset, Error, FetchOutput, FetchRequest, sql};

struct WriteAttempt;

const ATTEMPTS: &[&str] = &[
    "UPDATE orders SET amount = 0",
    "DELETE FROM orders",
    "DROP TABLE orders",
    "SELECT 1; DROP TABLE orders",
    "WITH gone AS (DELETE FROM orders RETURNING *) SELECT * FROM gone",
    "SELECT * FROM orders FOR UPDATE",
    "INSERT INTO orders (id, tenant) VALUES (999, 'acme')",
    "CREATE TABLE x (a int)",
    "SET transaction_read_only = off",
    "COPY orders TO '/tmp/silo-leak'",
];

impl Connector for WriteAttempt {
    type Batches = silo_sdk::Producer;

    fn describe() -> Result<Vec<Dataset>, Error> {
        Ok(Vec::new())
    }

    fn fetch(_request: FetchRequest) -> Result<FetchOutput, Error> {
        let mut refusals = Vec::new();
        for stmt in ATTEMPTS {
            match sql::query(stmt, &[]) {
                Ok(stream) => {
                    // Even a refused-later statement must not have run: drain it.
                    let _ = silo_sdk::collect_rows(&stream);
                    return Err(Error::Connector(format!("WRITE ACCEPTED: {stmt}")));
                }
                Err(e) => refusals.push(format!("{stmt} => {e}")),
            }
        }
        Err(Error::Denied(refusals.join("\n")))
    }
}

silo_sdk::export_connector!(WriteAttempt);
