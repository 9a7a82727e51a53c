//! The fetch engine: loads connector components, gives each fetch a fresh
//! instance whose capabilities (postgres, mysql, mongodb, files, http) put
//! the embed user's row filter below the connector through `silo-policy`,
//! and re-checks every row it returns.
//!
//! - [`config`]: `silo.toml`: datasources, datasets, limits.
//! - [`runtime`]: the wasmtime engine, instance pool, compile cache, WASI.
//! - [`capability`]: one module per host capability, each with its config,
//!   host-trait impl, driver client and limits.
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

#[allow(
    missing_docs,
    reason = "generated; wit/connector.wit documents each item"
)]
pub mod bindings;
pub mod builtin;
pub mod capability;
pub mod config;
pub mod rows;
pub mod runtime;
pub mod silo;
