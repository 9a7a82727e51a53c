//! The `silo` binary's library: the command line, the demo and the
//! benchmarks, over the host's layers, which it re-exports under the paths
//! tests and tools use. A fetch travels the layers in this order:
//!
//! 1. [`api`] (`silo-api`): the REST routers and the server;
//! 2. [`control`] (`silo-control`): organizations, sessions, grants, the
//!    store, tokens and the audit log;
//! 3. [`policy`] (`silo-policy`): the row filter, the SQL / document / HTTP
//!    rewrites and the row re-check, as a pure library;
//! 4. [`silo`], [`runtime`], [`capability`] (`silo-engine`): a fresh sandboxed
//!    instance per fetch, whose capabilities go through the policy to the
//!    drivers, and the re-check of every row it returns;
//! 5. [`metadata`] (`silo-metadata`): profiles and privacy guards, what an
//!    LLM may see.
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

pub use silo_api as api;
pub use silo_api::{output, server};
pub use silo_control as control;
pub use silo_core::{batch, error, fingerprint, limits};
pub use silo_engine::{builtin, capability, config, runtime, silo};
pub use silo_metadata as metadata;
pub use silo_policy as policy;

pub mod authoring;
pub mod bench;
pub mod cli;
pub mod demo;
