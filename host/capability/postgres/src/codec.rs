//! Postgres binary wire format <-> Silo values. Decoding reads each cell once,
//! straight from the protocol buffer; nothing goes through text.
use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use silo_types::{ColumnType, Value, time};
use tokio_postgres::types::{FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};

type BoxError = Box<dyn StdError + Sync + Send>;

/// Days between 1970-01-01 and Postgres' epoch, 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds between the Unix epoch and Postgres' epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// How to decode one column, chosen once per statement from its type so the
/// per-cell work is a single branch.
#[derive(Debug, Clone, Copy)]
pub enum Decoder {
    Bool,
    Int2,
    Int4,
    Oid,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Uuid,
    Bytea,
    Date,
    Timestamp,
    Json,
    Jsonb,
}

impl Decoder {
    /// The decoder for a column type, or `None` if Silo cannot carry it.
    pub fn for_type(ty: &Type) -> Option<Decoder> {
        if let Kind::Domain(base) = ty.kind() {
            return Decoder::for_type(base);
        }
        Some(match *ty {
            Type::BOOL => Decoder::Bool,
            Type::INT2 => Decoder::Int2,
            Type::INT4 => Decoder::Int4,
            Type::OID => Decoder::Oid,
            Type::INT8 => Decoder::Int8,
            Type::FLOAT4 => Decoder::Float4,
            Type::FLOAT8 => Decoder::Float8,
            Type::NUMERIC => Decoder::Numeric,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => Decoder::Text,
            Type::UUID => Decoder::Uuid,
            Type::BYTEA => Decoder::Bytea,
            Type::DATE => Decoder::Date,
            Type::TIMESTAMP | Type::TIMESTAMPTZ => Decoder::Timestamp,
            Type::JSON => Decoder::Json,
            Type::JSONB => Decoder::Jsonb,
            _ => return None,
        })
    }

    /// The Silo column type this decoder produces.
    pub fn column_type(self) -> ColumnType {
        match self {
            Decoder::Bool => ColumnType::Boolean,
            Decoder::Int2 | Decoder::Int4 | Decoder::Int8 | Decoder::Oid => ColumnType::Int,
            Decoder::Float4 | Decoder::Float8 => ColumnType::Float,
            Decoder::Numeric => ColumnType::Decimal,
            Decoder::Text | Decoder::Uuid => ColumnType::Text,
            Decoder::Bytea => ColumnType::Bytes,
            Decoder::Date => ColumnType::Date,
            Decoder::Timestamp => ColumnType::Timestamp,
            Decoder::Json | Decoder::Jsonb => ColumnType::Json,
        }
    }

    /// Decodes one cell's binary value (`None` is SQL NULL).
    pub fn decode(self, raw: Option<&[u8]>) -> Result<Value, BoxError> {
        let Some(raw) = raw else {
            return Ok(Value::Null);
        };
        let fixed = |n: usize| -> Result<&[u8], BoxError> {
            (raw.len() == n)
                .then_some(raw)
                .ok_or_else(|| format!("bad {self:?} length {}", raw.len()).into())
        };
        Ok(match self {
            Decoder::Bool => Value::Boolean(fixed(1)?.first() != Some(&0)),
            Decoder::Int2 => Value::Int(i16::from_be_bytes(fixed(2)?.try_into()?).into()),
            Decoder::Int4 => Value::Int(i32::from_be_bytes(fixed(4)?.try_into()?).into()),
            Decoder::Oid => Value::Int(u32::from_be_bytes(fixed(4)?.try_into()?).into()),
            Decoder::Int8 => Value::Int(i64::from_be_bytes(fixed(8)?.try_into()?)),
            Decoder::Float4 => Value::Float(f32::from_be_bytes(fixed(4)?.try_into()?).into()),
            Decoder::Float8 => Value::Float(f64::from_be_bytes(fixed(8)?.try_into()?)),
            Decoder::Numeric => Value::Decimal(numeric_to_string(raw)?),
            Decoder::Text => Value::Text(std::str::from_utf8(raw)?.to_owned()),
            Decoder::Uuid => Value::Text(uuid_text(fixed(16)?)),
            Decoder::Bytea => Value::Bytes(raw.to_vec()),
            Decoder::Date => {
                Value::Date(i32::from_be_bytes(fixed(4)?.try_into()?).saturating_add(PG_EPOCH_DAYS))
            }
            Decoder::Timestamp => Value::Timestamp(
                i64::from_be_bytes(fixed(8)?.try_into()?).saturating_add(PG_EPOCH_MICROS),
            ),
            Decoder::Json => Value::Json(std::str::from_utf8(raw)?.to_owned()),
            Decoder::Jsonb => match raw.split_first() {
                Some((1, doc)) => Value::Json(std::str::from_utf8(doc)?.to_owned()),
                _ => return Err("unsupported jsonb version".into()),
            },
        })
    }
}

