//! Typed values and row filters shared by the Silo host and the connector SDK.
//!
//! The WIT contract (`wit/connector.wit`) carries these as plain data. Both sides
//! bind the WIT with their own generator, then convert into these types (see
//! [`wit_conversions!`]) so that one implementation of the filter's meaning serves
//! the connector's pushdown, the host's enforcement and the host's re-verification.
//! If those three ever disagreed, a correct connector would be rejected or a
//! wrong row let through; keeping them in one crate is what prevents that.
//!
//! ```
//! use silo_types::{Op, Predicate, RowFilter, SqlDialect, Value};
//!
//! let filter = RowFilter::AnyOf(vec![vec![Predicate {
//!     column: "tenant".into(),
//!     op: Op::Eq,
//!     values: vec![Value::Text("acme".into())],
//! }]]);
//! let clause = filter.to_sql_where(SqlDialect::Postgres, 1);
//! assert_eq!(clause.sql, r#"(("tenant" = $1))"#);
//! assert_eq!(clause.params, vec![Value::Text("acme".into())]);
//!
//! let row = [Value::Text("acme".into())];
//! let compiled = filter.compile(&["tenant"]).unwrap();
//! assert!(compiled.matches(&row));
//! ```
#![deny(missing_docs)]

pub mod document;
mod eval;
pub mod http;
mod sql;
pub mod text;
pub mod time;

pub use eval::{CompiledFilter, UnknownColumn, compare};
pub use sql::{SqlDialect, WhereClause, quote_ident};

/// One cell. Mirrors `silo:connector/types.value`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL / a missing field.
    Null,
    /// A boolean.
    Boolean(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// An exact decimal written as text, e.g. `-12.340`.
    Decimal(String),
    /// UTF-8 text.
    Text(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
    /// A JSON document as text.
    Json(String),
}

/// The type of a column. Mirrors `silo:connector/types.column-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// [`Value::Boolean`].
    Boolean,
    /// [`Value::Int`].
    Int,
    /// [`Value::Float`].
    Float,
    /// [`Value::Decimal`].
    Decimal,
    /// [`Value::Text`].
    Text,
    /// [`Value::Bytes`].
    Bytes,
    /// [`Value::Date`].
    Date,
    /// [`Value::Timestamp`].
    Timestamp,
    /// [`Value::Json`].
    Json,
}

/// A comparison operator. Mirrors `silo:connector/types.op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `IN (…)`
    In,
    /// `NOT IN (…)`
    NotIn,
    /// `IS NULL`
    IsNull,
    /// `IS NOT NULL`
    NotNull,
}

impl Op {
    /// How many values this operator takes: `None` means one or more.
    pub fn arity(self) -> Option<usize> {
        match self {
            Op::IsNull | Op::NotNull => Some(0),
            Op::In | Op::NotIn => None,
            _ => Some(1),
        }
    }

    /// The SQL spelling, also used when printing a filter.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "IN",
            Op::NotIn => "NOT IN",
            Op::IsNull => "IS NULL",
            Op::NotNull => "IS NOT NULL",
        }
    }
}

/// `column op values`. Mirrors `silo:connector/types.predicate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    /// The column the predicate reads.
    pub column: String,
    /// The comparison.
    pub op: Op,
    /// The operands: none for the null tests, one or more for `in`, one otherwise.
    pub values: Vec<Value>,
}

/// The rows an embed user may see. Mirrors `silo:connector/types.row-filter`.
///
/// `AnyOf` is a disjunction of conjunctions: a user in two groups sees the
/// union of what each group allows. An empty `AnyOf` admits nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum RowFilter {
    /// Every row.
    AllRows,
    /// No row at all.
    NoRows,
    /// Rows that satisfy every predicate of at least one conjunction.
    AnyOf(Vec<Vec<Predicate>>),
}

impl RowFilter {
    /// Every column any predicate reads, each once, in first-seen order.
    pub fn columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        if let RowFilter::AnyOf(any) = self {
            for p in any.iter().flatten() {
                if !out.contains(&p.column.as_str()) {
                    out.push(&p.column);
                }
            }
        }
        out
    }

    /// Checks operand counts, so that a malformed filter is refused up front
    /// rather than silently read as something broader.
    pub fn validate(&self) -> Result<(), String> {
        let RowFilter::AnyOf(any) = self else {
            return Ok(());
        };
        for p in any.iter().flatten() {
            let ok = match p.op.arity() {
                Some(n) => p.values.len() == n,
                None => !p.values.is_empty(),
            };
            if !ok {
                return Err(format!(
                    "predicate on `{}` with {} has {} value(s)",
                    p.column,
                    p.op.symbol(),
                    p.values.len()
                ));
            }
        }
        Ok(())
    }
}

/// A column of a dataset. Mirrors `silo:connector/types.column`.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Value type.
    pub kind: ColumnType,
    /// Whether the column may hold nulls.
    pub nullable: bool,
}

/// A dataset a connector can serve. Mirrors `silo:connector/types.dataset`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Dataset name (for SQL sources, the table name).
    pub name: String,
    /// Its columns.
    pub columns: Vec<Column>,
}

