//! The honest Postgres connector: tenant isolation, projection, limits,
//! describe, types, and failures that must be clear.
use silo_host::error::Error;
use silo_host::silo::FetchSpec;
use silo_types::Value;

use crate::support::{Fixture, fetch_ids, ids};

#[tokio::test]
async fn each_embed_user_sees_exactly_their_rows() {
    let fx = Fixture::new("isolation").await;
    let silo = fx.silo("postgres", "").await.unwrap();
    crate::support::assert_tenant_isolation(&silo).await;
}

#[tokio::test]
async fn filter_values_that_look_like_sql_are_data() {
    let fx = Fixture::new("injection").await;
    let silo = fx.silo("postgres", "").await.unwrap();
    // tenant = "' OR 1=1 --" and shared = ["' OR ''='"]: bound as values, match nothing.
    assert_eq!(
        fetch_ids(&silo, "mallory").await.unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(fx.count_orders().await, 6);
}

#[tokio::test]
async fn projection_limit_and_all_columns() {
    let fx = Fixture::new("projection").await;
    let silo = fx.silo("postgres", "").await.unwrap();
    let spec = FetchSpec {
        dataset: "orders".into(),
        columns: Some(vec!["amount".into()]),
        limit: Some(2),
    };
    let fetch = silo.fetch("bob", &spec).await.unwrap();
    assert_eq!(fetch.columns(), ["amount"]);
    let rows = fetch.collect().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|r| r.len() == 1),
        "host-added filter columns must be removed: {rows:?}"
    );
    assert!(
        rows.iter()
            .all(|r| matches!(&r[0], Value::Decimal(d) if d.starts_with(['4', '5', '6'])))
    );

    let all = FetchSpec {
        dataset: "orders".into(),
        ..FetchSpec::default()
    };
    let fetch = silo.fetch("alice", &all).await.unwrap();
    assert_eq!(
        fetch.columns(),
        ["id", "tenant", "customer", "amount", "ordered_on"]
    );
    let rows = fetch.collect().await.unwrap();
    assert_eq!(ids(&rows), [1, 2, 3]);
    assert_eq!(
        rows[0][4],
        Value::Date(silo_types::time::parse_date("2026-01-01").unwrap())
    );
}

#[tokio::test]
async fn describe_lists_governed_datasets_only() {
    let fx = Fixture::new("describe").await;
    let silo = fx.silo("postgres", "").await.unwrap();
    let datasets = silo.describe("main").await.unwrap();
    let names: Vec<&str> = datasets.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["orders"]);
    let cols: Vec<&str> = datasets[0]
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, ["id", "tenant", "customer", "amount", "ordered_on"]);
}

