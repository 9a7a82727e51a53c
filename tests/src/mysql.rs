//! The MySQL capability against a real MariaDB on 127.0.0.1:3306: the same
//! tenant scenarios as Postgres, and MySQL's own escapes refused.
use mysql_async::prelude::Queryable;
use silo_host::config::SiloConfig;
use silo_host::demo::{Reader, prepare_mysql_reader};
use silo_host::error::Result;
use silo_host::silo::Silo;

use crate::connectors;
use crate::support::{USERS, fetch_ids};

fn admin_url() -> String {
    std::env::var("SILO_TEST_MYSQL_ADMIN")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

struct MyFixture {
    db: String,
    dir: std::path::PathBuf,
    conn: mysql_async::Conn,
}

impl MyFixture {
    /// Database `silo_t_<name>` with the same orders as the Postgres fixture,
    /// an ungoverned `salaries`, and a user that may only SELECT `orders`.
    async fn new(name: &str) -> MyFixture {
        let db = format!("silo_t_{name}");
        let opts = mysql_async::Opts::from_url(&admin_url()).unwrap();
        let mut conn = mysql_async::Conn::new(opts)
            .await
            .expect("MariaDB must be running on 127.0.0.1:3306");
        for stmt in [
            format!("DROP DATABASE IF EXISTS {db}"),
            format!("CREATE DATABASE {db}"),
            format!(
                "CREATE TABLE {db}.orders (id int PRIMARY KEY, tenant varchar(40) NOT NULL, customer varchar(40) NOT NULL, \
                 amount decimal(10,2) NOT NULL, ordered_on date NOT NULL)"
            ),
            format!(
                "INSERT INTO {db}.orders VALUES (1, 'acme', 'c-1', 10.50, '2026-01-01'), (2, 'acme', 'c-2', 20.00, '2026-01-02'), \
                 (3, 'acme', 'c-3', 30.25, '2026-01-03'), (4, 'globex', 'c-4', 40.00, '2026-01-04'), \
                 (5, 'globex', 'c-5', 50.00, '2026-01-05'), (6, 'globex', 'c-6', 60.75, '2026-01-06')"
            ),
            format!("CREATE TABLE {db}.salaries (employee varchar(40), salary int)"),
            format!("INSERT INTO {db}.salaries VALUES ('ceo', 1000000)"),
        ] {
            conn.query_drop(stmt).await.unwrap();
        }
        let dir = std::env::temp_dir().join(format!("silo-tests-{}-{name}", std::process::id()));
        MyFixture { db, dir, conn }
    }

    async fn silo(&mut self, connector: &str, extra: &str) -> Result<Silo> {
        let cache = std::env::temp_dir().join("silo-test-compile-cache");
        let body = format!(
            "cache_dir = {:?}\n{extra}\n{USERS}",
            cache.display().to_string()
        );
        let role = format!("{}_r", self.db);
        let reader = Reader {
            schema: &self.db,
            role: &role,
            tables: &["orders"],
            connector,
        };
        let p = prepare_mysql_reader(
            &mut self.conn,
            ("127.0.0.1", 3306),
            &self.dir,
            &reader,
            &body,
        )
        .await?;
        Silo::open(&SiloConfig::load(&p.config_path)?).await
    }

    async fn count_orders(&mut self) -> i64 {
        let n: Option<i64> = self
            .conn
            .query_first(format!("SELECT count(*) FROM {}.orders", self.db))
            .await
            .unwrap();
        n.unwrap()
    }
}

#[tokio::test]
async fn each_embed_user_sees_exactly_their_rows() {
    let mut fx = MyFixture::new("my_isolation").await;
    let silo = fx.silo("mysql", "").await.unwrap();
    crate::support::assert_tenant_isolation(&silo).await;
}

#[tokio::test]
async fn describe_and_all_columns() {
    let mut fx = MyFixture::new("my_describe").await;
    let silo = fx.silo("mysql", "").await.unwrap();
    let datasets = silo.describe("main").await.unwrap();
    let names: Vec<&str> = datasets.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["orders"]);
    let spec = silo_host::silo::FetchSpec {
        dataset: "orders".into(),
        ..Default::default()
    };
    let rows = crate::support::fetch_rows(&silo, "bob", &spec)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0][3], silo_types::Value::Decimal("40.00".into()));
    assert_eq!(
        rows[0][4],
        silo_types::Value::Date(silo_types::time::parse_date("2026-01-04").unwrap())
    );
}

