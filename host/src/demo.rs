//! `silo demo`: a sandboxed, tenant-safe fetch end to end. By default it
//! needs no server: it generates two tenants' orders, uploads them split by
//! tenant, and serves them with the files connector. With `--db postgres` it
//! seeds the local Postgres and a read-only role instead. Either way it
//! writes a `silo.toml`, fetches as each embed user and reports what the host
//! enforced. `silo bench` and the tests reuse the database setup here.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use silo_types::Value;
use tokio_postgres::NoTls;

use crate::config::SiloConfig;
use crate::error::{Error, Result};
use crate::output::write_table;
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

pub use silo_core::display::filter_text;

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
        DemoSource::Files => return run_embedded(&dir, out).await,
        DemoSource::Postgres(admin_conn) => (seed_postgres(admin_conn, &dir).await?, "postgres"),
    };
    let config = SiloConfig::load(&config_path)?;
    let silo = Silo::open(&config).await?;
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
        report_user(
            out,
            user,
            tenant,
            "from silo.toml",
            &filter,
            &columns,
            &rows,
            started.elapsed(),
        )?;
        writeln!(out).map_err(io)?;
    }
    writeln!(out, "How it was enforced:").map_err(io)?;
    let how: &[&str] = &[
        "  - the connector ran in a fresh wasmtime instance with no files, sockets, env or clock;",
        "    it held a handle to the datasource, never its password;",
        "  - the host rewrote its SQL so `orders` was already filtered for the user (bind parameters),",
        "    in a READ ONLY transaction; `salaries` is not governed and cannot be read at all;",
        "  - the host re-checked every returned row against the filter before releasing it.",
    ];
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

/// Generates the demo orders (two tenants) as `<dir>/orders.csv`.
fn write_demo_csv(dir: &Path) -> Result<PathBuf> {
    let io = |e: std::io::Error| Error::Internal(format!("{}: {e}", dir.display()));
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
    Ok(file)
}

