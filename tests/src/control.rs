//! The control plane over HTTP: a real server on loopback, a real store
//! (SQLite file and Postgres, the same suite on both), real Postgres data.
use std::collections::BTreeSet;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value as J, json};
use silo_host::api::{AppState, app};
use silo_host::control::crypto::MasterKey;
use silo_host::control::{ControlConfig, ControlPlane, Principal};
use silo_host::demo::{admin, exec};

use crate::support::admin_conn;

/// Runs `name(backend)` as two tests, `name::sqlite` and `name::postgres`:
/// the same suite on both store back-ends.
macro_rules! on_both_stores {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await;
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty store for test `name`: a SQLite file in a new directory,
/// or a new Postgres database.
pub struct StoreSpec {
    pub url: String,
    pub dir: std::path::PathBuf,
}

impl StoreSpec {
    pub async fn new(name: &str, backend: Backend) -> StoreSpec {
        let dir = std::env::temp_dir().join(format!("silo-cp-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = match backend {
            Backend::Sqlite => dir.join("silo.db").display().to_string(),
            Backend::Postgres => {
                let db = format!("silo_cp_{name}");
                let client = admin(&admin_conn()).await.unwrap();
                exec(
                    &client,
                    &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
                )
                .await
                .unwrap();
                exec(&client, &format!("CREATE DATABASE {db}"))
                    .await
                    .unwrap();
                let cfg: tokio_postgres::Config = admin_conn().parse().unwrap();
                let host = match &cfg.get_hosts()[0] {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                };
                let port = cfg.get_ports().first().copied().unwrap_or(5432);
                let user = cfg.get_user().unwrap_or("postgres");
                format!("postgres://{user}@{host}:{port}/{db}")
            }
        };
        StoreSpec { url, dir }
    }

    pub fn config(&self, key: &MasterKey) -> ControlConfig {
        let mut c = ControlConfig::new(self.url.clone(), self.dir.join("uploads"), key.clone());
        c.cache_dir = Some(std::env::temp_dir().join("silo-test-compile-cache"));
        // The test databases and APIs listen on loopback.
        c.net.local = true;
        c
    }
}

/// A server on a loopback port over a control plane.
pub struct Server {
    pub cp: Arc<ControlPlane>,
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(cp: ControlPlane) -> Server {
        let cp = Arc::new(cp);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = app(AppState::new(cp.clone()));
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Server { cp, base, task }
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A tiny JSON client.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    pub fn new(base: &str) -> Http {
        Http {
            client: reqwest::Client::new(),
            base: base.to_owned(),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<J>,
    ) -> (StatusCode, J) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            J::Null
        } else {
            serde_json::from_str(&text).unwrap_or(J::String(text))
        };
        (status, json)
    }

    /// Sends `body` as JSON text with `authorization` as the header, as is.
    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        authorization: &str,
        body: String,
    ) -> (StatusCode, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("authorization", authorization)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.text().await.unwrap())
    }

    /// Calls, and asserts a refusal: `want` and a message containing
    /// `needle`. Returns the body.
    pub async fn refused(
        &self,
        (method, path): (&str, &str),
        auth: &str,
        body: Option<J>,
        want: StatusCode,
        needle: &str,
    ) -> J {
        let (status, body) = self.call(method, path, Some(auth), body).await;
        assert_eq!(status, want, "{method} {path}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{method} {path}: {body}");
        body
    }

    /// Calls and asserts the status, returning the body.
    pub async fn ok(&self, method: &str, path: &str, auth: &str, body: Option<J>, want: u16) -> J {
        let (status, json) = self.call(method, path, Some(auth), body).await;
        assert_eq!(status.as_u16(), want, "{method} {path}: {json}");
        json
    }

    /// Creates organization `name` with an API key: (org id, key).
    pub async fn org_with_key(&self, admin_key: &str, name: &str) -> (String, String) {
        let org = self
            .ok(
                "POST",
                "/v1/orgs",
                admin_key,
                Some(json!({"name": name})),
                201,
            )
            .await;
        let path = format!("/v1/orgs/{name}/api-keys");
        let key = self
            .ok(
                "POST",
                &path,
                admin_key,
                Some(json!({"name": "backend"})),
                201,
            )
            .await;
        (
            org["id"].as_str().unwrap().to_owned(),
            key["token"].as_str().unwrap().to_owned(),
        )
    }

    /// `POST`s `body` to `path`, expects 201, returns the new record's id.
    pub async fn create(&self, path: &str, key: &str, body: J) -> String {
        let created = self.ok("POST", path, key, Some(body), 201).await;
        created["id"].as_str().unwrap().to_owned()
    }

    /// Creates a files datasource `uploads` and its dataset `name`: the
    /// dataset's id.
    pub async fn files_dataset(&self, key: &str, name: &str) -> String {
        let source = json!({"name": "uploads", "kind": "files"});
        self.ok("POST", "/v1/datasources", key, Some(source), 201)
            .await;
        let dataset = json!({"datasource": "uploads", "name": name});
        self.create("/v1/datasets", key, dataset).await
    }

    /// Uploads `body` as CSV to `dataset`, split by tenant when `partition`.
    pub async fn upload_csv(
        &self,
        key: &str,
        dataset: &str,
        body: String,
        partition: bool,
    ) -> (StatusCode, J) {
        let split = if partition {
            "?partition_by=tenant"
        } else {
            ""
        };
        let resp = self
            .client
            .post(format!("{}/v1/datasets/{dataset}/upload{split}", self.base))
            .bearer_auth(key)
            .header("content-type", "text/csv")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(J::Null))
    }

    /// Mints a session with `body` and returns its token.
    pub async fn session(&self, key: &str, body: J) -> String {
        let s = self.ok("POST", "/v1/sessions", key, Some(body), 200).await;
        s["token"].as_str().unwrap().to_owned()
    }

    /// Puts group `tenants`, granting `dataset` with the rows of the user's `tenant`.
    pub async fn tenants_group(&self, key: &str, dataset: &str) {
        let grant = json!({"dataset_id": dataset, "permission": "read",
                           "row_filter": ["tenant = {{user.tenant}}"]});
        let body = json!({ "grants": [grant] });
        self.ok("PUT", "/v1/groups/tenants", key, Some(body), 200)
            .await;
    }

    /// Puts embed user `user` of `tenant` in group `tenants`; returns a session token.
    pub async fn tenant_user(&self, key: &str, user: &str, tenant: &str) -> String {
        let body = json!({"attributes": {"tenant": tenant}, "groups": ["tenants"]});
        self.ok(
            "PUT",
            &format!("/v1/embed-users/{user}"),
            key,
            Some(body),
            200,
        )
        .await;
        self.session(key, json!({ "embed_user": user })).await
    }

    pub async fn ndjson(&self, path: &str, auth: &str, body: J) -> (StatusCode, Vec<J>) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(auth)
            .header("accept", "application/x-ndjson")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
        )
    }
}

