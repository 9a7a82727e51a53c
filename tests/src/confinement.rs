//! Confinement: a hostile connector observes only what its embed user may
//! see, on Postgres and MariaDB. Each hostile connector here smuggles whatever
//! it learns out as rows of its user's own tenant, so the tests look for the
//! other tenant's values in everything a fetch released or reported, and
//! check that what the connector saw does not change when only the other
//! tenant's data does (no yes/no oracle).
use std::time::Duration;

use mysql_async::prelude::Queryable;
use silo_host::config::SiloConfig;
use silo_host::demo::{Reader, admin, exec, prepare_mysql_reader, prepare_reader};
use silo_host::error::{Error, Result};
use silo_host::silo::{DatasetAccess, FetchSpec, Row, Silo};
use silo_types::{Op, Predicate, RowFilter, Value};

use crate::connectors;
use crate::support::admin_conn;

/// Found in every value of the other tenant (notes, hidden column).
const FOREIGN: &str = "GLOBEX";
/// Found in every value of the hidden column, whoever's row it is.
const HIDDEN: &str = "S3CRET";

const USERS: &str = r#"
[datasets.orders]
datasource = "main"
row_filter = ["tenant = {{user.tenant}}"]

[datasets.shared]
datasource = "main"
row_filter = ["tenant in {{user.tenants}}"]

# Seven values: an `IN` list costs the planner more than a cast.
[users.alice]
attributes = { tenant = "acme", tenants = ["acme", "initech", "t3", "t4", "t5", "t6", "t7"] }

[users.bob]
attributes = { tenant = "globex", tenants = ["globex"] }
"#;

/// Rows of `orders` (and `shared`, the same rows): acme's notes are small
/// integers that every expression of the hostile connectors accepts;
/// globex's notes are `globex`'s: text that fails casts, time zones and
/// overflows and carries [`FOREIGN`] ([`TEXT_NOTES`]), or integers that pass
/// them all ([`NUMBER_NOTES`]); `secret` is the column groups hide.
fn rows_sql(globex: [&str; 3]) -> String {
    format!(
        "(1, 'acme', '1', 10.5, '{HIDDEN}-a1'), (2, 'acme', '2', 20, '{HIDDEN}-a2'), \
         (3, 'acme', '3', 30, '{HIDDEN}-a3'), (4, 'globex', '{}', 40, '{HIDDEN}-{FOREIGN}-4'), \
         (5, 'globex', '{}', 50, '{HIDDEN}-{FOREIGN}-5'), (6, 'globex', '{}', 60, '{HIDDEN}-{FOREIGN}-6')",
        globex[0], globex[1], globex[2]
    )
}

/// Other tenant's notes that make every attack fail if it reads them.
const TEXT_NOTES: [&str; 3] = [
    "Europe/GLOBEX-one",
    "Europe/GLOBEX-twox",
    "Europe/GLOBEX-threeyy",
];
/// Other tenant's notes every attack accepts.
const NUMBER_NOTES: [&str; 3] = ["7", "8", "9"];

/// One database of either kind with `orders` and `shared`.
enum Db {
    Pg {
        schema: String,
        client: tokio_postgres::Client,
    },
    My {
        db: String,
        conn: mysql_async::Conn,
    },
}

struct Fixture {
    db: Db,
    dir: std::path::PathBuf,
}

