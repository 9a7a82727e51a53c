//! The MySQL/MariaDB capability, in the same shape as Postgres: typed config,
//! a pooled client that runs every statement inside `START TRANSACTION READ
//! ONLY` with a server-side time limit, and the value codec.
#![deny(missing_docs)]
mod client;
mod codec;

use serde::{Deserialize, Serialize};

pub use client::MyClient;

/// `[datasources.<name>.mysql]` in `silo.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Database (schema) holding the governed tables.
    pub database: String,
    /// A read-only user: `SELECT` on the governed tables and nothing else.
    pub user: String,
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
    /// Statements one fetch may hold open at once (default: a quarter of the
    /// pool, at least one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_connections: Option<usize>,
}

fn default_port() -> u16 {
    3306
}

fn default_pool_size() -> usize {
    silo_capability::DEFAULT_POOL_SIZE
}
