//! The pooled MySQL/MariaDB driver. Each statement runs on its own pooled
//! connection inside `START TRANSACTION READ ONLY`, with the server's own
//! statement time limit set for the session, as one prepared statement. The
//! result is read by a future that owns the connection and that the consumer
//! polls in place, a batch at a time: a slow consumer is backpressure, and an
//! abandoned stream closes the connection instead of returning it mid-result.
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts};
use secrecy::{ExposeSecret, SecretString};
use silo_types::{Column, SqlDialect, Value};

use super::MysqlConfig;
use super::codec::{Decoder, param};
use silo_bindings::rows::RowSource;
use silo_capability::SqlClient;
use silo_capability::driver::{self, ServerFailure};
use silo_core::batch::Batch;
use silo_core::error::{Error, Result};
use silo_core::limits::{BATCH_BYTES, Limits};

/// Which statement-timeout variable the server understands.
const FLAVOR_UNKNOWN: u8 = 0;
const FLAVOR_MARIADB: u8 = 1;
const FLAVOR_MYSQL: u8 = 2;

/// Catalog views a MySQL connector may read while describing.
const CATALOG: &[(&str, &str)] = &[("information_schema", "columns")];

/// The driver's TLS options for `tls`. The driver connects to the address
/// the policy allowed, so the certificate is checked against the name.
fn ssl_opts(tls: &silo_capability::tls::TlsClient) -> mysql_async::SslOpts {
    use silo_capability::tls::TlsMode;
    let name = tls.server_name.to_str().into_owned();
    let opts = mysql_async::SslOpts::default().with_danger_tls_hostname_override(Some(name));
    match (tls.mode, &tls.ca_pem) {
        (TlsMode::VerifyFull, Some(pem)) => opts
            .with_root_certs(vec![pem.clone().into()])
            .with_disable_built_in_roots(true),
        (TlsMode::VerifyFull, None) => opts,
        (TlsMode::Require | TlsMode::Disable, _) => opts
            .with_danger_accept_invalid_certs(true)
            .with_danger_skip_domain_validation(true),
    }
}

/// A MySQL datasource's connection pool.
pub struct MyClient {
    pool: Pool,
    pool_size: usize,
    fetch_share: usize,
    database: String,
    statement_timeout: Duration,
    max_row_bytes: u64,
    flavor: AtomicU8,
}

impl MyClient {
    /// Builds the pool; connections are opened lazily.
    pub fn new(
        config: &MysqlConfig,
        password: Option<SecretString>,
        limits: &Limits,
        net: &silo_capability::net::NetPolicy,
    ) -> Result<MyClient> {
        // The driver resolves names itself: give it the address the policy
        // allowed.
        let host = net.pin(
            &config.host,
            config.port,
            silo_capability::net::Purpose::Database,
        )?;
        let (pool_size, fetch_share) =
            silo_capability::pool_bounds(config.pool_size, config.fetch_connections)?;
        let constraints = PoolConstraints::new(0, pool_size)
            .ok_or_else(|| Error::Config("mysql pool_size must be at least 1".into()))?;
        // The driver refuses a packet over this from its header, before
        // buffering it: a row is never larger than max_row_bytes in memory.
        let max_packet = usize::try_from(limits.max_row_bytes).unwrap_or(usize::MAX);
        let tls = config.tls.client(&config.host)?;
        let opts = OptsBuilder::default()
            .ip_or_hostname(host)
            .ssl_opts(tls.as_ref().map(ssl_opts))
            // The password in clear only inside TLS.
            .enable_cleartext_plugin(tls.is_some())
            .tcp_port(config.port)
            .db_name(Some(config.database.clone()))
            .user(Some(config.user.clone()))
            .pass(password.as_ref().map(|p| p.expose_secret().to_owned()))
            .max_allowed_packet(Some(max_packet))
            .pool_opts(PoolOpts::default().with_constraints(constraints));
        Ok(MyClient {
            pool: Pool::new(opts),
            pool_size,
            fetch_share,
            database: config.database.clone(),
            statement_timeout: limits.statement_timeout,
            max_row_bytes: limits.max_row_bytes,
            flavor: AtomicU8::new(FLAVOR_UNKNOWN),
        })
    }

    /// A pooled connection; waits for one at most a statement's time, then
    /// reports the datasource busy.
    async fn connection(&self) -> Result<Conn> {
        match tokio::time::timeout(self.statement_timeout, self.pool.get_conn()).await {
            Ok(conn) => conn.map_err(|e| self.error(e)),
            Err(_) => Err(driver::busy(self.pool_size)),
        }
    }

    fn error(&self, e: mysql_async::Error) -> Error {
        my_error(e, self.max_row_bytes)
    }

