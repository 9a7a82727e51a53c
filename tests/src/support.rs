//! A fresh schema per test: two tenants' orders, an ungoverned table, a
//! read-only role, and a `silo.toml` naming the connector under test.
use std::path::PathBuf;

use silo_host::config::SiloConfig;
use silo_host::demo::{Reader, admin, exec, prepare_reader};
use silo_host::error::{Error, Result};
use silo_host::silo::{FetchSpec, Row, Silo};
use silo_types::Value;

pub fn admin_conn() -> String {
    std::env::var("SILO_TEST_ADMIN").unwrap_or_else(|_| silo_host::demo::DEFAULT_ADMIN.to_owned())
}

/// The datasets and embed users every fixture starts with.
pub const USERS: &str = r#"
[datasets.orders]
datasource = "main"
# A user in two groups sees the union: their tenant, plus customers shared with them.
row_filter = ["tenant = {{user.tenant}}", "customer in {{user.shared}}"]

[users.alice]
attributes = { tenant = "acme", shared = [] }

[users.bob]
attributes = { tenant = "globex", shared = [] }

[users.carol]
attributes = { tenant = "initech", shared = ["c-4"] }

[users.mallory]
attributes = { tenant = "' OR 1=1 --", shared = ["' OR ''='"] }

[users.nobody]
attributes = {}
"#;

pub struct Fixture {
    pub schema: String,
    pub client: tokio_postgres::Client,
    dir: PathBuf,
}

impl Fixture {
    /// Creates schema `silo_t_<name>` with `orders` (ids 1-3 acme, 4-6 globex)
    /// and `salaries` (not governed, not granted).
    pub async fn new(name: &str) -> Fixture {
        let schema = format!("silo_t_{name}");
        let client = admin(&admin_conn())
            .await
            .expect("test Postgres must be running on 127.0.0.1:5432");
        exec(
            &client,
            &format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
                 CREATE TABLE {schema}.orders (id int PRIMARY KEY, tenant text NOT NULL, customer text NOT NULL,
                   amount numeric(10,2) NOT NULL, ordered_on date NOT NULL);
                 INSERT INTO {schema}.orders VALUES
                   (1, 'acme', 'c-1', 10.50, '2026-01-01'), (2, 'acme', 'c-2', 20.00, '2026-01-02'),
                   (3, 'acme', 'c-3', 30.25, '2026-01-03'), (4, 'globex', 'c-4', 40.00, '2026-01-04'),
                   (5, 'globex', 'c-5', 50.00, '2026-01-05'), (6, 'globex', 'c-6', 60.75, '2026-01-06');
                 CREATE TABLE {schema}.salaries (employee text, salary int);
                 INSERT INTO {schema}.salaries VALUES ('ceo', 1000000);"
            ),
        )
        .await
        .unwrap();
        let dir = std::env::temp_dir().join(format!("silo-tests-{}-{name}", std::process::id()));
        Fixture {
            schema,
            client,
            dir,
        }
    }

    /// Writes a config using `connector` (a path or `postgres`) with the
    /// default datasets and users plus `extra`, and loads it.
    pub async fn silo(&self, connector: &str, extra: &str) -> Result<Silo> {
        let role = format!("{}_r", self.schema);
        let cache = std::env::temp_dir().join("silo-test-compile-cache");
        let body = format!(
            "cache_dir = {:?}\n{extra}\n{USERS}",
            cache.display().to_string()
        );
        let p = prepare_reader(
            &self.client,
            &admin_conn(),
            &self.dir,
            &Reader {
                schema: &self.schema,
                role: &role,
                tables: &["orders"],
                connector,
            },
            &body,
        )
        .await?;
        Silo::open(&SiloConfig::load(&p.config_path)?).await
    }

    /// The `silo.toml` the last [`Fixture::silo`] wrote.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("silo.toml")
    }

    /// Rows of `orders` as the admin sees them (to prove nothing was changed).
    pub async fn count_orders(&self) -> i64 {
        self.client
            .query_one(&format!("SELECT count(*) FROM {}.orders", self.schema), &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// Every row of `spec` as `user`, or the fetch's error.
pub async fn fetch_rows(silo: &Silo, user: &str, spec: &FetchSpec) -> Result<Vec<Row>> {
    silo.fetch(user, spec).await?.collect().await
}

/// Fetches `orders` columns `id, tenant` as `user`.
pub async fn fetch_ids(silo: &Silo, user: &str) -> Result<Vec<i64>> {
    let spec = FetchSpec {
        dataset: "orders".into(),
        columns: Some(vec!["id".into(), "tenant".into()]),
        limit: None,
    };
    Ok(ids(&fetch_rows(silo, user, &spec).await?))
}

/// The tenant scenario every datasource must pass with [`USERS`]: alice
/// sees 1-3, bob 4-6, carol exactly {4} (her own tenant has no rows, the
/// customer shared with her does: two rules ORed), mallory's SQL-looking
/// attributes are data and match nothing.
pub async fn assert_tenant_isolation(silo: &Silo) {
    assert_eq!(fetch_ids(silo, "alice").await.unwrap(), [1, 2, 3]);
    assert_eq!(fetch_ids(silo, "bob").await.unwrap(), [4, 5, 6]);
    assert_eq!(fetch_ids(silo, "carol").await.unwrap(), [4]);
    assert_eq!(fetch_ids(silo, "mallory").await.unwrap(), Vec::<i64>::new());
}

pub fn ids(rows: &[Row]) -> Vec<i64> {
    let mut ids: Vec<i64> = rows
        .iter()
        .map(|r| match r.first() {
            Some(Value::Int(i)) => *i,
            other => panic!("expected an id, got {other:?}"),
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// Asserts that a hostile connector's fetch failed because the policy refused
/// every one of its `attempts` statements (not a limit, not the database), and
/// that the refusals name each of `needles`.
pub fn assert_all_refused(err: &Error, attempts: usize, needles: &[&str]) {
    let Error::Policy(report) = err else {
        panic!("expected refusals, got {err}")
    };
    assert!(
        report
            .lines()
            .all(|l| l.contains("=> Error::Denied(\"policy violation")),
        "{report}"
    );
    assert_eq!(report.lines().count(), attempts, "{report}");
    for needle in needles {
        assert!(
            report.contains(needle),
            "no refusal mentions {needle}: {report}"
        );
    }
}

/// Opens `config` (as `silo fetch` does, registration check included) and
/// returns the refusal, which must be a policy error.
pub async fn registration_refusal(config: &std::path::Path) -> String {
    match Silo::open(&SiloConfig::load(config).unwrap()).await {
        Err(e @ Error::Policy(_)) => e.to_string(),
        Err(e) => panic!("expected a registration refusal, got {e}"),
        Ok(_) => panic!("a credential that can write was registered"),
    }
}

/// Sets `accept_write_privileges` on datasource `main` of `config`, then
/// opens it: the override registers the credential.
pub async fn open_with_override(config: &std::path::Path) -> Silo {
    let text = std::fs::read_to_string(config).unwrap();
    let text = text.replacen(
        "[datasources.main]\n",
        "[datasources.main]\naccept_write_privileges = true\n",
        1,
    );
    assert!(text.contains("accept_write_privileges"), "{text}");
    std::fs::write(config, text).unwrap();
    Silo::open(&SiloConfig::load(config).unwrap())
        .await
        .unwrap()
}