/// A cell's raw bytes, borrowed from the protocol buffer, for its column's
/// [`Decoder`].
pub struct Raw<'a>(pub Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn uuid_text(b: &[u8]) -> String {
    let h = |r: std::ops::Range<usize>| b.get(r).map(hex_lower).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A value bound to a statement parameter, converted to the type Postgres
/// inferred for that placeholder (the statement is prepared first).
#[derive(Debug)]
pub struct Param<'a>(pub &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        if let Kind::Domain(base) = ty.kind() {
            return self.to_sql(base, out);
        }
        let mismatch = || -> BoxError {
            format!("cannot bind {} to a parameter of type {ty}", kind(self.0)).into()
        };
        match (self.0, ty) {
            (Value::Null, _) => return Ok(IsNull::Yes),
            (Value::Boolean(b), &Type::BOOL) => out.put_u8(u8::from(*b)),
            (Value::Int(i), &Type::INT2) => out.put_i16(i16::try_from(*i)?),
            (Value::Int(i), &Type::INT4) => out.put_i32(i32::try_from(*i)?),
            (Value::Int(i), &Type::INT8) => out.put_i64(*i),
            #[expect(
                clippy::cast_precision_loss,
                reason = "an int compared with a float column is a float"
            )]
            (Value::Int(i), &Type::FLOAT8) => out.put_f64(*i as f64),
            (Value::Int(i), &Type::NUMERIC) => string_to_numeric(&i.to_string(), out)?,
            (Value::Float(f), &Type::FLOAT8) => out.put_f64(*f),
            #[expect(
                clippy::cast_possible_truncation,
                reason = "binding to a float4 column"
            )]
            (Value::Float(f), &Type::FLOAT4) => out.put_f32(*f as f32),
            (Value::Float(f), &Type::NUMERIC) if f.is_finite() => {
                string_to_numeric(&f.to_string(), out)?
            }
            (Value::Decimal(d), &Type::NUMERIC) => string_to_numeric(d, out)?,
            (Value::Decimal(d), &Type::FLOAT8) => out.put_f64(d.parse()?),
            (
                Value::Text(s),
                &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME | &Type::UNKNOWN,
            ) => {
                out.put_slice(s.as_bytes());
            }
            (Value::Text(s), &Type::DATE) => {
                put_date(time::parse_date(s).ok_or_else(mismatch)?, out)
            }
            (Value::Text(s), &Type::TIMESTAMP | &Type::TIMESTAMPTZ) => {
                put_timestamp(time::parse_timestamp(s).ok_or_else(mismatch)?, out);
            }
            (Value::Text(s), &Type::UUID) => out.put_slice(&parse_uuid(s).ok_or_else(mismatch)?),
            (Value::Bytes(b), &Type::BYTEA) => out.put_slice(b),
            (Value::Date(d), &Type::DATE) => put_date(*d, out),
            (Value::Date(d), &Type::TIMESTAMP | &Type::TIMESTAMPTZ) => {
                put_timestamp(i64::from(*d) * time::MICROS_PER_DAY, out);
            }
            (Value::Timestamp(t), &Type::TIMESTAMP | &Type::TIMESTAMPTZ) => put_timestamp(*t, out),
            (Value::Json(j), &Type::JSON) => out.put_slice(j.as_bytes()),
            (Value::Json(j), &Type::JSONB) => {
                out.put_u8(1);
                out.put_slice(j.as_bytes());
            }
            _ => return Err(mismatch()),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Boolean(_) => "a boolean",
        Value::Int(_) => "an int",
        Value::Float(_) => "a float",
        Value::Decimal(_) => "a decimal",
        Value::Text(_) => "text",
        Value::Bytes(_) => "bytes",
        Value::Date(_) => "a date",
        Value::Timestamp(_) => "a timestamp",
        Value::Json(_) => "json",
    }
}

