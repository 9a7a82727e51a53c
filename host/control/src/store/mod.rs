//! The control-plane store: a SQLite file (the embedded default, no server)
//! or Postgres (several hosts sharing one control plane). One set of SQL
//! serves both: only portable types (`TEXT`, `BIGINT`), `$n` parameters,
//! JSON kept as text, times as Unix seconds.
//!
//! Tenancy is in the schema as well as in the queries: every child record
//! carries its `org_id`, and its foreign keys name `(org_id, id)` of the
//! parent, so a group can only grant its own organization's datasets and a
//! membership can only link records of one organization.
//!
//! [`Store`] and what every part shares are here; each resource's queries
//! are an `impl Store` block of their own submodule, the schema is in
//! `migrations` and the request path's statements in `request_path`.

use std::path::Path;

use std::sync::Arc;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use silo_core::error::{Error, Result};

use super::model::{GroupGrant, Permission};

/// `sqlx::query(sql).bind(arg)….method(executor).await`, its error mapped by
/// [`db`]: one line per statement instead of one per bind.
macro_rules! q {
    ($method:ident, $ex:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        sqlx::query($sql)$(.bind($arg))*.$method($ex).await.map_err(db)
    };
}

mod cache;
mod connectors;
mod datasets;
mod datasources;
mod groups;
mod keys;
pub(crate) mod local;
mod migrations;
mod orgs;
mod request_path;
mod sessions;
mod users;

/// Which database holds the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// A SQLite file.
    Sqlite,
    /// A Postgres database.
    Postgres,
}

/// Postgres advisory lock serializing migrations and audit appends between
/// hosts sharing the store.
const PG_LOCK: i64 = 0x5111_0C0D;

/// Read-only connections to a SQLite store, beside its one writer.
const SQLITE_READERS: u32 = 4;

/// Connections to a Postgres store: a handful per host is plenty for
/// control-plane traffic.
const PG_POOL: u32 = 8;

/// How far a SQLite commit is synced before it returns (`?synchronous=` on
/// the store's URL). Either way the log is written ahead (WAL), so the file
/// stays consistent and a crash of the process loses no commit: the commit
/// is in the operating system's hands before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// The log is synced at checkpoints, not at each commit: an operating
    /// system crash or a power loss can roll back the commits since the
    /// last one. SQLite's own advice for WAL mode.
    #[default]
    Normal,
    /// Each commit is on disk before it returns: nothing is lost to a power
    /// loss either, at the cost of an fsync per (group) commit.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// A SQLite store's path and options: `path[?synchronous=normal|full]`.
fn sqlite_options(spec: &str) -> Result<(&str, Synchronous)> {
    let Some((path, query)) = spec.split_once('?') else {
        return Ok((spec, Synchronous::default()));
    };
    let mut sync = Synchronous::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        sync = match pair {
            "synchronous=normal" => Synchronous::Normal,
            "synchronous=full" => Synchronous::Full,
            _ => {
                return Err(Error::Config(
                    "the SQLite store takes one option, `synchronous=normal` or \
                     `synchronous=full`"
                        .into(),
                ));
            }
        };
    }
    Ok((path, sync))
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Reads of the request path. SQLite: read-only connections of their
    /// own, which in WAL mode read the last commit while the writer
    /// commits, instead of queueing behind its fsync. Postgres: the pool.
    reads: AnyPool,
    kind: StoreKind,
    /// SQLite: the file reached in-process, for the org-version read and
    /// the audit writer (no round trips to sqlx's worker threads).
    local: Option<Arc<local::Local>>,
    /// The audit log's writer, started by the first append (see
    /// [`super::audit::append`]).
    audit: Arc<std::sync::OnceLock<super::audit::Queue>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("kind", &self.kind).finish()
    }
}

/// A transaction on the store.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

