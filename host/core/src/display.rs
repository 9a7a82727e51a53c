//! Values and filters as people read them: a table cell, a filter in the
//! `column op value` notation of `silo.toml`.
use silo_types::{Op, RowFilter, Value, time};

/// A cell as text, for tables.
pub fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => s.clone(),
        Value::Bytes(b) => format!("\\x{}", hex::encode(b)),
        Value::Date(d) => time::format_date(*d),
        Value::Timestamp(t) => time::format_timestamp(*t),
    }
}

/// A filter in the `column op value` notation of `silo.toml`.
pub fn filter_text(f: &RowFilter) -> String {
    match f {
        RowFilter::AllRows => "all rows".into(),
        RowFilter::NoRows => "no rows".into(),
        RowFilter::AnyOf(any) if any.is_empty() => "no rows".into(),
        RowFilter::AnyOf(any) => any
            .iter()
            .map(|conj| {
                conj.iter()
                    .map(|p| {
                        let lit = |v: &Value| match v {
                            Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
                            other => cell_text(other),
                        };
                        match p.op {
                            Op::IsNull | Op::NotNull => format!("{} {}", p.column, p.op.symbol()),
                            Op::In | Op::NotIn => format!(
                                "{} {} ({})",
                                p.column,
                                p.op.symbol(),
                                p.values.iter().map(lit).collect::<Vec<_>>().join(", ")
                            ),
                            op => format!(
                                "{} {} {}",
                                p.column,
                                op.symbol(),
                                p.values.first().map(lit).unwrap_or_default()
                            ),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" AND ")
            })
            .collect::<Vec<_>>()
            .join("  OR  "),
    }
}