impl Fixture {
    async fn postgres(name: &str) -> Fixture {
        let schema = format!("silo_c_{name}");
        let client = admin(&admin_conn()).await.unwrap();
        let mut ddl = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};");
        for t in ["orders", "shared"] {
            ddl.push_str(&format!(
                "CREATE TABLE {schema}.{t} (id int PRIMARY KEY, tenant text NOT NULL, note text NOT NULL, \
                   amount numeric(10,2) NOT NULL, secret text NOT NULL);
                 CREATE INDEX ON {schema}.{t} (tenant); CREATE INDEX ON {schema}.{t} (note);
                 INSERT INTO {schema}.{t} VALUES {};
                 ANALYZE {schema}.{t};",
                rows_sql(TEXT_NOTES)
            ));
        }
        exec(&client, &ddl).await.unwrap();
        Fixture {
            db: Db::Pg { schema, client },
            dir: dir(name, "pg"),
        }
    }

    async fn mysql(name: &str) -> Fixture {
        let db = format!("silo_c_{name}");
        let url = std::env::var("SILO_TEST_MYSQL_ADMIN")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
        let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
            .await
            .expect("MariaDB must be running on 127.0.0.1:3306");
        conn.query_drop(format!("DROP DATABASE IF EXISTS {db}"))
            .await
            .unwrap();
        conn.query_drop(format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        for t in ["orders", "shared"] {
            for stmt in [
                format!(
                    "CREATE TABLE {db}.{t} (id int PRIMARY KEY, tenant varchar(40) NOT NULL, \
                     note varchar(80) NOT NULL, amount decimal(10,2) NOT NULL, secret varchar(80) NOT NULL, \
                     KEY (tenant), KEY (note))"
                ),
                format!("INSERT INTO {db}.{t} VALUES {}", rows_sql(TEXT_NOTES)),
                format!("ANALYZE TABLE {db}.{t}"),
            ] {
                conn.query_drop(stmt).await.unwrap();
            }
        }
        Fixture {
            db: Db::My { db, conn },
            dir: dir(name, "my"),
        }
    }

    /// Loads a config serving `orders` and `shared` with `connector`.
    async fn silo(&mut self, connector: &str, extra: &str) -> Result<Silo> {
        let cache = std::env::temp_dir().join("silo-test-compile-cache");
        let body = format!(
            "cache_dir = {:?}\n{extra}\n{USERS}",
            cache.display().to_string()
        );
        let prepared = match &mut self.db {
            Db::Pg { schema, client } => {
                let role = format!("{schema}_r");
                let reader = Reader {
                    schema,
                    role: &role,
                    tables: &["orders", "shared"],
                    connector,
                };
                prepare_reader(client, &admin_conn(), &self.dir, &reader, &body).await?
            }
            Db::My { db, conn } => {
                let role = format!("{db}_r");
                let reader = Reader {
                    schema: db,
                    role: &role,
                    tables: &["orders", "shared"],
                    connector,
                };
                prepare_mysql_reader(conn, ("127.0.0.1", 3306), &self.dir, &reader, &body).await?
            }
        };
        Silo::open(&SiloConfig::load(&prepared.config_path)?).await
    }

    /// Like [`Fixture::silo`], with `settings` added to the datasource.
    async fn silo_with(&mut self, connector: &str, extra: &str, settings: &str) -> Result<Silo> {
        drop(self.silo(connector, extra).await);
        let path = self.dir.join("silo.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{}\n{settings}\n", text.trim_end())).unwrap();
        Silo::open(&SiloConfig::load(&path)?).await
    }

    /// Gives globex other notes: nothing alice's connector sees may change.
    async fn change_foreign_rows(&mut self, notes: [&str; 3]) {
        let rows = rows_sql(notes);
        match &mut self.db {
            Db::Pg { schema, client } => exec(
                client,
                &format!(
                    "DELETE FROM {schema}.orders; INSERT INTO {schema}.orders VALUES {rows};
                     DELETE FROM {schema}.shared; INSERT INTO {schema}.shared VALUES {rows};"
                ),
            )
            .await
            .unwrap(),
            Db::My { db, conn } => {
                for t in ["orders", "shared"] {
                    conn.query_drop(format!("DELETE FROM {db}.{t}"))
                        .await
                        .unwrap();
                    conn.query_drop(format!("INSERT INTO {db}.{t} VALUES {rows}"))
                        .await
                        .unwrap();
                }
            }
        }
    }
}

fn dir(name: &str, kind: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "silo-tests-{}-confine-{kind}-{name}",
        std::process::id()
    ))
}

fn spec(dataset: &str, columns: &[&str]) -> FetchSpec {
    FetchSpec {
        dataset: dataset.into(),
        columns: Some(columns.iter().map(|c| (*c).to_owned()).collect()),
        limit: None,
    }
}

