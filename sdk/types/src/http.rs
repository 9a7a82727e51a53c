//! What a row filter says about an HTTP API's query parameters. The host binds
//! parameters to filter columns and the `http-json` connector fills them in;
//! both read the filter through this one module, so a connector that follows
//! it never sends a request the host refuses.
use crate::{Op, RowFilter, Value, time};

/// The values a filter allows for one column, as far as a query parameter
/// can express them.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// The filter admits every row: the column is not constrained.
    Any,
    /// Every admitted row has one of these values (none: no row at all).
    Values(Vec<Value>),
    /// Some admitted rows are not pinned to listed values of this column
    /// (a branch of the filter says nothing about it, or only ranges).
    Unbound,
}

impl RowFilter {
    /// The values `column` is pinned to by `=` or `IN` in every conjunction.
    /// Within a conjunction several pins intersect; across conjunctions the
    /// values add up, each listed once.
    pub fn bound_values(&self, column: &str) -> Bound {
        let any = match self {
            RowFilter::AllRows => return Bound::Any,
            RowFilter::NoRows => return Bound::Values(Vec::new()),
            RowFilter::AnyOf(any) => any,
        };
        let mut out: Vec<Value> = Vec::new();
        for conjunction in any {
            let mut pins = conjunction
                .iter()
                .filter(|p| p.column == column && matches!(p.op, Op::Eq | Op::In));
            let Some(first) = pins.next() else {
                return Bound::Unbound;
            };
            let mut values = first.values.clone();
            for p in pins {
                values.retain(|v| p.values.contains(v));
            }
            for v in values {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        Bound::Values(out)
    }
}

/// A value as a query parameter's text: numbers in decimal, dates as
/// `YYYY-MM-DD`, timestamps as RFC 3339 UTC. Null and bytes have no text form.
pub fn param_text(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null | Value::Bytes(_) => return None,
        Value::Boolean(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => s.clone(),
        Value::Date(d) => time::format_date(*d),
        Value::Timestamp(t) => time::format_timestamp(*t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Predicate;

    fn pin(column: &str, op: Op, values: &[&str]) -> Predicate {
        Predicate {
            column: column.into(),
            op,
            values: values.iter().map(|v| Value::Text((*v).into())).collect(),
        }
    }

    fn texts(b: Bound) -> Vec<String> {
        match b {
            Bound::Values(v) => v.iter().filter_map(param_text).collect(),
            other => panic!("not values: {other:?}"),
        }
    }

    #[test]
    fn pins_add_up_across_branches_and_intersect_within() {
        let f = RowFilter::AnyOf(vec![
            vec![
                pin("tenant", Op::Eq, &["acme"]),
                pin("region", Op::Eq, &["eu"]),
            ],
            vec![
                pin("tenant", Op::In, &["globex", "initech", "acme"]),
                pin("tenant", Op::In, &["initech", "globex"]),
            ],
        ]);
        assert_eq!(
            texts(f.bound_values("tenant")),
            ["acme", "globex", "initech"]
        );
        assert_eq!(f.bound_values("region"), Bound::Unbound);
    }

    #[test]
    fn unpinned_branches_ranges_and_the_trivial_filters() {
        let f = RowFilter::AnyOf(vec![
            vec![pin("tenant", Op::Eq, &["acme"])],
            vec![pin("region", Op::Eq, &["eu"])],
        ]);
        assert_eq!(f.bound_values("tenant"), Bound::Unbound);
        let range = RowFilter::AnyOf(vec![vec![pin("tenant", Op::Ge, &["a"])]]);
        assert_eq!(range.bound_values("tenant"), Bound::Unbound);
        assert_eq!(RowFilter::AllRows.bound_values("tenant"), Bound::Any);
        assert_eq!(
            RowFilter::NoRows.bound_values("tenant"),
            Bound::Values(Vec::new())
        );
        assert_eq!(
            RowFilter::AnyOf(Vec::new()).bound_values("tenant"),
            Bound::Values(Vec::new())
        );
    }

    #[test]
    fn parameter_text() {
        assert_eq!(param_text(&Value::Int(-4)).as_deref(), Some("-4"));
        assert_eq!(param_text(&Value::Date(0)).as_deref(), Some("1970-01-01"));
        assert_eq!(param_text(&Value::Null), None);
    }
}
