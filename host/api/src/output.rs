//! Rendering rows for the terminal (a table) and for programs (NDJSON).
use std::io::Write;

use silo_types::Value;

pub use silo_core::display::cell_text;

/// A cell as JSON: numbers stay numbers, decimals stay exact (as strings),
/// dates and timestamps are ISO 8601, bytes are hex, JSON is embedded.
pub fn cell_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| J::String(s.clone())),
        other => J::String(cell_text(other)),
    }
}

/// Writes rows as an aligned text table with a header.
pub fn write_table(
    out: &mut impl Write,
    columns: &[String],
    rows: &[Vec<Value>],
) -> std::io::Result<()> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(cell_text).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .filter_map(|r| r.get(i))
                .map(|s| s.chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |out: &mut dyn Write, items: &[String]| -> std::io::Result<()> {
        let padded: Vec<String> = items
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        writeln!(out, " {}", padded.join(" | ").trim_end())
    };
    line(out, columns)?;
    writeln!(
        out,
        "-{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-")
    )?;
    for r in &cells {
        line(out, r)?;
    }
    Ok(())
}

/// Writes one JSON object per row, its keys in column order.
pub fn write_ndjson<'a>(
    out: &mut impl Write,
    columns: &[String],
    rows: impl IntoIterator<Item = &'a [Value]>,
) -> std::io::Result<()> {
    for row in rows {
        out.write_all(b"{")?;
        for (i, (name, cell)) in columns.iter().zip(row).enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut *out, name)?;
            out.write_all(b":")?;
            write_cell(out, cell)?;
        }
        out.write_all(b"}\n")?;
    }
    Ok(())
}

/// Writes `{"columns": [...], "rows": [[...], ...]}`, each cell as
/// [`cell_json`] renders it, straight from the values: no JSON tree is
/// built for a body that is written once.
pub fn write_json_rows<'a>(
    out: &mut impl Write,
    columns: &[String],
    rows: impl IntoIterator<Item = &'a [Value]>,
) -> std::io::Result<()> {
    out.write_all(b"{\"columns\":")?;
    serde_json::to_writer(&mut *out, columns)?;
    out.write_all(b",\"rows\":[")?;
    for (n, row) in rows.into_iter().enumerate() {
        out.write_all(if n == 0 { b"[" } else { b",[" })?;
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            write_cell(out, cell)?;
        }
        out.write_all(b"]")?;
    }
    out.write_all(b"]}")
}

/// One cell as [`cell_json`] renders it, without building a JSON value for
/// the common kinds.
fn write_cell(out: &mut impl Write, v: &Value) -> std::io::Result<()> {
    match v {
        Value::Null => out.write_all(b"null"),
        Value::Boolean(b) => out.write_all(if *b { b"true" } else { b"false" }),
        Value::Int(i) => Ok(serde_json::to_writer(&mut *out, i)?),
        Value::Float(f) if f.is_finite() => Ok(serde_json::to_writer(&mut *out, f)?),
        Value::Float(_) => out.write_all(b"null"),
        Value::Decimal(s) | Value::Text(s) => Ok(serde_json::to_writer(&mut *out, s)?),
        other => Ok(serde_json::to_writer(&mut *out, &cell_json(other))?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct writer says exactly what serializing `cell_json` values
    /// would, for every kind of value.
    #[test]
    fn json_rows_match_the_json_values_of_their_cells() {
        let columns = vec!["a".to_owned(), "b\"c".to_owned()];
        let cells = [
            Value::Null,
            Value::Boolean(true),
            Value::Boolean(false),
            Value::Int(i64::MIN),
            Value::Float(1.5e300),
            Value::Float(f64::NAN),
            Value::Float(f64::NEG_INFINITY),
            Value::Float(-0.0),
            Value::Decimal("12.50".into()),
            Value::Text("tab\tquote\"\u{1}\u{2028}é".into()),
            Value::Json("{\"k\": [1, 2]}".into()),
            Value::Json("not json".into()),
            Value::Bytes(vec![0, 255]),
            Value::Date(19000),
            Value::Timestamp(1_700_000_000_123_456),
        ];
        let rows: Vec<Vec<Value>> = cells.chunks(2).map(<[Value]>::to_vec).collect();
        let mut out = Vec::new();
        write_json_rows(&mut out, &columns, rows.iter().map(Vec::as_slice)).unwrap();
        let want = serde_json::json!({
            "columns": columns,
            "rows": rows
                .iter()
                .map(|r| r.iter().map(cell_json).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        });
        assert_eq!(String::from_utf8(out).unwrap(), want.to_string());

        let mut empty = Vec::new();
        write_json_rows(&mut empty, &columns, std::iter::empty()).unwrap();
        assert_eq!(
            String::from_utf8(empty).unwrap(),
            r#"{"columns":["a","b\"c"],"rows":[]}"#
        );
    }

    #[test]
    fn ndjson_keeps_column_order_and_escapes() {
        let mut out = Vec::new();
        let columns = ["zeta".to_owned(), "a\"b".to_owned(), "id".to_owned()];
        let row = [Value::Text("x\ny".into()), Value::Null, Value::Int(7)];
        write_ndjson(&mut out, &columns, [&row[..]]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"zeta\":\"x\\ny\",\"a\\\"b\":null,\"id\":7}\n"
        );
    }
}