#[tokio::test]
async fn a_large_result_streams_in_bounded_batches_and_stops_at_the_limit() {
    let mut fx = MyFixture::new("my_stream").await;
    // 2,500 more rows for acme, interleaved with globex's, so one fetch spans
    // several host batches and every batch drops globex rows at the source.
    let values: Vec<String> = (1001..=6000)
        .map(|i| {
            let tenant = if i % 2 == 0 { "acme" } else { "globex" };
            format!("({i}, '{tenant}', 'c-{i}', 1.00, '2026-02-01')")
        })
        .collect();
    fx.conn
        .query_drop(format!(
            "INSERT INTO {}.orders VALUES {}",
            fx.db,
            values.join(",")
        ))
        .await
        .unwrap();
    let silo = fx.silo("mysql", "").await.unwrap();
    let spec = silo_host::silo::FetchSpec {
        dataset: "orders".into(),
        columns: Some(vec!["id".into(), "tenant".into()]),
        limit: None,
    };
    let mut fetch = silo.fetch("alice", &spec).await.unwrap();
    let (mut ids, mut batches) = (Vec::new(), 0);
    while let Some(batch) = fetch.next_batch().await.unwrap() {
        batches += 1;
        assert!(batch.len() <= silo_host::limits::BATCH_ROWS as usize);
        // The filter also reads `customer`; the host added it and took it off.
        assert_eq!(batch.width(), 2);
        for row in &batch {
            assert_eq!(row[1], silo_types::Value::Text("acme".into()));
            match row[0] {
                silo_types::Value::Int(i) => ids.push(i),
                ref other => panic!("id {other:?}"),
            }
        }
    }
    ids.sort_unstable();
    let expected: Vec<i64> = [1, 2, 3]
        .into_iter()
        .chain((1001..=6000).filter(|i| i % 2 == 0))
        .collect();
    assert_eq!(ids, expected);
    assert!(batches >= 3, "{batches} batches");
    assert_eq!(fetch.rows(), 2503);

    let limited = silo_host::silo::FetchSpec {
        limit: Some(2100),
        ..spec
    };
    let rows = crate::support::fetch_rows(&silo, "alice", &limited)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2100);
    assert!(
        rows.iter()
            .all(|r| r.len() == 2 && r[1] == silo_types::Value::Text("acme".into()))
    );
}

#[tokio::test]
async fn connector_that_ignores_the_filter_gets_only_permitted_rows() {
    let mut fx = MyFixture::new("my_ignore").await;
    let silo = fx.silo(connectors::IGNORE_FILTER, "").await.unwrap();
    assert_eq!(fetch_ids(&silo, "alice").await.unwrap(), [1, 2, 3]);
    assert_eq!(fetch_ids(&silo, "carol").await.unwrap(), [4]);
}

#[tokio::test]
async fn mysql_escapes_are_refused_and_change_nothing() {
    let mut fx = MyFixture::new("my_attacks").await;
    let silo = fx.silo(connectors::MYSQL_ATTACKS, "").await.unwrap();
    let err = fetch_ids(&silo, "alice").await.unwrap_err();
    crate::support::assert_all_refused(
        &err,
        10,
        &[
            "SLEEP",
            "LOAD_FILE",
            "INTO",
            "@@version",
            "BENCHMARK",
            "mysql.user",
            "UPDATE",
            "exactly one statement",
        ],
    );
    assert_eq!(fx.count_orders().await, 6);
}

#[tokio::test]
async fn registration_refuses_a_user_that_can_write() {
    let mut fx = MyFixture::new("my_registration").await;
    fx.silo("mysql", "")
        .await
        .expect("a SELECT-only user registers");
    let db = fx.db.clone();
    fx.conn
        .query_drop(format!(
            "GRANT INSERT, DELETE ON {db}.orders TO '{db}_r'@'%'"
        ))
        .await
        .unwrap();
    let config = fx.dir.join("silo.toml");
    let err = crate::support::registration_refusal(&config).await;
    assert!(err.contains(&format!("INSERT ON `{db}`.`orders`")), "{err}");
    assert!(err.contains(&format!("DELETE ON `{db}`.`orders`")), "{err}");
    assert!(!err.contains("PASSWORD"), "{err}");
    let silo = crate::support::open_with_override(&config).await;
    assert_eq!(fetch_ids(&silo, "alice").await.unwrap(), [1, 2, 3]);
}
