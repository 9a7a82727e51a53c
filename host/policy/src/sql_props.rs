//! Property test of the SQL rewrite over generated statements: whatever a
//! connector writes, a statement the policy accepts reads no relation except
//! through a fence, and calls nothing outside the allow-list, by any syntax.
//!
//! CI runs the default number of cases; a longer run:
//! `PROPTEST_CASES=200000 cargo test -p silo-host --lib policy::sql_props`.
use std::ops::ControlFlow;

use proptest::prelude::*;
use silo_types::{Op, Predicate, RowFilter, SqlDialect, Value};
use sqlparser::ast::{
    self, Expr, ObjectName, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};

use super::sql::{GovernedTable, check_type, rewrite};

fn tenant_filter() -> RowFilter {
    RowFilter::AnyOf(vec![vec![Predicate {
        column: "tenant".into(),
        op: Op::Eq,
        values: vec![Value::Text("acme".into())],
    }]])
}

fn tables(schema: &str) -> Vec<GovernedTable> {
    vec![
        GovernedTable {
            schema: schema.into(),
            name: "orders".into(),
            filter: tenant_filter(),
            columns: Some(vec!["id".into(), "tenant".into(), "note".into()]),
        },
        GovernedTable {
            schema: schema.into(),
            name: "customers".into(),
            filter: RowFilter::AllRows,
            columns: Some(vec!["id".into(), "region".into()]),
        },
    ]
}

/// Names a generated statement may use, each list as (ordinary, hostile):
/// governed and other tables, columns (granted, hidden, not columns at all),
/// functions (allowed, dangerous, qualified, quoted), types. Ordinary names
/// come five times as often, so that many statements are accepted.
const TABLES: (&[&str], &[&str]) = (
    &[
        "orders",
        "customers",
        "orders o",
        "customers c",
        "public.orders",
    ],
    &[
        "secrets",
        "pg_catalog.pg_class",
        "information_schema.columns",
        "mysql.user",
        "\"Orders\"",
    ],
);
const COLUMNS: (&[&str], &[&str]) = (
    &["id", "tenant", "note", "o.id", "orders.note", "region"],
    &[
        "secret",
        "x.y.z",
        "current_user",
        "@@version",
        "orders.pg_sleep",
    ],
);
const FUNCTIONS: (&[&str], &[&str]) = (
    &[
        "count",
        "lower",
        "sum",
        "coalesce",
        "length",
        "replace",
        "pg_catalog.lower",
    ],
    &[
        "pg_sleep",
        "current_setting",
        "pg_stat_get_live_tuples",
        "pg_catalog.pg_sleep",
        "public.lower",
        "\"lower\"",
        "SLEEP",
        "load_file",
        "version",
        "set_config",
    ],
);
const TYPES: (&[&str], &[&str]) = (
    &[
        "int",
        "text",
        "numeric(10,2)",
        "date",
        "json",
        "int[]",
        "SIGNED",
        "CHAR",
    ],
    &[
        "regclass",
        "regrole",
        "public.evil",
        "oid",
        "regproc[]",
        "regnamespace",
        "evil",
    ],
);

fn pick(options: (&'static [&'static str], &'static [&'static str])) -> BoxedStrategy<String> {
    prop_oneof![
        5 => prop::sample::select(options.0).prop_map(str::to_owned),
        1 => prop::sample::select(options.1).prop_map(str::to_owned),
    ]
    .boxed()
}

fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        pick(COLUMNS),
        Just("1".to_owned()),
        Just("'a'".to_owned()),
        Just("NULL".to_owned()),
        Just("$1".to_owned()),
        Just("?".to_owned()),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            3 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            3 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} = {b}")),
            2 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND {b})")),
            3 => (pick(FUNCTIONS), inner.clone()).prop_map(|(f, a)| format!("{f}({a})")),
            2 => (inner.clone(), pick(TYPES)).prop_map(|(a, t)| format!("{a}::{t}")),
            2 => (inner.clone(), pick(TYPES)).prop_map(|(a, t)| format!("CAST({a} AS {t})")),
            1 => pick(TYPES).prop_map(|t| format!("{t} 'x'")),
            1 => (inner.clone(), pick(FUNCTIONS)).prop_map(|(a, f)| format!("({a}).{f}")),
            1 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} OPERATOR(pg_catalog.+) {b}")),
            2 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("CASE WHEN {a} THEN {b} END")),
            2 => inner.clone().prop_map(|a| format!("{a} IS NULL")),
            1 => (inner.clone(), query_leaf()).prop_map(|(a, q)| format!("{a} IN ({q})")),
            1 => query_leaf().prop_map(|q| format!("EXISTS ({q})")),
            1 => query_leaf().prop_map(|q| format!("({q})")),
            1 => inner.clone().prop_map(|a| format!("ARRAY[{a}][1]")),
            1 => (inner.clone(), inner).prop_map(|(a, b)| format!("{a} AT TIME ZONE {b}")),
        ]
    })
}

