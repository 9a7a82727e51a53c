//! The pooled driver. Every statement runs inside `BEGIN READ ONLY` with a
//! `statement_timeout` and `search_path` pinned to `pg_catalog` (so a function
//! name can only mean a built-in), as one prepared statement whose parameters
//! are bound with the types Postgres inferred. A connection that did not end
//! its transaction cleanly is closed, never returned to the pool. Connections
//! are opened through [`super::wire`], which caps every message's size.
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use futures_util::{FutureExt, StreamExt};
use secrecy::ExposeSecret;
use silo_types::{Column, SqlDialect, Value};
use tokio_postgres::RowStream;
use tokio_postgres::error::SqlState;

use super::PgSettings;
use super::codec::{Decoder, Param, Raw};
use super::wire::{self, GuardedConnect};
use silo_bindings::rows::RowSource;
use silo_capability::SqlClient;
use silo_capability::driver::{self, ServerFailure};
use silo_core::batch::Batch;
use silo_core::error::{Error, Result};
use silo_core::limits::BATCH_BYTES;

/// Catalog views a Postgres connector may read while describing (metadata of
/// what its role can select; governed tables stay filtered, to no rows).
const CATALOG: &[(&str, &str)] = &[
    ("information_schema", "columns"),
    ("information_schema", "table_privileges"),
];

/// What the current role may do beyond reading: superuser, BYPASSRLS, write
/// privileges on any relation outside the system schemas, and ownership
/// (which carries every privilege).
const WRITE_PRIVILEGES: &str = "
WITH rel AS (
  SELECT c.oid, c.relowner, format('%I.%I', n.nspname, c.relname) AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%')
SELECT 'superuser' FROM pg_roles WHERE rolname = current_user AND rolsuper
UNION ALL
SELECT 'BYPASSRLS' FROM pg_roles WHERE rolname = current_user AND rolbypassrls
UNION ALL
SELECT * FROM (
  SELECT 'owner of ' || name FROM rel WHERE pg_has_role(relowner, 'USAGE')
  UNION ALL
  SELECT p.privilege || ' on ' || rel.name
  FROM rel CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p(privilege)
  WHERE has_table_privilege(rel.oid, p.privilege)
  ORDER BY 1) AS tables";

/// How long to wait for a new connection to the database.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A Postgres datasource's connection pool.
pub struct PgClient {
    pool: Pool,
    pool_size: usize,
    fetch_share: usize,
    schema: String,
    statement_timeout: Duration,
    fetch_timeout: Duration,
    faults: Faults,
}

impl PgClient {
    /// Builds the pool; connections are opened lazily, on first use.
    pub fn new(settings: PgSettings) -> Result<PgClient> {
        let c = &settings.config;
        let (pool_size, fetch_share) = c.pool_bounds()?;
        let mut pg = tokio_postgres::Config::new();
        pg.host(&c.host)
            .port(c.port)
            .dbname(&c.database)
            .user(&c.user)
            .application_name("silo")
            // TLS, when on, is set up by the guarded connect below.
            .ssl_mode(tokio_postgres::config::SslMode::Disable)
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(password) = &settings.password {
            pg.password(password.expose_secret());
        }
        let oversized = Arc::new(AtomicU64::new(0));
        let connect = GuardedConnect {
            host: c.host.clone(),
            port: c.port,
            database: c.database.clone(),
            net: settings.net.clone(),
            timeout: CONNECT_TIMEOUT,
            max_message: settings.max_row_bytes,
            oversized: oversized.clone(),
            tls: c.tls.client(&c.host)?,
        };
        let manager = Manager::from_connect(
            pg,
            connect,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let mut pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(settings.statement_timeout));
        if let Some(hook) = refuse_stores(&settings.net) {
            pool = pool.post_create(hook);
        }
        let pool = pool
            .build()
            .map_err(|e| Error::Config(format!("postgres pool: {e}")))?;
        Ok(PgClient {
            pool,
            pool_size,
            fetch_share,
            schema: c.schema.clone(),
            statement_timeout: settings.statement_timeout,
            fetch_timeout: settings.fetch_timeout,
            faults: Faults {
                max_row_bytes: settings.max_row_bytes,
                oversized,
                seen: 0,
            },
        })
    }

    /// A pooled connection, for host-side administration (registration checks, tests).
    pub async fn connection(&self) -> Result<Object> {
        self.pool.get().await.map_err(|e| match e {
            // Every connection stayed in use for as long as we wait.
            PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                driver::busy(self.pool_size)
            }
            PoolError::Backend(e) | PoolError::PostCreateHook(HookError::Backend(e)) => {
                self.faults.map(e)
            }
            PoolError::PostCreateHook(HookError::Message(why)) => Error::Policy(why.into()),
            other => driver::unavailable("postgres", other),
        })
    }
}

#[async_trait]
impl SqlClient for PgClient {
    fn dialect(&self) -> SqlDialect {
        SqlDialect::Postgres
    }

