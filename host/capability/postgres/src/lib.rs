//! The Postgres capability: typed config, a pooled client whose connections
//! run every statement in a `READ ONLY` transaction with a statement
//! timeout (settings checked on each new connection), and the
//! codec between Postgres' binary format and Silo values.
#![deny(missing_docs)]
mod client;
mod codec;
mod wire;

use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub use client::PgClient;

pub use silo_capability::{DEFAULT_POOL_SIZE, MAX_POOL_SIZE};

/// The database and the server's start time, as text any session may read:
/// what recognizes the control plane's store behind any address.
pub const SERVER_IDENTITY: &str =
    "SELECT current_database()::text, extract(epoch FROM pg_postmaster_start_time())::text";

/// `[datasources.<name>.postgres]` in `silo.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Database name.
    pub database: String,
    /// A read-only role: `SELECT` on the governed tables and nothing else.
    pub user: String,
    /// Environment variable holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// File holding the password (first line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<std::path::PathBuf>,
    /// Schema an unqualified table name means.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// TLS to the server (see [`silo_capability::tls`]): `verify-full`
    /// by default off loopback.
    #[serde(
        default,
        deserialize_with = "silo_capability::tls::settings",
        skip_serializing_if = "silo_capability::tls::TlsSettings::is_unset"
    )]
    pub tls: silo_capability::tls::TlsSettings,
    /// Pool size (1 to [`MAX_POOL_SIZE`]).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Statements one fetch may hold open at once (default: a quarter of the
    /// pool, at least one), so one fetch cannot take every connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_connections: Option<usize>,
}

impl PostgresConfig {
    /// The pool size and each fetch's share of it, checked.
    pub fn pool_bounds(&self) -> silo_core::error::Result<(usize, usize)> {
        silo_capability::pool_bounds(self.pool_size, self.fetch_connections)
    }
}

fn default_port() -> u16 {
    5432
}

fn default_schema() -> String {
    "public".into()
}

fn default_pool_size() -> usize {
    DEFAULT_POOL_SIZE
}

/// Everything the client needs, with the password resolved and held secret.
pub struct PgSettings {
    /// Connection parameters without the password.
    pub config: PostgresConfig,
    /// The password, never logged or shown.
    pub password: Option<SecretString>,
    /// Per-statement timeout.
    pub statement_timeout: Duration,
    /// Whole-fetch deadline (the server ends a transaction idle this long).
    pub fetch_timeout: Duration,
    /// Largest message (row) accepted from the server.
    pub max_row_bytes: u64,
    /// Where it may connect.
    pub net: silo_capability::net::NetPolicy,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("config", &self.config)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("statement_timeout", &self.statement_timeout)
            .field("fetch_timeout", &self.fetch_timeout)
            .field("max_row_bytes", &self.max_row_bytes)
            .finish()
    }
}
