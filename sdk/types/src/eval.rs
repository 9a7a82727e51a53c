//! The meaning of a filter, evaluated on one row: what the host re-verifies and
//! what a connector without a query language (files, HTTP) applies itself.
use std::cmp::Ordering;

use crate::{Op, RowFilter, Value, time};

/// A filter names a column the rows do not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownColumn(pub String);

impl std::fmt::Display for UnknownColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "filter column `{}` is not among the row's columns",
            self.0
        )
    }
}

impl std::error::Error for UnknownColumn {}

/// A [`RowFilter`] resolved against a row layout, so checking a row is index
/// lookups and comparisons only (it runs once per row on the fetch path).
#[derive(Debug, Clone)]
pub enum CompiledFilter {
    /// Every row passes.
    AllRows,
    /// No row passes.
    NoRows,
    /// Rows passing every predicate of at least one conjunction.
    AnyOf(Vec<Vec<(usize, Op, Vec<Value>)>>),
}

impl RowFilter {
    /// Resolves column names to positions in rows laid out as `columns`.
    pub fn compile<S: AsRef<str>>(&self, columns: &[S]) -> Result<CompiledFilter, UnknownColumn> {
        Ok(match self {
            RowFilter::AllRows => CompiledFilter::AllRows,
            RowFilter::NoRows => CompiledFilter::NoRows,
            RowFilter::AnyOf(any) => {
                let mut out = Vec::with_capacity(any.len());
                for conj in any {
                    let mut c = Vec::with_capacity(conj.len());
                    for p in conj {
                        let idx = columns
                            .iter()
                            .position(|n| n.as_ref() == p.column)
                            .ok_or_else(|| UnknownColumn(p.column.clone()))?;
                        c.push((idx, p.op, p.values.clone()));
                    }
                    out.push(c);
                }
                CompiledFilter::AnyOf(out)
            }
        })
    }
}

impl CompiledFilter {
    /// Whether `row` is admitted. A row too short for the filter is not.
    pub fn matches(&self, row: &[Value]) -> bool {
        match self {
            CompiledFilter::AllRows => true,
            CompiledFilter::NoRows => false,
            CompiledFilter::AnyOf(any) => any.iter().any(|conj| {
                conj.iter().all(|(idx, op, values)| {
                    row.get(*idx)
                        .is_some_and(|cell| predicate(cell, *op, values))
                })
            }),
        }
    }
}

/// SQL three-valued logic collapsed to "admitted or not": unknown is not.
fn predicate(cell: &Value, op: Op, values: &[Value]) -> bool {
    let first = || values.first().and_then(|v| compare(cell, v));
    match op {
        Op::IsNull => matches!(cell, Value::Null),
        Op::NotNull => !matches!(cell, Value::Null),
        Op::Eq => first() == Some(Ordering::Equal),
        Op::Ne => matches!(first(), Some(o) if o != Ordering::Equal),
        Op::Lt => first() == Some(Ordering::Less),
        Op::Le => matches!(first(), Some(Ordering::Less | Ordering::Equal)),
        Op::Gt => first() == Some(Ordering::Greater),
        Op::Ge => matches!(first(), Some(Ordering::Greater | Ordering::Equal)),
        Op::In => values
            .iter()
            .any(|v| compare(cell, v) == Some(Ordering::Equal)),
        Op::NotIn => values
            .iter()
            .all(|v| matches!(compare(cell, v), Some(o) if o != Ordering::Equal)),
    }
}

/// Orders two values the way SQL would, or `None` where SQL would say unknown
/// (a null on either side) or the types cannot be compared.
///
/// Numbers compare across int, float and decimal; text compares with a date or
/// timestamp by parsing it, as a database casts a literal. Text orders by bytes,
/// which equals any deterministic collation for `=` but may differ from the
/// database's collation for `<`/`>`: such a mismatch fails a fetch, it never
/// admits a row.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    use Value::*;
    match (a, b) {
        (Null, _) | (_, Null) => None,
        (Boolean(x), Boolean(y)) => Some(x.cmp(y)),
        (Int(x), Int(y)) => Some(x.cmp(y)),
        (Float(x), Float(y)) => x.partial_cmp(y),
        #[expect(
            clippy::cast_precision_loss,
            reason = "SQL compares int with float as float"
        )]
        (Int(x), Float(y)) => (*x as f64).partial_cmp(y),
        #[expect(
            clippy::cast_precision_loss,
            reason = "SQL compares int with float as float"
        )]
        (Float(x), Int(y)) => x.partial_cmp(&(*y as f64)),
        (Decimal(x), Decimal(y)) => cmp_decimal(x, y),
        (Int(x), Decimal(y)) => cmp_decimal(&x.to_string(), y),
        (Decimal(x), Int(y)) => cmp_decimal(x, &y.to_string()),
        (Float(x), Decimal(y)) => x.partial_cmp(&y.parse::<f64>().ok()?),
        (Decimal(x), Float(y)) => x.parse::<f64>().ok()?.partial_cmp(y),
        (Text(x), Text(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Bytes(x), Bytes(y)) => Some(x.cmp(y)),
        (Json(x), Json(y)) => (x == y).then_some(Ordering::Equal),
        (Date(_) | Timestamp(_), _) | (_, Date(_) | Timestamp(_)) => {
            Some(as_micros(a)?.cmp(&as_micros(b)?))
        }
        _ => None,
    }
}

