//! Rendering rows for the terminal (a table) and for programs (NDJSON).
use std::io::Write;

use silo_types::{Value, time};

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
            serde_json::to_writer(&mut *out, &cell_json(cell))?;
        }
        out.write_all(b"}\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
