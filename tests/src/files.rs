//! Uploaded files: validated atomic uploads split by tenant, each embed user
//! given only their partitions (preopened read-only), a connector that tries
//! to escape them, and uploads that must change nothing.
use std::path::{Path, PathBuf};

use silo_host::capability::files::upload::{DEFAULT_MAX_BYTES, Upload, upload};
use silo_host::capability::files::{FilesConfig, FilesStore};
use silo_host::config::SiloConfig;
use silo_host::error::Error;
use silo_host::silo::Silo;

use crate::connectors;
use crate::support::{USERS, fetch_ids};

const ORDERS: &str = "id,tenant,customer,amount,ordered_on
1,acme,c-1,10.50,2026-01-01
2,acme,c-2,20.00,2026-01-02
3,acme,c-3,30.25,2026-01-03
4,globex,c-4,40.00,2026-01-04
5,globex,c-5,50.00,2026-01-05
6,globex,c-6,60.75,2026-01-06
";

pub(crate) struct FilesFixture {
    dir: PathBuf,
    store: FilesStore,
}

impl FilesFixture {
    /// A fresh data dir with `orders` uploaded, partitioned by tenant.
    pub(crate) fn new(name: &str) -> FilesFixture {
        let dir = std::env::temp_dir().join(format!("silo-tests-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = FilesStore::new(&FilesConfig {
            data_dir: dir.join("data"),
            org: "default".into(),
        })
        .unwrap();
        let fx = FilesFixture { dir, store };
        fx.upload("orders.csv", ORDERS, Some("tenant")).unwrap();
        fx
    }

    fn upload(
        &self,
        file: &str,
        text: &str,
        partition_by: Option<&str>,
    ) -> silo_host::error::Result<()> {
        let path = self.dir.join(file);
        std::fs::write(&path, text).unwrap();
        upload(
            &self.store,
            &Upload {
                dataset: "orders",
                file: &path,
                partition_by,
                max_bytes: DEFAULT_MAX_BYTES,
                max_partitions: 1_000,
                progress: None,
            },
        )
        .map(|_| ())
    }

    fn orders_dir(&self) -> PathBuf {
        self.dir.join("data/default/orders")
    }

    /// The `silo.toml` the last [`FilesFixture::silo`] wrote.
    pub(crate) fn config_path(&self) -> PathBuf {
        self.dir.join("silo.toml")
    }

