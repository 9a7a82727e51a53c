//! Silo's Postgres connector.
//!
//! `describe` lists, from the catalog, the tables and columns the datasource's
//! read-only role may `SELECT`; `fetch` pushes projection, filter and limit
//! down as one parameterised statement and forwards the host's result stream,
//! so rows go from Postgres to the caller without entering this sandbox.
use silo_sdk::{
    Column, ColumnType, Connector, Dataset, Error, FetchOutput, FetchRequest, SqlDialect, Value,
    sql,
};

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
        let mut datasets: Vec<Dataset> = Vec::new();
        for row in rows {
            let [schema, table, column, data_type, nullable] = row.as_slice() else {
                return Err(Error::Connector(
                    "catalog row has an unexpected shape".into(),
                ));
            };
            let text = |v: &Value| match v {
                Value::Text(s) => Ok(s.clone()),
                _ => Err(Error::Connector("catalog column is not text".into())),
            };
            // Columns of a type the host cannot carry are left out, not guessed.
            let Some(kind) = column_type(&text(data_type)?) else {
                continue;
            };
            let (schema, table) = (text(schema)?, text(table)?);
            // Fully qualified; the host shows names relative to the datasource schema.
            let name = format!("{schema}.{table}");
            let column = Column {
                name: text(column)?,
                kind,
                nullable: text(nullable)? == "YES",
            };
            match datasets.last_mut() {
                Some(d) if d.name == name => d.columns.push(column),
                _ => datasets.push(Dataset {
                    name,
                    columns: vec![column],
                }),
            }
        }
        Ok(datasets)
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
