//! The embedded (SQLite) store's request path without thread hops.
//!
//! sqlx runs each SQLite connection on a worker thread of its own, so every
//! statement through it is a round trip between threads: at one connection
//! those wake-ups, not SQLite, were most of a fetch's wait. Here the org
//! version is read on the calling thread from a few read-only connections
//! (a read of one indexed row takes microseconds, far less than a wake-up),
//! and the audit log is appended by one writer thread that owns its
//! connection (see [`super::super::audit`]).
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use silo_core::error::{Error, Result};

/// Read-only connections kept for reuse; more are opened when needed and
/// closed after use.
const READERS: usize = 8;

/// How long a writer waits for the write lock held by another connection
/// (sqlx's writer, or another process on the same file).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The store file, reached in-process.
pub(crate) struct Local {
    path: PathBuf,
    sync: super::Synchronous,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local").field("path", &self.path).finish()
    }
}

/// A SQLite error, without the statement.
pub(crate) fn sqlite(e: rusqlite::Error) -> Error {
    Error::Internal(format!("control-plane store: {e}"))
}

impl Local {
    pub(crate) fn new(path: &Path, sync: super::Synchronous) -> Local {
        Local {
            path: path.to_owned(),
            sync,
            readers: Mutex::new(Vec::new()),
        }
    }

    fn open_reader(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        conn.pragma_update(None, "query_only", true)
            .map_err(sqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        Ok(conn)
    }

    /// Runs `read` on a read-only connection, on this thread.
    fn read<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let reuse = self.readers.lock().ok().and_then(|mut r| r.pop());
        let conn = match reuse {
            Some(c) => c,
            None => self.open_reader()?,
        };
        let out = read(&conn).map_err(sqlite);
        if let Ok(mut r) = self.readers.lock()
            && r.len() < READERS
        {
            r.push(conn);
        }
        out
    }

    /// `org`'s version (`None`: no such org), as of the last commit.
    pub(crate) fn org_version(&self, org: &str) -> Result<Option<i64>> {
        self.read(|c| {
            c.prepare_cached("SELECT version FROM org_versions WHERE org_id = ?1")?
                .query_row([org], |r| r.get(0))
                .optional()
        })
    }

    /// A connection that writes: each commit is in the log, synced as the
    /// store's [`super::Synchronous`] says, before it returns, and it waits
    /// for another writer's lock.
    pub(crate) fn writer(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", self.sync.pragma())
            .map_err(sqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        Ok(conn)
    }
}