/// Every cell of `rows` as text, one line per row.
fn text_of(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|v| match v {
                    Value::Text(t) => t.clone(),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

/// What a hostile connector smuggled out for `user`, fetching `dataset`,
/// with each observed result's rows in a canonical order. Values, errors and
/// counts are compared; the order of rows a statement does not fully order
/// is not: which of two tied rows comes first can follow the whole table's
/// statistics (SECURITY.md, "What is left").
async fn observed(silo: &Silo, user: &str, dataset: &str) -> Vec<String> {
    let rows = silo
        .fetch(user, &spec(dataset, &["id", "tenant", "note"]))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    text_of(&rows).iter().map(|l| order_free(l)).collect()
}

/// `… => rows N: a; b; c` with the rows sorted.
fn order_free(line: &str) -> String {
    let Some((head, rest)) = line.split_once(" => rows ") else {
        return line.to_owned();
    };
    let Some((count, rows)) = rest.split_once(": ") else {
        return line.to_owned();
    };
    let mut rows: Vec<&str> = rows.split("; ").collect();
    rows.sort_unstable();
    format!("{head} => rows {count}: {}", rows.join("; "))
}

fn assert_nothing_foreign(seen: &[String], also: &str) {
    for line in seen {
        // What was observed, after the attempt's own text.
        let line = line
            .split_once(" => ")
            .map_or(line.as_str(), |(_, seen)| seen);
        assert!(
            !line.contains(FOREIGN) && !line.contains("Europe/") && !line.contains(also),
            "the connector observed another tenant's value: {line}"
        );
    }
}

/// Runs the error-oracle connector as alice on `dataset`, changes globex's
/// rows, runs it again: nothing foreign either time, and the same answers.
async fn error_oracles_see_only_the_users_rows(mut fx: Fixture) {
    let silo = fx.silo(connectors::SQL_ERROR_ORACLE, "").await.unwrap();
    for dataset in ["orders", "shared"] {
        // A difference must repeat to count: an oracle answers the same
        // every time, a database busy with other tests does not.
        let mut changed = Vec::new();
        for _ in 0..2 {
            let before = observed(&silo, "alice", dataset).await;
            assert_nothing_foreign(&before, HIDDEN);
            // The attacks ran: most were accepted and answered from alice's rows.
            let answered = before.iter().filter(|l| l.contains("=> rows")).count();
            assert!(answered >= 8, "{before:#?}");
            fx.change_foreign_rows(NUMBER_NOTES).await;
            let after = observed(&silo, "alice", dataset).await;
            fx.change_foreign_rows(TEXT_NOTES).await;
            changed = before
                .into_iter()
                .zip(after)
                .filter(|(b, a)| b != a)
                .collect::<Vec<_>>();
            if changed.is_empty() {
                break;
            }
            eprintln!("{dataset}: observations differed once: {changed:#?}");
        }
        assert!(
            changed.is_empty(),
            "what the connector saw depends on another tenant's rows: {changed:#?}"
        );
    }
}

#[tokio::test]
async fn postgres_error_oracles_see_only_the_users_rows() {
    error_oracles_see_only_the_users_rows(Fixture::postgres("oracle").await).await;
}

#[tokio::test]
async fn mysql_error_oracles_see_only_the_users_rows() {
    error_oracles_see_only_the_users_rows(Fixture::mysql("oracle").await).await;
}

/// Every call form is refused by the policy, before the database sees it.
async fn call_forms_are_refused(mut fx: Fixture, needles: &[&str]) {
    let silo = fx.silo(connectors::SQL_CALL_FORMS, "").await.unwrap();
    let err = silo
        .fetch("alice", &spec("orders", &["id", "tenant"]))
        .await
        .map(|_| ())
        .unwrap_err();
    crate::support::assert_all_refused(&err, 16, needles);
}

#[tokio::test]
async fn postgres_call_forms_are_refused() {
    let needles = [
        "field selection",
        "regclass",
        "regrole",
        "type `public.leak`",
        "OPERATOR",
        "pg_sleep",
        "current_user",
        "SLEEP",
        "test.leak",
    ];
    call_forms_are_refused(Fixture::postgres("calls").await, &needles).await;
}

#[tokio::test]
async fn mysql_call_forms_are_refused() {
    let needles = [
        "strpos",
        "test.leak",
        "`concat`",
        "type `leak`",
        "current_user",
    ];
    call_forms_are_refused(Fixture::mysql("calls").await, &needles).await;
}

/// With `secret` hidden from alice's group, nothing she fetches carries it,
/// under any name, and nothing depends on it.
async fn hidden_columns_do_not_exist_inside_the_fence(mut fx: Fixture) {
    let silo = fx.silo(connectors::HIDDEN_COLUMN_ALIAS, "").await.unwrap();
    let access = |_: &str| {
        Ok(DatasetAccess {
            filter: RowFilter::AnyOf(vec![vec![Predicate {
                column: "tenant".into(),
                op: Op::Eq,
                values: vec![Value::Text("acme".into())],
            }]]),
            columns: Some(vec!["id".into(), "tenant".into(), "note".into()]),
        })
    };
    let rows = silo
        .fetch_with(&access, &spec("orders", &["id", "tenant", "note"]))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let seen = text_of(&rows);
    assert_eq!(seen.len(), 8, "{seen:#?}");
    assert_nothing_foreign(&seen, HIDDEN);
    // The connector's own view of the fence: only granted columns exist.
    assert!(
        seen.iter()
            .any(|l| l.contains("SELECT * FROM orders => rows 3")),
        "{seen:#?}"
    );
    // Without the grant restriction, the same connector reads it: the test
    // can see the column when it is there.
    let open = |name: &str| access(name).map(|a| DatasetAccess { columns: None, ..a });
    let rows = silo
        .fetch_with(&open, &spec("orders", &["id", "tenant", "note"]))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(
        text_of(&rows).iter().any(|l| l.contains(HIDDEN)),
        "the hidden-column attack is not exercised"
    );
}

#[tokio::test]
async fn postgres_hidden_columns_do_not_exist_inside_the_fence() {
    hidden_columns_do_not_exist_inside_the_fence(Fixture::postgres("hidden").await).await;
}

#[tokio::test]
async fn mysql_hidden_columns_do_not_exist_inside_the_fence() {
    hidden_columns_do_not_exist_inside_the_fence(Fixture::mysql("hidden").await).await;
}

/// A computed value of megabytes is refused as it arrives, as a limit.
async fn a_huge_computed_value_is_refused_before_it_is_buffered(mut fx: Fixture) {
    let silo = fx
        .silo(connectors::HUGE_CELL, "[limits]\nmax_row_bytes = 1048576\n")
        .await
        .unwrap();
    // Refused when the row arrives: at the start of the stream, or later.
    let err = match silo
        .fetch("alice", &spec("orders", &["id", "note", "tenant"]))
        .await
    {
        Ok(fetch) => fetch.collect().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(
        matches!(&err, Error::Limit(m) if m.contains("larger than 1048576 bytes")),
        "{err}"
    );
}

#[tokio::test]
async fn postgres_huge_computed_value_is_refused() {
    a_huge_computed_value_is_refused_before_it_is_buffered(Fixture::postgres("huge").await).await;
}

#[tokio::test]
async fn mysql_huge_computed_value_is_refused() {
    a_huge_computed_value_is_refused_before_it_is_buffered(Fixture::mysql("huge").await).await;
}

/// Connections of the reader role that are open on the server.
async fn open_connections(fx: &mut Fixture) -> i64 {
    match &mut fx.db {
        Db::Pg { schema, client } => client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                &[&format!("{schema}_r")],
            )
            .await
            .unwrap()
            .get(0),
        Db::My { db, conn } => {
            let n: Option<i64> = conn
                .exec_first(
                    "SELECT count(*) FROM information_schema.processlist WHERE user = ?",
                    (format!("{db}_r"),),
                )
                .await
                .unwrap();
            n.unwrap_or(0)
        }
    }
}

/// One fetch holds at most its share of the pool; another fetch is served
/// meanwhile; a full pool is "busy"; the whole-fetch deadline ends a fetch
/// that keeps producing, and closes its connections without being asked.
async fn a_fetch_takes_only_its_share_and_ends_at_its_deadline(mut fx: Fixture) {
    let limits = "[limits]\nfetch_timeout_ms = 2000\nstatement_timeout_ms = 500\n";
    let hog = fx
        .silo_with(
            connectors::POOL_HOG,
            limits,
            "pool_size = 4\nfetch_connections = 2",
        )
        .await
        .unwrap();
    let columns = ["id", "tenant", "note"];
    let mut first = hog.fetch("alice", &spec("orders", &columns)).await.unwrap();
    let report = text_of(
        &first
            .next_batch()
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
    );
    assert!(report[0].contains("held 2;"), "{report:?}");
    assert!(
        report[0].contains("may hold 2 statements open at once"),
        "{report:?}"
    );
    // The rest of the pool serves another fetch.
    let mut second = hog.fetch("bob", &spec("orders", &columns)).await.unwrap();
    let report = text_of(
        &second
            .next_batch()
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
    );
    assert!(report[0].contains("held 2;"), "{report:?}");
    // Now the pool is full: a third fetch's statements wait, then say busy.
    let mut third = hog.fetch("alice", &spec("orders", &columns)).await.unwrap();
    let report = text_of(
        &third
            .next_batch()
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
    );
    assert!(report[0].contains("held 0;"), "{report:?}");
    assert!(report[0].contains("busy"), "{report:?}");
    assert!(!report[0].contains("unavailable"), "{report:?}");
    assert_eq!(open_connections(&mut fx).await, 4);
    // Nobody reads `first` any more; at its deadline its connections close.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut closed = false;
    for _ in 0..50 {
        if open_connections(&mut fx).await == 0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "an expired fetch kept its connections");
    let err = first.next_batch().await.unwrap_err();
    assert!(
        matches!(&err, Error::Limit(m) if m.contains("fetch exceeded its time limit of 2000 ms")),
        "{err}"
    );
    assert!(second.next_batch().await.is_err());
}

#[tokio::test]
async fn postgres_fetch_takes_only_its_share_and_ends_at_its_deadline() {
    a_fetch_takes_only_its_share_and_ends_at_its_deadline(Fixture::postgres("hog").await).await;
}

#[tokio::test]
async fn mysql_fetch_takes_only_its_share_and_ends_at_its_deadline() {
    a_fetch_takes_only_its_share_and_ends_at_its_deadline(Fixture::mysql("hog").await).await;
}

/// The plan Postgres makes for rewritten statements: the scan of the governed
/// table applies the tenant filter and nothing the connector wrote, whatever
/// the planner would prefer (an index on the connector's column, equal
/// costs, joins of every kind).
#[tokio::test]
async fn postgres_plans_evaluate_connector_expressions_above_the_fence() {
    let fx = Fixture::postgres("plans").await;
    let Db::Pg { schema, client } = &fx.db else {
        unreachable!()
    };
    let tables = [acme_orders(schema)];
    for (setting, statement) in [
        (
            "",
            "SELECT id FROM orders WHERE note = 'x' AND note::int > 0",
        ),
        (
            "SET enable_seqscan = off;",
            "SELECT id FROM orders WHERE note::int > 0",
        ),
        (
            "",
            "SELECT id FROM (SELECT * FROM orders) o WHERE o.note::int > 0",
        ),
        (
            "SET enable_hashjoin = off; SET enable_mergejoin = off;",
            "SELECT a.id FROM orders a JOIN orders b ON a.note::int = b.id",
        ),
        (
            "SET enable_nestloop = off; SET enable_mergejoin = off;",
            "SELECT a.id FROM orders a JOIN orders b ON a.note::int = b.id",
        ),
        (
            "SET enable_nestloop = off; SET enable_hashjoin = off;",
            "SELECT a.id FROM orders a JOIN orders b ON a.note::int = b.id",
        ),
        ("", "SELECT id FROM orders ORDER BY note::int LIMIT 1"),
        ("", "SELECT count(*) FROM orders GROUP BY note::int"),
        (
            "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;",
            "SELECT id FROM orders WHERE note::int > 0",
        ),
    ] {
        let out = silo_host::policy::sql::rewrite(
            silo_types::SqlDialect::Postgres,
            statement,
            vec![],
            schema,
            &tables,
            &[],
        )
        .unwrap();
        let sql = out.sql.replace("$1", "'acme'");
        client
            .batch_execute(&format!("RESET ALL; {setting}"))
            .await
            .unwrap();
        let plan = pg_plan(client, "VERBOSE, ", &sql).await;
        let mut scans = Vec::new();
        scans_of(&plan, "orders", &mut scans);
        assert!(!scans.is_empty(), "{statement}: {plan}");
        for scan in scans {
            for key in ["Filter", "Index Cond", "Recheck Cond"] {
                if let Some(cond) = scan.get(key).and_then(|c| c.as_str()) {
                    assert!(
                        cond.contains("tenant") && !cond.contains("note"),
                        "{statement} ({setting}): the scan of orders evaluates `{cond}`"
                    );
                }
            }
        }
        assert!(
            plan.to_string().contains("(note)::integer")
                || plan.to_string().contains("note)::integer"),
            "{statement}: the connector's expression is not in the plan: {plan}"
        );
    }
    client.batch_execute("RESET ALL").await.unwrap();
}

/// A connector that repeats its filter (as the SDK's `select` does) has that
/// repetition left out when its value is the filter's: the same rows, and
/// the planner no longer counts the condition twice (no condition above the
/// fence); with any other value the condition stays and nothing comes back.
#[tokio::test]
async fn postgres_a_repeated_filter_is_left_out_only_for_the_filters_own_values() {
    let fx = Fixture::postgres("implied").await;
    let Db::Pg { schema, client } = &fx.db else {
        unreachable!()
    };
    let tables = [acme_orders(schema)];
    let statement = r#"SELECT "id", "note" FROM "orders" WHERE (("tenant" = $1)) ORDER BY "id""#;
    let run = |value: &str| {
        silo_host::policy::sql::rewrite(
            silo_types::SqlDialect::Postgres,
            statement,
            vec![Value::Text(value.into())],
            schema,
            &tables,
            &[],
        )
        .unwrap()
    };
    let texts = |params: &[Value]| -> Vec<String> {
        params
            .iter()
            .map(|v| match v {
                Value::Text(t) => t.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let rows = |sql: String, params: Vec<String>| async move {
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        client
            .query(&sql, &refs)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, i32>(0), r.get::<_, String>(1)))
            .collect::<Vec<_>>()
    };

    let lean = run("acme");
    assert!(!lean.sql.contains(r#"AS "orders" WHERE"#), "{}", lean.sql);
    let plain = rows(
        format!("SELECT id, note FROM {schema}.orders WHERE tenant = 'acme' ORDER BY id"),
        vec![],
    )
    .await;
    assert_eq!(plain.len(), 3);
    assert_eq!(rows(lean.sql.clone(), texts(&lean.params)).await, plain);
    assert_eq!(lean.params, vec![Value::Text("acme".into())]);
    // Whether the plan filters rows above the fence (the planner's double count).
    let filters_above = |sql: String| async move {
        let plan = pg_plan(client, "", &sql).await;
        fn walk(node: &serde_json::Value) -> bool {
            match node {
                serde_json::Value::Object(map) => {
                    (map.get("Node Type").and_then(|t| t.as_str()) == Some("Subquery Scan")
                        && map.contains_key("Filter"))
                        || map.values().any(walk)
                }
                serde_json::Value::Array(items) => items.iter().any(walk),
                _ => false,
            }
        }
        walk(&plan)
    };
    assert!(!filters_above(lean.sql.replace("$1", "'acme'")).await);
    // A hostile connector binding the filter's value beside an error oracle
    // (`note::int` fails on every other tenant's note): the repetition goes,
    // the oracle stays above the fence and only ever sees acme's rows.
    let oracle = silo_host::policy::sql::rewrite(
        silo_types::SqlDialect::Postgres,
        r#"SELECT "id", "note" FROM "orders" WHERE "tenant" = $1 AND "note"::int > 0 ORDER BY "id""#,
        vec![Value::Text("acme".into())],
        schema,
        &tables,
        &[],
    )
    .unwrap();
    assert!(
        !oracle.sql.contains(r#""tenant" = $1 AND"#),
        "{}",
        oracle.sql
    );
    assert_eq!(rows(oracle.sql.clone(), texts(&oracle.params)).await, plain);
    let plan = pg_plan(client, "VERBOSE, ", &oracle.sql.replace("$1", "'acme'")).await;
    let mut scans = Vec::new();
    scans_of(&plan, "orders", &mut scans);
    assert!(!scans.is_empty(), "{plan}");
    for scan in scans {
        for key in ["Filter", "Index Cond", "Recheck Cond"] {
            if let Some(cond) = scan.get(key).and_then(|c| c.as_str()) {
                assert!(
                    !cond.contains("note"),
                    "the scan of orders evaluates `{cond}`"
                );
            }
        }
    }

    for other in ["globex", "ACME", "acme "] {
        let kept = run(other);
        assert!(
            kept.sql
                .contains(r#") AS "orders" WHERE (("tenant" = $1))"#),
            "{}",
            kept.sql
        );
        let literal = kept
            .sql
            .replace("$1", &format!("'{other}'"))
            .replace("$2", "'acme'");
        assert!(filters_above(literal).await, "{other}");
        assert!(
            rows(kept.sql.clone(), texts(&kept.params)).await.is_empty(),
            "{other}"
        );
    }
}

/// The plan Postgres makes for `sql` (`EXPLAIN (<options>FORMAT JSON)`).
async fn pg_plan(client: &tokio_postgres::Client, options: &str, sql: &str) -> serde_json::Value {
    let explained = client
        .simple_query(&format!("EXPLAIN ({options}FORMAT JSON) {sql}"))
        .await
        .unwrap();
    explained
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap()
}

/// `orders` of `schema` as the plan tests fence it: acme's rows, three
/// columns (the hidden one left out).
fn acme_orders(schema: &str) -> silo_host::policy::sql::GovernedTable {
    silo_host::policy::sql::GovernedTable {
        schema: schema.to_owned(),
        name: "orders".into(),
        filter: RowFilter::AnyOf(vec![vec![Predicate {
            column: "tenant".into(),
            op: Op::Eq,
            values: vec![Value::Text("acme".into())],
        }]]),
        columns: Some(vec!["id".into(), "tenant".into(), "note".into()]),
    }
}

/// Every plan node scanning `relation`.
fn scans_of<'a>(node: &'a serde_json::Value, relation: &str, out: &mut Vec<&'a serde_json::Value>) {
    match node {
        serde_json::Value::Object(map) => {
            if map.get("Relation Name").and_then(|r| r.as_str()) == Some(relation) {
                out.push(node);
            }
            for v in map.values() {
                scans_of(v, relation, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| scans_of(v, relation, out)),
        _ => {}
    }
}

/// MariaDB would merge a plain fence into the connector's query; for a
/// statement with expressions the fence is materialized, and the plan must
/// show the base table read with the tenant filter alone, whatever the
/// connector steers towards (a primary-key constant, an index on its column).
#[tokio::test]
async fn mysql_plans_evaluate_connector_expressions_only_on_the_fence() {
    let mut fx = Fixture::mysql("plans").await;
    let Db::My { db, conn } = &mut fx.db else {
        unreachable!()
    };
    let tables = [acme_orders(db)];
    for statement in [
        "SELECT id FROM orders WHERE (note LIKE 'E%') * 9223372036854775807 * 2 = 0",
        "SELECT id FROM (SELECT * FROM orders) o WHERE length(o.note) > 5",
        "SELECT a.id FROM orders a JOIN orders b ON a.id = b.id AND length(b.note) > 5",
        "SELECT id FROM orders WHERE id = 4 AND length(note) > 5",
        "SELECT id FROM orders WHERE note >= 'E' AND length(note) > 5",
    ] {
        let out = silo_host::policy::sql::rewrite(
            silo_types::SqlDialect::MySql,
            statement,
            vec![],
            db,
            &tables,
            &[],
        )
        .unwrap();
        assert!(out.params.iter().all(|p| *p == Value::Text("acme".into())));
        let sql = out.sql.replace('?', "'acme'");
        // Running it: no error, whatever globex's notes would do.
        let rows: Vec<mysql_async::Row> = conn.query(&sql).await.unwrap();
        assert!(rows.len() <= 3, "{statement}");
        let plan: Option<String> = conn
            .query_first(format!("EXPLAIN FORMAT=JSON {sql}"))
            .await
            .unwrap();
        let plan: serde_json::Value = serde_json::from_str(&plan.unwrap()).unwrap();
        let mut scans = Vec::new();
        tables_named(&plan, "orders", &mut scans);
        assert!(!scans.is_empty(), "{statement}: {plan}");
        for scan in scans {
            for key in ["attached_condition", "index_condition"] {
                if let Some(cond) = scan.get(key).and_then(|c| c.as_str()) {
                    assert!(
                        !cond.contains("note"),
                        "{statement}: the base table is read with `{cond}`: {plan}"
                    );
                }
            }
        }
    }
}

/// Every MariaDB plan node reading table `name`.
fn tables_named<'a>(node: &'a serde_json::Value, name: &str, out: &mut Vec<&'a serde_json::Value>) {
    match node {
        serde_json::Value::Object(map) => {
            if map.get("table_name").and_then(|r| r.as_str()) == Some(name) {
                out.push(node);
            }
            for v in map.values() {
                tables_named(v, name, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| tables_named(v, name, out)),
        _ => {}
    }
}

/// Replaces `orders` with acme's and globex's documents as in [`rows_sql`].
async fn mongo_orders(fx: &crate::mongodb::MongoFixture, globex: [&str; 3]) {
    let orders = fx
        .client
        .database(&fx.db)
        .collection::<bson::Document>("orders");
    orders.drop().await.unwrap();
    let docs: Vec<bson::Document> = [
        (1, "acme", "1".to_owned(), format!("{HIDDEN}-a1")),
        (2, "acme", "2".to_owned(), format!("{HIDDEN}-a2")),
        (3, "acme", "3".to_owned(), format!("{HIDDEN}-a3")),
        (
            4,
            "globex",
            globex[0].to_owned(),
            format!("{HIDDEN}-{FOREIGN}-4"),
        ),
        (
            5,
            "globex",
            globex[1].to_owned(),
            format!("{HIDDEN}-{FOREIGN}-5"),
        ),
        (
            6,
            "globex",
            globex[2].to_owned(),
            format!("{HIDDEN}-{FOREIGN}-6"),
        ),
    ]
    .into_iter()
    .map(|(id, tenant, note, secret)| {
        bson::doc! { "id": id, "tenant": tenant, "note": note, "secret": secret }
    })
    .collect();
    orders.insert_many(docs).await.unwrap();
}

/// The document fence: conversions, `$expr` after the host's `$match`,
/// joins, unions, `find`/`count`/`distinct` filters of the connector's own,
/// all see only alice's documents, and see the same whatever globex holds.
#[tokio::test]
async fn mongodb_error_oracles_see_only_the_users_documents() {
    let fx = crate::mongodb::MongoFixture::new("confine_oracle").await;
    mongo_orders(&fx, TEXT_NOTES).await;
    let silo = fx.silo(connectors::MONGODB_OBSERVER).await.unwrap();
    let before = observed(&silo, "alice", "orders").await;
    assert_nothing_foreign(&before, HIDDEN);
    let answered = before.iter().filter(|l| l.contains("=> rows")).count();
    assert!(answered >= 10, "{before:#?}");
    mongo_orders(&fx, NUMBER_NOTES).await;
    let after = observed(&silo, "alice", "orders").await;
    assert_eq!(
        before, after,
        "what the connector saw depends on another tenant's documents"
    );
}

/// A value bound to a parameter of another type is the connector's mistake,
/// and says so, naming the types (not "the database is unavailable").
#[tokio::test]
async fn a_parameter_of_the_wrong_type_says_so() {
    let mut fx = Fixture::postgres("types").await;
    drop(fx.silo("postgres", "").await.unwrap());
    let config = SiloConfig::load(&fx.dir.join("silo.toml")).unwrap();
    let (backend, _) = silo_host::config::connect(
        "main",
        &config.datasources["main"],
        &config.limits,
        &config.net,
    )
    .unwrap();
    let silo_host::capability::Backend::Sql(client) = backend else {
        panic!("a SQL datasource")
    };
    let Db::Pg { schema, .. } = &fx.db else {
        unreachable!()
    };
    let statement = format!("SELECT id FROM {schema}.orders WHERE id = $1");
    let err = match client
        .query(&statement, vec![Value::Text("one".into())])
        .await
    {
        Ok(_) => panic!("text was bound to an integer"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, Error::Connector(m) if m.contains("type mismatch") && m.contains("int4")),
        "{err}"
    );
}

/// MongoDB: one fetch holds at most its share of the pool's cursors, and a
/// document larger than `max_row_bytes` is refused, not decoded.
#[tokio::test]
async fn mongodb_fetches_take_their_share_and_rows_are_capped() {
    let fx = crate::mongodb::MongoFixture::new("confine_bounds").await;
    mongo_orders(&fx, TEXT_NOTES).await;
    let path = fx.config(
        connectors::MONGODB_CURSOR_HOG,
        27017,
        "pool_size = 4\nfetch_connections = 2\n",
    );
    let silo = Silo::open(&SiloConfig::load(&path).unwrap()).await.unwrap();
    let seen = observed(&silo, "alice", "orders").await;
    assert!(seen[0].contains("held 2;"), "{seen:?}");
    assert!(
        seen[0].contains("may hold 2 statements open at once"),
        "{seen:?}"
    );
    // A 2 MiB note on one of alice's own documents, against a 1 MiB cap.
    fx.client
        .database(&fx.db)
        .collection::<bson::Document>("orders")
        .update_one(
            bson::doc! { "id": 2 },
            bson::doc! { "$set": { "note": "x".repeat(2 << 20) } },
        )
        .await
        .unwrap();
    let path = fx.config("mongodb", 27017, "");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}\n[limits]\nmax_row_bytes = 1048576\n"),
    )
    .unwrap();
    let silo = Silo::open(&SiloConfig::load(&path).unwrap()).await.unwrap();
    let err = match silo.fetch("alice", &spec("orders", &["id", "note"])).await {
        Ok(fetch) => fetch.collect().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(
        matches!(&err, Error::Limit(m) if m.contains("larger than 1048576 bytes")),
        "{err}"
    );
}
