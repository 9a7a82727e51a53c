//! MySQL binary-protocol values <-> Silo values, decided per column once.
use mysql_async::consts::ColumnType as My;
use mysql_async::{Column as MyColumn, Value as MyValue};
use silo_types::{ColumnType, Value, time};

/// Character set id MySQL uses for binary strings.
const BINARY_CHARSET: u16 = 63;

/// How to decode one column.
#[derive(Debug, Clone, Copy)]
pub enum Decoder {
    Int,
    Float,
    Decimal,
    Text,
    Bytes,
    Date,
    Timestamp,
    Json,
}

impl Decoder {
    /// The decoder for a result column, or `None` if Silo cannot carry it.
    pub fn for_column(c: &MyColumn) -> Option<Decoder> {
        let binary = c.character_set() == BINARY_CHARSET;
        Some(match c.column_type() {
            My::MYSQL_TYPE_TINY
            | My::MYSQL_TYPE_SHORT
            | My::MYSQL_TYPE_LONG
            | My::MYSQL_TYPE_INT24
            | My::MYSQL_TYPE_LONGLONG
            | My::MYSQL_TYPE_YEAR => Decoder::Int,
            My::MYSQL_TYPE_FLOAT | My::MYSQL_TYPE_DOUBLE => Decoder::Float,
            My::MYSQL_TYPE_DECIMAL | My::MYSQL_TYPE_NEWDECIMAL => Decoder::Decimal,
            My::MYSQL_TYPE_DATE | My::MYSQL_TYPE_NEWDATE => Decoder::Date,
            My::MYSQL_TYPE_DATETIME
            | My::MYSQL_TYPE_TIMESTAMP
            | My::MYSQL_TYPE_DATETIME2
            | My::MYSQL_TYPE_TIMESTAMP2 => Decoder::Timestamp,
            My::MYSQL_TYPE_JSON => Decoder::Json,
            My::MYSQL_TYPE_VARCHAR
            | My::MYSQL_TYPE_VAR_STRING
            | My::MYSQL_TYPE_STRING
            | My::MYSQL_TYPE_TINY_BLOB
            | My::MYSQL_TYPE_MEDIUM_BLOB
            | My::MYSQL_TYPE_LONG_BLOB
            | My::MYSQL_TYPE_BLOB
            | My::MYSQL_TYPE_ENUM
            | My::MYSQL_TYPE_SET => {
                if binary {
                    Decoder::Bytes
                } else {
                    Decoder::Text
                }
            }
            _ => return None,
        })
    }

    /// The Silo column type this decoder produces.
    pub fn column_type(self) -> ColumnType {
        match self {
            Decoder::Int => ColumnType::Int,
            Decoder::Float => ColumnType::Float,
            Decoder::Decimal => ColumnType::Decimal,
            Decoder::Text => ColumnType::Text,
            Decoder::Bytes => ColumnType::Bytes,
            Decoder::Date => ColumnType::Date,
            Decoder::Timestamp => ColumnType::Timestamp,
            Decoder::Json => ColumnType::Json,
        }
    }

    /// Decodes one cell. Inlined into the row loop, so the cell is decoded
    /// in registers rather than returned through memory.
    #[inline(always)]
    pub fn decode(self, v: MyValue) -> Result<Value, String> {
        let text = |b: Vec<u8>| {
            String::from_utf8(b).map_err(|_| "invalid UTF-8 in a text column".to_owned())
        };
        Ok(match (self, v) {
            (_, MyValue::NULL) => Value::Null,
            (Decoder::Int, MyValue::Int(i)) => Value::Int(i),
            (Decoder::Int, MyValue::UInt(u)) => Value::Int(
                i64::try_from(u)
                    .map_err(|_| "unsigned value exceeds 64-bit signed range".to_owned())?,
            ),
            (Decoder::Float, MyValue::Float(f)) => Value::Float(f.into()),
            (Decoder::Float, MyValue::Double(f)) => Value::Float(f),
            (Decoder::Decimal, MyValue::Bytes(b)) => Value::Decimal(text(b)?),
            (Decoder::Text, MyValue::Bytes(b)) => Value::Text(text(b)?),
            (Decoder::Json, MyValue::Bytes(b)) => Value::Json(text(b)?),
            (Decoder::Bytes, MyValue::Bytes(b)) => Value::Bytes(b),
            (Decoder::Date, MyValue::Date(y, m, d, ..)) => Value::Date(
                i32::try_from(time::days_from_civil(
                    i64::from(y),
                    u32::from(m),
                    u32::from(d),
                ))
                .map_err(|_| "date out of range".to_owned())?,
            ),
            (Decoder::Timestamp, MyValue::Date(y, m, d, h, mi, s, us)) => {
                let days = time::days_from_civil(i64::from(y), u32::from(m), u32::from(d));
                let secs = (i64::from(h) * 60 + i64::from(mi)) * 60 + i64::from(s);
                Value::Timestamp(days * time::MICROS_PER_DAY + secs * 1_000_000 + i64::from(us))
            }
            (d, other) => return Err(format!("unexpected {other:?} for a {d:?} column")),
        })
    }
}

/// A Silo value as a MySQL parameter. MySQL converts parameter types on the
/// server, so dates go as date values and decimals as their exact text.
pub fn param(v: &Value) -> MyValue {
    match v {
        Value::Null => MyValue::NULL,
        Value::Boolean(b) => MyValue::Int(i64::from(*b)),
        Value::Int(i) => MyValue::Int(*i),
        Value::Float(f) => MyValue::Double(*f),
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => {
            MyValue::Bytes(s.as_bytes().to_vec())
        }
        Value::Bytes(b) => MyValue::Bytes(b.clone()),
        Value::Date(d) => {
            let (y, m, day) = time::civil_from_days(i64::from(*d));
            MyValue::Date(
                u16::try_from(y).unwrap_or(0),
                m as u8,
                day as u8,
                0,
                0,
                0,
                0,
            )
        }
        Value::Timestamp(t) => {
            let days = t.div_euclid(time::MICROS_PER_DAY);
            let rest = t.rem_euclid(time::MICROS_PER_DAY);
            let (y, m, d) = time::civil_from_days(days);
            let secs = rest / 1_000_000;
            MyValue::Date(
                u16::try_from(y).unwrap_or(0),
                m as u8,
                d as u8,
                (secs / 3600) as u8,
                (secs / 60 % 60) as u8,
                (secs % 60) as u8,
                (rest % 1_000_000) as u32,
            )
        }
    }
}
