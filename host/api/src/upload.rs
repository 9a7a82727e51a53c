//! Staging an uploaded body on disk: streamed to an owner-only temp file
//! with a size cap, removed when dropped, so a cut-off or oversized upload
//! leaves nothing behind and the dataset untouched.
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::ApiError;
use silo_core::error::Error;

/// A staged file, deleted on drop; locked while it exists so a sweep at
/// start (after a crash) knows it is nobody's.
#[derive(Debug)]
pub struct Staged(PathBuf, Option<std::fs::File>);

impl Staged {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `body` to a new file `<dir>/<random>.<ext>`.
pub async fn stage(
    dir: &Path,
    ext: &str,
    body: axum::body::Body,
    max_bytes: u64,
) -> Result<Staged, ApiError> {
    let io = |e: std::io::Error| Error::Internal(format!("staging an upload: {e}"));
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(io)?;
    let mut staged = Staged(
        dir.join(format!("{}.{ext}", silo_control::tokens::new_id("upload")?)),
        None,
    );
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    let mut file = options.open(staged.path()).await.map_err(io)?;
    let held = std::fs::File::open(staged.path()).map_err(io)?;
    held.try_lock()
        .map_err(|e| Error::Internal(format!("staging an upload: {e}")))?;
    staged.1 = Some(held);
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            // A body that stopped sending is the client's timeout, not a
            // bad file.
            match silo_core::error::find::<super::limits::Stalled>(&e) {
                Some(stalled) => ApiError::timeout(stalled.to_string()),
                None => Error::Config("the upload broke off".into()).into(),
            }
        })?;
        written += chunk.len() as u64;
        if written > max_bytes {
            return Err(ApiError::too_large(format!(
                "the upload is larger than {max_bytes} bytes"
            )));
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    Ok(staged)
}
