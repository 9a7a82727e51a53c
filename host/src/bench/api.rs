//! `silo bench api`: the embed fetch over HTTP against a native handler.
//!
//! It seeds `silo_bench_api.orders` (tenants x rows per tenant) in the local
//! Postgres, starts two servers as child processes of this binary, and loads
//! them alternately with the same load generator:
//! - **native**: `silo bench native`, axum + a deadpool of tokio-postgres
//!   connections running the statement the built-in connector sends, with
//!   prepared-statement caching. No sandbox, no token, no audit, no policy.
//! - **silo**: `silo serve` on a fresh embedded store, set up through its API
//!   (an org, a Postgres datasource as a read-only role, a dataset, a group
//!   whose grant filters `tenant = {{user.tenant}}`, one embed user and
//!   session per tenant), answering `POST /v1/embed/datasets/{id}/fetch`.
//!
//! Every response is parsed and checked: the status, the row count and the
//! tenant of every row (a row of another tenant is counted, never expected).
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{io, ms};
use crate::demo::{Reader, admin, exec, prepare_reader};
use crate::error::{Error, Result};

const SCHEMA: &str = "silo_bench_api";
const ROLE: &str = "silo_bench_api_reader";
/// What the built-in connector sends for this dataset (before the host's
/// fence), with the tenant and the limit as parameters.
const NATIVE_SQL: &str =
    "SELECT id, tenant, amount, label FROM silo_bench_api.orders WHERE tenant = $1 LIMIT $2";

/// What `silo bench api` measures.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Admin connection string for seeding.
    pub admin: String,
    /// Open connections of the load generator.
    pub connections: usize,
    /// Seconds each timed run lasts.
    pub seconds: f64,
    /// Timed runs of each server, alternated.
    pub runs: usize,
    /// Rows asked per fetch; each value is measured in turn.
    pub limits: Vec<u64>,
    /// Tenants in the table (one embed user and session each).
    pub tenants: u32,
    /// Rows per tenant.
    pub rows_per_tenant: u32,
    /// Database connections of each server.
    pub pool: usize,
    /// Extra embed users, each with a session, in the measured org.
    pub population: u32,
    /// Embed users, each with a session, in another org of the same store.
    pub other_population: u32,
    /// `silo serve --sqlite-sync`, if given.
    pub sqlite_sync: Option<String>,
}

/// `silo bench native`: the handler Silo is compared with.
#[derive(Debug, Clone)]
pub struct NativeOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Connection string (the read-only role).
    pub dsn: String,
    /// Pooled connections.
    pub pool: usize,
}

/// One load run's outcome.
#[derive(Debug, Default, Clone)]
struct Load {
    ok: u64,
    errors: u64,
    /// Status codes other than 200, with how many.
    statuses: Vec<(u16, u64)>,
    rows: u64,
    foreign_rows: u64,
    short: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// CPU time during the run.
    cpu: Cpu,
}

/// CPU time spent during one run, by whom.
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    /// The server under load (its process, all threads).
    server: Duration,
    /// The local processes named `postgres` (zero if the database is elsewhere).
    database: Duration,
    /// This process: the load generator.
    client: Duration,
    /// The whole machine, all of the above included.
    machine: Duration,
}

impl Cpu {
    fn now(server: u32) -> Cpu {
        Cpu {
            server: process_cpu(&format!("/proc/{server}/stat")),
            database: database_cpu(),
            client: process_cpu("/proc/self/stat"),
            machine: machine_cpu(),
        }
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            server: self.server.saturating_sub(before.server),
            database: self.database.saturating_sub(before.database),
            client: self.client.saturating_sub(before.client),
            machine: self.machine.saturating_sub(before.machine),
        }
    }
}

