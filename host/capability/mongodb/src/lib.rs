//! The MongoDB capability, in the same shape as the SQL ones: typed config, a
//! pooled client that runs only read commands (every one an `aggregate` with
//! `maxTimeMS`), and the value codec. What a pipeline may contain, and the
//! user's `$match` in front of it, is decided in [`silo_policy::document`].
#![deny(missing_docs)]
mod client;
mod codec;

use serde::{Deserialize, Serialize};

pub use client::MongoClient;

/// `[datasources.<name>.mongodb]` in `silo.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Database holding the governed collections.
    pub database: String,
    /// A read-only user: the `read` role on `database` and nothing else.
    pub user: String,
    /// Database the user is defined in (default: `database`).
    pub auth_source: Option<String>,
    /// Environment variable holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// File holding the password (first line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<std::path::PathBuf>,
    /// TLS to the server (see [`silo_capability::tls`]): `verify-full`
    /// by default off loopback.
    #[serde(
        default,
        deserialize_with = "silo_capability::tls::settings",
        skip_serializing_if = "silo_capability::tls::TlsSettings::is_unset"
    )]
    pub tls: silo_capability::tls::TlsSettings,
    /// Pool size (1 to [`silo_capability::MAX_POOL_SIZE`]).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Cursors one fetch may hold open at once (default: a quarter of the
    /// pool, at least one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_connections: Option<usize>,
}

fn default_port() -> u16 {
    27017
}

fn default_pool_size() -> usize {
    silo_capability::DEFAULT_POOL_SIZE
}

use wasmtime::component::Resource;

use std::sync::Arc;

use silo_bindings::rows::{FetchShare, HostRowStream, Permitted};
use silo_bindings::silo::connector::{document, types};
use silo_core::error::{Error, Result};
use silo_policy::sql::GovernedTable;

/// Most documents `sample-fields` looks at.
const MAX_SAMPLE: u32 = 1000;
/// Most values `distinct` returns (the rest is a limit error).
const MAX_DISTINCT: usize = 10_000;

fn text_len(fields: &[String]) -> usize {
    fields.iter().map(String::len).sum()
}

/// What a fetch may do with documents: the pool and the governed collections.
#[derive(Clone)]
pub struct DocumentGrant {
    /// The pooled driver.
    pub client: Arc<MongoClient>,
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

impl silo_runtime::Grant for DocumentGrant {}

silo_runtime::capability!(DocumentCapability, Document, document, DocumentHost);

impl DocumentHost<'_> {
    /// The document grant, after counting the call and checking its size.
    fn document_call(&mut self, text_bytes: usize, values: usize) -> Result<DocumentGrant> {
        let Some(grant) = self.0.grant::<DocumentGrant>().cloned() else {
            return Err(Error::Policy(
                "this connector has no document capability".into(),
            ));
        };
        self.0.admit(text_bytes, values)?;
        Ok(grant)
    }
}

impl document::Host for DocumentHost<'_> {
    async fn collections(&mut self) -> wasmtime::Result<Result<Vec<String>, types::Error>> {
        let result = self.document_call(0, 0).map(|grant| {
            grant
                .collections
                .iter()
                .filter(|c| c.schema == grant.client.database())
                .map(|c| c.name.clone())
                .collect()
        });
        Ok(self.0.report(result))
    }

    async fn sample_fields(
        &mut self,
        collection: String,
        size: u32,
    ) -> wasmtime::Result<Result<Vec<types::Column>, types::Error>> {
        let result = async {
            let grant = self.document_call(collection.len(), 0)?;
            if !grant.describing {
                return Err(Error::Policy("sample-fields is for describe only".into()));
            }
            // Only names and types leave the host, so sampling needs the
            // collection to be governed, not the user's filter.
            grant.governed().user_match(&collection)?;
            let columns = grant
                .client
                .sample_fields(&collection, size.clamp(1, MAX_SAMPLE))
                .await?;
            Ok(columns.into_iter().map(Into::into).collect())
        }
        .await;
        Ok(self.0.report(result))
    }

    async fn find(
        &mut self,
        collection: String,
        filter: String,
        fields: Vec<String>,
        limit: Option<u64>,
    ) -> wasmtime::Result<Result<Resource<HostRowStream>, types::Error>> {
        let result = async {
            let grant = self.document_call(filter.len() + text_len(&fields), fields.len())?;
            let filter = client::parse_json(&filter)?;
            let read = grant.governed().find(&collection, filter, &fields, limit)?;
            Permitted::open(&grant.share, grant.client.read(&collection, read, fields)).await
        }
        .await;
        self.0.push_stream(result)
    }

    async fn aggregate(
        &mut self,
        collection: String,
        pipeline: String,
        fields: Vec<String>,
    ) -> wasmtime::Result<Result<Resource<HostRowStream>, types::Error>> {
        let result = async {
            let grant = self.document_call(pipeline.len() + text_len(&fields), fields.len())?;
            let pipeline = client::parse_json(&pipeline)?;
            let pipeline = grant.governed().pipeline(&collection, pipeline)?;
            Permitted::open(
                &grant.share,
                grant.client.aggregate(&collection, pipeline, fields),
            )
            .await
        }
        .await;
        self.0.push_stream(result)
    }

    async fn count(
        &mut self,
        collection: String,
        filter: String,
    ) -> wasmtime::Result<Result<u64, types::Error>> {
        let result = async {
            let grant = self.document_call(filter.len(), 0)?;
            let pipeline = grant
                .governed()
                .count(&collection, client::parse_json(&filter)?)?;
            let docs = grant
                .client
                .aggregate_small(&collection, pipeline, 1)
                .await?;
            Ok(docs.first().map_or(0, |d| client::count_of(d)))
        }
        .await;
        Ok(self.0.report(result))
    }

    async fn distinct(
        &mut self,
        collection: String,
        field: String,
        filter: String,
    ) -> wasmtime::Result<Result<Vec<types::Value>, types::Error>> {
        let result = async {
            let grant = self.document_call(filter.len() + field.len(), 0)?;
            let pipeline =
                grant
                    .governed()
                    .distinct(&collection, &field, client::parse_json(&filter)?)?;
            let docs = grant
                .client
                .aggregate_small(&collection, pipeline, MAX_DISTINCT)
                .await?;
            Ok(docs.iter().map(|d| client::group_key(d).into()).collect())
        }
        .await;
        Ok(self.0.report(result))
    }
}
