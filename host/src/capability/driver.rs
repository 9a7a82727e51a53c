//! How every SQL client reports a driver failure to the connector, so the
//! wording, and what stays in the host log only, is the same for each
//! database. A client classifies its driver's error; this module words it.
use std::fmt::Display;

use crate::error::{Error, Result};

/// The server ran the statement and refused or failed it.
pub(crate) enum ServerFailure<'a> {
    /// The datasource's statement time limit stopped it.
    Timeout,
    /// It tried to write inside the read-only transaction.
    ReadOnly(&'a str),
    /// Any other error about the statement the connector wrote: the server's
    /// own message and code go back to the connector.
    Other { message: &'a str, code: &'a str },
}

impl From<ServerFailure<'_>> for Error {
    fn from(f: ServerFailure<'_>) -> Error {
        match f {
            ServerFailure::Timeout => {
                Error::Limit("the statement exceeded the datasource's statement timeout".into())
            }
            ServerFailure::ReadOnly(message) => {
                Error::Policy(format!("read-only datasource: {message}"))
            }
            ServerFailure::Other { message, code } => {
                Error::Datasource(format!("{message} ({code})"))
            }
        }
    }
}

/// The database could not be reached or the connection broke. Details (host,
/// port, OS error) go to the host log only.
pub(crate) fn unavailable(driver: &str, detail: impl Display) -> Error {
    tracing::warn!("{driver} connection failed: {detail}");
    Error::Datasource("the database is unavailable".into())
}

/// The statement's placeholders and the bound values must match in number.
pub(crate) fn check_bound(placeholders: usize, values: usize) -> Result<()> {
    if placeholders == values {
        return Ok(());
    }
    Err(Error::Connector(format!(
        "statement has {placeholders} placeholders but {values} values were bound"
    )))
}

/// A result column of a type Silo has no value for.
pub(crate) fn unsupported_column(name: &str, ty: impl Display) -> Error {
    Error::Datasource(format!(
        "column `{name}` has type {ty}, which Silo cannot carry"
    ))
}
