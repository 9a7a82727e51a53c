//! `silo demo`: a sandboxed, tenant-safe fetch end to end. By default it
//! needs no server: it generates two tenants' orders, uploads them split by
//! tenant, and serves them with the files connector. With `--db postgres` it
//! seeds the local Postgres and a read-only role instead. Either way it
//! writes a `silo.toml`, fetches as each embed user and reports what the host
//! enforced. `silo bench` and the tests reuse the database setup here.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use silo_types::{Op, RowFilter, Value};
use tokio_postgres::NoTls;

use crate::config::SiloConfig;
use crate::error::{Error, Result};
use crate::output::{cell_text, write_table};
use crate::silo::{FetchSpec, Silo};

/// The default admin connection: the local server's `postgres` superuser.
pub const DEFAULT_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// The read-only role to create and what it serves.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    /// Schema holding the tables.
    pub schema: &'a str,
    /// Role name (created if absent).
    pub role: &'a str,
    /// Tables the role may `SELECT`.
    pub tables: &'a [&'a str],
    /// Connector for the datasource: a built-in name or a component path.
    pub connector: &'a str,
}

/// A database prepared for Silo: a schema, its tables, a read-only role.
pub struct Prepared {
    /// Directory holding `silo.toml` and the password file.
    pub dir: PathBuf,
    /// Path of the written `silo.toml`.
    pub config_path: PathBuf,
}

/// Connects as the admin, for seeding.
pub async fn admin(conn: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(conn, NoTls).await.map_err(|e| {
        Error::Datasource(format!(
            "cannot connect to Postgres as `{conn}` ({e}); start it, or pass --admin"
        ))
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("admin connection: {e}");
        }
    });
    Ok(client)
}

/// Runs admin SQL, mapping failures to a datasource error.
pub async fn exec(client: &tokio_postgres::Client, sql: &str) -> Result<()> {
    client.batch_execute(sql).await.map_err(|e| {
        let detail = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_owned());
        Error::Datasource(format!("setup failed: {detail}"))
    })
}

/// Creates (or resets) a LOGIN role that may only read `tables` of `schema`,
/// and writes a `silo.toml` for it into `dir` using `connector` (a built-in
/// name or a path), with `body` appended (datasets, users, limits). The password goes to an owner-only file the config names.
pub async fn prepare_reader(
    client: &tokio_postgres::Client,
    admin_conn: &str,
    dir: &Path,
    reader: &Reader<'_>,
    body: &str,
) -> Result<Prepared> {
    let Reader {
        schema,
        role,
        tables,
        connector,
    } = *reader;
    let password = fresh_password();
    exec(
        client,
        &format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role} LOGIN; END IF;
             END $$;
             ALTER ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD '{password}';
             GRANT USAGE ON SCHEMA {schema} TO {role};"
        ),
    )
    .await?;
    for t in tables {
        exec(client, &format!("GRANT SELECT ON {schema}.{t} TO {role}")).await?;
    }
    let cfg: tokio_postgres::Config = admin_conn
        .parse()
        .map_err(|e| Error::Config(format!("admin connection string: {e}")))?;
    let host = cfg
        .get_hosts()
        .first()
        .map_or("127.0.0.1".into(), |h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        });
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let db = cfg.get_dbname().unwrap_or("postgres");
    let section = format!(
        "[datasources.main.postgres]\nhost = \"{host}\"\nport = {port}\ndatabase = \"{db}\"\n\
         user = \"{role}\"\npassword_file = \"reader.password\"\nschema = \"{schema}\"\n"
    );
    write_config(dir, &password, connector, &section, body)
}

/// Creates (or resets) a MySQL/MariaDB user that may only read `tables` of
/// database `reader.schema`, and writes a `silo.toml` for it, as
/// [`prepare_reader`] does for Postgres. `host` and `port` are how Silo will
/// reach the server.
pub async fn prepare_mysql_reader(
    conn: &mut mysql_async::Conn,
    (host, port): (&str, u16),
    dir: &Path,
    reader: &Reader<'_>,
    body: &str,
) -> Result<Prepared> {
    use mysql_async::prelude::Queryable;
    let Reader {
        schema,
        role,
        tables,
        connector,
    } = *reader;
    let password = fresh_password();
    let user = format!("'{role}'@'%'");
    let mut statements = vec![
        format!("DROP USER IF EXISTS {user}"),
        format!("CREATE USER {user} IDENTIFIED BY '{password}'"),
    ];
    statements.extend(
        tables
            .iter()
            .map(|t| format!("GRANT SELECT ON {schema}.{t} TO {user}")),
    );
    for stmt in statements {
        conn.query_drop(stmt)
            .await
            .map_err(|e| Error::Datasource(format!("setup failed: {e}")))?;
    }
    let section = format!(
        "[datasources.main.mysql]\nhost = \"{host}\"\nport = {port}\ndatabase = \"{schema}\"\n\
         user = \"{role}\"\npassword_file = \"reader.password\"\n"
    );
    write_config(dir, &password, connector, &section, body)
}

