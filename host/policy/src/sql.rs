//! Row-filter enforcement below the connector.
//!
//! A connector is untrusted code: the SQL it sends is parsed here, checked
//! against a deny-by-default policy, and every governed table it reads is
//! replaced by a *fence*: a derived table holding only the rows the user's
//! filter admits and only the columns the user's grants allow, the filter's
//! values travelling as bind parameters. The database then only ever sees the
//! rewritten text, re-rendered from the checked syntax tree, so nothing the
//! connector wrote reaches the server unless this module understood it.
//!
//! The fence must hold against the server's optimizer too, which would
//! otherwise merge the derived table into the connector's query and evaluate a
//! connector expression on another tenant's row before the filter removed it
//! (its error, or its absence, then tells the connector about that row):
//!
//! - **Postgres**: `(SELECT <granted columns> FROM t WHERE <filter> OFFSET 0)`.
//!   A subquery with `OFFSET` is never pulled up and no outer condition is
//!   pushed into it (doing either would change what `OFFSET` counts), so every
//!   connector expression runs on the subquery's output only.
//! - **MySQL / MariaDB** merge a derived table into the connector's query, or
//!   push the connector's conditions into it, unless it has a `LIMIT`: with
//!   one, doing either would change what the `LIMIT` counts, so neither
//!   server does (MariaDB's `cond_pushdown_is_allowed`, MySQL's
//!   `can_push_condition_to_derived`). A fence with `LIMIT
//!   18446744073709551615` is therefore materialized, admitted rows only,
//!   before any connector expression sees a row. That copy costs the server
//!   about twice a plain scan, so a *plain* statement (see
//!   `plain_statement`), whose only connector code is output columns and
//!   plain comparisons with literals, gets the mergeable fence instead: such
//!   a comparison cannot fail on a value (a mismatch only warns, and warnings
//!   never reach a connector), and its only effect is to choose rows that
//!   the filter must admit as well. SECURITY.md has the full argument.
//!
//! Deliberately refused in v0.1, because each would need scope or semantics
//! tracking that is easy to get wrong: CTEs, `SELECT … INTO`, row locks, table
//! functions and other exotic `FROM` items, table sampling, three-part names,
//! functions outside a fixed allow-list, and anything that is not one `SELECT`.

use std::collections::HashMap;
use std::ops::ControlFlow;

use silo_types::{RowFilter, SqlDialect, Value, quote_ident};
use sqlparser::ast::{
    self, BinaryOperator, Expr, Function, FunctionArguments, Ident, ObjectName, ObjectNamePart,
    Query, Select, SelectFlavor, SetExpr, Statement, TableAlias, TableFactor, VisitMut, VisitorMut,
};
use sqlparser::dialect::{MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, Tokenizer, TokenizerError, Whitespace};

mod implied;

/// A table whose rows are governed by a row filter.
#[derive(Debug, Clone, PartialEq)]
pub struct GovernedTable {
    /// Schema (Postgres) or database (MySQL), as stored in the catalog.
    pub schema: String,
    /// Table name, as stored in the catalog.
    pub name: String,
    /// The rows the current user may see.
    pub filter: RowFilter,
    /// The only columns that exist inside the fence: those the user's grants
    /// allow (plus, for the fetched dataset, the filter's own, which the host
    /// re-checks and removes). `None`: every column, for a table whose filter
    /// admits all rows or none (describe), or when no grant restricts columns.
    pub columns: Option<Vec<String>>,
}

/// The statement to run and its bind values, connector's first.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewritten {
    /// The rewritten statement.
    pub sql: String,
    /// Values for its placeholders: Postgres `$1..$n` in number order, MySQL `?`
    /// in the order they occur in `sql`.
    pub params: Vec<Value>,
}

/// Why a statement was refused.
///
/// Display texts are shown to the connector: they name the offending item
/// (table, function, clause) and never contain filter values.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SqlPolicyError {
    /// The text is not SQL this module understands.
    #[error("the statement could not be parsed: {0}")]
    Parse(String),
    /// Zero or several statements; only one is ever run.
    #[error("exactly one statement is allowed")]
    NotSingleStatement,
    /// A statement other than a query (`UPDATE`, `SET`, `COPY`, …).
    #[error("only SELECT statements are allowed, not {0}")]
    NotSelect(String),
    /// A clause or construct outside what the policy can enforce.
    #[error("{0} is not allowed")]
    Unsupported(String),
    /// A relation that is neither governed nor listed as readable.
    #[error("table `{0}` may not be read")]
    UngovernedTable(String),
    /// A function outside the allow-list.
    #[error("function `{0}` is not allowed")]
    FunctionNotAllowed(String),
    /// A placeholder that does not match the bound parameters.
    #[error("invalid placeholder: {0}")]
    Placeholder(String),
    /// A governed table's filter cannot be applied; the table is named, the filter is not shown.
    #[error("the row filter for table `{0}` cannot be applied")]
    InvalidFilter(String),
    /// The rewritten text failed a self-check; refused rather than run.
    #[error("the statement could not be rewritten safely: {0}")]
    Internal(&'static str),
}

const BACKSLASH_IN_STRING: &str = "a backslash in a string literal (pass the value as a parameter)";

type Result<T, E = SqlPolicyError> = std::result::Result<T, E>;

/// Functions a connector may call on either server, lower case: built-ins
/// of Postgres, MySQL and MariaDB alike. Everything not on a dialect's list
/// is refused: Postgres ships functions that read files, sleep, take locks,
/// end other sessions, read settings or statistics of every tenant's rows;
/// on MySQL an unqualified name that is not a built-in would resolve to a
/// stored function of the datasource's database, which could do anything.
/// A name list is the only robust fence. On Postgres, names resolve in
/// `pg_catalog` only: the client pins `search_path` to it for every statement.
const COMMON_FUNCTIONS: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "lower",
    "upper",
    "length",
    "char_length",
    "character_length",
    "substring",
    "substr",
    "trim",
    "ltrim",
    "rtrim",
    "concat",
    "concat_ws",
    "replace",
    "left",
    "right",
    "abs",
    "round",
    "floor",
    "ceil",
    "ceiling",
    "mod",
    "power",
    "sqrt",
    "greatest",
    "least",
    "coalesce",
    "nullif",
    "stddev",
    "variance",
    "current_date",
];

/// Postgres only, besides [`COMMON_FUNCTIONS`].
const PG_FUNCTIONS: &[&str] = &[
    "btrim",
    "position",
    "strpos",
    "trunc",
    "date_trunc",
    "date_part",
    "to_char",
    "bool_and",
    "bool_or",
    "string_agg",
    "array_agg",
    "percentile_cont",
];

/// MySQL and MariaDB only, besides [`COMMON_FUNCTIONS`].
const MYSQL_FUNCTIONS: &[&str] = &[
    "locate",
    "instr",
    "truncate",
    "pow",
    "ifnull",
    "if",
    "date_format",
    "year",
    "month",
    "dayofmonth",
    "group_concat",
];

/// Keywords that Postgres evaluates as functions although they are written
/// without parentheses (sqlparser reads some of them as plain identifiers).
const PG_BARE_FUNCTIONS: &[&str] = &[
    "current_catalog",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "localtime",
    "localtimestamp",
    "session_user",
    "system_user",
    "user",
];

/// The MySQL reserved words that are functions when written bare.
const MYSQL_BARE_FUNCTIONS: &[&str] = &[
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "localtime",
    "localtimestamp",
    "utc_date",
    "utc_time",
    "utc_timestamp",
];

/// Rewrites `sql` so that every governed table it reads is replaced by that table filtered for the user.
///
/// `default_schema` resolves unqualified table names (Postgres: "public"; MySQL: the datasource's database).
/// `readable` lists (schema, table) relations that may be read as they are (catalog views used by a
/// connector's describe, e.g. ("information_schema","columns")); empty for a fetch.
///
/// The rewrite is a pure function of its inputs other than the connector's
/// parameter values, so its result is remembered (see `RewriteCache`): a
/// connector that sends the same statement for the same user costs a hash
/// and a comparison, not a parse.
pub fn rewrite(
    dialect: SqlDialect,
    sql: &str,
    params: Vec<Value>,
    default_schema: &str,
    tables: &[GovernedTable],
    readable: &[(&str, &str)],
) -> Result<Rewritten> {
    let key = RewriteKey {
        dialect,
        sql,
        params: params.len(),
        default_schema,
        tables,
        readable,
    };
    // A long statement is rewritten afresh: a connector inventing long
    // texts cannot fill the cache with them.
    let cached = sql.len() <= REWRITE_MAX_SQL;
    let done = match cached.then(|| REWRITES.get(&key)).flatten() {
        Some(done) => done,
        None => {
            let done = std::sync::Arc::new(rewrite_uncached(&key)?);
            if cached {
                REWRITES.put(&key, done.clone());
            }
            done
        }
    };
    // The connector's repetition of the filter left out when its values
    // are the filter's (see `implied`).
    let (sql, order) = match &done.lean {
        Some(lean) if lean.holds(&params) => (&lean.sql, &lean.order),
        _ => (&done.sql, &done.order),
    };
    let mut values = params;
    values.extend(done.filter_params.iter().cloned());
    let params = order
        .iter()
        .map(|&i| values.get(i).cloned().ok_or(ORDER))
        .collect::<Result<Vec<Value>>>()?;
    Ok(Rewritten {
        sql: sql.clone(),
        params,
    })
}

const ORDER: SqlPolicyError = SqlPolicyError::Internal("placeholders could not be ordered");

/// Everything a rewrite depends on.
struct RewriteKey<'a> {
    dialect: SqlDialect,
    sql: &'a str,
    /// How many values the connector bound (their values do not matter).
    params: usize,
    default_schema: &'a str,
    tables: &'a [GovernedTable],
    readable: &'a [(&'a str, &'a str)],
}

impl RewriteKey<'_> {
    fn hash(&self, state: &std::hash::RandomState) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = state.build_hasher();
        std::mem::discriminant(&self.dialect).hash(&mut h);
        self.sql.hash(&mut h);
        self.params.hash(&mut h);
        self.default_schema.hash(&mut h);
        self.readable.hash(&mut h);
        for t in self.tables {
            (&t.schema, &t.name, &t.columns).hash(&mut h);
            hash_filter(&t.filter, &mut h);
        }
        h.finish()
    }

    fn owned(&self) -> OwnedKey {
        OwnedKey {
            dialect: self.dialect,
            sql: self.sql.to_owned(),
            params: self.params,
            default_schema: self.default_schema.to_owned(),
            tables: self.tables.to_vec(),
            readable: self
                .readable
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        }
    }
}

fn hash_filter(f: &RowFilter, h: &mut impl std::hash::Hasher) {
    use std::hash::Hash;
    std::mem::discriminant(f).hash(h);
    if let RowFilter::AnyOf(any) = f {
        any.len().hash(h);
        for all in any {
            all.len().hash(h);
            for p in all {
                p.column.hash(h);
                std::mem::discriminant(&p.op).hash(h);
                p.values.len().hash(h);
                for v in &p.values {
                    std::mem::discriminant(v).hash(h);
                    match v {
                        Value::Null => {}
                        Value::Boolean(b) => b.hash(h),
                        Value::Int(i) => i.hash(h),
                        Value::Float(x) => x.to_bits().hash(h),
                        Value::Decimal(t) | Value::Text(t) | Value::Json(t) => t.hash(h),
                        Value::Bytes(b) => b.hash(h),
                        Value::Date(d) => d.hash(h),
                        Value::Timestamp(t) => t.hash(h),
                    }
                }
            }
        }
    }
}

