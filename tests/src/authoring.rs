//! `silo connector new` → `build` → register → fetch, for each kind: the
//! scaffolded connector passes the same tenant scenario as the built-in one
//! it starts from.
use std::path::PathBuf;

use silo_host::authoring;
use silo_host::capability::Kind;
use silo_host::runtime::Runtime;

/// Scaffolds and builds connector `name` of `kind`; returns the component.
fn scaffold(name: &str, kind: Kind) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("silo-authoring-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk")
        .canonicalize()
        .unwrap();
    let root = authoring::new(&dir, name, kind, &sdk).unwrap();
    assert!(
        authoring::new(&dir, name, kind, &sdk).is_err(),
        "never overwrites"
    );
    let runtime = Runtime::new(Default::default(), None).unwrap();
    // One target directory for these builds, kept between runs.
    let target = std::env::temp_dir().join("silo-authoring-target");
    let (manifest, wasm) = authoring::build(&root, &runtime, Some(&target)).unwrap();
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

#[test]
fn names_are_checked() {
    let dir = std::env::temp_dir();
    for bad in ["Bad", "has space", "-lead", "", "dots.no"] {
        assert!(authoring::new(&dir, bad, Kind::Sql, &dir).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn a_new_sql_connector_builds_registers_and_fetches() {
    let wasm = scaffold("acme-warehouse", Kind::Sql);
    let fx = crate::support::Fixture::new("authoring_sql").await;
    let silo = fx.silo(wasm.to_str().unwrap(), "").await.unwrap();
    crate::support::assert_tenant_isolation(&silo).await;

    // Pinned by its manifest's sha256: the same file loads, another is refused.
    let digest = Runtime::new(Default::default(), None)
        .unwrap()
        .inspect(&std::fs::read(&wasm).unwrap(), None)
        .unwrap()
        .digest;
    let mut config = silo_host::config::SiloConfig::load(&fx.config_path()).unwrap();
    let main = config.datasources.get_mut("main").unwrap();
    main.connector_sha256 = Some(digest);
    assert!(silo_host::silo::Silo::new(&config).is_ok());
    // `silo connector test` runs it against the database as a sample user.
    use clap::Parser;
    let path = fx.config_path();
    let argv = [
        "silo",
        "connector",
        "test",
        "--config",
        path.to_str().unwrap(),
        "--user",
        "alice",
    ];
    silo_host::cli::run(silo_host::cli::Cli::parse_from(argv))
        .await
        .unwrap();
    let argv = [
        "silo",
        "connector",
        "test",
        "--config",
        path.to_str().unwrap(),
        "--user",
        "nobody",
    ];
    assert!(
        silo_host::cli::run(silo_host::cli::Cli::parse_from(argv))
            .await
            .is_err()
    );
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
}

#[tokio::test]
async fn a_new_document_connector_builds_registers_and_fetches() {
    let wasm = scaffold("acme-mongo", Kind::Document);
    let fx = crate::mongodb::MongoFixture::new("authoring_mongo").await;
    let silo = fx.silo(wasm.to_str().unwrap()).await.unwrap();
    crate::support::assert_tenant_isolation(&silo).await;
}
