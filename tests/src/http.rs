//! HTTP datasources against a real JSON API on loopback that serves two
//! tenants and checks a bearer token: the `http-json` connector, a hostile
//! connector, and a backend registering the API through the control plane.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value as J, json};
use silo_host::config::SiloConfig;
use silo_host::error::Error;
use silo_host::silo::{FetchSpec, Silo};
use silo_types::Value;

use crate::connectors;

/// A request as the API saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: String,
    auth: Option<String>,
}

/// Orders of two tenants: ids 1-3 acme, 4-6 globex, customer nested.
fn orders() -> Vec<J> {
    (1..=6)
        .map(|id| {
            let tenant = if id <= 3 { "acme" } else { "globex" };
            json!({"id": id, "tenant": tenant, "customer": {"name": format!("c-{id}")},
                   "amount": format!("{id}0.50"), "ordered_on": format!("2026-01-0{id}")})
        })
        .collect()
}

/// The API: `/api/orders?tenant=&cursor=` pages two rows at a time and,
/// like many real APIs, answers every tenant's rows when `tenant` is left
/// out; `/api/big` streams 2 MiB, `/api/slow` answers after 10 s,
/// `/api/redirect` points elsewhere, `/admin/secrets` must never be reached.
struct Api {
    base: String,
    token: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Api {
    async fn start(token: &str) -> Api {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let token = token.to_owned();
        let state = (seen.clone(), token.clone());
        let router = axum::Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Api { base, token, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Whether every request so far carried `Bearer <token>`.
    fn every_request_carried_the_token(&self) -> bool {
        let bearer = format!("Bearer {}", self.token);
        self.seen()
            .iter()
            .all(|s| s.auth.as_deref() == Some(bearer.as_str()))
    }

    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

type ApiState = (Arc<Mutex<Vec<Seen>>>, String);

async fn handle(
    State((seen, token)): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    seen.lock().unwrap().push(Seen {
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        auth: auth.clone(),
    });
    if auth.as_deref() != Some(&format!("Bearer {token}")) {
        return (StatusCode::UNAUTHORIZED, "no").into_response();
    }
    if let Some(org) = uri
        .path()
        .strip_prefix("/v2/orgs/")
        .and_then(|p| p.strip_suffix("/tickets"))
    {
        // One company-wide key answers any org's tickets, one per page
        // (`page` from 1), then an empty page.
        let tickets: Vec<J> = orders()
            .into_iter()
            .filter(|o| o["tenant"] == org)
            .map(|o| json!({"id": o["id"], "org": o["tenant"], "subject": format!("ticket of {org}")}))
            .collect();
        let page = query
            .iter()
            .find(|(k, _)| k == "page")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(1);
        let one: Vec<J> = tickets.into_iter().skip(page - 1).take(1).collect();
        return axum::Json(json!({ "data": one })).into_response();
    }
    match uri.path() {
        "/api/orders" => {
            let tenant = query.iter().find(|(k, _)| k == "tenant").map(|(_, v)| v);
            let rows: Vec<J> = orders()
                .into_iter()
                .filter(|o| tenant.is_none_or(|t| o["tenant"] == **t))
                .collect();
            let start: usize = query
                .iter()
                .find(|(k, _)| k == "cursor")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let page: Vec<J> = rows.iter().skip(start).take(2).cloned().collect();
            let next = (start + 2 < rows.len()).then_some(start + 2);
            axum::Json(json!({"data": page, "next": next})).into_response()
        }
        "/api/big" => {
            let chunks = futures_util::stream::iter(
                (0..32).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 64 << 10]))),
            );
            axum::body::Body::from_stream(chunks).into_response()
        }
        "/api/slow" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            axum::Json(json!({"data": []})).into_response()
        }
        "/api/redirect" => Redirect::temporary("/admin/secrets").into_response(),
        _ => (StatusCode::NOT_FOUND, "secret admin page").into_response(),
    }
}

