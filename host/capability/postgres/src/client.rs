//! The pooled driver. Every connection runs read-only (each transaction,
//! the implicit one of a single statement included, starts `READ ONLY`)
//! with a `statement_timeout` and `search_path` pinned to `pg_catalog` (so a
//! function name can only mean a built-in): the settings travel in the
//! startup packet and are checked on the new connection before its first
//! use, so a server or pooler that dropped them is refused, not trusted.
//! A statement is then one prepared execution, one round trip, no
//! `BEGIN`/`COMMIT` around it. A connection that did not end a statement
//! cleanly is closed, never returned to the pool. Connections are opened
//! through [`super::wire`], which caps every message's size.
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use futures_util::StreamExt;
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
        let session = Session {
            statement_timeout_ms: settings.statement_timeout.as_millis(),
            // A transaction left idle past the whole-fetch deadline is ended
            // by the server too, should the host somehow keep one open.
            idle_ms: settings.fetch_timeout.as_millis(),
        };
        pg.options(session.startup_options());
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
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(settings.statement_timeout))
            .post_create(check_new(session, &settings.net));
        let pool = pool
            .build()
            .map_err(|e| Error::Config(format!("postgres pool: {e}")))?;
        Ok(PgClient {
            pool,
            pool_size,
            fetch_share,
            schema: c.schema.clone(),
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
        // A connector's statements repeat (the filter's values are
        // parameters), so each connection keeps its prepared statements, up
        // to a bound a connector inventing new text cannot push past. The
        // parse goes out only when this connection has not prepared it yet;
        // the execution is one round trip.
        if client.statement_cache.size() >= STATEMENT_CACHE {
            client.statement_cache.clear();
        }
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

/// A pooled connection running one statement. Unless released after the
/// statement's clean end, it is closed on drop rather than reused.
struct Lease(Option<Object>, Faults);

impl Lease {
    fn client(&self) -> Result<&Object> {
        self.0
            .as_ref()
            .ok_or_else(|| Error::Internal("connection already released".into()))
    }

    /// Returns the connection to the pool: its statement ended cleanly (the
    /// server ended its implicit transaction with it).
    fn release(&mut self) {
        drop(self.0.take());
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

/// The settings every connection of a pool runs under.
#[derive(Debug, Clone, Copy)]
struct Session {
    statement_timeout_ms: u128,
    idle_ms: u128,
}

impl Session {
    /// The startup packet's `options`: the server applies them before the
    /// connection's first statement.
    fn startup_options(&self) -> String {
        format!(
            "-c default_transaction_read_only=on -c statement_timeout={} \
             -c idle_in_transaction_session_timeout={} -c search_path=pg_catalog",
            self.statement_timeout_ms, self.idle_ms
        )
    }

    /// The settings as [`SESSION_CHECK`] reads them back.
    fn expected(&self) -> [String; 5] {
        [
            "on".into(),
            "on".into(),
            "pg_catalog".into(),
            self.statement_timeout_ms.to_string(),
            self.idle_ms.to_string(),
        ]
    }
}

/// What a new connection actually runs under (timeouts in ms), read back
/// before its first use.
const SESSION_CHECK: &str = "SELECT pg_catalog.current_setting('default_transaction_read_only'), \
     pg_catalog.current_setting('transaction_read_only'), \
     pg_catalog.current_setting('search_path'), \
     (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'statement_timeout'), \
     (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'idle_in_transaction_session_timeout')";

/// Why a connection whose server did not apply [`Session`] is refused.
const SESSION_REFUSAL: &str = "postgres: the server did not apply Silo's session settings \
     (read-only transactions, statement timeout, search_path); connect to the database itself \
     or through a session-mode pooler (a transaction-mode pooler drops them)";

/// The hook every new connection passes before its first use: it runs
/// under `session` (else refused), and, when stores are protected, it is
/// not a protected store's server and database, whatever address it was
/// reached by.
fn check_new(session: Session, net: &silo_capability::net::NetPolicy) -> Hook {
    let stores: Arc<Vec<(String, String)>> = Arc::new(
        net.protected
            .iter()
            .filter_map(|p| Some((p.database.clone(), p.started.clone()?)))
            .collect(),
    );
    Hook::async_fn(move |client, _| {
        let stores = stores.clone();
        Box::pin(async move {
            if !stores.is_empty() {
                let row = client
                    .query_one(super::SERVER_IDENTITY, &[])
                    .await
                    .map_err(HookError::Backend)?;
                let database: String = row.try_get(0).map_err(HookError::Backend)?;
                let started: String = row.try_get(1).map_err(HookError::Backend)?;
                if stores.contains(&(database, started)) {
                    return Err(HookError::message(silo_capability::net::STORE_REFUSAL));
                }
            }
            let row = client
                .query_one(SESSION_CHECK, &[])
                .await
                .map_err(HookError::Backend)?;
            let got = (0..5)
                .map(|i| row.try_get::<_, String>(i))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(HookError::Backend)?;
            if got[..] != session.expected()[..] {
                tracing::warn!(
                    ?got,
                    "postgres: a new connection runs without its session settings"
                );
                return Err(HookError::message(SESSION_REFUSAL));
            }
            Ok(())
        })
    })
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
