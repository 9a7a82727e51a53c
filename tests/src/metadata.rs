//! Metadata and summaries over the API: what reaches the LLM endpoint (a
//! local recording server) and what is stored holds no cell value the
//! privacy policy does not allow, and a failing endpoint caches nothing.
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value as J, json};
use silo_host::control::ControlPlane;
use silo_host::control::crypto::MasterKey;
use silo_host::demo::{admin, exec};
use silo_host::metadata::llm::LlmConfig;

use crate::control::{Backend, Http, Server, StoreSpec};
use crate::support::admin_conn;

/// Values that must never reach the LLM or the store unless allowed.
const CANARIES: &[&str] = &[
    "CANARY-NAME-7f3a",
    "CANARY-CITY",
    "987654.32",
    "2031-07-19",
    "person-0042",
    "77665544",
    "31415.92",
    "2032-02-29",
];

/// How the recording endpoint answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Garbage,
    Slow,
    FailOnce,
}

#[derive(Clone)]
struct Recorder {
    mode: Mode,
    bodies: Arc<Mutex<Vec<String>>>,
}

async fn complete(State(r): State<Recorder>, body: String) -> (StatusCode, String) {
    let calls = {
        let mut b = r.bodies.lock().unwrap();
        b.push(body);
        b.len()
    };
    match r.mode {
        Mode::Ok => {}
        Mode::Garbage => return (StatusCode::OK, "<html>not json</html>".into()),
        Mode::Slow => tokio::time::sleep(std::time::Duration::from_secs(3)).await,
        Mode::FailOnce if calls == 1 => {
            return (StatusCode::SERVICE_UNAVAILABLE, "busy".into());
        }
        Mode::FailOnce => {}
    }
    let answer = json!({"choices": [{"message": {"role": "assistant", "content": "A dataset of people and their purchases."}}]});
    (StatusCode::OK, answer.to_string())
}

/// A chat completions endpoint on loopback that records every request.
async fn recorder(mode: Mode) -> (String, Arc<Mutex<Vec<String>>>) {
    let r = Recorder {
        mode,
        bodies: Arc::default(),
    };
    let bodies = r.bodies.clone();
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(complete))
        .with_state(r);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, bodies)
}

fn llm(base: &str, timeout_ms: u64) -> LlmConfig {
    LlmConfig {
        base_url: base.to_owned(),
        model: "recorder".into(),
        api_key: Some("sk-test-key-never-sent-elsewhere".to_owned().into()),
        timeout: std::time::Duration::from_millis(timeout_ms),
        retries: 1,
    }
}

/// `people`: 1000 ordinary rows and canaries in every column kind (the city
/// canary 9 times: under the default k of 10).
async fn seed(schema: &str) -> (String, String) {
    let client = admin(&admin_conn()).await.unwrap();
    let role = format!("{schema}_r");
    let password = format!("pw-{schema}");
    exec(
        &client,
        &format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
             CREATE TABLE {schema}.people (id int PRIMARY KEY, tenant text NOT NULL, name text NOT NULL,
               city text NOT NULL, amount numeric(12,2) NOT NULL, joined date NOT NULL, vip boolean,
               visits bigint NOT NULL, score double precision NOT NULL, seen timestamp NOT NULL);
             INSERT INTO {schema}.people
               SELECT i, 'acme', 'person-' || lpad(i::text, 4, '0'), (ARRAY['Paris','Lyon','Nice'])[1 + i % 3],
                      10 + (i % 50) + 0.25, DATE '2026-01-01' + (i % 90), i % 4 = 0,
                      i % 40, (i % 70) * 1.5, TIMESTAMP '2026-03-01 08:00:00' + (i % 500) * INTERVAL '1 hour'
               FROM generate_series(1, 1000) AS i;
             INSERT INTO {schema}.people
               SELECT 2000 + i, 'acme', 'CANARY-NAME-7f3a', 'CANARY-CITY', 987654.32, DATE '2031-07-19', NULL,
                      77665544, 31415.9265, TIMESTAMP '2032-02-29 13:37:42'
               FROM generate_series(1, 9) AS i;
             INSERT INTO {schema}.people VALUES
               (5000, 'globex', 'other-tenant', 'Oslo', 5, DATE '2026-02-02', true, 1, 1, TIMESTAMP '2026-03-03 00:00:00');
             DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role} LOGIN; END IF;
             END $$;
             ALTER ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{password}';
             GRANT USAGE ON SCHEMA {schema} TO {role};
             GRANT SELECT ON {schema}.people TO {role};"
        ),
    )
    .await
    .unwrap();
    (role, password)
}

