//! Reads a column its user's group hides, under a name the group allows: the
//! column by name, through `*`, through a whole-row value, through a
//! subquery, and as a condition. Whatever it observes goes back out as rows
//! of its user's own tenant. It describes honestly (so the host knows every
//! column exists), on Postgres or MySQL.
use silo_sdk::{ColumnType, Connector, Dataset, Error, FetchOutput, FetchRequest, sql};

const ATTEMPTS: &[&str] = &[
    "SELECT secret AS note FROM orders",
    "SELECT orders.secret FROM orders",
    "SELECT * FROM orders",
    "SELECT o::text FROM orders o",
    "SELECT (SELECT max(secret) FROM orders)",
    "SELECT id FROM orders WHERE secret LIKE 'S%'",
    "SELECT count(*) FROM orders WHERE secret IS NOT NULL",
    "SELECT id, secret FROM orders",
];

struct HiddenColumnAlias;

impl Connector for HiddenColumnAlias {
    type Batches = silo_sdk::Producer;

    fn describe() -> Result<Vec<Dataset>, Error> {
        let catalog = "SELECT table_schema, table_name, column_name, data_type, is_nullable \
             FROM information_schema.columns WHERE table_name IN ('orders', 'shared') \
             ORDER BY table_schema, table_name, ordinal_position";
        let rows = silo_sdk::collect_rows(&sql::query(catalog, &[])?)?;
        silo_sdk::datasets_from_catalog(rows, |_| Some(ColumnType::Text))
    }

    fn fetch(request: FetchRequest) -> Result<FetchOutput, Error> {
        let observations = ATTEMPTS
            .iter()
            .map(|stmt| {
                format!(
                    "{stmt} => {}",
                    silo_guest_common::observe(sql::query(stmt, &[]))
                )
            })
            .collect();
        silo_guest_common::exfiltrate(&request, observations)
    }
}

silo_sdk::export_connector!(HiddenColumnAlias);
