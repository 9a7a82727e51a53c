//! The host capabilities a connector can import, one crate each with the
//! same shape (config, host-trait impl, driver client, limits), all going
//! through `silo-policy`: `silo-postgres` and `silo-mysql` behind the SQL
//! interface of `silo-capability`, `silo-mongodb`, `silo-files`, `silo-http`.
//! Here the engine names them: the [`Backend`] a datasource connects to, the
//! [`Grant`] one fetch holds, and [`ALL`], the list the runtime links.
pub mod registration;

pub use silo_bindings::Kind;
pub use silo_bindings::rows::{FetchShare, HostRowStream, Permitted, RowSource};
pub use silo_capability::{
    DEFAULT_POOL_SIZE, MAX_POOL_SIZE, SqlCapability, SqlClient, SqlGrant, net, pool_bounds, tls,
};
pub use silo_files as files;
pub use silo_http as http;
pub use silo_mongodb as mongodb;
pub use silo_mongodb::DocumentGrant;
pub use silo_mysql as mysql;
pub use silo_postgres as postgres;

use std::sync::Arc;

use silo_runtime::Capability;

/// Every capability, as the runtime links them.
pub const ALL: &[&dyn Capability] = &[
    &SqlCapability,
    &mongodb::DocumentCapability,
    &files::FilesCapability,
    &http::HttpCapability,
];

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

impl Grant {
    /// The grant as the runtime stores it for the capability's host
    /// functions, which find it again by its own type.
    pub fn into_runtime(self) -> Box<dyn silo_runtime::Grant> {
        match self {
            Grant::Sql(g) => Box::new(g),
            Grant::Document(g) => Box::new(g),
            Grant::Files(p) => Box::new(p),
            Grant::Http(g) => Box::new(g),
        }
    }
}