pub(crate) fn db(e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(d) = &e {
        if d.is_unique_violation() {
            return Error::Conflict("a record with that name already exists".into());
        }
        if d.is_foreign_key_violation() {
            return Error::NotFound("a record it refers to does not exist".into());
        }
    }
    Error::Internal(format!("control-plane store: {e}"))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Internal(format!("encoding a record: {e}")))
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Internal(format!("a stored record: {e}")))
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// Opens `url`: `sqlite://<path>` (created, owner-only, when missing) or
    /// `postgres://…`; a bare path means a SQLite file. Migrates the schema.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (kind, url, file) =
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                (StoreKind::Postgres, url.to_owned(), None)
            } else {
                let (path, sync) = sqlite_options(url.strip_prefix("sqlite://").unwrap_or(url))?;
                create_private_file(Path::new(path))?;
                (
                    StoreKind::Sqlite,
                    format!("sqlite://{path}"),
                    Some((Path::new(path).to_owned(), sync)),
                )
            };
        // SQLite takes one writer at a time; one connection serializes this
        // host's statements instead of failing them with SQLITE_BUSY.
        let max = match kind {
            StoreKind::Sqlite => 1,
            StoreKind::Postgres => PG_POOL,
        };
        let sqlite = kind == StoreKind::Sqlite;
        let sync = file.as_ref().map(|f| f.1).unwrap_or_default().pragma();
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(10))
            // A SQLite connection is a file in this process: no need to
            // ping it (a round trip to its worker thread) before each use.
            .test_before_acquire(!sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Write-ahead logging: a commit appends to the log
                        // (synced per `Synchronous`) instead of a rollback
                        // journal's several fsyncs.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .fetch_optional(&mut *conn)
                            .await?;
                        sqlx::query(&format!("PRAGMA synchronous = {sync}"))
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "opening the control-plane store");
                Error::Datasource("the control-plane store is unavailable".into())
            })?;
        let mut store = Store {
            reads: pool.clone(),
            pool,
            kind,
            local: None,
            audit: Arc::default(),
        };
        store.migrate().await?;
        store.local = file.map(|(f, sync)| Arc::new(local::Local::new(&f, sync)));
        if sqlite {
            // Opened after the migrations (and the switch to WAL): these
            // connections never write.
            store.reads = AnyPoolOptions::new()
                .max_connections(SQLITE_READERS)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        sqlx::query("PRAGMA query_only = ON")
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                })
                .connect(&format!("{url}?mode=ro"))
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "opening the control-plane store's readers");
                    Error::Datasource("the control-plane store is unavailable".into())
                })?;
        }
        Ok(store)
    }

    /// A Postgres store's database name and its server's start time (epoch
    /// seconds): together they recognize this store's server behind any
    /// address. `None` for SQLite.
    pub async fn server_identity(&self) -> Result<Option<(String, String)>> {
        if self.kind != StoreKind::Postgres {
            return Ok(None);
        }
        let row: (String, String) =
            sqlx::query_as(silo_engine::capability::postgres::SERVER_IDENTITY)
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        Ok(Some(row))
    }

    /// Which database holds it.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// Starts a transaction that holds the store's write lock (Postgres: an
    /// advisory lock; SQLite: the write lock from its first statement, so a
    /// read in it can never be outdated by the audit writer's commits).
    pub async fn begin(&self) -> Result<Tx> {
        let mut tx = match self.kind {
            StoreKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            StoreKind::Postgres => self.pool.begin().await,
        }
        .map_err(db)?;
        if self.kind == StoreKind::Postgres {
            q!(
                execute,
                &mut *tx,
                "SELECT pg_advisory_xact_lock($1)",
                PG_LOCK
            )?;
        }
        Ok(tx)
    }

    /// A `meta` value.
    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        let row = q!(
            fetch_optional,
            &self.pool,
            "SELECT value FROM meta WHERE key = $1",
            key
        )?;
        row.map(|r| r.try_get(0).map_err(db)).transpose()
    }

    /// The pool, for the audit log.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// SQLite: the file reached in-process.
    pub(crate) fn local(&self) -> Option<&Arc<local::Local>> {
        self.local.as_ref()
    }

    /// The audit writer's queue, started on first use. The writer holds a
    /// copy of this store without the queue, so it ends when the last copy
    /// of the store that owns the queue is dropped.
    pub(crate) fn audit_queue(&self) -> &super::audit::Queue {
        self.audit.get_or_init(|| {
            super::audit::Queue::start(Store {
                pool: self.pool.clone(),
                reads: self.reads.clone(),
                kind: self.kind,
                local: self.local.clone(),
                audit: Arc::default(),
            })
        })
    }
}