/// Generates `From` conversions between this crate's types and the types a WIT
/// binding generator produced for `silo:connector/types`.
///
/// wasmtime's `bindgen!` (host) and `wit-bindgen` (guest) generate types of the
/// same shape and names, so one macro serves both sides. Call it in the crate
/// that owns the generated module, naming that module.
#[macro_export]
macro_rules! wit_conversions {
    ($wit:path) => {
        const _: () = {
            use $wit as wit;

            impl From<wit::Value> for $crate::Value {
                fn from(v: wit::Value) -> Self {
                    match v {
                        wit::Value::Null => Self::Null,
                        wit::Value::Boolean(b) => Self::Boolean(b),
                        wit::Value::Int(i) => Self::Int(i),
                        wit::Value::Float(f) => Self::Float(f),
                        wit::Value::Decimal(s) => Self::Decimal(s),
                        wit::Value::Text(s) => Self::Text(s),
                        wit::Value::Bytes(b) => Self::Bytes(b),
                        wit::Value::Date(d) => Self::Date(d),
                        wit::Value::Timestamp(t) => Self::Timestamp(t),
                        wit::Value::Json(s) => Self::Json(s),
                    }
                }
            }

            impl From<$crate::Value> for wit::Value {
                fn from(v: $crate::Value) -> Self {
                    use $crate::Value as V;
                    match v {
                        V::Null => Self::Null,
                        V::Boolean(b) => Self::Boolean(b),
                        V::Int(i) => Self::Int(i),
                        V::Float(f) => Self::Float(f),
                        V::Decimal(s) => Self::Decimal(s),
                        V::Text(s) => Self::Text(s),
                        V::Bytes(b) => Self::Bytes(b),
                        V::Date(d) => Self::Date(d),
                        V::Timestamp(t) => Self::Timestamp(t),
                        V::Json(s) => Self::Json(s),
                    }
                }
            }

            $crate::wit_conversions!(@enum wit::Op, $crate::Op,
                Eq, Ne, Lt, Le, Gt, Ge, In, NotIn, IsNull, NotNull);
            $crate::wit_conversions!(@enum wit::ColumnType, $crate::ColumnType,
                Boolean, Int, Float, Decimal, Text, Bytes, Date, Timestamp, Json);

            impl From<wit::Predicate> for $crate::Predicate {
                fn from(p: wit::Predicate) -> Self {
                    Self {
                        column: p.column,
                        op: p.op.into(),
                        values: p.values.into_iter().map(Into::into).collect(),
                    }
                }
            }

            impl From<$crate::Predicate> for wit::Predicate {
                fn from(p: $crate::Predicate) -> Self {
                    Self {
                        column: p.column,
                        op: p.op.into(),
                        values: p.values.into_iter().map(Into::into).collect(),
                    }
                }
            }

            impl From<wit::RowFilter> for $crate::RowFilter {
                fn from(f: wit::RowFilter) -> Self {
                    match f {
                        wit::RowFilter::AllRows => Self::AllRows,
                        wit::RowFilter::NoRows => Self::NoRows,
                        wit::RowFilter::AnyOf(any) => Self::AnyOf(
                            any.into_iter()
                                .map(|c| c.into_iter().map(Into::into).collect())
                                .collect(),
                        ),
                    }
                }
            }

            impl From<$crate::RowFilter> for wit::RowFilter {
                fn from(f: $crate::RowFilter) -> Self {
                    use $crate::RowFilter as F;
                    match f {
                        F::AllRows => Self::AllRows,
                        F::NoRows => Self::NoRows,
                        F::AnyOf(any) => Self::AnyOf(
                            any.into_iter()
                                .map(|c| c.into_iter().map(Into::into).collect())
                                .collect(),
                        ),
                    }
                }
            }

            impl From<wit::Column> for $crate::Column {
                fn from(c: wit::Column) -> Self {
                    Self { name: c.name, kind: c.kind.into(), nullable: c.nullable }
                }
            }

            impl From<$crate::Column> for wit::Column {
                fn from(c: $crate::Column) -> Self {
                    Self { name: c.name, kind: c.kind.into(), nullable: c.nullable }
                }
            }

            impl From<wit::Dataset> for $crate::Dataset {
                fn from(d: wit::Dataset) -> Self {
                    Self { name: d.name, columns: d.columns.into_iter().map(Into::into).collect() }
                }
            }

            impl From<$crate::Dataset> for wit::Dataset {
                fn from(d: $crate::Dataset) -> Self {
                    Self { name: d.name, columns: d.columns.into_iter().map(Into::into).collect() }
                }
            }
        };
    };
    (@enum $a:path, $b:path, $($case:ident),*) => {
        impl From<$a> for $b {
            fn from(v: $a) -> Self {
                use $a as A;
                use $b as B;
                match v { $(A::$case => B::$case,)* }
            }
        }
        impl From<$b> for $a {
            fn from(v: $b) -> Self {
                use $a as A;
                use $b as B;
                match v { $(B::$case => A::$case,)* }
            }
        }
    };
}