/// A throwaway password for a reader role the host creates itself.
pub(crate) fn fresh_password() -> String {
    hex::encode(sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        format!("{:?}{}", Instant::now(), std::process::id()),
    )))
}

/// Writes `dir/reader.password` (owner-only) and `dir/silo.toml`: `body`
/// first (it may hold top-level keys, which TOML needs before any table),
/// then datasource `main` with `connector` and its capability `section`.
pub(crate) fn write_config(
    dir: &Path,
    password: &str,
    connector: &str,
    section: &str,
    body: &str,
) -> Result<Prepared> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Config(format!("{}: {e}", dir.display())))?;
    write_private(&dir.join("reader.password"), password)?;
    let text = format!(
        "# Written by silo: a read-only role and the datasets it may serve.\n{body}\n\
         [datasources.main]\nconnector = \"{connector}\"\n\n{section}"
    );
    let config_path = dir.join("silo.toml");
    std::fs::write(&config_path, text)
        .map_err(|e| Error::Config(format!("{}: {e}", config_path.display())))?;
    Ok(Prepared {
        dir: dir.to_path_buf(),
        config_path,
    })
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// A filter in the `column op value` notation of `silo.toml`.
pub fn filter_text(f: &RowFilter) -> String {
    match f {
        RowFilter::AllRows => "all rows".into(),
        RowFilter::NoRows => "no rows".into(),
        RowFilter::AnyOf(any) if any.is_empty() => "no rows".into(),
        RowFilter::AnyOf(any) => any
            .iter()
            .map(|conj| {
                conj.iter()
                    .map(|p| {
                        let lit = |v: &Value| match v {
                            Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
                            other => cell_text(other),
                        };
                        match p.op {
                            Op::IsNull | Op::NotNull => format!("{} {}", p.column, p.op.symbol()),
                            Op::In | Op::NotIn => format!(
                                "{} {} ({})",
                                p.column,
                                p.op.symbol(),
                                p.values.iter().map(lit).collect::<Vec<_>>().join(", ")
                            ),
                            op => format!(
                                "{} {} {}",
                                p.column,
                                op.symbol(),
                                p.values.first().map(lit).unwrap_or_default()
                            ),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" AND ")
            })
            .collect::<Vec<_>>()
            .join("  OR  "),
    }
}

const DEMO_SCHEMA: &str = "silo_demo";
const DEMO_ROLE: &str = "silo_demo_reader";
/// Rows the demo seeds (half per tenant).
const DEMO_ROWS: u32 = 4000;

/// Where the demo's data lives.
#[derive(Debug, Clone)]
pub enum DemoSource {
    /// The embedded default: a generated CSV uploaded under the demo
    /// directory, served by the files connector. No server needed.
    Files,
    /// The local Postgres, seeded through this admin connection.
    Postgres(String),
}

/// Runs the demo, writing its report to `out`.
pub async fn run(source: &DemoSource, dir: Option<PathBuf>, out: &mut impl Write) -> Result<()> {
    let io = |e: std::io::Error| Error::Internal(e.to_string());
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join("silo-demo"));
    let (config_path, kind) = match source {
        DemoSource::Files => (seed_files(&dir)?, "files"),
        DemoSource::Postgres(admin_conn) => (seed_postgres(admin_conn, &dir).await?, "postgres"),
    };
    let config = SiloConfig::load(&config_path)?;
    let silo = Silo::open(&config).await?;
    match source {
        DemoSource::Files => {
            writeln!(
                out,
                "Silo demo: a sandboxed, tenant-safe fetch from uploaded files (no server)\n"
            )
            .map_err(io)?;
            writeln!(
                out,
                "Generated orders.csv ({DEMO_ROWS} rows, tenants acme and globex) and uploaded it,\n\
                 split by tenant into owner-only directories under {}.\nConfig: {}\n",
                dir.join("data").display(),
                config_path.display()
            )
            .map_err(io)?;
        }
        DemoSource::Postgres(_) => {
            writeln!(
                out,
                "Silo demo: a sandboxed, tenant-safe fetch from Postgres\n"
            )
            .map_err(io)?;
            writeln!(
                out,
                "Seeded {DEMO_SCHEMA}.orders ({DEMO_ROWS} rows, tenants acme and globex) and a role\n\
                 {DEMO_ROLE} that may only SELECT it. Config: {}\n",
                config_path.display()
            )
            .map_err(io)?;
        }
    }

    let described = silo.describe("main").await?;
    for d in described.iter() {
        let cols: Vec<String> = d
            .columns
            .iter()
            .map(|c| format!("{} {:?}", c.name, c.kind).to_lowercase())
            .collect();
        writeln!(
            out,
            "The {kind} connector describes `{}`: {}",
            d.name,
            cols.join(", ")
        )
        .map_err(io)?;
    }
    writeln!(out).map_err(io)?;

    for (user, tenant) in [("alice", "acme"), ("bob", "globex")] {
        let started = Instant::now();
        let fetch = silo
            .fetch(
                user,
                &FetchSpec {
                    dataset: "orders".into(),
                    ..FetchSpec::default()
                },
            )
            .await?;
        let filter = filter_text(fetch.filter());
        let columns = fetch.columns().to_vec();
        let rows = fetch.collect().await?;
        let elapsed = started.elapsed();
        let tenant_idx = columns.iter().position(|c| c == "tenant");
        let foreign = rows
            .iter()
            .filter(|r| tenant_idx.and_then(|i| r.get(i)) != Some(&Value::Text(tenant.into())))
            .count();
        writeln!(
            out,
            "Embed user {user} (tenant {tenant}): filter enforced by the host: {filter}"
        )
        .map_err(io)?;
        writeln!(
            out,
            "  {} rows in {:.1} ms; rows of another tenant: {foreign}{}",
            rows.len(),
            elapsed.as_secs_f64() * 1000.0,
            if foreign == 0 {
                "  (isolation holds)"
            } else {
                "  (ISOLATION BROKEN)"
            }
        )
        .map_err(io)?;
        let mut table = Vec::new();
        write_table(&mut table, &columns, &rows[..rows.len().min(3)]).map_err(io)?;
        for line in String::from_utf8_lossy(&table).lines() {
            writeln!(out, "  {line}").map_err(io)?;
        }
        writeln!(out).map_err(io)?;
        if foreign != 0 {
            return Err(Error::Policy(format!(
                "{user} saw {foreign} rows of another tenant"
            )));
        }
    }
    writeln!(out, "How it was enforced:").map_err(io)?;
    let how: &[&str] = match source {
        DemoSource::Files => &[
            "  - the connector ran in a fresh wasmtime instance with no sockets, env or clock;",
            "  - the host preopened, read-only, only the partition directories the user's filter",
            "    admits (alice: acme/, bob: globex/); the other tenant's files did not exist for it;",
            "  - the host re-checked every returned row against the filter before releasing it.",
        ],
        DemoSource::Postgres(_) => &[
            "  - the connector ran in a fresh wasmtime instance with no files, sockets, env or clock;",
            "    it held a handle to the datasource, never its password;",
            "  - the host rewrote its SQL so `orders` was already filtered for the user (bind parameters),",
            "    in a READ ONLY transaction; `salaries` is not governed and cannot be read at all;",
            "  - the host re-checked every returned row against the filter before releasing it.",
        ],
    };
    for line in how {
        writeln!(out, "{line}").map_err(io)?;
    }
    writeln!(out, "  Limits in force: {}\n", silo.runtime().limits()).map_err(io)?;
    writeln!(out, "Go on:").map_err(io)?;
    let cfg = config_path.display();
    // The binary as it was invoked, so the hints work without `silo` on PATH.
    let silo = std::env::args()
        .next()
        .filter(|a| a.contains('/'))
        .unwrap_or_else(|| "silo".into());
    writeln!(
        out,
        "  {silo} fetch --config {cfg} --user bob --dataset orders --limit 5"
    )
    .map_err(io)?;
    writeln!(out, "  {silo} fetch --config {cfg} --user alice --dataset orders --format ndjson --columns id,amount").map_err(io)?;
    writeln!(out, "  {silo} describe --config {cfg}").map_err(io)?;
    writeln!(out, "  {silo} datasets upload --data-dir {} --org demo --dataset mine --file your.csv --partition-by tenant", dir.join("data").display()).map_err(io)?;
    writeln!(
        out,
        "    (then add [datasets.mine] with datasource = \"main\" and a row_filter to {cfg})"
    )
    .map_err(io)?;
    writeln!(out, "  Point a copy of that silo.toml at your own database (Postgres, MySQL, MongoDB; a read-only user),").map_err(io)?;
    writeln!(out, "  add datasets and users.").map_err(io)?;
    Ok(())
}

/// Seeds the Postgres demo schema and its reader; returns the config path.
async fn seed_postgres(admin_conn: &str, dir: &Path) -> Result<PathBuf> {
    let client = admin(admin_conn).await?;
    exec(
        &client,
        &format!(
            "DROP SCHEMA IF EXISTS {DEMO_SCHEMA} CASCADE;
             CREATE SCHEMA {DEMO_SCHEMA};
             CREATE TABLE {DEMO_SCHEMA}.orders (
               id int PRIMARY KEY, tenant text NOT NULL, customer text NOT NULL,
               amount numeric(10,2) NOT NULL, ordered_on date NOT NULL);
             INSERT INTO {DEMO_SCHEMA}.orders
               SELECT i, CASE WHEN i % 2 = 0 THEN 'acme' ELSE 'globex' END,
                      'customer-' || (i % 97), round((i * 7.31)::numeric % 1000, 2),
                      date '2026-01-01' + (i % 300)
               FROM generate_series(1, {DEMO_ROWS}) AS i;
             CREATE TABLE {DEMO_SCHEMA}.salaries (employee text, salary int);
             INSERT INTO {DEMO_SCHEMA}.salaries VALUES ('ceo', 1000000);"
        ),
    )
    .await?;
    let body = DEMO_USERS;
    let prepared = prepare_reader(
        &client,
        admin_conn,
        dir,
        &Reader {
            schema: DEMO_SCHEMA,
            role: DEMO_ROLE,
            tables: &["orders"],
            connector: "postgres",
        },
        body,
    )
    .await?;
    Ok(prepared.config_path)
}

/// Generates the demo orders as CSV, uploads them split by tenant, and
/// writes a config serving them with the files connector.
fn seed_files(dir: &Path) -> Result<PathBuf> {
    use crate::capability::files::{FilesConfig, FilesStore, upload};
    let io = |e: std::io::Error| Error::Internal(format!("{}: {e}", dir.display()));
    let _ = std::fs::remove_dir_all(dir.join("data"));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut csv = String::from("id,tenant,customer,amount,ordered_on\n");
    for i in 1..=DEMO_ROWS {
        let tenant = if i % 2 == 0 { "acme" } else { "globex" };
        let cents = (u64::from(i) * 731) % 100_000;
        let day = silo_types::time::format_date(
            i32::try_from(silo_types::time::days_from_civil(2026, 1, 1)).unwrap_or_default()
                + i32::try_from(i % 300).unwrap_or_default(),
        );
        csv.push_str(&format!(
            "{i},{tenant},customer-{},{}.{:02},{day}\n",
            i % 97,
            cents / 100,
            cents % 100
        ));
    }
    let file = dir.join("orders.csv");
    std::fs::write(&file, csv).map_err(io)?;
    let config = FilesConfig {
        data_dir: dir.join("data"),
        org: "demo".into(),
    };
    upload::upload(
        &FilesStore::new(&config)?,
        &upload::Upload {
            dataset: "orders",
            file: &file,
            partition_by: Some("tenant"),
            max_bytes: upload::DEFAULT_MAX_BYTES,
            progress: None,
        },
    )?;
    let text = format!(
        "# Written by silo demo: uploads served by the files connector.\n{DEMO_USERS}\n\
         [datasources.main]\nconnector = \"files\"\n\n[datasources.main.files]\n\
         data_dir = \"data\"\norg = \"demo\"\n"
    );
    let path = dir.join("silo.toml");
    std::fs::write(&path, text).map_err(io)?;
    Ok(path)
}

/// The demo's dataset and embed users, for either source.
const DEMO_USERS: &str = "[datasets.orders]\ndatasource = \"main\"\nrow_filter = [\"tenant = {{user.tenant}}\"]\n\n\
                [users.alice]\nattributes = { tenant = \"acme\" }\n\n\
                [users.bob]\nattributes = { tenant = \"globex\" }\n";
