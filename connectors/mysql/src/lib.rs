//! Silo's MySQL / MariaDB connector.
//!
//! `describe` lists, from `information_schema` (which shows a user only what
//! it holds privileges on), the tables and columns of the datasource;
//! `fetch` pushes projection, filter and limit down with `?` placeholders and
//! forwards the host's result stream untouched.
use silo_sdk::{ColumnType, Connector, Dataset, Error, FetchOutput, FetchRequest, SqlDialect, sql};

struct Mysql;

const CATALOG: &str = "SELECT c.table_schema, c.table_name, c.column_name, c.data_type, c.is_nullable \
    FROM information_schema.columns c \
    WHERE c.table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
    ORDER BY c.table_schema, c.table_name, c.ordinal_position";

impl Connector for Mysql {
    type Batches = silo_sdk::Producer;

    fn describe() -> Result<Vec<Dataset>, Error> {
        let rows = silo_sdk::collect_rows(&sql::query(CATALOG, &[])?)?;
        silo_sdk::datasets_from_catalog(rows, column_type)
    }

    fn fetch(request: FetchRequest) -> Result<FetchOutput, Error> {
        let query = silo_sdk::select(SqlDialect::MySql, &request)?;
        Ok(FetchOutput::Forward(sql::query(&query.sql, &query.params)?))
    }
}

/// `information_schema.columns.data_type` to Silo column types.
fn column_type(data_type: &str) -> Option<ColumnType> {
    Some(match data_type {
        "tinyint" | "smallint" | "mediumint" | "int" | "bigint" | "year" => ColumnType::Int,
        "float" | "double" => ColumnType::Float,
        "decimal" => ColumnType::Decimal,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => {
            ColumnType::Text
        }
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            ColumnType::Bytes
        }
        "date" => ColumnType::Date,
        "datetime" | "timestamp" => ColumnType::Timestamp,
        "json" => ColumnType::Json,
        _ => return None,
    })
}

silo_sdk::export_connector!(Mysql);