fn from_item() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => pick(TABLES),
        2 => (pick(TABLES), pick(TABLES)).prop_map(|(a, b)| format!("{a} JOIN {b} ON true")),
        2 => pick(TABLES).prop_map(|t| format!("(SELECT * FROM {t}) x")),
        1 => pick(TABLES).prop_map(|t| format!("LATERAL (SELECT * FROM {t}) l")),
        1 => pick(FUNCTIONS).prop_map(|f| format!("{f}(1) f")),
        1 => Just("generate_series(1, 2) g".to_owned()),
        1 => pick(TABLES).prop_map(|t| format!("ONLY {t}")),
    ]
}

fn query_leaf() -> impl Strategy<Value = String> {
    (pick(COLUMNS), pick(TABLES)).prop_map(|(c, t)| format!("SELECT {c} FROM {t}"))
}

fn statement() -> impl Strategy<Value = String> {
    let select = (
        prop::collection::vec(expr(), 1..3),
        prop::collection::vec(from_item(), 1..3),
        prop::option::of(expr()),
        prop::option::of(expr()),
    )
        .prop_map(|(items, from, selection, order)| {
            let mut s = format!("SELECT {} FROM {}", items.join(", "), from.join(", "));
            if let Some(w) = selection {
                s.push_str(&format!(" WHERE {w}"));
            }
            if let Some(o) = order {
                s.push_str(&format!(" ORDER BY {o}"));
            }
            s
        })
        .boxed();
    prop_oneof![
        4 => select.clone(),
        1 => (select.clone(), select.clone()).prop_map(|(a, b)| format!("{a} UNION ALL {b}")),
        1 => select.clone().prop_map(|s| format!("WITH t AS (SELECT 1) {s}")),
        1 => select.prop_map(|s| format!("SELECT * FROM ({s}) AS w")),
    ]
}

/// What the oracle found wrong with an accepted statement.
struct Oracle<'a> {
    dialect: SqlDialect,
    schema: &'a str,
    problems: Vec<String>,
    /// Inside a fence: the host's own text, not checked.
    fences: usize,
}

impl Oracle<'_> {
    /// A fence: `SELECT … FROM <schema>.<governed> WHERE …` (Postgres: with
    /// `OFFSET 0`), whose items are granted columns or their masks.
    fn is_fence(&self, query: &Query) -> bool {
        let SetExpr::Select(select) = query.body.as_ref() else {
            return false;
        };
        let [from] = select.from.as_slice() else {
            return false;
        };
        let TableFactor::Table { name, .. } = &from.relation else {
            return false;
        };
        let governed = tables(self.schema)
            .iter()
            .any(|t| name.to_string() == governed_name(self.dialect, t));
        let limit = query.limit_clause.as_ref().map(ToString::to_string);
        let offset = match self.dialect {
            SqlDialect::Postgres => limit.as_deref() == Some(" OFFSET 0"),
            SqlDialect::MySql => {
                limit.is_none() || limit.as_deref() == Some(" LIMIT 18446744073709551615")
            }
        };
        governed && offset && from.joins.is_empty() && select.selection.is_some()
    }

    fn check_name(&mut self, name: &ObjectName) {
        // As the server resolves it: unquoted parts fold, quoted ones do not.
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| match p.as_ident() {
                Some(i) if i.quote_style.is_some() => i.value.clone(),
                Some(i) => i.value.to_lowercase(),
                None => p.to_string(),
            })
            .collect();
        let text = parts.join(".");
        let bare = text.strip_prefix("pg_catalog.").unwrap_or(&text);
        if !super::sql::function_allowed(self.dialect, bare)
            || (self.dialect == SqlDialect::MySql && text.contains('.'))
        {
            self.problems.push(format!("calls `{name}`"));
        }
    }
}

fn governed_name(dialect: SqlDialect, t: &GovernedTable) -> String {
    format!(
        "{}.{}",
        silo_types::quote_ident(dialect, &t.schema),
        silo_types::quote_ident(dialect, &t.name)
    )
}