    pub(crate) async fn silo(&self, connector: &str) -> Silo {
        let cache = std::env::temp_dir().join("silo-test-compile-cache");
        let text = format!(
            "cache_dir = {cache:?}\n[datasources.main]\nconnector = {connector:?}\n\
             [datasources.main.files]\ndata_dir = {data:?}\n{USERS}",
            cache = cache.display().to_string(),
            data = self.dir.join("data").display().to_string(),
        );
        let path = self.dir.join("silo.toml");
        std::fs::write(&path, text).unwrap();
        Silo::open(&SiloConfig::load(&path).unwrap()).await.unwrap()
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn each_embed_user_reads_only_their_partitions() {
    let fx = FilesFixture::new("files_isolation");
    assert_eq!(mode(&fx.orders_dir().join("acme")), 0o700);
    assert_eq!(mode(&fx.orders_dir().join("acme/data.csv")), 0o600);
    let silo = fx.silo("files").await;
    crate::support::assert_tenant_isolation(&silo).await;
    let described = silo.describe("main").await.unwrap();
    let kinds: Vec<_> = described[0].columns.iter().map(|c| c.kind).collect();
    use silo_types::ColumnType::*;
    assert_eq!(kinds, [Int, Text, Text, Float, Date]);
}

#[tokio::test]
async fn a_connector_cannot_leave_its_partitions() {
    let fx = FilesFixture::new("files_escape");
    // A symlink planted in alice's partition, to bob's data.
    std::os::unix::fs::symlink(
        fx.orders_dir().join("globex/data.csv"),
        fx.orders_dir().join("acme/leak.csv"),
    )
    .unwrap();
    let before = std::fs::read(fx.orders_dir().join("acme/data.csv")).unwrap();
    let silo = fx.silo(connectors::FILES_ESCAPE).await;
    let err = fetch_ids(&silo, "alice").await.unwrap_err();
    let Error::Policy(report) = &err else {
        panic!("expected the connector's refusal report, got {err}")
    };
    assert!(!report.contains("ACCEPTED"), "{report}");
    assert_eq!(report.lines().count(), 12, "{report}");
    assert_eq!(
        std::fs::read(fx.orders_dir().join("acme/data.csv")).unwrap(),
        before
    );
    assert!(!fx.orders_dir().join("acme/new.csv").exists());
}

#[tokio::test]
async fn a_bad_or_cut_off_upload_changes_nothing() {
    let fx = FilesFixture::new("files_bad_upload");
    let silo = fx.silo("files").await;
    let ragged = "id,tenant,customer,amount,ordered_on\n9,acme,c-9,1,2026-01-09\n10,acme,c-10\n";
    let err = fx
        .upload("ragged.csv", ragged, Some("tenant"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3") && err.contains("3 fields"), "{err}");
    let cut = "{\"id\": 9, \"tenant\": \"acme\"}\n{\"id\": 10, \"ten";
    let err = fx
        .upload("cut.ndjson", cut, Some("tenant"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
    let mut bad_utf8 = b"id,tenant\n1,acme\n2,".to_vec();
    bad_utf8.extend([0xff, 0xfe, b'\n']);
    std::fs::write(fx.dir.join("bad.csv"), &bad_utf8).unwrap();
    let err = upload(
        &fx.store,
        &Upload {
            dataset: "orders",
            file: &fx.dir.join("bad.csv"),
            partition_by: None,
            max_bytes: DEFAULT_MAX_BYTES,
            max_partitions: 50,
            progress: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("UTF-8"), "{err}");
    let escape = "id,tenant\n1,../../etc\n";
    let err = fx
        .upload("escape.csv", escape, Some("tenant"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("partition value"), "{err}");
    // Nothing changed, and nothing was left behind: the one generation
    // the dataset links to, and its lock.
    assert_eq!(fetch_ids(&silo, "alice").await.unwrap(), [1, 2, 3]);
    let names = |dir: &str| {
        let mut names: Vec<_> = std::fs::read_dir(fx.dir.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("data/default"), [".generations", "orders"]);
    let generations = names("data/default/.generations/orders");
    let current = std::fs::read_link(fx.dir.join("data/default/orders")).unwrap();
    assert_eq!(generations.len(), 2, "{generations:?}");
    assert_eq!(generations[0], ".lock");
    assert!(current.ends_with(&generations[1]), "{current:?}");
    // A good upload replaces the data whole.
    fx.upload("new.ndjson", "{\"id\": 7, \"tenant\": \"acme\", \"customer\": \"c-7\", \"amount\": 1.5, \"ordered_on\": \"2026-02-01\"}\n", Some("tenant")).unwrap();
    assert_eq!(fetch_ids(&silo, "alice").await.unwrap(), [7]);
    assert_eq!(fetch_ids(&silo, "bob").await.unwrap(), Vec::<i64>::new());
}

#[tokio::test]
async fn a_large_upload_reports_progress_to_the_end() {
    let fx = FilesFixture::new("files_progress");
    let mut csv = String::from("id,tenant,customer,amount,ordered_on\n");
    for i in 0..100_000 {
        csv.push_str(&format!(
            "{i},acme,customer-with-a-long-name-{i},{i}.5,2026-01-01\n"
        ));
    }
    let path = fx.dir.join("large.csv");
    std::fs::write(&path, &csv).unwrap();
    let seen = std::cell::RefCell::new(Vec::new());
    let record = |done: u64, total: u64| seen.borrow_mut().push((done, total));
    upload(
        &fx.store,
        &Upload {
            dataset: "orders",
            file: &path,
            partition_by: Some("tenant"),
            max_bytes: DEFAULT_MAX_BYTES,
            max_partitions: 50,
            progress: Some(&record),
        },
    )
    .unwrap();
    let seen = seen.into_inner();
    let total = csv.len() as u64;
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
    assert_eq!(seen.last(), Some(&(total, total)));
}

/// Uploads stream: a record over the size limit, too many columns or too
/// many partitions are refused with what was wrong (and the data stays);
/// more partitions than files kept open at once are all written whole.
#[tokio::test]
async fn streaming_uploads_refuse_oversized_records_and_keep_every_partition() {
    use silo_host::capability::files::upload::{MAX_COLUMNS, MAX_RECORD_BYTES};
    let fx = FilesFixture::new("files_streaming");
    let silo = fx.silo("files").await;
    let huge_cell = "x".repeat(MAX_RECORD_BYTES as usize + 1);
    for (file, text, says) in [
        (
            "huge.csv",
            format!("id,tenant\n1,acme\n2,{huge_cell}\n"),
            "line 3: a record is larger than",
        ),
        (
            "huge.ndjson",
            format!("{{\"id\": 1, \"tenant\": \"{huge_cell}\"}}\n"),
            "line 1: a record is larger than",
        ),
        (
            "wide.csv",
            (0..=MAX_COLUMNS)
                .map(|i| format!("c{i}"))
                .collect::<Vec<_>>()
                .join(",")
                + "\n",
            "columns; at most",
        ),
        (
            "many.csv",
            std::iter::once("id,tenant".to_owned())
                .chain((0..=1_000).map(|i| format!("{i},t{i}")))
                .collect::<Vec<_>>()
                .join("\n"),
            "more than 1000 partitions",
        ),
        ("empty.csv", String::new(), "empty"),
    ] {
        let err = fx.upload(file, &text, Some("tenant")).unwrap_err();
        assert!(
            matches!(err, Error::Limit(_) | Error::Config(_)),
            "{file}: {err}"
        );
        let err = err.to_string();
        assert!(err.contains(says), "{file}: {err}");
    }
    assert_eq!(fetch_ids(&silo, "alice").await.unwrap(), [1, 2, 3]);

    // 300 partitions, rows interleaved so files are closed and reopened.
    let mut text = String::from("id,tenant,customer,amount,ordered_on\n");
    for id in 0..3000 {
        let tenant = if id % 300 == 0 {
            "acme".to_owned()
        } else {
            format!("t{}", id % 300)
        };
        text.push_str(&format!("{id},{tenant},c-{id},1.5,2026-01-01\n"));
    }
    fx.upload("wide-spread.csv", &text, Some("tenant")).unwrap();
    let expected: Vec<i64> = (0..3000).filter(|id| id % 300 == 0).collect();
    assert_eq!(fetch_ids(&silo, "alice").await.unwrap(), expected);
    for p in [1, 77, 299] {
        let data = std::fs::read_to_string(fx.orders_dir().join(format!("t{p}/data.csv"))).unwrap();
        let ids: Vec<i64> = data
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        let expected: Vec<i64> = (0..3000).filter(|id| id % 300 == p).collect();
        assert_eq!(ids, expected, "partition t{p}");
        assert_eq!(
            data.lines().next(),
            Some("id,tenant,customer,amount,ordered_on")
        );
    }
}

mod over_the_api {
    use reqwest::StatusCode;
    use serde_json::json;

    use crate::control::{Backend, Http, start};

    fn csv(rows: &[(u32, &str)]) -> String {
        let mut s = String::from("id,tenant,amount\n");
        for (id, tenant) in rows {
            s.push_str(&format!("{id},{tenant},{}.50\n", id * 3));
        }
        s
    }

    async fn post_file(
        base: &str,
        key: &str,
        dataset: &str,
        body: String,
        partition: bool,
    ) -> (StatusCode, serde_json::Value) {
        Http::new(base)
            .upload_csv(key, dataset, body, partition)
            .await
    }

    #[tokio::test]
    async fn uploads_through_the_api_are_partitioned_validated_and_isolated() {
        let (spec, _key, server, http, admin) = start("upload_api", Backend::Sqlite).await;
        let (_, key) = http.org_with_key(&admin, "up").await;
        let orders = http.files_dataset(&key, "orders").await;
        let good = csv(&[
            (1, "acme"),
            (2, "acme"),
            (3, "globex"),
            (4, "globex"),
            (5, "globex"),
        ]);
        let (status, body) = post_file(&server.base, &key, &orders, good, true).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["rows"], 5);
        assert_eq!(body["partitions"], json!(["acme", "globex"]));
        http.tenants_group(&key, &orders).await;
        let mut tokens = Vec::new();
        for (user, tenant) in [("ann", "acme"), ("gus", "globex")] {
            tokens.push(http.tenant_user(&key, user, tenant).await);
        }
        let fetch = format!("/v1/embed/datasets/{orders}/fetch");
        let ids = |v: &serde_json::Value| -> Vec<i64> {
            v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r[0].as_i64().unwrap())
                .collect()
        };
        let ann = http
            .ok("POST", &fetch, &tokens[0], Some(json!({})), 200)
            .await;
        assert_eq!(ids(&ann), [1, 2]);
        let gus = http
            .ok("POST", &fetch, &tokens[1], Some(json!({})), 200)
            .await;
        assert_eq!(ids(&gus), [3, 4, 5]);
        let meta = format!("/v1/embed/datasets/{orders}/metadata");
        assert_eq!(
            http.ok("GET", &meta, &tokens[1], None, 200).await["rows"],
            3
        );

        // A malformed file is refused with its line; the data stays.
        let bad = "id,tenant,amount\n6,acme,1.0\n7,acme\n".to_owned();
        let (status, body) = post_file(&server.base, &key, &orders, bad, true).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("line 3"),
            "{body}"
        );
        assert_eq!(
            ids(&http
                .ok("POST", &fetch, &tokens[0], Some(json!({})), 200)
                .await),
            [1, 2]
        );

        // A body that breaks off half-way: refused, nothing staged is left,
        // the data stays.
        let stream = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(bytes::Bytes::from("id,tenant,amount\n8,acme,2.0\n")),
            Err(std::io::Error::other("client went away")),
        ]);
        let cut = reqwest::Client::new()
            .post(format!(
                "{}/v1/datasets/{orders}/upload?partition_by=tenant",
                server.base
            ))
            .bearer_auth(&key)
            .header("content-type", "text/csv")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await;
        assert!(cut.is_err() || !cut.unwrap().status().is_success());
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let staged = std::fs::read_dir(spec.dir.join("uploads/.incoming"))
            .unwrap()
            .count();
        assert_eq!(staged, 0, "a broken-off upload leaves no staged file");
        assert_eq!(
            ids(&http
                .ok("POST", &fetch, &tokens[0], Some(json!({})), 200)
                .await),
            [1, 2]
        );

        // New data: readers and metadata see it at once.
        let newer = csv(&[(1, "acme"), (9, "globex")]);
        let (status, _) = post_file(&server.base, &key, &orders, newer, true).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            ids(&http
                .ok("POST", &fetch, &tokens[1], Some(json!({})), 200)
                .await),
            [9]
        );
        assert_eq!(
            http.ok("GET", &meta, &tokens[1], None, 200).await["rows"],
            1
        );

        // Only API keys upload, and only to their org's files datasets.
        let (status, _) = post_file(
            &server.base,
            &tokens[0],
            &orders,
            csv(&[(1, "acme")]),
            false,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        server.stop().await;
    }

    /// Readers always see one whole upload while uploads replace it; one
    /// upload per dataset at a time (409 while another holds it, from any
    /// process); what a crash leaves is swept at start, and what a reader
    /// may still use is not.
    #[tokio::test]
    async fn uploads_swap_whole_one_at_a_time_and_leftovers_are_swept() {
        use std::collections::BTreeSet;
        let (spec, master, server, http, admin) = start("upload_swap", Backend::Sqlite).await;
        let (_, key) = http.org_with_key(&admin, "swap").await;
        let orders = http.files_dataset(&key, "orders").await;
        let version = |base: u32| -> (String, BTreeSet<i64>) {
            let rows: Vec<(u32, &str)> = (0..400)
                .map(|i| (base + i, if i % 2 == 0 { "acme" } else { "globex" }))
                .collect();
            let acme = rows
                .iter()
                .filter(|r| r.1 == "acme")
                .map(|r| i64::from(r.0))
                .collect();
            (csv(&rows), acme)
        };
        let (a, a_ids) = version(0);
        let (b, b_ids) = version(10_000);
        let (status, body) = post_file(&server.base, &key, &orders, a.clone(), true).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        http.tenants_group(&key, &orders).await;
        let ann = http.tenant_user(&key, "ann", "acme").await;

        // Readers during ten replacements: every fetch answers, with one
        // version whole.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut readers = Vec::new();
        for _ in 0..3 {
            let (http, ann, stop) = (http.clone(), ann.clone(), stop.clone());
            let fetch = format!("/v1/embed/datasets/{orders}/fetch");
            readers.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (status, body) =
                        http.call("POST", &fetch, Some(&ann), Some(json!({}))).await;
                    let ids: BTreeSet<i64> = body["rows"]
                        .as_array()
                        .map(|rows| rows.iter().filter_map(|r| r[0].as_i64()).collect())
                        .unwrap_or_default();
                    seen.push((status, ids, body));
                }
                seen
            }));
        }
        for round in 0..10 {
            let body = if round % 2 == 0 { b.clone() } else { a.clone() };
            let (status, answer) = post_file(&server.base, &key, &orders, body, true).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut fetches = 0;
        for reader in readers {
            for (status, ids, body) in reader.await.unwrap() {
                assert_eq!(status, StatusCode::OK, "{body}");
                assert!(
                    ids == a_ids || ids == b_ids,
                    "a mixed or partial read: {body}"
                );
                fetches += 1;
            }
        }
        assert!(fetches >= 3, "{fetches}");

        // Another process uploading to the dataset holds its lock: 409.
        let org_dir = std::fs::read_dir(spec.dir.join("uploads"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.join("orders").exists())
            .unwrap();
        let held = silo_host::capability::files::generations::lock(&org_dir, "orders").unwrap();
        let (status, body) = post_file(&server.base, &key, &orders, b.clone(), true).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("another upload"),
            "{body}"
        );
        drop(held);
        let (status, body) = post_file(&server.base, &key, &orders, b.clone(), true).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // What a kill -9 leaves: staged bodies nobody holds, a half-written
        // generation, a generation retired long ago. A staged body another
        // request still holds, and the generation just replaced (a fetch
        // may still be reading it), stay.
        let incoming = spec.dir.join("uploads/.incoming");
        std::fs::write(incoming.join("upload_dead.csv"), "id\n1\n").unwrap();
        std::fs::write(incoming.join("upload_live.csv"), "id\n1\n").unwrap();
        let live = std::fs::File::open(incoming.join("upload_live.csv")).unwrap();
        live.try_lock().unwrap();
        let generations = org_dir.join(".generations/orders");
        std::fs::create_dir_all(generations.join("g1-1-1.partial/acme")).unwrap();
        std::fs::create_dir_all(generations.join("g2-1-1/acme")).unwrap();
        let marker = generations.join("g2-1-1.retired");
        std::fs::write(&marker, "").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&marker)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
        let current = std::fs::read_link(org_dir.join("orders")).unwrap();
        let before: BTreeSet<String> = std::fs::read_dir(&generations)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        server.stop().await;
        let reopened = crate::control::Server::start(
            silo_host::control::ControlPlane::open(spec.config(&master))
                .await
                .unwrap(),
        )
        .await;
        assert!(!incoming.join("upload_dead.csv").exists());
        assert!(incoming.join("upload_live.csv").exists());
        assert!(!generations.join("g1-1-1.partial").exists());
        assert!(!generations.join("g2-1-1").exists() && !marker.exists());
        let after: BTreeSet<String> = std::fs::read_dir(&generations)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let recent: Vec<_> = before
            .difference(
                &["g1-1-1.partial", "g2-1-1", "g2-1-1.retired"]
                    .map(String::from)
                    .into(),
            )
            .cloned()
            .collect();
        assert_eq!(
            after,
            recent.into_iter().collect(),
            "recently replaced data stays"
        );
        assert!(after.len() > 2, "{after:?}");
        assert_eq!(std::fs::read_link(org_dir.join("orders")).unwrap(), current);
        let http = crate::control::Http::new(&reopened.base);
        let fetch = format!("/v1/embed/datasets/{orders}/fetch");
        let rows = http.ok("POST", &fetch, &ann, Some(json!({})), 200).await;
        let ids: BTreeSet<i64> = rows["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r[0].as_i64())
            .collect();
        assert_eq!(ids, b_ids);
        reopened.stop().await;
    }
}

/// Everything a hostile connector read, for `user` (or with `access`).
async fn read_everything(
    silo: &Silo,
    user: &str,
    access: Option<silo_host::silo::DatasetAccess>,
) -> Vec<String> {
    let spec = silo_host::silo::FetchSpec {
        dataset: "orders".into(),
        columns: Some(vec!["id".into(), "tenant".into(), "customer".into()]),
        limit: None,
    };
    let fetch = match access {
        Some(a) => silo.fetch_with(&|_| Ok(a.clone()), &spec).await,
        None => silo.fetch(user, &spec).await,
    };
    let rows = fetch.unwrap().collect().await.unwrap();
    rows.iter()
        .map(|r| match r.last() {
            Some(silo_types::Value::Text(t)) => t.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// A partition the filter admits only in part is served as the host's view
/// of it: the connector reads every byte it is given, and those bytes hold
/// the admitted rows only.
#[tokio::test]
async fn a_partly_admitted_partition_is_served_filtered() {
    let fx = FilesFixture::new("files_partial");
    let silo = fx.silo(connectors::FILES_READER).await;
    // carol: tenant initech (no partition) or customer c-4: part of globex's
    // partition, and possibly of acme's.
    let seen = read_everything(&silo, "carol", None).await;
    let rows: Vec<&String> = seen.iter().filter(|l| l.contains("/data/")).collect();
    assert!(
        rows.iter().any(|l| l.ends_with("4,globex,c-4")),
        "{seen:#?}"
    );
    for other in ["c-1", "c-2", "c-3", "c-5", "c-6"] {
        assert!(
            !seen.iter().any(|l| l.contains(other)),
            "carol's connector read {other}'s row: {seen:#?}"
        );
    }
    // alice's filter admits her whole partition: it is read as stored.
    let seen = read_everything(&silo, "alice", None).await;
    assert!(seen.iter().any(|l| l.contains("3,acme,c-3")), "{seen:#?}");
    assert!(!seen.iter().any(|l| l.contains("globex")), "{seen:#?}");
}

/// A hidden column is not in the bytes the connector is given: partitions
/// and the schema are served as views without it.
#[tokio::test]
async fn a_hidden_column_is_not_in_the_files_a_connector_reads() {
    let fx = FilesFixture::new("files_hidden");
    let silo = fx.silo(connectors::FILES_READER).await;
    let access = silo_host::silo::DatasetAccess {
        filter: silo_types::RowFilter::AnyOf(vec![vec![silo_types::Predicate {
            column: "tenant".into(),
            op: silo_types::Op::Eq,
            values: vec![silo_types::Value::Text("acme".into())],
        }]]),
        columns: Some(vec!["id".into(), "tenant".into(), "customer".into()]),
    };
    let seen = read_everything(&silo, "alice", Some(access)).await;
    assert!(seen.iter().any(|l| l.ends_with("1,acme,c-1")), "{seen:#?}");
    for hidden in ["amount", "ordered_on", "10.50", "2026-01-0"] {
        assert!(
            !seen.iter().any(|l| l.contains(hidden)),
            "the connector read hidden {hidden}: {seen:#?}"
        );
    }
    // The built-in connector still fetches from the views.
    let honest = fx.silo("files").await;
    let spec = silo_host::silo::FetchSpec {
        dataset: "orders".into(),
        columns: Some(vec!["id".into(), "customer".into()]),
        limit: None,
    };
    let access = silo_host::silo::DatasetAccess {
        filter: silo_types::RowFilter::AnyOf(vec![vec![silo_types::Predicate {
            column: "customer".into(),
            op: silo_types::Op::In,
            values: vec![
                silo_types::Value::Text("c-2".into()),
                silo_types::Value::Text("c-5".into()),
            ],
        }]]),
        columns: Some(vec!["id".into(), "customer".into()]),
    };
    let rows = honest
        .fetch_with(&|_| Ok(access.clone()), &spec)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(crate::support::ids(&rows), [2, 5]);
}
