//! Hostile connectors: each gets a clear error or only permitted rows, and
//! the host keeps serving other fetches.
use std::time::{Duration, Instant};

use silo_host::error::Error;
use silo_host::silo::FetchSpec;

use crate::connectors;
use crate::support::{Fixture, fetch_ids};

/// Tight limits so hostile tests finish quickly; the mechanisms are the same.
const TIGHT: &str = "[limits]\ntimeout_ms = 1500\nmax_rows = 50000\nmemory_bytes = 33554432\n";

#[tokio::test]
async fn connector_that_ignores_the_filter_gets_only_permitted_rows() {
    let fx = Fixture::new("ignore").await;
    let silo = fx.silo(connectors::IGNORE_FILTER, "").await.unwrap();
    assert_eq!(fetch_ids(&silo, "alice").await.unwrap(), [1, 2, 3]);
    assert_eq!(fetch_ids(&silo, "bob").await.unwrap(), [4, 5, 6]);
    assert_eq!(fetch_ids(&silo, "carol").await.unwrap(), [4]);
}

#[tokio::test]
async fn connector_that_relabels_rows_in_sql_still_gets_only_permitted_rows() {
    let fx = Fixture::new("forgesql").await;
    let silo = fx.silo(connectors::FORGE_TENANT_SQL, "").await.unwrap();
    // It writes `$1 AS tenant` over the real column and drops the WHERE; the
    // governed table underneath is already alice's rows only.
    assert_eq!(fetch_ids(&silo, "alice").await.unwrap(), [1, 2, 3]);
}