impl Load {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn pct(&self, p: f64) -> Duration {
        self.latencies
            .get(((self.latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    }

    /// CPU per answered request in µs: the server's own, the database's,
    /// the load generator's, and the machine's in all.
    fn cpu_per_request(&self) -> [f64; 4] {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / (self.ok.max(1) as f64);
        let c = self.cpu;
        [c.server, c.database, c.client, c.machine].map(per)
    }

    fn merge(&mut self, other: Load) {
        self.ok += other.ok;
        self.errors += other.errors;
        for (code, n) in other.statuses {
            match self.statuses.iter_mut().find(|(c, _)| *c == code) {
                Some((_, m)) => *m += n,
                None => self.statuses.push((code, n)),
            }
        }
        self.rows += other.rows;
        self.foreign_rows += other.foreign_rows;
        self.short += other.short;
        self.latencies.extend(other.latencies);
    }
}

/// What one connection of the load generator sends, and whose rows it may get.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    request: Vec<u8>,
    tenant: String,
    limit: u64,
}

/// The body both servers answer with.
#[derive(Deserialize)]
struct Answer {
    columns: Vec<String>,
    rows: Vec<Vec<serde_json::Value>>,
}

/// Runs the benchmark and prints its table.
pub async fn run(opts: &ApiOptions, out: &mut impl Write) -> Result<()> {
    let exe = std::env::current_exe().map_err(io)?;
    let work = std::env::temp_dir().join(format!("silo-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io)?;
    let result = run_in(opts, &exe, &work, out).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn run_in(opts: &ApiOptions, exe: &Path, work: &Path, out: &mut impl Write) -> Result<()> {
    let (tenants, per) = (opts.tenants.max(1), opts.rows_per_tenant.max(1));
    writeln!(
        out,
        "seeding {SCHEMA}.orders: {tenants} tenants x {per} rows..."
    )
    .map_err(io)?;
    let client = admin(&opts.admin).await?;
    exec(
        &client,
        &format!(
            "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};
             CREATE TABLE {SCHEMA}.orders (id bigint, tenant text, amount float8, label text);
             INSERT INTO {SCHEMA}.orders SELECT i, 't' || (i % {tenants}), i * 0.5, 'label-' || (i % 1000)
               FROM generate_series(0, {tenants} * {per} - 1) i;
             CREATE INDEX ON {SCHEMA}.orders (tenant);"
        ),
    )
    .await?;
    exec(&client, &format!("VACUUM ANALYZE {SCHEMA}.orders")).await?;
    let reader = Reader {
        schema: SCHEMA,
        role: ROLE,
        tables: &["orders"],
        connector: "postgres",
    };
    let prepared = prepare_reader(&client, &opts.admin, work, &reader, "").await?;
    let (password, dsn) = super::reader_login(&opts.admin, &prepared, ROLE)?;
    let pg: tokio_postgres::Config = opts
        .admin
        .parse()
        .map_err(|e| Error::Config(format!("admin connection string: {e}")))?;
    let pg_host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let pg_port = pg.get_ports().first().copied().unwrap_or(5432);
    let pg_db = pg.get_dbname().unwrap_or("postgres").to_owned();

    // The two servers, as children that die with this process's handles.
    let native_addr = free_port()?;
    let native = Child::spawn(
        exe,
        &[
            "bench".into(),
            "native".into(),
            "--listen".into(),
            native_addr.to_string(),
            "--dsn".into(),
            dsn,
            "--pool".into(),
            opts.pool.to_string(),
        ],
    )?;
    let data = work.join("data");
    let admin_key = {
        let o = std::process::Command::new(exe)
            .args(["api-keys", "create", "--admin", "--data-dir"])
            .arg(&data)
            .stderr(Stdio::null())
            .output()
            .map_err(io)?;
        if !o.status.success() {
            return Err(Error::Internal("silo api-keys create failed".into()));
        }
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    let silo_addr = free_port()?;
    let mut serve_args: Vec<String> = vec![
        "serve".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--listen".into(),
        silo_addr.to_string(),
        "--allow-private-network".into(),
        "--max-connections".into(),
        (opts.connections + 64).max(512).to_string(),
    ];
    if let Some(sync) = &opts.sqlite_sync {
        serve_args.extend(["--sqlite-sync".into(), sync.clone()]);
    }
    let silo = Child::spawn(exe, &serve_args)?;
    wait_listening(native_addr).await?;
    wait_listening(silo_addr).await?;

    let setup = setup_silo(
        silo_addr,
        &admin_key,
        &password,
        opts,
        (&pg_host, pg_port, &pg_db),
    )
    .await?;
    if opts.population > 0 || opts.other_population > 0 {
        let store =
            crate::control::store::Store::open(&data.join("silo.db").display().to_string()).await?;
        populate(&store, &setup.org, "pop", opts.population).await?;
        populate(&store, &setup.other, "other", opts.other_population).await?;
    }
    writeln!(
        out,
        "population: {} extra embed users and sessions in the org, {} in another org",
        opts.population, opts.other_population
    )
    .map_err(io)?;
    writeln!(
        out,
        "native: pid {} on {native_addr}; silo: pid {} on {silo_addr}; {} connections, {:.0} s per run",
        native.pid(),
        silo.pid(),
        opts.connections,
        opts.seconds
    )
    .map_err(io)?;

    for &limit in &opts.limits {
        let natives: Vec<Target> = (0..opts.connections)
            .map(|i| {
                let tenant = format!("t{}", i as u32 % tenants);
                native_target(native_addr, &tenant, limit)
            })
            .collect();
        let silos: Vec<Target> = (0..opts.connections)
            .map(|i| {
                let t = i as u32 % tenants;
                let token = setup.tokens.get(t as usize).map_or("", String::as_str);
                silo_target(silo_addr, &setup.dataset, token, &format!("t{t}"), limit)
            })
            .collect();
        let warm = Duration::from_secs_f64((opts.seconds / 4.0).clamp(0.5, 3.0));
        load(&natives, warm).await;
        load(&silos, warm).await;
        let run_for = Duration::from_secs_f64(opts.seconds.max(0.5));
        let (mut n_all, mut s_all) = (Vec::new(), Vec::new());
        writeln!(out, "\n{limit}-row fetches:").map_err(io)?;
        for run in 0..opts.runs.max(1) {
            for native_turn in [run % 2 == 0, run % 2 == 1] {
                let (targets, name) = if native_turn {
                    (&natives, "native")
                } else {
                    (&silos, "silo  ")
                };
                let pid = if native_turn {
                    native.pid()
                } else {
                    silo.pid()
                };
                let before = Cpu::now(pid);
                let mut r = load(targets, run_for).await;
                r.cpu = Cpu::now(pid).since(before);
                writeln!(out, "  run {} {name}: {}", run + 1, line(&r)).map_err(io)?;
                if native_turn {
                    n_all.push(r);
                } else {
                    s_all.push(r);
                }
            }
        }
        let (n, s) = (median_run(&n_all), median_run(&s_all));
        writeln!(
            out,
            "  median  native {:.0} req/s, silo {:.0} req/s: {:.3}x; p50 {:.2} / {:.2} ms (+{:.2} ms); \
             p99 {:.2} / {:.2} ms ({:.2}x)",
            n.rps(),
            s.rps(),
            s.rps() / n.rps().max(1e-9),
            ms(n.pct(0.5)),
            ms(s.pct(0.5)),
            ms(s.pct(0.5)) - ms(n.pct(0.5)),
            ms(n.pct(0.99)),
            ms(s.pct(0.99)),
            ms(s.pct(0.99)) / ms(n.pct(0.99)).max(1e-9),
        )
        .map_err(io)?;
    }
    writeln!(
        out,
        "\npeak RSS (VmHWM): native {} MiB, silo {} MiB",
        native.peak_rss_mib(),
        silo.peak_rss_mib()
    )
    .map_err(io)?;
    Ok(())
}

/// CPU time a process has used (user and system, all its threads), from its
/// `/proc/<pid>/stat`.
fn process_cpu(path: &str) -> Duration {
    stat_cpu(&std::fs::read_to_string(path).unwrap_or_default())
}

/// CPU time of the local processes named `postgres`: the database server's
/// backends and helpers (zero when the database runs on another machine).
/// A process that exits during a run takes its time with it.
fn database_cpu() -> Duration {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| stat_command(stat) == Some("postgres"))
        .map(|stat| stat_cpu(&stat))
        .sum()
}

/// The command name in a `/proc/<pid>/stat` line: between the first `(`
/// and the last `)`.
fn stat_command(stat: &str) -> Option<&str> {
    let (_, rest) = stat.split_once('(')?;
    Some(rest.rsplit_once(')')?.0)
}

/// utime + stime of a `/proc/<pid>/stat` line.
fn stat_cpu(stat: &str) -> Duration {
    // Fields after the command (which may hold spaces), from its `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15: 12 and 13 after the `)`.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ticks_to_duration(ticks)
}

/// CPU time the whole machine has spent busy (all but idle and iowait).
fn machine_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse::<u64>().ok())
                .enumerate()
                // user nice system idle iowait irq softirq: not idle or
                // iowait (nor steal, the hypervisor's, after them).
                .filter(|(i, _)| *i != 3 && *i != 4 && *i < 7)
                .map(|(_, v)| v)
                .sum()
        })
        .unwrap_or(0);
    ticks_to_duration(ticks)
}

/// `/proc` counts CPU time in clock ticks of 1/100 s on Linux.
fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 10)
}

