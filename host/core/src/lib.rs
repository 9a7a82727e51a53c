//! What every layer of the Silo host shares and nothing else: the one
//! [`error::Error`] whose messages are safe to show a caller, the per-fetch
//! [`limits::Limits`], the flat [`batch::Batch`] rows travel in, and the
//! keyed [`fingerprint`]s audit records name values by. No wasmtime, no
//! drivers, no async runtime: the policy and metadata layers build on it
//! alone.
#![deny(missing_docs)]

pub mod batch;
pub mod display;
pub mod error;
pub mod fingerprint;
pub mod ids;
pub mod limits;
pub mod text;
