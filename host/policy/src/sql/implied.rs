//! Connector conditions that the fence already guarantees (Postgres).
//!
//! A connector is handed the user's row filter and usually repeats it in its
//! own `WHERE` (the SDK's `select` does). The planner cannot tell that a
//! condition on the fence's output repeats the fence's own: it multiplies the
//! two selectivities, expects a fraction of the rows the fence returns, and
//! plans the fence for reading all of them (for `LIMIT 10`, a bitmap scan and
//! sort of every row of the tenant instead of a scan that stops after ten).
//!
//! A condition that the filter implies holds on every row the fence returns,
//! so when the bound values match the filter's, it is left out of the text
//! sent. The fence itself is unchanged and nothing is evaluated anywhere new:
//! what is left out is a condition that was true of every row it would have
//! seen, so the result is the same rows and the server reads the same
//! admitted rows or fewer.
use std::ops::ControlFlow;

use silo_types::{Op, RowFilter, Value};
use sqlparser::ast::{self, BinaryOperator, Expr, SetExpr, Statement, TableFactor, VisitMut};

use super::{GovernedTable, Policy, SqlPolicyError, placeholder_number};

/// The statement without its implied conditions, used when the connector
/// bound the values that make them implied.
#[derive(Debug)]
pub(super) struct Lean {
    /// The statement sent instead.
    pub(super) sql: String,
    /// Its placeholders' values: indexes into the connector's values
    /// followed by the filters'.
    pub(super) order: Vec<usize>,
    /// Connector values (by index) that must equal these for it to apply.
    when: Vec<(usize, Value)>,
}

impl Lean {
    /// Whether the connector's `params` make the left-out conditions implied.
    pub(super) fn holds(&self, params: &[Value]) -> bool {
        self.when
            .iter()
            .all(|(i, v)| params.get(*i).is_some_and(|p| same(p, v)))
    }
}

/// Equal values that also encode the same way (a float by its bits).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// The top-level `WHERE` conditions of a one-table query that the table's
/// filter implies, by position in [`conjuncts`] order, with the connector
/// values they need. Called before the walk, while the table is still named.
pub(super) fn find(
    policy: &Policy<'_>,
    statement: &Statement,
) -> Vec<(usize, Vec<(usize, Value)>)> {
    let Some((select, table, qualifier)) = one_table(policy, statement) else {
        return Vec::new();
    };
    let RowFilter::AnyOf(branches) = &table.filter else {
        return Vec::new();
    };
    if branches.is_empty() {
        return Vec::new();
    }
    let Some(selection) = &select.selection else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (i, condition) in conjuncts(selection.clone()).iter().enumerate() {
        let column = |e: &Expr| column_of(policy, table, &qualifier, e);
        let Some(pattern) = dnf(condition, &column, policy.connector_params) else {
            continue;
        };
        if let Some(when) = implied_by(branches, &pattern) {
            found.push((i, when));
        }
    }
    found
}

/// The statement with the conditions `drop` (from [`find`]) left out, its
/// placeholders renumbered; `None` if there is nothing to leave out.
pub(super) fn lean(
    statement: &Statement,
    drop: Vec<(usize, Vec<(usize, Value)>)>,
) -> Result<Option<Lean>, SqlPolicyError> {
    if drop.is_empty() {
        return Ok(None);
    }
    let mut lean = statement.clone();
    let Statement::Query(query) = &mut lean else {
        return Ok(None);
    };
    let SetExpr::Select(select) = &mut *query.body else {
        return Ok(None);
    };
    let Some(selection) = select.selection.take() else {
        return Ok(None);
    };
    let dropped: Vec<usize> = drop.iter().map(|(i, _)| *i).collect();
    select.selection = conjuncts(selection)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !dropped.contains(i))
        .map(|(_, c)| c)
        .reduce(|left, right| Expr::BinaryOp {
            left: Box::new(left),
            op: BinaryOperator::And,
            right: Box::new(right),
        });
    let order = renumber(&mut lean)?;
    let sql = lean.to_string();
    super::check_rendered(silo_types::SqlDialect::Postgres, &sql, &lean)?;
    Ok(Some(Lean {
        sql,
        order,
        when: drop.into_iter().flat_map(|(_, when)| when).collect(),
    }))
}