#[tokio::test]
async fn missing_attribute_and_unknown_names_are_clear_errors() {
    let fx = Fixture::new("errors").await;
    let silo = fx.silo("postgres", "").await.unwrap();
    let err = fetch_ids(&silo, "nobody").await.unwrap_err();
    assert!(
        matches!(&err, Error::Policy(m) if m.contains("tenant")),
        "{err}"
    );
    let err = fetch_ids(&silo, "eve").await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    let spec = FetchSpec {
        dataset: "salaries".into(),
        ..FetchSpec::default()
    };
    assert!(matches!(
        silo.fetch("alice", &spec).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn database_down_is_a_clear_error_and_leaks_nothing() {
    let fx = Fixture::new("down").await;
    let silo = fx.silo("postgres", "").await.unwrap();
    drop(silo);
    // Same config, but a port nothing listens on.
    let dir = std::env::temp_dir().join(format!("silo-tests-{}-down", std::process::id()));
    let text = std::fs::read_to_string(dir.join("silo.toml"))
        .unwrap()
        .replace("port = 5432", "port = 1");
    std::fs::write(dir.join("down.toml"), text).unwrap();
    let cfg = silo_host::config::SiloConfig::load(&dir.join("down.toml")).unwrap();
    let silo = silo_host::silo::Silo::new(&cfg).unwrap();
    let err = fetch_ids(&silo, "alice").await.unwrap_err();
    assert!(
        matches!(&err, Error::Datasource(m) if m.contains("unavailable")),
        "{err}"
    );
    assert!(!err.to_string().contains("127.0.0.1"), "{err}");
}

#[tokio::test]
async fn every_supported_type_round_trips_and_binds() {
    let fx = Fixture::new("types").await;
    let s = &fx.schema;
    silo_host::demo::exec(
        &fx.client,
        &format!(
            "CREATE TABLE {s}.typed (b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric(12,4),
               t text, v varchar(10), by bytea, d date, ts timestamp, tz timestamptz, j json, jb jsonb, u uuid);
             INSERT INTO {s}.typed VALUES
               (true, -2, 40000, 9000000000, 1.5, -2.25, -1234.5678, 'héllo', 'v', '\\xdeadbeef', '2024-02-29',
                '2024-02-29 12:34:56.789', '2024-02-29 12:34:56+00', '{{\"a\": 1}}', '{{\"b\": [2]}}',
                'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
               (NULL, NULL, NULL, NULL, NULL, NULL, 0.5, NULL, NULL, NULL, '2023-01-01', NULL, NULL, NULL, NULL, NULL),
               (false, 0, 0, 0, 0, 0, 99999999.9999, '', '', '', '1999-12-31', '1970-01-01', '1970-01-01 00:00:00+00', 'null', '[]', NULL);
"
        ),
    )
    .await
    .unwrap();
    let extra = "[datasets.typed]\ndatasource = \"main\"\nrow_filter = [\"n >= {{user.min_n}} and d >= {{user.since}}\"]\n";
    let users = "[users.typer]\nattributes = { min_n = -2000, since = 2024-01-01 }\n";
    let silo = fx
        .silo("postgres", &format!("{extra}\n{users}"))
        .await
        .unwrap();
    // The role exists once the fixture wrote its config.
    silo_host::demo::exec(&fx.client, &format!("GRANT SELECT ON {s}.typed TO {s}_r"))
        .await
        .unwrap();
    let spec = FetchSpec {
        dataset: "typed".into(),
        ..FetchSpec::default()
    };
    let rows = silo
        .fetch("typer", &spec)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "only the 2024 row passes n >= -2000 and d >= 2024-01-01: {rows:?}"
    );
    let r = &rows[0];
    let ts = |s: &str| Value::Timestamp(silo_types::time::parse_timestamp(s).unwrap());
    let expected = vec![
        Value::Boolean(true),
        Value::Int(-2),
        Value::Int(40000),
        Value::Int(9_000_000_000),
        Value::Float(1.5),
        Value::Float(-2.25),
        Value::Decimal("-1234.5678".into()),
        Value::Text("héllo".into()),
        Value::Text("v".into()),
        Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef]),
        Value::Date(silo_types::time::parse_date("2024-02-29").unwrap()),
        ts("2024-02-29T12:34:56.789Z"),
        ts("2024-02-29T12:34:56Z"),
        Value::Json("{\"a\": 1}".into()),
        Value::Json("{\"b\": [2]}".into()),
        Value::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
    ];
    assert_eq!(r, &expected);
}

