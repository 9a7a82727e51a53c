//! The document capability against a real MongoDB-wire server (SecantusDB on
//! 127.0.0.1:27017, SCRAM auth on): the same tenant scenarios as the SQL
//! databases, MongoDB's own escapes refused, joins governed.
use bson::{Document, doc};
use mongodb::Client;
use silo_host::config::SiloConfig;
use silo_host::error::{Error, Result};
use silo_host::silo::Silo;

use crate::connectors;
use crate::support::{USERS, fetch_ids};

/// The admin the test harness provisions (`scripts/prepare`).
fn admin_url() -> String {
    std::env::var("SILO_TEST_MONGO_ADMIN").unwrap_or_else(|_| {
        "mongodb://silo_admin:silo-admin-test@127.0.0.1:27017/?authSource=admin".into()
    })
}

/// Embed users whose attributes look like MongoDB operators.
const OPERATOR_USERS: &str = r#"
[users.eve]
attributes = { tenant = '{"$ne": null}', shared = ['{"$gt": ""}', "$where"] }
"#;

pub struct MongoFixture {
    pub db: String,
    dir: std::path::PathBuf,
    pub client: Client,
}

impl MongoFixture {
    /// Database `silo_t_<name>`: the six orders of the SQL fixtures, a
    /// seventh whose tenant is an array (which no filter may match), an
    /// ungoverned `salaries`, and a user `<db>_r` with the `read` role.
    pub async fn new(name: &str) -> MongoFixture {
        let db = format!("silo_t_{name}");
        let client = Client::with_uri_str(admin_url()).await.unwrap();
        let database = client.database(&db);
        database
            .drop()
            .await
            .expect("SecantusDB must be running on 127.0.0.1:27017 (scripts/prepare starts it)");
        let day = |d: i64| bson::DateTime::from_millis((20_454 + d) * 86_400_000);
        let orders: Vec<Document> = [
            (1, "acme", "c-1", 10.5),
            (2, "acme", "c-2", 20.0),
            (3, "acme", "c-3", 30.25),
            (4, "globex", "c-4", 40.0),
            (5, "globex", "c-5", 50.0),
            (6, "globex", "c-6", 60.75),
        ]
        .iter()
        .map(|&(id, tenant, customer, amount)| {
            doc! { "id": id, "tenant": tenant, "customer": customer, "amount": amount, "ordered_on": day(i64::from(id)) }
        })
        .chain([doc! { "id": 7, "tenant": ["acme", "globex", "initech"], "customer": ["c-4"], "amount": 1.0 }])
        .collect();
        database
            .collection::<Document>("orders")
            .insert_many(orders)
            .await
            .unwrap();
        database
            .collection::<Document>("salaries")
            .insert_one(doc! { "employee": "ceo", "salary": 1_000_000 })
            .await
            .unwrap();
        let user = format!("{db}_r");
        let _ = database.run_command(doc! { "dropUser": &user }).await;
        database
            .run_command(doc! { "createUser": &user, "pwd": "reader-pw", "roles": [{ "role": "read", "db": &db }] })
            .await
            .unwrap();
        let dir = std::env::temp_dir().join(format!("silo-tests-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        MongoFixture { db, dir, client }
    }

    /// A `silo.toml` for `connector` over this database as the read-only
    /// user (or `user`/`password` given), plus `extra`.
    pub fn config(&self, connector: &str, port: u16, extra: &str) -> std::path::PathBuf {
        let password = self.dir.join("mongo-password");
        std::fs::write(&password, "reader-pw\n").unwrap();
        let cache = std::env::temp_dir().join("silo-test-compile-cache");
        let text = format!(
            r#"cache_dir = {cache:?}
[datasources.main]
connector = {connector:?}
[datasources.main.mongodb]
host = "127.0.0.1"
port = {port}
database = {db:?}
user = "{db}_r"
password_file = {password:?}
{extra}
{USERS}
{OPERATOR_USERS}"#,
            cache = cache.display().to_string(),
            db = self.db,
            password = password.display().to_string(),
        );
        let path = self.dir.join("silo.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub async fn silo(&self, connector: &str) -> Result<Silo> {
        Silo::open(&SiloConfig::load(&self.config(connector, 27017, ""))?).await
    }

    pub async fn count(&self, collection: &str) -> u64 {
        self.client
            .database(&self.db)
            .collection::<Document>(collection)
            .count_documents(doc! {})
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn each_embed_user_sees_exactly_their_documents() {
    let fx = MongoFixture::new("mongo_isolation").await;
    let silo = fx.silo("mongodb").await.unwrap();
    crate::support::assert_tenant_isolation(&silo).await;
    // Operator-looking attribute values are compared as text.
    assert_eq!(fetch_ids(&silo, "eve").await.unwrap(), Vec::<i64>::new());
    let err = fetch_ids(&silo, "nobody").await.unwrap_err();
    assert!(matches!(err, Error::Policy(_)), "{err}");
}

#[tokio::test]
async fn describe_samples_fields_and_fetch_types_values() {
    let fx = MongoFixture::new("mongo_describe").await;
    let silo = fx.silo("mongodb").await.unwrap();
    let datasets = silo.describe("main").await.unwrap();
    let names: Vec<&str> = datasets.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["orders"], "salaries is not governed");
    let columns = &datasets[0].columns;
    let kind = |name: &str| columns.iter().find(|c| c.name == name).map(|c| c.kind);
    assert_eq!(kind("id"), Some(silo_types::ColumnType::Int));
    assert_eq!(kind("amount"), Some(silo_types::ColumnType::Float));
    assert_eq!(kind("ordered_on"), Some(silo_types::ColumnType::Timestamp));
    let spec = silo_host::silo::FetchSpec {
        dataset: "orders".into(),
        columns: Some(vec![
            "id".into(),
            "amount".into(),
            "ordered_on".into(),
            "missing".into(),
        ]),
        limit: Some(2),
    };
    let rows = crate::support::fetch_rows(&silo, "bob", &spec)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].len(), 4, "the host-added filter columns are gone");
    assert!(matches!(rows[0][1], silo_types::Value::Float(_)));
    assert!(matches!(rows[0][2], silo_types::Value::Timestamp(_)));
    assert_eq!(rows[0][3], silo_types::Value::Null);
}

#[tokio::test]
async fn connector_that_ignores_the_filter_gets_only_permitted_documents() {
    let fx = MongoFixture::new("mongo_ignore").await;
    let silo = fx.silo(connectors::MONGODB_IGNORE_FILTER).await.unwrap();
    assert_eq!(fetch_ids(&silo, "alice").await.unwrap(), [1, 2, 3]);
    assert_eq!(fetch_ids(&silo, "carol").await.unwrap(), [4]);
    assert_eq!(fetch_ids(&silo, "eve").await.unwrap(), Vec::<i64>::new());
}

#[tokio::test]
async fn lookups_and_unions_see_only_the_users_documents() {
    let fx = MongoFixture::new("mongo_joins").await;
    let silo = fx.silo(connectors::MONGODB_JOINS).await.unwrap();
    // alice: $lookup sees her 3 orders; the union adds her 3 again.
    assert_eq!(
        fetch_ids(&silo, "alice").await.unwrap(),
        [3, 3, 3, 100, 100, 100]
    );
    // carol sees order 4 only, wherever she looks from.
    assert_eq!(fetch_ids(&silo, "carol").await.unwrap(), [1, 100]);
}

#[tokio::test]
async fn count_and_distinct_see_only_the_users_documents() {
    let fx = MongoFixture::new("mongo_counts").await;
    let silo = fx.silo(connectors::MONGODB_COUNTS).await.unwrap();
    assert_eq!(fetch_ids(&silo, "alice").await.unwrap(), [3]);
    // carol's one order is globex's: the produced row passes only through
    // her shared-customer rule, with distinct customers exactly "c-4".
    assert_eq!(fetch_ids(&silo, "carol").await.unwrap(), [1]);
}

#[tokio::test]
async fn mongodb_escapes_are_refused_and_change_nothing() {
    let fx = MongoFixture::new("mongo_attacks").await;
    let silo = fx.silo(connectors::MONGODB_ATTACKS).await.unwrap();
    let err = fetch_ids(&silo, "alice").await.unwrap_err();
    crate::support::assert_all_refused(
        &err,
        15,
        &[
            "`$out`",
            "`$merge`",
            "`salaries` is not governed",
            "another database",
            "`$where`",
            "`$function`",
            "`$accumulator`",
            "`$graphLookup`",
            "`$currentOp`",
            "`$collStats`",
            "JSON array",
        ],
    );
    assert_eq!(fx.count("orders").await, 7);
    let names = fx
        .client
        .database(&fx.db)
        .list_collection_names()
        .await
        .unwrap();
    assert!(!names.iter().any(|n| n == "stolen"), "{names:?}");
}

#[tokio::test]
async fn max_time_stops_a_slow_pipeline() {
    let fx = MongoFixture::new("mongo_slow").await;
    let config = fx.config(
        connectors::MONGODB_SLOW_PIPELINE,
        27017,
        "[limits]\nstatement_timeout_ms = 200",
    );
    let silo = Silo::open(&SiloConfig::load(&config).unwrap())
        .await
        .unwrap();
    let err = fetch_ids(&silo, "alice").await.unwrap_err();
    assert!(matches!(err, Error::Limit(_)), "{err}");
    assert!(err.to_string().contains("statement timeout"), "{err}");
}

#[tokio::test]
async fn database_down_is_a_clear_error() {
    let fx = MongoFixture::new("mongo_down").await;
    let silo = Silo::new(&SiloConfig::load(&fx.config("mongodb", 1, "")).unwrap()).unwrap();
    let err = fetch_ids(&silo, "alice").await.unwrap_err().to_string();
    assert!(err.contains("the database is unavailable"), "{err}");
    assert!(!err.contains("127.0.0.1"), "{err}");
}

#[tokio::test]
async fn a_sql_connector_is_refused_for_a_document_datasource() {
    let fx = MongoFixture::new("mongo_wrong_kind").await;
    let err = fx.silo("postgres").await.err().unwrap().to_string();
    assert!(err.contains("silo:connector/sql"), "{err}");
}

#[tokio::test]
async fn registration_refuses_a_user_that_can_write() {
    let fx = MongoFixture::new("mongo_registration").await;
    fx.silo("mongodb")
        .await
        .expect("a read-only user registers");
    let db = &fx.db;
    fx.client
        .database(db)
        .run_command(doc! { "grantRolesToUser": format!("{db}_r"), "roles": [{ "role": "readWrite", "db": db }] })
        .await
        .unwrap();
    let config = fx.config("mongodb", 27017, "");
    let err = crate::support::registration_refusal(&config).await;
    assert!(err.contains(&format!("role readWrite@{db}")), "{err}");
    let silo = crate::support::open_with_override(&config).await;
    assert_eq!(fetch_ids(&silo, "alice").await.unwrap(), [1, 2, 3]);
}