/// The datasource section for `api`, with `settings` for `http-json`.
fn datasource(api: &Api, connector: &str, token_file: &str, params: bool) -> String {
    let params = if params {
        r#"params = { tenant = "tenant" }"#
    } else {
        ""
    };
    format!(
        r#"
[limits]
statement_timeout_ms = 1000

[datasources.api]
connector = {connector:?}
[datasources.api.http]
base_url = "{base}"
allow_private_network = true
token_file = {token_file:?}
bind_params = {{ tenant = "tenant" }}
max_response_bytes = 1048576
[datasources.api.http.paths]
"/api/orders" = "orders"
"/api/big" = "big"
"/api/slow" = "slow"
"/api/redirect" = "redirect"
[datasources.api.http.settings.datasets.orders]
path = "/api/orders"
{params}
rows = "/data"
next = {{ param = "cursor", from = "/next" }}
columns = [
  {{ name = "id", type = "int", nullable = false }},
  {{ name = "tenant", type = "text" }},
  {{ name = "customer", type = "text", from = "/customer/name" }},
  {{ name = "amount", type = "decimal" }},
  {{ name = "ordered_on", type = "date" }},
]

[datasets.orders]
datasource = "api"
row_filter = ["tenant = {{{{user.tenant}}}}"]

[users.alice]
attributes = {{ tenant = "acme" }}
[users.bob]
attributes = {{ tenant = "globex" }}
[users.nobody]
attributes = {{}}
"#,
        base = api.base
    )
}

/// Fetches `dataset` through the API with `session`: the first column as ids, and the body.
async fn embed_ids(
    http: &crate::control::Http,
    dataset: &str,
    session: &str,
    request: J,
) -> (Vec<i64>, J) {
    let path = format!("/v1/embed/datasets/{dataset}/fetch");
    let body = http.ok("POST", &path, session, Some(request), 200).await;
    let ids = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    (ids, body)
}

/// A config directory with the token in a file; returns the loaded registry.
async fn silo(api: &Api, name: &str, connector: &str, params: bool, extra: &str) -> Silo {
    Silo::open(&SiloConfig::load(&config(api, name, connector, params, extra)).unwrap())
        .await
        .unwrap()
}

/// Writes the `silo.toml` [`silo`] loads; returns its path.
fn config(api: &Api, name: &str, connector: &str, params: bool, extra: &str) -> PathBuf {
    write_config(
        api,
        name,
        &format!(
            "{}\n{extra}",
            datasource(api, connector, "api.token", params)
        ),
    )
}

