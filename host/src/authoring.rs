//! `silo connector new` and `build`: connector projects for authors.
//!
//! The templates are the built-in connectors themselves (their source is
//! compiled into `silo`), so a new connector starts from code that passes
//! the same tests; `build` compiles it for `wasm32-wasip2` (cargo for Rust,
//! componentize-js for JavaScript), checks it as the host would load it and
//! writes a manifest pinning its sha256.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capability::Kind;
use crate::error::{Error, Result};
use crate::runtime::Runtime;

/// The template of each kind: (source, the built-in's struct name, extra
/// dependencies beyond `silo-sdk`).
fn template(kind: Kind) -> (&'static str, &'static str, &'static str) {
    match kind {
        Kind::Sql => (
            include_str!("../../connectors/postgres/src/lib.rs"),
            "Postgres",
            "",
        ),
        Kind::Document => (
            include_str!("../../connectors/mongodb/src/lib.rs"),
            "Mongodb",
            "",
        ),
        Kind::Files => (
            include_str!("../../connectors/files/src/lib.rs"),
            "Files",
            "silo-types = \"SDK_VERSION\"\ncsv = \"1.4\"\nserde_json = \"1\"\n",
        ),
        Kind::Http => (
            include_str!("../../connectors/http-json/src/lib.rs"),
            "HttpJson",
            "silo-types = \"SDK_VERSION\"\nserde_json = \"1\"\n",
        ),
    }
}

/// The language a connector is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// A Rust crate on `silo-sdk`, built with cargo.
    #[default]
    Rust,
    /// An ES module built with componentize-js (from npm) against the WIT.
    Javascript,
}

/// The componentize-js release `new` pins and `build` runs: its output was
/// checked against this host (imports, pooling limits).
const COMPONENTIZE_JS: &str = "0.23.0";
/// The WIT the host checks connectors against, for non-Rust builds.
const WIT: &str = include_str!("../../wit/connector.wit");

/// `silo-connector.toml`: what `new` wrote and `build` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorToml {
    /// The connector's name (also the crate's).
    pub name: String,
    /// Its version.
    pub version: String,
    /// `sql`, `document`, `files` or `http`.
    pub kind: String,
    /// `rust` (default) or `javascript`.
    #[serde(default)]
    pub language: Language,
}

/// What `build` writes beside the component: `<name>.manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Datasource kind.
    pub kind: String,
    /// The capabilities it imports (`silo:connector/*`).
    pub capabilities: Vec<String>,
    /// The datasource settings it takes (the kind's settings, by name).
    pub config_schema: serde_json::Value,
    /// The component file name.
    pub component: String,
    /// SHA-256 of the component: a datasource pins it.
    pub sha256: String,
}

fn kind_named(name: &str) -> Result<Kind> {
    match name {
        "sql" => Ok(Kind::Sql),
        "document" => Ok(Kind::Document),
        "files" => Ok(Kind::Files),
        "http" => Ok(Kind::Http),
        other => Err(Error::Config(format!(
            "kind `{other}`: use sql, document, files or http"
        ))),
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Config(format!("{}: {e}", path.display()))
}

/// The SDK release a scaffold depends on: this host's own version, as a
/// caret requirement (`0.1`), so the crate builds from the registry anywhere.
const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `silo-sdk` requirement a scaffold writes: `major.minor`.
fn sdk_requirement() -> &'static str {
    match SDK_VERSION.rmatch_indices('.').next() {
        Some((i, _)) => &SDK_VERSION[..i],
        None => SDK_VERSION,
    }
}

/// The Silo checkout `dir` is inside, if any: the nearest ancestor holding
/// `sdk/` (the `silo-sdk` crate) and `wit/connector.wit`. A scaffold made
/// there builds against that SDK rather than the published one.
pub fn checkout_sdk(dir: &Path) -> Option<PathBuf> {
    let dir = dir.canonicalize().ok()?;
    dir.ancestors().find_map(|d| {
        let manifest = std::fs::read_to_string(d.join("sdk/Cargo.toml")).ok()?;
        (manifest.contains("name = \"silo-sdk\"") && d.join("wit/connector.wit").is_file())
            .then(|| d.join("sdk"))
    })
}