/// One organization's data: a schema with `sales` and `tickets`, and a
/// read-only role for it. Row ids start at `base`.
struct OrgData {
    schema: String,
    role: String,
    password: String,
    /// (id, region, team)
    rows: Vec<(i64, &'static str, &'static str)>,
}

const ROWS: &[(i64, &str, &str)] = &[
    (1, "eu", "red"),
    (2, "eu", "blue"),
    (3, "us", "red"),
    (4, "us", "blue"),
    (5, "apac", "red"),
    (6, "apac", "green"),
];

async fn seed_org_data(client: &tokio_postgres::Client, schema: &str, base: i64) -> OrgData {
    let role = format!("{schema}_r");
    let password = format!("pw-{schema}-{}", std::process::id());
    let rows: Vec<(i64, &'static str, &'static str)> =
        ROWS.iter().map(|(i, r, t)| (base + i, *r, *t)).collect();
    let values = rows
        .iter()
        .map(|(i, r, t)| format!("({i}, '{r}', '{t}', {})", i * 10))
        .collect::<Vec<_>>()
        .join(", ");
    exec(
        client,
        &format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
             CREATE TABLE {schema}.sales (id bigint PRIMARY KEY, region text NOT NULL, team text NOT NULL, amount bigint NOT NULL);
             CREATE TABLE {schema}.tickets (id bigint PRIMARY KEY, region text NOT NULL, team text NOT NULL, amount bigint NOT NULL);
             INSERT INTO {schema}.sales VALUES {values};
             INSERT INTO {schema}.tickets VALUES {values};
             DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role} LOGIN; END IF;
             END $$;
             ALTER ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{password}';
             GRANT USAGE ON SCHEMA {schema} TO {role};
             GRANT SELECT ON {schema}.sales, {schema}.tickets TO {role};"
        ),
    )
    .await
    .unwrap();
    OrgData {
        schema: schema.to_owned(),
        role,
        password,
        rows,
    }
}

/// The users of each org: (external id, region, team, groups).
const USERS: &[(&str, &str, &str, &[&str])] = &[
    ("u1", "eu", "red", &["regional"]),
    ("u2", "us", "blue", &["team"]),
    ("u3", "us", "red", &["regional", "team"]),
];

/// An org set up through the API: its key, dataset ids by name, and the
/// session token of each user.
pub struct Org {
    pub id: String,
    pub key: String,
    pub datasets: Vec<(String, String)>,
    pub tokens: Vec<(String, String)>,
    rows: Vec<(i64, &'static str, &'static str)>,
}

impl Org {
    pub fn dataset(&self, name: &str) -> &str {
        &self.datasets.iter().find(|(n, _)| n == name).unwrap().1
    }

    pub fn token(&self, user: &str) -> &str {
        &self.tokens.iter().find(|(u, _)| u == user).unwrap().1
    }

    /// The ids `user` must get from `dataset` with the default columns.
    fn expected(&self, user: &str, dataset: &str) -> Option<BTreeSet<i64>> {
        let (_, region, team, groups) = USERS.iter().find(|u| u.0 == user).unwrap();
        let regional = groups.contains(&"regional");
        let by_team = groups.contains(&"team") && dataset == "sales";
        if !regional && !by_team {
            return None;
        }
        Some(
            self.rows
                .iter()
                .filter(|(_, r, t)| (regional && r == region) || (by_team && t == team))
                .map(|(i, _, _)| *i)
                .collect(),
        )
    }
}

/// Creates org `name` with its datasource, datasets, two groups, three
/// users and their sessions, all through the API.
async fn setup_org(http: &Http, admin_key: &str, name: &str, data: &OrgData) -> Org {
    let (org_id, key) = http.org_with_key(admin_key, name).await;
    let ds = http
        .ok(
            "POST",
            "/v1/datasources",
            &key,
            Some(json!({
                "name": "warehouse",
                "kind": "postgres",
                "settings": {"host": "127.0.0.1", "database": "test", "user": data.role, "schema": data.schema},
                "password": data.password,
            })),
            201,
        )
        .await;
    assert!(!ds.to_string().contains(&data.password), "{ds}");
    let mut datasets = Vec::new();
    for name in ["sales", "tickets"] {
        let d = http
            .ok(
                "POST",
                "/v1/datasets",
                &key,
                Some(json!({"datasource": "warehouse", "name": name})),
                201,
            )
            .await;
        datasets.push((name.to_owned(), d["id"].as_str().unwrap().to_owned()));
    }
    let id = |n: &str| datasets.iter().find(|(x, _)| x == n).unwrap().1.clone();
    http.ok(
        "PUT",
        "/v1/groups/regional",
        &key,
        Some(json!({"grants": [
            {"dataset_id": id("sales"), "permission": "read", "row_filter": ["region = {{user.region}}"]},
            {"dataset_id": id("tickets"), "permission": "read", "row_filter": ["region = {{user.region}}"]},
        ]})),
        200,
    )
    .await;
    http.ok(
        "PUT",
        "/v1/groups/team",
        &key,
        Some(json!({"grants": [
            {"dataset_id": id("sales"), "permission": "read", "row_filter": ["team = {{user.team}}"],
             "columns": ["id", "team", "amount"]},
        ]})),
        200,
    )
    .await;
    let mut tokens = Vec::new();
    for (user, region, team, groups) in USERS {
        http.ok(
            "PUT",
            &format!("/v1/embed-users/{user}"),
            &key,
            Some(json!({"attributes": {"region": region, "team": team}, "groups": groups})),
            200,
        )
        .await;
        tokens.push((
            user.to_string(),
            http.session(&key, json!({"embed_user": user})).await,
        ));
    }
    Org {
        id: org_id,
        key,
        datasets,
        tokens,
        rows: data.rows.clone(),
    }
}

fn ids(body: &J) -> BTreeSet<i64> {
    let cols = body["columns"].as_array().unwrap();
    let at = cols.iter().position(|c| c == "id").unwrap();
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[at].as_i64().unwrap())
        .collect()
}

/// A control plane with an operator key, serving on loopback.
pub async fn start(name: &str, backend: Backend) -> (StoreSpec, MasterKey, Server, Http, String) {
    start_with(name, backend, |_| {}).await
}

/// [`start`] with the operator's settings changed by `operator`.
pub async fn start_with(
    name: &str,
    backend: Backend,
    operator: impl FnOnce(&mut ControlConfig),
) -> (StoreSpec, MasterKey, Server, Http, String) {
    let spec = StoreSpec::new(name, backend).await;
    let key = MasterKey::generate().unwrap();
    let mut config = spec.config(&key);
    operator(&mut config);
    let cp = ControlPlane::open(config).await.unwrap();
    let (_, admin_key) = cp
        .create_api_key(&Principal::Cli, None, "ops")
        .await
        .unwrap();
    let server = Server::start(cp).await;
    let http = Http::new(&server.base);
    (spec, key, server, http, admin_key.to_string())
}