    fn default_schema(&self) -> &str {
        &self.schema
    }

    fn catalog(&self) -> &'static [(&'static str, &'static str)] {
        CATALOG
    }

    fn fetch_share(&self) -> usize {
        self.fetch_share
    }

    async fn write_privileges(&self) -> Result<Vec<String>> {
        let conn = self.connection().await?;
        let failed = |e| self.faults.map(e);
        let rows = conn.query(WRITE_PRIVILEGES, &[]).await.map_err(failed)?;
        rows.iter()
            .map(|r| r.try_get::<_, String>(0).map_err(failed))
            .collect()
    }

    async fn query(&self, statement: &str, params: Vec<Value>) -> Result<Box<dyn RowSource>> {
        let lease = Lease(Some(self.connection().await?), self.faults.now());
        let client = lease.client()?;
        let failed = |e| lease.1.map(e);
        let timeout_ms = self.statement_timeout.as_millis();
        let idle_ms = self.fetch_timeout.as_millis();
        // A transaction left idle past the whole-fetch deadline is ended by
        // the server too, should the host somehow keep one open.
        let begin = format!(
            "BEGIN READ ONLY; SET LOCAL statement_timeout = {timeout_ms}; \
             SET LOCAL idle_in_transaction_session_timeout = {idle_ms}; \
             SET LOCAL search_path = pg_catalog; SET LOCAL plan_cache_mode = force_custom_plan"
        );
        // A connector's statements repeat (the filter's values are
        // parameters), so each connection keeps its prepared statements, up
        // to a bound a connector inventing new text cannot push past. Each
        // execution is still planned for its own values (custom plans): one
        // generic plan for every tenant would fit the big ones and the small
        // ones alike badly.
        if client.statement_cache.size() >= STATEMENT_CACHE {
            client.statement_cache.clear();
        }
        // Pipelined: the transaction's settings, then the statement (its
        // parse only when this connection has not prepared it yet, then its
        // execution), go out together: one round trip when the statement is
        // cached. The server runs them in order, so the statement is parsed
        // under `search_path = pg_catalog` and runs inside the read-only
        // transaction; if the settings failed, it is never run (an aborted
        // transaction refuses it).
        let run = async {
            let stmt = client.prepare_cached(statement).await.map_err(failed)?;
            driver::check_bound(stmt.params().len(), params.len())?;
            let decoders = stmt
                .columns()
                .iter()
                .map(|col| {
                    Decoder::for_type(col.type_())
                        .ok_or_else(|| driver::unsupported_column(col.name(), col.type_()))
                })
                .collect::<Result<Vec<_>>>()?;
            let stream = client
                .query_raw(&stmt, params.iter().map(Param))
                .await
                .map_err(failed)?;
            Ok::<_, Error>((stmt, decoders, stream))
        };
        // `biased`: the settings' future is polled first, and it queues its
        // message on that first poll, so it is ahead of the statement's.
        let (begun, ran) = tokio::join!(biased; client.batch_execute(&begin), run);
        begun.map_err(failed)?;
        let (stmt, decoders, stream) = ran?;
        let columns = stmt
            .columns()
            .iter()
            .zip(&decoders)
            .map(|(col, d)| Column {
                name: col.name().to_owned(),
                kind: d.column_type(),
                nullable: true,
            })
            .collect();
        Ok(Box::new(PgRows {
            lease,
            stream: Box::pin(stream),
            columns,
            decoders,
            done: false,
        }))
    }
}

/// Prepared statements a pooled connection keeps.
const STATEMENT_CACHE: usize = 256;

/// A pooled connection inside a read-only transaction. Unless released after
/// a clean end of the transaction, it is closed on drop rather than reused.
struct Lease(Option<Object>, Faults);

impl Lease {
    fn client(&self) -> Result<&Object> {
        self.0
            .as_ref()
            .ok_or_else(|| Error::Internal("connection already released".into()))
    }

    /// Ends the read-only transaction and returns the connection to the
    /// pool. `COMMIT` is queued, not awaited: a connection's messages run in
    /// the order sent, so it ends the transaction before anything the
    /// connection's next user sends, and the fetch does not wait a round trip
    /// for it. Committing a read-only transaction cannot fail but with the
    /// connection, and a closed connection is not handed out again.
    fn release(&mut self) {
        if let Some(conn) = self.0.take() {
            // `batch_execute` sends its message on its first poll.
            if let Some(Err(e)) = conn.batch_execute("COMMIT").now_or_never() {
                tracing::warn!("postgres: ending a transaction failed: {e}");
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            // Mid-transaction or mid-stream: detach and close it.
            drop(Object::take(conn));
        }
    }
}

struct PgRows {
    lease: Lease,
    stream: Pin<Box<RowStream>>,
    columns: Vec<Column>,
    decoders: Vec<Decoder>,
    done: bool,
}

#[async_trait]
impl RowSource for PgRows {
    fn columns(&self) -> &[Column] {
        &self.columns
    }

