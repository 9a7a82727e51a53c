//! The row filter as a MongoDB query document (canonical Extended JSON), with
//! the same meaning [`crate::compare`] gives it: the connector pushes it down,
//! the host puts it first in every pipeline, and the host's re-check agrees.
//!
//! Where MongoDB's query semantics differ from SQL's, the translation narrows
//! to SQL's: `<>` and `NOT IN` never match a null or missing field, and no
//! predicate matches an array field (MongoDB would match any element).
use serde_json::{Value as Json, json};

use crate::{Op, Predicate, RowFilter, Value};

/// Matches no document: every document has an `_id`, and `$in: []` holds for none.
pub fn match_nothing() -> Json {
    json!({ "_id": { "$in": [] } })
}

/// Whether `name` can be a top-level field in a query: not empty, no `$`
/// prefix (an operator), no `.` (a path), no NUL.
pub fn is_plain_field(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('$') && !name.contains(['.', '\0'])
}

impl RowFilter {
    /// This filter as a MongoDB query document (for `$match` or `find`).
    pub fn to_mongo_query(&self) -> Result<Json, String> {
        let any = match self {
            RowFilter::AllRows => return Ok(json!({})),
            RowFilter::NoRows => return Ok(match_nothing()),
            RowFilter::AnyOf(any) if any.is_empty() => return Ok(match_nothing()),
            RowFilter::AnyOf(any) => any,
        };
        let mut branches = Vec::with_capacity(any.len());
        for conjunction in any {
            let mut all = conjunction
                .iter()
                .map(predicate)
                .collect::<Result<Vec<_>, _>>()?;
            branches.push(match all.len() {
                1 => all.remove(0),
                _ => json!({ "$and": all }),
            });
        }
        Ok(match branches.len() {
            1 => branches.remove(0),
            _ => json!({ "$or": branches }),
        })
    }
}

impl RowFilter {
    /// This filter as an aggregation *expression* that holds (at least) for
    /// every document [`RowFilter::to_mongo_query`] admits: the host's
    /// document fence keeps a field's value only where it holds. It never
    /// fails on a value (comparisons and `$type` only), is never a constant
    /// the server could fold away, and quotes every value with `$literal`, so
    /// a value that looks like `$field` stays a value.
    pub fn to_mongo_guard(&self) -> Result<Json, String> {
        let any = match self {
            // True for every document, but not a constant.
            RowFilter::AllRows => return Ok(json!({ "$ne": [{ "$type": "$$ROOT" }, "missing"] })),
            RowFilter::NoRows => return Ok(json!({ "$eq": [{ "$type": "$$ROOT" }, "missing"] })),
            RowFilter::AnyOf(any) => any,
        };
        let mut branches = Vec::with_capacity(any.len());
        for conjunction in any {
            let all = conjunction
                .iter()
                .map(guard)
                .collect::<Result<Vec<_>, _>>()?;
            branches.push(json!({ "$and": all }));
        }
        Ok(json!({ "$or": branches }))
    }
}

/// One predicate as an aggregation expression, at least as wide as its query
/// clause (the query narrows types and arrays; the guard need not).
fn guard(p: &Predicate) -> Result<Json, String> {
    if !is_plain_field(&p.column) {
        return Err(format!(
            "`{}` cannot be filtered in a document datasource: use a top-level field name",
            p.column
        ));
    }
    let field = format!("${}", p.column);
    let literal = |v: &Value| -> Result<Json, String> {
        Ok(match operand(v, p.op)? {
            Some(j) => json!({ "$literal": j }),
            None => Json::Null,
        })
    };
    let first = || p.values.first().map_or(Ok(Json::Null), literal);
    let list = || -> Result<Json, String> {
        Ok(Json::Array(
            p.values.iter().map(literal).collect::<Result<_, _>>()?,
        ))
    };
    let absent = json!({ "$in": [{ "$type": &field }, ["null", "missing"]] });
    Ok(match p.op {
        Op::Eq => json!({ "$eq": [&field, first()?] }),
        Op::Ne => json!({ "$ne": [&field, first()?] }),
        Op::Lt => json!({ "$lt": [&field, first()?] }),
        Op::Le => json!({ "$lte": [&field, first()?] }),
        Op::Gt => json!({ "$gt": [&field, first()?] }),
        Op::Ge => json!({ "$gte": [&field, first()?] }),
        Op::In => json!({ "$in": [&field, list()?] }),
        Op::NotIn => json!({ "$not": [{ "$in": [&field, list()?] }] }),
        Op::IsNull => absent,
        Op::NotNull => json!({ "$not": [absent] }),
    })
}

