//! The fetch engine: the one layer that knows every capability. It loads
//! connector components into `silo-runtime`, gives each fetch a fresh
//! instance whose capabilities (postgres, mysql, mongodb, files, http) put
//! the embed user's row filter below the connector through `silo-policy`,
//! and re-checks every row it returns.
//!
//! - [`config`]: `silo.toml`: datasources, datasets, limits.
//! - [`capability`]: the capabilities by name (each its own crate), the
//!   backend a datasource connects to and the grant a fetch holds.
//! - [`silo`]: a fetch from grant to verified rows.
//! - [`builtin`]: the connectors compiled into the binary.
//!
//! ```no_run
//! # async fn example() -> silo_core::error::Result<()> {
//! use silo_engine::{config::SiloConfig, silo::{FetchSpec, Silo}};
//!
//! let silo = Silo::open(&SiloConfig::load("silo.toml".as_ref())?).await?;
//! let spec = FetchSpec { dataset: "orders".into(), ..FetchSpec::default() };
//! let rows = silo.fetch("alice", &spec).await?.collect().await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod builtin;
pub mod capability;
pub mod config;
pub mod silo;

pub use silo_bindings as bindings;
pub use silo_bindings::rows;
pub use silo_runtime as runtime;