/// A control plane with `llm` on `spec`, serving on loopback, and an org
/// with the `people` dataset, a group filtering on tenant and a session of
/// an `acme` user: (server, http, api key, dataset id, token).
async fn serve(
    spec: &StoreSpec,
    key: &MasterKey,
    llm: Option<LlmConfig>,
) -> (Server, Http, String) {
    let mut config = spec.config(key);
    config.llm = llm;
    let cp = ControlPlane::open(config).await.unwrap();
    let (_, admin_key) = cp
        .create_api_key(&silo_host::control::Principal::Cli, None, "ops")
        .await
        .unwrap();
    let server = Server::start(cp).await;
    let http = Http::new(&server.base);
    (server, http, admin_key.to_string())
}

async fn setup(http: &Http, admin_key: &str, schema: &str) -> (String, String, String) {
    let (role, password) = seed(schema).await;
    let (_, key) = http.org_with_key(admin_key, schema).await;
    http.ok(
        "POST",
        "/v1/datasources",
        &key,
        Some(
            json!({"name": "db", "kind": "postgres", "password": password,
            "settings": {"host": "127.0.0.1", "database": "test", "user": role, "schema": schema}}),
        ),
        201,
    )
    .await;
    let dataset = http
        .create(
            "/v1/datasets",
            &key,
            json!({"datasource": "db", "name": "people"}),
        )
        .await;
    http.tenants_group(&key, &dataset).await;
    let token = http.tenant_user(&key, "ann", "acme").await;
    (key, dataset, token)
}

fn leaked(text: &str) -> Vec<&'static str> {
    CANARIES
        .iter()
        .copied()
        .filter(|c| text.contains(c))
        .collect()
}