/// One predicate as a query clause on its field: the comparison, and the
/// guard that keeps arrays out (both operators on the one field, ANDed).
fn predicate(p: &Predicate) -> Result<Json, String> {
    if !is_plain_field(&p.column) {
        return Err(format!(
            "`{}` cannot be filtered in a document datasource: use a top-level field name",
            p.column
        ));
    }
    let nothing = || Ok(match_nothing());
    // SQL: a comparison with NULL is unknown, and so is `NOT IN` over a list
    // holding NULL; neither admits a row.
    let has_null = p.values.iter().any(|v| matches!(v, Value::Null));
    if has_null && !matches!(p.op, Op::In | Op::IsNull | Op::NotNull) {
        return nothing();
    }
    let one = |op: Op| -> Result<Option<Json>, String> {
        let v = p
            .values
            .first()
            .ok_or_else(|| format!("predicate on `{}` has no value", p.column))?;
        operand(v, op)
    };
    // Operands no stored value can equal (NULL, sub-millisecond times) drop out.
    let many = |op: Op| -> Result<Vec<Json>, String> {
        let mut out = Vec::with_capacity(p.values.len() + 1);
        for v in &p.values {
            if let Some(j) = operand(v, op)? {
                out.push(j);
            }
        }
        Ok(out)
    };
    let cond = match p.op {
        Op::Eq => match one(Op::Eq)? {
            Some(v) => json!({ "$eq": v }),
            None => return nothing(),
        },
        Op::Ne => match one(Op::Ne)? {
            Some(v) => json!({ "$nin": [v, Json::Null] }),
            None => json!({ "$ne": Json::Null }),
        },
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let Some(v) = one(p.op)? else {
                return nothing();
            };
            let name = match p.op {
                Op::Lt => "$lt",
                Op::Le => "$lte",
                Op::Gt => "$gt",
                _ => "$gte",
            };
            let mut range = serde_json::Map::new();
            range.insert(name.to_owned(), v);
            Json::Object(range)
        }
        Op::In => json!({ "$in": many(Op::In)? }),
        Op::NotIn => {
            let mut vs = many(Op::NotIn)?;
            vs.push(Json::Null);
            json!({ "$nin": vs })
        }
        Op::IsNull => json!({ "$eq": Json::Null }),
        Op::NotNull => json!({ "$ne": Json::Null }),
    };
    let mut cond = cond;
    if let Some(ops) = cond.as_object_mut() {
        ops.insert("$not".into(), json!({ "$type": "array" }));
    }
    let mut clause = serde_json::Map::new();
    clause.insert(p.column.clone(), cond);
    Ok(Json::Object(clause))
}

/// A value as canonical Extended JSON for comparison `op`. Timestamps are
/// rounded to MongoDB's milliseconds in the direction that keeps the
/// comparison exact. `None`: no stored value can equal it (NULL, or a time
/// finer than a millisecond under `=`/`IN`).
fn operand(v: &Value, op: Op) -> Result<Option<Json>, String> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::Boolean(b) => json!(b),
        Value::Int(i) => json!({ "$numberLong": i.to_string() }),
        Value::Float(f) if f.is_finite() => json!({ "$numberDouble": format!("{f:?}") }),
        Value::Float(_) => return Err("a filter value is not a finite number".into()),
        Value::Decimal(d) => json!({ "$numberDecimal": d }),
        Value::Text(s) => json!(s),
        Value::Date(d) => date_millis(i64::from(*d) * crate::time::MICROS_PER_DAY / 1000),
        Value::Timestamp(us) => {
            let (floor, exact) = (us.div_euclid(1000), us.rem_euclid(1000) == 0);
            let ms = match op {
                // ms*1000 >= us  <=>  ms >= ceil(us/1000);  ms*1000 < us  <=>  ms < ceil(us/1000)
                Op::Ge | Op::Lt => floor + i64::from(!exact),
                Op::Gt | Op::Le => floor,
                _ if exact => floor,
                _ => return Ok(None),
            };
            date_millis(ms)
        }
        Value::Bytes(_) | Value::Json(_) => {
            return Err("byte and JSON values cannot be compared in a document filter".into());
        }
    }))
}

