//! Silo's integration tests, one binary: a real Postgres on 127.0.0.1:5432,
//! real components (built once by `build.rs`), and hostile connectors.
//!
//! Set `SILO_TEST_ADMIN` to point at another server (default: the local
//! `postgres` superuser on database `test`).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

/// Paths of the compiled connectors, one constant each.
pub mod connectors {
    include!(concat!(env!("OUT_DIR"), "/connectors.rs"));
}

#[cfg(test)]
mod support;

#[cfg(test)]
mod layers;

#[cfg(test)]
mod postgres;

#[cfg(test)]
mod hostile;

#[cfg(test)]
mod demo;

#[cfg(test)]
mod mysql;

#[cfg(test)]
mod mongodb;

#[cfg(test)]
mod files;

#[cfg(test)]
#[macro_use]
mod control;

#[cfg(test)]
mod metadata;

#[cfg(test)]
mod serving;

#[cfg(test)]
mod tls;

#[cfg(test)]
mod authoring;

#[cfg(test)]
mod http;

#[cfg(test)]
mod confinement;
