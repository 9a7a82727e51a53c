//! The registration check: a datasource's credential must not be able to
//! write. Each driver lists what its credential holds beyond reading, in its
//! own database's terms; this module decides and words the refusal, so every
//! database is refused the same way.
use crate::capability::Backend;
use silo_core::error::{Error, Result};

/// Most offending privileges named in one refusal.
const MAX_NAMED: usize = 12;

/// Refuses `backend`'s credential if it can write, naming what lets it.
/// `accept` registers it anyway; that override is logged as an audit event.
pub async fn check_read_only(name: &str, backend: &Backend, accept: bool) -> Result<()> {
    let found = match backend {
        Backend::Sql(client) => client.write_privileges().await?,
        Backend::Document(client) => client.write_privileges().await?,
        // Uploads are preopened read-only; the HTTP capability only sends GET.
        Backend::Files(_) | Backend::Http(_) => Vec::new(),
    };
    if found.is_empty() {
        return Ok(());
    }
    let mut named = found.iter().take(MAX_NAMED).cloned().collect::<Vec<_>>();
    if found.len() > MAX_NAMED {
        named.push(format!("and {} more", found.len() - MAX_NAMED));
    }
    let named = named.join(", ");
    if accept {
        tracing::warn!(
            target: "silo::audit",
            datasource = name,
            privileges = %named,
            "registered a credential that can write (accept_write_privileges)"
        );
        return Ok(());
    }
    Err(Error::Policy(format!(
        "datasource `{name}` refused: its credential can write ({named}). Give Silo a \
         read-only user, or set accept_write_privileges = true to register it anyway"
    )))
}
