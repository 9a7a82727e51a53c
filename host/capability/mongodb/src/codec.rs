//! BSON to Silo values and column types. Scalars map to their Silo twins;
//! documents, arrays and the exotic BSON types become relaxed Extended JSON.
use bson::RawBsonRef;
use bson::raw::RawDocument;
use silo_types::{ColumnType, Value};

/// Sets `out[i]` to field `fields[i]` of `doc`; a missing field keeps the
/// cell as it was (null in a new row). One pass over the document, taking the
/// first occurrence of a repeated key.
pub(crate) fn fill_row(doc: &RawDocument, fields: &[String], out: &mut [Value]) {
    // Bit i: field i was seen. Wider rows fall back to a vector.
    let mut seen_small = 0u64;
    let mut seen_wide = if fields.len() > 64 {
        vec![false; fields.len()]
    } else {
        Vec::new()
    };
    let mut left = fields.len().min(out.len());
    if left == 0 {
        return;
    }
    for element in doc.iter() {
        // A malformed element ends the document: what was read stays.
        let Ok((key, value)) = element else { break };
        let key = key.as_str();
        let Some(i) = fields.iter().position(|f| f == key) else {
            continue;
        };
        let first = match seen_wide.get_mut(i) {
            Some(seen) => !std::mem::replace(seen, true),
            None => {
                let bit = 1u64 << i;
                let first = seen_small & bit == 0;
                seen_small |= bit;
                first
            }
        };
        if first && let Some(cell) = out.get_mut(i) {
            *cell = value_of(value);
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
}

/// One BSON value as a Silo value.
pub(crate) fn value_of(v: RawBsonRef<'_>) -> Value {
    match v {
        RawBsonRef::Null | RawBsonRef::Undefined => Value::Null,
        RawBsonRef::Boolean(b) => Value::Boolean(b),
        RawBsonRef::Int32(i) => Value::Int(i64::from(i)),
        RawBsonRef::Int64(i) => Value::Int(i),
        RawBsonRef::Double(f) => Value::Float(f),
        RawBsonRef::Decimal128(d) => Value::Decimal(d.to_string()),
        RawBsonRef::String(s) | RawBsonRef::Symbol(s) => Value::Text(s.to_owned()),
        RawBsonRef::ObjectId(id) => Value::Text(id.to_hex()),
        RawBsonRef::DateTime(t) => Value::Timestamp(t.timestamp_millis().saturating_mul(1000)),
        RawBsonRef::Binary(b) => Value::Bytes(b.bytes.to_vec()),
        other => Value::Json(extended_json(other)),
    }
}

/// The column type a value of this BSON type is carried as.
pub(crate) fn column_type(v: RawBsonRef<'_>) -> Option<ColumnType> {
    Some(match v {
        RawBsonRef::Null | RawBsonRef::Undefined => return None,
        RawBsonRef::Boolean(_) => ColumnType::Boolean,
        RawBsonRef::Int32(_) | RawBsonRef::Int64(_) => ColumnType::Int,
        RawBsonRef::Double(_) => ColumnType::Float,
        RawBsonRef::Decimal128(_) => ColumnType::Decimal,
        RawBsonRef::String(_) | RawBsonRef::Symbol(_) | RawBsonRef::ObjectId(_) => ColumnType::Text,
        RawBsonRef::DateTime(_) => ColumnType::Timestamp,
        RawBsonRef::Binary(_) => ColumnType::Bytes,
        _ => ColumnType::Json,
    })
}

/// The type two sampled values of one field share (see
/// [`silo_types::text::widen`]); anything else mixed is carried as JSON.
pub(crate) fn unify(a: ColumnType, b: ColumnType) -> ColumnType {
    silo_types::text::widen(a, b).unwrap_or(ColumnType::Json)
}

fn extended_json(v: RawBsonRef<'_>) -> String {
    match bson::Bson::try_from(v) {
        Ok(b) => b.into_relaxed_extjson().to_string(),
        Err(_) => "null".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};

    #[test]
    fn row_takes_fields_in_order_and_nulls_missing_ones() {
        let d = rawdoc! { "b": 2_i32, "a": "x", "n": { "k": [1_i32] }, "t": bson::DateTime::from_millis(5) };
        let fields = ["a", "b", "missing", "n", "t"].map(String::from);
        let mut r = vec![Value::Null; fields.len()];
        fill_row(&d, &fields, &mut r);
        assert_eq!(r[0], Value::Text("x".into()));
        assert_eq!(r[1], Value::Int(2));
        assert_eq!(r[2], Value::Null);
        assert_eq!(r[3], Value::Json(r#"{"k":[1]}"#.into()));
        assert_eq!(r[4], Value::Timestamp(5000));
        let _ = doc! {};
    }

    #[test]
    fn a_repeated_key_keeps_its_first_value_in_narrow_and_wide_rows() {
        // BSON allows a key twice; the host must read the one the server
        // matched on, the first, however many fields are asked for.
        let d = rawdoc! { "tenant": "a", "tenant": "b" };
        assert_eq!(d.iter().count(), 2, "both keys are in the document");
        for width in [2, 70] {
            let fields: Vec<String> = std::iter::once("tenant".to_owned())
                .chain((1..width).map(|i| format!("f{i}")))
                .collect();
            let mut r = vec![Value::Null; width];
            fill_row(&d, &fields, &mut r);
            assert_eq!(r[0], Value::Text("a".into()), "width {width}");
            assert!(r[1..].iter().all(|v| *v == Value::Null));
        }
    }

    #[test]
    fn mixed_types_widen() {
        assert_eq!(unify(ColumnType::Int, ColumnType::Float), ColumnType::Float);
        assert_eq!(unify(ColumnType::Int, ColumnType::Text), ColumnType::Json);
    }
}
