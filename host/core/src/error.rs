//! The host's error type. Messages are safe to show to the caller: driver and
//! trap details go to the log, never into these strings.

/// Why a fetch or describe failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `silo.toml` or a request parameter is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// The request names something that does not exist or is not granted.
    #[error("not found: {0}")]
    NotFound(String),
    /// The policy refused the operation, or a connector returned a row the
    /// user may not see. Never retried.
    #[error("policy violation: {0}")]
    Policy(String),
    /// A row, byte, time or memory limit was reached.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// Capacity is in use by other fetches (a datasource's connections, the
    /// instance pool): retry later. Guests see it as `limit-exceeded`.
    #[error("busy: {0}")]
    Busy(String),
    /// The connector failed or misbehaved (trap, bad output).
    #[error("connector failed: {0}")]
    Connector(String),
    /// The datasource failed (unreachable, timeout, query error).
    #[error("datasource failed: {0}")]
    Datasource(String),
    /// The caller gave no credential, or one that is not valid (unknown,
    /// revoked, expired, badly signed). Never says which.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The request clashes with a record that exists (a name in use).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A bug or environment failure in the host itself.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whose fault it is, for logs and audit records (as Spin tags its errors).
    pub fn fault(&self) -> &'static str {
        match self {
            Error::Config(_) | Error::NotFound(_) | Error::Unauthorized(_) | Error::Conflict(_) => {
                "caller"
            }
            Error::Policy(_) | Error::Connector(_) => "connector",
            Error::Limit(_) | Error::Busy(_) => "limits",
            Error::Datasource(_) => "datasource",
            Error::Internal(_) => "host",
        }
    }
}

/// The first error of type `T` in `e`'s chain, looking inside I/O errors
/// too (whose `source` skips the error they wrap): how a client finds the
/// guard's or TLS's own error inside its driver's.
pub fn find<'a, T: std::error::Error + 'static>(
    mut e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    loop {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            e = inner;
            continue;
        }
        e = e.source()?;
    }
}