#[tokio::test]
async fn only_metadata_reaches_the_llm_and_the_store() {
    let spec = StoreSpec::new("meta_canary", Backend::Sqlite).await;
    let key = MasterKey::generate().unwrap();
    let (llm_base, bodies) = recorder(Mode::Ok).await;
    let (server, http, admin_key) = serve(&spec, &key, Some(llm(&llm_base, 5_000))).await;
    let (api_key, dataset, token) = setup(&http, &admin_key, "silo_t_meta_canary").await;
    let meta = format!("/v1/embed/datasets/{dataset}/metadata");
    let summary = format!("/v1/embed/datasets/{dataset}/summary");

    // Under every policy that forbids them, no canary leaves: default,
    // categories on city (the canary is under k), everything hidden.
    for policy in [
        J::Null,
        json!({"columns": {"city": "categories"}}),
        json!({"columns": {"name": "hidden", "city": "hidden", "amount": "hidden", "joined": "hidden",
            "visits": "hidden", "score": "hidden", "seen": "hidden"}}),
    ] {
        http.ok(
            "PUT",
            &format!("/v1/datasets/{dataset}/privacy"),
            &api_key,
            Some(policy.clone()),
            200,
        )
        .await;
        let payload = http.ok("GET", &meta, &token, None, 200).await;
        assert_eq!(payload["schema"], "silo.metadata.v1");
        assert_eq!(
            payload["rows"], 1009,
            "only the session's tenant: {payload}"
        );
        assert!(
            leaked(&payload.to_string()).is_empty(),
            "{policy}: {payload}"
        );
        let s = http.ok("POST", &summary, &token, None, 200).await;
        assert_eq!(s["source"], "llm:recorder");
    }
    let sent = bodies.lock().unwrap().clone();
    assert_eq!(
        sent.len(),
        3,
        "one call per policy; repeats come from the cache"
    );
    for body in &sent {
        assert!(leaked(body).is_empty(), "sent to the LLM: {body}");
        assert!(!body.contains("other-tenant") && !body.contains("Oslo"));
        assert!(
            !body.contains("sk-test-key"),
            "the API key is a header, not content"
        );
        assert!(!body.contains("acme"), "no attribute value of the user");
    }
    // What is stored is sealed, and opened holds no canary either; nor
    // does the audit log.
    let audit = http
        .ok("GET", "/v1/audit?limit=1000", &api_key, None, 200)
        .await["records"]
        .clone();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "profile")
    );
    assert!(leaked(&audit.to_string()).is_empty(), "{audit}");
    for (org, ds, k, sealed) in server.cp.store().cache_entries().await.unwrap() {
        assert!(leaked(&sealed).is_empty());
        let plain = server.cp.open_cached(&org, &ds, &k, &sealed).unwrap();
        assert!(leaked(&String::from_utf8(plain).unwrap()).is_empty());
    }

    // The test can fail: a policy that allows them lets them out.
    http.ok(
        "PUT",
        &format!("/v1/datasets/{dataset}/privacy"),
        &api_key,
        Some(json!({"columns": {"city": "categories"}, "k": 9, "exact_extremes": ["amount", "joined"]})),
        200,
    )
    .await;
    let payload = http.ok("GET", &meta, &token, None, 200).await.to_string();
    assert_eq!(
        leaked(&payload),
        ["CANARY-CITY", "987654.32", "2031-07-19"],
        "{payload}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_failing_llm_endpoint_is_a_clear_error_and_caches_nothing() {
    let spec = StoreSpec::new("meta_llm_fail", Backend::Sqlite).await;
    let key = MasterKey::generate().unwrap();
    let summaries = |server: &Server| {
        let store = server.cp.store().clone();
        async move {
            store
                .cache_entries()
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.2.starts_with("summary:"))
                .count()
        }
    };
    // Down: nothing listens on the port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let (server, http, admin_key) = serve(&spec, &key, Some(llm(&closed, 2_000))).await;
    let (_, dataset, token) = setup(&http, &admin_key, "silo_t_meta_fail").await;
    let summary = format!("/v1/embed/datasets/{dataset}/summary");
    let (status, body) = http.call("POST", &summary, Some(&token), None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("LLM endpoint is unavailable"),
        "{body}"
    );
    assert_eq!(summaries(&server).await, 0);
    server.stop().await;

    for (mode, timeout_ms, want) in [
        (Mode::Slow, 500, "timed out"),
        (Mode::Garbage, 5_000, "unusable response"),
    ] {
        let (base, bodies) = recorder(mode).await;
        let (server, http, _) = serve(&spec, &key, Some(llm(&base, timeout_ms))).await;
        let (status, body) = http.call("POST", &summary, Some(&token), None).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(want),
            "{body}"
        );
        assert_eq!(
            summaries(&server).await,
            0,
            "nothing cached after a failure"
        );
        let calls = bodies.lock().unwrap().len();
        let expected = if mode == Mode::Slow { 2 } else { 1 };
        assert_eq!(calls, expected, "retries only what may recover");
        server.stop().await;
    }

    // Overloaded once: the retry succeeds, and the result is cached.
    let (base, bodies) = recorder(Mode::FailOnce).await;
    let (server, http, _) = serve(&spec, &key, Some(llm(&base, 5_000))).await;
    let ok = http.ok("POST", &summary, &token, None, 200).await;
    assert_eq!(ok["summary"], "A dataset of people and their purchases.");
    assert_eq!(bodies.lock().unwrap().len(), 2);
    assert_eq!(summaries(&server).await, 1);
    http.ok("POST", &summary, &token, None, 200).await;
    assert_eq!(bodies.lock().unwrap().len(), 2, "served from the cache");
    server.stop().await;

    // With no endpoint, the built-in summarizer works offline.
    let (server, http, _) = serve(&spec, &key, None).await;
    let builtin = http.ok("POST", &summary, &token, None, 200).await;
    assert_eq!(builtin["source"], "builtin");
    assert!(
        builtin["summary"].as_str().unwrap().contains("1,009 rows"),
        "{builtin}"
    );
    server.stop().await;
}

#[tokio::test]
async fn profile_and_summarize_from_the_command_line() {
    use clap::Parser;
    let fx = crate::support::Fixture::new("meta_cli").await;
    fx.silo("postgres", "").await.unwrap();
    let config = fx.config_path();
    let config = config.to_str().unwrap();
    for command in ["profile", "summarize"] {
        let cli = silo_host::cli::Cli::parse_from([
            "silo",
            command,
            "--config",
            config,
            "--user",
            "alice",
            "--dataset",
            "orders",
        ]);
        silo_host::cli::run(cli).await.unwrap();
    }
    // A user without the filter's attribute is refused, not profiled.
    let cli = silo_host::cli::Cli::parse_from([
        "silo",
        "profile",
        "--config",
        config,
        "--user",
        "nobody",
        "--dataset",
        "orders",
    ]);
    assert!(silo_host::cli::run(cli).await.is_err());
}