/// The query's one `SELECT` over one governed table (no join), the table,
/// and the name its columns may be qualified with.
fn one_table<'s, 'p>(
    policy: &Policy<'p>,
    statement: &'s Statement,
) -> Option<(&'s ast::Select, &'p GovernedTable, String)> {
    let Statement::Query(query) = statement else {
        return None;
    };
    let SetExpr::Select(select) = &*query.body else {
        return None;
    };
    let [from] = select.from.as_slice() else {
        return None;
    };
    if !from.joins.is_empty() {
        return None;
    }
    let TableFactor::Table { name, alias, .. } = &from.relation else {
        return None;
    };
    let (schema, table, last) = policy.resolve(name).ok()?;
    let mut governed = policy
        .tables
        .iter()
        .filter(|t| t.schema == schema && t.name == table);
    let (Some(table), None) = (governed.next(), governed.next()) else {
        return None;
    };
    let qualifier = match alias {
        // A column list renames the columns: leave such a query alone.
        Some(a) if !a.columns.is_empty() => return None,
        Some(a) => policy.normalize(&a.name),
        None => policy.normalize(&last),
    };
    Some((select, table, qualifier))
}

/// The filter column `e` names (bare, or qualified by the table's name or
/// alias), if it exists inside the fence.
fn column_of(
    policy: &Policy<'_>,
    table: &GovernedTable,
    qualifier: &str,
    e: &Expr,
) -> Option<String> {
    let name = match e {
        Expr::Identifier(column) => policy.normalize(column),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [q, column] if policy.normalize(q) == qualifier => policy.normalize(column),
            _ => return None,
        },
        _ => return None,
    };
    let inside = table
        .columns
        .as_ref()
        .is_none_or(|columns| columns.contains(&name));
    inside.then_some(name)
}

/// A condition in the filter's terms: an `OR` of `AND`s of
/// `(column, op, connector placeholder indexes)`.
type Pattern = Vec<Vec<(String, Op, Vec<usize>)>>;

/// `e` as a [`Pattern`], if it is made only of comparisons of a filter
/// column with connector placeholders.
fn dnf(e: &Expr, column: &dyn Fn(&Expr) -> Option<String>, params: usize) -> Option<Pattern> {
    let placeholder = |e: &Expr| match e {
        Expr::Value(v) => match &v.value {
            ast::Value::Placeholder(p) => placeholder_number(p, '$')
                .filter(|n| *n <= params)
                .map(|n| n - 1),
            _ => None,
        },
        _ => None,
    };
    let one = |col: String, op: Op, values: Vec<usize>| Some(vec![vec![(col, op, values)]]);
    match e {
        Expr::Nested(inner) => dnf(inner, column, params),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Or,
            right,
        } => {
            let mut branches = dnf(left, column, params)?;
            branches.extend(dnf(right, column, params)?);
            Some(branches)
        }
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => match (dnf(left, column, params)?, dnf(right, column, params)?) {
            (l, r) if l.len() == 1 && r.len() == 1 => {
                Some(vec![l.into_iter().chain(r).flatten().collect()])
            }
            _ => None,
        },
        Expr::BinaryOp { left, op, right } => {
            let op = comparison(op)?;
            if let (Some(col), Some(n)) = (column(left), placeholder(right)) {
                one(col, op, vec![n])
            } else if let (Some(n), Some(col)) = (placeholder(left), column(right)) {
                one(col, mirrored(op), vec![n])
            } else {
                None
            }
        }
        Expr::IsNull(e) => one(column(e)?, Op::IsNull, Vec::new()),
        Expr::IsNotNull(e) => one(column(e)?, Op::NotNull, Vec::new()),
        Expr::InList {
            expr,
            list,
            negated,
        } => {
            let values = list.iter().map(placeholder).collect::<Option<Vec<_>>>()?;
            let op = if *negated { Op::NotIn } else { Op::In };
            one(column(expr)?, op, values)
        }
        _ => None,
    }
}

