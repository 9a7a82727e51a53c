//! `silo bench`: the numbers in BENCHMARKS.md. Each run seeds a table in the
//! local database, then times the sandboxed fetch and a plain driver loop
//! alternately in one process, so both share the same conditions.
pub mod api;

use std::io::Write;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use tokio_postgres::NoTls;

use crate::config::SiloConfig;
use crate::demo::{Prepared, Reader, admin, exec, prepare_mysql_reader, prepare_reader};
use crate::error::{Error, Result};
use crate::silo::{FetchSpec, Silo};

const SCHEMA: &str = "silo_bench";
const ROLE: &str = "silo_bench_reader";
/// The statement the plain loops run: the same shape the connector pushes down.
const PLAIN_SQL: &str = "SELECT id, tenant, amount, label FROM silo_bench.facts WHERE tenant = ";

/// Which database to measure against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Db {
    /// Postgres, plain loop on tokio-postgres.
    Postgres,
    /// MySQL / MariaDB, plain loop on mysql_async.
    Mysql,
    /// MongoDB, plain loop on the mongodb crate.
    Mongodb,
    /// Uploaded files: a partition preopened as stored, and the same
    /// partition served as a host view, against a plain CSV read.
    Files,
}

/// The admin the test harness provisions on the local MongoDB-wire server.
pub const DEFAULT_MONGO_ADMIN: &str =
    "mongodb://silo_admin:silo-admin-test@127.0.0.1:27017/?authSource=admin";

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Database to seed and fetch from.
    pub db: Db,
    /// Admin connection: a Postgres connection string or a `mysql://` URL.
    pub admin: String,
    /// Rows of the fetched tenant.
    pub rows: u32,
    /// Timed repetitions of each fetch.
    pub runs: usize,
    /// Instantiations to time.
    pub instantiations: usize,
}

/// The plain driver loop the sandboxed fetch is compared with.
enum Plain {
    Postgres(tokio_postgres::Client),
    Mysql(mysql_async::Pool),
    Mongodb(mongodb::Collection<bson::Document>),
}