#[tokio::test]
async fn fabricated_row_fails_the_whole_fetch() {
    let fx = Fixture::new("forgerows").await;
    let silo = fx.silo(connectors::FORGE_TENANT_ROWS, "").await.unwrap();
    let err = fetch_ids(&silo, "alice").await.unwrap_err();
    assert!(
        matches!(&err, Error::Policy(m) if m.contains("outside the user's row filter")),
        "{err}"
    );
    // Streaming: the verified rows before it are released, the forged one never.
    let spec = FetchSpec {
        dataset: "orders".into(),
        columns: Some(vec!["id".into(), "tenant".into()]),
        limit: None,
    };
    let mut fetch = silo.fetch("alice", &spec).await.unwrap();
    let mut released = Vec::new();
    let err = loop {
        match fetch.next_batch().await {
            Ok(Some(batch)) => released.extend(batch),
            Ok(None) => panic!("the forged row was not caught"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Policy(_)));
    assert!(
        released
            .iter()
            .all(|r| r[1] == silo_types::Value::Text("acme".into())),
        "{released:?}"
    );
    assert!(
        matches!(fetch.next_batch().await, Ok(None)),
        "a failed fetch releases nothing more"
    );
}

#[tokio::test]
async fn ungoverned_table_is_refused() {
    let fx = Fixture::new("othertable").await;
    let silo = fx.silo(connectors::OTHER_TABLE, "").await.unwrap();
    let err = fetch_ids(&silo, "alice").await.unwrap_err();
    assert!(
        matches!(&err, Error::Policy(m) if m.contains("salaries")),
        "{err}"
    );
}

#[tokio::test]
async fn writes_and_multiple_statements_are_refused_and_change_nothing() {
    let fx = Fixture::new("writes").await;
    let silo = fx.silo(connectors::WRITE_ATTEMPT, "").await.unwrap();
    let err = fetch_ids(&silo, "alice").await.unwrap_err();
    crate::support::assert_all_refused(
        &err,
        10,
        &[
            "UPDATE",
            "DROP",
            "exactly one statement",
            "WITH",
            "FOR UPDATE",
            "INSERT",
            "COPY",
        ],
    );
    assert_eq!(fx.count_orders().await, 6);
}

#[tokio::test]
async fn dangerous_functions_and_hidden_subqueries_are_refused() {
    let fx = Fixture::new("functions").await;
    let silo = fx.silo(connectors::FORBIDDEN_FUNCTION, "").await.unwrap();
    let err = fetch_ids(&silo, "alice").await.unwrap_err();
    crate::support::assert_all_refused(
        &err,
        8,
        &[
            "default_transaction_read_only",
            "statement_timeout",
            "pg_read_file",
            "query_to_xml",
            "dblink",
            "set_config",
            "pg_sleep",
            "salaries",
        ],
    );
}

#[tokio::test(flavor = "current_thread")]
async fn infinite_loop_hits_the_time_limit_while_others_are_served() {
    let fx = Fixture::new("loop").await;
    let spinning = fx.silo(connectors::INFINITE_LOOP, TIGHT).await.unwrap();
    let honest = fx.silo("postgres", TIGHT).await.unwrap();
    let started = Instant::now();
    // One thread: the honest fetches complete only because the spinning guest yields.
    let (spun, served) = tokio::join!(fetch_ids(&spinning, "alice"), async {
        let mut done = Vec::new();
        for _ in 0..3 {
            done.push(fetch_ids(&honest, "bob").await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (done, started.elapsed())
    });
    let err = spun.unwrap_err();
    assert!(
        matches!(&err, Error::Limit(m) if m.contains("time limit")),
        "{err}"
    );
    let (done, served_at) = served;
    assert!(
        done.iter().all(|r| matches!(r.as_deref(), Ok([4, 5, 6]))),
        "{done:?}"
    );
    assert!(
        served_at < Duration::from_millis(1500),
        "honest fetches waited for the spinning one: {served_at:?}"
    );
    assert_eq!(fetch_ids(&honest, "alice").await.unwrap(), [1, 2, 3]);
}

/// Past the host's instance capacity a fetch waits briefly, then is told
/// the host is busy (503, retry), never that its connector trapped.
#[tokio::test]
async fn fetches_past_instance_capacity_are_busy_not_trapped() {
    let fx = Fixture::new("capacity").await;
    let one = "[limits]\ntimeout_ms = 9000\ninstances = 1\n";
    let silo = fx.silo(connectors::INFINITE_LOOP, one).await.unwrap();
    let (spun, waited) = tokio::join!(fetch_ids(&silo, "alice"), async {
        // The spinning fetch holds the only instance.
        tokio::time::sleep(Duration::from_millis(300)).await;
        fetch_ids(&silo, "bob").await
    });
    let err = waited.unwrap_err();
    assert!(
        matches!(&err, Error::Busy(m) if m.contains("instances are in use")),
        "{err}"
    );
    assert!(matches!(spun.unwrap_err(), Error::Limit(_)));
    // The slot is free again.
    let err = fetch_ids(&silo, "alice").await.unwrap_err();
    assert!(
        matches!(&err, Error::Limit(m) if m.contains("time limit")),
        "{err}"
    );
    for bad in ["0", "5000"] {
        let config = format!("[limits]\ninstances = {bad}\n");
        let err = fx.silo("postgres", &config).await.err().unwrap();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("instances")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_limit() {
    let fx = Fixture::new("alloc").await;
    let silo = fx.silo(connectors::UNBOUNDED_ALLOC, TIGHT).await.unwrap();
    let err = fetch_ids(&silo, "alice").await.unwrap_err();
    assert!(
        matches!(&err, Error::Limit(m) if m.contains("memory limit of 32 MiB")),
        "{err}"
    );
    // The next fetch gets a fresh instance and works as before.
    let err = fetch_ids(&silo, "alice").await.unwrap_err();
    assert!(matches!(err, Error::Limit(_)));
}

#[tokio::test]
async fn ten_million_rows_hit_the_row_cap() {
    let fx = Fixture::new("tenmillion").await;
    let silo = fx.silo(connectors::TEN_MILLION_ROWS, TIGHT).await.unwrap();
    let err = fetch_ids(&silo, "alice").await.unwrap_err();
    assert!(
        matches!(&err, Error::Limit(m) if m.contains("more than 50000 rows")),
        "{err}"
    );
    // A caller's own limit is honoured without error.
    let spec = FetchSpec {
        dataset: "orders".into(),
        columns: Some(vec!["id".into()]),
        limit: Some(10),
    };
    let rows = crate::support::fetch_rows(&silo, "alice", &spec)
        .await
        .unwrap();
    assert_eq!(rows.len(), 10);
}

#[tokio::test]
async fn component_importing_sockets_is_refused_at_load() {
    let fx = Fixture::new("socket").await;
    let err = match fx.silo(connectors::OPENS_SOCKET, "").await {
        Ok(_) => panic!("a component importing sockets was loaded"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, Error::Connector(m) if m.contains("wasi:sockets")),
        "{err}"
    );
}

mod inspect {
    use silo_host::capability::Kind;
    use silo_host::runtime::Runtime;

    use crate::connectors;

    fn runtime() -> Runtime {
        let cache = std::env::temp_dir().join("silo-test-compile-cache");
        Runtime::new(Default::default(), Some(cache), silo_host::capability::ALL).unwrap()
    }

    #[test]
    fn inspect_names_imports_exports_and_the_kind() {
        let rt = runtime();
        let pg = rt.inspect(silo_host::builtin::POSTGRES, None).unwrap();
        assert_eq!(pg.kind, Some(Kind::Sql));
        assert!(
            pg.imports
                .iter()
                .any(|i| i.starts_with("silo:connector/sql@")),
            "{:?}",
            pg.imports
        );
        assert!(
            pg.exports
                .iter()
                .any(|e| e.starts_with("silo:connector/connector@")),
            "{:?}",
            pg.exports
        );
        assert_eq!(pg.digest.len(), 64);
        let files = rt.inspect(silo_host::builtin::FILES, None).unwrap();
        assert_eq!(files.kind, Some(Kind::Files));
    }

    #[test]
    fn inspect_refuses_what_a_kind_is_not_given_naming_it() {
        let rt = runtime();
        let wasm = std::fs::read(connectors::OPENS_SOCKET).unwrap();
        let err = rt.inspect(&wasm, Some(Kind::Sql)).unwrap_err().to_string();
        assert!(err.contains("wasi:sockets"), "{err}");
        assert!(err.contains("remove what pulls it in"), "{err}");
        let err = rt
            .inspect(silo_host::builtin::POSTGRES, Some(Kind::Files))
            .unwrap_err()
            .to_string();
        assert!(err.contains("silo:connector/sql"), "{err}");
        assert!(rt.inspect(b"not wasm", None).is_err());
    }

    #[tokio::test]
    async fn the_cli_inspects_a_component_file() {
        use clap::Parser;
        let cli = silo_host::cli::Cli::parse_from([
            "silo",
            "connector",
            "inspect",
            connectors::IGNORE_FILTER,
            "--kind",
            "sql",
        ]);
        silo_host::cli::run(cli).await.unwrap();
        let cli = silo_host::cli::Cli::parse_from([
            "silo",
            "connector",
            "inspect",
            connectors::OPENS_SOCKET,
        ]);
        assert!(silo_host::cli::run(cli).await.is_err());
    }
}

/// Every instance starts from clean memory, whoever used its slot before:
/// a connector that scans all of its linear memory (grown past what earlier
/// instances grew to) for what they sprayed there finds nothing, whether
/// the host reset the slot in place or handed its pages back.
#[tokio::test]
async fn a_connector_never_finds_what_an_earlier_instance_left_in_memory() {
    let fx = Fixture::new("scavenge").await;
    let silo = fx.silo(connectors::MEMORY_SCAVENGER, "").await.unwrap();
    let spec = FetchSpec {
        dataset: "orders".into(),
        columns: Some(vec!["id".into(), "tenant".into(), "customer".into()]),
        limit: None,
    };
    for round in 0..6 {
        // alice (acme) sprays 1 MiB, bob (globex) 6 MiB: both resets.
        for user in ["alice", "bob", "bob", "alice"] {
            let rows = crate::support::fetch_rows(&silo, user, &spec)
                .await
                .unwrap();
            let seen: Vec<String> = rows
                .iter()
                .filter_map(|r| match r.get(2) {
                    Some(silo_types::Value::Text(t)) => Some(t.clone()),
                    _ => None,
                })
                .collect();
            assert!(
                seen.iter().any(|s| s.starts_with("scanned ")),
                "the scan ran: {seen:?}"
            );
            let found: Vec<&String> = seen.iter().filter(|s| s.starts_with("found ")).collect();
            assert!(
                found.is_empty(),
                "round {round}, {user}: an earlier instance's memory was visible: {found:?}"
            );
        }
    }
}
