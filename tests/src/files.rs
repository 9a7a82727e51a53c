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

struct FilesFixture {
    dir: PathBuf,
    store: FilesStore,
}

impl FilesFixture {
    /// A fresh data dir with `orders` uploaded, partitioned by tenant.
    fn new(name: &str) -> FilesFixture {
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
                progress: None,
            },
        )
        .map(|_| ())
    }

    fn orders_dir(&self) -> PathBuf {
        self.dir.join("data/default/orders")
    }

    async fn silo(&self, connector: &str) -> Silo {
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
    // Nothing changed, and no staging directory was left behind.
    assert_eq!(fetch_ids(&silo, "alice").await.unwrap(), [1, 2, 3]);
    let leftovers: Vec<_> = std::fs::read_dir(fx.dir.join("data/default"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(leftovers, ["orders"]);
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
