//! The `silo` command line.
use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::SiloConfig;
use crate::error::{Error, Result};
use crate::output::{write_ndjson, write_table};
use crate::silo::{FetchSpec, Silo};

/// Silo runs datasource connectors as sandboxed WebAssembly components and
/// returns only the rows each embed user may see.
#[derive(Debug, Parser)]
#[command(name = "silo", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `silo datasets …`.
#[derive(Debug, Subcommand)]
enum DatasetsCommand {
    /// Validate a CSV or NDJSON file and store it as a dataset, split into
    /// one directory per value of `--partition-by`; the previous data stays
    /// intact unless the whole file is good.
    Upload {
        /// Root of all uploads.
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// Organization directory under it.
        #[arg(long, default_value = "default")]
        org: String,
        /// Dataset name.
        #[arg(long)]
        dataset: String,
        /// The `.csv` or `.ndjson` file.
        #[arg(long)]
        file: std::path::PathBuf,
        /// Column whose values partition the data (e.g. the tenant).
        #[arg(long)]
        partition_by: Option<String>,
        /// Largest file accepted, in bytes.
        #[arg(long, default_value_t = crate::capability::files::upload::DEFAULT_MAX_BYTES)]
        max_bytes: u64,
        /// Most partitions accepted.
        #[arg(long, default_value_t = crate::capability::files::upload::MAX_PARTITIONS)]
        max_partitions: usize,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Uploaded datasets.
    Datasets {
        #[command(subcommand)]
        command: DatasetsCommand,
    },
    /// Generate two tenants' data (uploaded files by default, no server
    /// needed), fetch as two embed users and report what the host enforced.
    Demo {
        /// Where the demo data lives: `files` (embedded) or `postgres`.
        #[arg(long, value_enum, default_value_t = DemoDb::Files)]
        db: DemoDb,
        /// With `--db postgres`: the admin connection string used to seed it.
        #[arg(long, default_value = crate::demo::DEFAULT_ADMIN)]
        admin: String,
        /// Where to write the demo's silo.toml (default: a temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Fetch a dataset as an embed user.
    Fetch {
        #[command(flatten)]
        target: AsUser,
        /// Comma-separated columns (default: all).
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        /// Most rows to return.
        #[arg(long)]
        limit: Option<u64>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Profile a dataset as an embed user and print the metadata payload
    /// (`silo.metadata.v1`) the privacy policy lets out: never rows.
    Profile {
        #[command(flatten)]
        target: AsUser,
    },
    /// Profile a dataset as an embed user and summarize the metadata (an
    /// LLM endpoint if given, else the built-in summarizer).
    Summarize {
        #[command(flatten)]
        target: AsUser,
        #[command(flatten)]
        llm: LlmArgs,
    },
    /// List the datasets and columns a datasource's connector serves.
    Describe {
        /// Path to silo.toml.
        #[arg(long, short, default_value = "silo.toml")]
        config: PathBuf,
        /// Datasource (default: all).
        #[arg(long)]
        datasource: Option<String>,
    },
    /// Serve the REST API: the control plane (organizations, groups, embed
    /// users, sessions, datasources) and the embed fetch.
    Serve {
        #[command(flatten)]
        store: crate::server::StoreArgs,
        /// Address to listen on, or `unix:PATH` for a Unix domain socket
        /// (mode 0660: its owner and group, e.g. a reverse proxy, connect).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: crate::server::Listen,
        /// Seed the store from a silo.toml first (its datasources, datasets,
        /// and users as embed users of one group).
        #[arg(long)]
        bootstrap: Option<PathBuf>,
        /// The organization --bootstrap seeds.
        #[arg(long, default_value = "default")]
        org: String,
        /// Session token signatures.
        #[arg(long, value_enum, default_value_t = crate::control::tokens::TokenAlg::EdDsa)]
        token_alg: crate::control::tokens::TokenAlg,
        /// TLS certificate chain (PEM); with --tls-key, serve HTTPS.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        #[command(flatten)]
        policy: Box<crate::server::PolicyArgs>,
        #[command(flatten)]
        server: Box<crate::server::ServerArgs>,
        #[command(flatten)]
        llm: LlmArgs,
    },
    /// Print the REST API's OpenAPI document (what `/openapi.json` serves);
    /// the backend clients in `clients/` are generated from it.
    Openapi,
    /// Master keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// API keys.
    ApiKeys {
        #[command(subcommand)]
        command: ApiKeysCommand,
    },
    /// Connector author tools.
    Connector {
        #[command(subcommand)]
        command: ConnectorCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Measure the metadata profiler's throughput (cells per second, one
    /// thread) and memory.
    BenchProfile {
        /// Rows profiled.
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
    },
    /// Measure sandboxed fetch against a plain driver loop, and instantiation;
    /// `silo bench api`: the embed fetch over HTTP against a native handler.
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        what: Option<BenchCommand>,
        /// Database to measure against.
        #[arg(long, value_enum, default_value_t = crate::bench::Db::Postgres)]
        db: crate::bench::Db,
        /// Admin connection used for seeding (default: the local server's;
        /// a connection string for Postgres, a mysql:// URL for MySQL, a
        /// mongodb:// URL for MongoDB).
        #[arg(long)]
        admin: Option<String>,
        /// Rows fetched per run.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u32,
        /// Timed runs of each fetch.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Instantiations to time.
        #[arg(long, default_value_t = 10_000)]
        instantiations: usize,
    },
}

/// `silo bench …`.
#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Load `silo serve` and a native axum + tokio-postgres handler with the
    /// same embed fetches, alternately, and print req/s, latency, ratios and
    /// the CPU per request of the server, Postgres, the load generator and
    /// the machine.
    Api {
        /// Admin connection used for seeding.
        #[arg(long, default_value = crate::demo::DEFAULT_ADMIN)]
        admin: String,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds per timed run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Timed runs of each server, alternated.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Rows per fetch (comma-separated; each is measured).
        #[arg(long, value_delimiter = ',', default_value = "100,10")]
        limit: Vec<u64>,
        /// Tenants in the table, one embed user and session each.
        #[arg(long, default_value_t = 100)]
        tenants: u32,
        /// Rows per tenant.
        #[arg(long, default_value_t = 1000)]
        rows_per_tenant: u32,
        /// Database connections of each server.
        #[arg(long, default_value_t = 16)]
        pool: usize,
        /// Extra embed users, each with a session, in the measured org (P6).
        #[arg(long, default_value_t = 0)]
        population: u32,
        /// Embed users, each with a session, in another org of the store.
        #[arg(long, default_value_t = 0)]
        other_population: u32,
        /// `silo serve`'s embedded-store sync level (its default if not given).
        #[arg(long, value_parser = ["normal", "full"])]
        sqlite_sync: Option<String>,
    },
    /// The native handler `silo bench api` compares with (started by it).
    #[command(hide = true)]
    Native {
        /// Where to listen.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Postgres connection string.
        #[arg(long)]
        dsn: String,
        /// Pooled connections.
        #[arg(long, default_value_t = 16)]
        pool: usize,
    },
}

/// `silo keys …`.
#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print a new random master key (base64), for a key file or
    /// SILO_MASTER_KEY.
    Generate,
    /// Re-seal every stored credential and signing key under a new master
    /// key, in one transaction; then start silo with the new key.
    Rotate {
        #[command(flatten)]
        store: crate::server::StoreArgs,
        /// File holding the new key (`silo keys generate > new.key`).
        #[arg(long)]
        new_key_file: PathBuf,
    },
}

/// `silo api-keys …`.
#[derive(Debug, Subcommand)]
enum ApiKeysCommand {
    /// Mint an API key and print it once: for an organization's backend
    /// (`--org`), or an operator key (`--admin`) that manages organizations.
    Create {
        #[command(flatten)]
        store: crate::server::StoreArgs,
        /// Organization id or name.
        #[arg(long, required_unless_present = "admin", conflicts_with = "admin")]
        org: Option<String>,
        /// An operator key.
        #[arg(long)]
        admin: bool,
        /// A label for the key.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

/// `silo connector …`: tools for connector authors.
#[derive(Debug, Subcommand)]
enum ConnectorCommand {
    /// Scaffold a connector project from the built-in connector of its kind.
    New {
        /// Name (lowercase letters, digits, `-`).
        name: String,
        /// Datasource kind.
        #[arg(long, value_enum)]
        kind: ConnectorKind,
        /// `rust` (a crate on silo-sdk) or `javascript` (componentize-js; sql only).
        #[arg(long, value_enum, default_value = "rust")]
        language: ConnectorLanguage,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// A local Silo SDK (a checkout's `sdk/`) patched in for the published `silo-sdk`
        /// (default: the checkout this runs inside, if any).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Run a datasource's connector against the real datasource as a sample
    /// embed user: describe, then fetch each dataset, reporting what the
    /// host enforced and verified.
    Test {
        /// Path to silo.toml (its datasource names the connector).
        #[arg(long, short, default_value = "silo.toml")]
        config: PathBuf,
        /// The sample embed user.
        #[arg(long, short)]
        user: String,
        /// Datasource (default: all).
        #[arg(long)]
        datasource: Option<String>,
        /// Rows to show per dataset.
        #[arg(long, default_value_t = 3)]
        rows: usize,
    },
    /// Build a connector for wasm32-wasip2, check it as the host loads it,
    /// and write `<name>.manifest.json` (kind, capabilities, sha256).
    Build {
        /// The connector's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// List a component's imports and exports and check it as the host
    /// would load it; refuses one that asks for anything its kind is not
    /// given, naming the WIT item.
    Inspect {
        /// The `.wasm` component.
        path: PathBuf,
        /// The datasource kind to check it for (default: the one capability
        /// it imports).
        #[arg(long, value_enum)]
        kind: Option<ConnectorKind>,
    },
}

/// The language `connector new` writes.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ConnectorLanguage {
    /// A Rust crate on `silo-sdk`.
    Rust,
    /// An ES module built with componentize-js.
    Javascript,
}

/// A connector's datasource kind.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ConnectorKind {
    /// `silo:connector/sql` (Postgres, MySQL).
    Sql,
    /// `silo:connector/document` (MongoDB).
    Document,
    /// `silo:connector/files` (uploads).
    Files,
    /// `silo:connector/http` (JSON / REST APIs).
    Http,
}

impl From<ConnectorKind> for crate::capability::Kind {
    fn from(k: ConnectorKind) -> Self {
        match k {
            ConnectorKind::Sql => crate::capability::Kind::Sql,
            ConnectorKind::Document => crate::capability::Kind::Document,
            ConnectorKind::Files => crate::capability::Kind::Files,
            ConnectorKind::Http => crate::capability::Kind::Http,
        }
    }
}

/// `silo audit …`.
#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the audit log's hash chain; fails naming the first broken
    /// record.
    Verify {
        #[command(flatten)]
        store: crate::server::StoreArgs,
    },
}

/// A dataset of a `silo.toml`, as one of its embed users.
#[derive(Debug, Clone, clap::Args)]
struct AsUser {
    /// Path to silo.toml.
    #[arg(long, short, default_value = "silo.toml")]
    config: PathBuf,
    /// Embed user id.
    #[arg(long, short)]
    user: String,
    /// Dataset name.
    #[arg(long, short)]
    dataset: String,
}

/// An OpenAI-compatible endpoint for summaries; without `--llm-base-url`
/// the built-in summarizer writes them, offline.
#[derive(Debug, Clone, clap::Args)]
pub struct LlmArgs {
    /// Chat completions base URL (`https://api.openai.com/v1`,
    /// `http://127.0.0.1:11434/v1` for Ollama, …).
    #[arg(long)]
    pub llm_base_url: Option<String>,
    /// Model name.
    #[arg(long, default_value = "gpt-4o-mini")]
    pub llm_model: String,
    /// Environment variable holding the endpoint's API key.
    #[arg(long)]
    pub llm_api_key_env: Option<String>,
    /// Seconds per attempt.
    #[arg(long, default_value_t = 60)]
    pub llm_timeout_secs: u64,
}

impl LlmArgs {
    /// The endpoint's config, if one is given.
    pub fn config(&self) -> Result<Option<crate::metadata::llm::LlmConfig>> {
        let Some(base_url) = self.llm_base_url.clone() else {
            return Ok(None);
        };
        let api_key = self
            .llm_api_key_env
            .as_deref()
            .map(|var| crate::config::read_secret(Some(var), None))
            .transpose()?
            .flatten();
        Ok(Some(crate::metadata::llm::LlmConfig {
            base_url,
            model: self.llm_model.clone(),
            api_key,
            timeout: std::time::Duration::from_secs(self.llm_timeout_secs.max(1)),
            retries: crate::metadata::llm::DEFAULT_RETRIES,
        }))
    }
}

/// Where `silo demo` keeps its data.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DemoDb {
    /// Uploaded files under the demo directory: no server.
    Files,
    /// The local Postgres.
    Postgres,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// An aligned table (buffers the whole result).
    Table,
    /// One JSON object per line, streamed batch by batch.
    Ndjson,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let io = |e: std::io::Error| Error::Internal(e.to_string());
    match cli.command {
        Command::Serve {
            store,
            listen,
            bootstrap,
            org,
            token_alg,
            tls_cert,
            tls_key,
            policy,
            server,
            llm,
        } => {
            let cp = store
                .open_with(token_alg, llm.config()?, policy.policy())
                .await?;
            if let Some(path) = bootstrap {
                let seeded = cp.bootstrap(&SiloConfig::load(&path)?, &org).await?;
                eprintln!(
                    "seeded organization `{}` ({}) from {}",
                    seeded.name,
                    seeded.id,
                    path.display()
                );
            }
            let tls = tls_cert.zip(tls_key);
            let scheme = if tls.is_some() { "https" } else { "http" };
            crate::server::serve(cp, listen, tls, server.limits(), |addr| {
                eprintln!(
                    "silo serving on {} (OpenAPI at /openapi.json)",
                    addr.url(scheme)
                );
            })
            .await
        }
        Command::Keys {
            command: KeysCommand::Generate,
        } => {
            let key = crate::control::crypto::MasterKey::generate()?;
            writeln!(out, "{}", key.encode().as_str()).map_err(io)
        }
        Command::Keys {
            command:
                KeysCommand::Rotate {
                    store,
                    new_key_file,
                },
        } => {
            let new = crate::control::crypto::MasterKey::from_env_or_file(Some(&new_key_file))?
                .ok_or_else(|| Error::Config("no new key".into()))?;
            let cp = store.open(Default::default()).await?;
            let n = cp.rotate_key(&new).await?;
            writeln!(
                out,
                "re-sealed {n} credentials and signing keys under the new master key;                  start silo with it from now on"
            )
            .map_err(io)
        }
        Command::ApiKeys {
            command:
                ApiKeysCommand::Create {
                    store,
                    org,
                    admin,
                    name,
                },
        } => {
            let cp = store.open(Default::default()).await?;
            let org = if admin { None } else { org };
            let (info, token) = cp
                .create_api_key(&crate::control::Principal::Cli, org.as_deref(), &name)
                .await?;
            eprintln!("API key {} (shown once; store it now):", info.id);
            writeln!(out, "{}", token.as_str()).map_err(io)
        }
        Command::Connector {
            command:
                ConnectorCommand::New {
                    name,
                    kind,
                    language,
                    dir,
                    sdk,
                },
        } => {
            let language = match language {
                ConnectorLanguage::Rust => crate::authoring::Language::Rust,
                ConnectorLanguage::Javascript => crate::authoring::Language::Javascript,
            };
            // Inside a Silo checkout, its SDK; elsewhere the published one.
            let sdk = sdk.or_else(|| {
                std::env::current_dir()
                    .ok()
                    .and_then(|d| crate::authoring::checkout_sdk(&d))
            });
            let root = crate::authoring::new(&dir, &name, kind.into(), language, sdk.as_deref())?;
            writeln!(
                out,
                "created {} (from the built-in connector); next: silo connector build {}",
                root.display(),
                root.display()
            )
            .map_err(io)
        }
        Command::Connector {
            command:
                ConnectorCommand::Test {
                    config,
                    user,
                    datasource,
                    rows,
                },
        } => {
            let cfg = SiloConfig::load(&config)?;
            let silo = Silo::open(&cfg).await?;
            writeln!(out, "registration check passed (read-only credentials, or an accept_write_privileges override)").map_err(io)?;
            let names: Vec<String> = match datasource {
                Some(d) => vec![d],
                None => cfg.datasources.keys().cloned().collect(),
            };
            for name in names {
                let described = silo.describe(&name).await?;
                writeln!(
                    out,
                    "datasource {name}: describe found {} governed dataset(s)",
                    described.len()
                )
                .map_err(io)?;
                let http = cfg.datasources.get(&name).and_then(|d| d.http.as_ref());
                for warning in http.map(|h| h.warnings()).unwrap_or_default() {
                    writeln!(out, "  warning: {warning}").map_err(io)?;
                }
                for d in described.iter() {
                    let spec = FetchSpec {
                        dataset: d.name.clone(),
                        columns: None,
                        limit: None,
                    };
                    let mut fetch = silo.fetch(&user, &spec).await?;
                    let filter = crate::demo::filter_text(fetch.filter());
                    let columns = fetch.columns().to_vec();
                    let mut sample = Vec::new();
                    while let Some(batch) = fetch.next_batch().await? {
                        sample.extend(batch.into_iter().take(rows.saturating_sub(sample.len())));
                    }
                    writeln!(
                        out,
                        "  {}: {} columns; as {user} the host enforced: {filter}\n  \
                         {} rows ({} bytes) released, every one re-checked against that filter",
                        d.name,
                        d.columns.len(),
                        fetch.rows(),
                        fetch.bytes()
                    )
                    .map_err(io)?;
                    let mut table = Vec::new();
                    write_table(&mut table, &columns, &sample).map_err(io)?;
                    for line in String::from_utf8_lossy(&table).lines() {
                        writeln!(out, "    {line}").map_err(io)?;
                    }
                }
            }
            Ok(())
        }
        Command::Connector {
            command: ConnectorCommand::Build { dir },
        } => {
            let runtime = crate::runtime::Runtime::new(
                crate::limits::Limits::default(),
                crate::silo::default_cache_dir(),
                crate::capability::ALL,
            )?;
            let (manifest, wasm) = crate::authoring::build(&dir, &runtime, None)?;
            writeln!(
                out,
                "built {} ({} connector, sha256 {}); capabilities: {}\n\
                 register it: connector = \"{}\" in silo.toml",
                wasm.display(),
                manifest.kind,
                manifest.sha256,
                manifest.capabilities.join(", "),
                wasm.display()
            )
            .map_err(io)
        }
        Command::Connector {
            command: ConnectorCommand::Inspect { path, kind },
        } => {
            let wasm = std::fs::read(&path)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            let runtime = crate::runtime::Runtime::new(
                crate::limits::Limits::default(),
                crate::silo::default_cache_dir(),
                crate::capability::ALL,
            )?;
            let found = runtime.inspect(&wasm, kind.map(Into::into))?;
            writeln!(
                out,
                "component {} (sha256 {})",
                path.display(),
                found.digest
            )
            .map_err(io)?;
            let kind = found
                .kind
                .map_or("none (imports no datasource capability)", |k| k.interface());
            writeln!(out, "kind: {kind}\nimports:").map_err(io)?;
            for i in &found.imports {
                writeln!(out, "  {i}").map_err(io)?;
            }
            writeln!(out, "exports:").map_err(io)?;
            for e in &found.exports {
                writeln!(out, "  {e}").map_err(io)?;
            }
            writeln!(out, "ok: the host loads it as a {kind} connector").map_err(io)
        }
        Command::Audit {
            command: AuditCommand::Verify { store },
        } => {
            let cp = store.open(Default::default()).await?;
            let v = crate::control::audit::verify(cp.store()).await?;
            writeln!(
                out,
                "audit log intact: {} records, head {}",
                v.records, v.head
            )
            .map_err(io)
        }
        Command::Demo { db, admin, dir } => {
            let source = match db {
                DemoDb::Files => crate::demo::DemoSource::Files,
                DemoDb::Postgres => crate::demo::DemoSource::Postgres(admin),
            };
            crate::demo::run(&source, dir, &mut out).await
        }
        Command::Fetch {
            target:
                AsUser {
                    config,
                    user,
                    dataset,
                },
            columns,
            limit,
            format,
        } => {
            let silo = Silo::open(&SiloConfig::load(&config)?).await?;
            let spec = FetchSpec {
                dataset,
                columns: (!columns.is_empty()).then_some(columns),
                limit,
            };
            let mut fetch = silo.fetch(&user, &spec).await?;
            let cols = fetch.columns().to_vec();
            match format {
                Format::Table => {
                    let rows = fetch.collect().await?;
                    write_table(&mut out, &cols, &rows).map_err(io)?;
                    writeln!(out, "({} rows)", rows.len()).map_err(io)
                }
                Format::Ndjson => {
                    while let Some(batch) = fetch.next_batch().await? {
                        write_ndjson(&mut out, &cols, &batch).map_err(io)?;
                    }
                    Ok(())
                }
            }
        }
        Command::Datasets {
            command:
                DatasetsCommand::Upload {
                    data_dir,
                    org,
                    dataset,
                    file,
                    partition_by,
                    max_bytes,
                    max_partitions,
                },
        } => {
            use crate::capability::files::{FilesConfig, FilesStore, upload};
            let store = FilesStore::new(&FilesConfig { data_dir, org })?;
            // A progress bar on a terminal, for files worth waiting on.
            let large = std::fs::metadata(&file).is_ok_and(|m| m.len() >= 8 << 20);
            let show = large && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let bar = |done: u64, total: u64| {
                let pct = done * 100 / total.max(1);
                let filled = usize::try_from(pct / 5).unwrap_or(20);
                eprint!(
                    "\r  reading {} [{:<20}] {pct:>3}% ({} / {} MiB)",
                    file.display(),
                    "#".repeat(filled),
                    done >> 20,
                    total >> 20
                );
            };
            let done = upload::upload(
                &store,
                &upload::Upload {
                    dataset: &dataset,
                    file: &file,
                    partition_by: partition_by.as_deref(),
                    max_bytes,
                    max_partitions,
                    progress: show.then_some(&bar as upload::Progress<'_>),
                },
            );
            if show {
                eprintln!();
            }
            let done = done?;
            let columns: Vec<String> = done
                .columns
                .iter()
                .map(|c| format!("{} {}", c.name, silo_types::text::kind_name(c.kind)))
                .collect();
            writeln!(
                out,
                "uploaded {} rows to `{dataset}` ({}), partitions: {}",
                done.rows,
                columns.join(", "),
                done.partitions.join(", ")
            )
            .map_err(io)
        }
        Command::Profile { target } => {
            let payload = profile_as(&target).await?;
            serde_json::to_writer_pretty(&mut out, &payload)
                .map_err(|e| Error::Internal(e.to_string()))?;
            writeln!(out).map_err(io)
        }
        Command::Summarize { target, llm } => {
            let payload = profile_as(&target).await?;
            let summary = crate::metadata::llm::Summarizer::new(llm.config()?)?
                .summarize(&payload)
                .await?;
            writeln!(out, "{}\n({})", summary.summary, summary.source).map_err(io)
        }
        Command::Describe { config, datasource } => {
            let cfg = SiloConfig::load(&config)?;
            let silo = Silo::open(&cfg).await?;
            let names: Vec<String> = match datasource {
                Some(d) => vec![d],
                None => cfg.datasources.keys().cloned().collect(),
            };
            for name in names {
                for d in silo.describe(&name).await?.iter() {
                    writeln!(out, "{name}.{}", d.name).map_err(io)?;
                    for c in &d.columns {
                        let null = if c.nullable { "" } else { " not null" };
                        writeln!(
                            out,
                            "  {} {}{null}",
                            c.name,
                            format!("{:?}", c.kind).to_lowercase()
                        )
                        .map_err(io)?;
                    }
                }
            }
            Ok(())
        }
        Command::Openapi => {
            let doc = crate::api::parts().1;
            let text = doc
                .to_pretty_json()
                .map_err(|e| Error::Internal(format!("OpenAPI document: {e}")))?;
            writeln!(out, "{text}").map_err(io)
        }
        Command::BenchProfile { rows } => crate::bench::profile(rows, &mut out),
        Command::Bench {
            what:
                Some(BenchCommand::Api {
                    admin,
                    connections,
                    seconds,
                    runs,
                    limit,
                    tenants,
                    rows_per_tenant,
                    pool,
                    population,
                    other_population,
                    sqlite_sync,
                }),
            ..
        } => {
            let opts = crate::bench::api::ApiOptions {
                admin,
                connections: connections.clamp(1, 10_000),
                seconds,
                runs,
                limits: limit,
                tenants,
                rows_per_tenant,
                pool,
                population: population.min(1_000_000),
                other_population: other_population.min(1_000_000),
                sqlite_sync,
            };
            crate::bench::api::run(&opts, &mut out).await
        }
        Command::Bench {
            what: Some(BenchCommand::Native { listen, dsn, pool }),
            ..
        } => {
            crate::bench::api::native(&crate::bench::api::NativeOptions { listen, dsn, pool }).await
        }
        Command::Bench {
            what: None,
            db,
            admin,
            rows,
            runs,
            instantiations,
        } => {
            let admin = admin.unwrap_or_else(|| match db {
                crate::bench::Db::Postgres => crate::demo::DEFAULT_ADMIN.to_owned(),
                crate::bench::Db::Mysql => "mysql://root@127.0.0.1:3306/test".to_owned(),
                crate::bench::Db::Mongodb => crate::bench::DEFAULT_MONGO_ADMIN.to_owned(),
                crate::bench::Db::Files => String::new(),
            });
            let opts = crate::bench::BenchOptions {
                db,
                admin,
                rows,
                runs: runs.max(1),
                instantiations: instantiations.max(1),
            };
            crate::bench::run(&opts, &mut out).await
        }
    }
}

/// The payload of a dataset as an embed user of a config sees it.
async fn profile_as(target: &AsUser) -> Result<crate::metadata::Payload> {
    let AsUser {
        config,
        user,
        dataset,
    } = target;
    let silo = Silo::open(&SiloConfig::load(config)?).await?;
    let spec = FetchSpec {
        dataset: dataset.to_owned(),
        columns: None,
        limit: Some(silo.runtime().limits().max_rows),
    };
    let fetch = silo.fetch(user, &spec).await?;
    let policy = silo.privacy(dataset)?.clone();
    let profile = crate::silo::profile(&silo, fetch, dataset, &policy).await?;
    Ok(profile.payload(&policy))
}