#[tokio::test]
async fn compiled_connector_is_reused_from_disk_after_a_restart() {
    use silo_host::limits::Limits;
    use silo_host::runtime::{LoadSource, Runtime};
    let dir = std::env::temp_dir().join(format!("silo-tests-{}-cache", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let wasm = std::fs::read(crate::connectors::POSTGRES).unwrap();
    let first = Runtime::new(
        Limits::default(),
        Some(dir.clone()),
        silo_host::capability::ALL,
    )
    .unwrap();
    assert_eq!(
        first
            .load(&wasm, silo_host::capability::Kind::Sql)
            .unwrap()
            .source,
        LoadSource::Compiled
    );
    assert_eq!(
        first
            .load(&wasm, silo_host::capability::Kind::Sql)
            .unwrap()
            .source,
        LoadSource::Memory
    );
    drop(first);
    let restarted = Runtime::new(
        Limits::default(),
        Some(dir.clone()),
        silo_host::capability::ALL,
    )
    .unwrap();
    let loaded = restarted
        .load(&wasm, silo_host::capability::Kind::Sql)
        .unwrap();
    assert_eq!(loaded.source, LoadSource::DiskCache);
    // The cache directory is private to this user.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // A corrupt entry is ignored and rewritten, not trusted.
    for e in std::fs::read_dir(&dir).unwrap() {
        std::fs::write(e.unwrap().path(), b"garbage").unwrap();
    }
    let again = Runtime::new(Limits::default(), Some(dir), silo_host::capability::ALL).unwrap();
    assert_eq!(
        again
            .load(&wasm, silo_host::capability::Kind::Sql)
            .unwrap()
            .source,
        LoadSource::Compiled
    );
}

#[tokio::test]
async fn registration_refuses_a_role_that_can_write() {
    let fx = Fixture::new("pg_registration").await;
    fx.silo("postgres", "")
        .await
        .expect("a SELECT-only role registers");
    let schema = &fx.schema;
    silo_host::demo::exec(
        &fx.client,
        &format!("GRANT INSERT, TRUNCATE ON {schema}.orders TO {schema}_r"),
    )
    .await
    .unwrap();
    let err = crate::support::registration_refusal(&fx.config_path()).await;
    assert!(err.contains(&format!("INSERT on {schema}.orders")), "{err}");
    assert!(
        err.contains(&format!("TRUNCATE on {schema}.orders")),
        "{err}"
    );
    assert!(!err.contains("SELECT"), "{err}");
    let silo = crate::support::open_with_override(&fx.config_path()).await;
    assert_eq!(fetch_ids(&silo, "alice").await.unwrap(), [1, 2, 3]);

    // The bootstrap superuser is refused as such.
    let text = std::fs::read_to_string(fx.config_path()).unwrap();
    let text = text
        .replace(&format!("user = \"{schema}_r\""), "user = \"postgres\"")
        .replace("accept_write_privileges = true\n", "");
    std::fs::write(fx.config_path(), text).unwrap();
    let err = crate::support::registration_refusal(&fx.config_path()).await;
    assert!(err.contains("superuser"), "{err}");
}

/// Every statement runs in a read-only transaction with the pool's settings,
/// also once the connection has it prepared (then only its execution goes
/// out): a statement that would write is refused by the server on the
/// cached path too, and nothing was written.
#[tokio::test]
async fn statements_run_inside_the_read_only_transaction_cached_or_not() {
    use silo_host::capability::SqlClient;

    let (admin, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute(
            "DROP SEQUENCE IF EXISTS public.silo_ro_probe; CREATE SEQUENCE public.silo_ro_probe",
        )
        .await
        .unwrap();
    // One connection: every call after the first finds the statement prepared.
    let client = one_connection_client(5432);
    let probe = "SELECT current_setting('transaction_read_only'), \
                 current_setting('statement_timeout'), current_setting('search_path'), \
                 CASE WHEN $1 THEN nextval('public.silo_ro_probe') ELSE 0 END";
    for _ in 0..3 {
        let mut rows = client
            .query(probe, vec![Value::Boolean(false)])
            .await
            .unwrap();
        let batch = rows.next_batch(10).await.unwrap().unwrap();
        let row = batch.iter().next().unwrap().to_vec();
        assert_eq!(row[0], Value::Text("on".into()));
        assert_ne!(row[1], Value::Text("0".into()));
        assert_eq!(row[2], Value::Text("pg_catalog".into()));
        while rows.next_batch(10).await.unwrap().is_some() {}
    }
    // The prepared statement, now taking the branch that writes.
    let refused = match client.query(probe, vec![Value::Boolean(true)]).await {
        Err(_) => true,
        Ok(mut rows) => rows.next_batch(10).await.is_err(),
    };
    assert!(refused);
    let called: bool = admin
        .query_one("SELECT is_called FROM public.silo_ro_probe", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!called, "a read-only fetch advanced a sequence");

    // Once a fetch has read its rows, the pooled connection is out of its
    // transaction without being asked again, and the next statement on it
    // starts a transaction of its own.
    let probe = "SELECT pg_backend_pid()::int8, now()::text";
    let first = client.query(probe, Vec::new()).await.unwrap();
    let read = async |mut rows: Box<dyn silo_host::capability::RowSource>| {
        let row = rows
            .next_batch(10)
            .await
            .unwrap()
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .to_vec();
        while rows.next_batch(10).await.unwrap().is_some() {}
        row
    };
    let first = read(first).await;
    let Value::Int(pid) = first[0] else {
        panic!("pid {:?}", first[0]);
    };
    let mut state = String::new();
    for _ in 0..200 {
        state = admin
            .query_one(
                "SELECT coalesce(state, '') FROM pg_stat_activity WHERE pid = $1::int4",
                &[&(pid as i32)],
            )
            .await
            .unwrap()
            .get(0);
        if state == "idle" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(state, "idle", "the pooled connection ended its transaction");
    let second = read(client.query(probe, Vec::new()).await.unwrap()).await;
    assert_eq!(second[0], first[0], "the same pooled connection");
    assert_ne!(
        second[1], first[1],
        "a transaction of its own, not the previous one's"
    );

    admin
        .batch_execute("DROP SEQUENCE public.silo_ro_probe")
        .await
        .unwrap();
}

/// A pool of one connection (as the `postgres` superuser, loopback allowed)
/// to the local server's `test` database on `port`.
fn one_connection_client(port: u16) -> silo_host::capability::postgres::PgClient {
    use silo_host::capability::net::NetPolicy;
    use silo_host::capability::postgres::{PgClient, PgSettings, PostgresConfig};
    let config: PostgresConfig = serde_json::from_value(serde_json::json!({
        "host": "127.0.0.1", "port": port, "database": "test", "user": "postgres",
        "pool_size": 1, "fetch_connections": 1, "tls": {"mode": "disable"},
    }))
    .unwrap();
    let limits = silo_host::limits::Limits::default();
    PgClient::new(PgSettings {
        config,
        password: None,
        statement_timeout: limits.statement_timeout,
        fetch_timeout: limits.fetch_timeout,
        max_row_bytes: limits.max_row_bytes,
        net: NetPolicy {
            local: true,
            ..NetPolicy::default()
        },
    })
    .unwrap()
}

/// A startup packet with its `options` value passed through `rewrite`
/// (`None`: dropped): what a pooler that does not pass them on (PgBouncer in
/// transaction mode, say), or passes on only some, sends the server.
fn rewrite_options(packet: &[u8], rewrite: Rewrite) -> Vec<u8> {
    // length (4), protocol (4), then name\0value\0 pairs, then \0.
    let mut out = packet[4..8].to_vec();
    let mut fields = packet[8..].split(|b| *b == 0);
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if name.is_empty() {
            break;
        }
        let value = if name == b"options" {
            match rewrite(std::str::from_utf8(value).unwrap()) {
                Some(v) => v.into_bytes(),
                None => continue,
            }
        } else {
            value.to_vec()
        };
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(&value);
        out.push(0);
    }
    out.push(0);
    let mut framed = ((out.len() + 4) as u32).to_be_bytes().to_vec();
    framed.extend(out);
    framed
}

/// What a proxy makes of the startup `options` (`None`: drops them).
type Rewrite = fn(&str) -> Option<String>;

/// Startup `options` without the `-c` setting `setting`.
fn without(options: &str, setting: &str) -> Option<String> {
    Some(
        options
            .split("-c ")
            .filter(|o| !o.trim().is_empty() && !o.starts_with(setting))
            .map(|o| format!("-c {}", o.trim()))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// A loopback proxy to the local Postgres that rewrites each connection's
/// startup `options`; its port.
async fn options_proxy(rewrite: Rewrite) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = proxy.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = proxy.accept().await {
            tokio::spawn(async move {
                let mut len = [0u8; 4];
                client.read_exact(&mut len).await?;
                let mut packet = len.to_vec();
                packet.resize(u32::from_be_bytes(len) as usize, 0);
                client.read_exact(&mut packet[4..]).await?;
                let mut server = tokio::net::TcpStream::connect("127.0.0.1:5432").await?;
                server.write_all(&rewrite_options(&packet, rewrite)).await?;
                tokio::io::copy_bidirectional(&mut client, &mut server).await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    port
}

/// A datasource reached through something that drops the startup packet's
/// `options` (where Silo puts read-only transactions, the statement timeout
/// and the pinned `search_path`), all of them or any one, is refused before
/// any statement runs on it, with an error that says why; the same server
/// reached directly serves.
#[tokio::test]
async fn a_server_that_drops_the_session_settings_is_refused() {
    use silo_host::capability::SqlClient;

    let rewrites: [(&str, Rewrite); 5] = [
        ("all", |_| None),
        ("read-only", |o| without(o, "default_transaction_read_only")),
        ("timeout", |o| without(o, "statement_timeout")),
        ("search_path", |o| without(o, "search_path")),
        ("read-write", |o| {
            Some(o.replace(
                "default_transaction_read_only=on",
                "default_transaction_read_only=off",
            ))
        }),
    ];
    for (case, rewrite) in rewrites {
        let proxy_port = options_proxy(rewrite).await;
        let err = match one_connection_client(proxy_port)
            .query("SELECT 1", Vec::new())
            .await
        {
            Ok(_) => panic!("{case}: a connection without its settings served a statement"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("session settings"), "{case}: {err}");
    }
    let mut rows = one_connection_client(5432)
        .query("SELECT 1", Vec::new())
        .await
        .unwrap();
    assert!(rows.next_batch(10).await.unwrap().is_some());
}
