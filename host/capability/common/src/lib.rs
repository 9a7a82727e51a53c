//! What every capability shares: the address policy ([`net`]) and TLS
//! ([`tls`]) each driver connects through, the driver error vocabulary
//! ([`driver`]), the write-privilege listings ([`registration`]), pool bounds,
//! and the SQL capability itself (the `sql` interface's host functions, which
//! send every statement through `silo-policy` before a [`SqlClient`] — the
//! Postgres or the MySQL driver — sees it).
#![deny(missing_docs)]

pub mod driver;
pub mod net;
pub mod registration;
pub mod tls;

use std::sync::Arc;

use async_trait::async_trait;
use silo_bindings::rows::{FetchShare, HostRowStream, Permitted, RowSource};
use silo_bindings::silo::connector::{sql, types};
use silo_core::error::{Error, Result};
use silo_policy::sql::GovernedTable;
use silo_types::{SqlDialect, Value};
use wasmtime::component::Resource;

/// Connections a datasource's pool may open: enough for concurrent fetches on
/// one host, few enough that a busy host cannot exhaust the database.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Largest pool a datasource may ask for (an org supplies this number).
pub const MAX_POOL_SIZE: usize = 128;

/// Checks a datasource's pool settings, which an org may supply: the pool
/// size (1 to [`MAX_POOL_SIZE`]) and how many of its connections one
/// fetch may hold (default: a quarter, at least one; never the whole pool of
/// more than one). Returns both.
pub fn pool_bounds(pool_size: usize, fetch_connections: Option<usize>) -> Result<(usize, usize)> {
    if !(1..=MAX_POOL_SIZE).contains(&pool_size) {
        return Err(Error::Config(format!(
            "pool_size must be between 1 and {}",
            MAX_POOL_SIZE
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

impl silo_runtime::Grant for SqlGrant {}

silo_runtime::capability!(SqlCapability, Sql, sql, SqlHost);

impl sql::Host for SqlHost<'_> {
    async fn query(
        &mut self,
        statement: String,
        params: Vec<types::Value>,
    ) -> wasmtime::Result<Result<Resource<HostRowStream>, types::Error>> {
        let state = &mut *self.0;
        let result = match state.grant::<SqlGrant>().cloned() {
            Some(grant) => match state.admit(statement.len(), params.len()) {
                Ok(()) => {
                    let params = params.into_iter().map(Into::into).collect();
                    run_sql(&grant, &statement, params).await
                }
                Err(e) => Err(e),
            },
            None => Err(Error::Policy("this connector has no SQL capability".into())),
        };
        state.push_stream(result)
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