fn comparison(op: &BinaryOperator) -> Option<Op> {
    Some(match op {
        BinaryOperator::Eq => Op::Eq,
        BinaryOperator::NotEq => Op::Ne,
        BinaryOperator::Lt => Op::Lt,
        BinaryOperator::LtEq => Op::Le,
        BinaryOperator::Gt => Op::Gt,
        BinaryOperator::GtEq => Op::Ge,
        _ => return None,
    })
}

/// `v op c` as `c op' v`.
fn mirrored(op: Op) -> Op {
    match op {
        Op::Lt => Op::Gt,
        Op::Le => Op::Ge,
        Op::Gt => Op::Lt,
        Op::Ge => Op::Le,
        other => other,
    }
}

/// The connector values under which every branch of the filter implies
/// some branch of `pattern` (each of that branch's comparisons is one of the
/// filter branch's, with the same values); `None` if some branch implies none.
fn implied_by(
    filter: &[Vec<silo_types::Predicate>],
    pattern: &Pattern,
) -> Option<Vec<(usize, Value)>> {
    let mut when = Vec::new();
    for branch in filter {
        let covered = pattern.iter().find_map(|wanted| {
            let mut needs = Vec::new();
            for (col, op, params) in wanted {
                let p = branch
                    .iter()
                    .find(|p| &p.column == col && p.op == *op && p.values.len() == params.len())?;
                needs.extend(params.iter().copied().zip(p.values.iter().cloned()));
            }
            Some(needs)
        })?;
        when.extend(covered);
    }
    Some(when)
}

/// The `AND`ed conditions of `e`, in order.
fn conjuncts(e: Expr) -> Vec<Expr> {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut out = conjuncts(*left);
            out.extend(conjuncts(*right));
            out
        }
        Expr::Nested(inner)
            if matches!(
                &*inner,
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                } | Expr::Nested(_)
            ) =>
        {
            conjuncts(*inner)
        }
        other => vec![other],
    }
}