/// The run with the median req/s.
fn median_run(runs: &[Load]) -> Load {
    let mut sorted: Vec<&Load> = runs.iter().collect();
    sorted.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
    sorted
        .get(sorted.len() / 2)
        .map(|l| (*l).clone())
        .unwrap_or_default()
}

fn line(r: &Load) -> String {
    let [server, database, client, machine] = r.cpu_per_request();
    let mut s = format!(
        "{:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  {} ok  cpu/req {:>4.0} µs server, \
         {:>4.0} µs postgres, {:>3.0} µs client, {:>4.0} µs machine",
        r.rps(),
        ms(r.pct(0.5)),
        ms(r.pct(0.99)),
        r.ok,
        server,
        database,
        client,
        machine
    );
    if r.errors > 0 || !r.statuses.is_empty() || r.short > 0 || r.foreign_rows > 0 {
        s.push_str(&format!(
            "  errors {} statuses {:?} short {} foreign rows {}",
            r.errors, r.statuses, r.short, r.foreign_rows
        ));
    }
    s
}

fn native_target(addr: SocketAddr, tenant: &str, limit: u64) -> Target {
    target(addr, &format!("/fetch/{tenant}"), "", tenant, limit)
}

fn silo_target(addr: SocketAddr, dataset: &str, token: &str, tenant: &str, limit: u64) -> Target {
    let path = format!("/v1/embed/datasets/{dataset}/fetch");
    let auth = format!("authorization: Bearer {token}\r\n");
    target(addr, &path, &auth, tenant, limit)
}

