//! `silo serve`'s own loop over loopback: slow and silent clients are cut,
//! connections are capped, shutdown drains and records what it cut; the
//! audit counts what a client actually got, is bounded, keyed and paged.
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value as J, json};
use silo_host::api::{AppState, app};
use silo_host::control::ControlPlane;
use silo_host::control::Principal;
use silo_host::control::audit::{self, AuditRecord};
use silo_host::control::crypto::MasterKey;
use silo_host::server::{ServerLimits, serve_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::control::{Backend, Http, StoreSpec};

/// Generous bound for "eventually" in these tests: far above every limit
/// set below, so a slow machine is never a failure.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running `serve_until` on loopback.
struct Serving {
    addr: SocketAddr,
    http: Http,
    admin: String,
    spec: StoreSpec,
    master: MasterKey,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<silo_host::error::Result<()>>,
}

impl Serving {
    async fn start(name: &str, limits: ServerLimits) -> Serving {
        Serving::start_with(name, limits, |_| {}).await
    }

    async fn start_with(
        name: &str,
        limits: ServerLimits,
        operator: impl FnOnce(&mut silo_host::control::ControlConfig),
    ) -> Serving {
        let tcp = "127.0.0.1:0".parse::<SocketAddr>().unwrap();
        let l = launch(name, limits, tcp.into(), operator).await;
        let addr = l.ready.await.unwrap().tcp().unwrap();
        Serving {
            addr,
            http: Http::new(&format!("http://{addr}")),
            admin: l.admin,
            spec: l.spec,
            master: l.master,
            stop: Some(l.stop),
            task: l.task,
        }
    }

    /// Begins the shutdown.
    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the server to finish, then reads the whole audit log.
    async fn finish(mut self) -> Vec<AuditRecord> {
        self.shutdown();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the server stops within its drain timeout")
            .unwrap()
            .unwrap();
        let cp = ControlPlane::open(self.spec.config(&self.master))
            .await
            .unwrap();
        audit::records(cp.store(), None).await.unwrap()
    }
}

/// A `serve_until` starting on `listen` over a new SQLite store with an
/// operator key: where it is bound arrives on `ready`, `stop` begins the
/// shutdown.
struct Launched {
    ready: tokio::sync::oneshot::Receiver<silo_host::server::Listen>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<silo_host::error::Result<()>>,
    admin: String,
    spec: StoreSpec,
    master: MasterKey,
}

async fn launch(
    name: &str,
    limits: ServerLimits,
    listen: silo_host::server::Listen,
    operator: impl FnOnce(&mut silo_host::control::ControlConfig),
) -> Launched {
    let spec = StoreSpec::new(name, Backend::Sqlite).await;
    let master = MasterKey::generate().unwrap();
    let mut config = spec.config(&master);
    operator(&mut config);
    let cp = ControlPlane::open(config).await.unwrap();
    let (_, admin) = cp
        .create_api_key(&Principal::Cli, None, "ops")
        .await
        .unwrap();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_until(
        cp,
        listen,
        None,
        limits,
        move |bound| {
            let _ = ready_tx.send(bound.clone());
        },
        async move {
            let _ = stopped.await;
        },
    ));
    Launched {
        ready,
        stop,
        task,
        admin: admin.to_string(),
        spec,
        master,
    }
}

/// An org with a files dataset `orders` of `rows` rows of tenant `acme`,
/// and a session of user `ann` (tenant acme): (org key, dataset id, token).
async fn orders(http: &Http, admin: &str, org: &str, rows: usize) -> (String, String, String) {
    let (_, key) = http.org_with_key(admin, org).await;
    let dataset = http.files_dataset(&key, "orders").await;
    let mut csv = String::from("id,tenant,note\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "{i},{},a note long enough to fill the socket buffers {i}\n",
            if i % 10 == 9 { "globex" } else { "acme" }
        ));
    }
    let (status, body) = http.upload_csv(&key, &dataset, csv, true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    http.tenants_group(&key, &dataset).await;
    let token = http.tenant_user(&key, "ann", "acme").await;
    (key, dataset, token)
}

/// Starts a streamed (NDJSON) fetch of `dataset`; the body is left unread.
async fn ndjson_fetch(base: &str, dataset: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v1/embed/datasets/{dataset}/fetch"))
        .bearer_auth(token)
        .header("accept", "application/x-ndjson")
        .json(&json!({}))
        .send()
        .await
        .unwrap()
}

/// Reads until the peer closes (or `PATIENCE` passes): what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

