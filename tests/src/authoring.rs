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
    let root = authoring::new(&dir, name, kind, language, Some(&sdk)).unwrap();
    assert!(
        authoring::new(&dir, name, kind, language, Some(&sdk)).is_err(),
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
            authoring::new(&dir, bad, Kind::Sql, Language::Rust, Some(&dir)).is_err(),
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
    let err = authoring::new(
        &dir,
        "js-files",
        Kind::Files,
        Language::Javascript,
        Some(&dir),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sql connectors only"), "{err}");
}

#[tokio::test]
async fn a_new_http_connector_builds_registers_and_fetches() {
    let wasm = scaffold("acme-api", Kind::Http);
    crate::http::assert_tenants(wasm.to_str().unwrap(), assert_connector_test).await;
}

/// The workspace root.
fn workspace() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

#[test]
fn the_sdk_crate_carries_the_one_wit_unchanged() {
    let root = workspace();
    let shared = std::fs::read(root.join("wit/connector.wit")).unwrap();
    let carried = std::fs::read(root.join("sdk/wit/connector.wit")).unwrap();
    assert!(
        shared == carried,
        "sdk/wit/connector.wit differs from wit/connector.wit: copy it over"
    );
}

/// Runs `program` with `args` in `dir`, asserting success.
fn run(dir: &std::path::Path, program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Outside a checkout, `new` writes a versioned dependency and no patch, and
/// the scaffold builds from the SDK crates as `cargo package` makes them (in
/// place of the registry, which does not have them here): nothing of the
/// checkout is needed.
#[test]
fn a_scaffold_needs_no_checkout_only_the_published_sdk() {
    let tmp = std::env::temp_dir().join(format!("silo-sdk-package-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    assert_eq!(
        authoring::checkout_sdk(&tmp),
        None,
        "a temp dir is no checkout"
    );
    assert_eq!(
        authoring::checkout_sdk(&workspace().join("host/src")),
        Some(workspace().join("sdk")),
        "inside a checkout, its sdk/"
    );

    let root = authoring::new(&tmp, "standalone", Kind::Files, Language::Rust, None).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let requirement = &version[..version.rfind('.').unwrap()];
    assert!(
        manifest.contains(&format!("silo-sdk = \"{requirement}\"")),
        "{manifest}"
    );
    assert!(
        manifest.contains(&format!("silo-types = \"{requirement}\"")),
        "{manifest}"
    );
    assert!(!manifest.contains("[patch"), "{manifest}");
    assert!(
        !manifest.contains(workspace().to_str().unwrap()),
        "{manifest}"
    );

    // The crates as they would be published, unpacked beside the scaffold.
    let packages = tmp.join("package-target");
    let target = packages.to_str().unwrap();
    run(
        &workspace(),
        env!("CARGO"),
        &[
            "package",
            "-p",
            "silo-types",
            "-p",
            "silo-sdk",
            "--no-verify",
            "--allow-dirty",
            "--target-dir",
            target,
        ],
    );
    let vendor = tmp.join("vendor");
    std::fs::create_dir_all(&vendor).unwrap();
    for name in ["silo-types", "silo-sdk"] {
        let file = packages.join(format!("package/{name}-{version}.crate"));
        run(&vendor, "tar", &["xzf", file.to_str().unwrap()]);
    }
    // Stand-in for crates.io: the packaged crates, not the checkout.
    let mut manifest = manifest;
    manifest.push_str(&format!(
        "\n[patch.crates-io]\nsilo-sdk = {{ path = \"{0}/silo-sdk-{1}\" }}\n\
         silo-types = {{ path = \"{0}/silo-types-{1}\" }}\n",
        vendor.display(),
        version
    ));
    std::fs::write(root.join("Cargo.toml"), manifest).unwrap();

    let runtime = Runtime::new(Default::default(), None, silo_host::capability::ALL).unwrap();
    let target = std::env::temp_dir().join("silo-authoring-target");
    let (built, wasm) = authoring::build(&root, &runtime, Some(&target)).unwrap();
    assert_eq!(built.kind, "files");
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
    assert!(lock.contains("name = \"silo-sdk\""), "built on silo-sdk");
    assert_eq!(
        runtime
            .inspect(&std::fs::read(&wasm).unwrap(), Some(Kind::Files))
            .unwrap()
            .digest,
        built.sha256
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
