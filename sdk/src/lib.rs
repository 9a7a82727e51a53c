//! Write [Silo](https://example.invalid/silo) datasource connectors in Rust.
//!
//! A connector is a WebAssembly component (`wasm32-wasip2`, `crate-type =
//! ["cdylib"]`) that serves datasets from one datasource. It holds no
//! credentials and opens no sockets: it imports a read-only capability the host
//! has already bound to the datasource ([`sql`] for SQL databases, [`document`]
//! for MongoDB, [`files`] for uploads, [`http`] for JSON APIs) and receives
//! the embed user's [`RowFilter`] with every [`FetchRequest`].
//!
//! Push the filter down (so the database does the work), but know that the host
//! does not trust you: it rewrites your SQL so every governed table is already
//! filtered, and re-checks each row you return. A connector that forgets the
//! filter gets only permitted rows; one that forges values gets an error.
//!
//! # A complete SQL connector
//!
//! ```no_run
//! use silo_sdk::{Connector, Dataset, Error, FetchOutput, FetchRequest, SqlDialect};
//!
//! struct MyPostgres;
//!
//! impl Connector for MyPostgres {
//!     type Batches = silo_sdk::Producer;
//!
//!     fn describe() -> Result<Vec<Dataset>, Error> {
//!         Ok(Vec::new()) // see connectors/postgres for a catalog-backed describe
//!     }
//!
//!     fn fetch(request: FetchRequest) -> Result<FetchOutput, Error> {
//!         // SELECT "a", "b" FROM "table" WHERE (<filter as $1…$n>) LIMIT n
//!         let query = silo_sdk::select(SqlDialect::Postgres, &request)?;
//!         let rows = silo_sdk::sql::query(&query.sql, &query.params)?;
//!         // Hand the host's stream straight back: rows never enter this sandbox.
//!         Ok(FetchOutput::Forward(rows))
//!     }
//! }
//!
//! silo_sdk::export_connector!(MyPostgres);
//! ```
//!
//! # Building rows yourself
//!
//! A connector that does not forward a host stream returns
//! `FetchOutput::Produced(Batches::new(Producer::new(...)))`; plain Rust
//! values convert into cells:
//!
//! ```
//! use silo_sdk::{Row, Value};
//! let row: Row = vec![7i64.into(), "acme".into(), None::<f64>.into(), true.into()];
//! assert!(matches!(&row[1], Value::Text(t) if t == "acme"));
//! assert!(matches!(row[2], Value::Null));
//! ```
#![deny(missing_docs)]

/// Bindings generated from `wit/connector.wit` (the `any-connector` world:
/// a built connector imports only the capabilities it calls).
/// The WIT file documents each item.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "any-connector",
        pub_export_macro: true,
        export_macro_name: "export_connector",
        default_bindings_module: "silo_sdk::bindings",
    });
}

mod catalog;
mod produce;
mod select;

pub use bindings::export_connector;
pub use bindings::exports::silo::connector::connector::{
    Batches, FetchOutput, Guest as Connector, GuestBatches,
};
pub use bindings::silo::connector::streams::RowStream;
pub use bindings::silo::connector::types::{
    Column, ColumnType, Dataset, Error, FetchRequest, Op, Predicate, Row, RowFilter, Value,
};
pub use bindings::silo::connector::{document, files, http, log, sql};
pub use catalog::datasets_from_catalog;
pub use produce::Producer;
pub use select::{Query, document_filter, select, where_clause};
pub use silo_types::SqlDialect;

silo_types::wit_conversions!(crate::bindings::silo::connector::types);

/// Reads every remaining batch of a host stream into memory: for small results
/// such as catalog queries, not for fetches (forward those instead).
pub fn collect_rows(stream: &RowStream) -> Result<Vec<Row>, Error> {
    /// Rows per host call: large enough to amortise the call, small enough to
    /// keep a batch well inside guest memory.
    const BATCH: u32 = 1024;
    let mut rows = Vec::new();
    while let Some(batch) = stream.next_batch(BATCH)? {
        rows.extend(batch);
    }
    Ok(rows)
}

/// Plain Rust values into cells, so connectors can build rows tersely:
/// `vec![1i64.into(), "acme".into(), Value::Null]`.
macro_rules! value_from {
    ($($t:ty => $case:ident),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$case(v.into())
            }
        })*
    };
}

value_from!(bool => Boolean, i64 => Int, i32 => Int, f64 => Float, String => Text, &str => Text, Vec<u8> => Bytes);

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}