/// Writes `body` as `silo.toml` (after the compile cache) in a fresh
/// directory of its own, with `api`'s token in `api.token`.
fn write_config(api: &Api, name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("silo-http-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("api.token"), &api.token).unwrap();
    let cache = std::env::temp_dir().join("silo-test-compile-cache");
    let text = format!("cache_dir = {:?}\n{body}", cache.display().to_string());
    let path = dir.join("silo.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn spec(dataset: &str, columns: &[&str]) -> FetchSpec {
    FetchSpec {
        dataset: dataset.into(),
        columns: Some(columns.iter().map(|c| (*c).to_owned()).collect()),
        limit: None,
    }
}

async fn fetch(silo: &Silo, user: &str, spec: &FetchSpec) -> Result<Vec<Vec<Value>>, Error> {
    silo.fetch(user, spec).await?.collect().await
}

fn ints(rows: &[Vec<Value>]) -> Vec<i64> {
    rows.iter()
        .map(|r| match r[0] {
            Value::Int(i) => i,
            ref other => panic!("id {other:?}"),
        })
        .collect()
}

fn token() -> String {
    format!(
        "silo-test-token-{:x}",
        std::process::id() as u64 * 7919 + 17
    )
}

/// Alice gets acme's orders and Bob globex's through `connector`, an
/// `http-json`-compatible component.
/// Then runs `check` on the config it used, while the API still runs.
pub async fn assert_tenants(connector: &str, check: impl AsyncFnOnce(&std::path::Path)) {
    let api = Api::start(&token()).await;
    let silo = silo(&api, "scaffolded", connector, true, "").await;
    for (user, want) in [("alice", [1, 2, 3]), ("bob", [4, 5, 6])] {
        let rows = fetch(&silo, user, &spec("orders", &["id", "tenant"]))
            .await
            .unwrap();
        assert_eq!(ints(&rows), want, "{user}");
    }
    check(&config(&api, "scaffolded", connector, true, "")).await;
}

#[tokio::test]
async fn http_json_serves_each_tenant_its_rows_with_the_token_added_by_the_host() {
    let api = Api::start(&token()).await;
    let silo = silo(&api, "tenants", "http-json", true, "").await;

    // Describing reads the settings only: no request reaches the API.
    let columns = silo.dataset_columns("orders").await.unwrap();
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "tenant", "customer", "amount", "ordered_on"]);
    assert!(api.seen().is_empty(), "{:?}", api.seen());

    let all = ["id", "tenant", "customer", "amount", "ordered_on"];
    let alice = fetch(&silo, "alice", &spec("orders", &all)).await.unwrap();
    assert_eq!(ints(&alice), [1, 2, 3]);
    assert_eq!(
        alice[0],
        [
            Value::Int(1),
            Value::Text("acme".into()),
            Value::Text("c-1".into()),
            Value::Decimal("10.50".into()),
            Value::Date(silo_types::time::parse_date("2026-01-01").unwrap()),
        ]
    );
    let bob = fetch(&silo, "bob", &spec("orders", &["id"])).await.unwrap();
    assert_eq!(ints(&bob), [4, 5, 6]);

    // Each user's requests carried their tenant, pages followed, token added.
    let seen = api.seen();
    let queries: Vec<&str> = seen.iter().map(|s| s.query.as_str()).collect();
    assert_eq!(
        queries,
        [
            "tenant=acme",
            "tenant=acme&cursor=2",
            "tenant=globex",
            "tenant=globex&cursor=2"
        ]
    );
    let bearer = format!("Bearer {}", api.token);
    assert!(
        seen.iter()
            .all(|s| s.path == "/api/orders" && s.auth.as_deref() == Some(bearer.as_str()))
    );

    // A user the filter gives no tenant sees nothing, and nothing is asked.
    api.clear();
    let err = fetch(&silo, "nobody", &spec("orders", &["id"])).await;
    assert!(
        err.is_err() || err.as_ref().is_ok_and(Vec::is_empty),
        "{err:?}"
    );
    assert!(api.seen().is_empty(), "{:?}", api.seen());
}