impl Plain {
    /// Fetches tenant `a`'s rows, decoding each into owned Rust values.
    async fn fetch(&self) -> Result<u64> {
        let mut n = 0u64;
        match self {
            Plain::Postgres(client) => {
                let db = |e: tokio_postgres::Error| Error::Datasource(e.to_string());
                let stmt = client
                    .prepare(&format!("{PLAIN_SQL}$1"))
                    .await
                    .map_err(db)?;
                let stream = client.query_raw(&stmt, [&"a"]).await.map_err(db)?;
                futures_util::pin_mut!(stream);
                while let Some(row) = stream.next().await {
                    let row = row.map_err(db)?;
                    let decoded: (i64, String, f64, String) = (
                        row.try_get(0).map_err(db)?,
                        row.try_get(1).map_err(db)?,
                        row.try_get(2).map_err(db)?,
                        row.try_get(3).map_err(db)?,
                    );
                    std::hint::black_box(decoded);
                    n += 1;
                }
            }
            Plain::Mysql(pool) => {
                let db = |e: mysql_async::Error| Error::Datasource(e.to_string());
                let mut conn = pool.get_conn().await.map_err(db)?;
                let mut result = conn
                    .exec_iter(format!("{PLAIN_SQL}?"), ("a",))
                    .await
                    .map_err(db)?;
                while let Some(row) = result.next().await.map_err(db)? {
                    let decoded: (i64, String, f64, String) = mysql_async::from_row_opt(row)
                        .map_err(|e| Error::Datasource(e.to_string()))?;
                    std::hint::black_box(decoded);
                    n += 1;
                }
            }
            Plain::Mongodb(facts) => {
                let db = |e: mongodb::error::Error| Error::Datasource(e.to_string());
                let field = |e: bson::error::Error| Error::Datasource(e.to_string());
                // The query Silo sends for tenant `a` (with its array guard),
                // so the comparison isolates Silo's own cost.
                let query = silo_types::RowFilter::AnyOf(vec![vec![silo_types::Predicate {
                    column: "tenant".into(),
                    op: silo_types::Op::Eq,
                    values: vec![silo_types::Value::Text("a".into())],
                }]])
                .to_mongo_query()
                .map_err(Error::Internal)?;
                let query = match bson::Bson::try_from(query) {
                    Ok(bson::Bson::Document(d)) => d,
                    _ => return Err(Error::Internal("tenant filter is not a document".into())),
                };
                let mut cursor = facts
                    .find(query)
                    .projection(
                        bson::doc! { "_id": 0, "id": 1, "tenant": 1, "amount": 1, "label": 1 },
                    )
                    .await
                    .map_err(db)?;
                while cursor.advance().await.map_err(db)? {
                    let d = cursor.current();
                    let decoded: (i64, String, f64, String) = (
                        d.get_i64("id").map_err(field)?,
                        d.get_str("tenant").map_err(field)?.to_owned(),
                        d.get_f64("amount").map_err(field)?,
                        d.get_str("label").map_err(field)?.to_owned(),
                    );
                    std::hint::black_box(decoded);
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

/// Runs the benchmarks and prints a report.
pub async fn run(opts: &BenchOptions, out: &mut impl Write) -> Result<()> {
    if opts.db == Db::Files {
        return run_files(opts, out).await;
    }
    let rows = opts.rows;
    let dir = std::env::temp_dir().join(format!("silo-bench-{:?}", opts.db).to_lowercase());
    // The fetch must not hit the statement or connector-call time limit on
    // a slow server (SecantusDB answers a 1 M-document `find` in about 30 s).
    let body = format!(
        "[limits]\nmax_rows = {}\nstatement_timeout_ms = 600000\ntimeout_ms = 600000\nfetch_timeout_ms = 600000\n\n[datasets.facts]\ndatasource = \"main\"\nrow_filter = [\"tenant = {{{{user.tenant}}}}\"]\n\n\
         [users.u]\nattributes = {{ tenant = \"a\" }}\n",
        u64::from(rows) + 1
    );
    writeln!(
        out,
        "seeding {rows} rows x 4 columns (plus 1000 rows of another tenant)..."
    )
    .map_err(io)?;
    let (prepared, plain, builtin, driver) = match opts.db {
        Db::Postgres => {
            let (p, c) = seed_postgres(opts, &dir, &body).await?;
            (p, c, crate::builtin::POSTGRES, "tokio-postgres")
        }
        Db::Mysql => {
            let (p, c) = seed_mysql(opts, &dir, &body).await?;
            (p, c, crate::builtin::MYSQL, "mysql_async")
        }
        Db::Mongodb => {
            let (p, c) = seed_mongodb(opts, &dir, &body).await?;
            (p, c, crate::builtin::MONGODB, "mongodb")
        }
        Db::Files => return Err(Error::Internal("files are measured by run_files".into())),
    };
    let kind = match opts.db {
        Db::Mongodb => crate::capability::Kind::Document,
        _ => crate::capability::Kind::Sql,
    };
    let silo = Silo::open(&SiloConfig::load(&prepared.config_path)?).await?;
    let spec = facts_spec();

    let (mut sandboxed, mut baseline) = (Vec::new(), Vec::new());
    let (mut sandboxed_cpu, mut baseline_cpu) = (Vec::new(), Vec::new());
    // One warm-up each, then alternate, swapping which goes first every run,
    // so drift and the database's caches favour neither.
    for run in 0..=opts.runs {
        let (mut s, mut b) = (Duration::ZERO, Duration::ZERO);
        let (mut s_cpu, mut b_cpu) = (None, None);
        let (mut n, mut m) = (0, 0);
        for sandboxed_turn in [run % 2 == 0, run % 2 == 1] {
            let (t, cpu) = (Instant::now(), process_cpu());
            if sandboxed_turn {
                n = sandboxed_fetch(&silo, &spec).await?;
                s = t.elapsed();
                s_cpu = cpu_since(cpu);
            } else {
                m = plain.fetch().await?;
                b = t.elapsed();
                b_cpu = cpu_since(cpu);
            }
        }
        if n != u64::from(rows) || m != u64::from(rows) {
            return Err(Error::Internal(format!(
                "expected {rows} rows, sandboxed {n}, plain {m}"
            )));
        }
        if run > 0 {
            sandboxed.push(s);
            baseline.push(b);
            sandboxed_cpu.extend(s_cpu);
            baseline_cpu.extend(b_cpu);
        }
    }
    let (s, b) = (median(&mut sandboxed), median(&mut baseline));
    writeln!(
        out,
        "fetch {rows} rows x 4 columns from {:?} (median of {} runs):",
        opts.db, opts.runs
    )
    .map_err(io)?;
    writeln!(out, "  plain {driver} loop : {:>8.1} ms", ms(b)).map_err(io)?;
    writeln!(out, "  sandboxed silo fetch : {:>8.1} ms", ms(s)).map_err(io)?;
    writeln!(
        out,
        "  ratio                : {:>8.3}x  (target <= 1.15x)",
        s.as_secs_f64() / b.as_secs_f64()
    )
    .map_err(io)?;
    if !sandboxed_cpu.is_empty() && !baseline_cpu.is_empty() {
        let (s, b) = (median(&mut sandboxed_cpu), median(&mut baseline_cpu));
        writeln!(
            out,
            "  this process's CPU   : plain {:.1} ms, sandboxed {:.1} ms ({:.3}x; the database's own CPU is not counted)",
            ms(b),
            ms(s),
            s.as_secs_f64() / b.as_secs_f64()
        )
        .map_err(io)?;
    }

    let loaded = silo.runtime().load(builtin, kind)?;
    let mut times = Vec::with_capacity(opts.instantiations);
    for _ in 0..opts.instantiations {
        let t = Instant::now();
        let instance = silo.runtime().instantiate(&loaded, "bench", None).await?;
        times.push(t.elapsed());
        drop(instance);
    }
    times.sort();
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    writeln!(
        out,
        "instantiate the connector (store + instance, pooling), {} runs:",
        opts.instantiations
    )
    .map_err(io)?;
    writeln!(
        out,
        "  p50 {:.1} us   p99 {:.1} us   (targets 10 us / 50 us)",
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6
    )
    .map_err(io)?;
    Ok(())
}

async fn seed_postgres(
    opts: &BenchOptions,
    dir: &std::path::Path,
    body: &str,
) -> Result<(Prepared, Plain)> {
    let client = admin(&opts.admin).await?;
    let rows = opts.rows;
    exec(
        &client,
        &format!(
            "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};
             CREATE TABLE {SCHEMA}.facts (id bigint, tenant text, amount float8, label text);
             INSERT INTO {SCHEMA}.facts SELECT i, 'a', i * 0.5, 'label-' || (i % 1000) FROM generate_series(1, {rows}) i;
             INSERT INTO {SCHEMA}.facts SELECT i, 'b', i * 0.5, 'label-' || (i % 1000) FROM generate_series(1, 1000) i;"
        ),
    )
    .await?;
    // VACUUM cannot share a multi-statement batch (an implicit transaction).
    exec(&client, &format!("VACUUM ANALYZE {SCHEMA}.facts")).await?;
    let reader = Reader {
        schema: SCHEMA,
        role: ROLE,
        tables: &["facts"],
        connector: "postgres",
    };
    let prepared = prepare_reader(&client, &opts.admin, dir, &reader, body).await?;
    // Same role, same statement shape, same decoding into owned values.
    let (_, conn_str) = reader_login(&opts.admin, &prepared, ROLE)?;
    let (plain, conn) = tokio_postgres::connect(&conn_str, NoTls)
        .await
        .map_err(|e| Error::Datasource(e.to_string()))?;
    tokio::spawn(conn);
    Ok((prepared, Plain::Postgres(plain)))
}

async fn seed_mysql(
    opts: &BenchOptions,
    dir: &std::path::Path,
    body: &str,
) -> Result<(Prepared, Plain)> {
    let db = |e: mysql_async::Error| Error::Datasource(format!("setup failed: {e}"));
    let admin_opts = mysql_async::Opts::from_url(&opts.admin)
        .map_err(|e| Error::Config(format!("admin URL: {e}")))?;
    let (host, port) = (
        admin_opts.ip_or_hostname().to_owned(),
        admin_opts.tcp_port(),
    );
    let mut conn = mysql_async::Conn::new(admin_opts).await.map_err(db)?;
    let rows = opts.rows;
    for stmt in [
        format!("DROP DATABASE IF EXISTS {SCHEMA}"),
        format!("CREATE DATABASE {SCHEMA}"),
        format!(
            "CREATE TABLE {SCHEMA}.facts (id bigint, tenant varchar(8), amount double, label varchar(16))"
        ),
        // MariaDB's sequence engine provides seq_1_to_N.
        format!(
            "INSERT INTO {SCHEMA}.facts SELECT seq, 'a', seq * 0.5, CONCAT('label-', seq % 1000) FROM seq_1_to_{rows}"
        ),
        format!(
            "INSERT INTO {SCHEMA}.facts SELECT seq, 'b', seq * 0.5, CONCAT('label-', seq % 1000) FROM seq_1_to_1000"
        ),
        format!("ANALYZE TABLE {SCHEMA}.facts"),
    ] {
        conn.query_drop(stmt).await.map_err(db)?;
    }
    let reader = Reader {
        schema: SCHEMA,
        role: ROLE,
        tables: &["facts"],
        connector: "mysql",
    };
    let prepared = prepare_mysql_reader(&mut conn, (&host, port), dir, &reader, body).await?;
    let password = std::fs::read_to_string(prepared.dir.join("reader.password"))
        .map_err(|e| Error::Internal(e.to_string()))?;
    let plain_opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(ROLE))
        .pass(Some(password.trim()))
        .db_name(Some(SCHEMA));
    Ok((prepared, Plain::Mysql(mysql_async::Pool::new(plain_opts))))
}

async fn seed_mongodb(
    opts: &BenchOptions,
    dir: &std::path::Path,
    body: &str,
) -> Result<(Prepared, Plain)> {
    use bson::doc;
    let db = |e: mongodb::error::Error| Error::Datasource(format!("setup failed: {e}"));
    let admin = mongodb::Client::with_uri_str(&opts.admin)
        .await
        .map_err(db)?;
    let database = admin.database(SCHEMA);
    let facts = database.collection::<bson::Document>("facts");
    // Seeding a million documents takes minutes on a small server: keep an
    // earlier run's, when it holds exactly what this run would write.
    let expected = u64::from(opts.rows) + 1000;
    let seeded = facts
        .count_documents(doc! { "tenant": "a" })
        .await
        .map_err(db)?
        == u64::from(opts.rows)
        && facts.count_documents(doc! {}).await.map_err(db)? == expected;
    if !seeded {
        database.drop().await.map_err(db)?;
        seed_facts(&facts, opts.rows).await.map_err(db)?;
    }
    let password = crate::demo::fresh_password();
    let _ = database.run_command(doc! { "dropUser": ROLE }).await;
    database
        .run_command(doc! { "createUser": ROLE, "pwd": &password, "roles": [{ "role": "read", "db": SCHEMA }] })
        .await
        .map_err(db)?;
    let options = mongodb::options::ClientOptions::parse(&opts.admin)
        .await
        .map_err(db)?;
    let (host, port) = match options.hosts.first() {
        Some(mongodb::options::ServerAddress::Tcp { host, port }) => {
            (host.clone(), port.unwrap_or(27017))
        }
        _ => return Err(Error::Config("the admin URL names no TCP host".into())),
    };
    let section = format!(
        "[datasources.main.mongodb]\nhost = {host:?}\nport = {port}\ndatabase = \"{SCHEMA}\"\n\
         user = \"{ROLE}\"\npassword_file = \"reader.password\"\n"
    );
    let prepared = crate::demo::write_config(dir, &password, "mongodb", &section, body)?;
    let reader = mongodb::Client::with_uri_str(format!(
        "mongodb://{ROLE}:{password}@{host}:{port}/?authSource={SCHEMA}"
    ))
    .await
    .map_err(db)?;
    Ok((
        prepared,
        Plain::Mongodb(reader.database(SCHEMA).collection("facts")),
    ))
}

/// `rows` facts of tenant `a` and 1000 of tenant `b`, as in the SQL tables.
async fn seed_facts(
    facts: &mongodb::Collection<bson::Document>,
    rows: u32,
) -> mongodb::error::Result<()> {
    const CHUNK: u32 = 10_000;
    let fact = |i: u32, tenant: &str| {
        bson::doc! { "id": i64::from(i), "tenant": tenant, "amount": f64::from(i) * 0.5, "label": format!("label-{}", i % 1000) }
    };
    let mut start = 1;
    while start <= rows {
        let end = (start + CHUNK - 1).min(rows);
        facts
            .insert_many((start..=end).map(|i| fact(i, "a")))
            .await?;
        start = end + 1;
    }
    facts.insert_many((1..=1000).map(|i| fact(i, "b"))).await?;
    Ok(())
}

/// Files: `rows` rows of tenant `a` uploaded partitioned by tenant (and
/// 1,000 of `b`), fetched with the built-in files connector as stored (the
/// filter admits the partition wholly: `tenant = 'a'`) and as a host view
/// (`tenant = 'a' and amount >= 0` admits it only in part, so the host
/// filters it first), against a plain loop reading and typing the CSV.
async fn run_files(opts: &BenchOptions, out: &mut impl Write) -> Result<()> {
    use crate::capability::files::upload::{Upload, upload};
    use crate::capability::files::{FilesConfig, FilesStore};
    use crate::silo::DatasetAccess;
    use silo_types::{Op, Predicate, RowFilter, Value};
    let rows = opts.rows;
    let dir = std::env::temp_dir().join("silo-bench-files");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io)?;
    writeln!(
        out,
        "seeding {rows} rows x 4 columns (plus 1000 rows of another tenant)..."
    )
    .map_err(io)?;
    let csv = dir.join("facts.csv");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&csv).map_err(io)?);
        writeln!(w, "id,tenant,amount,label").map_err(io)?;
        for i in 1..=u64::from(rows) {
            writeln!(w, "{i},a,{}.5,label-{}", i / 2, i % 1000).map_err(io)?;
        }
        for i in 1..=1000u64 {
            writeln!(w, "{i},b,{}.5,label-{}", i / 2, i % 1000).map_err(io)?;
        }
        w.flush().map_err(io)?;
    }
    let data = dir.join("data");
    let store = FilesStore::new(&FilesConfig {
        data_dir: data.clone(),
        org: "default".into(),
    })?;
    upload(
        &store,
        &Upload {
            dataset: "facts",
            file: &csv,
            partition_by: Some("tenant"),
            max_bytes: u64::MAX,
            max_partitions: crate::capability::files::upload::MAX_PARTITIONS,
            progress: None,
        },
    )?;
    let config = dir.join("silo.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_rows = {}\ntimeout_ms = 600000\nfetch_timeout_ms = 600000\n\n\
             [datasources.main]\nconnector = \"files\"\n[datasources.main.files]\ndata_dir = {:?}\n\n\
             [datasets.facts]\ndatasource = \"main\"\nall_rows = true\n",
            u64::from(rows) + 1,
            data.display().to_string()
        ),
    )
    .map_err(io)?;
    let silo = Silo::open(&SiloConfig::load(&config)?).await?;
    let spec = facts_spec();
    let tenant = Predicate {
        column: "tenant".into(),
        op: Op::Eq,
        values: vec![Value::Text("a".into())],
    };
    let whole = DatasetAccess::rows(RowFilter::AnyOf(vec![vec![tenant.clone()]]));
    let part = DatasetAccess::rows(RowFilter::AnyOf(vec![vec![
        tenant,
        Predicate {
            column: "amount".into(),
            op: Op::Ge,
            values: vec![Value::Float(0.0)],
        },
    ]]));
    let partition = data.join("default/facts/a/data.csv");
    let plain = || -> Result<u64> {
        let mut reader =
            csv::Reader::from_path(&partition).map_err(|e| Error::Internal(e.to_string()))?;
        let mut n = 0u64;
        for record in reader.records() {
            let r = record.map_err(|e| Error::Internal(e.to_string()))?;
            let typed: (i64, String, f64, String) = (
                r.get(0).and_then(|v| v.parse().ok()).unwrap_or_default(),
                r.get(1).unwrap_or_default().to_owned(),
                r.get(2).and_then(|v| v.parse().ok()).unwrap_or_default(),
                r.get(3).unwrap_or_default().to_owned(),
            );
            std::hint::black_box(typed);
            n += 1;
        }
        Ok(n)
    };
    let fetch = async |access: &DatasetAccess| -> Result<u64> {
        let mut fetch = silo.fetch_with(&|_| Ok(access.clone()), &spec).await?;
        let mut n = 0u64;
        while let Some(batch) = fetch.next_batch().await? {
            n += batch.len() as u64;
        }
        Ok(n)
    };
    let (mut t_plain, mut t_whole, mut t_part) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=opts.runs {
        let t = Instant::now();
        let a = plain()?;
        let d_plain = t.elapsed();
        let t = Instant::now();
        let b = fetch(&whole).await?;
        let d_whole = t.elapsed();
        let t = Instant::now();
        let c = fetch(&part).await?;
        let d_part = t.elapsed();
        if [a, b, c] != [u64::from(rows); 3] {
            return Err(Error::Internal(format!(
                "expected {rows} rows: plain {a}, as stored {b}, view {c}"
            )));
        }
        if run > 0 {
            t_plain.push(d_plain);
            t_whole.push(d_whole);
            t_part.push(d_part);
        }
    }
    let (p, w, v) = (
        median(&mut t_plain),
        median(&mut t_whole),
        median(&mut t_part),
    );
    writeln!(
        out,
        "fetch {rows} rows x 4 columns from an upload (median of {} runs):",
        opts.runs
    )
    .map_err(io)?;
    writeln!(out, "  plain CSV read and typing    : {:>8.1} ms", ms(p)).map_err(io)?;
    writeln!(
        out,
        "  partition as stored (whole)  : {:>8.1} ms  ({:.2}x plain)",
        ms(w),
        w.as_secs_f64() / p.as_secs_f64()
    )
    .map_err(io)?;
    writeln!(
        out,
        "  partition as a view (part)   : {:>8.1} ms  ({:.2}x plain, {:.2}x as stored)",
        ms(v),
        v.as_secs_f64() / p.as_secs_f64(),
        v.as_secs_f64() / w.as_secs_f64()
    )
    .map_err(io)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn sandboxed_fetch(silo: &Silo, spec: &FetchSpec) -> Result<u64> {
    let mut fetch = silo.fetch("u", spec).await?;
    let mut n = 0u64;
    while let Some(batch) = fetch.next_batch().await? {
        n += batch.len() as u64;
    }
    Ok(n)
}