    async fn next_batch(&mut self, max: usize) -> Result<Option<Batch>> {
        if self.done {
            return Ok(None);
        }
        let width = self.decoders.len();
        let mut out = Batch::with_capacity(width, max.min(4096));
        // Rows are capped on the wire; the batch is capped here, so one batch
        // holds at most BATCH_BYTES plus one row.
        let mut bytes = 0u64;
        while out.len() < max && bytes < BATCH_BYTES {
            match self.stream.next().await {
                Some(Ok(row)) => {
                    let cells = self.decoders.iter().enumerate().map(|(i, decoder)| {
                        row.try_get::<_, Raw<'_>>(i)
                            .map_err(|e| e.into())
                            .and_then(|raw| {
                                bytes += raw.0.map_or(1, |b| b.len() as u64);
                                decoder.decode(raw.0)
                            })
                            .map_err(|e| Error::Datasource(format!("decoding column {i}: {e}")))
                    });
                    out.try_push_row(cells)?;
                }
                Some(Err(e)) => return Err(self.lease.1.map(e)),
                None => {
                    self.done = true;
                    self.lease.release();
                    break;
                }
            }
        }
        Ok((!out.is_empty() || !self.done).then_some(out))
    }
}

/// What a driver error means, for one statement: the server's failures by
/// their SQLSTATE only (see [`driver`]); a parameter the statement cannot
/// take, as the connector's error; an oversized row, as the limit it is;
/// connection failures say only that the database is unavailable, with
/// details in the host log.
#[derive(Clone)]
struct Faults {
    max_row_bytes: u64,
    /// Rows the wire guard refused, on any connection of the pool.
    oversized: Arc<AtomicU64>,
    /// That count when the statement began.
    seen: u64,
}

/// A hook that refuses a new connection which turns out to be a protected
/// store's server and database, whatever address it was reached by.
fn refuse_stores(net: &silo_capability::net::NetPolicy) -> Option<Hook> {
    let stores: Vec<(String, String)> = net
        .protected
        .iter()
        .filter_map(|p| Some((p.database.clone(), p.started.clone()?)))
        .collect();
    if stores.is_empty() {
        return None;
    }
    let stores = Arc::new(stores);
    Some(Hook::async_fn(move |client, _| {
        let stores = stores.clone();
        Box::pin(async move {
            let row = client
                .query_one(super::SERVER_IDENTITY, &[])
                .await
                .map_err(HookError::Backend)?;
            let database: String = row.try_get(0).map_err(HookError::Backend)?;
            let started: String = row.try_get(1).map_err(HookError::Backend)?;
            if stores.contains(&(database, started)) {
                return Err(HookError::message(silo_capability::net::STORE_REFUSAL));
            }
            Ok(())
        })
    }))
}

impl Faults {
    /// A copy for a statement starting now.
    fn now(&self) -> Faults {
        Faults {
            seen: self.oversized.load(Ordering::Relaxed),
            ..self.clone()
        }
    }

    fn map(&self, e: tokio_postgres::Error) -> Error {
        if let Some(why) = wire::refusal(&e) {
            // The address policy, not the database: say so.
            return Error::Policy(why);
        }
        if let Some(why) = wire::tls_failure(&e) {
            return Error::Config(format!("postgres: {why}"));
        }
        if wire::is_cleartext(&e) {
            return Error::Policy(
                "postgres: the server asked for the password in clear text over an unencrypted \
                 connection; refused (turn TLS on: tls.mode)"
                    .into(),
            );
        }
        match e.as_db_error() {
            Some(db) if *db.code() == SqlState::QUERY_CANCELED => ServerFailure::Timeout.into(),
            Some(db) if *db.code() == SqlState::READ_ONLY_SQL_TRANSACTION => {
                ServerFailure::ReadOnly.into()
            }
            Some(db) => ServerFailure::Other {
                message: db.message(),
                code: db.code().code(),
            }
            .into(),
            // The guard ends the connection; the driver then reports it
            // closed. (Another statement's refusal at the same moment could
            // be taken for this one's: the wording, not the bound, is off.)
            None if wire::is_row_too_large(&e)
                || (e.is_closed() && self.oversized.load(Ordering::Relaxed) > self.seen) =>
            {
                driver::row_too_large(self.max_row_bytes)
            }
            // Binding a value of the wrong type fails in the driver, before
            // anything is sent; its text names the types only.
            None if !e.is_closed()
                && std::error::Error::source(&e).is_some_and(|s| !s.is::<std::io::Error>()) =>
            {
                let why = std::error::Error::source(&e).map(ToString::to_string);
                Error::Connector(format!("type mismatch: {e}: {}", why.unwrap_or_default()))
            }
            None => driver::unavailable("postgres", e),
        }
    }
}