/// `POST path` with `{"limit": limit}`, whose rows must all be `tenant`'s.
fn target(addr: SocketAddr, path: &str, headers: &str, tenant: &str, limit: u64) -> Target {
    let body = format!("{{\"limit\":{limit}}}");
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}content-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    Target {
        addr,
        request: request.into_bytes(),
        tenant: tenant.to_owned(),
        limit,
    }
}

/// Each target on its own keep-alive connection, for `run_for`.
async fn load(targets: &[Target], run_for: Duration) -> Load {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + run_for;
    let tasks: Vec<_> = targets
        .iter()
        .cloned()
        .map(|t| tokio::spawn(connection(t, deadline)))
        .collect();
    let mut total = Load::default();
    for t in tasks {
        if let Ok(l) = t.await {
            total.merge(l);
        }
    }
    total.elapsed = start.elapsed();
    total.latencies.sort();
    total
}

/// One connection's loop: send, read the whole response, check it, again.
async fn connection(t: Target, deadline: tokio::time::Instant) -> Load {
    let mut l = Load::default();
    let mut buf = Vec::with_capacity(64 << 10);
    let mut stream: Option<TcpStream> = None;
    while tokio::time::Instant::now() < deadline {
        let s = match stream.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(t.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream.insert(s)
                }
                Err(_) => {
                    l.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let answer = match tokio::time::timeout_at(
            deadline + Duration::from_secs(30),
            exchange(s, &t.request, &mut buf),
        )
        .await
        {
            Ok(Ok(a)) => a,
            _ => {
                l.errors += 1;
                stream = None;
                continue;
            }
        };
        let took = sent.elapsed();
        let (status, body_at) = answer;
        if status != 200 {
            match l.statuses.iter_mut().find(|(c, _)| *c == status) {
                Some((_, n)) => *n += 1,
                None => l.statuses.push((status, 1)),
            }
            continue;
        }
        match buf
            .get(body_at..)
            .and_then(|b| serde_json::from_slice::<Answer>(b).ok())
        {
            Some(a) => {
                let at = a.columns.iter().position(|c| c == "tenant");
                let foreign = a
                    .rows
                    .iter()
                    .filter(|r| {
                        at.and_then(|i| r.get(i)).and_then(|v| v.as_str()) != Some(&t.tenant)
                    })
                    .count();
                l.rows += a.rows.len() as u64;
                l.foreign_rows += foreign as u64;
                if (a.rows.len() as u64) < t.limit {
                    l.short += 1;
                }
                l.ok += 1;
                l.latencies.push(took);
            }
            None => l.errors += 1,
        }
    }
    l
}

/// Sends one request and reads its response into `buf`: the status and
/// where the body starts. Both servers answer with a `content-length`.
async fn exchange(s: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> Result<(u16, usize)> {
    s.write_all(request).await.map_err(io)?;
    buf.clear();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let n = s.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(Error::Internal("connection closed".into()));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(buf) {
            Ok(httparse::Status::Complete(head)) => head,
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(Error::Internal(format!("bad response: {e}"))),
        };
        let status = resp.code.unwrap_or(0);
        let length = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| Error::Internal("a response without content-length".into()))?;
        while buf.len() < head + length {
            let n = s.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                return Err(Error::Internal("connection closed".into()));
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
        return Ok((status, head));
    }
}

/// What the setup made: the dataset's id and one session token per tenant.
struct Setup {
    org: String,
    other: String,
    dataset: String,
    tokens: Vec<String>,
}

/// An org on the `silo serve` at `addr`, through its API.
async fn setup_silo(
    addr: SocketAddr,
    admin_key: &str,
    password: &str,
    opts: &ApiOptions,
    (host, port, db): (&str, u16, &str),
) -> Result<Setup> {
    use serde_json::json;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let call = |method: reqwest::Method, path: &str, key: &str, body: serde_json::Value| {
        let req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body);
        async move {
            let resp = req
                .send()
                .await
                .map_err(|e| Error::Internal(format!("setup: {e}")))?;
            let status = resp.status();
            let value: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
            if !status.is_success() {
                return Err(Error::Internal(format!("setup: {status}: {value}")));
            }
            Ok::<_, Error>(value)
        }
    };
    use reqwest::Method;
    let text = |v: &serde_json::Value, k: &str| -> Result<String> {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::Internal(format!("setup: no `{k}` in {v}")))
    };
    // The measured org, and another one sharing the store.
    let mut orgs = Vec::new();
    for name in ["bench", "other"] {
        let made = call(Method::POST, "/v1/orgs", admin_key, json!({"name": name})).await?;
        orgs.push(text(&made, "id")?);
    }
    let mut orgs = orgs.into_iter();
    let (org, other) = (
        orgs.next().unwrap_or_default(),
        orgs.next().unwrap_or_default(),
    );
    let key = text(
        &call(
            Method::POST,
            "/v1/orgs/bench/api-keys",
            admin_key,
            json!({"name": "backend"}),
        )
        .await?,
        "token",
    )?;
    call(
        Method::POST,
        "/v1/datasources",
        &key,
        json!({"name": "pg", "kind": "postgres", "password": password,
               "settings": {"host": host, "port": port, "database": db, "user": ROLE,
                            "schema": SCHEMA, "pool_size": opts.pool,
                            "tls": {"mode": "disable"}}}),
    )
    .await?;
    let dataset = text(
        &call(
            Method::POST,
            "/v1/datasets",
            &key,
            json!({"datasource": "pg", "name": "orders"}),
        )
        .await?,
        "id",
    )?;
    call(
        Method::PUT,
        "/v1/groups/tenants",
        &key,
        json!({"grants": [{"dataset_id": dataset, "permission": "read",
                           "row_filter": ["tenant = {{user.tenant}}"]}]}),
    )
    .await?;
    let mut tokens = Vec::new();
    for t in 0..opts.tenants.max(1) {
        call(
            Method::PUT,
            &format!("/v1/embed-users/u{t}"),
            &key,
            json!({"attributes": {"tenant": format!("t{t}")}, "groups": ["tenants"]}),
        )
        .await?;
        let s = call(
            Method::POST,
            "/v1/sessions",
            &key,
            json!({"embed_user": format!("u{t}")}),
        )
        .await?;
        tokens.push(text(&s, "token")?);
    }
    Ok(Setup {
        org,
        other,
        dataset,
        tokens,
    })
}