fn as_micros(v: &Value) -> Option<i64> {
    match v {
        Value::Date(d) => Some(i64::from(*d) * time::MICROS_PER_DAY),
        Value::Timestamp(t) => Some(*t),
        Value::Text(s) => time::parse_timestamp(s),
        _ => None,
    }
}

/// Exact comparison of two decimals written as text (`-12.50`, `3`, `+0.1`).
fn cmp_decimal(a: &str, b: &str) -> Option<Ordering> {
    let (na, ia, fa) = split_decimal(a)?;
    let (nb, ib, fb) = split_decimal(b)?;
    let zero_a = ia.is_empty() && fa.is_empty();
    let zero_b = ib.is_empty() && fb.is_empty();
    let neg_a = na && !zero_a;
    let neg_b = nb && !zero_b;
    let magnitude = ia
        .len()
        .cmp(&ib.len())
        .then_with(|| ia.cmp(ib))
        .then_with(|| {
            let width = fa.len().max(fb.len());
            let pad = |f: &str| format!("{f:0<width$}");
            pad(fa).cmp(&pad(fb))
        });
    Some(match (neg_a, neg_b) {
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
    })
}

/// Sign, integer digits without leading zeros, fraction digits without trailing zeros.
fn split_decimal(s: &str) -> Option<(bool, &str, &str)> {
    let s = s.trim();
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    Some((neg, int.trim_start_matches('0'), frac.trim_end_matches('0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Predicate;

    fn filter(column: &str, op: Op, values: Vec<Value>) -> RowFilter {
        RowFilter::AnyOf(vec![vec![Predicate {
            column: column.into(),
            op,
            values,
        }]])
    }

    #[test]
    fn decimals_compare_exactly() {
        assert_eq!(cmp_decimal("1.50", "1.5"), Some(Ordering::Equal));
        assert_eq!(cmp_decimal("-2", "1"), Some(Ordering::Less));
        assert_eq!(cmp_decimal("-2.1", "-2.01"), Some(Ordering::Less));
        assert_eq!(cmp_decimal("10", "9.99"), Some(Ordering::Greater));
        assert_eq!(cmp_decimal("-0", "0.0"), Some(Ordering::Equal));
        assert_eq!(cmp_decimal("abc", "1"), None);
    }

    #[test]
    fn nulls_are_never_admitted_by_comparisons() {
        let row = [Value::Null];
        for op in [Op::Eq, Op::Ne, Op::Lt, Op::Ge, Op::NotIn] {
            let f = filter("c", op, vec![Value::Int(1)])
                .compile(&["c"])
                .unwrap();
            assert!(!f.matches(&row), "{op:?}");
        }
        let f = filter("c", Op::IsNull, vec![]).compile(&["c"]).unwrap();
        assert!(f.matches(&row));
    }

    #[test]
    fn not_in_with_null_operand_admits_nothing() {
        let f = filter("c", Op::NotIn, vec![Value::Int(1), Value::Null])
            .compile(&["c"])
            .unwrap();
        assert!(!f.matches(&[Value::Int(2)]));
    }

    #[test]
    fn union_of_conjunctions() {
        let p = |c: &str, v: &str| Predicate {
            column: c.into(),
            op: Op::Eq,
            values: vec![Value::Text(v.into())],
        };
        let f = RowFilter::AnyOf(vec![vec![p("t", "a"), p("r", "eu")], vec![p("t", "b")]]);
        let f = f.compile(&["t", "r"]).unwrap();
        let row = |t: &str, r: &str| [Value::Text(t.into()), Value::Text(r.into())];
        assert!(f.matches(&row("a", "eu")));
        assert!(!f.matches(&row("a", "us")));
        assert!(f.matches(&row("b", "us")));
        assert!(!f.matches(&row("c", "eu")));
    }

    #[test]
    fn unknown_column_is_an_error() {
        let f = filter("tenant", Op::Eq, vec![Value::Int(1)]);
        assert_eq!(
            f.compile(&["id"]).unwrap_err(),
            UnknownColumn("tenant".into())
        );
    }

    #[test]
    fn dates_compare_with_text_literals() {
        let d = Value::Date(time::parse_date("2024-03-01").unwrap());
        assert_eq!(
            compare(&d, &Value::Text("2024-03-01".into())),
            Some(Ordering::Equal)
        );
        assert_eq!(
            compare(&d, &Value::Text("2024-02-29".into())),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare(&Value::Int(3), &Value::Float(3.0)),
            Some(Ordering::Equal)
        );
        assert_eq!(compare(&Value::Int(3), &Value::Text("3".into())), None);
    }
}