    /// Sets the session's statement time limit, learning once which variable
    /// this server has (MariaDB: seconds; MySQL: milliseconds, SELECT only).
    async fn limit_time(&self, conn: &mut Conn) -> Result<()> {
        let ms = self.statement_timeout.as_millis();
        let mariadb = format!(
            "SET SESSION max_statement_time = {}.{:03}",
            ms / 1000,
            ms % 1000
        );
        let mysql = format!("SET SESSION max_execution_time = {ms}");
        match self.flavor.load(Ordering::Relaxed) {
            FLAVOR_MARIADB => conn.query_drop(mariadb).await.map_err(|e| self.error(e)),
            FLAVOR_MYSQL => conn.query_drop(mysql).await.map_err(|e| self.error(e)),
            _ => {
                if conn.query_drop(mariadb).await.is_ok() {
                    self.flavor.store(FLAVOR_MARIADB, Ordering::Relaxed);
                    Ok(())
                } else {
                    conn.query_drop(mysql).await.map_err(|e| self.error(e))?;
                    self.flavor.store(FLAVOR_MYSQL, Ordering::Relaxed);
                    Ok(())
                }
            }
        }
    }
}

#[async_trait]
impl SqlClient for MyClient {
    fn dialect(&self) -> SqlDialect {
        SqlDialect::MySql
    }

    fn default_schema(&self) -> &str {
        &self.database
    }

    fn catalog(&self) -> &'static [(&'static str, &'static str)] {
        CATALOG
    }

    fn fetch_share(&self) -> usize {
        self.fetch_share
    }

    async fn write_privileges(&self) -> Result<Vec<String>> {
        let mut conn = self.connection().await?;
        let grants: Vec<String> = conn.query("SHOW GRANTS").await.map_err(|e| self.error(e))?;
        Ok(silo_capability::registration::mysql_offending(
            &grants,
            &self.database,
        ))
    }

    async fn query(&self, statement: &str, params: Vec<Value>) -> Result<Box<dyn RowSource>> {
        let mut conn = self.connection().await?;
        self.limit_time(&mut conn).await?;
        conn.query_drop("START TRANSACTION READ ONLY")
            .await
            .map_err(|e| self.error(e))?;
        let stmt = conn.prep(statement).await.map_err(|e| self.error(e))?;
        driver::check_bound(usize::from(stmt.num_params()), params.len())?;
        let mut decoders = Vec::new();
        let mut columns = Vec::new();
        for c in stmt.columns().iter() {
            let d = Decoder::for_column(c).ok_or_else(|| {
                driver::unsupported_column(&c.name_str(), format!("{:?}", c.column_type()))
            })?;
            columns.push(Column {
                name: c.name_str().into_owned(),
                kind: d.column_type(),
                nullable: true,
            });
            decoders.push(d);
        }
        let values: Vec<mysql_async::Value> = params.iter().map(param).collect();
        let buffer = Arc::new(Mutex::new(Buffer {
            rows: Batch::with_capacity(decoders.len(), 0),
            want: 0,
        }));
        let reader = read_rows(
            Lease(Some(conn)),
            stmt,
            values,
            decoders,
            buffer.clone(),
            self.max_row_bytes,
        );
        Ok(Box::new(MyRows {
            columns,
            reader: Some(Box::pin(reader)),
            buffer,
        }))
    }
}

/// Rows the reader has decoded and the consumer has not taken yet.
struct Buffer {
    rows: Batch,
    /// How many rows the consumer asked for: the reader hands over at that.
    want: usize,
}

fn lock(buffer: &Mutex<Buffer>) -> std::sync::MutexGuard<'_, Buffer> {
    // Only the consumer and its own reader future touch the buffer, on one
    // thread, one at a time; a poisoned lock still holds whole rows.
    buffer.lock().unwrap_or_else(|p| p.into_inner())
}

/// A pooled connection that is closed, not pooled, unless the read finished
/// and committed: a result abandoned midway must not be reused.
struct Lease(Option<Conn>);

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = conn.disconnect().await;
            });
        }
    }
}

/// Suspends the reader once so the consumer can take a full buffer. It
/// registers no waker: only [`MyRows::next_batch`] polls the reader, and it
/// returns as soon as the buffer is full.
struct Handoff(bool);

