//! A filter as a parameterised SQL `WHERE` condition: the connector's pushdown and
//! the host's filtered replacement of a governed table are both this text.
use crate::{Op, RowFilter, Value};

/// Placeholder and identifier-quoting style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlDialect {
    /// `$1, $2, …` and `"ident"`.
    Postgres,
    /// `?` and `` `ident` ``.
    MySql,
}

/// A condition and the values bound to its placeholders, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct WhereClause {
    /// SQL text, always parenthesised so it can be ANDed with anything.
    pub sql: String,
    /// Bind values; filter values are never spliced into the text.
    pub params: Vec<Value>,
}

/// Quotes an identifier, doubling the quote character inside it.
pub fn quote_ident(dialect: SqlDialect, ident: &str) -> String {
    let q = match dialect {
        SqlDialect::Postgres => '"',
        SqlDialect::MySql => '`',
    };
    let mut out = String::with_capacity(ident.len() + 2);
    out.push(q);
    for c in ident.chars() {
        if c == q {
            out.push(q);
        }
        out.push(c);
    }
    out.push(q);
    out
}

impl RowFilter {
    /// Renders the filter; Postgres placeholders are numbered from `first_param`
    /// so the clause can follow parameters already in a statement.
    pub fn to_sql_where(&self, dialect: SqlDialect, first_param: usize) -> WhereClause {
        let mut params = Vec::new();
        let sql = match self {
            RowFilter::AllRows => "(TRUE)".to_owned(),
            RowFilter::NoRows => "(FALSE)".to_owned(),
            RowFilter::AnyOf(any) if any.is_empty() => "(FALSE)".to_owned(),
            RowFilter::AnyOf(any) => {
                let mut placeholder = |v: &Value| {
                    params.push(v.clone());
                    match dialect {
                        SqlDialect::Postgres => format!("${}", first_param + params.len() - 1),
                        SqlDialect::MySql => "?".to_owned(),
                    }
                };
                let disjuncts: Vec<String> = any
                    .iter()
                    .map(|conj| {
                        if conj.is_empty() {
                            return "TRUE".to_owned();
                        }
                        let preds: Vec<String> = conj
                            .iter()
                            .map(|p| {
                                let col = quote_ident(dialect, &p.column);
                                match p.op {
                                    Op::IsNull | Op::NotNull => format!("{col} {}", p.op.symbol()),
                                    Op::In | Op::NotIn => {
                                        let list: Vec<String> =
                                            p.values.iter().map(&mut placeholder).collect();
                                        format!("{col} {} ({})", p.op.symbol(), list.join(", "))
                                    }
                                    op => {
                                        let v = p.values.first().unwrap_or(&Value::Null);
                                        format!("{col} {} {}", op.symbol(), placeholder(v))
                                    }
                                }
                            })
                            .collect();
                        format!("({})", preds.join(" AND "))
                    })
                    .collect();
                format!("({})", disjuncts.join(" OR "))
            }
        };
        WhereClause { sql, params }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Predicate;

    #[test]
    fn renders_union_with_numbered_placeholders() {
        let f = RowFilter::AnyOf(vec![
            vec![
                Predicate {
                    column: "tenant".into(),
                    op: Op::Eq,
                    values: vec![Value::Text("a".into())],
                },
                Predicate {
                    column: "deleted".into(),
                    op: Op::IsNull,
                    values: vec![],
                },
            ],
            vec![Predicate {
                column: "re\"gion".into(),
                op: Op::In,
                values: vec![Value::Text("eu".into()), Value::Text("us".into())],
            }],
        ]);
        let w = f.to_sql_where(SqlDialect::Postgres, 3);
        assert_eq!(
            w.sql,
            r#"(("tenant" = $3 AND "deleted" IS NULL) OR ("re""gion" IN ($4, $5)))"#
        );
        assert_eq!(w.params.len(), 3);
        let w = f.to_sql_where(SqlDialect::MySql, 1);
        assert_eq!(
            w.sql,
            "((`tenant` = ? AND `deleted` IS NULL) OR (`re\"gion` IN (?, ?)))"
        );
    }

    #[test]
    fn empty_union_admits_nothing() {
        assert_eq!(
            RowFilter::AnyOf(vec![])
                .to_sql_where(SqlDialect::Postgres, 1)
                .sql,
            "(FALSE)"
        );
        assert_eq!(
            RowFilter::NoRows.to_sql_where(SqlDialect::Postgres, 1).sql,
            "(FALSE)"
        );
    }
}
