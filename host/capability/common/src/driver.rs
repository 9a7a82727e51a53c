//! How every database client reports a driver failure to the connector, so the
//! wording, and what stays in the host log only, is the same for each
//! database. A client classifies its driver's error; this module words it.
//!
//! A server's error text may quote values from rows: `invalid input syntax
//! for type integer: "<a value>"`, `time zone "<a value>" not recognized`. A
//! connector expression can fail on any row it is evaluated on, so the text
//! never reaches the connector or the caller: they get the error's code and a
//! description of that code written here. The full text goes to the host log
//! (target `silo::datasource`), for the operator.
use std::fmt::Display;

use silo_core::error::{Error, Result};

/// The server ran the statement and refused or failed it.
pub enum ServerFailure<'a> {
    /// The datasource's statement time limit stopped it.
    Timeout,
    /// It tried to write inside the read-only transaction.
    ReadOnly,
    /// Any other error about the statement the connector wrote. `code` is the
    /// server's error code (SQLSTATE, or MongoDB's code name): only it and
    /// [`describe_code`]'s words for it reach the connector.
    Other {
        /// The server's own text: logged, never shown to the connector.
        message: &'a str,
        /// The server's error code.
        code: &'a str,
    },
}

impl From<ServerFailure<'_>> for Error {
    fn from(f: ServerFailure<'_>) -> Error {
        match f {
            ServerFailure::Timeout => {
                Error::Limit("the statement exceeded the datasource's statement timeout".into())
            }
            ServerFailure::ReadOnly => Error::Policy(
                "read-only datasource: the statement tried to change data or state".into(),
            ),
            ServerFailure::Other { message, code } => {
                tracing::info!(target: "silo::datasource", code, "statement failed: {message}");
                Error::Datasource(format!(
                    "the statement failed: {} ({code})",
                    describe_code(code)
                ))
            }
        }
    }
}

/// Words for a server error code, written by the host: SQLSTATEs (Postgres,
/// MySQL and MariaDB share the standard's classes) by code, then by class.
/// MongoDB's code names are descriptive identifiers already.
pub fn describe_code(code: &str) -> &'static str {
    match code {
        "42601" => "syntax error",
        "42703" | "42S22" => "undefined column",
        "42P01" | "42S02" => "undefined table",
        "42883" => "undefined function",
        "42702" => "ambiguous column reference",
        "42725" => "ambiguous function call",
        "42803" => "grouping error",
        "42804" | "42846" | "42P18" => "type mismatch",
        "42501" => "insufficient privilege",
        "22012" => "division by zero",
        "22003" => "numeric value out of range",
        "22P02" | "22018" => "invalid text representation for the type",
        "22007" | "22008" => "invalid date or time value",
        "22023" => "invalid parameter value",
        "22001" => "string too long for the type",
        "2201B" => "invalid regular expression",
        "22032" => "invalid JSON text",
        "21000" => "a subquery returned more than one row",
        _ => match code.get(..2) {
            Some("22") => "data exception",
            Some("42") => "syntax error or access rule violation",
            Some("21") => "cardinality violation",
            Some("0A") => "feature not supported",
            Some("53") => "insufficient resources",
            Some("54") => "program limit exceeded",
            Some("57") => "operator intervention",
            Some("40") => "transaction rolled back",
            Some("25") => "invalid transaction state",
            _ => "server error",
        },
    }
}

/// The database could not be reached or the connection broke. Details (host,
/// port, OS error) go to the host log only.
pub fn unavailable(driver: &str, detail: impl Display) -> Error {
    tracing::warn!("{driver} connection failed: {detail}");
    Error::Datasource("the database is unavailable".into())
}

/// TLS to the server failed (a certificate refused, a handshake broken):
/// the client's own words, which name no row.
pub fn tls_failure(driver: &str, e: &(dyn std::error::Error + 'static)) -> Option<Error> {
    silo_core::error::find::<rustls::Error>(e)
        .map(|t| Error::Config(format!("{driver}: TLS to the server failed: {t}")))
}

/// Every connection of the datasource's pool stayed in use for as long as a
/// statement may wait: other fetches hold them.
pub fn busy(pool_size: usize) -> Error {
    Error::Busy(format!(
        "the datasource is busy: all {pool_size} of its connections are in use; retry shortly"
    ))
}

/// The statement's placeholders and the bound values must match in number.
pub fn check_bound(placeholders: usize, values: usize) -> Result<()> {
    if placeholders == values {
        return Ok(());
    }
    Err(Error::Connector(format!(
        "statement has {placeholders} placeholders but {values} values were bound"
    )))
}

/// A result column of a type Silo has no value for.
pub fn unsupported_column(name: &str, ty: impl Display) -> Error {
    Error::Datasource(format!(
        "column `{name}` has type {ty}, which Silo cannot carry"
    ))
}

/// A row larger than `max_row_bytes`, refused before it was buffered.
pub fn row_too_large(max: u64) -> Error {
    Error::Limit(format!(
        "a row is larger than {max} bytes (max_row_bytes); select fewer or smaller columns"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_never_reaches_the_connector() {
        let err: Error = ServerFailure::Other {
            message: "time zone \"Europe/their-secret\" not recognized",
            code: "22023",
        }
        .into();
        let text = err.to_string();
        assert!(!text.contains("secret"), "{text}");
        assert!(
            text.contains("22023") && text.contains("invalid parameter"),
            "{text}"
        );
        let err: Error = ServerFailure::Other {
            message: "invalid input syntax for type integer: \"their-secret\"",
            code: "22P02",
        }
        .into();
        assert!(!err.to_string().contains("secret"));
        assert_eq!(describe_code("22999"), "data exception");
        assert_eq!(describe_code("ConversionFailure"), "server error");
    }
}