/// Adds `n` embed users of `org`, each with a live session, straight into
/// the store in one transaction (the API would take one commit each).
async fn populate(
    store: &crate::control::store::Store,
    org: &str,
    tag: &str,
    n: u32,
) -> Result<()> {
    const CHUNK: u32 = 500;
    let db = |e: sqlx::Error| Error::Internal(format!("populating the store: {e}"));
    let mut tx = store.begin().await?;
    let now = crate::control::store::now();
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        let rows = |width: usize| {
            (0..(end - start) as usize)
                .map(|r| {
                    let cells: Vec<String> =
                        (1..=width).map(|c| format!("${}", r * width + c)).collect();
                    format!("({})", cells.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let users = format!(
            "INSERT INTO embed_users (id, org_id, external_id, attributes, created_at, updated_at) VALUES {}",
            rows(6)
        );
        let mut q = sqlx::query(&users);
        for i in start..end {
            q = q
                .bind(format!("usr_{tag}{i}"))
                .bind(org.to_owned())
                .bind(format!("{tag}{i}"))
                .bind(format!("{{\"tenant\":\"t{}\"}}", i % 100))
                .bind(now)
                .bind(now);
        }
        q.execute(&mut *tx).await.map_err(db)?;
        let sessions = format!(
            "INSERT INTO sessions (id, org_id, embed_user_id, datasets, parameters, created_at, expires_at) VALUES {}",
            rows(7)
        );
        let mut q = sqlx::query(&sessions);
        for i in start..end {
            q = q
                .bind(format!("ses_{tag}{i}"))
                .bind(org.to_owned())
                .bind(format!("usr_{tag}{i}"))
                .bind(None::<String>)
                .bind("{}".to_owned())
                .bind(now)
                .bind(now + 86_400);
        }
        q.execute(&mut *tx).await.map_err(db)?;
        start = end;
    }
    tx.commit().await.map_err(db)
}

/// A loopback address nothing listens on now.
fn free_port() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
    l.local_addr().map_err(io)
}

async fn wait_listening(addr: SocketAddr) -> Result<()> {
    for _ in 0..300 {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Internal(format!("nothing listens on {addr}")))
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Child {
    fn spawn(exe: &Path, args: &[String]) -> Result<Child> {
        std::process::Command::new(exe)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Child)
            .map_err(io)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The process's peak resident memory so far.
    fn peak_rss_mib(&self) -> u64 {
        let status = PathBuf::from(format!("/proc/{}/status", self.0.id()));
        std::fs::read_to_string(status)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb / 1024)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves `POST /fetch/{tenant}` (`{"limit": n}`) from a pool of
/// tokio-postgres connections: the plainest handler that returns what Silo
/// returns.
pub async fn native(opts: &NativeOptions) -> Result<()> {
    use axum::Json;
    use axum::extract::{Path as UrlPath, State};
    use axum::http::StatusCode;
    use axum::routing::post;
    use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

    #[derive(Deserialize)]
    struct Input {
        limit: i64,
    }
    #[derive(serde::Serialize)]
    struct Output {
        columns: [&'static str; 4],
        rows: Vec<(i64, String, f64, String)>,
    }
    async fn fetch(
        State(pool): State<Pool>,
        UrlPath(tenant): UrlPath<String>,
        Json(input): Json<Input>,
    ) -> std::result::Result<Json<Output>, StatusCode> {
        let fail = |_| StatusCode::INTERNAL_SERVER_ERROR;
        let c = pool
            .get()
            .await
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
        let st = c.prepare_cached(NATIVE_SQL).await.map_err(fail)?;
        let rows = c.query(&st, &[&tenant, &input.limit]).await.map_err(fail)?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect::<std::result::Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(fail)?;
        Ok(Json(Output {
            columns: ["id", "tenant", "amount", "label"],
            rows,
        }))
    }

    let config: tokio_postgres::Config = opts
        .dsn
        .parse()
        .map_err(|e| Error::Config(format!("--dsn: {e}")))?;
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(opts.pool.max(1))
        .build()
        .map_err(|e| Error::Config(format!("pool: {e}")))?;
    let app = axum::Router::new()
        .route("/fetch/{tenant}", post(fetch))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(io)?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command name may hold spaces and parentheses; the fields after it
    /// are still found from its last `)`.
    #[test]
    fn stat_lines_are_read_from_the_last_parenthesis() {
        let fields = "S 1 1 1 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 100 0 0";
        let plain = format!("4242 (postgres) {fields}");
        assert_eq!(stat_command(&plain), Some("postgres"));
        assert_eq!(stat_cpu(&plain), Duration::from_millis(3250));
        let odd = format!("4243 (a) (postgres) x) {fields}");
        assert_eq!(stat_command(&odd), Some("a) (postgres) x"));
        assert_eq!(stat_cpu(&odd), Duration::from_millis(3250));
        assert_eq!(stat_command("4244 no command"), None);
        assert_eq!(stat_cpu("garbage"), Duration::ZERO);
    }

    /// This process is not `postgres`, and its own CPU time is counted.
    #[test]
    fn the_load_generator_is_not_counted_as_the_database() {
        let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        assert_ne!(stat_command(&own), Some("postgres"));
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(process_cpu("/proc/self/stat") > Duration::ZERO);
    }
}
