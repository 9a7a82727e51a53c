//! Filter pushdown for SQL and document connectors.
use crate::{Error, FetchRequest, RowFilter, Value};
use silo_types::{SqlDialect, quote_ident};

/// A statement and its bind values.
#[derive(Debug, Clone)]
pub struct Query {
    /// SQL text with placeholders.
    pub sql: String,
    /// Values for the placeholders, in order.
    pub params: Vec<Value>,
}

/// The filter as a parenthesised SQL condition with placeholders numbered from
/// `first_param` (Postgres `$n`; MySQL `?`). Values are returned as bind
/// parameters and never spliced into the text.
pub fn where_clause(filter: &RowFilter, dialect: SqlDialect, first_param: usize) -> Query {
    let clause = silo_types::RowFilter::from(filter.clone()).to_sql_where(dialect, first_param);
    Query {
        sql: clause.sql,
        params: clause.params.into_iter().map(Into::into).collect(),
    }
}

/// `SELECT <columns> FROM <dataset> WHERE <filter> [LIMIT n]` for a request
/// whose dataset is a table name (`table` or `schema.table`).
pub fn select(dialect: SqlDialect, request: &FetchRequest) -> Result<Query, Error> {
    if request.columns.is_empty() {
        return Err(Error::InvalidRequest("no columns requested".into()));
    }
    let table = request
        .dataset
        .split('.')
        .map(|part| quote_ident(dialect, part))
        .collect::<Vec<_>>()
        .join(".");
    let columns = request
        .columns
        .iter()
        .map(|c| quote_ident(dialect, c))
        .collect::<Vec<_>>()
        .join(", ");
    let filter = where_clause(&request.filter, dialect, 1);
    let mut sql = format!("SELECT {columns} FROM {table} WHERE {}", filter.sql);
    if let Some(limit) = request.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    Ok(Query {
        sql,
        params: filter.params,
    })
}

/// The filter as a MongoDB query document in Extended JSON text, for
/// `document::find` or a `$match` stage. Values stay typed data: a text value
/// that looks like an operator is compared as text.
pub fn document_filter(filter: &RowFilter) -> Result<String, Error> {
    silo_types::RowFilter::from(filter.clone())
        .to_mongo_query()
        .map(|q| q.to_string())
        .map_err(Error::InvalidRequest)
}
