//! The Silo host: runs datasource connectors as sandboxed WebAssembly
//! components and returns only the rows each embed user may see.
//!
//! A fetch goes: resolve the user's row filter from the dataset's policy
//! ([`policy::rule`]); instantiate the connector fresh, with a capability whose
//! every statement is rewritten so governed tables are already filtered
//! ([`policy::sql`], [`capability`]); stream its output through the
//! [`policy::Verifier`], which re-checks every row and enforces the limits.
//!
//! ```no_run
//! # async fn example() -> silo_host::error::Result<()> {
//! use silo_host::{config::SiloConfig, silo::{FetchSpec, Silo}};
//!
//! let silo = Silo::open(&SiloConfig::load("silo.toml".as_ref())?).await?;
//! let spec = FetchSpec { dataset: "orders".into(), ..FetchSpec::default() };
//! let rows = silo.fetch("alice", &spec).await?.collect().await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod authoring;
pub mod batch;
pub mod bench;
pub mod builtin;
pub mod capability;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod error;
pub mod fingerprint;
pub mod limits;
pub mod metadata;
pub mod output;
pub mod policy;
pub mod runtime;
pub mod server;
pub mod silo;
