//! Host capabilities a connector can import. Each lives in its own module with
//! the same shape (config, client, value codec); what they share — the
//! generated-trait glue and the row-stream resource — is here, and every
//! statement goes through [`silo_policy`] before a client sees it.
mod driver;
pub mod files;
pub mod http;
pub mod mongodb;
pub mod mysql;
pub mod net;
pub mod postgres;
pub mod registration;
pub mod tls;

use std::sync::Arc;

use async_trait::async_trait;
use silo_types::{SqlDialect, Value};
use wasmtime::component::Resource;

use crate::bindings::WitErrors;
use crate::bindings::silo::connector::{log, sql, streams, types};
pub use crate::rows::{FetchShare, HostRowStream, Permitted, RowSource};
pub use crate::runtime::Kind;
use crate::runtime::State;
use silo_core::error::{Error, Result};
use silo_core::limits::BATCH_ROWS;
use silo_policy::sql::GovernedTable;

/// A datasource's driver, by kind.
#[derive(Clone)]
pub enum Backend {
    /// A SQL database.
    Sql(Arc<dyn SqlClient>),
    /// A MongoDB database.
    Document(Arc<mongodb::MongoClient>),
    /// Uploaded files.
    Files(Arc<files::FilesStore>),
    /// An HTTP API.
    Http(Arc<http::HttpClient>),
}

impl Backend {
    /// Which capability this backend is granted as.
    pub fn kind(&self) -> Kind {
        match self {
            Backend::Sql(_) => Kind::Sql,
            Backend::Document(_) => Kind::Document,
            Backend::Files(_) => Kind::Files,
            Backend::Http(_) => Kind::Http,
        }
    }

    /// Schema or database an unqualified dataset name resolves to.
    pub fn default_schema(&self) -> &str {
        match self {
            Backend::Sql(c) => c.default_schema(),
            Backend::Document(c) => c.database(),
            Backend::Files(s) => s.org(),
            // An API has no schemas: datasets are named as configured.
            Backend::Http(_) => "",
        }
    }
}

/// The capability one instance holds: its backend, and the governed
/// tables or collections with this user's filters.
#[derive(Clone)]
pub enum Grant {
    /// The SQL capability.
    Sql(SqlGrant),
    /// The document capability.
    Document(DocumentGrant),
    /// Read-only preopened directories.
    Files(files::Preopens),
    /// GET requests to the datasource's API.
    Http(http::HttpGrant),
}

impl crate::runtime::Grant for Grant {
    fn preopened(&self) -> &[(std::path::PathBuf, String)] {
        match self {
            Grant::Files(p) => &p.dirs,
            _ => &[],
        }
    }
}

/// What a fetch may do with documents: the pool and the governed collections.
#[derive(Clone)]
pub struct DocumentGrant {
    /// The pooled driver.
    pub client: Arc<mongodb::MongoClient>,
    /// Governed collections with this user's filters.
    pub collections: Arc<[GovernedTable]>,
    /// Whether this instance only describes: sampling field names is allowed.
    pub describing: bool,
    /// This fetch's share of the datasource's connections (open cursors).
    pub share: FetchShare,
}

impl DocumentGrant {
    /// The policy view of this grant.
    pub fn governed(&self) -> silo_policy::document::Governed<'_> {
        silo_policy::document::Governed {
            database: self.client.database(),
            collections: &self.collections,
        }
    }
}

impl State {
    /// Counts one capability call against this instance's budget and checks
    /// the size of what the connector sent, before any policy work.
    fn admit(&mut self, text_bytes: usize, values: usize) -> Result<()> {
        if !self.charge_query(MAX_QUERIES) {
            return Err(Error::Limit(format!(
                "at most {MAX_QUERIES} statements per fetch"
            )));
        }
        if text_bytes > MAX_STATEMENT_BYTES || values > MAX_PARAMS {
            return Err(Error::Limit(format!(
                "statements are limited to {MAX_STATEMENT_BYTES} bytes and {MAX_PARAMS} parameters"
            )));
        }
        Ok(())
    }