impl Visitor for Oracle<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if self.is_fence(query) {
            self.fences += 1;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if self.is_fence(query) {
            self.fences -= 1;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if self.fences > 0 {
            return ControlFlow::Continue(());
        }
        match factor {
            TableFactor::Table { name, .. } => {
                let text = name.to_string();
                let fenced = tables(self.schema)
                    .iter()
                    .any(|t| text == governed_name(self.dialect, t));
                if !fenced {
                    self.problems.push(format!("reads `{text}` unfenced"));
                }
            }
            TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => {}
            other => self.problems.push(format!("reads from `{other}`")),
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if self.fences > 0 {
            return ControlFlow::Continue(());
        }
        match expr {
            Expr::Function(f) => self.check_name(&f.name),
            Expr::CompoundFieldAccess { access_chain, .. }
                if access_chain
                    .iter()
                    .any(|a| matches!(a, ast::AccessExpr::Dot(_))) =>
            {
                self.problems.push(format!("field selection `{expr}`"));
            }
            Expr::Cast { data_type, .. } if check_type(data_type).is_err() => {
                self.problems.push(format!("cast to `{data_type}`"));
            }
            Expr::TypedString(t) if check_type(&t.data_type).is_err() => {
                self.problems
                    .push(format!("typed literal `{}`", t.data_type));
            }
            Expr::BinaryOp { op, .. }
                if matches!(
                    op,
                    ast::BinaryOperator::Custom(_) | ast::BinaryOperator::PGCustomBinaryOperator(_)
                ) =>
            {
                self.problems.push(format!("operator `{op}`"));
            }
            Expr::CompoundIdentifier(parts) if parts.len() > 2 => {
                self.problems.push(format!("name `{expr}`"));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Every governed table inside the rewritten text sits in a fence of the
/// exact host shape: count fences and governed references; they must match.
fn fences_and_tables(dialect: SqlDialect, schema: &str, statement: &Statement) -> (usize, usize) {
    struct Count<'a> {
        oracle: Oracle<'a>,
        fences: usize,
        tables: usize,
    }
    impl Visitor for Count<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if self.oracle.is_fence(query) {
                self.fences += 1;
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
            let text = relation.to_string();
            if tables(self.oracle.schema)
                .iter()
                .any(|t| text == governed_name(self.oracle.dialect, t))
            {
                self.tables += 1;
            }
            ControlFlow::Continue(())
        }
    }
    let mut count = Count {
        oracle: Oracle {
            dialect,
            schema,
            problems: Vec::new(),
            fences: 0,
        },
        fences: 0,
        tables: 0,
    };
    let _ = statement.visit(&mut count);
    (count.fences, count.tables)
}

fn check(dialect: SqlDialect, sql: &str) -> Result<(), TestCaseError> {
    let schema = "public";
    let params = match dialect {
        SqlDialect::Postgres => vec![Value::Int(1)],
        SqlDialect::MySql => vec![Value::Int(1); sql.matches('?').count()],
    };
    // Accepted or refused, never a panic; refusals are fine.
    let Ok(out) = rewrite(dialect, sql, params, schema, &tables(schema), &[]) else {
        return Ok(());
    };
    let parsed = match dialect {
        SqlDialect::Postgres => sqlparser::parser::Parser::parse_sql(
            &sqlparser::dialect::PostgreSqlDialect {},
            &out.sql,
        ),
        SqlDialect::MySql => {
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, &out.sql)
        }
    };
    let statements =
        parsed.map_err(|e| TestCaseError::fail(format!("{sql} -> {}: {e}", out.sql)))?;
    prop_assert_eq!(statements.len(), 1);
    let mut oracle = Oracle {
        dialect,
        schema,
        problems: Vec::new(),
        fences: 0,
    };
    let _ = statements[0].visit(&mut oracle);
    prop_assert!(
        oracle.problems.is_empty(),
        "{} accepted as {}: {:?}",
        sql,
        out.sql,
        oracle.problems
    );
    let (fences, governed) = fences_and_tables(dialect, schema, &statements[0]);
    prop_assert_eq!(fences, governed, "{} -> {}", sql, out.sql);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn postgres_accepted_statements_read_only_through_fences_and_call_only_allowed_functions(sql in statement()) {
        check(SqlDialect::Postgres, &sql)?;
    }

    #[test]
    fn mysql_accepted_statements_read_only_through_fences_and_call_only_allowed_functions(sql in statement()) {
        check(SqlDialect::MySql, &sql.replace("$1", "?"))?;
    }
}

/// The generator reaches the interesting cases: some statements are
/// accepted, and the refusals cover every call form.
#[test]
fn the_generator_produces_accepted_and_hostile_statements() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..2000 {
        let sql = statement().new_tree(&mut runner).map(|t| t.current());
        let Ok(sql) = sql else { continue };
        match rewrite(
            SqlDialect::Postgres,
            &sql,
            vec![Value::Int(1)],
            "public",
            &tables("public"),
            &[],
        ) {
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(
        accepted > 100 && refused > 100,
        "accepted {accepted}, refused {refused}"
    );
}