/// Two orgs, each with its own data schema.
async fn two_orgs(name: &str, http: &Http, admin_key: &str) -> (Org, Org) {
    let client = admin(&admin_conn()).await.unwrap();
    let a = seed_org_data(&client, &format!("silo_t_{name}_a"), 0).await;
    let b = seed_org_data(&client, &format!("silo_t_{name}_b"), 100).await;
    (
        setup_org(http, admin_key, &format!("{name}-a"), &a).await,
        setup_org(http, admin_key, &format!("{name}-b"), &b).await,
    )
}

async fn cross_tenant_matrix(backend: Backend) {
    let name = format!("matrix_{backend:?}").to_lowercase();
    let (_spec, _key, server, http, admin_key) = start(&name, backend).await;
    let (a, b) = two_orgs(&name, &http, &admin_key).await;
    let orgs = [&a, &b];
    let mut checked = 0;
    for org in orgs {
        for (user, token) in &org.tokens {
            for target in orgs {
                for (dataset, id) in &target.datasets {
                    let path = format!("/v1/embed/datasets/{id}/fetch");
                    let (status, body) =
                        http.call("POST", &path, Some(token), Some(json!({}))).await;
                    let want = if std::ptr::eq(org, target) {
                        org.expected(user, dataset)
                    } else {
                        None
                    };
                    match want {
                        Some(want) => {
                            assert_eq!(status, StatusCode::OK, "{user} {dataset}: {body}");
                            assert_eq!(ids(&body), want, "{user} of {} on {dataset}", org.id);
                        }
                        None => {
                            assert_eq!(status, StatusCode::NOT_FOUND, "{user} {dataset}: {body}");
                            assert_eq!(body["error"]["code"], "not_found");
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 2 * 3 * 4);

    // Columns: u2's group hides `region`; asking for it is refused, and u3
    // asking for it gets only the rows of the group that allows it.
    let sales = a.dataset("sales");
    let path = format!("/v1/embed/datasets/{sales}/fetch");
    let u2 = http
        .ok("POST", &path, a.token("u2"), Some(json!({})), 200)
        .await;
    assert_eq!(u2["columns"], json!(["id", "team", "amount"]));
    let (status, _) = http
        .call(
            "POST",
            &path,
            Some(a.token("u2")),
            Some(json!({"columns": ["id", "region"]})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let u3 = http
        .ok(
            "POST",
            &path,
            a.token("u3"),
            Some(json!({"columns": ["id", "region"]})),
            200,
        )
        .await;
    assert_eq!(ids(&u3), BTreeSet::from([3, 4]));
    let cols = http
        .ok(
            "GET",
            &format!("/v1/embed/datasets/{sales}/describe"),
            a.token("u2"),
            None,
            200,
        )
        .await;
    let names: Vec<&str> = cols
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "team", "amount"]);

    // NDJSON streams the same rows as JSON.
    let (status, lines) = http.ndjson(&path, a.token("u3"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let streamed: BTreeSet<i64> = lines.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    assert_eq!(Some(streamed), a.expected("u3", "sales"));

    // A session limited to one dataset sees only it.
    let s = http
        .ok(
            "POST",
            "/v1/sessions",
            &a.key,
            Some(json!({"embed_user": "u1", "datasets": [a.dataset("tickets")]})),
            200,
        )
        .await;
    let narrow = s["token"].as_str().unwrap();
    let listed = http
        .ok("GET", "/v1/embed/datasets", narrow, None, 200)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (status, _) = http
        .call("POST", &path, Some(narrow), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The backend of org A cannot see or change org B's records: B's ids
    // answer 404 exactly as ids that do not exist.
    let b_sales = b.dataset("sales");
    let b_ds = http
        .ok("GET", "/v1/datasources/warehouse", &b.key, None, 200)
        .await;
    let b_group = http
        .ok("GET", "/v1/groups/regional", &b.key, None, 200)
        .await;
    let b_user = http
        .ok("GET", "/v1/embed-users/u1", &b.key, None, 200)
        .await;
    let b_sessions = http.ok("GET", "/v1/sessions", &b.key, None, 200).await;
    let id = |v: &J| v["id"].as_str().unwrap().to_owned();
    let steal =
        json!({"grants": [{"dataset_id": b_sales, "permission": "read", "all_rows": true}]});
    for (method, path, body) in [
        ("GET", format!("/v1/datasources/{}", id(&b_ds)), None),
        ("DELETE", format!("/v1/datasources/{}", id(&b_ds)), None),
        ("DELETE", format!("/v1/datasets/{b_sales}"), None),
        ("GET", format!("/v1/groups/{}", id(&b_group)), None),
        ("DELETE", format!("/v1/groups/{}", id(&b_group)), None),
        ("GET", format!("/v1/embed-users/{}", id(&b_user)), None),
        (
            "DELETE",
            format!("/v1/sessions/{}", id(&b_sessions[0])),
            None,
        ),
        (
            "POST",
            "/v1/sessions".to_owned(),
            Some(json!({"embed_user": id(&b_user)})),
        ),
        (
            "POST",
            "/v1/sessions".to_owned(),
            Some(json!({"embed_user": "u1", "datasets": [b_sales]})),
        ),
        (
            "POST",
            "/v1/sessions".to_owned(),
            Some(json!({"id": id(&b_sessions[0]), "embed_user": "u1"})),
        ),
        ("PUT", "/v1/groups/steal".to_owned(), Some(steal.clone())),
        (
            "PUT",
            "/v1/embed-users/u9".to_owned(),
            Some(json!({"groups": [id(&b_group)]})),
        ),
        (
            "POST",
            "/v1/datasets".to_owned(),
            Some(json!({"datasource": id(&b_ds), "name": "sales"})),
        ),
    ] {
        let (status, body) = http.call(method, &path, Some(&a.key), body).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{method} {path} as org A: {body}"
        );
    }
    // ...and B is untouched.
    let b_u1 = http
        .ok(
            "POST",
            &format!("/v1/embed/datasets/{b_sales}/fetch"),
            b.token("u1"),
            Some(json!({})),
            200,
        )
        .await;
    assert_eq!(Some(ids(&b_u1)), b.expected("u1", "sales"));
    // An org key is not an operator key.
    let (status, _) = http
        .call("POST", "/v1/orgs", Some(&a.key), Some(json!({"name": "x"})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Every fetch is in the audit log, which verifies.
    let audit = http
        .ok("GET", "/v1/audit?limit=1000", &a.key, None, 200)
        .await["records"]
        .clone();
    let fetches = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "fetch")
        .count();
    assert!(fetches >= 12, "{fetches} fetch records");
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["org_id"] == json!(a.id))
    );
    let verified = silo_host::control::audit::verify(server.cp.store())
        .await
        .unwrap();
    assert!(verified.records > 30);
    server.stop().await;
}

on_both_stores!(cross_tenant_matrix);

fn b64(v: &J) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn claims_of(token: &str) -> J {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

async fn token_attacks(backend: Backend) {
    let name = format!("tokens_{backend:?}").to_lowercase();
    let (_spec, _key, server, http, admin_key) = start(&name, backend).await;
    let (a, b) = two_orgs(&name, &http, &admin_key).await;
    let sales = a.dataset("sales");
    let fetch = format!("/v1/embed/datasets/{sales}/fetch");
    let good = a.token("u1");
    let (status, _) = http.call("POST", &fetch, Some(good), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    let claims = claims_of(good);
    let refused = |what: &'static str| {
        let http = http.clone();
        let fetch = fetch.clone();
        async move |token: String| {
            let (status, body) = http
                .call("POST", &fetch, Some(&token), Some(json!({})))
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{what}");
            // The refusal never says why.
            assert_eq!(
                body["error"]["message"], "unauthorized: the session token is not valid",
                "{what}"
            );
        }
    };

    // alg: none, with the real claims.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    refused("alg none")(none).await;

    // HS256 "signed" with the server's public key (algorithm confusion).
    let public = server.cp.signer().public_key().unwrap().to_vec();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    refused("HS256 with the public key")(hs).await;

    // Real signature, wrong audience / issuer / expired.
    let signer = server.cp.signer();
    let mut c: silo_host::control::tokens::Claims = serde_json::from_value(claims.clone()).unwrap();
    c.aud = "another-service".into();
    refused("wrong aud")(signer.sign(&c).unwrap()).await;
    let mut c: silo_host::control::tokens::Claims = serde_json::from_value(claims.clone()).unwrap();
    c.iss = "someone-else".into();
    refused("wrong iss")(signer.sign(&c).unwrap()).await;
    let mut c: silo_host::control::tokens::Claims = serde_json::from_value(claims.clone()).unwrap();
    c.exp = c.iat - 1;
    refused("expired claims")(signer.sign(&c).unwrap()).await;

    // The payload changed to org B without re-signing.
    let mut forged = claims.clone();
    forged["org"] = json!(b.id);
    let parts: Vec<&str> = good.split('.').collect();
    refused("tampered org")(format!("{}.{}.{}", parts[0], b64(&forged), parts[2])).await;

    // Another deployment's key.
    let other = silo_host::control::tokens::Signer::new(
        silo_host::control::tokens::TokenAlg::EdDsa,
        "k".into(),
        &silo_host::control::tokens::TokenAlg::EdDsa
            .generate()
            .unwrap(),
        "silo".into(),
        "silo-embed".into(),
    )
    .unwrap();
    let c: silo_host::control::tokens::Claims = serde_json::from_value(claims.clone()).unwrap();
    refused("foreign key")(other.sign(&c).unwrap()).await;

    // A session that expires: valid, then refused.
    let short = http
        .ok(
            "POST",
            "/v1/sessions",
            &a.key,
            Some(json!({"embed_user": "u1", "ttl_seconds": 1})),
            200,
        )
        .await;
    let short = short["token"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    refused("expired session")(short).await;

    // Revocation takes effect on the next request.
    let s = http
        .ok(
            "POST",
            "/v1/sessions",
            &a.key,
            Some(json!({"embed_user": "u1"})),
            200,
        )
        .await;
    let (sid, token) = (
        s["session"]["id"].as_str().unwrap(),
        s["token"].as_str().unwrap().to_owned(),
    );
    let (status, _) = http
        .call("POST", &fetch, Some(&token), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);
    http.ok("DELETE", &format!("/v1/sessions/{sid}"), &a.key, None, 204)
        .await;
    refused("revoked session")(token).await;

    // Org A's valid token on org B's dataset: not found.
    let (status, _) = http
        .call(
            "POST",
            &format!("/v1/embed/datasets/{}/fetch", b.dataset("sales")),
            Some(good),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Keys and tokens are not interchangeable; revoked keys stop working.
    let (status, _) = http.call("GET", "/v1/groups", Some(good), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = http
        .call("POST", &fetch, Some(&a.key), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = http.call("GET", "/v1/groups", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let spare = http
        .ok(
            "POST",
            "/v1/api-keys",
            &a.key,
            Some(json!({"name": "spare"})),
            201,
        )
        .await;
    let spare_token = spare["token"].as_str().unwrap();
    http.ok("GET", "/v1/groups", spare_token, None, 200).await;
    http.ok(
        "DELETE",
        &format!("/v1/api-keys/{}", spare["key"]["id"].as_str().unwrap()),
        &a.key,
        None,
        204,
    )
    .await;
    let (status, _) = http
        .call("GET", "/v1/groups", Some(spare_token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let keys = http.ok("GET", "/v1/api-keys", &a.key, None, 200).await;
    assert!(
        !keys
            .to_string()
            .contains(spare_token.split('.').nth(1).unwrap())
    );
    server.stop().await;
}

on_both_stores!(token_attacks);

/// A session id belongs to one embed user for life: renewal keeps the user,
/// makes a new token generation (the old tokens die), and never revives a
/// revoked session. A parameter never overrides an attribute the user gained
/// later. Plus the small things: a `crit` header, the scheme's case, 413.
async fn sessions_keep_their_user_and_old_tokens_die(backend: Backend) {
    let name = format!("renewal_{backend:?}").to_lowercase();
    let (_spec, _key, server, http, admin_key) = start(&name, backend).await;
    let (a, _b) = two_orgs(&name, &http, &admin_key).await;
    let fetch = format!("/v1/embed/datasets/{}/fetch", a.dataset("sales"));
    let fetch_as = async |token: &str| {
        http.call("POST", &fetch, Some(token), Some(json!({})))
            .await
    };
    let first = http
        .ok(
            "POST",
            "/v1/sessions",
            &a.key,
            Some(json!({"embed_user": "u1"})),
            200,
        )
        .await;
    let sid = first["session"]["id"].as_str().unwrap().to_owned();
    let old = first["token"].as_str().unwrap().to_owned();
    let (status, u1_rows) = fetch_as(&old).await;
    assert_eq!(status, StatusCode::OK, "{u1_rows}");

    // Another user under the same id: refused, and the id still means u1.
    let (status, body) = http
        .call(
            "POST",
            "/v1/sessions",
            Some(&a.key),
            Some(json!({"id": sid, "embed_user": "u2"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.to_string().contains("keeps its user"), "{body}");
    let (status, body) = fetch_as(&old).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body), ids(&u1_rows));

    // Renewal: a new generation; the old token is dead from now on.
    let renewed = http
        .ok(
            "POST",
            "/v1/sessions",
            &a.key,
            Some(json!({"id": sid, "embed_user": "u1"})),
            200,
        )
        .await;
    assert_eq!(renewed["session"]["id"], sid.as_str());
    assert_eq!(renewed["session"]["generation"], 1);
    let new = renewed["token"].as_str().unwrap().to_owned();
    assert_eq!(fetch_as(&new).await.0, StatusCode::OK);
    assert_eq!(fetch_as(&old).await.0, StatusCode::UNAUTHORIZED);

    // A renewal never widens by omission: a session narrowed to `sales`
    // with a parameter, renewed sending neither, keeps both.
    let narrow = http
        .ok(
            "POST",
            "/v1/sessions",
            &a.key,
            Some(json!({"embed_user": "u1", "datasets": [a.dataset("sales")], "parameters": {"p": "x"}})),
            200,
        )
        .await;
    let nid = narrow["session"]["id"].as_str().unwrap().to_owned();
    let renewed_narrow = http
        .ok(
            "POST",
            "/v1/sessions",
            &a.key,
            Some(json!({"id": nid, "embed_user": "u1"})),
            200,
        )
        .await;
    assert_eq!(
        renewed_narrow["session"]["datasets"],
        json!([a.dataset("sales")])
    );
    assert_eq!(renewed_narrow["session"]["parameters"], json!({"p": "x"}));
    let narrow_token = renewed_narrow["token"].as_str().unwrap();
    let tickets = format!("/v1/embed/datasets/{}/fetch", a.dataset("tickets"));
    let (status, body) = http
        .call("POST", &tickets, Some(narrow_token), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // ... which u1 may read through a session not narrowed; and the renewed
    // one still reads `sales`.
    let (status, body) = http
        .call("POST", &tickets, Some(&new), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = fetch_as(narrow_token).await;
    assert_eq!(status, StatusCode::OK);

    // Revoked stays revoked: renewal is refused, no token of it works.
    http.ok("DELETE", &format!("/v1/sessions/{sid}"), &a.key, None, 204)
        .await;
    let (status, body) = http
        .call(
            "POST",
            "/v1/sessions",
            Some(&a.key),
            Some(json!({"id": sid, "embed_user": "u1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    for token in [&old, &new] {
        assert_eq!(fetch_as(token).await.0, StatusCode::UNAUTHORIZED);
    }

    // A parameter the user has since gained as an attribute: the fetch
    // fails, saying so, instead of the parameter winning.
    let with_param = http
        .ok(
            "POST",
            "/v1/sessions",
            &a.key,
            Some(json!({"embed_user": "u1", "parameters": {"quarter": "q1"}})),
            200,
        )
        .await;
    let token = with_param["token"].as_str().unwrap().to_owned();
    assert_eq!(fetch_as(&token).await.0, StatusCode::OK);
    http.ok(
        "PUT",
        "/v1/embed-users/u1",
        &a.key,
        Some(json!({"attributes": {"region": "eu", "team": "red", "quarter": "q2"}, "groups": ["regional"]})),
        200,
    )
    .await;
    let (status, body) = fetch_as(&token).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.to_string().contains("`quarter`"), "{body}");

    // A validly signed token with a `crit` header: refused (RFC 7515).
    let fresh = http
        .ok(
            "POST",
            "/v1/sessions",
            &a.key,
            Some(json!({"embed_user": "u1"})),
            200,
        )
        .await;
    let fresh = fresh["token"].as_str().unwrap().to_owned();
    let claims: silo_host::control::tokens::Claims =
        serde_json::from_value(claims_of(&fresh)).unwrap();
    let header: J = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            fresh.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let signer = server.cp.signer();
    let same = signer.sign_with_header(&header, &claims).unwrap();
    assert_eq!(fetch_as(&same).await.0, StatusCode::OK);
    let mut crit = header.clone();
    crit["crit"] = json!(["x-ext"]);
    crit["x-ext"] = json!(1);
    let crit = signer.sign_with_header(&crit, &claims).unwrap();
    assert_eq!(fetch_as(&crit).await.0, StatusCode::UNAUTHORIZED);

    // The scheme is case-insensitive; an oversized JSON body is 413.
    let (status, _) = http
        .call_raw(
            "POST",
            &fetch,
            &format!("bearer {fresh}"),
            json!({}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let huge = json!({"name": "x".repeat(3 << 20)}).to_string();
    let (status, body) = http
        .call_raw("POST", "/v1/api-keys", &format!("Bearer {}", a.key), huge)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    server.stop().await;
}

on_both_stores!(sessions_keep_their_user_and_old_tokens_die);

async fn restart_keeps_everything(backend: Backend) {
    let name = format!("restart_{backend:?}").to_lowercase();
    let (spec, key, server, http, admin_key) = start(&name, backend).await;
    let client = admin(&admin_conn()).await.unwrap();
    let data = seed_org_data(&client, &format!("silo_t_{name}"), 0).await;
    let org = setup_org(&http, &admin_key, &format!("{name}-org"), &data).await;
    let fetch = format!("/v1/embed/datasets/{}/fetch", org.dataset("tickets"));
    let before = http
        .ok("POST", &fetch, org.token("u1"), Some(json!({})), 200)
        .await;
    // The JSON fetch wrote its audit record before answering.
    let head = silo_host::control::audit::verify(server.cp.store())
        .await
        .unwrap();
    server.stop().await;

    // A wrong master key is refused before anything changes.
    let records = |cp: &ControlPlane| {
        let store = cp.store().clone();
        async move { silo_host::control::audit::verify(&store).await.unwrap() }
    };
    let wrong = MasterKey::generate().unwrap();
    let err = ControlPlane::open(spec.config(&wrong))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("master key"), "{err}");

    // Same store, right key: keys, sessions and credentials all still work.
    let cp = ControlPlane::open(spec.config(&key)).await.unwrap();
    let audit_before = records(&cp).await;
    assert_eq!(audit_before, head, "the refused open changed nothing");
    let server = Server::start(cp).await;
    let http = Http::new(&server.base);
    let after = http
        .ok("POST", &fetch, org.token("u1"), Some(json!({})), 200)
        .await;
    assert_eq!(ids(&before), ids(&after));
    assert_eq!(Some(ids(&after)), org.expected("u1", "tickets"));
    http.ok("GET", "/v1/datasources/warehouse", &org.key, None, 200)
        .await;
    assert!(records(&server.cp).await.records > audit_before.records);

    // Rotate: everything re-sealed under the new key; the old one stops working.
    let new = MasterKey::generate().unwrap();
    let resealed = server.cp.rotate_key(&new).await.unwrap();
    assert_eq!(resealed, 2, "one credential and one signing key");
    server.stop().await;
    let err = ControlPlane::open(spec.config(&key))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("master key"), "{err}");
    let cp = ControlPlane::open(spec.config(&new)).await.unwrap();
    let server = Server::start(cp).await;
    let http = Http::new(&server.base);
    let rotated = http
        .ok("POST", &fetch, org.token("u1"), Some(json!({})), 200)
        .await;
    assert_eq!(ids(&before), ids(&rotated));
    server.stop().await;
}

on_both_stores!(restart_keeps_everything);

async fn registration_and_settings(backend: Backend) {
    let name = format!("register_{backend:?}").to_lowercase();
    let (_spec, _key, server, http, admin_key) = start(&name, backend).await;
    let (org_id, key) = http.org_with_key(&admin_key, "reg").await;
    let superuser = json!({"name": "su", "kind": "postgres",
        "settings": {"host": "127.0.0.1", "database": "test", "user": "postgres"}});
    let post = ("POST", "/v1/datasources");
    http.refused(
        post,
        &key,
        Some(superuser.clone()),
        StatusCode::FORBIDDEN,
        "superuser",
    )
    .await;
    let (status, _) = http
        .call("GET", "/v1/datasources/su", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");

    // Accepting a credential that can write is the operator's decision: an
    // org key cannot make it for itself...
    let mut accepted = superuser.clone();
    accepted["accept_write_privileges"] = json!(true);
    http.refused(
        post,
        &key,
        Some(accepted.clone()),
        StatusCode::FORBIDDEN,
        "operator",
    )
    .await;
    // ...but a host the operator started allowing it for this org can.
    let mut config = _spec.config(&_key);
    config.write_orgs = vec![org_id];
    let approving = Server::start(ControlPlane::open(config).await.unwrap()).await;
    let ds = Http::new(&approving.base)
        .ok("POST", "/v1/datasources", &key, Some(accepted), 201)
        .await;
    approving.stop().await;
    let audit = http
        .ok("GET", "/v1/audit?limit=1000", &key, None, 200)
        .await["records"]
        .clone();
    let record = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "datasource.create" && r["target"] == ds["id"])
        .unwrap();
    assert!(
        record["detail"]
            .as_str()
            .unwrap()
            .contains("accept_write_privileges")
    );

    // Settings that would make the host read its own env or files, or an
    // upload area other than the org's, are refused; so are unknown keys.
    for (kind, settings) in [
        (
            "postgres",
            json!({"host": "h", "database": "d", "user": "u", "password_env": "HOME"}),
        ),
        (
            "postgres",
            json!({"host": "h", "database": "d", "user": "u", "password_file": "/etc/shadow"}),
        ),
        (
            "postgres",
            json!({"host": "h", "database": "d", "user": "u", "pasword": "x"}),
        ),
        ("files", json!({"data_dir": "/", "org": "other"})),
    ] {
        let (status, body) = http
            .call(
                "POST",
                "/v1/datasources",
                Some(&key),
                Some(json!({"name": "bad", "kind": kind, "settings": settings})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    // Conflicting names and malformed bodies are clear errors.
    let (status, body) = http
        .call(
            "POST",
            "/v1/datasets",
            Some(&key),
            Some(json!({"datasource": "su", "name": "x; drop"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    http.ok(
        "POST",
        "/v1/datasets",
        &key,
        Some(json!({"datasource": "su", "name": "t"})),
        201,
    )
    .await;
    let (status, body) = http
        .call(
            "POST",
            "/v1/datasets",
            Some(&key),
            Some(json!({"datasource": "su", "name": "t"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = http
        .call(
            "POST",
            "/v1/orgs",
            Some(&admin_key),
            Some(json!({"nam": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");

    // Session parameters may not shadow a user's attributes.
    http.ok(
        "PUT",
        "/v1/embed-users/p1",
        &key,
        Some(json!({"attributes": {"region": "eu"}})),
        200,
    )
    .await;
    let (status, body) = http
        .call(
            "POST",
            "/v1/sessions",
            Some(&key),
            Some(json!({"embed_user": "p1", "parameters": {"region": "us"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = http
        .call(
            "POST",
            "/v1/sessions",
            Some(&key),
            Some(json!({"embed_user": "p1", "ttl_seconds": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    http.ok(
        "POST",
        "/v1/sessions",
        &key,
        Some(json!({"embed_user": "p1", "parameters": {"day": 3}})),
        200,
    )
    .await;

    // The OpenAPI document names every route.
    let doc = http.ok("GET", "/openapi.json", "", None, 200).await;
    for path in [
        "/v1/sessions",
        "/v1/embed/datasets/{id}/fetch",
        "/v1/datasources/{id}",
        "/v1/groups/{name}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    // The backend clients are generated from a checked-in copy of it.
    let copy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/openapi.json");
    let copy: serde_json::Value = serde_json::from_slice(&std::fs::read(&copy).unwrap()).unwrap();
    assert!(
        copy == doc,
        "clients/openapi.json differs from the served document: run clients/generate"
    );
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("route=\"/v1/datasources\",status=\"403\""),
        "{metrics}"
    );
    server.stop().await;
}

on_both_stores!(registration_and_settings);

/// A TCP forwarder on a fresh loopback port to `target`: the same server
/// behind another address, as a port-forward or a load balancer would be.
async fn forwarder(target: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    port
}

/// What an org puts in a datasource's settings is hostile input. Numbers
/// are bounded before anything is allocated from them (422 naming the field
/// and its range); a datasource reaches only addresses the operator allows,
/// checked on what its host name resolves to; and the control plane's own
/// store is refused by any address it is reached through.
async fn org_settings_are_bounded_and_addresses_checked(backend: Backend) {
    let name = format!("bounds_{backend:?}").to_lowercase();
    let (spec, key, server, http, admin_key) = start_with(&name, backend, |c| {
        c.net = silo_host::capability::net::NetPolicy::default();
    })
    .await;
    let (_, org) = http.org_with_key(&admin_key, "bounds").await;
    let post = |kind: &str, settings: J| {
        let body = json!({"name": "b", "kind": kind, "settings": settings});
        let (http, org) = (http.clone(), org.clone());
        async move {
            http.call("POST", "/v1/datasources", Some(&org), Some(body))
                .await
        }
    };
    let db = |extra: J| {
        let mut s = json!({"host": "db.example", "database": "d", "user": "u"});
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    };
    for (kind, settings, field, range) in [
        (
            "postgres",
            db(json!({"pool_size": 1_099_511_627_776_u64})),
            "pool_size",
            "1 to 32",
        ),
        (
            "postgres",
            db(json!({"pool_size": 1_000_000})),
            "pool_size",
            "1 to 32",
        ),
        ("mysql", db(json!({"pool_size": 0})), "pool_size", "1 to 32"),
        (
            "mongodb",
            db(json!({"pool_size": -1})),
            "pool_size",
            "1 to 32",
        ),
        (
            "mysql",
            db(json!({"pool_size": "16"})),
            "pool_size",
            "1 to 32",
        ),
        (
            "postgres",
            db(json!({"pool_size": 4.5})),
            "pool_size",
            "1 to 32",
        ),
        (
            "postgres",
            db(json!({"port": 70_000})),
            "port",
            "1 to 65535",
        ),
        ("mongodb", db(json!({"port": 0})), "port", "1 to 65535"),
        (
            "postgres",
            db(json!({"pool_size": 8, "fetch_connections": 8})),
            "fetch_connections",
            "1 to 7",
        ),
        (
            "mysql",
            db(json!({"fetch_connections": 1_000_000})),
            "fetch_connections",
            "1 to",
        ),
        (
            "http",
            json!({"base_url": "https://api.example", "max_response_bytes": 1_u64 << 40}),
            "max_response_bytes",
            "1 to 67108864",
        ),
        (
            "http",
            json!({"base_url": "https://api.example", "max_requests": 1e12}),
            "max_requests",
            "1 to 256",
        ),
    ] {
        let (status, body) = post(kind, settings.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{settings}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{field}`")) && message.contains(range),
            "{settings}: {message}"
        );
    }

    // Loopback, link-local (the cloud metadata service) and unspecified
    // addresses are refused by default, whether named or given as addresses,
    // for every kind of database; nothing is connected to.
    for (kind, host) in [
        ("postgres", "127.0.0.1"),
        ("postgres", "localhost"),
        ("postgres", "169.254.169.254"),
        ("mysql", "localhost"),
        ("mysql", "::1"),
        ("mysql", "0.0.0.0"),
        ("mongodb", "127.0.0.1"),
        ("mongodb", "::ffff:127.0.0.1"),
    ] {
        let (status, body) =
            post(kind, json!({"host": host, "database": "test", "user": "u"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{kind} at {host}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("may not reach"),
            "{kind} at {host}: {message}"
        );
    }
    server.stop().await;

    // The operator's switch for local development lets loopback through, but
    // never to the store's own database: not at its address, and not through
    // another address that leads to the same server.
    if backend == Backend::Postgres {
        let mut config = spec.config(&key);
        config.net.local = true;
        let local = Server::start(ControlPlane::open(config).await.unwrap()).await;
        let http = Http::new(&local.base);
        let store_db = format!("silo_cp_{name}");
        let port = forwarder("127.0.0.1:5432").await;
        for (database, port, refused_as) in [
            (store_db.as_str(), 5432, "control plane's own store"),
            (store_db.as_str(), port, "control plane's own store"),
            // The same forwarder to another database gets as far as the
            // registration check: only the store was refused.
            ("test", port, "superuser"),
        ] {
            let settings = json!({"host": "127.0.0.1", "port": port, "database": database,
                "user": "postgres"});
            let (status, body) = http
                .call(
                    "POST",
                    "/v1/datasources",
                    Some(&org),
                    Some(json!({"name": "b", "kind": "postgres", "settings": settings})),
                )
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{settings}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(refused_as), "{settings}: {message}");
        }
        local.stop().await;
    }
}

on_both_stores!(org_settings_are_bounded_and_addresses_checked);

#[tokio::test]
async fn tampering_with_the_audit_log_is_detected() {
    let (spec, _key, server, http, admin_key) = start("audit_tamper", Backend::Postgres).await;
    for n in ["t1", "t2", "t3"] {
        http.ok(
            "POST",
            "/v1/orgs",
            &admin_key,
            Some(json!({"name": n})),
            201,
        )
        .await;
    }
    let store = server.cp.store().clone();
    assert_eq!(
        silo_host::control::audit::verify(&store)
            .await
            .unwrap()
            .records,
        4
    );
    let db = spec.url.rsplit('/').next().unwrap();
    let conn = admin_conn().replace("dbname=test", &format!("dbname={db}"));
    let client = admin(&conn).await.unwrap();
    let err = client
        .batch_execute("UPDATE audit SET rows_ = 999 WHERE seq = 2")
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("append-only"), "{err:?}");
    let err = client
        .batch_execute("DELETE FROM audit WHERE seq = 3")
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("append-only"), "{err:?}");
    // Someone with the database's owner rights goes around the triggers.
    client
        .batch_execute("ALTER TABLE audit DISABLE TRIGGER USER; UPDATE audit SET actor = 'nobody' WHERE seq = 2")
        .await
        .unwrap();
    let err = silo_host::control::audit::verify(&store)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("record 2"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn silo_toml_bootstraps_the_store() {
    let fx = crate::support::Fixture::new("cp_boot").await;
    let silo = fx.silo("postgres", "").await.unwrap();
    let config = silo_host::config::SiloConfig::load(&fx.config_path()).unwrap();
    let spec = StoreSpec::new("boot", Backend::Sqlite).await;
    let key = MasterKey::generate().unwrap();
    let cp = ControlPlane::open(spec.config(&key)).await.unwrap();
    let org = cp.bootstrap(&config, "boot").await.unwrap();
    // Seeding again keeps what exists and changes nothing else.
    assert_eq!(cp.bootstrap(&config, "boot").await.unwrap(), org);
    let (_, api_key) = cp
        .create_api_key(&Principal::Cli, Some("boot"), "b")
        .await
        .unwrap();
    let server = Server::start(cp).await;
    let http = Http::new(&server.base);
    let datasets = http.ok("GET", "/v1/datasets", &api_key, None, 200).await;
    assert_eq!(datasets.as_array().unwrap().len(), 1);
    let orders = datasets[0]["id"].as_str().unwrap();
    // Every user sees through the API exactly what the CLI path gives them.
    for user in ["alice", "bob", "carol", "mallory"] {
        let token = http.session(&api_key, json!({"embed_user": user})).await;
        let body = http
            .ok(
                "POST",
                &format!("/v1/embed/datasets/{orders}/fetch"),
                &token,
                Some(json!({"columns": ["id", "tenant"]})),
                200,
            )
            .await;
        let want: BTreeSet<i64> = crate::support::fetch_ids(&silo, user)
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(ids(&body), want, "{user}");
    }
    // `nobody` lacks the attribute the filter needs: refused, not widened.
    let s = http
        .ok(
            "POST",
            "/v1/sessions",
            &api_key,
            Some(json!({"embed_user": "nobody"})),
            200,
        )
        .await;
    let (status, body) = http
        .call(
            "POST",
            &format!("/v1/embed/datasets/{orders}/fetch"),
            Some(s["token"].as_str().unwrap()),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn serves_https_when_given_a_certificate() {
    let dir = std::env::temp_dir().join(format!("silo-cp-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let spec = StoreSpec::new("tls", Backend::Sqlite).await;
    let cp = ControlPlane::open(spec.config(&MasterKey::generate().unwrap()))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(silo_host::server::serve(
        cp,
        "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(),
        Some((cert_file, key_file)),
        silo_host::server::ServerLimits::default(),
        move |addr| {
            let _ = tx.send(addr.tcp().unwrap());
        },
    ));
    let addr = rx.await.unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let health = client
        .get(format!("https://localhost:{}/health", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/health", addr.port())).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    task.abort();
}

async fn silo(args: &[&str]) -> silo_host::error::Result<()> {
    use clap::Parser;
    let mut argv = vec!["silo"];
    argv.extend_from_slice(args);
    silo_host::cli::run(silo_host::cli::Cli::parse_from(argv)).await
}

#[tokio::test]
async fn operator_commands_mint_keys_rotate_and_verify() {
    let dir = std::env::temp_dir().join(format!("silo-cp-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let (old, new) = (dir.join("old.key"), dir.join("new.key"));
    MasterKey::generate().unwrap().write_new_file(&old).unwrap();
    MasterKey::generate().unwrap().write_new_file(&new).unwrap();
    let (old, new) = (old.to_str().unwrap(), new.to_str().unwrap());

    silo(&[
        "api-keys",
        "create",
        "--admin",
        "--data-dir",
        data,
        "--master-key-file",
        old,
    ])
    .await
    .unwrap();
    silo(&[
        "audit",
        "verify",
        "--data-dir",
        data,
        "--master-key-file",
        old,
    ])
    .await
    .unwrap();
    silo(&[
        "keys",
        "rotate",
        "--data-dir",
        data,
        "--master-key-file",
        old,
        "--new-key-file",
        new,
    ])
    .await
    .unwrap();
    let err = silo(&[
        "audit",
        "verify",
        "--data-dir",
        data,
        "--master-key-file",
        old,
    ])
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("master key"), "{err}");
    silo(&[
        "audit",
        "verify",
        "--data-dir",
        data,
        "--master-key-file",
        new,
    ])
    .await
    .unwrap();
    let store = silo_host::control::store::Store::open(&format!("{data}/silo.db"))
        .await
        .unwrap();
    let actions: Vec<String> = silo_host::control::audit::records(&store, None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.action)
        .collect();
    assert_eq!(actions, ["api_key.create", "keys.rotate"]);

    // The embedded default makes its own key with a new store, and only then.
    let embedded = dir.join("embedded");
    let embedded = embedded.to_str().unwrap();
    silo(&["api-keys", "create", "--admin", "--data-dir", embedded])
        .await
        .unwrap();
    assert!(std::path::Path::new(embedded).join("master.key").exists());
    silo(&["audit", "verify", "--data-dir", embedded])
        .await
        .unwrap();
    std::fs::remove_file(std::path::Path::new(embedded).join("master.key")).unwrap();
    let err = silo(&["audit", "verify", "--data-dir", embedded])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no master key"), "{err}");
}

/// Registering connectors through the API, using, switching and pinning them.
#[tokio::test]
async fn connectors_are_registered_switched_and_pinned() {
    let (spec, _key, server, http, admin_key) = start("registry", Backend::Sqlite).await;
    let client = admin(&admin_conn()).await.unwrap();
    let data = seed_org_data(&client, "silo_t_registry", 0).await;
    let (_, key) = http.org_with_key(&admin_key, "reg-a").await;
    let (_, other) = http.org_with_key(&admin_key, "reg-b").await;
    let register = |name: &str, version: &str, wasm: Vec<u8>| {
        let url = format!(
            "{}/v1/connectors?name={name}&version={version}",
            server.base
        );
        let key = key.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/wasm")
                .body(wasm)
                .send()
                .await
                .unwrap();
            (resp.status(), resp.json::<J>().await.unwrap())
        }
    };
    let (status, pg) = register("pg", "1", silo_host::builtin::POSTGRES.to_vec()).await;
    assert_eq!(
        (status, pg["kind"].as_str()),
        (StatusCode::CREATED, Some("sql")),
        "{pg}"
    );
    let (status, _) = register("pg", "1", silo_host::builtin::POSTGRES.to_vec()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let ignorer = std::fs::read(crate::connectors::IGNORE_FILTER).unwrap();
    let (status, _) = register("ignorer", "1", ignorer.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, info) = register("uploader", "1", silo_host::builtin::FILES.to_vec()).await;
    assert_eq!(
        (status, info["kind"].as_str()),
        (StatusCode::CREATED, Some("files"))
    );
    let (status, body) = register("junk", "1", b"not a component".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = register(
        "sockets",
        "1",
        std::fs::read(crate::connectors::OPENS_SOCKET).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wasi:sockets"),
        "{body}"
    );

    let settings =
        json!({"host": "127.0.0.1", "database": "test", "user": data.role, "schema": data.schema});
    let datasource = |connector: &str| {
        json!({"name": "warehouse", "kind": "postgres", "settings": settings, "password": data.password,
               "connector": connector})
    };
    // The wrong kind, and another org's connector, are refused.
    let (status, body) = http
        .call(
            "POST",
            "/v1/datasources",
            Some(&key),
            Some(datasource("uploader")),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = http
        .call(
            "POST",
            "/v1/datasources",
            Some(&other),
            Some(datasource("pg")),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let ds = http
        .ok(
            "POST",
            "/v1/datasources",
            &key,
            Some(datasource("pg@1")),
            201,
        )
        .await;
    assert_eq!(
        ds["connector"],
        format!("registry:{}", pg["sha256"].as_str().unwrap())
    );
    let sales = http
        .create(
            "/v1/datasets",
            &key,
            json!({"datasource": "warehouse", "name": "sales"}),
        )
        .await;
    http.ok("PUT", "/v1/groups/g", &key,
        Some(json!({"grants": [{"dataset_id": sales, "permission": "read", "row_filter": ["region = {{user.region}}"]}]})), 200).await;
    http.ok(
        "PUT",
        "/v1/embed-users/u",
        &key,
        Some(json!({"attributes": {"region": "eu"}, "groups": ["g"]})),
        200,
    )
    .await;
    let token = http.session(&key, json!({"embed_user": "u"})).await;
    let fetch = format!("/v1/embed/datasets/{sales}/fetch");
    let rows = http.ok("POST", &fetch, &token, Some(json!({})), 200).await;
    assert_eq!(ids(&rows), BTreeSet::from([1, 2]));

    // Switching takes effect on the next request, without a restart: the
    // other connector describes other tables, so `sales` is not served.
    let switch = |to: J| {
        http.ok(
            "PUT",
            "/v1/datasources/warehouse/connector",
            &key,
            Some(json!({"connector": to})),
            200,
        )
    };
    switch(json!("ignorer")).await;
    let (status, body) = http
        .call("POST", &fetch, Some(&token), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    switch(json!("pg@1")).await;
    assert_eq!(
        ids(&http.ok("POST", &fetch, &token, Some(json!({})), 200).await),
        BTreeSet::from([1, 2])
    );

    // A stored component that no longer matches its digest is refused.
    let stored = spec
        .dir
        .join("connectors")
        .join(format!("{}.wasm", pg["sha256"].as_str().unwrap()));
    std::fs::write(&stored, &ignorer).unwrap();
    switch(json!("pg@1")).await;
    let (status, body) = http
        .call("POST", &fetch, Some(&token), Some(json!({})))
        .await;
    assert!(!status.is_success(), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not the pinned"),
        "{body}"
    );
    // Back to the built-in connector.
    switch(J::Null).await;
    assert_eq!(
        ids(&http.ok("POST", &fetch, &token, Some(json!({})), 200).await),
        BTreeSet::from([1, 2])
    );
    let listed = http.ok("GET", "/v1/connectors", &key, None, 200).await;
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert_eq!(
        http.ok("GET", "/v1/connectors", &other, None, 200).await,
        json!([])
    );
    server.stop().await;
}
