//! The pooled MySQL/MariaDB driver. Each statement runs on its own pooled
//! connection inside `START TRANSACTION READ ONLY`, with the server's own
//! statement time limit set for the session, as one prepared statement. Rows
//! stream through a bounded channel from a task that owns the connection, so
//! a slow reader applies backpressure and an abandoned stream closes the
//! connection instead of returning it mid-result.
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts};
use secrecy::{ExposeSecret, SecretString};
use silo_types::{Column, SqlDialect, Value};
use tokio::sync::mpsc;

use super::MysqlConfig;
use super::codec::{Decoder, param};
use crate::capability::driver::{self, ServerFailure};
use crate::capability::{RowSource, SqlClient};
use crate::error::{Error, Result};
use crate::limits::BATCH_ROWS;

/// Batches buffered between the connection task and the reader.
const CHANNEL_BATCHES: usize = 2;

/// Which statement-timeout variable the server understands.
const FLAVOR_UNKNOWN: u8 = 0;
const FLAVOR_MARIADB: u8 = 1;
const FLAVOR_MYSQL: u8 = 2;

/// Catalog views a MySQL connector may read while describing.
const CATALOG: &[(&str, &str)] = &[("information_schema", "columns")];

/// A MySQL datasource's connection pool.
pub struct MyClient {
    pool: Pool,
    database: String,
    statement_timeout: Duration,
    flavor: AtomicU8,
}

impl MyClient {
    /// Builds the pool; connections are opened lazily.
    pub fn new(
        config: &MysqlConfig,
        password: Option<SecretString>,
        statement_timeout: Duration,
    ) -> Result<MyClient> {
        let constraints = PoolConstraints::new(0, config.pool_size.max(1))
            .ok_or_else(|| Error::Config("mysql pool_size must be at least 1".into()))?;
        let opts = OptsBuilder::default()
            .ip_or_hostname(config.host.clone())
            .tcp_port(config.port)
            .db_name(Some(config.database.clone()))
            .user(Some(config.user.clone()))
            .pass(password.as_ref().map(|p| p.expose_secret().to_owned()))
            .pool_opts(PoolOpts::default().with_constraints(constraints));
        Ok(MyClient {
            pool: Pool::new(opts),
            database: config.database.clone(),
            statement_timeout,
            flavor: AtomicU8::new(FLAVOR_UNKNOWN),
        })
    }

    async fn connection(&self) -> Result<Conn> {
        self.pool
            .get_conn()
            .await
            .map_err(|e| driver::unavailable("mysql", e))
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
            FLAVOR_MARIADB => conn.query_drop(mariadb).await.map_err(my_error),
            FLAVOR_MYSQL => conn.query_drop(mysql).await.map_err(my_error),
            _ => {
                if conn.query_drop(mariadb).await.is_ok() {
                    self.flavor.store(FLAVOR_MARIADB, Ordering::Relaxed);
                    Ok(())
                } else {
                    conn.query_drop(mysql).await.map_err(my_error)?;
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

    async fn write_privileges(&self) -> Result<Vec<String>> {
        let mut conn = self.connection().await?;
        let grants: Vec<String> = conn.query("SHOW GRANTS").await.map_err(my_error)?;
        Ok(crate::capability::registration::mysql_offending(
            &grants,
            &self.database,
        ))
    }

    async fn query(&self, statement: &str, params: Vec<Value>) -> Result<Box<dyn RowSource>> {
        let mut conn = self.connection().await?;
        self.limit_time(&mut conn).await?;
        conn.query_drop("START TRANSACTION READ ONLY")
            .await
            .map_err(my_error)?;
        let stmt = conn.prep(statement).await.map_err(my_error)?;
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
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        tokio::spawn(stream_rows(conn, stmt, values, decoders, tx));
        Ok(Box::new(MyRows {
            columns,
            rx,
            pending: Vec::new(),
            done: false,
        }))
    }
}

type Batch = Result<Vec<Vec<Value>>>;

/// Owns the connection for the life of the result: sends batches until done,
/// then commits and returns the connection to the pool. If the reader goes
/// away first, the connection is closed rather than reused mid-result.
async fn stream_rows(
    mut conn: Conn,
    stmt: mysql_async::Statement,
    values: Vec<mysql_async::Value>,
    decoders: Vec<Decoder>,
    tx: mpsc::Sender<Batch>,
) {
    let outcome: std::result::Result<bool, Error> = async {
        let mut result = conn
            .exec_iter(&stmt, Params::Positional(values))
            .await
            .map_err(my_error)?;
        let mut batch = Vec::with_capacity(BATCH_ROWS as usize);
        while let Some(mut row) = result.next().await.map_err(my_error)? {
            let mut cells = Vec::with_capacity(decoders.len());
            for (i, d) in decoders.iter().enumerate() {
                let raw = row
                    .take::<mysql_async::Value, _>(i)
                    .unwrap_or(mysql_async::Value::NULL);
                cells.push(d.decode(raw).map_err(Error::Datasource)?);
            }
            batch.push(cells);
            if batch.len() >= BATCH_ROWS as usize
                && tx.send(Ok(std::mem::take(&mut batch))).await.is_err()
            {
                return Ok(false);
            }
        }
        drop(result);
        if !batch.is_empty() && tx.send(Ok(batch)).await.is_err() {
            return Ok(false);
        }
        Ok(true)
    }
    .await;
    match outcome {
        Ok(true) => {
            if let Err(e) = conn.query_drop("COMMIT").await {
                tracing::warn!("mysql commit after a read failed: {e}");
            }
        }
        Ok(false) => {
            let _ = conn.disconnect().await;
        }
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            let _ = conn.disconnect().await;
        }
    }
}

struct MyRows {
    columns: Vec<Column>,
    rx: mpsc::Receiver<Batch>,
    pending: Vec<Vec<Value>>,
    done: bool,
}

#[async_trait]
impl RowSource for MyRows {
    fn columns(&self) -> &[Column] {
        &self.columns
    }

    async fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Vec<Value>>>> {
        if self.pending.is_empty() && !self.done {
            match self.rx.recv().await {
                Some(batch) => self.pending = batch?,
                None => self.done = true,
            }
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        let take = max.min(self.pending.len());
        let rest = self.pending.split_off(take);
        Ok(Some(std::mem::replace(&mut self.pending, rest)))
    }
}

/// Maps a driver error for the connector: SQL errors keep the server's own
/// message; connection failures say only that the database is unavailable.
fn my_error(e: mysql_async::Error) -> Error {
    match e {
        mysql_async::Error::Server(s) => match s.code {
            // MariaDB ER_STATEMENT_TIMEOUT, MySQL ER_QUERY_TIMEOUT.
            1969 | 3024 => ServerFailure::Timeout.into(),
            // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
            1792 => ServerFailure::ReadOnly(&s.message).into(),
            _ => ServerFailure::Other {
                message: &s.message,
                code: &s.state,
            }
            .into(),
        },
        other => driver::unavailable("mysql", other),
    }
}
