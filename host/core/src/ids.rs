//! Random identifiers for records and scratch paths.
use crate::error::{Error, Result};

/// Random bytes as an id with a prefix: `org_5f…`.
pub fn new_id(prefix: &str) -> Result<String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(format!("{prefix}_{}", hex::encode(bytes)))
}
