//! `silo bench`: the numbers in BENCHMARKS.md, measured in one run against the
//! local Postgres so the sandboxed path and its baseline share conditions.
use std::io::Write;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_postgres::NoTls;

use crate::config::SiloConfig;
use crate::demo::{Reader, admin, exec, prepare_reader};
use crate::error::{Error, Result};
use crate::silo::{FetchSpec, Silo};

const SCHEMA: &str = "silo_bench";
const ROLE: &str = "silo_bench_reader";

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Admin connection string for seeding.
    pub admin: String,
    /// Rows of the fetched tenant.
    pub rows: u32,
    /// Timed repetitions of each fetch.
    pub runs: usize,
    /// Instantiations to time.
    pub instantiations: usize,
}

/// Runs the benchmarks and prints a report.
pub async fn run(opts: &BenchOptions, out: &mut impl Write) -> Result<()> {
    let io = |e: std::io::Error| Error::Internal(e.to_string());
    let client = admin(&opts.admin).await?;
    let rows = opts.rows;
    let have: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'facts'",
            &[&SCHEMA],
        )
        .await
        .map_err(|e| Error::Datasource(e.to_string()))?
        .get(0);
    let seeded = if have == 1 {
        client
            .query_one(
                &format!("SELECT count(*) FROM {SCHEMA}.facts WHERE tenant = 'a'"),
                &[],
            )
            .await
            .map_err(|e| Error::Datasource(e.to_string()))?
            .get::<_, i64>(0)
    } else {
        -1
    };
    if seeded != i64::from(rows) {
        writeln!(
            out,
            "seeding {rows} rows x 4 columns (plus 1000 rows of another tenant)..."
        )
        .map_err(io)?;
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
    }
    let dir = std::env::temp_dir().join("silo-bench");
    let body = format!(
        "[limits]\nmax_rows = {}\n\n[datasets.facts]\ndatasource = \"main\"\nrow_filter = [\"tenant = {{{{user.tenant}}}}\"]\n\n\
         [users.u]\nattributes = {{ tenant = \"a\" }}\n",
        u64::from(rows) + 1
    );
    let prepared = prepare_reader(
        &client,
        &opts.admin,
        &dir,
        &Reader {
            schema: SCHEMA,
            role: ROLE,
            tables: &["facts"],
            connector: "postgres",
        },
        &body,
    )
    .await?;
    let silo = Silo::new(&SiloConfig::load(&prepared.config_path)?)?;
    let spec = FetchSpec {
        dataset: "facts".into(),
        columns: Some(
            ["id", "tenant", "amount", "label"]
                .map(String::from)
                .to_vec(),
        ),
        limit: None,
    };

    // Same role, same query shape, same row decoding into owned values.
    let (plain, conn) = tokio_postgres::connect(&reader_conn(&opts.admin, &prepared.dir)?, NoTls)
        .await
        .map_err(|e| Error::Datasource(e.to_string()))?;
    tokio::spawn(conn);

    let mut sandboxed = Vec::new();
    let mut baseline = Vec::new();
    // One warm-up each, then alternate so drift hits both equally.
    for run in 0..=opts.runs {
        let t = Instant::now();
        let n = sandboxed_fetch(&silo, &spec).await?;
        let s = t.elapsed();
        let t = Instant::now();
        let m = plain_fetch(&plain).await?;
        let b = t.elapsed();
        if n != u64::from(rows) || m != u64::from(rows) {
            return Err(Error::Internal(format!(
                "expected {rows} rows, sandboxed {n}, plain {m}"
            )));
        }
        if run > 0 {
            sandboxed.push(s);
            baseline.push(b);
        }
    }
    let (s, b) = (median(&mut sandboxed), median(&mut baseline));
    writeln!(
        out,
        "fetch {rows} rows x 4 columns (median of {} runs):",
        opts.runs
    )
    .map_err(io)?;
    writeln!(out, "  plain tokio-postgres loop : {:>8.1} ms", ms(b)).map_err(io)?;
    writeln!(out, "  sandboxed silo fetch      : {:>8.1} ms", ms(s)).map_err(io)?;
    writeln!(
        out,
        "  ratio                     : {:>8.3}x  (target <= 1.15x)",
        s.as_secs_f64() / b.as_secs_f64()
    )
    .map_err(io)?;

    let loaded = silo.runtime().load(crate::builtin::POSTGRES)?;
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
        "instantiate postgres connector (store + instance, pooling), {} runs:",
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

async fn sandboxed_fetch(silo: &Silo, spec: &FetchSpec) -> Result<u64> {
    let mut fetch = silo.fetch("u", spec).await?;
    let mut n = 0u64;
    while let Some(batch) = fetch.next_batch().await? {
        n += batch.len() as u64;
    }
    Ok(n)
}

async fn plain_fetch(client: &tokio_postgres::Client) -> Result<u64> {
    let db = |e: tokio_postgres::Error| Error::Datasource(e.to_string());
    let stmt = client
        .prepare(&format!(
            "SELECT id, tenant, amount, label FROM {SCHEMA}.facts WHERE tenant = $1"
        ))
        .await
        .map_err(db)?;
    let stream = client.query_raw(&stmt, [&"a"]).await.map_err(db)?;
    futures_util::pin_mut!(stream);
    let mut n = 0u64;
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
    Ok(n)
}

fn reader_conn(admin: &str, dir: &std::path::Path) -> Result<String> {
    let password = std::fs::read_to_string(dir.join("reader.password"))
        .map_err(|e| Error::Internal(e.to_string()))?;
    let base: String = admin
        .split_whitespace()
        .filter(|kv| !kv.starts_with("user="))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(format!("{base} user={ROLE} password={}", password.trim()))
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