/// CPU time this process's live threads have run so far: the sum of each
/// thread's scheduler run time (Linux `/proc/self/task/*/schedstat`, in
/// nanoseconds; `None` elsewhere). Less noisy than wall time on a shared VM,
/// and it leaves out the database server, which is another process.
fn process_cpu() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        // A thread that exited since the listing is skipped.
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// CPU time used since `start`, if both readings are there.
fn cpu_since(start: Option<Duration>) -> Option<Duration> {
    Some(process_cpu()?.saturating_sub(start?))
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn io(e: std::io::Error) -> Error {
    Error::Internal(e.to_string())
}

/// The password [`prepare_reader`] gave `role`, and a connection string that
/// logs in as it: the admin's with the user swapped.
fn reader_login(admin: &str, prepared: &Prepared, role: &str) -> Result<(String, String)> {
    let password = std::fs::read_to_string(prepared.dir.join("reader.password")).map_err(io)?;
    let password = password.trim().to_owned();
    let base: Vec<&str> = admin
        .split_whitespace()
        .filter(|kv| !kv.starts_with("user=") && !kv.starts_with("password="))
        .collect();
    let conn = format!("{} user={role} password={password}", base.join(" "));
    Ok((password, conn))
}

/// Profiler throughput: `rows` synthetic rows of six columns of every kind
/// (a batch reused, so only profiling is timed) through
/// [`crate::metadata::Profiler`] on one thread, with categories tracked on
/// one text column. Prints cells per second and the sketches' memory.
pub fn profile(rows: u64, out: &mut impl std::io::Write) -> Result<()> {
    use crate::metadata::{Privacy, PrivacyPolicy, Profiler};
    use silo_types::{ColumnType, Value};
    let columns: Vec<(String, ColumnType)> = [
        ("id", ColumnType::Int),
        ("amount", ColumnType::Decimal),
        ("score", ColumnType::Float),
        ("city", ColumnType::Text),
        ("name", ColumnType::Text),
        ("day", ColumnType::Date),
    ]
    .into_iter()
    .map(|(n, k)| (n.to_owned(), k))
    .collect();
    let policy = PrivacyPolicy {
        columns: [("city".to_owned(), Privacy::Categories)].into(),
        ..PrivacyPolicy::default()
    };
    let synthetic: Vec<Vec<Value>> = (0..4096i64)
        .map(|i| {
            vec![
                Value::Int(i * 7919 % 100_003),
                Value::Decimal(format!("{}.{:02}", i % 997, i % 100)),
                Value::Float(i as f64 * 0.37),
                Value::Text(["Paris", "Lyon", "Nice", "Oslo"][(i % 4) as usize].into()),
                Value::Text(format!("customer-{i:05}")),
                Value::Date(20_000 + (i % 365) as i32),
            ]
        })
        .collect();
    let batch = crate::batch::Batch::from_rows(columns.len(), synthetic)
        .map_err(|m| Error::Internal(format!("synthetic row {} is ragged", m.row)))?;
    let mut profiler = Profiler::new(&columns, &policy);
    let batches = rows.div_ceil(batch.len() as u64).max(1);
    let started = std::time::Instant::now();
    for _ in 0..batches {
        profiler.add(&batch);
    }
    let secs = started.elapsed().as_secs_f64();
    let cells = batches * batch.len() as u64 * columns.len() as u64;
    writeln!(
        out,
        "profiled {} rows x {} columns in {secs:.2} s on one thread: {:.1} M cells/s; sketches hold {} KiB",
        batches * batch.len() as u64,
        columns.len(),
        cells as f64 / secs / 1e6,
        profiler.heap_bytes() / 1024
    )
    .map_err(io)
}

/// The benchmark's fetch: every column of `facts`.
fn facts_spec() -> FetchSpec {
    FetchSpec {
        dataset: "facts".into(),
        columns: Some(
            ["id", "tenant", "amount", "label"]
                .map(String::from)
                .to_vec(),
        ),
        limit: None,
    }
}
