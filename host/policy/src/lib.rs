//! Policy and enforcement: the one place every capability goes through.
//!
//! - [`rule`]: row-filter rules as written in `silo.toml`, resolved per user.
//! - [`sql`]: the statement rewrite that puts the user's filter below the
//!   connector for every governed table.
//! - [`document`]: the same for MongoDB pipelines: the user's `$match` first,
//!   stage allow-list, governed lookups.
//! - [`http`]: for HTTP APIs: plain paths under a governed dataset's prefix,
//!   query parameters bound to that dataset's filter.
//! - [`Verifier`]: the re-check of every row leaving a fetch.
//!
//! A pure library: no wasmtime, no drivers, no async runtime, so it builds
//! and tests on its own in seconds; this is where the property tests run.
//! Capabilities call into it; it never calls them.
#![deny(missing_docs)]
pub mod document;
pub mod http;
pub mod rule;
pub mod sql;
#[cfg(test)]
mod sql_props;

use silo_types::{CompiledFilter, RowFilter, Value};

use silo_core::batch::Batch;
use silo_core::error::{Error, Result};
use silo_core::limits::Limits;

impl From<document::Refused> for Error {
    fn from(r: document::Refused) -> Error {
        Error::Policy(r.to_string())
    }
}

impl From<http::Refused> for Error {
    fn from(r: http::Refused) -> Error {
        Error::Policy(r.0)
    }
}

/// Re-checks every row a connector returns: shape, row filter, limits. The
/// first failure poisons the fetch; rows after it are never released.
#[derive(Debug)]
pub struct Verifier {
    filter: CompiledFilter,
    width: usize,
    keep: usize,
    limit: Option<u64>,
    max_rows: u64,
    max_bytes: u64,
    rows: u64,
    bytes: u64,
}

impl Verifier {
    /// Rows are laid out as `columns`; the first `keep` are returned to the
    /// caller (the rest are filter columns the host added to check rows).
    pub fn new(
        filter: &RowFilter,
        columns: &[String],
        keep: usize,
        limits: &Limits,
        limit: Option<u64>,
    ) -> Result<Verifier> {
        let filter = filter
            .compile(columns)
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Verifier {
            filter,
            width: columns.len(),
            keep,
            limit,
            max_rows: limits.max_rows,
            max_bytes: limits.max_bytes,
            rows: 0,
            bytes: 0,
        })
    }

    /// Rows released so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes released so far (cell payloads).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the caller's own limit has been reached.
    pub fn satisfied(&self) -> bool {
        self.limit.is_some_and(|l| self.rows >= l)
    }

    /// Flattens rows a connector produced itself, converting each cell, and
    /// checks them as [`Verifier::check`] does. A row of the wrong width is
    /// the connector's error.
    pub fn admit<T>(&mut self, rows: Vec<Vec<T>>, cell: impl FnMut(T) -> Value) -> Result<Batch> {
        let mut batch = Batch::convert(self.width, rows, cell).map_err(|m| {
            Error::Connector(format!(
                "row {} has {} cells, the fetch has {} columns",
                self.rows + m.row as u64 + 1,
                m.cells,
                self.width
            ))
        })?;
        self.check(&mut batch)?;
        Ok(batch)
    }

    /// Checks `batch` in place and trims it to the caller's columns and limit.
    pub fn check(&mut self, batch: &mut Batch) -> Result<()> {
        if batch.width() != self.width {
            return Err(Error::Connector(format!(
                "rows have {} cells, the fetch has {} columns",
                batch.width(),
                self.width
            )));
        }
        if let Some(limit) = self.limit {
            let room = usize::try_from(limit.saturating_sub(self.rows)).unwrap_or(usize::MAX);
            batch.truncate(room);
        }
        for (i, row) in batch.iter().enumerate() {
            if !self.filter.matches(row) {
                return Err(Error::Policy(format!(
                    "connector returned a row outside the user's row filter (row {}); the fetch was stopped",
                    self.rows + i as u64 + 1
                )));
            }
        }
        self.bytes += batch.cells().iter().map(cell_bytes).sum::<u64>();
        self.rows += batch.len() as u64;
        if self.rows > self.max_rows {
            return Err(Error::Limit(format!(
                "the fetch returned more than {} rows",
                self.max_rows
            )));
        }
        if self.bytes > self.max_bytes {
            return Err(Error::Limit(format!(
                "the fetch returned more than {} MiB",
                self.max_bytes >> 20
            )));
        }
        batch.keep_columns(self.keep);
        Ok(())
    }
}

/// Payload size of a cell, as counted against `max_bytes`.
pub(crate) fn cell_bytes(v: &Value) -> u64 {
    match v {
        Value::Null | Value::Boolean(_) => 1,
        Value::Int(_) | Value::Float(_) | Value::Timestamp(_) => 8,
        Value::Date(_) => 4,
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => s.len() as u64,
        Value::Bytes(b) => b.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silo_types::{Op, Predicate};

    fn tenant_filter() -> RowFilter {
        RowFilter::AnyOf(vec![vec![Predicate {
            column: "tenant".into(),
            op: Op::Eq,
            values: vec![Value::Text("a".into())],
        }]])
    }

    #[test]
    fn drops_host_added_columns_and_stops_on_violation() {
        let cols = ["name".to_owned(), "tenant".to_owned()];
        let mut v = Verifier::new(&tenant_filter(), &cols, 1, &Limits::default(), None).unwrap();
        let row = |n: &str, t: &str| vec![Value::Text(n.into()), Value::Text(t.into())];
        let ok = v.admit(vec![row("x", "a")], |c| c).unwrap();
        assert_eq!(
            ok.into_iter().collect::<Vec<_>>(),
            vec![vec![Value::Text("x".into())]]
        );
        let bad = vec![row("y", "a"), row("z", "b")];
        assert!(matches!(v.admit(bad, |c| c), Err(Error::Policy(_))));
        assert_eq!(v.rows(), 1);
        // A ragged row is the connector's error, numbered across batches.
        let ragged = vec![row("y", "a"), vec![Value::Text("w".into())]];
        let err = v.admit(ragged, |c| c).unwrap_err();
        assert!(
            matches!(&err, Error::Connector(m) if m.starts_with("row 3 has 1 cells")),
            "{err:?}"
        );
        // A host source of the wrong width is refused as a whole.
        let mut narrow = Batch::from_rows(1, vec![vec![Value::Text("a".into())]]).unwrap();
        assert!(matches!(v.check(&mut narrow), Err(Error::Connector(_))));
    }

    #[test]
    fn row_cap_and_caller_limit() {
        let cols = ["tenant".to_owned()];
        let limits = Limits {
            max_rows: 2,
            ..Limits::default()
        };
        let mut v = Verifier::new(&tenant_filter(), &cols, 1, &limits, None).unwrap();
        let rows = vec![vec![Value::Text("a".into())]; 3];
        let mut batch = Batch::from_rows(1, rows).unwrap();
        assert!(matches!(v.check(&mut batch), Err(Error::Limit(_))));
        let mut v = Verifier::new(&tenant_filter(), &cols, 1, &limits, Some(1)).unwrap();
        let rows = vec![vec![Value::Text("a".into())]; 3];
        let mut batch = Batch::from_rows(1, rows).unwrap();
        v.check(&mut batch).unwrap();
        assert_eq!(batch.len(), 1);
        assert!(v.satisfied());
    }
}