/// A datasource's record; whether it has a credential, never the credential.
const DATASOURCE_COLUMNS: &str = "id, org_id, name, kind, connector, settings, accept_write, created_at, \
     CASE WHEN sealed_credential IS NULL THEN 0 ELSE 1 END";

const GRANT_COLUMNS: &str =
    "grants.dataset_id, grants.permission, grants.row_filter, grants.all_rows, grants.columns_";

async fn meta_in(tx: &mut Tx, key: &str) -> Result<Option<String>> {
    let row = q!(
        fetch_optional,
        &mut **tx,
        "SELECT value FROM meta WHERE key = $1",
        key
    )?;
    row.map(|r| r.try_get(0).map_err(db)).transpose()
}

async fn set_meta_in(tx: &mut Tx, key: &str, value: &str) -> Result<()> {
    q!(execute, &mut **tx, "DELETE FROM meta WHERE key = $1", key)?;
    q!(
        execute,
        &mut **tx,
        "INSERT INTO meta (key, value) VALUES ($1, $2)",
        key,
        value
    )?;
    Ok(())
}

/// The id and creation time of the record of `table` in `org` whose
/// `column` (its name within the org) is `value`: upserts keep both.
async fn existing(
    tx: &mut Tx,
    table: &str,
    column: &str,
    org: &str,
    value: &str,
) -> Result<Option<(String, i64)>> {
    let sql = format!("SELECT id, created_at FROM {table} WHERE org_id = $1 AND {column} = $2");
    let row = q!(fetch_optional, &mut **tx, &sql, org, value)?;
    row.map(|r| Ok((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?)))
        .transpose()
}

async fn bump_revision(tx: &mut Tx, org: &str, datasource: &str) -> Result<()> {
    q!(
        execute,
        &mut **tx,
        "UPDATE datasources SET revision = revision + 1 WHERE org_id = $1 AND id = $2",
        org,
        datasource
    )?;
    Ok(())
}

fn found(rows: u64, what: &str) -> Result<()> {
    if rows == 0 {
        Err(Error::NotFound(what.into()))
    } else {
        Ok(())
    }
}

fn grant_row(r: &AnyRow, at: usize) -> Result<GroupGrant> {
    let permission: String = r.try_get(at + 1).map_err(db)?;
    Ok(GroupGrant {
        dataset_id: r.try_get(at).map_err(db)?,
        permission: Permission::parse(&permission)
            .ok_or_else(|| Error::Internal(format!("stored permission `{permission}`")))?,
        row_filter: parse(&r.try_get::<String, _>(at + 2).map_err(db)?)?,
        all_rows: r.try_get::<i64, _>(at + 3).map_err(db)? != 0,
        columns: r
            .try_get::<Option<String>, _>(at + 4)
            .map_err(db)?
            .map(|t| parse(&t))
            .transpose()?,
    })
}

/// Creates the SQLite file (and its directory) owner-only if missing: the
/// store holds sealed credentials and the audit log.
fn create_private_file(path: &Path) -> Result<()> {
    let io =
        |e: std::io::Error| Error::Config(format!("control-plane store {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_options_are_one_setting_and_nothing_else() {
        assert_eq!(
            sqlite_options("a/s.db").unwrap(),
            ("a/s.db", Synchronous::Normal)
        );
        assert_eq!(
            sqlite_options("a/s.db?synchronous=full").unwrap(),
            ("a/s.db", Synchronous::Full)
        );
        assert_eq!(
            sqlite_options("a/s.db?synchronous=normal").unwrap(),
            ("a/s.db", Synchronous::Normal)
        );
        for bad in ["a?synchronous=off", "a?mode=rw", "a?synchronous=FULL&x=1"] {
            assert!(
                matches!(sqlite_options(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn every_writer_syncs_as_the_store_url_says() {
        let dir = std::env::temp_dir().join(format!("silo-sync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (option, level) in [
            ("", 1),
            ("?synchronous=full", 2),
            ("?synchronous=normal", 1),
        ] {
            let path = dir.join(format!("s{level}{}.db", option.len()));
            let store = Store::open(&format!("{}{option}", path.display()))
                .await
                .unwrap();
            let local = store.local().unwrap().writer().unwrap();
            let got: i64 = local
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            assert_eq!(got, level, "the audit writer, {option:?}");
            let got: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(got, level, "the store's writer, {option:?}");
            let mode: String = local
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
    }
}
