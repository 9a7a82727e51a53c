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

/// Most a refused upload's body is read for before the answer (bytes).
const LINGER_BYTES: usize = 8 << 20;
/// Longest a refused upload's body is read for before the answer.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
/// A client that sends nothing for this long is waiting for the answer.
const LINGER_IDLE: std::time::Duration = std::time::Duration::from_millis(100);

/// Reads and discards what a client is still sending of a body that was
/// refused unread, for a bounded size and time, so that it reads the answer
/// instead of a reset connection (a lingering close, RFC 9112 §9.6): a
/// client still writing when the server closes gets `EPIPE`, not the 404.
/// A client that sends nothing (waiting for the answer, or for
/// `100 Continue`) is answered after [`LINGER_IDLE`].
pub async fn linger(headers: &axum::http::HeaderMap, body: axum::body::Body) {
    let waits = headers
        .get(axum::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waits {
        return;
    }
    let mut stream = body.into_data_stream();
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout(LINGER_IDLE, stream.next()).await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                break;
            }
        }
    })
    .await;
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
