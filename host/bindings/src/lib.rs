//! The host side of the contract: bindings generated from `wit/connector.wit`
//! (the one source of truth shared with the SDK and every test connector),
//! the capability interfaces a connector may import ([`Kind`]), the
//! `row-stream` resource ([`rows`]) and the mapping between the host's error
//! and the guest-visible one. The runtime and every capability build on it;
//! it knows neither.
#![deny(missing_docs)]

pub mod rows;

#[allow(
    missing_docs,
    reason = "generated; wit/connector.wit documents each item"
)]
mod generated {
    wasmtime::component::bindgen!({
    path: "../../wit",
    world: "any-connector",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "silo:connector/streams.row-stream": crate::rows::HostRowStream,
    },
    });
}
pub use generated::*;

silo_types::wit_conversions!(crate::silo::connector::types);

/// What a datasource's connector may import besides logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `silo:connector/sql` (Postgres, MySQL).
    Sql,
    /// `silo:connector/document` (MongoDB).
    Document,
    /// `silo:connector/files` (uploads, through preopened directories).
    Files,
    /// `silo:connector/http` (a JSON or REST API).
    Http,
}

impl Kind {
    /// The WIT interface this kind grants.
    pub fn interface(self) -> &'static str {
        match self {
            Kind::Sql => "sql",
            Kind::Document => "document",
            Kind::Files => "files",
            Kind::Http => "http",
        }
    }

    /// Every kind, in the order `silo connector new --kind` lists them.
    pub const ALL: [Kind; 4] = [Kind::Sql, Kind::Document, Kind::Files, Kind::Http];
}

use silo::connector::types::Error as WitError;
use silo_core::error::Error;

/// The host error's guest-visible form, and a connector's error as the host
/// reports it: the mapping lives with the bindings so the error type itself
/// needs no wasmtime.
pub trait WitErrors {
    /// The guest-visible form of this error.
    fn to_wit(&self) -> WitError;
    /// A connector's own error, as the host reports it. A host error the
    /// connector passed on keeps one prefix, not two.
    fn from_wit(e: WitError) -> Error;
}

impl WitErrors for Error {
    fn to_wit(&self) -> WitError {
        let msg = self.to_string();
        match self {
            Error::Config(_) | Error::Conflict(_) => WitError::InvalidRequest(msg),
            Error::NotFound(_) => WitError::NotFound(msg),
            Error::Unauthorized(_) => WitError::Denied(msg),
            Error::Policy(_) => WitError::Denied(msg),
            Error::Limit(_) | Error::Busy(_) => WitError::LimitExceeded(msg),
            Error::Datasource(_) => WitError::Datasource(msg),
            Error::Connector(_) | Error::Internal(_) => WitError::Connector(msg),
        }
    }

    /// A connector's own error, as the host reports it. A host error the
    /// connector passed on keeps one prefix, not two.
    fn from_wit(e: WitError) -> Error {
        let bare = |m: String, prefix: &str| match m.strip_prefix(prefix) {
            Some(rest) => rest.to_owned(),
            None => m,
        };
        match e {
            WitError::InvalidRequest(m) => Error::Connector(format!("invalid request: {m}")),
            WitError::NotFound(m) => Error::NotFound(bare(m, "not found: ")),
            WitError::Denied(m) => Error::Policy(bare(m, "policy violation: ")),
            WitError::LimitExceeded(m) => match m.strip_prefix("busy: ") {
                // Passed on by the connector: still a capacity error.
                Some(rest) => Error::Busy(rest.to_owned()),
                None => Error::Limit(bare(m, "limit exceeded: ")),
            },
            WitError::Datasource(m) => Error::Datasource(bare(m, "datasource failed: ")),
            WitError::Connector(m) => Error::Connector(bare(m, "connector failed: ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_error_passed_on_by_a_connector_keeps_one_prefix() {
        for e in [
            Error::Datasource("column \"x\" does not exist".into()),
            Error::Policy("GET /admin: not allowed".into()),
            Error::Limit("too big".into()),
            Error::Busy("all 4 connections are in use".into()),
            Error::NotFound("dataset `d`".into()),
        ] {
            let text = e.to_string();
            assert_eq!(Error::from_wit(e.to_wit()).to_string(), text);
        }
    }
}