/// Scaffolds connector `name` of `kind` in `dir/<name>`: a Rust crate
/// depending on the published `silo-sdk` (with `sdk`, a local SDK such as a
/// checkout's `sdk/`, patched in), or an npm project.
pub fn new(
    dir: &Path,
    name: &str,
    kind: Kind,
    language: Language,
    sdk: Option<&Path>,
) -> Result<PathBuf> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(Error::Config(format!(
            "connector name `{name}`: lowercase letters, digits and `-`, starting with a letter"
        )));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(Error::Config(format!(
            "{} exists; choose another name or directory",
            root.display()
        )));
    }
    if language == Language::Javascript {
        return new_javascript(&root, name, kind);
    }
    std::fs::create_dir_all(root.join("src")).map_err(io(&root))?;
    let (source, builtin, extra) = template(kind);
    let ident: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let mut source = format!(
        "// Generated by `silo connector new` from Silo's built-in {} connector.\n{source}",
        kind.interface()
    );
    for pattern in [
        "struct {};",
        "impl Connector for {} ",
        "export_connector!({})",
    ] {
        source = source.replace(
            &pattern.replace("{}", builtin),
            &pattern.replace("{}", &ident),
        );
    }
    let version = sdk_requirement();
    // A local SDK replaces the registry's for this crate only.
    let patch = match sdk {
        Some(sdk) => {
            let sdk = sdk.display().to_string();
            format!(
                "\n# A local Silo SDK in place of the published one (remove to use crates.io).\n\
                 [patch.crates-io]\nsilo-sdk = {{ path = \"{sdk}\" }}\n\
                 silo-types = {{ path = \"{sdk}/types\" }}\n"
            )
        }
        None => String::new(),
    };
    let cargo = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nsilo-sdk = \"{version}\"\n{}{patch}\n\
         # Its own workspace: built on its own, wherever it lives.\n[workspace]\n",
        extra.replace("SDK_VERSION", version)
    );
    let meta = format!(
        "# Read by `silo connector build`.\nname = \"{name}\"\nversion = \"0.1.0\"\nkind = \"{}\"\n",
        kind.interface()
    );
    for (path, text) in [
        (root.join("Cargo.toml"), cargo),
        (root.join("src/lib.rs"), source),
        (root.join("silo-connector.toml"), meta),
    ] {
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(root)
}

/// An npm project whose `connector.js` is the JavaScript template of `kind`.
fn new_javascript(root: &Path, name: &str, kind: Kind) -> Result<PathBuf> {
    let source = match kind {
        Kind::Sql => include_str!("../../connectors/sql-js/connector.js"),
        other => {
            return Err(Error::Config(format!(
                "there is a JavaScript template for sql connectors only; for {} start from \
                 `--kind sql --language javascript` and wit/connector.wit",
                other.interface()
            )));
        }
    };
    std::fs::create_dir_all(root).map_err(io(root))?;
    let package = serde_json::json!({
        "name": name,
        "version": "0.1.0",
        "private": true,
        "type": "module",
        "devDependencies": {"@bytecodealliance/componentize-js": COMPONENTIZE_JS},
    });
    let package =
        serde_json::to_string_pretty(&package).map_err(|e| Error::Internal(e.to_string()))?;
    let meta = format!(
        "# Read by `silo connector build`.\nname = \"{name}\"\nversion = \"0.1.0\"\nkind = \"{}\"\n\
         language = \"javascript\"\n",
        kind.interface()
    );
    for (path, text) in [
        (root.join("package.json"), package),
        (root.join("connector.js"), source.to_owned()),
        (root.join("silo-connector.toml"), meta),
        (
            root.join(".gitignore"),
            "node_modules/\n.silo/\n*.wasm\n".to_owned(),
        ),
    ] {
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(root.to_owned())
}

/// Builds the connector in `root` for `wasm32-wasip2` (release), checks it
/// as the host would load it and writes its manifest. Returns the manifest
/// and the component's path. `target` is cargo's target directory (Rust).
pub fn build(root: &Path, runtime: &Runtime, target: Option<&Path>) -> Result<(Manifest, PathBuf)> {
    // Absolute: tools run inside `root`, and where a tool writes the
    // component in place it must be recognised as the same file.
    let root = &root.canonicalize().map_err(io(root))?;
    let meta_path = root.join("silo-connector.toml");
    let meta: ConnectorToml =
        toml::from_str(&std::fs::read_to_string(&meta_path).map_err(io(&meta_path))?)
            .map_err(|e| Error::Config(format!("{}: {e}", meta_path.display())))?;
    let kind = kind_named(&meta.kind)?;
    let file = format!("{}.wasm", meta.name.replace('-', "_"));
    let wasm_path = match meta.language {
        Language::Rust => build_rust(root, target)?.join(&file),
        Language::Javascript => build_javascript(root, kind, &file)?,
    };
    let wasm = std::fs::read(&wasm_path).map_err(io(&wasm_path))?;
    let found = runtime.inspect(&wasm, Some(kind))?;
    let manifest = Manifest {
        name: meta.name.clone(),
        version: meta.version,
        kind: meta.kind,
        capabilities: found
            .imports
            .iter()
            .filter(|i| i.starts_with("silo:connector/"))
            .cloned()
            .collect(),
        config_schema: config_schema(kind),
        component: file.clone(),
        sha256: found.digest,
    };
    let out = root.join(&file);
    if out != wasm_path {
        std::fs::copy(&wasm_path, &out).map_err(io(&out))?;
    }
    let manifest_path = root.join(format!("{}.manifest.json", meta.name));
    let text =
        serde_json::to_string_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&manifest_path, text).map_err(io(&manifest_path))?;
    Ok((manifest, out))
}