fn put_date(days: i32, out: &mut BytesMut) {
    out.put_i32(days.saturating_sub(PG_EPOCH_DAYS));
}

fn put_timestamp(micros: i64, out: &mut BytesMut) {
    out.put_i64(micros.saturating_sub(PG_EPOCH_MICROS));
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let bytes = hex::decode(hex).ok()?;
    bytes.try_into().ok()
}

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;

/// Postgres `numeric` binary (base-10000 digits) to decimal text.
fn numeric_to_string(raw: &[u8]) -> Result<String, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    if sign == NUMERIC_NAN {
        return Ok("NaN".into());
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<_, _>>()?;
    let digit = |pos: i32| -> u16 {
        usize::try_from(pos)
            .ok()
            .and_then(|p| digits.get(p))
            .copied()
            .unwrap_or(0)
    };
    let mut int = String::new();
    for pos in 0..=weight {
        let d = digit(pos);
        if int.is_empty() {
            if d != 0 {
                int = d.to_string();
            }
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    let mut pos = weight + 1;
    while frac.len() < dscale {
        frac.push_str(&format!("{:04}", digit(pos)));
        pos += 1;
    }
    frac.truncate(dscale);
    let neg = if sign == NUMERIC_NEG { "-" } else { "" };
    Ok(if frac.is_empty() {
        format!("{neg}{int}")
    } else {
        format!("{neg}{int}.{frac}")
    })
}

/// Decimal text to Postgres `numeric` binary, keeping the text's scale.
fn string_to_numeric(s: &str, out: &mut BytesMut) -> Result<(), BoxError> {
    let s = s.trim();
    let bad = || -> BoxError { format!("`{s}` is not a decimal number").into() };
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let int = int.trim_start_matches('0');
    // Left-pad the integer part and right-pad the fraction to whole base-10000 digits.
    let int_pad = format!("{}{int}", "0".repeat((4 - int.len() % 4) % 4));
    let frac_pad = format!("{frac}{}", "0".repeat((4 - frac.len() % 4) % 4));
    let mut groups: Vec<u16> = Vec::new();
    for chunk in int_pad
        .as_bytes()
        .chunks(4)
        .chain(frac_pad.as_bytes().chunks(4))
    {
        groups.push(std::str::from_utf8(chunk)?.parse()?);
    }
    let mut weight = i32::try_from(int_pad.len() / 4)? - 1;
    let lead = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..lead);
    weight -= i32::try_from(lead)?;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.put_u16(u16::try_from(groups.len())?);
    out.put_i16(i16::try_from(weight)?);
    out.put_u16(if neg && !groups.is_empty() {
        NUMERIC_NEG
    } else {
        0
    });
    out.put_u16(u16::try_from(frac.len())?);
    for g in groups {
        out.put_u16(g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_round_trips() {
        for s in [
            "0",
            "1",
            "-1",
            "12345.6789",
            "0.0001",
            "-0.5",
            "100000000",
            "3.14159265358979",
            "10000.10",
        ] {
            let mut buf = BytesMut::new();
            string_to_numeric(s, &mut buf).unwrap();
            assert_eq!(numeric_to_string(&buf).unwrap(), s, "{s}");
        }
        let mut buf = BytesMut::new();
        assert!(string_to_numeric("1e5", &mut buf).is_err());
    }
}