/// The embedded default: a control plane in `<dir>/control` (SQLite, a
/// generated master key), one organization, an upload datasource, the
/// generated orders uploaded split by tenant, two groups with different
/// row filters and columns, an embed user in each; then each user's session
/// fetches, and gets a metadata summary.
async fn run_embedded(dir: &Path, out: &mut impl Write) -> Result<()> {
    use crate::control::model::{DatasourceKind, GroupGrant, Permission};
    use crate::control::{
        DatasetInput, DatasourceInput, EmbedUserInput, GroupInput, Principal, SessionInput,
    };
    let io = |e: std::io::Error| Error::Internal(e.to_string());
    let control = dir.join("control");
    let _ = std::fs::remove_dir_all(&control);
    let csv = write_demo_csv(dir)?;
    std::fs::create_dir_all(&control).map_err(io)?;
    let key_file = control.join("master.key");
    crate::control::crypto::MasterKey::generate()?.write_new_file(&key_file)?;
    let args = crate::server::StoreArgs {
        data_dir: control.clone(),
        store: None,
        master_key_file: Some(key_file),
        sqlite_sync: None,
    };
    let cp = args.open(Default::default()).await?;
    let org = cp.create_org(&Principal::Cli, "demo").await?;
    let p = Principal::Org {
        org: org.id.clone(),
        key: None,
    };
    cp.create_datasource(
        &p,
        DatasourceInput {
            name: "uploads".into(),
            kind: DatasourceKind::Files,
            settings: serde_json::json!({}),
            password: None,
            accept_write_privileges: false,
            connector: None,
        },
    )
    .await?;
    let orders = cp
        .create_dataset(
            &p,
            DatasetInput {
                datasource: "uploads".into(),
                name: "orders".into(),
            },
        )
        .await?;
    let uploaded = cp
        .upload(&p, &orders.id, csv.clone(), Some("tenant".into()))
        .await?;
    writeln!(
        out,
        "Silo demo: a sandboxed, tenant-safe fetch from uploaded files (no server)\n"
    )
    .map_err(io)?;
    writeln!(
        out,
        "Embedded control plane: {} (SQLite, credentials sealed under {}).\n\
         Organization `demo`; generated {} ({} rows, tenants acme and globex) and uploaded it,\n\
         split by tenant into owner-only directories: {}.\n",
        control.join("silo.db").display(),
        control.join("master.key").display(),
        csv.display(),
        uploaded.rows,
        uploaded.partitions.join(", ")
    )
    .map_err(io)?;
    let grant = |rule: &str, columns: Option<&[&str]>| GroupGrant {
        dataset_id: orders.id.clone(),
        permission: Permission::Read,
        row_filter: vec![rule.to_owned()],
        all_rows: false,
        columns: columns.map(|c| c.iter().map(|x| (*x).to_owned()).collect()),
    };
    let groups = [
        ("account-managers", "tenant = {{user.tenant}}", None),
        (
            "globex-auditors",
            "tenant = 'globex'",
            Some(&["id", "tenant", "amount", "ordered_on"][..]),
        ),
    ];
    for (name, rule, columns) in groups {
        cp.put_group(
            &p,
            name,
            GroupInput {
                grants: vec![grant(rule, columns)],
            },
        )
        .await?;
        let cols = columns.map_or("all columns".to_owned(), |c| c.join(", "));
        writeln!(out, "Group {name}: orders where {rule}; {cols}").map_err(io)?;
    }
    writeln!(out).map_err(io)?;
    let users = [
        ("alice", "acme", "account-managers"),
        ("bob", "globex", "globex-auditors"),
    ];
    for (i, (user, tenant, group)) in users.into_iter().enumerate() {
        let attributes = if group == "account-managers" {
            [("tenant".to_owned(), serde_json::json!(tenant))].into()
        } else {
            Default::default()
        };
        cp.put_embed_user(
            &p,
            user,
            EmbedUserInput {
                attributes,
                groups: vec![group.to_owned()],
            },
        )
        .await?;
        // The path a browser takes: a session token, verified like any other.
        let token = cp
            .put_session(
                &p,
                SessionInput {
                    id: None,
                    embed_user: user.to_owned(),
                    datasets: None,
                    parameters: Default::default(),
                    ttl_seconds: None,
                },
            )
            .await?
            .token;
        let session = cp.authenticate_session(&token).await?;
        if i == 0 {
            let cols: Vec<String> = cp
                .embed_describe(&session, &orders.id)
                .await?
                .iter()
                .map(|c| format!("{} {}", c.name, c.kind))
                .collect();
            writeln!(
                out,
                "The files connector describes `orders`: {}\n",
                cols.join(", ")
            )
            .map_err(io)?;
        }
        let started = Instant::now();
        let run = cp.embed_fetch(&session, &orders.id, None, None).await?;
        let filter = filter_text(run.fetch.filter());
        let columns = run.fetch.columns().to_vec();
        let crate::control::EmbedFetch { mut fetch, audit } = run;
        let mut rows = Vec::new();
        while let Some(batch) = fetch.next_batch().await? {
            rows.extend(batch);
        }
        audit.commit(fetch.rows(), fetch.bytes(), "ok").await?;
        let elapsed = started.elapsed();
        report_user(out, user, tenant, group, &filter, &columns, &rows, elapsed)?;
        let summary = cp.embed_summary(&session, &orders.id).await?;
        writeln!(
            out,
            "  Metadata summary for {user} ({}, never rows):",
            summary.source
        )
        .map_err(io)?;
        for line in summary.summary.lines() {
            writeln!(out, "    {line}").map_err(io)?;
        }
        writeln!(out).map_err(io)?;
    }
    let chain = crate::control::audit::verify(cp.store()).await?;
    writeln!(out, "How it was enforced:").map_err(io)?;
    for line in [
        "  - the embed users' sessions are signed tokens; the host took the organization, user and",
        "    groups from the verified session only;",
        "  - each connector ran in a fresh wasmtime instance with no sockets, env or clock, and the",
        "    host preopened, read-only, only the partition directories the user's filter admits",
        "    (alice: acme/ as stored; bob: a host-written view of globex/ without the column his",
        "    group hides); the other tenant's files did not exist for it;",
        "  - the host re-checked every returned row against the filter before releasing it;",
        "  - the summaries were written from metadata (counts, rounded statistics), never rows.",
    ] {
        writeln!(out, "{line}").map_err(io)?;
    }
    writeln!(out, "  Limits in force: {}", cp.limits()).map_err(io)?;
    writeln!(
        out,
        "  Audit log: {} records, hash chain intact.\n",
        chain.records
    )
    .map_err(io)?;
    let silo = std::env::args()
        .next()
        .filter(|a| a.contains('/'))
        .unwrap_or_else(|| "silo".into());
    let data = control.display();
    writeln!(out, "Go on:").map_err(io)?;
    writeln!(
        out,
        "  {silo} api-keys create --data-dir {data} --org demo   # a key for your backend"
    )
    .map_err(io)?;
    writeln!(
        out,
        "  {silo} serve --data-dir {data}                          # the REST API on 127.0.0.1:8080"
    )
    .map_err(io)?;
    writeln!(
        out,
        "  then POST /v1/sessions {{\"embed_user\": \"alice\"}} with that key, and POST"
    )
    .map_err(io)?;
    writeln!(
        out,
        "  /v1/embed/datasets/{}/fetch with the session token (README: Serving the API).",
        orders.id
    )
    .map_err(io)?;
    writeln!(
        out,
        "  Add a real database: POST /v1/datasources with a read-only user (README; one on this \
         machine needs `serve --allow-private-network`), or"
    )
    .map_err(io)?;
    writeln!(
        out,
        "  {silo} demo --db postgres for the same demo on the local Postgres."
    )
    .map_err(io)?;
    Ok(())
}

/// One user's lines of the report: the filter, the counts, a few rows.
#[allow(clippy::too_many_arguments)]
fn report_user(
    out: &mut impl Write,
    user: &str,
    tenant: &str,
    group: &str,
    filter: &str,
    columns: &[String],
    rows: &[Vec<Value>],
    elapsed: std::time::Duration,
) -> Result<()> {
    let io = |e: std::io::Error| Error::Internal(e.to_string());
    let tenant_idx = columns.iter().position(|c| c == "tenant");
    let foreign = rows
        .iter()
        .filter(|r| tenant_idx.and_then(|i| r.get(i)) != Some(&Value::Text(tenant.into())))
        .count();
    writeln!(
        out,
        "Embed user {user} (tenant {tenant}, group {group}): filter enforced by the host: {filter}"
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
    write_table(&mut table, columns, &rows[..rows.len().min(3)]).map_err(io)?;
    for line in String::from_utf8_lossy(&table).lines() {
        writeln!(out, "  {line}").map_err(io)?;
    }
    if foreign != 0 {
        return Err(Error::Policy(format!(
            "{user} saw {foreign} rows of another tenant"
        )));
    }
    Ok(())
}

/// The demo's dataset and embed users, for either source.
const DEMO_USERS: &str = "[datasets.orders]\ndatasource = \"main\"\nrow_filter = [\"tenant = {{user.tenant}}\"]\n\n\
                [users.alice]\nattributes = { tenant = \"acme\" }\n\n\
                [users.bob]\nattributes = { tenant = \"globex\" }\n";