    /// Hands a row source to the guest as a `row-stream`, or reports why
    /// there is none.
    fn push_stream(
        &mut self,
        result: Result<Box<dyn RowSource>>,
    ) -> wasmtime::Result<Result<Resource<HostRowStream>, types::Error>> {
        match self.report(result) {
            Ok(source) => Ok(Ok(self.table().push(HostRowStream { source })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Logs a refused or failed call and words it for the connector.
    fn report<T>(&self, result: Result<T>) -> Result<T, types::Error> {
        result.map_err(|e| {
            tracing::info!(
                connector = self.connector(),
                fault = e.fault(),
                "call refused or failed: {e}"
            );
            e.to_wit()
        })
    }
}

/// Statements one fetch may send, refused ones included. An open stream holds
/// a pooled connection and every refusal is logged, so this bounds both what
/// one fetch can take from the pool and how much log it can cause; real
/// connectors send one to three.
const MAX_QUERIES: usize = 16;
/// Longest statement a connector may send.
const MAX_STATEMENT_BYTES: usize = 64 << 10;
/// Most bind values a connector may send with one statement.
const MAX_PARAMS: usize = 1024;
/// Longest log line kept from a connector.
const MAX_LOG_LINE: usize = 1024;

/// Checks a datasource's pool settings, which an org may supply: the pool
/// size (1 to [`postgres::MAX_POOL_SIZE`]) and how many of its connections one
/// fetch may hold (default: a quarter, at least one; never the whole pool of
/// more than one). Returns both.
pub fn pool_bounds(pool_size: usize, fetch_connections: Option<usize>) -> Result<(usize, usize)> {
    if !(1..=postgres::MAX_POOL_SIZE).contains(&pool_size) {
        return Err(Error::Config(format!(
            "pool_size must be between 1 and {}",
            postgres::MAX_POOL_SIZE
        )));
    }
    let share = fetch_connections.unwrap_or((pool_size / 4).max(1));
    let most = if pool_size > 1 { pool_size - 1 } else { 1 };
    if !(1..=most).contains(&share) {
        return Err(Error::Config(format!(
            "fetch_connections must be between 1 and {most} (pool_size {pool_size}): one fetch \
             may not hold the whole pool"
        )));
    }
    Ok((pool_size, share))
}

/// The driver behind the SQL capability (Postgres now, MySQL next).
#[async_trait]
pub trait SqlClient: Send + Sync {
    /// Placeholder and quoting style of this database.
    fn dialect(&self) -> SqlDialect;
    /// Schema an unqualified table name resolves to.
    fn default_schema(&self) -> &str;
    /// Catalog relations a connector may read, unfiltered, while describing.
    fn catalog(&self) -> &'static [(&'static str, &'static str)];
    /// Statements one fetch may hold open at once (`fetch_connections`).
    fn fetch_share(&self) -> usize;
    /// Runs an already-enforced statement read-only and streams its rows.
    async fn query(&self, statement: &str, params: Vec<Value>) -> Result<Box<dyn RowSource>>;
    /// What the configured credential may do beyond reading, one entry per
    /// privilege (empty: read-only). See [`registration`].
    async fn write_privileges(&self) -> Result<Vec<String>>;
}

/// What a fetch may do with SQL: the datasource's client, its governed tables
/// (each carrying this user's filter), and catalog relations readable as-is.
#[derive(Clone)]
pub struct SqlGrant {
    /// The pooled driver.
    pub client: Arc<dyn SqlClient>,
    /// Governed tables with this user's filters.
    pub tables: Arc<[GovernedTable]>,
    /// Relations readable without a filter (catalog views, for describe only).
    pub readable: &'static [(&'static str, &'static str)],
    /// This fetch's share of the datasource's connections.
    pub share: FetchShare,
}

impl types::Host for State {}
impl streams::Host for State {}

impl streams::HostRowStream for State {
    async fn columns(
        &mut self,
        stream: Resource<HostRowStream>,
    ) -> wasmtime::Result<Vec<types::Column>> {
        let s = self.table().get(&stream)?;
        Ok(s.source.columns().iter().cloned().map(Into::into).collect())
    }

    async fn next_batch(
        &mut self,
        stream: Resource<HostRowStream>,
        max_rows: u32,
    ) -> wasmtime::Result<Result<Option<Vec<types::Row>>, types::Error>> {
        let s = self.table().get_mut(&stream)?;
        let max = max_rows.clamp(1, BATCH_ROWS * 4) as usize;
        Ok(match s.source.next_batch(max).await {
            Ok(batch) => Ok(batch.map(|rows| rows.into_rows_with(Into::into))),
            Err(e) => Err(e.to_wit()),
        })
    }

    async fn drop(&mut self, stream: Resource<HostRowStream>) -> wasmtime::Result<()> {
        self.table().delete(stream)?;
        Ok(())
    }
}

impl sql::Host for State {
    async fn query(
        &mut self,
        statement: String,
        params: Vec<types::Value>,
    ) -> wasmtime::Result<Result<Resource<HostRowStream>, types::Error>> {
        let result = match self.grant::<Grant>().cloned() {
            Some(Grant::Sql(grant)) => match self.admit(statement.len(), params.len()) {
                Ok(()) => {
                    let params = params.into_iter().map(Into::into).collect();
                    run_sql(&grant, &statement, params).await
                }
                Err(e) => Err(e),
            },
            _ => Err(Error::Policy("this connector has no SQL capability".into())),
        };
        self.push_stream(result)
    }
}

impl log::Host for State {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let mut line = message;
        if line.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        if !self.charge_log(line.len()) {
            return Ok(());
        }
        let connector = self.connector().to_owned();
        match level {
            log::Level::Debug => tracing::debug!(connector, "{line}"),
            log::Level::Info => tracing::info!(connector, "{line}"),
            log::Level::Warn => tracing::warn!(connector, "{line}"),
            log::Level::Error => tracing::error!(connector, "{line}"),
        }
        Ok(())
    }
}

/// Enforces the grant's policy on a connector's statement, then runs it.
async fn run_sql(
    grant: &SqlGrant,
    statement: &str,
    params: Vec<Value>,
) -> Result<Box<dyn RowSource>> {
    let client = &grant.client;
    let rewritten = silo_policy::sql::rewrite(
        client.dialect(),
        statement,
        params,
        client.default_schema(),
        &grant.tables,
        grant.readable,
    )
    .map_err(|e| Error::Policy(e.to_string()))?;
    Permitted::open(&grant.share, client.query(&rewritten.sql, rewritten.params)).await
}
