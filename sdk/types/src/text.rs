//! Cells of uploaded text files (CSV, NDJSON): the type a column is inferred
//! as at upload, and each cell's typed value when a connector reads it back.
//! The host (upload, re-check) and the files connector share this meaning.
use serde_json::{Value as Json, json};

use crate::{Column, ColumnType, Value, time};

/// The narrowest type `cell` fits, or `None` for an empty cell (a null).
pub fn infer_kind(cell: &str) -> Option<ColumnType> {
    if cell.is_empty() {
        return None;
    }
    Some(if cell.parse::<i64>().is_ok() {
        ColumnType::Int
    } else if cell.parse::<f64>().is_ok_and(f64::is_finite) {
        ColumnType::Float
    } else if cell == "true" || cell == "false" {
        ColumnType::Boolean
    } else if time::parse_date(cell).is_some() {
        ColumnType::Date
    } else if time::parse_timestamp(cell).is_some() {
        ColumnType::Timestamp
    } else {
        ColumnType::Text
    })
}

/// The type two values of one column share, if one holds both: ints widen
/// to floats, dates to timestamps. Callers pick what mixed columns become.
pub fn widen(a: ColumnType, b: ColumnType) -> Option<ColumnType> {
    use ColumnType::{Date, Float, Int, Timestamp};
    match (a, b) {
        _ if a == b => Some(a),
        (Int, Float) | (Float, Int) => Some(Float),
        (Date, Timestamp) | (Timestamp, Date) => Some(Timestamp),
        _ => None,
    }
}

/// [`widen`] for uploaded text: anything else mixed is text.
pub fn unify(a: ColumnType, b: ColumnType) -> ColumnType {
    widen(a, b).unwrap_or(ColumnType::Text)
}

/// A cell as a value of column type `kind` (empty: null).
pub fn parse_cell(kind: ColumnType, cell: &str) -> Result<Value, String> {
    if cell.is_empty() {
        return Ok(Value::Null);
    }
    let bad = || format!("`{cell}` is not a {kind:?} value");
    Ok(match kind {
        ColumnType::Int => Value::Int(cell.parse().map_err(|_| bad())?),
        ColumnType::Float => Value::Float(cell.parse().map_err(|_| bad())?),
        ColumnType::Boolean => Value::Boolean(cell.parse().map_err(|_| bad())?),
        ColumnType::Date => Value::Date(time::parse_date(cell).ok_or_else(bad)?),
        ColumnType::Timestamp => Value::Timestamp(time::parse_timestamp(cell).ok_or_else(bad)?),
        ColumnType::Decimal => Value::Decimal(cell.to_owned()),
        ColumnType::Json => Value::Json(cell.to_owned()),
        ColumnType::Text | ColumnType::Bytes => Value::Text(cell.to_owned()),
    })
}

/// A JSON field's text form, as a CSV cell would hold it (null: empty).
pub fn json_cell(v: &Json) -> String {
    match v {
        Json::Null => String::new(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Column type names as stored in a dataset's schema file.
pub fn kind_name(kind: ColumnType) -> &'static str {
    match kind {
        ColumnType::Boolean => "boolean",
        ColumnType::Int => "int",
        ColumnType::Float => "float",
        ColumnType::Decimal => "decimal",
        ColumnType::Text => "text",
        ColumnType::Bytes => "bytes",
        ColumnType::Date => "date",
        ColumnType::Timestamp => "timestamp",
        ColumnType::Json => "json",
    }
}

/// The inverse of [`kind_name`].
pub fn kind_named(name: &str) -> Option<ColumnType> {
    [
        ColumnType::Boolean,
        ColumnType::Int,
        ColumnType::Float,
        ColumnType::Decimal,
        ColumnType::Text,
        ColumnType::Bytes,
        ColumnType::Date,
        ColumnType::Timestamp,
        ColumnType::Json,
    ]
    .into_iter()
    .find(|k| kind_name(*k) == name)
}

/// The schema file's JSON for `columns`.
pub fn schema_json(columns: &[Column]) -> Json {
    Json::Array(
        columns
            .iter()
            .map(|c| json!({ "name": c.name, "kind": kind_name(c.kind), "nullable": c.nullable }))
            .collect(),
    )
}

/// Columns back from a schema file's JSON.
pub fn schema_from_json(v: &Json) -> Result<Vec<Column>, String> {
    let items = v.as_array().ok_or("a schema is a JSON array")?;
    items
        .iter()
        .map(|c| {
            let name = c["name"].as_str().ok_or("a column needs a name")?;
            let kind = c["kind"].as_str().unwrap_or("text");
            let kind = kind_named(kind).ok_or_else(|| format!("unknown column type `{kind}`"))?;
            Ok(Column {
                name: name.to_owned(),
                kind,
                nullable: c["nullable"].as_bool().unwrap_or(true),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_narrowest_and_round_trips() {
        assert_eq!(infer_kind("12"), Some(ColumnType::Int));
        assert_eq!(infer_kind("1.5"), Some(ColumnType::Float));
        assert_eq!(infer_kind("2026-01-02"), Some(ColumnType::Date));
        assert_eq!(infer_kind("acme"), Some(ColumnType::Text));
        assert_eq!(infer_kind(""), None);
        assert_eq!(unify(ColumnType::Int, ColumnType::Float), ColumnType::Float);
        assert_eq!(unify(ColumnType::Int, ColumnType::Text), ColumnType::Text);
        assert_eq!(parse_cell(ColumnType::Int, "7").unwrap(), Value::Int(7));
        assert!(parse_cell(ColumnType::Int, "x").is_err());
        let cols = vec![Column {
            name: "a".into(),
            kind: ColumnType::Date,
            nullable: false,
        }];
        assert_eq!(schema_from_json(&schema_json(&cols)).unwrap(), cols);
    }
}
