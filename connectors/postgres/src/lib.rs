//! Silo's Postgres connector.
//!
//! `describe` lists, from the catalog, the tables and columns the datasource's
//! read-only role may `SELECT`; `fetch` pushes projection, filter and limit
//! down as one parameterised statement and forwards the host's result stream,
//! so rows go from Postgres to the caller without entering this sandbox.
use silo_sdk::{ColumnType, Connector, Dataset, Error, FetchOutput, FetchRequest, SqlDialect, sql};

struct Postgres;

/// Columns of every table the current role holds `SELECT` on. Identifiers are
/// cast to `text` so they arrive as plain strings rather than catalog domains.
const CATALOG: &str = "SELECT c.table_schema::text, c.table_name::text, c.column_name::text, \
    c.data_type::text, c.is_nullable::text \
    FROM information_schema.columns c \
    WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema') \
    AND EXISTS (SELECT 1 FROM information_schema.table_privileges p \
        WHERE p.table_schema = c.table_schema AND p.table_name = c.table_name \
        AND p.privilege_type = 'SELECT') \
    ORDER BY 1, 2, c.ordinal_position";

impl Connector for Postgres {
    type Batches = silo_sdk::Producer;

    fn describe() -> Result<Vec<Dataset>, Error> {
        let rows = silo_sdk::collect_rows(&sql::query(CATALOG, &[])?)?;
        silo_sdk::datasets_from_catalog(rows, column_type)
    }

    fn fetch(request: FetchRequest) -> Result<FetchOutput, Error> {
        let query = silo_sdk::select(SqlDialect::Postgres, &request)?;
        let rows = sql::query(&query.sql, &query.params)?;
        Ok(FetchOutput::Forward(rows))
    }
}

/// Postgres `information_schema` type names to Silo column types.
fn column_type(data_type: &str) -> Option<ColumnType> {
    Some(match data_type {
        "boolean" => ColumnType::Boolean,
        "smallint" | "integer" | "bigint" => ColumnType::Int,
        "real" | "double precision" => ColumnType::Float,
        "numeric" => ColumnType::Decimal,
        "text" | "character varying" | "character" | "name" | "uuid" => ColumnType::Text,
        "bytea" => ColumnType::Bytes,
        "date" => ColumnType::Date,
        "timestamp without time zone" | "timestamp with time zone" => ColumnType::Timestamp,
        "json" | "jsonb" => ColumnType::Json,
        _ => return None,
    })
}

silo_sdk::export_connector!(Postgres);