/// `cargo build --release --target wasm32-wasip2`; returns the directory
/// the component lands in.
fn build_rust(root: &Path, target: Option<&Path>) -> Result<PathBuf> {
    let target = match target {
        Some(t) => t.to_owned(),
        None => {
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
        }
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .map_err(|e| Error::Config(format!("running cargo: {e}")))?;
    if !status.success() {
        return Err(Error::Config(format!(
            "cargo build failed ({status}); is the target installed? \
             `rustup target add wasm32-wasip2`"
        )));
    }
    Ok(target.join("wasm32-wasip2/release"))
}

/// `componentize-js connector.js` against the host's own WIT, for the
/// kind's world, with the HTTP and fetch-event features off (the host links
/// no `wasi:http`); installs the pinned componentize-js first if missing.
fn build_javascript(root: &Path, kind: Kind, file: &str) -> Result<PathBuf> {
    let run = |program: &str, args: &[&str]| -> Result<()> {
        let status = std::process::Command::new(program)
            .args(args)
            .current_dir(root)
            .status()
            .map_err(|e| {
                Error::Config(format!("running {program}: {e} (is Node.js installed?)"))
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "`{program} {}` failed ({status})",
                args.join(" ")
            )))
        }
    };
    let tool = root.join("node_modules/.bin/componentize-js");
    if !tool.exists() {
        run("npm", &["install", "--no-audit", "--no-fund"])?;
    }
    let wit = root.join(".silo/wit");
    std::fs::create_dir_all(&wit).map_err(io(&wit))?;
    std::fs::write(wit.join("connector.wit"), WIT).map_err(io(&wit))?;
    let world = format!("{}-connector", kind.interface());
    let tool = tool.display().to_string();
    run(
        &tool,
        &[
            "connector.js",
            "--wit",
            ".silo/wit",
            "--world-name",
            &world,
            "--disable",
            "http",
            "fetch-event",
            "-o",
            file,
        ],
    )?;
    Ok(root.join(file))
}

/// The datasource settings a connector of `kind` runs with.
fn config_schema(kind: Kind) -> serde_json::Value {
    let (section, fields): (&str, &[&str]) = match kind {
        Kind::Sql => (
            "postgres | mysql",
            &["host", "port", "database", "user", "schema", "pool_size"],
        ),
        Kind::Document => (
            "mongodb",
            &[
                "host",
                "port",
                "database",
                "user",
                "auth_source",
                "tls",
                "pool_size",
            ],
        ),
        Kind::Files => ("files", &["data_dir", "org"]),
        Kind::Http => (
            "http",
            &[
                "base_url",
                "paths",
                "bind_params",
                "token_header",
                "token_prefix",
                "max_response_bytes",
                "max_requests",
                "settings",
            ],
        ),
    };
    let secret = match kind {
        Kind::Files => "none",
        Kind::Http => "token (host-held, sent as a header the connector never sees)",
        Kind::Sql | Kind::Document => "password (host-held)",
    };
    serde_json::json!({"section": section, "settings": fields, "secret": secret})
}