/// A [`RewriteKey`] kept in the cache.
struct OwnedKey {
    dialect: SqlDialect,
    sql: String,
    params: usize,
    default_schema: String,
    tables: Vec<GovernedTable>,
    readable: Vec<(String, String)>,
}

impl OwnedKey {
    fn matches(&self, k: &RewriteKey<'_>) -> bool {
        self.dialect == k.dialect
            && self.sql == k.sql
            && self.params == k.params
            && self.default_schema == k.default_schema
            && self.tables.as_slice() == k.tables
            && self.readable.len() == k.readable.len()
            && self
                .readable
                .iter()
                .zip(k.readable)
                .all(|((a, b), (c, d))| a == c && b == d)
    }
}

/// A rewrite's result with the connector's values left out: the statement,
/// the filters' values, and the order of all the values in the statement
/// (indexes into the connector's values followed by the filters').
struct Done {
    sql: String,
    filter_params: Vec<Value>,
    order: Vec<usize>,
    /// Postgres: the statement without conditions the filter implies.
    lean: Option<implied::Lean>,
}

/// Rewrites remembered by their inputs, exactly compared (a hash collision
/// is a miss). Bounded: past [`REWRITE_ENTRIES`] it starts over.
struct RewriteCache {
    state: std::hash::RandomState,
    entries: std::sync::Mutex<HashMap<u64, Bucket>>,
}

/// The rewrites whose inputs share one hash.
type Bucket = Vec<(OwnedKey, std::sync::Arc<Done>)>;

/// Rewrites remembered at once.
const REWRITE_ENTRIES: usize = 4096;
/// Longest statement whose rewrite is remembered (bytes).
const REWRITE_MAX_SQL: usize = 16 << 10;

static REWRITES: std::sync::LazyLock<RewriteCache> = std::sync::LazyLock::new(|| RewriteCache {
    state: std::hash::RandomState::new(),
    entries: std::sync::Mutex::default(),
});

impl RewriteCache {
    fn get(&self, k: &RewriteKey<'_>) -> Option<std::sync::Arc<Done>> {
        let hash = k.hash(&self.state);
        let entries = self.entries.lock().ok()?;
        entries
            .get(&hash)?
            .iter()
            .find(|(key, _)| key.matches(k))
            .map(|(_, done)| done.clone())
    }

    fn put(&self, k: &RewriteKey<'_>, done: std::sync::Arc<Done>) {
        let hash = k.hash(&self.state);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= REWRITE_ENTRIES {
                entries.clear();
            }
            let bucket = entries.entry(hash).or_default();
            if bucket.len() < 4 {
                bucket.push((k.owned(), done));
            }
        }
    }
}

fn rewrite_uncached(key: &RewriteKey<'_>) -> Result<Done> {
    let RewriteKey {
        dialect,
        sql,
        params,
        default_schema,
        tables,
        readable,
    } = *key;
    let mut statement = parse_one(dialect, sql)?;
    if !matches!(statement, Statement::Query(_)) {
        return Err(SqlPolicyError::NotSelect(statement_keyword(&statement)));
    }
    if dialect == SqlDialect::MySql {
        // `?` carries no number; give each one its position in the connector's
        // text now, so that injected placeholders can be told apart later.
        let found = number_placeholders(&mut statement, 1)?;
        if found != params {
            return Err(SqlPolicyError::Placeholder(format!(
                "the statement has {found} `?` placeholder(s) but {params} parameter(s) were bound"
            )));
        }
    }

    let materialize = dialect == SqlDialect::MySql && !plain_statement(&statement);
    let mut policy = Policy {
        dialect,
        default_schema,
        tables,
        readable,
        materialize,
        connector_params: params,
        statements: 0,
        expect_relation: false,
        filtered: HashMap::new(),
        filter_params: Vec::new(),
    };
    let implied = match dialect {
        SqlDialect::Postgres => implied::find(&policy, &statement),
        SqlDialect::MySql => Vec::new(),
    };
    if let ControlFlow::Break(err) = statement.visit(&mut policy) {
        return Err(err);
    }
    let filter_params = std::mem::take(&mut policy.filter_params);
    let values = params + filter_params.len();
    let (sql, order, lean) = match dialect {
        SqlDialect::Postgres => {
            let sql = statement.to_string();
            check_rendered(dialect, &sql, &statement)?;
            // Only an optimization: if it cannot be built, the full text serves.
            let lean = implied::lean(&statement, implied).ok().flatten();
            (sql, (0..values).collect(), lean)
        }
        SqlDialect::MySql => {
            let (sql, order) = finish_mysql(statement, values)?;
            (sql, order, None)
        }
    };
    Ok(Done {
        sql,
        filter_params,
        order,
        lean,
    })
}

/// MySQL binds by position, so the values are put in the order in which the
/// numbered markers (`?N`, meaning `values[N-1]`) appear in the rendered text,
/// and the markers are then turned back into plain `?`.
fn finish_mysql(mut statement: Statement, values: usize) -> Result<(String, Vec<usize>)> {
    let marked = statement.to_string();
    let tokens = tokenize(SqlDialect::MySql, &marked).map_err(|_| ORDER)?;
    // Each value must be used exactly once: every marker is distinct.
    let mut used = vec![false; values];
    let mut order = Vec::with_capacity(values);
    for token in &tokens {
        let Token::Placeholder(p) = token else {
            continue;
        };
        let index = placeholder_number(p, '?')
            .and_then(|n| n.checked_sub(1))
            .ok_or(ORDER)?;
        match used.get_mut(index) {
            Some(seen) if !*seen => {
                *seen = true;
                order.push(index);
            }
            _ => return Err(ORDER),
        }
    }
    if order.len() != values {
        return Err(ORDER);
    }

    let _ = statement.visit(&mut Unnumber);
    let sql = statement.to_string();
    check_rendered(SqlDialect::MySql, &sql, &statement)?;
    Ok((sql, order))
}

/// The walk over the connector's statement: checks every node it meets and
/// swaps governed tables for their filtered form on the way out.
struct Policy<'a> {
    dialect: SqlDialect,
    default_schema: &'a str,
    tables: &'a [GovernedTable],
    readable: &'a [(&'a str, &'a str)],
    /// MySQL: whether fences must be materialized (the statement is not
    /// [`plain_statement`]).
    materialize: bool,
    connector_params: usize,
    /// Statements seen; only the top-level query is allowed.
    statements: usize,
    /// Set by a plain-table factor: the next relation name is its name. Any
    /// other relation (one the walk did not anticipate) is refused.
    expect_relation: bool,
    /// Postgres: each governed table's filtered subquery, built once so that
    /// repeated references share placeholder numbers. Keyed by index in `tables`.
    filtered: HashMap<usize, Query>,
    /// Filter values, in placeholder-number order, after the connector's.
    filter_params: Vec<Value>,
}