impl Future for Handoff {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

/// Reads the result set, decoding rows into `buffer` a batch at a time, then
/// commits and returns the connection to the pool. It runs only while the
/// consumer polls it, on the consumer's thread: no task, no channel.
async fn read_rows(
    mut lease: Lease,
    stmt: mysql_async::Statement,
    values: Vec<mysql_async::Value>,
    decoders: Vec<Decoder>,
    buffer: Arc<Mutex<Buffer>>,
    max_row_bytes: u64,
) -> Result<()> {
    let my_error = |e| my_error(e, max_row_bytes);
    let conn = lease
        .0
        .as_mut()
        .ok_or_else(|| Error::Internal("mysql lease without a connection".into()))?;
    let mut result = conn
        .exec_iter(&stmt, Params::Positional(values))
        .await
        .map_err(my_error)?;
    let width = decoders.len();
    let mut want = lock(&buffer).want.max(1);
    let mut batch = Batch::with_capacity(width, want);
    let mut bytes = 0u64;
    while let Some(mut row) = result.next().await.map_err(my_error)? {
        let cells = decoders.iter().enumerate().map(|(i, d)| {
            // Moves the cell out. Converting to the driver's own value type
            // cannot fail, and its error would hold the value anyway.
            let raw = match row.take_opt::<mysql_async::Value, _>(i) {
                Some(Ok(v)) => v,
                Some(Err(e)) => e.0,
                None => mysql_async::Value::NULL,
            };
            bytes += match &raw {
                mysql_async::Value::Bytes(b) => b.len() as u64,
                _ => 8,
            };
            d.decode(raw).map_err(Error::Datasource)
        });
        batch.try_push_row(cells)?;
        // A batch is handed over at the rows asked for or at BATCH_BYTES.
        if batch.len() >= want || bytes >= BATCH_BYTES {
            bytes = 0;
            lock(&buffer).rows.append(&mut batch);
            Handoff(false).await;
            want = lock(&buffer).want.max(1);
            batch = Batch::with_capacity(width, want);
        }
    }
    drop(result);
    lock(&buffer).rows.append(&mut batch);
    if let Some(mut conn) = lease.0.take()
        && let Err(e) = conn.query_drop("COMMIT").await
    {
        tracing::warn!("mysql commit after a read failed: {e}");
        let _ = conn.disconnect().await;
    }
    Ok(())
}

struct MyRows {
    columns: Vec<Column>,
    reader: Option<Pin<Box<dyn Future<Output = Result<()>> + Send>>>,
    buffer: Arc<Mutex<Buffer>>,
}

#[async_trait]
impl RowSource for MyRows {
    fn columns(&self) -> &[Column] {
        &self.columns
    }

    async fn next_batch(&mut self, max: usize) -> Result<Option<Batch>> {
        let max = max.max(1);
        lock(&self.buffer).want = max;
        if let Some(reader) = self.reader.as_mut() {
            let buffer = &self.buffer;
            let finished = std::future::poll_fn(|cx| {
                if lock(buffer).rows.len() >= max {
                    return Poll::Ready(None);
                }
                match reader.as_mut().poll(cx) {
                    Poll::Ready(outcome) => Poll::Ready(Some(outcome)),
                    Poll::Pending if lock(buffer).rows.len() >= max => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            if let Some(outcome) = finished {
                self.reader = None;
                outcome?;
            }
        }
        let mut buffer = lock(&self.buffer);
        if buffer.rows.is_empty() {
            return Ok(None);
        }
        let rest = buffer.rows.split_off(max);
        Ok(Some(std::mem::replace(&mut buffer.rows, rest)))
    }
}

/// Maps a driver error for the connector: the server's failures by their
/// SQLSTATE and error number only (see [`driver`]); an oversized row, as the
/// limit it is; connection failures say only that the database is
/// unavailable.
fn my_error(e: mysql_async::Error, max_row_bytes: u64) -> Error {
    match e {
        mysql_async::Error::Server(s) => match s.code {
            // MariaDB ER_STATEMENT_TIMEOUT, MySQL ER_QUERY_TIMEOUT.
            1969 | 3024 => ServerFailure::Timeout.into(),
            // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
            1792 => ServerFailure::ReadOnly.into(),
            _ => ServerFailure::Other {
                message: &s.message,
                code: &s.state,
            }
            .into(),
        },
        mysql_async::Error::Io(mysql_async::IoError::Io(io))
            if io.get_ref().is_some_and(|inner| {
                // mysql_common's PacketCodecError::PacketTooLarge, refused
                // from the packet header.
                inner.to_string().contains("max_allowed_packet")
            }) =>
        {
            driver::row_too_large(max_row_bytes)
        }
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            Error::Config(
                "mysql: the server does not offer TLS (set tls.mode = \"disable\" only for a \
                 server on a trusted network)"
                    .into(),
            )
        }
        mysql_async::Error::Driver(mysql_async::DriverError::CleartextPluginDisabled) => {
            Error::Policy(
                "mysql: the server asked for the password in clear text over an unencrypted \
                 connection; refused (turn TLS on: tls.mode)"
                    .into(),
            )
        }
        other => match driver::tls_failure("mysql", &other) {
            Some(tls) => tls,
            None => driver::unavailable("mysql", other),
        },
    }
}