/// Renumbers the `$n` placeholders left in `statement` as `$1..$m` in the
/// order of `n`; returns the old (0-based) index of each new one.
fn renumber(statement: &mut Statement) -> Result<Vec<usize>, SqlPolicyError> {
    struct Used(Vec<usize>);
    impl ast::VisitorMut for Used {
        type Break = SqlPolicyError;
        fn pre_visit_value(&mut self, value: &mut ast::Value) -> ControlFlow<SqlPolicyError> {
            if let ast::Value::Placeholder(p) = value {
                match placeholder_number(p, '$') {
                    Some(n) => self.0.push(n),
                    None => return ControlFlow::Break(super::ORDER),
                }
            }
            ControlFlow::Continue(())
        }
    }
    struct Renumber<'a>(&'a [usize]);
    impl ast::VisitorMut for Renumber<'_> {
        type Break = SqlPolicyError;
        fn pre_visit_value(&mut self, value: &mut ast::Value) -> ControlFlow<SqlPolicyError> {
            if let ast::Value::Placeholder(p) = value {
                let new = placeholder_number(p, '$')
                    .and_then(|n| self.0.binary_search(&n).ok())
                    .map(|i| format!("${}", i + 1));
                match new {
                    Some(new) => *p = new,
                    None => return ControlFlow::Break(super::ORDER),
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut used = Used(Vec::new());
    if let ControlFlow::Break(e) = statement.visit(&mut used) {
        return Err(e);
    }
    let mut used = used.0;
    used.sort_unstable();
    used.dedup();
    if let ControlFlow::Break(e) = statement.visit(&mut Renumber(&used)) {
        return Err(e);
    }
    Ok(used.into_iter().map(|n| n - 1).collect())
}

#[cfg(test)]
mod tests {
    use silo_types::{Op, Predicate, RowFilter, SqlDialect, Value};

    use super::super::{GovernedTable, Rewritten, rewrite};

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn p(column: &str, op: Op, values: Vec<Value>) -> Predicate {
        Predicate {
            column: column.into(),
            op,
            values,
        }
    }

    fn orders(filter: Vec<Vec<Predicate>>, columns: Option<&[&str]>) -> GovernedTable {
        GovernedTable {
            schema: "public".into(),
            name: "orders".into(),
            filter: RowFilter::AnyOf(filter),
            columns: columns.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn pg(sql: &str, params: Vec<Value>, table: &GovernedTable) -> Rewritten {
        rewrite(
            SqlDialect::Postgres,
            sql,
            params,
            "public",
            std::slice::from_ref(table),
            &[],
        )
        .unwrap()
    }

    const FENCE: &str =
        r#"(SELECT * FROM "public"."orders" WHERE (("public"."orders"."tenant" = $1)) OFFSET 0)"#;

    #[test]
    fn a_repeated_filter_is_left_out_only_when_its_values_are_the_filters() {
        let table = orders(vec![vec![p("tenant", Op::Eq, vec![text("acme")])]], None);
        let sdk = r#"SELECT "id" FROM "public"."orders" WHERE (("tenant" = $1)) LIMIT 10"#;
        let same = pg(sdk, vec![text("acme")], &table);
        assert_eq!(
            same.sql,
            format!(r#"SELECT "id" FROM {FENCE} AS "orders" LIMIT 10"#)
        );
        assert_eq!(same.params, vec![text("acme")]);

        // Another value (another tenant's, a different case, another type):
        // the connector's condition stays, and with it the empty result.
        for other in [text("globex"), text("ACME"), Value::Int(1), Value::Null] {
            let out = pg(sdk, vec![other.clone()], &table);
            assert!(
                out.sql.contains(r#"WHERE (("tenant" = $1))"#),
                "{}",
                out.sql
            );
            assert!(
                out.sql.contains(r#""public"."orders"."tenant" = $2"#),
                "{}",
                out.sql
            );
            assert_eq!(out.params, vec![other, text("acme")]);
        }
        // Remembered rewrites decide again on each call's values.
        assert_eq!(pg(sdk, vec![text("acme")], &table), same);
    }

    #[test]
    fn only_the_implied_conditions_go_and_the_rest_are_renumbered() {
        let table = orders(
            vec![vec![
                p("tenant", Op::Eq, vec![text("acme")]),
                p("region", Op::In, vec![text("eu"), text("us")]),
                p("deleted", Op::IsNull, vec![]),
            ]],
            None,
        );
        let sql = "SELECT id FROM orders o WHERE $1 = o.tenant AND amount > $2 \
                   AND (region IN ($3, $4) AND deleted IS NULL) AND $1 <> 'x'";
        let params = vec![text("acme"), Value::Int(5), text("eu"), text("us")];
        let out = pg(sql, params.clone(), &table);
        assert!(
            out.sql.ends_with(r#") o WHERE amount > $2 AND $1 <> 'x'"#),
            "{}",
            out.sql
        );
        // $1 is still used (`$1 <> 'x'`), $2 stays, $3/$4 go; the filter's follow.
        assert_eq!(
            out.params,
            vec![
                text("acme"),
                Value::Int(5),
                text("acme"),
                text("eu"),
                text("us")
            ]
        );
        // One value off (the IN list in another order): the whole statement
        // is sent as written.
        let mut swapped = params;
        swapped.swap(2, 3);
        let out = pg(sql, swapped, &table);
        assert!(out.sql.contains("region IN ($3, $4)"), "{}", out.sql);
        assert!(out.sql.contains("$1 = o.tenant"), "{}", out.sql);
        assert_eq!(out.params.len(), 7);
    }

    #[test]
    fn an_or_of_the_filters_branches_is_implied() {
        let table = orders(
            vec![
                vec![p("tenant", Op::Eq, vec![text("acme")])],
                vec![
                    p("tenant", Op::Eq, vec![text("acme")]),
                    p("shared", Op::Eq, vec![Value::Boolean(true)]),
                ],
            ],
            None,
        );
        let sql = r#"SELECT "id" FROM "orders" WHERE ((("tenant" = $1)) OR (("tenant" = $2 AND "shared" = $3)))"#;
        let out = pg(
            sql,
            vec![text("acme"), text("acme"), Value::Boolean(true)],
            &table,
        );
        assert!(!out.sql.contains(") WHERE "), "{}", out.sql);
        assert_eq!(out.params.len(), 3);
        // A condition the filter does not imply (it admits more than the
        // first branch) stays.
        let sql = r#"SELECT "id" FROM "orders" WHERE "shared" = $1"#;
        let out = pg(sql, vec![Value::Boolean(true)], &table);
        assert!(out.sql.ends_with(r#"WHERE "shared" = $1"#), "{}", out.sql);
    }

    #[test]
    fn nothing_is_left_out_where_it_could_mean_something_else() {
        let table = orders(
            vec![vec![p("tenant", Op::Eq, vec![text("acme")])]],
            Some(&["id", "amount"]),
        );
        let hidden = orders(vec![vec![p("tenant", Op::Eq, vec![text("acme")])]], None);
        let acme = || vec![text("acme")];
        for (sql, table) in [
            // The column is not inside the fence: the statement must fail as before.
            ("SELECT id FROM orders WHERE tenant = $1", &table),
            // Qualified by a name that is not the table's.
            ("SELECT id FROM orders o WHERE orders.tenant = $1", &hidden),
            // A column list renames the columns.
            (
                "SELECT id FROM orders AS o (tenant, x) WHERE tenant = $1",
                &hidden,
            ),
            // Not a top-level condition.
            ("SELECT id FROM orders WHERE NOT (tenant = $1)", &hidden),
            (
                "SELECT id FROM orders WHERE tenant = $1 OR amount > 0",
                &hidden,
            ),
            // Another operator, or a literal.
            ("SELECT id FROM orders WHERE tenant >= $1", &hidden),
            (
                "SELECT id FROM orders WHERE tenant = 'acme' AND $1 = $1",
                &hidden,
            ),
            ("SELECT id FROM orders WHERE lower(tenant) = $1", &hidden),
            // A join: the name could be another table's column.
            (
                "SELECT o.id FROM orders o, orders p WHERE o.tenant = $1",
                &hidden,
            ),
            // A subquery's condition is its own scope.
            (
                "SELECT id FROM orders WHERE id IN (SELECT id FROM orders WHERE tenant = $1)",
                &hidden,
            ),
        ] {
            let out = rewrite(
                SqlDialect::Postgres,
                sql,
                acme(),
                "public",
                std::slice::from_ref(table),
                &[],
            );
            if let Ok(out) = out {
                assert!(out.params.len() >= 2, "{sql}: {}", out.sql);
                assert!(
                    out.sql.contains("$1") && out.sql.contains("$2"),
                    "{sql}: {}",
                    out.sql
                );
            }
        }
        // A filter that admits all or no rows has nothing to imply.
        for filter in [
            RowFilter::AllRows,
            RowFilter::NoRows,
            RowFilter::AnyOf(vec![]),
        ] {
            let t = GovernedTable {
                filter,
                ..hidden.clone()
            };
            let out = pg("SELECT id FROM orders WHERE tenant = $1", acme(), &t);
            assert!(out.sql.ends_with("WHERE tenant = $1"), "{}", out.sql);
        }
    }
}