#[tokio::test]
async fn a_connector_that_leaves_out_the_tenant_is_refused_below_it() {
    // The settings forget `params`: the API would answer every tenant.
    let api = Api::start(&token()).await;
    let silo = silo(&api, "forgets", "http-json", false, "").await;
    let err = fetch(&silo, "alice", &spec("orders", &["id"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Policy(m) if m.contains("`tenant` is required")),
        "{err}"
    );
    assert!(api.seen().is_empty(), "{:?}", api.seen());
}

/// The hostile connector's datasets, each served by its own path.
const HOSTILE: &str = r#"
[datasets.escape]
datasource = "api"
all_rows = true
[datasets.token]
datasource = "api"
all_rows = true
[datasets.big]
datasource = "api"
all_rows = true
[datasets.slow]
datasource = "api"
all_rows = true
[datasets.redirect]
datasource = "api"
all_rows = true
"#;

#[tokio::test]
async fn a_hostile_connector_cannot_leave_its_allow_list_or_read_the_token() {
    let api = Api::start(&token()).await;
    let silo = silo(&api, "hostile", connectors::HTTP_ESCAPE, true, HOSTILE).await;

    // Other hosts, other paths, dot segments, encoded separators, a missing
    // or foreign tenant: each refused before anything is sent.
    let err = fetch(&silo, "alice", &spec("escape", &["x"]))
        .await
        .unwrap_err();
    let Error::Policy(refusals) = &err else {
        panic!("{err}")
    };
    assert!(!refusals.contains("ACCEPTED"), "{refusals}");
    assert_eq!(refusals.lines().count(), 11, "{refusals}");
    for expected in [
        "matches none this datasource allows",
        "a path starts with `/`",
        "`.` or `..` segment",
        "an escape of a reserved",
        "outside the URL path alphabet",
        "`tenant` is required",
        "`tenant` = `globex` is outside",
    ] {
        assert!(refusals.contains(expected), "{expected}: {refusals}");
    }
    assert!(api.seen().is_empty(), "{:?}", api.seen());

    // Everything the sandbox can see: settings, environment, files, a real
    // answer. The token is in none of it, yet the API got it.
    let err = fetch(&silo, "alice", &spec("token", &["x"]))
        .await
        .unwrap_err();
    let seen_by_guest = err.to_string();
    assert!(seen_by_guest.contains("SEEN"), "{seen_by_guest}");
    assert!(seen_by_guest.contains("\"datasets\""), "{seen_by_guest}");
    assert!(seen_by_guest.contains("c-1"), "{seen_by_guest}");
    assert!(!seen_by_guest.contains(&api.token), "{seen_by_guest}");
    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].auth.as_deref(),
        Some(format!("Bearer {}", api.token).as_str())
    );
    assert_eq!(seen[0].query, "tenant=acme");

    // A response over the cap is cut with a clear error.
    let err = fetch(&silo, "alice", &spec("big", &["x"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Limit(m) if m.contains("larger than 1048576 bytes")),
        "{err}"
    );
    // So is one that takes too long, and a redirect is not followed.
    let err = fetch(&silo, "alice", &spec("slow", &["x"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Limit(m) if m.contains("took longer than 1000 ms")),
        "{err}"
    );
    api.clear();
    let err = fetch(&silo, "alice", &spec("redirect", &["x"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Policy(m) if m.contains("redirects are not followed")),
        "{err}"
    );
    let paths: Vec<String> = api.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/api/redirect"]);
}

#[tokio::test]
async fn configs_that_would_leak_or_widen_are_refused() {
    let api = Api::start(&token()).await;
    let base = datasource(&api, "http-json", "api.token", true);
    let dir = std::env::temp_dir().join(format!("silo-http-{}-configs", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("api.token"), &api.token).unwrap();
    let load = |text: String| {
        let path = dir.join("silo.toml");
        std::fs::write(&path, text).unwrap();
        SiloConfig::load(&path).and_then(|c| Silo::new(&c)).err()
    };
    assert!(load(base.clone()).is_none());
    let cases = [
        (
            base.replace(&api.base, &format!("{}/api", api.base)),
            "no path, query or user info",
        ),
        (
            base.replace("http://", "http://user:pw@"),
            "no path, query or user info",
        ),
        (
            base.replace("\"/api/big\" = \"big\"", "\"/api/../admin\" = \"big\""),
            "`.` or `..` segment",
        ),
        (
            base.replace(
                "rows = \"/data\"",
                &format!("rows = \"/data\"\nkey = \"{}\"", api.token),
            ),
            "settings hold the API token",
        ),
    ];
    for (text, expected) in cases {
        let err = load(text).expect("refused").to_string();
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(!err.contains(&api.token), "{err}");
    }
}

#[tokio::test]
async fn a_backend_registers_an_api_and_embed_users_fetch_their_tenant() {
    use crate::control::{Backend, start};
    let api = Api::start(&token()).await;
    let (_spec, _key, server, http, admin_key) = start("http_api", Backend::Sqlite).await;
    let (_, key) = http.org_with_key(&admin_key, "shop").await;
    let settings = json!({
        "base_url": api.base,
        "paths": {"/api/orders": "orders"},
        "bind_params": {"tenant": "tenant"},
        "settings": {"datasets": {"orders": {
            "path": "/api/orders", "params": {"tenant": "tenant"}, "rows": "/data",
            "next": {"param": "cursor", "from": "/next"},
            "columns": [{"name": "id", "type": "int"}, {"name": "tenant", "type": "text"}]}}},
    });
    // The token is the credential: a file or env reference is refused.
    let mut bad = settings.clone();
    bad["token_env"] = json!("HOME");
    let (status, body) = http
        .call(
            "POST",
            "/v1/datasources",
            Some(&key),
            Some(json!({"name": "crm", "kind": "http", "settings": bad})),
        )
        .await;
    assert_eq!(status.as_u16(), 400, "{body}");
    let ds = http
        .ok(
            "POST",
            "/v1/datasources",
            &key,
            Some(
                json!({"name": "crm", "kind": "http", "settings": settings, "password": api.token}),
            ),
            201,
        )
        .await;
    assert_eq!(ds["connector"], "http-json");
    let listed = http.ok("GET", "/v1/datasources", &key, None, 200).await;
    assert!(!listed.to_string().contains(&api.token), "{listed}");
    let dataset = http
        .create(
            "/v1/datasets",
            &key,
            json!({"datasource": "crm", "name": "orders"}),
        )
        .await;
    http.tenants_group(&key, &dataset).await;
    for (user, tenant, want) in [("ann", "acme", [1, 2, 3]), ("ben", "globex", [4, 5, 6])] {
        let session = http.tenant_user(&key, user, tenant).await;
        let (ids, body) = embed_ids(&http, &dataset, &session, json!({})).await;
        assert_eq!(ids, want, "{user}: {body}");
    }
    assert!(api.every_request_carried_the_token());
    // Each fetch's audit record lists its requests: the path template, a
    // fingerprint of the bound tenant, the status; never the tenant itself.
    let audit = http
        .ok("GET", "/v1/audit?limit=1000", &key, None, 200)
        .await["records"]
        .clone();
    let fetches: Vec<&J> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "fetch")
        .collect();
    assert_eq!(fetches.len(), 2, "{audit}");
    for record in &fetches {
        let detail: J = serde_json::from_str(record["detail"].as_str().unwrap()).unwrap();
        let requests = detail["requests"].as_array().unwrap();
        // Two pages each.
        assert_eq!(requests.len(), 2, "{detail}");
        assert!(
            requests
                .iter()
                .all(|r| r["template"] == "/api/orders" && r["status"] == "200")
        );
        let text = detail.to_string();
        assert!(!text.contains("acme") && !text.contains("globex"), "{text}");
    }
    // A grant that hides a column of an HTTP dataset is refused, saying why.
    let hiding = json!({"grants": [{"dataset_id": dataset, "permission": "read",
        "row_filter": ["tenant = {{user.tenant}}"], "columns": ["id"]}]});
    let (status, body) = http
        .call("PUT", "/v1/groups/narrow", Some(&key), Some(hiding))
        .await;
    assert_eq!(status.as_u16(), 400, "{body}");
    assert!(body.to_string().contains("HTTP dataset"), "{body}");
    // Paths that bind no column are flagged when registered.
    let mut loose = settings.clone();
    loose["paths"] = json!({"/api/orders": "orders"});
    loose["bind_params"] = json!({});
    let flagged = http
        .ok(
            "POST",
            "/v1/datasources",
            &key,
            Some(
                json!({"name": "loose", "kind": "http", "settings": loose, "password": api.token}),
            ),
            201,
        )
        .await;
    assert!(
        flagged["warnings"][0]
            .as_str()
            .unwrap()
            .contains("binds no column"),
        "{flagged}"
    );
    server.stop().await;
}

#[tokio::test]
async fn silo_toml_bootstraps_an_api_with_its_token_sealed() {
    use crate::control::{Backend, Http, Server, StoreSpec};
    use silo_host::control::crypto::MasterKey;
    use silo_host::control::{ControlPlane, Principal};
    let api = Api::start(&token()).await;
    let config = SiloConfig::load(&config(&api, "boot", "http-json", true, "")).unwrap();
    let spec = StoreSpec::new("http_boot", Backend::Sqlite).await;
    let cp = ControlPlane::open(spec.config(&MasterKey::generate().unwrap()))
        .await
        .unwrap();
    cp.bootstrap(&config, "boot").await.unwrap();
    let (_, key) = cp
        .create_api_key(&Principal::Cli, Some("boot"), "b")
        .await
        .unwrap();
    let server = Server::start(cp).await;
    let http = Http::new(&server.base);
    // The token file was read into the sealed credential, not kept as a reference.
    let listed = http.ok("GET", "/v1/datasources", &key, None, 200).await;
    assert_eq!(listed[0]["kind"], "http", "{listed}");
    assert_eq!(listed[0]["has_credential"], true, "{listed}");
    assert!(!listed.to_string().contains(&api.token), "{listed}");
    assert!(!listed.to_string().contains("api.token"), "{listed}");
    let datasets = http.ok("GET", "/v1/datasets", &key, None, 200).await;
    let orders = datasets[0]["id"].as_str().unwrap();
    for (user, want) in [("alice", [1, 2, 3]), ("bob", [4, 5, 6])] {
        let session = http.session(&key, json!({"embed_user": user})).await;
        let (ids, body) = embed_ids(&http, orders, &session, json!({"columns": ["id"]})).await;
        assert_eq!(ids, want, "{user}: {body}");
    }
    assert_eq!(api.seen().len(), 4);
    assert!(api.every_request_carried_the_token());
    server.stop().await;
}

/// An API with the tenant in the path, one key for every tenant.
fn tickets_config(api: &Api, name: &str, connector: &str) -> PathBuf {
    let body = format!(
        r#"[datasources.api]
connector = {connector:?}
[datasources.api.http]
base_url = "{base}"
allow_private_network = true
token_file = "api.token"
[datasources.api.http.paths]
"/v2/orgs/{{org}}/tickets" = "tickets"
"/v2/status" = "status"
[datasources.api.http.settings.datasets.tickets]
path = "/v2/orgs/{{org}}/tickets"
rows = "/data"
page = {{ param = "page", first = 1 }}
columns = [
  {{ name = "id", type = "int", nullable = false }},
  {{ name = "org", type = "text" }},
  {{ name = "subject", type = "text" }},
]

[datasets.tickets]
datasource = "api"
row_filter = ["org = {{{{user.tenant}}}}"]

[users.alice]
attributes = {{ tenant = "acme" }}
[users.bob]
attributes = {{ tenant = "globex" }}
"#,
        base = api.base,
    );
    write_config(api, name, &body)
}

/// The tenant in an API's path is bound like a query parameter: `http-json`
/// fills the template with the user's org; a connector that asks for
/// another org's path, however spelled, is refused before anything is sent.
#[tokio::test]
async fn a_tenant_in_the_path_is_bound_to_the_users_filter() {
    let api = Api::start(&token()).await;
    let silo =
        Silo::open(&SiloConfig::load(&tickets_config(&api, "tickets", "http-json")).unwrap())
            .await
            .unwrap();
    let rows = fetch(&silo, "alice", &spec("tickets", &["id", "org", "subject"]))
        .await
        .unwrap();
    assert_eq!(ints(&rows), [1, 2, 3]);
    // Page numbers, until an empty page; always acme's path.
    let seen: Vec<String> = api
        .seen()
        .iter()
        .map(|s| format!("{}?{}", s.path, s.query))
        .collect();
    assert_eq!(
        seen,
        [1, 2, 3, 4].map(|n| format!("/v2/orgs/acme/tickets?page={n}"))
    );
    // The requests a fetch made are listed for its audit record: the
    // template, a fingerprint of the bound value (never the value), the status.
    let mut fetch_ = silo
        .fetch("bob", &spec("tickets", &["id", "org"]))
        .await
        .unwrap();
    while fetch_.next_batch().await.unwrap().is_some() {}
    let requests = fetch_.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert_eq!(
        requests[0].template.as_deref(),
        Some("/v2/orgs/{org}/tickets")
    );
    assert_eq!(requests[0].status, "200");
    assert_eq!(requests[0].bound[0].0, "org");
    assert!(!format!("{requests:?}").contains("globex"), "{requests:?}");

    api.clear();
    let hostile = Silo::open(
        &SiloConfig::load(&tickets_config(
            &api,
            "tickets-hostile",
            connectors::HTTP_PATH_TENANT,
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    let err = fetch(&hostile, "alice", &spec("tickets", &["id", "org"]))
        .await
        .unwrap_err();
    let Error::Policy(report) = &err else {
        panic!("expected the connector's refusal report, got {err}")
    };
    assert!(!report.contains("ACCEPTED"), "{report}");
    assert_eq!(report.lines().count(), 12, "{report}");
    assert!(
        report.contains("outside the embed user's row filter"),
        "{report}"
    );
    assert!(report.contains("`;`"), "{report}");
    assert!(
        api.seen().is_empty(),
        "requests reached the API: {:?}",
        api.seen()
    );
}

/// A datasource whose paths can bind nothing is flagged; a path template
/// that is not whole-segment says what is wrong with it.
#[test]
fn unbindable_paths_are_flagged_and_bad_templates_named() {
    let config: silo_host::capability::http::HttpConfig = serde_json::from_value(json!({
        "base_url": "https://api.example.com",
        "paths": {"/v2/orgs/{org}/tickets": "tickets", "/v2/everything": "all"},
    }))
    .unwrap();
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("/v2/everything") && warnings[0].contains("binds no column"));
    let bad: silo_host::capability::http::HttpConfig = serde_json::from_value(json!({
        "base_url": "https://api.example.com",
        "paths": {"/v2/orgs/x{org}": "tickets"},
    }))
    .unwrap();
    assert!(
        bad.warnings()[0].contains("whole path segment"),
        "{:?}",
        bad.warnings()
    );
}

/// Without the operator's allowance, an HTTP datasource cannot reach this
/// host's own network: an address literal is refused when the config is
/// loaded, a name that resolves there when a request would connect.
#[tokio::test]
async fn private_addresses_are_refused_unless_the_operator_allows_them() {
    let api = Api::start(&token()).await;
    let path = tickets_config(&api, "private", "http-json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("allow_private_network = true\n", "");
    std::fs::write(&path, &text).unwrap();
    let err = Silo::open(&SiloConfig::load(&path).unwrap())
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string().contains("loopback, private or link-local"),
        "{err}"
    );
    // By name: `localhost` resolves to loopback, and is refused as it is.
    let port = api.base.rsplit(':').next().unwrap();
    std::fs::write(
        &path,
        text.replace(&api.base, &format!("http://localhost:{port}")),
    )
    .unwrap();
    let silo = Silo::open(&SiloConfig::load(&path).unwrap()).await.unwrap();
    let err = fetch(&silo, "alice", &spec("tickets", &["id", "org"]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Datasource(_)), "{err}");
    assert!(api.seen().is_empty(), "{:?}", api.seen());
}

/// A connector reads an API's raw answers, so a grant hiding a column of an
/// HTTP dataset cannot be enforced: the fetch is refused, saying so, before
/// any request.
#[tokio::test]
async fn a_grant_hiding_a_column_of_an_http_dataset_is_refused() {
    let api = Api::start(&token()).await;
    let silo = silo(&api, "hidden", "http-json", true, "").await;
    let access = silo_host::silo::DatasetAccess {
        filter: silo_types::RowFilter::AnyOf(vec![vec![silo_types::Predicate {
            column: "tenant".into(),
            op: silo_types::Op::Eq,
            values: vec![Value::Text("acme".into())],
        }]]),
        columns: Some(vec!["id".into(), "tenant".into()]),
    };
    let err = match silo
        .fetch_with(&|_| Ok(access.clone()), &spec("orders", &["id", "tenant"]))
        .await
    {
        Ok(_) => panic!("a hidden HTTP column was served"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, Error::Policy(m) if m.contains("HTTP dataset")),
        "{err}"
    );
    assert!(api.seen().is_empty(), "{:?}", api.seen());
}
