//! `silo connector new` → `build` → register → fetch, for each kind: the
//! scaffolded connector passes the same tenant scenario as the built-in one
//! it starts from.
use std::path::PathBuf;

use silo_host::authoring::{self, Language};
use silo_host::capability::Kind;
use silo_host::runtime::Runtime;

/// Scaffolds and builds connector `name` of `kind`; returns the component.
pub fn scaffold(name: &str, kind: Kind) -> PathBuf {
    scaffold_in(name, kind, Language::Rust)
}

/// [`scaffold`] in `language`.
fn scaffold_in(name: &str, kind: Kind, language: Language) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("silo-authoring-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk")
        .canonicalize()
        .unwrap();
    let root = authoring::new(&dir, name, kind, language, &sdk).unwrap();
    assert!(
        authoring::new(&dir, name, kind, language, &sdk).is_err(),
        "never overwrites"
    );
    let runtime = Runtime::new(Default::default(), None, silo_host::capability::ALL).unwrap();
    // One target directory for these builds, kept between runs.
    let target = std::env::temp_dir().join("silo-authoring-target");
    // As an author types it: relative to the working directory.
    let (manifest, wasm) = authoring::build(&relative(&root), &runtime, Some(&target)).unwrap();
    assert_eq!(manifest.kind, kind.interface());
    let capability = format!("silo:connector/{}@", kind.interface());
    assert!(
        manifest
            .capabilities
            .iter()
            .any(|c| c.starts_with(&capability))
    );
    let bytes = std::fs::read(&wasm).unwrap();
    assert_eq!(
        manifest.sha256,
        runtime.inspect(&bytes, None).unwrap().digest
    );
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join(format!("{name}.manifest.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(written["sha256"], manifest.sha256);
    wasm
}

/// `silo connector test --config <path> --user alice` against the real
/// datasource, as its authors run it; asserts it passes.
async fn assert_connector_test(config: &std::path::Path) {
    connector_test(config, "alice").await.unwrap();
}

async fn connector_test(config: &std::path::Path, user: &str) -> silo_host::error::Result<()> {
    use clap::Parser;
    let argv = [
        "silo",
        "connector",
        "test",
        "--config",
        config.to_str().unwrap(),
        "--user",
        user,
    ];
    silo_host::cli::run(silo_host::cli::Cli::parse_from(argv)).await
}

/// `path` relative to the working directory.
fn relative(path: &std::path::Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let up = cwd.components().count() - 1;
    let mut out: PathBuf = std::iter::repeat_n("..", up).collect();
    out.push(path.strip_prefix("/").unwrap());
    assert!(out.is_relative() && out.exists(), "{}", out.display());
    out
}

#[test]
fn names_are_checked() {
    let dir = std::env::temp_dir();
    for bad in ["Bad", "has space", "-lead", "", "dots.no"] {
        assert!(
            authoring::new(&dir, bad, Kind::Sql, Language::Rust, &dir).is_err(),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_new_sql_connector_builds_registers_and_fetches() {
    let wasm = scaffold("acme-warehouse", Kind::Sql);
    let fx = crate::support::Fixture::new("authoring_sql").await;
    let silo = fx.silo(wasm.to_str().unwrap(), "").await.unwrap();
    crate::support::assert_tenant_isolation(&silo).await;
    assert_connector_test(&fx.config_path()).await;

    // Pinned by its manifest's sha256: the same file loads, another is refused.
    let digest = Runtime::new(Default::default(), None, silo_host::capability::ALL)
        .unwrap()
        .inspect(&std::fs::read(&wasm).unwrap(), None)
        .unwrap()
        .digest;
    let mut config = silo_host::config::SiloConfig::load(&fx.config_path()).unwrap();
    let main = config.datasources.get_mut("main").unwrap();
    main.connector_sha256 = Some(digest);
    assert!(silo_host::silo::Silo::new(&config).is_ok());
    // A user the policy gives nothing is reported as a failure.
    assert!(connector_test(&fx.config_path(), "nobody").await.is_err());
    let main = config.datasources.get_mut("main").unwrap();
    main.connector_sha256 = Some("00".repeat(32));
    let err = silo_host::silo::Silo::new(&config)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not the pinned"), "{err}");
}

#[tokio::test]
async fn a_new_files_connector_builds_registers_and_fetches() {
    let wasm = scaffold("acme-uploads", Kind::Files);
    let fx = crate::files::FilesFixture::new("authoring_files");
    let silo = fx.silo(wasm.to_str().unwrap()).await;
    crate::support::assert_tenant_isolation(&silo).await;
    assert_connector_test(&fx.config_path()).await;
}

#[tokio::test]
async fn a_new_document_connector_builds_registers_and_fetches() {
    let wasm = scaffold("acme-mongo", Kind::Document);
    let fx = crate::mongodb::MongoFixture::new("authoring_mongo").await;
    let silo = fx.silo(wasm.to_str().unwrap()).await.unwrap();
    crate::support::assert_tenant_isolation(&silo).await;
    assert_connector_test(&fx.config(wasm.to_str().unwrap(), 27017, "")).await;
}

#[tokio::test]
async fn a_new_javascript_connector_builds_registers_and_fetches() {
    // componentize-js from npm, against the host's own WIT.
    let wasm = scaffold_in("acme-js", Kind::Sql, Language::Javascript);
    let fx = crate::support::Fixture::new("authoring_js").await;
    let silo = fx.silo(wasm.to_str().unwrap(), "").await.unwrap();
    crate::support::assert_tenant_isolation(&silo).await;
    assert_connector_test(&fx.config_path()).await;
    // A host refusal reaches JavaScript as an exception and comes back as
    // the connector's error, not a trap.
    let bad = silo_host::silo::FetchSpec {
        dataset: "orders".into(),
        columns: Some(vec!["id".into(), "no_such_column".into()]),
        limit: None,
    };
    let err = crate::support::fetch_rows(&silo, "alice", &bad)
        .await
        .unwrap_err();
    eprintln!("javascript connector error: {err}");
    assert!(!err.to_string().contains("trapped"), "{err}");
    // The same rows and types as the Rust connector's.
    let spec = silo_host::silo::FetchSpec {
        dataset: "orders".into(),
        columns: None,
        limit: Some(2),
    };
    let rows = crate::support::fetch_rows(&silo, "alice", &spec)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].len(), 5, "{rows:?}");
    assert!(
        matches!(rows[0][3], silo_types::Value::Decimal(_)),
        "{rows:?}"
    );
    let dir = std::env::temp_dir();
    let err = authoring::new(&dir, "js-files", Kind::Files, Language::Javascript, &dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sql connectors only"), "{err}");
}

#[tokio::test]
async fn a_new_http_connector_builds_registers_and_fetches() {
    let wasm = scaffold("acme-api", Kind::Http);
    crate::http::assert_tenants(wasm.to_str().unwrap(), assert_connector_test).await;
}