fn date_millis(ms: i64) -> Json {
    json!({ "$date": { "$numberLong": ms.to_string() } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(column: &str, op: Op, value: Value) -> Predicate {
        Predicate {
            column: column.into(),
            op,
            values: vec![value],
        }
    }

    fn filter(column: &str, op: Op, values: Vec<Value>) -> RowFilter {
        RowFilter::AnyOf(vec![vec![Predicate {
            column: column.into(),
            op,
            values,
        }]])
    }

    #[test]
    fn operator_looking_text_stays_a_string() {
        let f = filter(
            "tenant",
            Op::Eq,
            vec![Value::Text(r#"{"$ne": null}"#.into())],
        );
        let q = f.to_mongo_query().unwrap();
        assert_eq!(
            q,
            json!({"tenant": {"$eq": "{\"$ne\": null}", "$not": {"$type": "array"}}})
        );
        let two = RowFilter::AnyOf(vec![
            vec![
                pred("a", Op::Eq, Value::Int(1)),
                pred("b", Op::Lt, Value::Int(2)),
            ],
            vec![pred("c", Op::Eq, Value::Int(3))],
        ]);
        let q = two.to_mongo_query().unwrap();
        assert_eq!(q["$or"][0]["$and"][1]["b"]["$lt"]["$numberLong"], "2");
        assert_eq!(q["$or"][1]["c"]["$eq"]["$numberLong"], "3");
    }

    #[test]
    fn ne_and_not_in_exclude_null_like_sql() {
        let q = filter("t", Op::Ne, vec![Value::Int(1)])
            .to_mongo_query()
            .unwrap();
        assert_eq!(q["t"]["$nin"][1], Json::Null);
        let q = filter("t", Op::NotIn, vec![Value::Int(1), Value::Int(2)])
            .to_mongo_query()
            .unwrap();
        assert_eq!(q["t"]["$nin"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn empty_and_none_match_nothing_and_bad_fields_are_refused() {
        assert_eq!(
            RowFilter::AnyOf(vec![]).to_mongo_query().unwrap(),
            match_nothing()
        );
        assert_eq!(RowFilter::NoRows.to_mongo_query().unwrap(), match_nothing());
        assert_eq!(RowFilter::AllRows.to_mongo_query().unwrap(), json!({}));
        for bad in ["$where", "a.b", ""] {
            assert!(
                filter(bad, Op::IsNull, vec![]).to_mongo_query().is_err(),
                "{bad}"
            );
        }
        assert!(
            filter("b", Op::Eq, vec![Value::Bytes(vec![1])])
                .to_mongo_query()
                .is_err()
        );
    }

    #[test]
    fn null_operands_admit_nothing_like_sql() {
        for op in [Op::Eq, Op::Ne, Op::Lt, Op::NotIn] {
            let q = filter("t", op, vec![Value::Null]).to_mongo_query().unwrap();
            assert_eq!(q, match_nothing(), "{op:?}");
        }
        let q = filter("t", Op::In, vec![Value::Null, Value::Int(1)])
            .to_mongo_query()
            .unwrap();
        assert_eq!(q["t"]["$in"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn timestamps_round_toward_an_exact_comparison() {
        let ms = |q: &Json, op: &str| q["t"][op]["$date"]["$numberLong"].clone();
        let ts = Value::Timestamp(1_500);
        assert_eq!(
            ms(
                &filter("t", Op::Ge, vec![ts.clone()])
                    .to_mongo_query()
                    .unwrap(),
                "$gte"
            ),
            "2"
        );
        assert_eq!(
            ms(
                &filter("t", Op::Gt, vec![ts.clone()])
                    .to_mongo_query()
                    .unwrap(),
                "$gt"
            ),
            "1"
        );
        assert_eq!(
            ms(
                &filter("t", Op::Lt, vec![ts.clone()])
                    .to_mongo_query()
                    .unwrap(),
                "$lt"
            ),
            "2"
        );
        assert_eq!(
            ms(
                &filter("t", Op::Le, vec![ts.clone()])
                    .to_mongo_query()
                    .unwrap(),
                "$lte"
            ),
            "1"
        );
        let eq = filter("t", Op::Eq, vec![ts]).to_mongo_query().unwrap();
        assert_eq!(eq, match_nothing());
    }
}
