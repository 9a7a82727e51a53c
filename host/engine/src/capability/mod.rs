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

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use silo_types::{Column, SqlDialect, Value};
use wasmtime::component::Resource;

use crate::runtime::State;
use crate::runtime::bindings::WitErrors;
use crate::runtime::bindings::silo::connector::{log, sql, streams, types};
use silo_core::batch::Batch;
use silo_core::error::{Error, Result};
use silo_core::limits::BATCH_ROWS;
use silo_policy::sql::GovernedTable;

/// What a datasource's connector may import besides logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `silo:connector/sql` (Postgres, MySQL).
    Sql,
    /// `silo:connector/document` (MongoDB).
    Document,
    /// `silo:connector/files` (uploads, through preopened directories).
    Files,
    /// `silo:connector/http` (a JSON or REST API).
    Http,
}

impl Kind {
    /// The WIT interface this kind grants.
    pub fn interface(self) -> &'static str {
        match self {
            Kind::Sql => "sql",
            Kind::Document => "document",
            Kind::Files => "files",
            Kind::Http => "http",
        }
    }

    /// Every kind, in the order `silo connector new --kind` lists them.
    pub const ALL: [Kind; 4] = [Kind::Sql, Kind::Document, Kind::Files, Kind::Http];
}

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

/// A host-side source of rows: a database cursor, or anything else that
/// yields rows without the guest in the loop.
#[async_trait]
pub trait RowSource: Send {
    /// The columns every row carries, in order.
    fn columns(&self) -> &[Column];
    /// Up to `max` rows, each as wide as [`RowSource::columns`], or `None`
    /// when finished.
    async fn next_batch(&mut self, max: usize) -> Result<Option<Batch>>;
}

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

/// Statements one fetch holds open at once against its datasource, bounded
/// by the datasource's `fetch_connections` so other fetches keep the rest of
/// the pool. A statement's permit lives as long as its row stream.
#[derive(Clone)]
pub struct FetchShare(Arc<tokio::sync::Semaphore>, usize);

impl FetchShare {
    /// A share of `n` open statements.
    pub fn new(n: usize) -> FetchShare {
        FetchShare(Arc::new(tokio::sync::Semaphore::new(n)), n)
    }

    /// A permit for one more open statement, or a limit error.
    pub fn take(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().map_err(|_| {
            Error::Limit(format!(
                "a fetch may hold {} statements open at once against this datasource; \
                 read or drop one first",
                self.1
            ))
        })
    }
}

/// A row source holding one of its fetch's [`FetchShare`] permits.
pub struct Permitted {
    source: Box<dyn RowSource>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Permitted {
    /// Runs `open` under a permit of `share`, and keeps the permit with the
    /// source it opens.
    pub async fn open<F>(share: &FetchShare, open: F) -> Result<Box<dyn RowSource>>
    where
        F: Future<Output = Result<Box<dyn RowSource>>>,
    {
        let permit = share.take()?;
        let source = open.await?;
        Ok(Box::new(Permitted {
            source,
            _permit: permit,
        }))
    }
}

#[async_trait]
impl RowSource for Permitted {
    fn columns(&self) -> &[Column] {
        self.source.columns()
    }

    async fn next_batch(&mut self, max: usize) -> Result<Option<Batch>> {
        self.source.next_batch(max).await
    }
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

/// The `row-stream` resource: a host row source the guest holds a handle to.
pub struct HostRowStream {
    /// Where the rows come from.
    pub source: Box<dyn RowSource>,
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
        let result = match self.grant.clone() {
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

/// Opens the SQL client a datasource's config names, and the built-in
/// connector that serves it unless the config names another.
pub fn connect(
    name: &str,
    ds: &crate::config::DatasourceConfig,
    limits: &silo_core::limits::Limits,
    net: &net::NetPolicy,
) -> Result<(Backend, &'static str)> {
    let statement_timeout = limits.statement_timeout;
    // A password the store supplies wins over one the config file names.
    let secret = |env: Option<&str>, file: Option<&std::path::Path>| match &ds.password {
        Some(p) => Ok(Some(p.clone())),
        None => crate::config::read_secret(env, file),
    };
    let others = usize::from(ds.postgres.is_some())
        + usize::from(ds.mysql.is_some())
        + usize::from(ds.mongodb.is_some());
    if let Some(f) = &ds.files {
        if others > 0 || ds.http.is_some() {
            return Err(crate::config::one_kind_error(name));
        }
        return Ok((
            Backend::Files(Arc::new(files::FilesStore::new(f)?)),
            "files",
        ));
    }
    if let Some(h) = &ds.http {
        if others > 0 {
            return Err(crate::config::one_kind_error(name));
        }
        let token = secret(h.token_env.as_deref(), h.token_file.as_deref())?;
        let client = http::HttpClient::new(http::HttpSettings {
            config: h.clone(),
            token,
            timeout: statement_timeout,
            net: net.clone(),
        })?;
        return Ok((Backend::Http(Arc::new(client)), "http-json"));
    }
    match (&ds.postgres, &ds.mysql, &ds.mongodb) {
        (Some(pg), None, None) => {
            let password = secret(pg.password_env.as_deref(), pg.password_file.as_deref())?;
            let settings = postgres::PgSettings {
                config: pg.clone(),
                password,
                statement_timeout,
                fetch_timeout: limits.fetch_timeout,
                max_row_bytes: limits.max_row_bytes,
                net: net.clone(),
            };
            Ok((
                Backend::Sql(Arc::new(postgres::PgClient::new(settings)?)),
                "postgres",
            ))
        }
        (None, Some(my), None) => {
            let password = secret(my.password_env.as_deref(), my.password_file.as_deref())?;
            Ok((
                Backend::Sql(Arc::new(mysql::MyClient::new(my, password, limits, net)?)),
                "mysql",
            ))
        }
        (None, None, Some(mongo)) => {
            let password = secret(
                mongo.password_env.as_deref(),
                mongo.password_file.as_deref(),
            )?;
            Ok((
                Backend::Document(Arc::new(mongodb::MongoClient::new(
                    mongo, password, limits, net,
                )?)),
                "mongodb",
            ))
        }
        _ => Err(crate::config::one_kind_error(name)),
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