impl VisitorMut for Policy<'_> {
    type Break = SqlPolicyError;

    fn pre_visit_statement(&mut self, _: &mut Statement) -> ControlFlow<Self::Break> {
        // DML can hide inside a query body (`SetExpr::Insert`, …).
        self.statements += 1;
        if self.statements > 1 {
            return ControlFlow::Break(SqlPolicyError::Unsupported(
                "a statement nested in a query".into(),
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<Self::Break> {
        into_flow(check_query(query))
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<Self::Break> {
        let checked = check_table_factor(factor);
        if checked.is_ok() && matches!(factor, TableFactor::Table { .. }) {
            self.expect_relation = true;
        }
        into_flow(checked)
    }

    fn pre_visit_relation(&mut self, _: &mut ObjectName) -> ControlFlow<Self::Break> {
        if !std::mem::take(&mut self.expect_relation) {
            return ControlFlow::Break(SqlPolicyError::Unsupported(
                "a table reference outside FROM".into(),
            ));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<Self::Break> {
        // Replacing after the children were walked means the injected subquery
        // is never walked itself (it would be replaced again, endlessly).
        into_flow(self.govern(factor))
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<Self::Break> {
        into_flow(check_expr(self.dialect, expr))
    }

    fn pre_visit_value(&mut self, value: &mut ast::Value) -> ControlFlow<Self::Break> {
        into_flow(self.check_value(value))
    }
}

impl Policy<'_> {
    /// Replaces a governed plain table by its filtered form, pins a readable
    /// one to its resolved schema, refuses anything else.
    fn govern(&mut self, factor: &mut TableFactor) -> Result<()> {
        let TableFactor::Table { name, alias, .. } = factor else {
            return Ok(());
        };
        let (schema, table, last) = self.resolve(name)?;
        let mut governed = self
            .tables
            .iter()
            .enumerate()
            .filter(|(_, t)| t.schema == schema && t.name == table)
            .map(|(i, _)| i);
        match (governed.next(), governed.next()) {
            (Some(index), None) => {
                let subquery = self.filtered_query(index)?;
                // Keep the reference's own alias (and column list) so the rest
                // of the statement reads the same; else its bare name.
                let alias = alias.take().unwrap_or(TableAlias {
                    explicit: true,
                    name: last,
                    columns: Vec::new(),
                });
                *factor = TableFactor::Derived {
                    lateral: false,
                    subquery: Box::new(subquery),
                    alias: Some(alias),
                    sample: None,
                };
                Ok(())
            }
            (Some(_), Some(_)) => Err(SqlPolicyError::InvalidFilter(format!("{schema}.{table}"))),
            (None, _) if self.readable.contains(&(schema.as_str(), table.as_str())) => {
                // Pin an unqualified name to the schema it was checked against,
                // so a search path cannot make it mean another relation.
                if name.0.len() == 1 {
                    let quote = ident_quote(self.dialect);
                    let schema = Ident::with_quote(quote, self.default_schema);
                    name.0.insert(0, ObjectNamePart::Identifier(schema));
                }
                Ok(())
            }
            (None, _) => Err(SqlPolicyError::UngovernedTable(format!("{schema}.{table}"))),
        }
    }

    /// `(schema, table)` as the database would resolve the name, plus the name's
    /// last part (the default alias).
    fn resolve(&self, name: &ObjectName) -> Result<(String, String, Ident)> {
        let mut parts = Vec::with_capacity(name.0.len());
        for part in &name.0 {
            match part {
                ObjectNamePart::Identifier(ident) => parts.push(ident),
                ObjectNamePart::Function(_) => {
                    return Err(SqlPolicyError::Unsupported(format!("table name `{name}`")));
                }
            }
        }
        let (schema, table) = match parts.as_slice() {
            [table] => (self.default_schema.to_owned(), *table),
            [schema, table] => (self.normalize(schema), *table),
            _ => {
                return Err(SqlPolicyError::Unsupported(format!(
                    "the name `{name}` with more than two parts"
                )));
            }
        };
        // sqlparser reads Postgres' `FROM ONLY t` as table `ONLY` aliased `t`.
        if self.dialect == SqlDialect::Postgres
            && parts.len() == 1
            && table.quote_style.is_none()
            && table.value.eq_ignore_ascii_case("only")
        {
            return Err(SqlPolicyError::Unsupported("FROM ONLY".into()));
        }
        Ok((schema, self.normalize(table), table.clone()))
    }

    /// An identifier as the catalog stores it: Postgres folds unquoted names to
    /// lower case (ASCII only, as the server does); MySQL compares as written.
    fn normalize(&self, ident: &Ident) -> String {
        match (self.dialect, ident.quote_style) {
            (SqlDialect::Postgres, None) => ident.value.to_ascii_lowercase(),
            _ => ident.value.clone(),
        }
    }

    /// The fence for `tables[index]`, with placeholders numbered after the
    /// connector's and the filter's already used.
    fn filtered_query(&mut self, index: usize) -> Result<Query> {
        if let Some(query) = self.filtered.get(&index) {
            return Ok(query.clone());
        }
        let Some(table) = self.tables.get(index) else {
            return Err(SqlPolicyError::Internal("governed table lookup failed"));
        };
        let invalid = || SqlPolicyError::InvalidFilter(format!("{}.{}", table.schema, table.name));
        table.filter.validate().map_err(|_| invalid())?;

        let next = self.connector_params + self.filter_params.len() + 1;
        let clause = table.filter.to_sql_where(self.dialect, next);
        let quote = |name: &str| quote_ident(self.dialect, name);
        let items = match &table.columns {
            None => "*".to_owned(),
            Some(columns) if columns.is_empty() => {
                format!("NULL AS {}", quote("silo_no_granted_column"))
            }
            Some(columns) => columns
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let fence = match self.dialect {
            SqlDialect::Postgres => " OFFSET 0",
            SqlDialect::MySql if self.materialize => " LIMIT 18446744073709551615",
            SqlDialect::MySql => "",
        };
        let text = format!(
            "SELECT {items} FROM {}.{} WHERE {}{fence}",
            quote(&table.schema),
            quote(&table.name),
            clause.sql
        );
        let Ok(Statement::Query(mut query)) = parse_one(self.dialect, &text) else {
            return Err(invalid());
        };
        qualify_columns(self.dialect, &mut query, &table.schema, &table.name)
            .ok_or_else(invalid)?;
        if self.dialect == SqlDialect::MySql {
            let found = number_placeholders(&mut *query, next).map_err(|_| invalid())?;
            if found != clause.params.len() {
                return Err(invalid());
            }
        }
        self.filter_params.extend(clause.params);
        if self.dialect == SqlDialect::Postgres {
            self.filtered.insert(index, (*query).clone());
        }
        Ok(*query)
    }

    /// Literals and placeholders the connector may write.
    fn check_value(&self, value: &ast::Value) -> Result<()> {
        use ast::Value as V;
        match value {
            V::Placeholder(p) => {
                let prefix = match self.dialect {
                    SqlDialect::Postgres => '$',
                    // Already numbered by `number_placeholders`.
                    SqlDialect::MySql => '?',
                };
                match placeholder_number(p, prefix) {
                    Some(n) if n <= self.connector_params => Ok(()),
                    _ => Err(SqlPolicyError::Placeholder(format!(
                        "`{p}` (the statement has {} parameter(s))",
                        self.connector_params
                    ))),
                }
            }
            V::SingleQuotedString(s)
            | V::DoubleQuotedString(s)
            | V::NationalStringLiteral(s)
            | V::SingleQuotedByteStringLiteral(s) => {
                // The renderer does not escape backslashes, and the servers
                // disagree on them (MySQL escapes, Postgres may not).
                if s.contains('\\') {
                    Err(SqlPolicyError::Unsupported(BACKSLASH_IN_STRING.into()))
                } else {
                    Ok(())
                }
            }
            V::Number(..) | V::HexStringLiteral(_) | V::Boolean(_) | V::Null => Ok(()),
            V::DollarQuotedString(_) | V::EscapedStringLiteral(_)
                if self.dialect == SqlDialect::Postgres =>
            {
                Ok(())
            }
            _ => Err(SqlPolicyError::Unsupported(
                "this kind of literal (use a plain quoted string or a parameter)".into(),
            )),
        }
    }
}

/// Whether a MySQL statement may read its fences merged: its only connector
/// code is what every fetch sends. That is, top-level `SELECT`s (or set
/// operations of them) over governed tables and cross joins, whose output
/// items are columns, literals or parameters, whose `WHERE` and join `ON` are
/// `AND`/`OR`/`NOT` trees of plain comparisons (`=`, `<>`, `<`, `<=`, `>`,
/// `>=`, `<=>`, `IS [NOT] NULL`, `[NOT] IN (literals)`, `[NOT] BETWEEN
/// literals`) of a column with literals or parameters, ordered by columns,
/// with no grouping, `HAVING`, window, subquery or derived table. Such a
/// comparison cannot fail on a value, and whatever it decides on a row the
/// filter rejects never shows: the row does not come out. Anything else
/// (a function, arithmetic, a subquery, a `HAVING` MariaDB may move into
/// `WHERE`, a derived table whose items MySQL may move into `WHERE`) could be
/// evaluated on another tenant's row, so the fences are materialized.
fn plain_statement(statement: &Statement) -> bool {
    match statement {
        Statement::Query(query) => plain_query(query),
        _ => false,
    }
}

fn plain_query(query: &Query) -> bool {
    let order_ok = match &query.order_by {
        None => true,
        Some(ast::OrderBy {
            kind: ast::OrderByKind::Expressions(exprs),
            interpolate: None,
        }) => exprs
            .iter()
            .all(|e| is_column(&e.expr) || is_literal(&e.expr)),
        Some(_) => false,
    };
    let limit_ok = match &query.limit_clause {
        None => true,
        Some(ast::LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            limit.as_ref().is_none_or(is_literal)
                && offset.as_ref().is_none_or(|o| is_literal(&o.value))
                && limit_by.is_empty()
        }
        Some(ast::LimitClause::OffsetCommaLimit { offset, limit }) => {
            is_literal(offset) && is_literal(limit)
        }
    };
    query.with.is_none() && order_ok && limit_ok && plain_body(&query.body)
}

fn plain_body(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(select) => {
            let items_ok = select.projection.iter().all(|item| match item {
                ast::SelectItem::UnnamedExpr(e)
                | ast::SelectItem::ExprWithAlias { expr: e, .. } => is_column(e) || is_literal(e),
                ast::SelectItem::Wildcard(_) | ast::SelectItem::QualifiedWildcard(..) => true,
            });
            let grouped = match &select.group_by {
                ast::GroupByExpr::All(_) => true,
                ast::GroupByExpr::Expressions(exprs, modifiers) => {
                    !exprs.is_empty() || !modifiers.is_empty()
                }
            };
            items_ok
                && !grouped
                && select.having.is_none()
                && select.named_window.is_empty()
                && select.selection.as_ref().is_none_or(plain_condition)
                && select.from.iter().all(plain_from)
        }
        SetExpr::Query(query) => plain_query(query),
        SetExpr::SetOperation { left, right, .. } => plain_body(left) && plain_body(right),
        _ => false,
    }
}

fn plain_from(from: &ast::TableWithJoins) -> bool {
    let factor_ok = |factor: &TableFactor| match factor {
        TableFactor::Table { .. } => true,
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => plain_from(table_with_joins),
        _ => false,
    };
    factor_ok(&from.relation)
        && from.joins.iter().all(|join| {
            use ast::JoinOperator as J;
            let constraint = match &join.join_operator {
                J::Join(c)
                | J::Inner(c)
                | J::Left(c)
                | J::LeftOuter(c)
                | J::Right(c)
                | J::RightOuter(c)
                | J::FullOuter(c)
                | J::StraightJoin(c) => c,
                J::CrossJoin(_) => &ast::JoinConstraint::None,
                _ => return false,
            };
            // `USING` and `NATURAL` compare columns with columns, which a
            // plain condition does not (two types may not compare cleanly).
            factor_ok(&join.relation)
                && match constraint {
                    ast::JoinConstraint::On(on) => plain_condition(on),
                    ast::JoinConstraint::None => true,
                    ast::JoinConstraint::Using(_) | ast::JoinConstraint::Natural => false,
                }
        })
}

/// An `AND`/`OR`/`NOT` tree of plain comparisons (see [`plain_statement`]).
fn plain_condition(expr: &Expr) -> bool {
    let literal_or_column = |l: &Expr, r: &Expr| {
        (is_column(l) && is_literal(r))
            || (is_literal(l) && is_column(r))
            || (is_literal(l) && is_literal(r))
    };
    match expr {
        Expr::Nested(inner) => plain_condition(inner),
        Expr::UnaryOp {
            op: ast::UnaryOperator::Not,
            expr,
        } => plain_condition(expr),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And | BinaryOperator::Or,
            right,
        } => plain_condition(left) && plain_condition(right),
        Expr::BinaryOp { left, op, right } => {
            matches!(
                op,
                BinaryOperator::Eq
                    | BinaryOperator::NotEq
                    | BinaryOperator::Lt
                    | BinaryOperator::LtEq
                    | BinaryOperator::Gt
                    | BinaryOperator::GtEq
                    | BinaryOperator::Spaceship
            ) && literal_or_column(left, right)
        }
        Expr::IsNull(e) | Expr::IsNotNull(e) => is_column(e),
        Expr::InList { expr, list, .. } => is_column(expr) && list.iter().all(is_literal),
        Expr::Between {
            expr, low, high, ..
        } => is_column(expr) && is_literal(low) && is_literal(high),
        e => is_literal(e),
    }
}

/// A bare column reference.
fn is_column(expr: &Expr) -> bool {
    matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
}

/// A literal or a placeholder (a signed number counts).
fn is_literal(expr: &Expr) -> bool {
    match expr {
        Expr::Value(v) => matches!(
            v.value,
            ast::Value::Number(..)
                | ast::Value::SingleQuotedString(_)
                | ast::Value::Boolean(_)
                | ast::Value::Null
                | ast::Value::Placeholder(_)
        ),
        Expr::UnaryOp {
            op: ast::UnaryOperator::Minus | ast::UnaryOperator::Plus,
            expr,
        } => matches!(&**expr, Expr::Value(v) if matches!(v.value, ast::Value::Number(..))),
        Expr::Nested(inner) => is_literal(inner),
        _ => false,
    }
}

/// Clauses of a query that the policy cannot enforce or that have side effects.
fn check_query(query: &Query) -> Result<()> {
    let refuse = |what: &str| Err(SqlPolicyError::Unsupported(what.into()));
    if query.with.is_some() {
        // CTE names shadow tables; tracking that scope is a bypass risk.
        return refuse("WITH (common table expressions)");
    }
    if !query.locks.is_empty() {
        return refuse("FOR UPDATE / FOR SHARE");
    }
    if query.for_clause.is_some() {
        return refuse("FOR XML / FOR JSON / FOR BROWSE");
    }
    if query.settings.is_some() || query.format_clause.is_some() {
        return refuse("SETTINGS / FORMAT");
    }
    if !query.pipe_operators.is_empty() {
        return refuse("pipe syntax");
    }
    if let Some(ast::LimitClause::LimitOffset { limit_by, .. }) = &query.limit_clause
        && !limit_by.is_empty()
    {
        return refuse("LIMIT BY");
    }
    if query
        .order_by
        .as_ref()
        .is_some_and(|o| o.interpolate.is_some())
    {
        return refuse("INTERPOLATE");
    }
    check_set_expr(&query.body)
}

/// Walks a query body down to its `SELECT`s; nested `Query`s get their own
/// [`check_query`] from the visitor.
fn check_set_expr(body: &SetExpr) -> Result<()> {
    match body {
        SetExpr::Select(select) => check_select(select),
        SetExpr::Query(_) | SetExpr::Values(_) => Ok(()),
        SetExpr::SetOperation { left, right, .. } => {
            check_set_expr(left)?;
            check_set_expr(right)
        }
        SetExpr::Table(_) => Err(SqlPolicyError::Unsupported("TABLE <name>".into())),
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => Err(
            SqlPolicyError::Unsupported("a data-modifying statement inside a query".into()),
        ),
    }
}

/// `SELECT` features beyond plain projection, filtering, grouping and windows.
fn check_select(select: &Select) -> Result<()> {
    let refused = if select.into.is_some() {
        Some("SELECT … INTO")
    } else if select.optimizer_hint.is_some() {
        Some("optimizer hints")
    } else if select.top.is_some() {
        Some("TOP")
    } else if select.exclude.is_some() {
        Some("EXCLUDE")
    } else if !select.lateral_views.is_empty() {
        Some("LATERAL VIEW")
    } else if select.prewhere.is_some() {
        Some("PREWHERE")
    } else if !select.connect_by.is_empty() {
        Some("CONNECT BY")
    } else if !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.sort_by.is_empty()
    {
        Some("CLUSTER BY / DISTRIBUTE BY / SORT BY")
    } else if select.qualify.is_some() {
        Some("QUALIFY")
    } else if select.value_table_mode.is_some() {
        Some("SELECT AS STRUCT / VALUE")
    } else if select.flavor != SelectFlavor::Standard {
        Some("FROM-first SELECT")
    } else {
        None
    };
    match refused {
        Some(what) => Err(SqlPolicyError::Unsupported(what.into())),
        None => Ok(()),
    }
}

/// Only plain tables, derived subqueries and parenthesised joins may appear in
/// `FROM`; every other factor can produce rows from outside any table.
fn check_table_factor(factor: &TableFactor) -> Result<()> {
    let refused: String = match factor {
        TableFactor::Table {
            name,
            args,
            with_hints,
            version,
            with_ordinality,
            partitions,
            json_path,
            sample,
            index_hints,
            alias: _,
        } => {
            if args.is_some() {
                format!("the table function `{name}`")
            } else if sample.is_some() {
                "TABLESAMPLE".into()
            } else if *with_ordinality {
                "WITH ORDINALITY".into()
            } else if !with_hints.is_empty() || !index_hints.is_empty() {
                "table or index hints".into()
            } else if version.is_some() {
                "time travel (FOR SYSTEM_TIME / AT)".into()
            } else if !partitions.is_empty() {
                "PARTITION selection".into()
            } else if json_path.is_some() {
                "a JSON path in FROM".into()
            } else {
                return Ok(());
            }
        }
        TableFactor::Derived { sample, .. } => {
            if sample.is_some() {
                "TABLESAMPLE".into()
            } else {
                return Ok(());
            }
        }
        TableFactor::NestedJoin { .. } => return Ok(()),
        TableFactor::Function { name, .. } => format!("the table function `{name}`"),
        TableFactor::TableFunction { .. } => "TABLE(…)".into(),
        TableFactor::UNNEST { .. } => "UNNEST".into(),
        TableFactor::JsonTable { .. } => "JSON_TABLE".into(),
        TableFactor::OpenJsonTable { .. } => "OPENJSON".into(),
        TableFactor::XmlTable { .. } => "XMLTABLE".into(),
        TableFactor::Pivot { .. } => "PIVOT".into(),
        TableFactor::Unpivot { .. } => "UNPIVOT".into(),
        TableFactor::MatchRecognize { .. } => "MATCH_RECOGNIZE".into(),
        TableFactor::SemanticView { .. } => "SEMANTIC_VIEW".into(),
    };
    Err(SqlPolicyError::Unsupported(refused))
}

/// Expressions: an allow-list of node kinds, with function calls and custom
/// operators checked further. Unknown kinds are refused.
fn check_expr(dialect: SqlDialect, expr: &Expr) -> Result<()> {
    let unsupported = |what: &str| Err(SqlPolicyError::Unsupported(what.into()));
    match expr {
        Expr::Identifier(ident) => check_ident(dialect, ident, true),
        // `a.b` is a column of a table; longer names are schema- or
        // field-qualified, and Postgres resolves `a.b.c` forms it cannot
        // match to a column as calls.
        Expr::CompoundIdentifier(idents) if idents.len() > 2 => unsupported(
            "a column name with more than two parts (qualify a column by its table or alias only)",
        ),
        Expr::CompoundIdentifier(idents) => idents
            .iter()
            .try_for_each(|ident| check_ident(dialect, ident, false)),
        Expr::Function(function) => check_function(dialect, function),
        Expr::BinaryOp { op, .. } => check_operator(op),
        Expr::AnyOp { compare_op, .. } | Expr::AllOp { compare_op, .. } => {
            check_operator(compare_op)
        }
        // Postgres reads `(x).f` as the call `f(x)` when `x` has no field `f`:
        // a function call that names no function. Subscripts stay.
        Expr::CompoundFieldAccess { access_chain, .. } => {
            if access_chain
                .iter()
                .all(|a| matches!(a, ast::AccessExpr::Subscript(_)))
            {
                Ok(())
            } else {
                unsupported("field selection `(expr).name` (it can call a function by name)")
            }
        }
        Expr::JsonAccess { .. } => unsupported("the `:` path operator"),
        Expr::Cast { data_type, .. } => check_type(data_type),
        Expr::TypedString(typed) => check_type(&typed.data_type),
        Expr::Convert {
            data_type: Some(data_type),
            ..
        } => check_type(data_type),
        Expr::Overlay { .. } => Err(SqlPolicyError::FunctionNotAllowed("overlay".into())),
        Expr::IsFalse(_)
        | Expr::IsNotFalse(_)
        | Expr::IsTrue(_)
        | Expr::IsNotTrue(_)
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsUnknown(_)
        | Expr::IsNotUnknown(_)
        | Expr::IsDistinctFrom(..)
        | Expr::IsNotDistinctFrom(..)
        | Expr::IsNormalized { .. }
        | Expr::InList { .. }
        | Expr::InSubquery { .. }
        | Expr::Between { .. }
        | Expr::Like { .. }
        | Expr::ILike { .. }
        | Expr::SimilarTo { .. }
        | Expr::RLike { .. }
        | Expr::UnaryOp { .. }
        | Expr::Convert { .. }
        | Expr::AtTimeZone { .. }
        | Expr::Extract { .. }
        | Expr::Ceil { .. }
        | Expr::Floor { .. }
        | Expr::Position { .. }
        | Expr::Substring { .. }
        | Expr::Trim { .. }
        | Expr::Collate { .. }
        | Expr::Nested(_)
        | Expr::Value(_)
        | Expr::Prefixed { .. }
        | Expr::Case { .. }
        | Expr::Exists { .. }
        | Expr::Subquery(_)
        | Expr::GroupingSets(_)
        | Expr::Cube(_)
        | Expr::Rollup(_)
        | Expr::Tuple(_)
        | Expr::Array(_)
        | Expr::Interval(_)
        | Expr::Wildcard(_)
        | Expr::QualifiedWildcard(..) => Ok(()),
        Expr::InUnnest { .. } => unsupported("UNNEST"),
        Expr::MatchAgainst { .. } => unsupported("MATCH … AGAINST"),
        Expr::OuterJoin(_) => unsupported("the (+) outer join"),
        Expr::Prior(_) => unsupported("PRIOR"),
        Expr::Lambda(_) => unsupported("lambda expressions"),
        Expr::MemberOf(_) => unsupported("MEMBER OF"),
        Expr::Struct { .. } | Expr::Named { .. } | Expr::Dictionary(_) | Expr::Map(_) => {
            unsupported("STRUCT / MAP literals")
        }
    }
}

/// Refuses identifiers the server would evaluate as something other than a
/// column: MySQL `@var` / `@@sysvar`, and (when `alone`, i.e. not after a dot)
/// keywords that are parameterless functions (`current_user`, …).
fn check_ident(dialect: SqlDialect, ident: &Ident, alone: bool) -> Result<()> {
    if ident.quote_style.is_some() {
        return Ok(());
    }
    if ident.value.starts_with('@') {
        return Err(SqlPolicyError::Unsupported(format!(
            "the variable `{}`",
            ident.value
        )));
    }
    if !alone {
        return Ok(());
    }
    let bare = match dialect {
        SqlDialect::Postgres => PG_BARE_FUNCTIONS,
        SqlDialect::MySql => MYSQL_BARE_FUNCTIONS,
    };
    let lower = ident.value.to_ascii_lowercase();
    if bare.contains(&lower.as_str()) {
        return Err(SqlPolicyError::FunctionNotAllowed(ident.value.clone()));
    }
    Ok(())
}

/// Operators that dispatch to arbitrary functions or assign variables.
fn check_operator(op: &BinaryOperator) -> Result<()> {
    match op {
        BinaryOperator::Custom(_)
        | BinaryOperator::PGCustomBinaryOperator(_)
        | BinaryOperator::Assignment => {
            Err(SqlPolicyError::Unsupported(format!("the operator `{op}`")))
        }
        _ => Ok(()),
    }
}

/// Whether `dialect` allows a call of `name` (lower case, unqualified).
pub(super) fn function_allowed(dialect: SqlDialect, name: &str) -> bool {
    let own = match dialect {
        SqlDialect::Postgres => PG_FUNCTIONS,
        SqlDialect::MySql => MYSQL_FUNCTIONS,
    };
    COMMON_FUNCTIONS.contains(&name) || own.contains(&name)
}

/// Types a value may be cast to (or a typed literal written as): plain
/// built-in scalar types. A cast runs the target type's input function or a
/// cast function: Postgres' `reg*` types read the catalog (`'x'::regclass`,
/// `::regrole`, …), and a named type may be a user-defined one whose cast
/// runs any function its owner chose.
pub(super) fn check_type(data_type: &ast::DataType) -> Result<()> {
    use ast::DataType as T;
    let allowed = match data_type {
        T::Character(_)
        | T::Char(_)
        | T::CharacterVarying(_)
        | T::CharVarying(_)
        | T::Varchar(_)
        | T::Nvarchar(_)
        | T::Text
        | T::TinyText
        | T::MediumText
        | T::LongText
        | T::Uuid
        | T::Binary(_)
        | T::Varbinary(_)
        | T::Blob(_)
        | T::Bytea
        | T::Numeric(_)
        | T::Decimal(_)
        | T::Dec(_)
        | T::Float(_)
        | T::Float4
        | T::Float8
        | T::Real
        | T::Double(_)
        | T::DoublePrecision
        | T::TinyInt(_)
        | T::SmallInt(_)
        | T::MediumInt(_)
        | T::Int(_)
        | T::Int2(_)
        | T::Int4(_)
        | T::Int8(_)
        | T::Integer(_)
        | T::BigInt(_)
        | T::Signed
        | T::SignedInteger
        | T::Unsigned
        | T::UnsignedInteger
        | T::Bool
        | T::Boolean
        | T::Date
        | T::Time(..)
        | T::Datetime(_)
        | T::Timestamp(..)
        | T::Interval { .. }
        | T::JSON
        | T::JSONB => true,
        T::Array(ast::ArrayElemTypeDef::AngleBracket(inner))
        | T::Array(ast::ArrayElemTypeDef::SquareBracket(inner, _))
        | T::Array(ast::ArrayElemTypeDef::Parenthesis(inner)) => {
            return check_type(inner);
        }
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(SqlPolicyError::Unsupported(format!(
            "the type `{data_type}` (cast to a plain built-in type: text, integer, numeric, \
             double precision, boolean, date, timestamp, interval, json, bytea, uuid)"
        )))
    }
}

/// A call is allowed when [`function_allowed`] says so, optionally qualified
/// by `pg_catalog` on Postgres.
fn check_function(dialect: SqlDialect, function: &Function) -> Result<()> {
    let refuse = || SqlPolicyError::FunctionNotAllowed(function.name.to_string());
    let parts: Vec<&Ident> = function
        .name
        .0
        .iter()
        .map(|part| part.as_ident().ok_or_else(refuse))
        .collect::<Result<_>>()?;
    // Postgres folds unquoted names; a quoted name must already be the
    // built-in's spelling. A quoted MySQL name means a stored function.
    let normalize = |ident: &Ident| match (dialect, ident.quote_style) {
        (_, None) => Some(ident.value.to_ascii_lowercase()),
        (SqlDialect::Postgres, Some('"')) => Some(ident.value.clone()),
        _ => None,
    };
    let name = match (dialect, parts.as_slice()) {
        (_, [name]) => normalize(name),
        (SqlDialect::Postgres, [schema, name])
            if normalize(schema).as_deref() == Some("pg_catalog") =>
        {
            normalize(name)
        }
        _ => None,
    };
    match name {
        Some(name) if function_allowed(dialect, &name) => {}
        _ => return Err(refuse()),
    }
    if !matches!(function.parameters, FunctionArguments::None) {
        return Err(SqlPolicyError::Unsupported(
            "parametric function calls".into(),
        ));
    }
    Ok(())
}

/// Qualifies every column the fence reads (its items and its filter) with its
/// table, so that a column missing from the table is an error instead of
/// silently resolving to a column of an enclosing query (which could make the
/// filter always true).
fn qualify_columns(
    dialect: SqlDialect,
    query: &mut Query,
    schema: &str,
    table: &str,
) -> Option<()> {
    struct Qualify(Vec<Ident>);
    impl VisitorMut for Qualify {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Expr::Identifier(column) = expr {
                let mut parts = self.0.clone();
                parts.push(column.clone());
                *expr = Expr::CompoundIdentifier(parts);
            }
            ControlFlow::Continue(())
        }
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    select.selection.as_ref()?;
    let quote = ident_quote(dialect);
    let _ = select.visit(&mut Qualify(vec![
        Ident::with_quote(quote, schema),
        Ident::with_quote(quote, table),
    ]));
    Some(())
}

/// MySQL: renames each bare `?` in `node` to `?N`, numbering from `first` in
/// source order (by span). Returns how many there were. Any other placeholder
/// spelling is refused, so a marker can never come from the connector.
fn number_placeholders<N: VisitMut>(node: &mut N, first: usize) -> Result<usize> {
    #[derive(Default)]
    struct Collect {
        starts: Vec<Location>,
        values: usize,
    }
    impl VisitorMut for Collect {
        type Break = SqlPolicyError;
        fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<Self::Break> {
            if let Expr::Value(v) = expr
                && matches!(v.value, ast::Value::Placeholder(_))
            {
                self.starts.push(v.span.start);
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_value(&mut self, value: &mut ast::Value) -> ControlFlow<Self::Break> {
            if let ast::Value::Placeholder(p) = value {
                if p != "?" {
                    return ControlFlow::Break(SqlPolicyError::Placeholder(format!(
                        "`{p}` (only `?` is supported)"
                    )));
                }
                self.values += 1;
            }
            ControlFlow::Continue(())
        }
    }
    struct Number<'a> {
        order: &'a [Location],
        first: usize,
    }
    impl VisitorMut for Number<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Expr::Value(v) = expr
                && matches!(v.value, ast::Value::Placeholder(_))
                && let Ok(i) = self.order.binary_search(&v.span.start)
            {
                v.value = ast::Value::Placeholder(format!("?{}", self.first + i));
            }
            ControlFlow::Continue(())
        }
    }

    let mut collect = Collect::default();
    if let ControlFlow::Break(err) = node.visit(&mut collect) {
        return Err(err);
    }
    let mut order = collect.starts;
    order.sort_unstable();
    order.dedup();
    // Every placeholder must have its own real source position, else the order
    // of the bind values could not be trusted.
    if order.len() != collect.values || order.iter().any(|l| l.line == 0) {
        return Err(SqlPolicyError::Internal(
            "placeholders could not be ordered",
        ));
    }
    let _ = node.visit(&mut Number {
        order: &order,
        first,
    });
    Ok(order.len())
}

/// Turns the MySQL markers `?N` back into `?`.
struct Unnumber;

impl VisitorMut for Unnumber {
    type Break = ();
    fn pre_visit_value(&mut self, value: &mut ast::Value) -> ControlFlow<()> {
        if let ast::Value::Placeholder(p) = value {
            "?".clone_into(p);
        }
        ControlFlow::Continue(())
    }
}

/// Final self-check of the text that will be sent. sqlparser's renderer is not
/// always faithful (`- -1` prints as the comment `--1`; quotes next to
/// backslashes are not escaped), so the text must contain no comment and no
/// backslash in a plain quoted string or identifier, and must parse back to
/// exactly the statement that was checked.
fn check_rendered(dialect: SqlDialect, sql: &str, statement: &Statement) -> Result<()> {
    let tokens =
        tokenize(dialect, sql).map_err(|_| SqlPolicyError::Internal("it does not tokenize"))?;
    for token in &tokens {
        match token {
            Token::Whitespace(Whitespace::SingleLineComment { .. })
            | Token::Whitespace(Whitespace::MultiLineComment(_)) => {
                return Err(SqlPolicyError::Internal("it renders with a comment"));
            }
            Token::Word(word) if word.quote_style.is_some() && word.value.contains('\\') => {
                return Err(SqlPolicyError::Unsupported(
                    "a backslash in a quoted identifier".into(),
                ));
            }
            Token::SingleQuotedString(s)
            | Token::DoubleQuotedString(s)
            | Token::NationalStringLiteral(s)
            | Token::SingleQuotedByteStringLiteral(s)
                if s.contains('\\') =>
            {
                return Err(SqlPolicyError::Unsupported(BACKSLASH_IN_STRING.into()));
            }
            _ => {}
        }
    }
    match parse_one(dialect, sql) {
        Ok(reparsed) if &reparsed == statement => Ok(()),
        _ => Err(SqlPolicyError::Internal(
            "it does not parse back to the same statement",
        )),
    }
}

/// Parses exactly one statement.
fn parse_one(dialect: SqlDialect, sql: &str) -> Result<Statement> {
    let parsed: Result<Vec<Statement>, ParserError> = match dialect {
        SqlDialect::Postgres => Parser::parse_sql(&PostgreSqlDialect {}, sql),
        SqlDialect::MySql => Parser::parse_sql(&MySqlDialect {}, sql),
    };
    let mut statements = parsed.map_err(|e| SqlPolicyError::Parse(e.to_string()))?;
    match (statements.pop(), statements.is_empty()) {
        (Some(statement), true) => Ok(statement),
        _ => Err(SqlPolicyError::NotSingleStatement),
    }
}

fn tokenize(dialect: SqlDialect, sql: &str) -> Result<Vec<Token>, TokenizerError> {
    match dialect {
        SqlDialect::Postgres => Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize(),
        SqlDialect::MySql => Tokenizer::new(&MySqlDialect {}, sql).tokenize(),
    }
}

fn ident_quote(dialect: SqlDialect) -> char {
    match dialect {
        SqlDialect::Postgres => '"',
        SqlDialect::MySql => '`',
    }
}

/// `N` of a placeholder `<prefix>N` (N ≥ 1, canonical digits), else `None`.
fn placeholder_number(placeholder: &str, prefix: char) -> Option<usize> {
    let digits = placeholder.strip_prefix(prefix)?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n >= 1)
}

/// The leading keyword of a refused statement, for the error text.
fn statement_keyword(statement: &Statement) -> String {
    let text = statement.to_string();
    let word: String = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .take(32)
        .collect();
    if word.is_empty() {
        "this statement".into()
    } else {
        word.to_ascii_uppercase()
    }
}

fn into_flow(result: Result<()>) -> ControlFlow<SqlPolicyError> {
    match result {
        Ok(()) => ControlFlow::Continue(()),
        Err(err) => ControlFlow::Break(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silo_types::{Op, Predicate};

    fn eq(column: &str, value: Value) -> RowFilter {
        RowFilter::AnyOf(vec![vec![Predicate {
            column: column.into(),
            op: Op::Eq,
            values: vec![value],
        }]])
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn governed(name: &str, filter: RowFilter) -> GovernedTable {
        GovernedTable {
            schema: "public".into(),
            name: name.into(),
            filter,
            columns: None,
        }
    }

    fn orders() -> GovernedTable {
        governed("orders", eq("tenant", text("acme")))
    }

    fn customers() -> GovernedTable {
        governed("customers", eq("region", text("eu")))
    }

    fn pg(sql: &str, params: Vec<Value>) -> Result<Rewritten> {
        rewrite(
            SqlDialect::Postgres,
            sql,
            params,
            "public",
            &[orders(), customers()],
            &[],
        )
    }

    const ORDERS: &str = r#"(SELECT * FROM "public"."orders" WHERE (("public"."orders"."tenant" = $1)) OFFSET 0) AS orders"#;

    #[test]
    fn governed_table_is_replaced_by_its_filtered_form() {
        let out = pg("SELECT name, tenant FROM orders", vec![]).unwrap();
        assert_eq!(out.sql, format!("SELECT name, tenant FROM {ORDERS}"));
        assert_eq!(out.params, vec![text("acme")]);
    }

    #[test]
    fn filter_params_follow_connector_params() {
        let out = pg(
            "SELECT * FROM orders WHERE amount > $1",
            vec![Value::Int(5)],
        )
        .unwrap();
        assert!(out.sql.contains(r#""tenant" = $2"#), "{}", out.sql);
        assert!(out.sql.ends_with("WHERE amount > $1"), "{}", out.sql);
        assert_eq!(out.params, vec![Value::Int(5), text("acme")]);
    }

    #[test]
    fn aliases_are_kept_and_each_table_gets_its_own_numbers() {
        let out = pg(
            "SELECT o.name FROM orders o JOIN customers c ON c.id = o.cid",
            vec![],
        )
        .unwrap();
        assert_eq!(
            out.sql,
            concat!(
                r#"SELECT o.name FROM (SELECT * FROM "public"."orders" WHERE (("public"."orders"."tenant" = $1)) OFFSET 0) o "#,
                r#"JOIN (SELECT * FROM "public"."customers" WHERE (("public"."customers"."region" = $2)) OFFSET 0) c ON c.id = o.cid"#
            )
        );
        assert_eq!(out.params, vec![text("acme"), text("eu")]);
    }

    #[test]
    fn column_alias_lists_are_kept() {
        let out = pg("SELECT x.a FROM orders AS x (a, b)", vec![]).unwrap();
        assert!(out.sql.ends_with(") AS x (a, b)"), "{}", out.sql);
    }

    #[test]
    fn repeated_table_reuses_its_numbers() {
        let out = pg(
            "SELECT a.id FROM orders a, orders b WHERE a.id = b.id AND a.x = $1",
            vec![Value::Int(1)],
        )
        .unwrap();
        assert_eq!(
            out.sql.matches(r#""tenant" = $2"#).count(),
            2,
            "{}",
            out.sql
        );
        assert!(!out.sql.contains("$3"));
        assert_eq!(out.params, vec![Value::Int(1), text("acme")]);
    }

    #[test]
    fn subqueries_everywhere_are_rewritten() {
        for sql in [
            "SELECT 1 FROM customers WHERE id IN (SELECT id FROM orders)",
            "SELECT (SELECT count(*) FROM orders) FROM customers",
            "SELECT 1 FROM customers WHERE EXISTS (SELECT 1 FROM orders WHERE orders.cid = customers.id)",
            "SELECT id FROM customers UNION SELECT id FROM orders",
            "SELECT id FROM customers c, LATERAL (SELECT * FROM orders WHERE cid = c.id) o",
            "SELECT * FROM (SELECT * FROM orders) t",
            "SELECT * FROM (customers JOIN orders ON true)",
            "SELECT region FROM customers GROUP BY region HAVING count(*) > (SELECT count(*) FROM orders)",
        ] {
            let out = pg(sql, vec![]).unwrap();
            assert!(
                out.sql.contains(r#"FROM "public"."orders" WHERE"#),
                "{sql} -> {}",
                out.sql
            );
            assert!(!out.sql.contains("FROM orders"), "{sql} -> {}", out.sql);
            let both = sql.contains("customers");
            assert_eq!(
                out.sql.contains(r#"FROM "public"."customers" WHERE"#),
                both,
                "{sql} -> {}",
                out.sql
            );
            assert_eq!(out.params.len(), if both { 2 } else { 1 });
        }
    }

    #[test]
    fn postgres_identifier_case_folding() {
        let out = pg("SELECT * FROM ORDERS", vec![]).unwrap();
        assert!(out.sql.contains(r#"FROM "public"."orders" WHERE"#));
        assert!(out.sql.ends_with("AS ORDERS"), "{}", out.sql);
        assert!(pg(r#"SELECT * FROM public."orders""#, vec![]).is_ok());
        assert_eq!(
            pg(r#"SELECT * FROM "Orders""#, vec![]),
            Err(SqlPolicyError::UngovernedTable("public.Orders".into()))
        );
    }

    #[test]
    fn statements_other_than_one_select_are_refused() {
        for (sql, word) in [
            ("UPDATE orders SET x = 1", "UPDATE"),
            ("DELETE FROM orders", "DELETE"),
            ("INSERT INTO orders VALUES (1)", "INSERT"),
            ("DROP TABLE orders", "DROP"),
            ("SET search_path = evil", "SET"),
            ("COPY orders TO STDOUT", "COPY"),
            ("CALL p()", "CALL"),
            ("EXPLAIN ANALYZE SELECT * FROM orders", "EXPLAIN"),
        ] {
            assert_eq!(
                pg(sql, vec![]),
                Err(SqlPolicyError::NotSelect(word.into())),
                "{sql}"
            );
        }
        assert_eq!(
            pg("SELECT 1; DROP TABLE orders", vec![]),
            Err(SqlPolicyError::NotSingleStatement)
        );
        assert_eq!(pg("", vec![]), Err(SqlPolicyError::NotSingleStatement));
        assert!(matches!(
            pg("SELEKT * FROM orders", vec![]),
            Err(SqlPolicyError::Parse(_))
        ));
        assert!(matches!(
            pg("SELECT ((", vec![]),
            Err(SqlPolicyError::Parse(_))
        ));
    }

    #[test]
    fn ungoverned_relations_are_refused() {
        assert_eq!(
            pg("SELECT * FROM secrets", vec![]),
            Err(SqlPolicyError::UngovernedTable("public.secrets".into()))
        );
        assert_eq!(
            pg("SELECT * FROM pg_catalog.pg_authid", vec![]),
            Err(SqlPolicyError::UngovernedTable(
                "pg_catalog.pg_authid".into()
            ))
        );
        assert_eq!(
            pg(
                "SELECT * FROM orders WHERE id IN (SELECT id FROM secrets)",
                vec![]
            ),
            Err(SqlPolicyError::UngovernedTable("public.secrets".into()))
        );
        assert_eq!(
            pg("SELECT * FROM a.b.c", vec![]),
            Err(SqlPolicyError::Unsupported(
                "the name `a.b.c` with more than two parts".into()
            ))
        );
        assert_eq!(
            pg("SELECT * FROM ONLY orders", vec![]),
            Err(SqlPolicyError::Unsupported("FROM ONLY".into()))
        );
    }

    #[test]
    fn functions_outside_the_allow_list_are_refused() {
        for (sql, name) in [
            ("SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
            ("SELECT pg_read_binary_file('/x')", "pg_read_binary_file"),
            (
                "SELECT query_to_xml('select 1', true, true, '')",
                "query_to_xml",
            ),
            ("SELECT lo_import('/etc/passwd')", "lo_import"),
            ("SELECT lo_export(1, '/tmp/x')", "lo_export"),
            ("SELECT set_config('role', 'x', false)", "set_config"),
            (
                "SELECT current_setting('data_directory')",
                "current_setting",
            ),
            (
                "SELECT name FROM orders WHERE pg_sleep(10) IS NULL",
                "pg_sleep",
            ),
            ("SELECT pg_terminate_backend(1)", "pg_terminate_backend"),
            ("SELECT nextval('s')", "nextval"),
            ("SELECT txid_current()", "txid_current"),
            ("SELECT version()", "version"),
            ("SELECT dblink('x', 'y')", "dblink"),
            ("SELECT PG_CATALOG.PG_LS_DIR('.')", "PG_CATALOG.PG_LS_DIR"),
            ("SELECT public.count(*) FROM orders", "public.count"),
            (r#"SELECT "COUNT"(*) FROM orders"#, r#""COUNT""#),
            ("SELECT current_user", "current_user"),
            ("SELECT current_schema", "current_schema"),
            (
                "SELECT count(*) FILTER (WHERE pg_sleep(1) IS NULL) FROM orders",
                "pg_sleep",
            ),
            (
                "SELECT sum(amount) OVER (ORDER BY version()) FROM orders",
                "version",
            ),
            (
                "SELECT 1 FROM orders WHERE id IN (SELECT lo_import('/x'))",
                "lo_import",
            ),
            ("SELECT * FROM orders ORDER BY pg_sleep(1)", "pg_sleep"),
        ] {
            assert_eq!(
                pg(sql, vec![]),
                Err(SqlPolicyError::FunctionNotAllowed(name.into())),
                "{sql}"
            );
        }
    }

    #[test]
    fn allowed_expressions_pass() {
        let sql = "SELECT lower(name), pg_catalog.upper(name), COUNT(*), sum(amount) FILTER (WHERE amount > 0), \
                   coalesce(x, 0), amount::text, CAST(amount AS INT), CASE WHEN a THEN 1 ELSE 2 END, \
                   EXTRACT(YEAR FROM created), substring(name FROM 1 FOR 2), trim(name), position('a' IN name), \
                   date_trunc('day', created), current_date, row_number() OVER () IS NULL \
                   FROM orders WHERE name LIKE 'a%' AND name ILIKE $1 AND id IN (1, 2) AND x IS NULL \
                   AND amount BETWEEN 1 AND 2 GROUP BY 1 ORDER BY 1 LIMIT 10 OFFSET 5";
        // row_number is not on the list: the allow-list is strict.
        assert_eq!(
            pg(sql, vec![text("x")]),
            Err(SqlPolicyError::FunctionNotAllowed("row_number".into()))
        );
        let sql = sql.replace(", row_number() OVER () IS NULL", "");
        let out = pg(&sql, vec![text("x")]).unwrap();
        assert!(out.sql.contains(r#""tenant" = $2"#), "{}", out.sql);
        assert_eq!(out.params, vec![text("x"), text("acme")]);
    }

    #[test]
    fn refused_constructs() {
        let unsupported = |s: &str| Err(SqlPolicyError::Unsupported(s.into()));
        for (sql, expected) in [
            (
                "WITH x AS (SELECT * FROM orders) SELECT * FROM x",
                unsupported("WITH (common table expressions)"),
            ),
            (
                "SELECT * FROM customers WHERE id IN (WITH x AS (SELECT 1) SELECT * FROM x)",
                unsupported("WITH (common table expressions)"),
            ),
            ("SELECT * INTO t2 FROM orders", unsupported("SELECT … INTO")),
            (
                "SELECT * FROM orders FOR UPDATE",
                unsupported("FOR UPDATE / FOR SHARE"),
            ),
            (
                "SELECT * FROM orders FOR SHARE",
                unsupported("FOR UPDATE / FOR SHARE"),
            ),
            (
                "SELECT * FROM generate_series(1,3)",
                unsupported("the table function `generate_series`"),
            ),
            (
                "SELECT * FROM pg_ls_dir('.')",
                unsupported("the table function `pg_ls_dir`"),
            ),
            (
                "SELECT * FROM dblink('x','y') AS t(a int)",
                unsupported("the table function `dblink`"),
            ),
            ("SELECT * FROM UNNEST(ARRAY[1, 2])", unsupported("UNNEST")),
            (
                "SELECT * FROM orders TABLESAMPLE SYSTEM (10)",
                unsupported("TABLESAMPLE"),
            ),
            ("SELECT 1 UNION TABLE secrets", unsupported("TABLE <name>")),
            (
                "SELECT 1 FROM orders WHERE 1 OPERATOR(pg_catalog.=) 1",
                unsupported("the operator `OPERATOR(pg_catalog.=)`"),
            ),
        ] {
            assert_eq!(pg(sql, vec![]), expected, "{sql}");
        }
    }

    #[test]
    fn placeholders_must_match_the_params() {
        assert_eq!(
            pg("SELECT $2", vec![Value::Int(1)]),
            Err(SqlPolicyError::Placeholder(
                "`$2` (the statement has 1 parameter(s))".into()
            ))
        );
        assert!(matches!(
            pg("SELECT $0", vec![Value::Int(1)]),
            Err(SqlPolicyError::Placeholder(_))
        ));
        assert!(matches!(
            pg("SELECT $01", vec![Value::Int(1)]),
            Err(SqlPolicyError::Placeholder(_))
        ));
        assert!(pg("SELECT ?", vec![Value::Int(1)]).is_err());
        // A connector placeholder cannot reach the filter's numbers.
        assert!(matches!(
            pg(
                "SELECT * FROM orders WHERE tenant = $2",
                vec![Value::Int(1)]
            ),
            Err(SqlPolicyError::Placeholder(_))
        ));
        // Unused connector params are fine.
        let out = pg("SELECT $1", vec![Value::Int(1), Value::Int(2)]).unwrap();
        assert_eq!(out.params.len(), 2);
    }

    #[test]
    fn filter_values_never_reach_the_text() {
        let evil = "' OR 1=1 --";
        let tables = [governed("orders", eq("tenant", text(evil)))];
        let out = rewrite(
            SqlDialect::Postgres,
            "SELECT * FROM orders",
            vec![],
            "public",
            &tables,
            &[],
        )
        .unwrap();
        assert!(
            !out.sql.contains(evil) && !out.sql.contains("1=1"),
            "{}",
            out.sql
        );
        assert_eq!(out.params, vec![text(evil)]);
        let out = rewrite(
            SqlDialect::MySql,
            "SELECT * FROM orders",
            vec![],
            "public",
            &tables,
            &[],
        )
        .unwrap();
        assert!(!out.sql.contains("1=1"), "{}", out.sql);
        assert_eq!(out.params, vec![text(evil)]);
    }

    #[test]
    fn readable_relations_pass_and_governed_ones_are_still_filtered() {
        let readable = [("information_schema", "columns"), ("public", "meta")];
        let tables = [orders()];
        let describe = |sql: &str| {
            rewrite(
                SqlDialect::Postgres,
                sql,
                vec![],
                "public",
                &tables,
                &readable,
            )
        };
        let out =
            describe("SELECT column_name FROM information_schema.columns WHERE table_name = $1");
        assert_eq!(
            out,
            Err(SqlPolicyError::Placeholder(
                "`$1` (the statement has 0 parameter(s))".into()
            ))
        );
        let out = rewrite(
            SqlDialect::Postgres,
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1",
            vec![text("orders")],
            "public",
            &tables,
            &readable,
        )
        .unwrap();
        assert_eq!(
            out.sql,
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1"
        );
        assert_eq!(out.params, vec![text("orders")]);
        // Unqualified readable names are pinned to the schema they were checked in.
        assert_eq!(
            describe("SELECT * FROM meta").unwrap().sql,
            r#"SELECT * FROM "public".meta"#
        );
        let out = describe("SELECT * FROM orders LIMIT 0").unwrap();
        assert!(
            out.sql.contains(r#"FROM "public"."orders" WHERE"#),
            "{}",
            out.sql
        );
        assert_eq!(out.params, vec![text("acme")]);
        assert_eq!(
            describe("SELECT * FROM information_schema.tables"),
            Err(SqlPolicyError::UngovernedTable(
                "information_schema.tables".into()
            ))
        );
    }

    #[test]
    fn the_postgres_connectors_fetch_statement_passes() {
        // Its describe is run end to end by the integration test
        // `describe_lists_governed_datasets_only`, against the real catalog.
        // Its fetch (silo_sdk::select), with its own pushed-down filter.
        let fetch =
            r#"SELECT "name", "amount" FROM "public"."orders" WHERE (("region" = $1)) LIMIT 10"#;
        let out = pg(fetch, vec![text("eu")]).unwrap();
        assert_eq!(
            out.sql,
            concat!(
                r#"SELECT "name", "amount" FROM (SELECT * FROM "public"."orders" WHERE "#,
                r#"(("public"."orders"."tenant" = $2)) OFFSET 0) AS "orders" WHERE (("region" = $1)) LIMIT 10"#
            )
        );
        assert_eq!(out.params, vec![text("eu"), text("acme")]);
    }

    #[test]
    fn no_rows_filter_has_no_params() {
        let tables = [governed("orders", RowFilter::NoRows)];
        let out = rewrite(
            SqlDialect::Postgres,
            "SELECT * FROM orders",
            vec![],
            "public",
            &tables,
            &[],
        )
        .unwrap();
        assert_eq!(
            out.sql,
            r#"SELECT * FROM (SELECT * FROM "public"."orders" WHERE (false) OFFSET 0) AS orders"#
        );
        assert!(out.params.is_empty());
    }

    #[test]
    fn invalid_filters_are_refused_without_their_values() {
        let bad = RowFilter::AnyOf(vec![vec![Predicate {
            column: "tenant".into(),
            op: Op::In,
            values: vec![],
        }]]);
        let tables = [governed("orders", bad)];
        let err = rewrite(
            SqlDialect::Postgres,
            "SELECT * FROM orders",
            vec![],
            "public",
            &tables,
            &[],
        )
        .unwrap_err();
        assert_eq!(err, SqlPolicyError::InvalidFilter("public.orders".into()));
    }

    #[test]
    fn renderer_pitfalls_are_caught() {
        // sqlparser prints `- -1` as `--1`, a comment that would swallow the rest.
        assert_eq!(
            pg("SELECT - -1, '\n* FROM secrets --' FROM orders", vec![]),
            Err(SqlPolicyError::Internal("it renders with a comment"))
        );
        assert!(matches!(
            pg(r"SELECT 'a\' FROM orders", vec![]),
            Err(SqlPolicyError::Unsupported(_))
        ));
        assert!(pg("SELECT 'it''s' FROM orders", vec![]).is_ok());
        assert!(matches!(
            pg("SELECT 1 FROM orders WHERE x = U&'d\\0061t'", vec![]),
            Err(SqlPolicyError::Unsupported(_))
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let sql = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(matches!(pg(&sql, vec![]), Err(SqlPolicyError::Parse(_))));
    }

    fn my(sql: &str, params: Vec<Value>) -> Result<Rewritten> {
        let tables = [
            GovernedTable {
                schema: "shop".into(),
                name: "orders".into(),
                filter: eq("tenant", text("acme")),
                columns: Some(cols(&["id", "cid", "x", "amount", "tenant"])),
            },
            GovernedTable {
                schema: "shop".into(),
                name: "customers".into(),
                filter: RowFilter::AnyOf(vec![vec![Predicate {
                    column: "region".into(),
                    op: Op::In,
                    values: vec![text("eu"), text("uk")],
                }]]),
                columns: Some(cols(&["id", "k", "region"])),
            },
        ];
        rewrite(SqlDialect::MySql, sql, params, "shop", &tables, &[])
    }

    /// A remembered rewrite gives what a fresh one would: the connector's
    /// values of this call (not the first call's) in their positions, and
    /// another user's filter is another entry, with its own values.
    #[test]
    fn remembered_rewrites_bind_this_calls_values_and_this_users_filter() {
        let sql = "SELECT * FROM customers c JOIN orders o ON o.cid = c.id WHERE o.amount > ? AND c.k = ?";
        let first = my(sql, vec![Value::Int(5), text("a")]).unwrap();
        let again = my(sql, vec![Value::Int(7), text("b")]).unwrap();
        assert_eq!(first.sql, again.sql);
        let swap = |p: &[Value]| -> Vec<Value> {
            p.iter()
                .map(|v| match v {
                    Value::Int(5) => Value::Int(7),
                    Value::Text(t) if t == "a" => text("b"),
                    other => other.clone(),
                })
                .collect()
        };
        assert_eq!(again.params, swap(&first.params));
        assert_eq!(first.params.len(), 5);

        let for_user = |tenant: &str| {
            rewrite(
                SqlDialect::Postgres,
                "SELECT id FROM orders WHERE amount > $1",
                vec![Value::Int(1)],
                "public",
                &[governed("orders", eq("tenant", text(tenant)))],
                &[],
            )
            .unwrap()
        };
        let (acme, globex) = (for_user("acme"), for_user("globex"));
        assert_eq!(acme.sql, globex.sql);
        assert_eq!(acme.params, vec![Value::Int(1), text("acme")]);
        assert_eq!(globex.params, vec![Value::Int(1), text("globex")]);
        assert_eq!(for_user("acme"), acme);
        // A filter of another shape is another statement.
        let none = rewrite(
            SqlDialect::Postgres,
            "SELECT id FROM orders WHERE amount > $1",
            vec![Value::Int(1)],
            "public",
            &[governed("orders", RowFilter::NoRows)],
            &[],
        )
        .unwrap();
        assert_ne!(none.sql, acme.sql);
        assert_eq!(none.params, vec![Value::Int(1)]);
        // A refused statement stays refused however often it comes.
        for _ in 0..2 {
            assert!(pg("SELECT pg_read_file('x') FROM orders", vec![]).is_err());
        }
    }

    /// Every input of a rewrite is part of what it is remembered by: the
    /// granted columns, the default schema, the readable relations and the
    /// number of bound values each give their own result, never a
    /// neighbour's.
    #[test]
    fn a_remembered_rewrite_is_never_another_inputs() {
        let sql = "SELECT * FROM orders";
        let with = |columns: Option<Vec<String>>, schema: &str, readable: &[(&str, &str)]| {
            let mut t = orders();
            t.columns = columns;
            rewrite(SqlDialect::Postgres, sql, vec![], schema, &[t], readable)
        };
        let all = with(None, "public", &[]).unwrap();
        let narrow = with(Some(cols(&["id", "tenant"])), "public", &[]).unwrap();
        assert_ne!(all.sql, narrow.sql);
        assert!(!narrow.sql.contains("amount"), "{}", narrow.sql);
        assert_eq!(with(None, "public", &[]).unwrap(), all);
        // Another default schema: `orders` is no longer the governed table.
        assert_ne!(with(None, "other", &[]).map(|r| r.sql), Ok(all.sql.clone()));
        // A relation readable for describe is readable only where granted.
        let catalog = "SELECT table_name FROM information_schema.tables";
        let describe = rewrite(
            SqlDialect::Postgres,
            catalog,
            vec![],
            "public",
            &[orders()],
            &[("information_schema", "tables")],
        );
        assert!(describe.is_ok());
        assert!(pg(catalog, vec![]).is_err());
        // The number of bound values is part of the key: the filter's value
        // is numbered after the connector's.
        let none = pg("SELECT id FROM orders", vec![]).unwrap();
        let one = pg("SELECT id FROM orders", vec![Value::Int(1)]).unwrap();
        assert_ne!(none.sql, one.sql);
        assert_eq!(none.params, vec![text("acme")]);
        assert_eq!(one.params, vec![Value::Int(1), text("acme")]);
    }

    #[test]
    fn mysql_params_follow_placeholder_positions() {
        let out = my("SELECT * FROM orders WHERE amount > ?", vec![Value::Int(5)]).unwrap();
        assert_eq!(
            out.sql,
            concat!(
                "SELECT * FROM (SELECT `shop`.`orders`.`id`, `shop`.`orders`.`cid`, `shop`.`orders`.`x`, ",
                "`shop`.`orders`.`amount`, `shop`.`orders`.`tenant` FROM `shop`.`orders` ",
                "WHERE ((`shop`.`orders`.`tenant` = ?))) AS orders WHERE amount > ?"
            )
        );
        assert_eq!(out.params, vec![text("acme"), Value::Int(5)]);
    }

    #[test]
    fn mysql_interleaves_and_repeats() {
        let out = my(
            "SELECT ? AS a, o.id FROM orders o JOIN customers c ON c.id = o.cid AND c.k = ? \
             WHERE o.id IN (SELECT id FROM orders WHERE x = ?) LIMIT ?, ?",
            vec![
                Value::Int(1),
                Value::Int(2),
                Value::Int(3),
                Value::Int(4),
                Value::Int(5),
            ],
        )
        .unwrap();
        assert_eq!(out.sql.matches('?').count(), out.params.len());
        assert_eq!(
            out.params,
            vec![
                Value::Int(1),
                text("acme"),
                text("eu"),
                text("uk"),
                Value::Int(2),
                text("acme"),
                Value::Int(3),
                Value::Int(4),
                Value::Int(5),
            ]
        );
        // A subquery: not a plain statement, so every fence is materialized.
        assert_eq!(
            out.sql.matches("LIMIT 18446744073709551615").count(),
            3,
            "{}",
            out.sql
        );
        assert!(out.sql.ends_with("LIMIT ?, ?"), "{}", out.sql);
    }

    #[test]
    fn mysql_question_marks_in_strings_are_not_placeholders() {
        let out = my("SELECT '?' FROM orders WHERE a = ?", vec![Value::Int(7)]).unwrap();
        assert!(
            out.sql.starts_with("SELECT '?' FROM (SELECT"),
            "{}",
            out.sql
        );
        assert_eq!(out.params, vec![text("acme"), Value::Int(7)]);
        let out = my("SELECT 1 FROM customers", vec![]).unwrap();
        assert!(out.sql.contains("IN (?, ?)"), "{}", out.sql);
        assert_eq!(out.params, vec![text("eu"), text("uk")]);
    }

    #[test]
    fn mysql_refusals() {
        assert!(matches!(
            my("SELECT ?", vec![]),
            Err(SqlPolicyError::Placeholder(_))
        ));
        assert!(matches!(
            my("SELECT ?1", vec![Value::Int(1)]),
            Err(SqlPolicyError::Placeholder(_))
        ));
        assert!(matches!(
            my("SELECT @@version", vec![]),
            Err(SqlPolicyError::Unsupported(_))
        ));
        assert_eq!(
            my("SELECT LOAD_FILE('/etc/passwd')", vec![]),
            Err(SqlPolicyError::FunctionNotAllowed("LOAD_FILE".into()))
        );
        assert_eq!(
            my("SELECT * FROM orders WHERE SLEEP(5) = 0", vec![]),
            Err(SqlPolicyError::FunctionNotAllowed("SLEEP".into()))
        );
        assert_eq!(
            my("SELECT BENCHMARK(1000000, MD5('a'))", vec![]),
            Err(SqlPolicyError::FunctionNotAllowed("BENCHMARK".into()))
        );
        assert_eq!(
            my("SELECT `count`(*) FROM orders", vec![]),
            Err(SqlPolicyError::FunctionNotAllowed("`count`".into()))
        );
        assert_eq!(
            my("SELECT * FROM mysql.user", vec![]),
            Err(SqlPolicyError::UngovernedTable("mysql.user".into()))
        );
        assert_eq!(
            my("SELECT * FROM ORDERS", vec![]),
            Err(SqlPolicyError::UngovernedTable("shop.ORDERS".into()))
        );
        assert!(matches!(
            my(r"SELECT 'a\\' FROM orders", vec![]),
            Err(SqlPolicyError::Unsupported(_))
        ));
    }

    fn fenced(dialect: SqlDialect, sql: &str) -> Result<Rewritten> {
        let schema = match dialect {
            SqlDialect::Postgres => "public",
            SqlDialect::MySql => "shop",
        };
        let tables = [GovernedTable {
            schema: schema.into(),
            name: "orders".into(),
            filter: eq("tenant", text("acme")),
            // `secret` exists in the table but is not granted.
            columns: Some(cols(&["id", "note", "amount", "tenant"])),
        }];
        rewrite(dialect, sql, vec![], schema, &tables, &[])
    }

    #[test]
    fn postgres_fence_is_an_offset_subquery_of_granted_columns() {
        let out = fenced(
            SqlDialect::Postgres,
            "SELECT id, note FROM orders WHERE note::int > 0",
        )
        .unwrap();
        assert_eq!(
            out.sql,
            concat!(
                r#"SELECT id, note FROM (SELECT "public"."orders"."id", "public"."orders"."note", "#,
                r#""public"."orders"."amount", "public"."orders"."tenant" FROM "public"."orders" "#,
                r#"WHERE (("public"."orders"."tenant" = $1)) OFFSET 0) AS orders WHERE note::INT > 0"#
            )
        );
        // A hidden column is simply not there to be read, under any name.
        let out = fenced(SqlDialect::Postgres, "SELECT secret AS note FROM orders").unwrap();
        assert!(
            !out.sql.contains("secret\"") && !out.sql.contains(".\"secret"),
            "{}",
            out.sql
        );
        assert!(!out.sql.contains("SELECT *"), "{}", out.sql);
    }

    #[test]
    fn mysql_fences_are_materialized_unless_the_statement_is_plain() {
        const MATERIALIZED: &str = "LIMIT 18446744073709551615)";
        // What fetches send: plain output and plain comparisons, merged.
        for sql in [
            "SELECT `id`, `tenant` FROM `orders` WHERE ((`tenant` = 'acme')) AND id > 3 AND note IS NOT NULL ORDER BY id LIMIT 5",
            "SELECT * FROM orders WHERE id IN (1, 2) OR NOT (id BETWEEN 3 AND 4)",
            "SELECT o.id, 1 AS one FROM orders o CROSS JOIN orders p WHERE p.tenant <=> 'x'",
            "SELECT id FROM orders UNION SELECT id FROM orders WHERE id = -1",
        ] {
            let out = fenced(SqlDialect::MySql, sql).unwrap();
            assert!(!out.sql.contains(MATERIALIZED), "{sql}: {}", out.sql);
        }
        // Any expression a planner could evaluate on another tenant's row.
        for sql in [
            "SELECT id FROM orders WHERE LENGTH(note) > 2",
            "SELECT id FROM orders WHERE (note LIKE 'E%') * 9223372036854775807 * 2 = 0",
            "SELECT id FROM orders WHERE note >= 'ze' AND COALESCE(amount, 1) * 2 > 0",
            "SELECT id FROM orders WHERE id IN (SELECT id FROM orders)",
            "SELECT id FROM orders o WHERE o.id = (SELECT p.id FROM orders p WHERE p.note = o.note)",
            "SELECT note, count(*) FROM orders GROUP BY note",
            "SELECT note AS n FROM orders HAVING n >= 'z'",
            "SELECT id FROM orders ORDER BY length(note)",
            "SELECT a.id FROM orders a JOIN orders b ON a.id = b.amount + 1",
            "SELECT a.id FROM orders a JOIN orders b ON a.id = b.id",
            "SELECT a.id FROM orders a JOIN orders b USING (id)",
            "SELECT x FROM (SELECT note * 2 AS x FROM orders) d WHERE x > 1",
            "SELECT note * 2 FROM orders",
            "SELECT id FROM orders WHERE note LIKE 'E%'",
        ] {
            let out = fenced(SqlDialect::MySql, sql).unwrap();
            let governed = sql.matches("orders").count();
            assert_eq!(
                out.sql.matches(MATERIALIZED).count(),
                governed,
                "{sql}: {}",
                out.sql
            );
        }
    }

    #[test]
    fn every_call_form_is_checked() {
        let refused = |dialect, sql: &str| {
            let result = fenced(dialect, sql);
            assert!(
                matches!(
                    result,
                    Err(SqlPolicyError::Unsupported(_) | SqlPolicyError::FunctionNotAllowed(_))
                ),
                "{sql}: {result:?}"
            );
        };
        for sql in [
            // Field-selection notation calls the function.
            "SELECT (amount).pg_sleep FROM orders",
            "SELECT (1).current_setting FROM orders",
            "SELECT ('x').pg_advisory_lock FROM orders",
            "SELECT (id).pg_terminate_backend FROM orders",
            "SELECT (((note))).pg_stat_get_live_tuples FROM orders",
            "SELECT (orders.id).pg_sleep FROM orders",
            // Catalog-reading and user-defined types.
            "SELECT 'orders'::regclass FROM orders",
            "SELECT CAST('x' AS regrole) FROM orders",
            "SELECT note::regproc FROM orders",
            "SELECT note::text::regnamespace FROM orders",
            "SELECT regclass 'pg_class' FROM orders",
            "SELECT id::evil_type FROM orders",
            "SELECT id::public.evil_type FROM orders",
            "SELECT ARRAY[id]::regclass[] FROM orders",
            // Operators by name, schema-qualified names, three-part columns.
            "SELECT 1 FROM orders WHERE id OPERATOR(pg_catalog.+) 1 = 2",
            "SELECT public.orders.id FROM orders",
            "SELECT orders.id.pg_sleep FROM orders",
            "SELECT pg_catalog.pg_sleep(1) FROM orders",
            "SELECT current_setting('x') FROM orders",
            "SELECT current_user FROM orders",
        ] {
            refused(SqlDialect::Postgres, sql);
        }
        for sql in [
            // Not a MySQL built-in: it would resolve to a stored function.
            "SELECT strpos(note, 'a') FROM orders",
            "SELECT date_trunc('day', note) FROM orders",
            "SELECT shop.leak(id) FROM orders",
            "SELECT CAST(id AS evil) FROM orders",
            "SELECT shop.orders.id FROM orders",
            "SELECT @@version FROM orders",
        ] {
            refused(SqlDialect::MySql, sql);
        }
        // What stays: casts to plain types, subscripts, qualified columns.
        for sql in [
            "SELECT note::int, CAST(amount AS numeric(10, 2)), DATE '2024-01-01', id::text FROM orders",
            "SELECT orders.id, o.note FROM orders, orders o WHERE o.id = orders.id",
            "SELECT (ARRAY[id, 2])[1] FROM orders",
            "SELECT to_char(amount, '999'), lower(note) FROM orders",
        ] {
            assert!(fenced(SqlDialect::Postgres, sql).is_ok(), "{sql}");
        }
        assert!(
            fenced(
                SqlDialect::MySql,
                "SELECT CAST(id AS SIGNED), ifnull(note, 'x') FROM orders"
            )
            .is_ok()
        );
    }
}
