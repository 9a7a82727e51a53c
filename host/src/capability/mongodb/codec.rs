//! BSON to Silo values and column types. Scalars map to their Silo twins;
//! documents, arrays and the exotic BSON types become relaxed Extended JSON.
use bson::RawBsonRef;
use bson::raw::RawDocument;
use silo_types::{ColumnType, Value};

/// The cells of `doc` for `fields`, in order; a missing field is null. One
/// pass over the document, taking the first occurrence of a repeated key.
pub(crate) fn row(doc: &RawDocument, fields: &[String]) -> Vec<Value> {
    let mut out = vec![Value::Null; fields.len()];
    let mut seen = vec![false; fields.len()];
    let mut left = fields.len();
    for element in doc.iter() {
        // A malformed element ends the document: what was read stays.
        let Ok((key, value)) = element else { break };
        let key = key.as_str();
        if let Some(i) = fields.iter().position(|f| f == key)
            && !seen[i]
        {
            seen[i] = true;
            out[i] = value_of(value);
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
    out
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
        let r = row(&d, &fields);
        assert_eq!(r[0], Value::Text("x".into()));
        assert_eq!(r[1], Value::Int(2));
        assert_eq!(r[2], Value::Null);
        assert_eq!(r[3], Value::Json(r#"{"k":[1]}"#.into()));
        assert_eq!(r[4], Value::Timestamp(5000));
        let _ = doc! {};
    }

    #[test]
    fn mixed_types_widen() {
        assert_eq!(unify(ColumnType::Int, ColumnType::Float), ColumnType::Float);
        assert_eq!(unify(ColumnType::Int, ColumnType::Text), ColumnType::Json);
    }
}