/// Files a request whose body will trickle in: its headers and `first`.
async fn start_upload(
    addr: SocketAddr,
    key: &str,
    dataset: &str,
    length: usize,
    first: &str,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/datasets/{dataset}/upload?partition_by=tenant HTTP/1.1\r\nhost: x\r\n\
         authorization: Bearer {key}\r\ncontent-type: text/csv\r\ncontent-length: {length}\r\n\r\n{first}"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

fn staged_files(spec: &StoreSpec) -> usize {
    std::fs::read_dir(spec.dir.join("uploads/.incoming"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn slow_and_silent_clients_are_cut_and_connections_capped() {
    let limits = ServerLimits {
        header_timeout: Duration::from_secs(1),
        body_idle_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(3),
        max_connections: 64,
        drain_timeout: Duration::from_secs(5),
    };
    let server = Serving::start_with("serving_slow", limits, |c| c.max_upload_bytes = 4096).await;
    let (key, dataset, _) = orders(&server.http, &server.admin, "slow", 10).await;

    // Over the operator's upload cap: 413 as it streams in, nothing kept.
    let mut big = String::from("id,tenant,note\n");
    while big.len() <= 4096 {
        big.push_str("1,acme,some words\n");
    }
    let (status, _) = server.http.upload_csv(&key, &dataset, big, true).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(staged_files(&server.spec), 0);

    // Half-sent headers (slowloris): the connection is closed.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut slow).await;
    assert!(got.is_some(), "a half-sent request is not cut");
    assert!(!got.unwrap().contains("200 OK"));
    // A connection that never sends anything is cut too.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(read_to_close(&mut silent).await.is_some());

    // A body that stops sending: 408, and the staged part is removed.
    let mut stalled = start_upload(server.addr, &key, &dataset, 1000, "id,tenant,note\n").await;
    let answer = read_to_close(&mut stalled).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert_eq!(staged_files(&server.spec), 0);

    // A body that keeps sending a byte at a time, never idle, but past the
    // request timeout: 408 too.
    // (Declared within the cap: a declared size over it is refused at once.)
    let mut trickle = start_upload(server.addr, &key, &dataset, 4_000, "id,tenant,note\n").await;
    let answer = tokio::time::timeout(PATIENCE, async {
        let mut buf = vec![0u8; 4096];
        loop {
            tokio::select! {
                n = trickle.read(&mut buf) => {
                    let n = n.unwrap_or(0);
                    return String::from_utf8_lossy(&buf[..n]).into_owned();
                }
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    let _ = trickle.write_all(b"1").await;
                }
            }
        }
    })
    .await
    .expect("a trickling request is cut");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(staged_files(&server.spec), 0);

    // The data is the first upload's, untouched.
    let status = server.http.call("GET", "/livez", None, None).await.0;
    assert_eq!(status, StatusCode::OK);
    server.finish().await;
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let limits = ServerLimits {
        // Long enough that held connections stay for the whole test.
        header_timeout: Duration::from_secs(120),
        max_connections: 3,
        ..ServerLimits::default()
    };
    let server = Serving::start("serving_cap", limits).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Let the server take the three.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/livez", server.addr);
    let waiting = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(url).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "a fourth connection was served while three were open"
    );
    // One slot frees: the waiting request is answered.
    drop(held.pop());
    let status = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("served once a slot is free")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    drop(held);
    server.finish().await;
}

#[tokio::test]
async fn liveness_and_readiness_are_separate() {
    let spec = StoreSpec::new("serving_ready", Backend::Sqlite).await;
    let cp = ControlPlane::open(spec.config(&MasterKey::generate().unwrap()))
        .await
        .unwrap();
    let state = AppState::new(std::sync::Arc::new(cp));
    let draining = state.draining.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app(state)).await });
    let http = Http::new(&base);
    assert_eq!(
        http.call("GET", "/livez", None, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        http.call("GET", "/readyz", None, None).await.0,
        StatusCode::OK
    );
    draining.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = http.call("GET", "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        http.call("GET", "/livez", None, None).await.0,
        StatusCode::OK
    );
    task.abort();

    // A store sealed under another master key: alive, not ready.
    let other = ControlPlane::open(spec.config(&MasterKey::generate().unwrap())).await;
    if let Ok(other) = other {
        assert!(other.ready().await.is_err());
    }
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_records_what_it_cut() {
    let limits = ServerLimits {
        drain_timeout: Duration::from_secs(3),
        ..ServerLimits::default()
    };
    let mut server = Serving::start("serving_drain", limits).await;
    let rows = 300_000;
    let (key, dataset, ann) = orders(&server.http, &server.admin, "drain", rows).await;

    // In flight at shutdown: an upload whose body is half sent, and a
    // stream whose client stops reading.
    let replacement = "id,tenant,note\n1,acme,new\n";
    let (first, rest) = replacement.split_at(10);
    let mut upload = start_upload(server.addr, &key, &dataset, replacement.len(), first).await;
    let mut stream = ndjson_fetch(&format!("http://{}", server.addr), &dataset, &ann).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let first_chunk = stream.chunk().await.unwrap().unwrap();
    assert!(!first_chunk.is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // No new connection is taken.
    let late = TcpStream::connect(server.addr).await;
    if let Ok(mut late) = late {
        let _ = late
            .write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        let answer = read_to_close(&mut late).await.unwrap_or_default();
        assert!(!answer.contains("200 OK"), "{answer}");
    }
    // The upload started before the shutdown completes.
    upload.write_all(rest.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut upload).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The stalled stream is cut at the drain timeout; its record says how
    // much it had been handed.
    let records = server.finish().await;
    drop(stream);
    let uploads: Vec<_> = records
        .iter()
        .filter(|r| r.event.action == "dataset.upload")
        .collect();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    let started: Vec<_> = records
        .iter()
        .filter(|r| r.event.action == "fetch.start")
        .collect();
    let fetched: Vec<_> = records
        .iter()
        .filter(|r| r.event.action == "fetch")
        .collect();
    assert_eq!(started.len(), 1, "{records:?}");
    assert_eq!(fetched.len(), 1, "{records:?}");
    let cut = fetched[0];
    assert_eq!(cut.event.outcome, "cancelled", "{cut:?}");
    let acme = (rows - rows / 10) as i64;
    let released = cut.event.rows.unwrap();
    assert!(released > 0 && released < acme, "{cut:?}");
    assert!(cut.event.bytes.unwrap() >= first_chunk.len() as i64);
    assert!(started[0].seq < cut.seq);
    assert_eq!(started[0].event.outcome, "started");
}

#[tokio::test]
async fn the_audit_counts_what_a_client_got_and_is_bounded_keyed_and_paged() {
    let (spec, master, server, http, admin) =
        crate::control::start("serving_audit", Backend::Sqlite).await;
    let rows = 200_000;
    let (key, dataset, ann) = orders(&http, &admin, "audited", rows).await;
    let acme = (rows - rows / 10) as i64;

    // A stream abandoned after its first chunk: recorded with the rows it
    // was handed, more than none and fewer than all.
    let path = format!("/v1/embed/datasets/{dataset}/fetch");
    let mut abandoned = ndjson_fetch(&server.base, &dataset, &ann).await;
    let first = abandoned.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(abandoned);
    // A whole JSON fetch: every row, and the body's size.
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .bearer_auth(&ann)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let whole = resp.bytes().await.unwrap();
    // Its one record was durable before the response: no waiting.
    let now = http
        .ok("GET", "/v1/audit?limit=1000", &key, None, 200)
        .await;
    let whole_record = now["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "fetch" && r["outcome"] == "ok")
        .cloned();
    assert!(whole_record.is_some(), "{now}");

    let fetches = |records: &[J]| -> Vec<J> {
        records
            .iter()
            .filter(|r| r["action"] == "fetch")
            .cloned()
            .collect()
    };
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        all = http
            .ok("GET", "/v1/audit?limit=1000", &key, None, 200)
            .await["records"]
            .as_array()
            .unwrap()
            .clone();
        if fetches(&all).len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let f = fetches(&all);
    assert_eq!(f.len(), 2, "{all:?}");
    let cut = f.iter().find(|r| r["outcome"] == "cancelled").unwrap();
    let cut_rows = cut["rows"].as_i64().unwrap();
    assert!(cut_rows > 0 && cut_rows < acme, "{cut}");
    let ok = f.iter().find(|r| r["outcome"] == "ok").unwrap();
    assert_eq!(ok["rows"], json!(acme), "{ok}");
    assert_eq!(ok["bytes"], json!(whole.len()), "{ok}");
    // Each fetch was on record before its first byte: the stream by its
    // `fetch.start`, the JSON body by its one record (checked above).
    let starts: Vec<_> = all
        .iter()
        .filter(|r| r["action"] == "fetch.start")
        .collect();
    assert_eq!(starts.len(), 1, "{all:?}");
    assert!(starts[0]["seq"].as_i64() < cut["seq"].as_i64());

    // The fingerprint is keyed: the same filter under another master key
    // fingerprints differently; under the same key, the same.
    let print = ok["filter_fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(cut["filter_fingerprint"].as_str().unwrap(), print);
    let filter = silo_types::RowFilter::AllRows;
    let k1 = master.fingerprint_key();
    let k2 = MasterKey::generate().unwrap().fingerprint_key();
    assert_ne!(
        audit::fingerprint(&k1, &filter),
        audit::fingerprint(&k2, &filter)
    );
    assert_eq!(
        audit::fingerprint(&k1, &filter),
        audit::fingerprint(&k1, &filter)
    );

    // An id an embed session chose (long, with newlines) is bounded and
    // escaped in the record.
    let hostile = format!("x%0A{}%0D%0Aforged", "y".repeat(60_000));
    let (status, _) = http
        .call(
            "POST",
            &format!("/v1/embed/datasets/{hostile}/fetch"),
            Some(&ann),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let cp = &server.cp;
    let records = audit::records(cp.store(), None).await.unwrap();
    let last = records
        .iter()
        .rev()
        .find(|r| r.event.action == "fetch")
        .unwrap();
    let target = last.event.target.clone().unwrap();
    assert!(target.starts_with("x\\n"), "{target}");
    assert!(target.chars().count() <= audit::MAX_FIELD_CHARS + 8);
    assert!(!target.contains('\n') && !target.contains('\r'));
    assert!(audit::verify(cp.store()).await.is_ok());

    // Paged: pages of two, followed by their cursor, give every record once
    // and in order; a page size out of range is refused.
    let mut paged = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let path = match after {
            Some(a) => format!("/v1/audit?limit=2&after={a}"),
            None => "/v1/audit?limit=2".to_owned(),
        };
        let page = http.ok("GET", &path, &key, None, 200).await;
        let records = page["records"].as_array().unwrap();
        assert!(records.len() <= 2);
        paged.extend(records.iter().map(|r| r["seq"].as_i64().unwrap()));
        match page["next"].as_i64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let everything: Vec<i64> = http
        .ok("GET", "/v1/audit?limit=1000", &key, None, 200)
        .await["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    assert!(everything.len() > 4);
    assert_eq!(paged, everything);
    assert_eq!(
        paged.iter().collect::<BTreeSet<_>>().len(),
        paged.len(),
        "a record on two pages"
    );
    for bad in ["0", "1001", "x"] {
        let (status, _) = http
            .call("GET", &format!("/v1/audit?limit={bad}"), Some(&key), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "limit={bad}");
    }
    drop(spec);
    server.stop().await;
}

#[tokio::test]
async fn expired_sessions_are_purged_and_live_or_revoked_ones_kept() {
    let (_spec, _master, server, http, admin) =
        crate::control::start("serving_purge", Backend::Sqlite).await;
    let (key, _, _) = orders(&http, &admin, "purge", 3).await;
    let body = json!({"attributes": {"tenant": "acme"}, "groups": ["tenants"]});
    http.ok("PUT", "/v1/embed-users/bo", &key, Some(body), 200)
        .await;
    let short = http
        .ok(
            "POST",
            "/v1/sessions",
            &key,
            Some(json!({"embed_user": "bo", "ttl_seconds": 5})),
            200,
        )
        .await;
    let revoked = http
        .ok(
            "POST",
            "/v1/sessions",
            &key,
            Some(json!({"embed_user": "bo"})),
            200,
        )
        .await;
    let revoked_id = revoked["session"]["id"].as_str().unwrap().to_owned();
    http.ok(
        "DELETE",
        &format!("/v1/sessions/{revoked_id}"),
        &key,
        None,
        204,
    )
    .await;
    let before = http.ok("GET", "/v1/sessions", &key, None, 200).await;
    let count = before.as_array().unwrap().len();
    // As if an hour had passed after the short session's expiry: it goes;
    // the revoked one (still unexpired: it must stay revoked) and the
    // others stay.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let purged = server.cp.store().purge_sessions(now + 60).await.unwrap();
    assert_eq!(purged, 1);
    let after = http.ok("GET", "/v1/sessions", &key, None, 200).await;
    let ids: Vec<&str> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), count - 1, "{after}");
    assert!(ids.contains(&revoked_id.as_str()));
    // The purged session's token is refused like any unknown session.
    let token = short["token"].as_str().unwrap();
    let (status, _) = http
        .call("GET", "/v1/embed/datasets", Some(token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

/// Appends at the same moment share commits and still form one chain, on
/// both stores: every record once, in order, verified.
/// A fetch record of actor `test:<i>`.
fn test_fetch(i: usize) -> audit::AuditEvent {
    audit::AuditEvent {
        actor: format!("test:{i}"),
        action: "fetch".into(),
        outcome: "ok".into(),
        ..audit::AuditEvent::default()
    }
}

#[tokio::test]
async fn concurrent_audit_appends_batch_into_one_chain() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let name = format!("serving_batch_{backend:?}").to_lowercase();
        let spec = StoreSpec::new(&name, backend).await;
        let cp = ControlPlane::open(spec.config(&MasterKey::generate().unwrap()))
            .await
            .unwrap();
        let store = cp.store().clone();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..300 {
            let store = store.clone();
            tasks.spawn(async move { audit::append(&store, &test_fetch(i)).await.unwrap().seq });
        }
        let mut seqs: Vec<i64> = tasks.join_all().await;
        seqs.sort_unstable();
        let base = seqs[0];
        assert!(
            seqs.iter().enumerate().all(|(i, s)| *s == base + i as i64),
            "{backend:?}: {seqs:?}"
        );
        let verified = audit::verify(&store).await.unwrap();
        assert!(verified.records >= 300);
        let records = audit::records(&store, None).await.unwrap();
        let actors: BTreeSet<&str> = records.iter().map(|r| r.event.actor.as_str()).collect();
        assert!((0..300).all(|i| actors.contains(format!("test:{i}").as_str())));
    }
}

/// Every store statement on the request path is answered from an index,
/// on both stores (Postgres with sequential scans discouraged, so a plan
/// that still scans has no index to use).
#[tokio::test]
async fn request_path_queries_use_indexes_on_both_stores() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let name = format!("serving_plans_{backend:?}").to_lowercase();
        let spec = StoreSpec::new(&name, backend).await;
        let cp = ControlPlane::open(spec.config(&MasterKey::generate().unwrap()))
            .await
            .unwrap();
        let plans = cp.store().request_path_plans().await.unwrap();
        assert_eq!(plans.len(), 6);
        for (statement, plan) in plans {
            let scans = plan.lines().any(|l| {
                let l = l.trim_start_matches(|c: char| !c.is_alphabetic());
                l.starts_with("SCAN ") || l.contains("Seq Scan")
            });
            assert!(!scans, "{backend:?} {statement}:\n{plan}");
        }
    }
}

/// Two hosts share a Postgres store; each caches what a session reads. A
/// change on one host (revocation, attributes, membership) is seen by the
/// other on its next request, and expiry needs no change at all.
#[tokio::test]
async fn cached_session_reads_follow_changes_made_on_another_host() {
    let spec = StoreSpec::new("serving_cache", Backend::Postgres).await;
    let master = MasterKey::generate().unwrap();
    let first =
        crate::control::Server::start(ControlPlane::open(spec.config(&master)).await.unwrap())
            .await;
    let (_, admin) = first
        .cp
        .create_api_key(&Principal::Cli, None, "ops")
        .await
        .unwrap();
    let second =
        crate::control::Server::start(ControlPlane::open(spec.config(&master)).await.unwrap())
            .await;
    let (a, b) = (Http::new(&first.base), Http::new(&second.base));
    let (key, dataset, ann) = orders(&a, admin.as_ref(), "cached", 20).await;
    let fetch = format!("/v1/embed/datasets/{dataset}/fetch");
    let rows = |body: &J| body["rows"].as_array().map_or(0, Vec::len);
    // Warm host A's cache.
    for _ in 0..2 {
        let (status, body) = a.call("POST", &fetch, Some(&ann), Some(json!({}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(rows(&body), 18);
    }
    // Host B moves ann to another tenant: A's next fetch has the new rows.
    let moved = json!({"attributes": {"tenant": "globex"}, "groups": ["tenants"]});
    b.ok("PUT", "/v1/embed-users/ann", &key, Some(moved), 200)
        .await;
    let (status, body) = a.call("POST", &fetch, Some(&ann), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(rows(&body), 2, "{body}");
    // Host B takes ann out of every group: A answers 404.
    let none = json!({"attributes": {"tenant": "globex"}, "groups": []});
    b.ok("PUT", "/v1/embed-users/ann", &key, Some(none), 200)
        .await;
    let (status, _) = a.call("POST", &fetch, Some(&ann), Some(json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Host B revokes the session: A refuses it on the next request.
    let back = json!({"attributes": {"tenant": "acme"}, "groups": ["tenants"]});
    b.ok("PUT", "/v1/embed-users/ann", &key, Some(back), 200)
        .await;
    let session = a
        .ok(
            "POST",
            "/v1/sessions",
            &key,
            Some(json!({"embed_user": "ann"})),
            200,
        )
        .await;
    let token = session["token"].as_str().unwrap();
    let (status, _) = a.call("POST", &fetch, Some(token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    let id = session["session"]["id"].as_str().unwrap();
    b.ok("DELETE", &format!("/v1/sessions/{id}"), &key, None, 204)
        .await;
    let (status, _) = a.call("POST", &fetch, Some(token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A short session expires while cached.
    let short = a
        .ok(
            "POST",
            "/v1/sessions",
            &key,
            Some(json!({"embed_user": "ann", "ttl_seconds": 2})),
            200,
        )
        .await;
    let token = short["token"].as_str().unwrap();
    let (status, _) = a.call("POST", &fetch, Some(token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (status, _) = a.call("POST", &fetch, Some(token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Grants, datasets and datasources are cached too. Host B narrows the
    // group's grant to `describe`: A stops serving rows at once.
    let token = a.session(&key, json!({"embed_user": "ann"})).await;
    let (status, body) = a.call("POST", &fetch, Some(&token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let describe = json!({"grants": [{"dataset_id": dataset, "permission": "describe"}]});
    b.ok("PUT", "/v1/groups/tenants", &key, Some(describe), 200)
        .await;
    let (status, body) = a.call("POST", &fetch, Some(&token), Some(json!({}))).await;
    assert_ne!(status, StatusCode::OK, "{body}");
    assert!(body.get("rows").is_none(), "{body}");
    b.tenants_group(&key, &dataset).await;
    let (status, body) = a.call("POST", &fetch, Some(&token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Host B deletes the dataset, then its datasource: A answers 404.
    b.ok(
        "DELETE",
        &format!("/v1/datasets/{dataset}"),
        &key,
        None,
        204,
    )
    .await;
    let (status, _) = a.call("POST", &fetch, Some(&token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let sources = b.ok("GET", "/v1/datasources", &key, None, 200).await;
    for ds in sources.as_array().unwrap() {
        let id = ds["id"].as_str().unwrap();
        b.ok("DELETE", &format!("/v1/datasources/{id}"), &key, None, 204)
            .await;
    }
    let (status, _) = a.call("POST", &fetch, Some(&token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    first.stop().await;
    second.stop().await;
}

/// Makes every audit append fail (a full disk, a store that refuses
/// writes), or, with `refuse` false, work again.
async fn refuse_audit_appends(spec: &StoreSpec, backend: Backend, refuse: bool) {
    use sqlx::Connection;
    let (create, drop) = match backend {
        Backend::Sqlite => (
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'disk full'); END",
            "DROP TRIGGER refuse_audit",
        ),
        Backend::Postgres => (
            "ALTER TABLE audit ADD CONSTRAINT refuse_audit CHECK (false) NOT VALID",
            "ALTER TABLE audit DROP CONSTRAINT refuse_audit",
        ),
    };
    let sql = if refuse { create } else { drop };
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", spec.url))
                .await
                .unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&spec.url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }
}

/// A fetch is on record before its first byte, or it releases nothing:
/// with the audit log unwritable, JSON and streamed fetches answer 503
/// `busy` without a row, and serve again once the log is writable.
async fn a_fetch_that_cannot_be_put_on_record_releases_nothing(backend: Backend) {
    let name = format!("unrecorded_{backend:?}").to_lowercase();
    let (spec, _, server, http, admin) = crate::control::start(&name, backend).await;
    let (_, dataset, ann) = orders(&http, &admin, "unrecorded", 50).await;
    let path = format!("/v1/embed/datasets/{dataset}/fetch");
    let fetch = || async {
        let json = http.call("POST", &path, Some(&ann), Some(json!({}))).await;
        let stream = ndjson_fetch(&server.base, &dataset, &ann).await;
        let status = stream.status();
        let retry = stream.headers().get("retry-after").cloned();
        let body = stream.text().await.unwrap();
        (json, status, retry, body)
    };
    let ((status, body), _, _, lines) = fetch().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(lines.lines().count(), 45, "{lines}");

    refuse_audit_appends(&spec, backend, true).await;
    let ((status, body), stream_status, retry, lines) = fetch().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "busy", "{body}");
    assert!(body.get("rows").is_none(), "{body}");
    assert_eq!(stream_status, StatusCode::SERVICE_UNAVAILABLE, "{lines}");
    assert!(retry.is_some());
    assert!(!lines.contains("acme"), "{lines}");
    assert!(!body.to_string().contains("disk full"), "{body}");

    refuse_audit_appends(&spec, backend, false).await;
    let ((status, body), stream_status, _, lines) = fetch().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(45), "{body}");
    assert_eq!(stream_status, StatusCode::OK);
    assert_eq!(lines.lines().count(), 45, "{lines}");
    server.stop().await;
}

on_both_stores!(a_fetch_that_cannot_be_put_on_record_releases_nothing);

/// A request answered before its body was read (refused, not found) says
/// `Connection: close`: the rest of its body is still on the wire, so a
/// client must not send another request on that connection. A request
/// whose body was read keeps its connection.
#[tokio::test]
async fn an_answer_before_the_body_was_read_closes_the_connection() {
    let (_spec, _, server, http, admin) =
        crate::control::start("early_answer", Backend::Sqlite).await;
    let (_, key) = http.org_with_key(&admin, "early").await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let head = |path: &str, auth: &str, length: u64| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {auth}\r\n\
             content-type: text/csv\r\ncontent-length: {length}\r\n\r\n"
        )
    };
    let dataset = http.files_dataset(&key, "early").await;
    let real = format!("/v1/datasets/{dataset}/upload");
    for (path, auth, length, status) in [
        (
            "/v1/datasets/dset_missing/upload",
            key.as_str(),
            50_000_000,
            "404",
        ),
        (
            "/v1/datasets/dset_missing/upload",
            "not-a-key",
            50_000_000,
            "401",
        ),
        (real.as_str(), key.as_str(), 1 << 60, "413"),
    ] {
        let mut conn = TcpStream::connect(&addr).await.unwrap();
        conn.write_all(head(path, auth, length).as_bytes())
            .await
            .unwrap();
        // No body byte yet: a client that waits for an early answer (as
        // with `Expect: 100-continue`) gets it whole.
        let answer = read_to_close(&mut conn).await.unwrap_or_default();
        let lower = answer.to_ascii_lowercase();
        assert!(lower.starts_with(&format!("http/1.1 {status}")), "{answer}");
        assert!(lower.contains("\r\nconnection: close\r\n"), "{answer}");
    }
    // A body read to its end: the connection stays open for the next one.
    let body = r#"{"embed_user": "nobody"}"#;
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "POST /v1/sessions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(PATIENCE, conn.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 404"), "{answer}");
    assert!(!answer.contains("connection: close"), "{answer}");
    server.stop().await;
}

/// `GET target` over the Unix socket at `path` (with `bearer`, if any),
/// on a connection the server closes after it: the whole answer.
async fn unix_get(path: &std::path::Path, target: &str, bearer: Option<&str>) -> String {
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {target} HTTP/1.1\r\nHost: silo\r\n{auth}Connection: close\r\n\r\n");
    let mut stream = tokio::net::UnixStream::connect(path).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_unix_socket_serves_the_api_and_is_its_owners_and_groups_only() {
    use silo_host::server::Listen;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    let dir = std::env::temp_dir().join(format!("silo-unix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("api.sock");
    let start = |name: &'static str, listen: Listen| async move {
        let l = launch(name, ServerLimits::default(), listen, |_| {}).await;
        (l.ready, l.stop, l.task, l.admin)
    };

    // Any other kind of file at the path is refused and left alone.
    std::fs::write(&path, b"not a socket").unwrap();
    let (_, _stop, task, _) = start("serving_unix_file", Listen::Unix(path.clone())).await;
    let refused = task.await.unwrap().unwrap_err().to_string();
    assert!(refused.contains("not a socket"), "{refused}");
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    std::fs::remove_file(&path).unwrap();

    // A socket left behind by a server that is gone is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket()
    );
    let (ready, stop, task, admin) = start(
        "serving_unix",
        format!("unix:{}", path.display()).parse().unwrap(),
    )
    .await;
    let bound = ready.await.unwrap();
    assert_eq!(bound.url("http"), format!("unix:{}", path.display()));
    assert_eq!(bound.tcp(), None);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "owner and group only: {mode:o}");

    // The API answers over it, authentication included.
    let live = unix_get(&path, "/livez", None).await;
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    let orgs = unix_get(&path, "/v1/orgs", Some(&admin)).await;
    assert!(orgs.starts_with("HTTP/1.1 200"), "{orgs}");
    let anonymous = unix_get(&path, "/v1/orgs", None).await;
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");

    // A second server on a live socket is refused; the first goes on.
    let (_, _stop2, second, _) = start("serving_unix_second", Listen::Unix(path.clone())).await;
    let refused = second.await.unwrap().unwrap_err().to_string();
    assert!(refused.contains("another server"), "{refused}");
    let live = unix_get(&path, "/livez", None).await;
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");

    // Stopping removes the socket.
    let _ = stop.send(());
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    assert!(!path.exists(), "the socket file is removed on shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn listen_addresses_parse_and_print_back() {
    use silo_host::server::Listen;
    let tcp: Listen = "127.0.0.1:8080".parse().unwrap();
    assert_eq!(tcp.tcp(), Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(tcp.url("https"), "https://127.0.0.1:8080");
    let unix: Listen = "unix:/run/silo/api.sock".parse().unwrap();
    assert_eq!(unix.to_string(), "unix:/run/silo/api.sock");
    for bad in ["unix:", "localhost:8080", "8080", ""] {
        assert!(bad.parse::<Listen>().is_err(), "{bad}");
    }
}

/// On one SQLite file, the audit writer's commits interleave with other
/// writers' transactions (this host's control-plane changes, and a second
/// process on the file, as `silo` commands run beside `silo serve`): none
/// fails for the other, and the chain stays one chain.
#[tokio::test]
async fn audit_appends_interleave_with_other_writers_on_one_sqlite_file() {
    let spec = StoreSpec::new("serving_writers", Backend::Sqlite).await;
    let master = MasterKey::generate().unwrap();
    let host = std::sync::Arc::new(ControlPlane::open(spec.config(&master)).await.unwrap());
    let beside = std::sync::Arc::new(ControlPlane::open(spec.config(&master)).await.unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let cp = if i % 2 == 0 {
            host.clone()
        } else {
            beside.clone()
        };
        tasks.spawn(async move { audit::append(cp.store(), &test_fetch(i)).await.map(|_| ()) });
    }
    let org = host.create_org(&Principal::Cli, "writers").await.unwrap();
    let backend = Principal::Org {
        org: org.id.clone(),
        key: None,
    };
    for i in 0..60 {
        let (cp, p) = (
            if i % 2 == 0 {
                host.clone()
            } else {
                beside.clone()
            },
            backend.clone(),
        );
        // A write transaction that reads first (is the user there?), then
        // writes, and appends its own audit record; each user twice.
        tasks.spawn(async move {
            let input = silo_host::control::EmbedUserInput {
                attributes: [("tenant".to_owned(), json!(format!("t{i}")))].into(),
                groups: vec![],
            };
            cp.put_embed_user(&p, &format!("user-{}", i % 30), input)
                .await
                .map(|_| ())
        });
    }
    for done in tasks.join_all().await {
        done.unwrap();
    }
    let records = audit::records(host.store(), None).await.unwrap();
    let verified = audit::verify(host.store()).await.unwrap();
    assert_eq!(verified.records as usize, records.len());
    assert!(
        records
            .windows(2)
            .all(|w| w[1].seq == w[0].seq + 1 && w[1].prev_hash == w[0].hash)
    );
    let fetches = records.iter().filter(|r| r.event.action == "fetch").count();
    assert_eq!(fetches, 200);
    let users = records
        .iter()
        .filter(|r| r.event.action == "embed_user.put")
        .count();
    assert_eq!(
        users,
        60,
        "{:?}",
        records
            .iter()
            .map(|r| &r.event.action)
            .collect::<BTreeSet<_>>()
    );
}

/// Where the crash test's child serves from: the store, its master key and,
/// once bound, its address.
const CRASH_CHILD: &str = "SILO_TEST_CRASH_CHILD";

/// A host killed with SIGKILL in the middle of answering fetches loses no
/// record of a fetch it answered: each 200 is on record after a restart,
/// and the chain verifies. Run as a child process (this test, re-run with
/// [`CRASH_CHILD`] set), so the kill is a real one.
#[tokio::test]
async fn a_killed_host_loses_no_record_of_a_fetch_it_answered() {
    if let Ok(dir) = std::env::var(CRASH_CHILD) {
        return crash_child(std::path::Path::new(&dir)).await;
    }
    let server = Serving::start("serving_crash", ServerLimits::default()).await;
    let (_, dataset, ann) = orders(&server.http, &server.admin, "crash", 50).await;
    let spec = StoreSpec {
        url: server.spec.url.clone(),
        dir: server.spec.dir.clone(),
    };
    let master = server.master.clone();
    let before = server.finish().await.len();
    let key_file = spec.dir.join("master.key");
    master.write_new_file(&key_file).unwrap();
    std::fs::write(spec.dir.join("store"), &spec.url).unwrap();

    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "serving::a_killed_host_loses_no_record_of_a_fetch_it_answered",
            "--exact",
            "--nocapture",
        ])
        .env(CRASH_CHILD, &spec.dir)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr_file = spec.dir.join("addr");
    let addr = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file)
                && let Ok(a) = a.trim().parse::<SocketAddr>()
            {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the child serves");

    // Eight clients fetch until the host is gone; each counts its 200s.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (answered, dataset, ann) = (answered.clone(), dataset.clone(), ann.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                loop {
                    let sent = http
                        .post(format!("http://{addr}/v1/embed/datasets/{dataset}/fetch"))
                        .bearer_auth(&ann)
                        .json(&json!({}))
                        .send()
                        .await;
                    let Ok(r) = sent else { return };
                    if r.status() != StatusCode::OK {
                        return;
                    }
                    let Ok(body) = r.json::<J>().await else {
                        return;
                    };
                    assert_eq!(body["rows"].as_array().unwrap().len(), 45);
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    tokio::time::timeout(PATIENCE, async {
        while answered.load(std::sync::atomic::Ordering::SeqCst) < 200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the child answers fetches");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let answered = answered.load(std::sync::atomic::Ordering::SeqCst);

    let cp = ControlPlane::open(spec.config(&master)).await.unwrap();
    let records = audit::records(cp.store(), None).await.unwrap();
    audit::verify_records(&records).unwrap();
    let fetched = records[before..]
        .iter()
        .filter(|r| r.event.action == "fetch" && r.event.outcome == "ok")
        .count();
    // A record may be durable for an answer the kill cut off: at least one
    // per answer, and no more than the requests that could have been in
    // flight beyond them.
    assert!(
        fetched >= answered && fetched <= answered + 8,
        "{answered} answered, {fetched} on record"
    );
}

/// The crash test's host: serves the store in `dir` until it is killed.
async fn crash_child(dir: &std::path::Path) {
    let url = std::fs::read_to_string(dir.join("store")).unwrap();
    let master = MasterKey::from_env_or_file(Some(&dir.join("master.key")))
        .unwrap()
        .unwrap();
    let spec = StoreSpec {
        url,
        dir: dir.to_owned(),
    };
    let cp = ControlPlane::open(spec.config(&master)).await.unwrap();
    let addr_file = dir.join("addr");
    let listen: silo_host::server::Listen = "127.0.0.1:0".parse::<SocketAddr>().unwrap().into();
    serve_until(
        cp,
        listen,
        None,
        ServerLimits::default(),
        move |bound| {
            if let Some(a) = bound.tcp() {
                let _ = std::fs::write(&addr_file, a.to_string());
            }
        },
        std::future::pending::<()>(),
    )
    .await
    .unwrap();
}
