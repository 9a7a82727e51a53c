//! The control-plane store: a SQLite file (the embedded default, no server)
//! or Postgres (several hosts sharing one control plane). One set of SQL
//! serves both: only portable types (`TEXT`, `BIGINT`), `$n` parameters,
//! JSON kept as text, times as Unix seconds.
//!
//! Tenancy is in the schema as well as in the queries: every child record
//! carries its `org_id`, and its foreign keys name `(org_id, id)` of the
//! parent, so a group can only grant its own organization's datasets and a
//! membership can only link records of one organization.
use std::path::Path;

use std::sync::Arc;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use silo_core::error::{Error, Result};

use super::model::{
    ApiKeyInfo, ConnectorInfo, Dataset, Datasource, DatasourceKind, EmbedUser, Group, GroupGrant,
    Organization, Permission, Session,
};

/// `sqlx::query(sql).bind(arg)….method(executor).await`, its error mapped by
/// [`db`]: one line per statement instead of one per bind.
macro_rules! q {
    ($method:ident, $ex:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        sqlx::query($sql)$(.bind($arg))*.$method($ex).await.map_err(db)
    };
}

/// A trigger that bumps the changed row's org version (see the migration
/// that adds `org_versions`).
macro_rules! bump {
    (sqlite, $table:literal, $op:literal, $row:literal) => {
        concat!(
            "CREATE TRIGGER silo_version_",
            $table,
            "_",
            $op,
            " AFTER ",
            $op,
            " ON ",
            $table,
            " BEGIN UPDATE org_versions SET version = version + 1 WHERE org_id = ",
            $row,
            ".org_id; END"
        )
    };
    (postgres, $table:literal, $ops:literal) => {
        concat!(
            "CREATE TRIGGER silo_version_",
            $table,
            " AFTER ",
            $ops,
            " ON ",
            $table,
            " FOR EACH ROW EXECUTE FUNCTION silo_bump_org_version()"
        )
    };
}

/// Which database holds the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// A SQLite file.
    Sqlite,
    /// A Postgres database.
    Postgres,
}

/// The schema, one migration per entry; each is a list of statements, with
/// the statements only one database understands after the shared ones.
struct Migration {
    shared: &'static [&'static str],
    sqlite: &'static [&'static str],
    postgres: &'static [&'static str],
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        shared: &[
            "CREATE TABLE orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL)",
            "CREATE TABLE api_keys (id TEXT PRIMARY KEY, org_id TEXT REFERENCES orgs(id), name TEXT NOT NULL, \
         digest TEXT NOT NULL, created_at BIGINT NOT NULL, revoked_at BIGINT)",
            "CREATE TABLE datasources (id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES orgs(id), \
         name TEXT NOT NULL, kind TEXT NOT NULL, connector TEXT NOT NULL, settings TEXT NOT NULL, \
         sealed_credential TEXT, accept_write BIGINT NOT NULL, revision BIGINT NOT NULL, \
         created_at BIGINT NOT NULL, UNIQUE (org_id, name), UNIQUE (org_id, id))",
            "CREATE TABLE datasets (id TEXT PRIMARY KEY, org_id TEXT NOT NULL, datasource_id TEXT NOT NULL, \
         name TEXT NOT NULL, created_at BIGINT NOT NULL, UNIQUE (datasource_id, name), UNIQUE (org_id, id), \
         FOREIGN KEY (org_id, datasource_id) REFERENCES datasources(org_id, id) ON DELETE CASCADE)",
            "CREATE TABLE user_groups (id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES orgs(id), \
         name TEXT NOT NULL, created_at BIGINT NOT NULL, UNIQUE (org_id, name), UNIQUE (org_id, id))",
            "CREATE TABLE grants (org_id TEXT NOT NULL, group_id TEXT NOT NULL, dataset_id TEXT NOT NULL, \
         permission TEXT NOT NULL, row_filter TEXT NOT NULL, all_rows BIGINT NOT NULL, columns_ TEXT, \
         PRIMARY KEY (group_id, dataset_id), \
         FOREIGN KEY (org_id, group_id) REFERENCES user_groups(org_id, id) ON DELETE CASCADE, \
         FOREIGN KEY (org_id, dataset_id) REFERENCES datasets(org_id, id) ON DELETE CASCADE)",
            "CREATE TABLE embed_users (id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES orgs(id), \
         external_id TEXT NOT NULL, attributes TEXT NOT NULL, created_at BIGINT NOT NULL, \
         updated_at BIGINT NOT NULL, UNIQUE (org_id, external_id), UNIQUE (org_id, id))",
            "CREATE TABLE memberships (org_id TEXT NOT NULL, group_id TEXT NOT NULL, embed_user_id TEXT NOT NULL, \
         PRIMARY KEY (group_id, embed_user_id), \
         FOREIGN KEY (org_id, group_id) REFERENCES user_groups(org_id, id) ON DELETE CASCADE, \
         FOREIGN KEY (org_id, embed_user_id) REFERENCES embed_users(org_id, id) ON DELETE CASCADE)",
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, org_id TEXT NOT NULL, embed_user_id TEXT NOT NULL, \
         datasets TEXT, parameters TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, \
         revoked_at BIGINT, \
         FOREIGN KEY (org_id, embed_user_id) REFERENCES embed_users(org_id, id) ON DELETE CASCADE)",
            "CREATE TABLE signing_keys (id TEXT PRIMARY KEY, alg TEXT NOT NULL, sealed TEXT NOT NULL, \
         created_at BIGINT NOT NULL)",
            "CREATE TABLE audit (seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, org_id TEXT, actor TEXT NOT NULL, \
         action TEXT NOT NULL, target TEXT, filter_fingerprint TEXT, rows_ BIGINT, bytes BIGINT, \
         outcome TEXT NOT NULL, duration_ms BIGINT, detail TEXT, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
        ],
        sqlite: &[
            "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit \
         BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
            "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit \
         BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
        ],
        postgres: &[
            "CREATE FUNCTION silo_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
            "CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit \
         FOR EACH ROW EXECUTE FUNCTION silo_audit_append_only()",
            "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit \
         FOR EACH STATEMENT EXECUTE FUNCTION silo_audit_append_only()",
        ],
    },
    // Metadata: a privacy policy per dataset, and sealed cached profiles and
    // summaries keyed by what they were computed from.
    Migration {
        shared: &[
            "ALTER TABLE datasets ADD COLUMN privacy TEXT",
            "CREATE TABLE metadata_cache (org_id TEXT NOT NULL, dataset_id TEXT NOT NULL, key TEXT NOT NULL, \
         sealed TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (org_id, dataset_id, key), \
         FOREIGN KEY (org_id, dataset_id) REFERENCES datasets(org_id, id) ON DELETE CASCADE)",
        ],
        sqlite: &[],
        postgres: &[],
    },
    // Connectors registered through the API, pinned by digest.
    Migration {
        shared: &[
            "CREATE TABLE connectors (org_id TEXT NOT NULL REFERENCES orgs(id), name TEXT NOT NULL, \
             version TEXT NOT NULL, kind TEXT NOT NULL, sha256 TEXT NOT NULL, created_at BIGINT NOT NULL, \
             PRIMARY KEY (org_id, name, version))",
        ],
        sqlite: &[],
        postgres: &[],
    },
    // A session's token generation: renewing makes a new one, and only the
    // newest generation's tokens are accepted.
    Migration {
        shared: &["ALTER TABLE sessions ADD COLUMN generation BIGINT NOT NULL DEFAULT 0"],
        sqlite: &[],
        postgres: &[],
    },
    // Every lookup on the request path by an index led by the org, so one
    // org's size never slows another's requests; expiry for the purge.
    Migration {
        shared: &[
            "CREATE INDEX memberships_by_user ON memberships (org_id, embed_user_id)",
            "CREATE INDEX memberships_by_group ON memberships (org_id, group_id)",
            "CREATE INDEX grants_by_group ON grants (org_id, group_id)",
            "CREATE INDEX sessions_by_org ON sessions (org_id, created_at)",
            "CREATE INDEX sessions_by_expiry ON sessions (expires_at)",
            "CREATE INDEX audit_by_org ON audit (org_id, seq)",
        ],
        sqlite: &[],
        postgres: &[],
    },
    // A version per org that the database itself bumps, in the changing
    // transaction, on every change a request's cached reads depend on
    // (sessions revoked, renewed or deleted; users, memberships, groups,
    // grants, datasets): hosts sharing the store check one number per
    // request instead of reading those again.
    Migration {
        shared: &[
            "CREATE TABLE org_versions (org_id TEXT PRIMARY KEY, version BIGINT NOT NULL)",
            "INSERT INTO org_versions (org_id, version) SELECT id, 0 FROM orgs",
        ],
        sqlite: &[
            "CREATE TRIGGER silo_version_new_org AFTER INSERT ON orgs \
             BEGIN INSERT INTO org_versions (org_id, version) VALUES (NEW.id, 0); END",
            bump!(sqlite, "sessions", "UPDATE", "NEW"),
            bump!(sqlite, "sessions", "DELETE", "OLD"),
            bump!(sqlite, "embed_users", "UPDATE", "NEW"),
            bump!(sqlite, "embed_users", "DELETE", "OLD"),
            bump!(sqlite, "memberships", "INSERT", "NEW"),
            bump!(sqlite, "memberships", "UPDATE", "NEW"),
            bump!(sqlite, "memberships", "DELETE", "OLD"),
            bump!(sqlite, "user_groups", "UPDATE", "NEW"),
            bump!(sqlite, "user_groups", "DELETE", "OLD"),
            bump!(sqlite, "grants", "INSERT", "NEW"),
            bump!(sqlite, "grants", "UPDATE", "NEW"),
            bump!(sqlite, "grants", "DELETE", "OLD"),
            bump!(sqlite, "datasets", "UPDATE", "NEW"),
            bump!(sqlite, "datasets", "DELETE", "OLD"),
        ],
        postgres: &[
            "CREATE FUNCTION silo_new_org_version() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN INSERT INTO org_versions (org_id, version) VALUES (NEW.id, 0); RETURN NULL; END $$",
            "CREATE TRIGGER silo_version_new_org AFTER INSERT ON orgs \
             FOR EACH ROW EXECUTE FUNCTION silo_new_org_version()",
            "CREATE FUNCTION silo_bump_org_version() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF TG_OP = 'DELETE' THEN \
             UPDATE org_versions SET version = version + 1 WHERE org_id = OLD.org_id; \
             ELSE UPDATE org_versions SET version = version + 1 WHERE org_id = NEW.org_id; \
             END IF; RETURN NULL; END $$",
            bump!(postgres, "sessions", "UPDATE OR DELETE"),
            bump!(postgres, "embed_users", "UPDATE OR DELETE"),
            bump!(postgres, "memberships", "INSERT OR UPDATE OR DELETE"),
            bump!(postgres, "user_groups", "UPDATE OR DELETE"),
            bump!(postgres, "grants", "INSERT OR UPDATE OR DELETE"),
            bump!(postgres, "datasets", "UPDATE OR DELETE"),
        ],
    },
    // Datasources and new datasets are cached per org version too: the
    // request path then reads nothing but the version.
    Migration {
        shared: &[],
        sqlite: &[
            bump!(sqlite, "datasources", "INSERT", "NEW"),
            bump!(sqlite, "datasources", "UPDATE", "NEW"),
            bump!(sqlite, "datasources", "DELETE", "OLD"),
            bump!(sqlite, "datasets", "INSERT", "NEW"),
        ],
        postgres: &[
            bump!(postgres, "datasources", "INSERT OR UPDATE OR DELETE"),
            "DROP TRIGGER silo_version_datasets ON datasets",
            bump!(postgres, "datasets", "INSERT OR UPDATE OR DELETE"),
        ],
    },
];

/// Postgres advisory lock serializing migrations and audit appends between
/// hosts sharing the store.
const PG_LOCK: i64 = 0x5111_0C0D;

/// Read-only connections to a SQLite store, beside its one writer.
const SQLITE_READERS: u32 = 4;

/// Connections to a Postgres store: a handful per host is plenty for
/// control-plane traffic.
const PG_POOL: u32 = 8;

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Reads of the request path. SQLite: read-only connections of their
    /// own, which in WAL mode read the last commit while the writer
    /// commits, instead of queueing behind its fsync. Postgres: the pool.
    reads: AnyPool,
    kind: StoreKind,
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
        let (kind, url) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (StoreKind::Postgres, url.to_owned())
        } else {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            create_private_file(Path::new(path))?;
            (StoreKind::Sqlite, format!("sqlite://{path}"))
        };
        // SQLite takes one writer at a time; one connection serializes this
        // host's statements instead of failing them with SQLITE_BUSY.
        let max = match kind {
            StoreKind::Sqlite => 1,
            StoreKind::Postgres => PG_POOL,
        };
        let sqlite = kind == StoreKind::Sqlite;
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(10))
            // A SQLite connection is a file in this process: no need to
            // ping it (a round trip to its worker thread) before each use.
            .test_before_acquire(!sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Write-ahead logging with a full sync: one fsync per
                        // commit (of the log) instead of a rollback journal's
                        // several, and a committed transaction still survives
                        // a crash or a power loss.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .fetch_optional(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = FULL")
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
            audit: Arc::default(),
        };
        store.migrate().await?;
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
    /// advisory lock; SQLite: the single connection).
    pub async fn begin(&self) -> Result<Tx> {
        let mut tx = self.pool.begin().await.map_err(db)?;
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

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        q!(
            execute,
            &mut *tx,
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )?;
        let version: usize = meta_in(&mut tx, "schema_version")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if version > MIGRATIONS.len() {
            return Err(Error::Config(format!(
                "the control-plane store has schema version {version}, newer than this silo \
                 ({}); upgrade silo",
                MIGRATIONS.len()
            )));
        }
        for m in &MIGRATIONS[version..] {
            let own = match self.kind {
                StoreKind::Sqlite => m.sqlite,
                StoreKind::Postgres => m.postgres,
            };
            for stmt in m.shared.iter().chain(own) {
                q!(execute, &mut *tx, stmt)?;
            }
        }
        set_meta_in(&mut tx, "schema_version", &MIGRATIONS.len().to_string()).await?;
        tx.commit().await.map_err(db)
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

    // ---- organizations and API keys -------------------------------------

    /// Inserts an organization.
    pub async fn insert_org(&self, org: &Organization) -> Result<()> {
        q!(
            execute,
            &self.pool,
            "INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)",
            &org.id,
            &org.name,
            org.created_at
        )?;
        Ok(())
    }

    /// All organizations, by name.
    pub async fn orgs(&self) -> Result<Vec<Organization>> {
        q!(
            fetch_all,
            &self.pool,
            "SELECT id, name, created_at FROM orgs ORDER BY name"
        )?
        .iter()
        .map(org_row)
        .collect()
    }

    /// One organization by id or by name.
    pub async fn org(&self, id_or_name: &str) -> Result<Organization> {
        let row = q!(
            fetch_optional,
            &self.pool,
            "SELECT id, name, created_at FROM orgs WHERE id = $1 OR name = $1",
            id_or_name
        )?;
        org_row(&row.ok_or_else(|| Error::NotFound("organization".into()))?)
    }

    /// Inserts an API key's record (its digest, never the key).
    pub async fn insert_api_key(&self, info: &ApiKeyInfo, digest: &str) -> Result<()> {
        q!(
            execute,
            &self.pool,
            "INSERT INTO api_keys (id, org_id, name, digest, created_at) VALUES ($1, $2, $3, $4, $5)",
            &info.id,
            &info.org_id,
            &info.name,
            digest,
            info.created_at
        )?;
        Ok(())
    }

    /// An API key's record and digest, by id.
    pub async fn api_key(&self, id: &str) -> Result<Option<(ApiKeyInfo, String)>> {
        let row = q!(
            fetch_optional,
            &self.pool,
            "SELECT id, org_id, name, created_at, revoked_at, digest FROM api_keys WHERE id = $1",
            id
        )?;
        row.map(|r| Ok((api_key_row(&r)?, r.try_get(5).map_err(db)?)))
            .transpose()
    }

    /// The keys of `org` (`None`: the operator keys).
    pub async fn api_keys(&self, org: Option<&str>) -> Result<Vec<ApiKeyInfo>> {
        let sql = "SELECT id, org_id, name, created_at, revoked_at FROM api_keys \
                   WHERE org_id = $1 OR ($1 IS NULL AND org_id IS NULL) ORDER BY created_at, id";
        q!(fetch_all, &self.pool, sql, org)?
            .iter()
            .map(api_key_row)
            .collect()
    }

    /// Revokes a key of `org`; `NotFound` if it has no such key.
    pub async fn revoke_api_key(&self, org: Option<&str>, id: &str) -> Result<()> {
        let sql = "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
                   AND (org_id = $3 OR ($3 IS NULL AND org_id IS NULL))";
        let done = q!(execute, &self.pool, sql, now(), id, org)?;
        found(done.rows_affected(), "API key")
    }

    // ---- datasources and datasets ---------------------------------------

    /// Inserts a datasource with its sealed credential.
    pub async fn insert_datasource(&self, ds: &Datasource, sealed: Option<&str>) -> Result<()> {
        q!(
            execute,
            &self.pool,
            "INSERT INTO datasources (id, org_id, name, kind, connector, settings, sealed_credential, \
             accept_write, revision, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)",
            &ds.id,
            &ds.org_id,
            &ds.name,
            ds.kind.name(),
            &ds.connector,
            json(&ds.settings)?,
            sealed,
            i64::from(ds.accept_write_privileges),
            ds.created_at
        )?;
        Ok(())
    }

    /// The datasources of `org`.
    pub async fn datasources(&self, org: &str) -> Result<Vec<Datasource>> {
        q!(
            fetch_all,
            &self.pool,
            &format!(
                "SELECT {DATASOURCE_COLUMNS} FROM datasources WHERE org_id = $1 ORDER BY name"
            ),
            org
        )?
        .iter()
        .map(datasource_row)
        .collect()
    }

    /// One datasource of `org`, by id or name, with its sealed credential and
    /// revision (bumped whenever its datasets change).
    pub async fn datasource(
        &self,
        org: &str,
        id_or_name: &str,
    ) -> Result<(Datasource, Option<String>, i64)> {
        let row = q!(
            fetch_optional,
            &self.reads,
            &datasource_by_id(),
            org,
            id_or_name
        )?
        .ok_or_else(|| Error::NotFound("datasource".into()))?;
        Ok((
            datasource_row(&row)?,
            row.try_get(9).map_err(db)?,
            row.try_get(10).map_err(db)?,
        ))
    }

    /// Deletes a datasource of `org` and, with it, its datasets and grants.
    pub async fn delete_datasource(&self, org: &str, id: &str) -> Result<()> {
        let done = q!(
            execute,
            &self.pool,
            "DELETE FROM datasources WHERE org_id = $1 AND id = $2",
            org,
            id
        )?;
        found(done.rows_affected(), "datasource")
    }

    /// Inserts a dataset and bumps its datasource's revision.
    pub async fn insert_dataset(&self, d: &Dataset) -> Result<()> {
        let mut tx = self.begin().await?;
        q!(
            execute,
            &mut *tx,
            "INSERT INTO datasets (id, org_id, datasource_id, name, created_at) VALUES ($1, $2, $3, $4, $5)",
            &d.id,
            &d.org_id,
            &d.datasource_id,
            &d.name,
            d.created_at
        )?;
        bump_revision(&mut tx, &d.org_id, &d.datasource_id).await?;
        tx.commit().await.map_err(db)
    }

    /// The datasets of `org`, optionally of one datasource.
    pub async fn datasets(&self, org: &str, datasource: Option<&str>) -> Result<Vec<Dataset>> {
        q!(
            fetch_all,
            &self.reads,
            "SELECT id, org_id, datasource_id, name, created_at, privacy FROM datasets \
             WHERE org_id = $1 AND ($2 IS NULL OR datasource_id = $2) ORDER BY name, id",
            org,
            datasource
        )?
        .iter()
        .map(dataset_row)
        .collect()
    }

    /// One dataset of `org`.
    pub async fn dataset(&self, org: &str, id: &str) -> Result<Dataset> {
        let row = q!(fetch_optional, &self.reads, DATASET_BY_ID, org, id)?;
        dataset_row(&row.ok_or_else(|| Error::NotFound("dataset".into()))?)
    }

    /// Deletes a dataset of `org` (and the grants of it).
    pub async fn delete_dataset(&self, org: &str, id: &str) -> Result<()> {
        let d = self.dataset(org, id).await?;
        let mut tx = self.begin().await?;
        q!(
            execute,
            &mut *tx,
            "DELETE FROM datasets WHERE org_id = $1 AND id = $2",
            org,
            id
        )?;
        bump_revision(&mut tx, org, &d.datasource_id).await?;
        tx.commit().await.map_err(db)
    }

    /// Sets (or, with `None`, resets) a dataset's privacy policy; its cached
    /// metadata goes with the old policy.
    pub async fn set_privacy(&self, org: &str, id: &str, policy: Option<&str>) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = q!(
            execute,
            &mut *tx,
            "UPDATE datasets SET privacy = $1 WHERE org_id = $2 AND id = $3",
            policy,
            org,
            id
        )?;
        found(done.rows_affected(), "dataset")?;
        q!(
            execute,
            &mut *tx,
            "DELETE FROM metadata_cache WHERE org_id = $1 AND dataset_id = $2",
            org,
            id
        )?;
        tx.commit().await.map_err(db)
    }

    /// New data in a dataset: its datasource's registry is rebuilt (fresh
    /// describe) and its cached metadata dropped.
    pub async fn new_data(&self, org: &str, datasource: &str, dataset: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        bump_revision(&mut tx, org, datasource).await?;
        q!(
            execute,
            &mut *tx,
            "DELETE FROM metadata_cache WHERE org_id = $1 AND dataset_id = $2",
            org,
            dataset
        )?;
        tx.commit().await.map_err(db)
    }

    /// Records a connector version of `org`.
    pub async fn insert_connector(&self, c: &ConnectorInfo) -> Result<()> {
        q!(
            execute,
            &self.pool,
            "INSERT INTO connectors (org_id, name, version, kind, sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &c.org_id,
            &c.name,
            &c.version,
            &c.kind,
            &c.sha256,
            c.created_at
        )?;
        Ok(())
    }

    /// The connector versions of `org`, newest first within a name.
    pub async fn connectors(&self, org: &str) -> Result<Vec<ConnectorInfo>> {
        q!(
            fetch_all,
            &self.pool,
            "SELECT org_id, name, version, kind, sha256, created_at FROM connectors \
             WHERE org_id = $1 ORDER BY name, created_at DESC, version DESC",
            org
        )?
        .iter()
        .map(|r| {
            Ok(ConnectorInfo {
                org_id: r.try_get(0).map_err(db)?,
                name: r.try_get(1).map_err(db)?,
                version: r.try_get(2).map_err(db)?,
                kind: r.try_get(3).map_err(db)?,
                sha256: r.try_get(4).map_err(db)?,
                created_at: r.try_get(5).map_err(db)?,
            })
        })
        .collect()
    }

    /// Points a datasource of `org` at another connector; its registry is
    /// rebuilt on the next request.
    pub async fn set_connector(&self, org: &str, datasource: &str, connector: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = q!(
            execute,
            &mut *tx,
            "UPDATE datasources SET connector = $1 WHERE org_id = $2 AND id = $3",
            connector,
            org,
            datasource
        )?;
        found(done.rows_affected(), "datasource")?;
        bump_revision(&mut tx, org, datasource).await?;
        tx.commit().await.map_err(db)
    }

    /// A sealed cache entry of a dataset of `org` and when it was written.
    pub async fn cached(
        &self,
        org: &str,
        dataset: &str,
        key: &str,
    ) -> Result<Option<(String, i64)>> {
        let row = q!(
            fetch_optional,
            &self.pool,
            "SELECT sealed, created_at FROM metadata_cache WHERE org_id = $1 AND dataset_id = $2 AND key = $3",
            org,
            dataset,
            key
        )?;
        row.map(|r| Ok((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?)))
            .transpose()
    }

    /// Writes (or replaces) a sealed cache entry.
    pub async fn put_cached(
        &self,
        org: &str,
        dataset: &str,
        key: &str,
        sealed: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        q!(
            execute,
            &mut *tx,
            "DELETE FROM metadata_cache WHERE org_id = $1 AND dataset_id = $2 AND key = $3",
            org,
            dataset,
            key
        )?;
        q!(
            execute,
            &mut *tx,
            "INSERT INTO metadata_cache (org_id, dataset_id, key, sealed, created_at) VALUES ($1, $2, $3, $4, $5)",
            org,
            dataset,
            key,
            sealed,
            now()
        )?;
        tx.commit().await.map_err(db)
    }

    /// Every sealed cache entry, as stored (tests read them back).
    pub async fn cache_entries(&self) -> Result<Vec<(String, String, String, String)>> {
        q!(
            fetch_all,
            &self.pool,
            "SELECT org_id, dataset_id, key, sealed FROM metadata_cache ORDER BY key"
        )?
        .iter()
        .map(|r| {
            Ok((
                r.try_get(0).map_err(db)?,
                r.try_get(1).map_err(db)?,
                r.try_get(2).map_err(db)?,
                r.try_get(3).map_err(db)?,
            ))
        })
        .collect()
    }

    /// Empties the metadata cache inside `tx` (key rotation: a cache is
    /// cheaper to recompute than to re-seal).
    pub async fn clear_cache(&self, tx: &mut Tx) -> Result<()> {
        q!(execute, &mut **tx, "DELETE FROM metadata_cache")?;
        Ok(())
    }

    // ---- groups ----------------------------------------------------------

    /// Creates or replaces (by name) a group of `org` with exactly `grants`.
    pub async fn upsert_group(&self, group: &Group) -> Result<Group> {
        let mut tx = self.begin().await?;
        let existing = existing(&mut tx, "user_groups", "name", &group.org_id, &group.name).await?;
        let mut out = group.clone();
        match existing {
            Some((id, created_at)) => {
                (out.id, out.created_at) = (id, created_at);
                q!(
                    execute,
                    &mut *tx,
                    "DELETE FROM grants WHERE org_id = $1 AND group_id = $2",
                    &out.org_id,
                    &out.id
                )?;
            }
            None => {
                q!(
                    execute,
                    &mut *tx,
                    "INSERT INTO user_groups (id, org_id, name, created_at) VALUES ($1, $2, $3, $4)",
                    &out.id,
                    &out.org_id,
                    &out.name,
                    out.created_at
                )?;
            }
        }
        for g in &out.grants {
            sqlx::query(
                "INSERT INTO grants (org_id, group_id, dataset_id, permission, row_filter, all_rows, columns_) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&out.org_id)
            .bind(&out.id)
            .bind(&g.dataset_id)
            .bind(g.permission.name())
            .bind(json(&g.row_filter)?)
            .bind(i64::from(g.all_rows))
            .bind(g.columns.as_ref().map(json).transpose()?)
            .execute(&mut *tx)
            .await
            .map_err(|e| match db(e) {
                Error::NotFound(_) => Error::NotFound(format!("dataset `{}`", g.dataset_id)),
                Error::Conflict(_) => {
                    Error::Config(format!("dataset `{}` is granted twice", g.dataset_id))
                }
                other => other,
            })?;
        }
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    /// The groups of `org`.
    pub async fn groups(&self, org: &str) -> Result<Vec<Group>> {
        let rows = q!(
            fetch_all,
            &self.pool,
            "SELECT id, org_id, name, created_at FROM user_groups WHERE org_id = $1 ORDER BY name",
            org
        )?;
        let mut groups = rows.iter().map(group_row).collect::<Result<Vec<_>>>()?;
        let grants = q!(
            fetch_all,
            &self.pool,
            &format!(
                "SELECT group_id, {GRANT_COLUMNS} FROM grants WHERE org_id = $1 ORDER BY dataset_id"
            ),
            org
        )?;
        for row in &grants {
            let group: String = row.try_get(0).map_err(db)?;
            if let Some(g) = groups.iter_mut().find(|g| g.id == group) {
                g.grants.push(grant_row(row, 1)?);
            }
        }
        Ok(groups)
    }

    /// One group of `org`, by id or name.
    pub async fn group(&self, org: &str, id_or_name: &str) -> Result<Group> {
        self.groups(org)
            .await?
            .into_iter()
            .find(|g| g.id == id_or_name || g.name == id_or_name)
            .ok_or_else(|| Error::NotFound("group".into()))
    }

    /// Deletes a group of `org` (its grants and memberships go with it).
    pub async fn delete_group(&self, org: &str, id: &str) -> Result<()> {
        let done = q!(
            execute,
            &self.pool,
            "DELETE FROM user_groups WHERE org_id = $1 AND id = $2",
            org,
            id
        )?;
        found(done.rows_affected(), "group")
    }

    // ---- embed users -----------------------------------------------------

    /// Creates or updates (by external id) an embed user of `org`, with
    /// exactly the groups given.
    pub async fn upsert_embed_user(&self, user: &EmbedUser) -> Result<EmbedUser> {
        let mut tx = self.begin().await?;
        let existing = existing(
            &mut tx,
            "embed_users",
            "external_id",
            &user.org_id,
            &user.external_id,
        )
        .await?;
        let mut out = user.clone();
        match existing {
            Some((id, created_at)) => {
                (out.id, out.created_at) = (id, created_at);
                q!(
                    execute,
                    &mut *tx,
                    "UPDATE embed_users SET attributes = $1, updated_at = $2 WHERE org_id = $3 AND id = $4",
                    json(&out.attributes)?,
                    out.updated_at,
                    &out.org_id,
                    &out.id
                )?;
                q!(
                    execute,
                    &mut *tx,
                    "DELETE FROM memberships WHERE org_id = $1 AND embed_user_id = $2",
                    &out.org_id,
                    &out.id
                )?;
            }
            None => {
                q!(
                    execute,
                    &mut *tx,
                    "INSERT INTO embed_users (id, org_id, external_id, attributes, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &out.id,
                    &out.org_id,
                    &out.external_id,
                    json(&out.attributes)?,
                    out.created_at,
                    out.updated_at
                )?;
            }
        }
        out.groups.sort();
        out.groups.dedup();
        for g in &out.groups {
            sqlx::query(
                "INSERT INTO memberships (org_id, group_id, embed_user_id) VALUES ($1, $2, $3)",
            )
            .bind(&out.org_id)
            .bind(g)
            .bind(&out.id)
            .execute(&mut *tx)
            .await
            .map_err(|e| match db(e) {
                Error::NotFound(_) => Error::NotFound(format!("group `{g}`")),
                other => other,
            })?;
        }
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    /// The embed users of `org`.
    pub async fn embed_users(&self, org: &str) -> Result<Vec<EmbedUser>> {
        self.embed_users_where(org, None).await
    }

    /// One embed user of `org`, by external id or record id.
    pub async fn embed_user(&self, org: &str, id: &str) -> Result<EmbedUser> {
        self.embed_users_where(org, Some(id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound("embed user".into()))
    }

    async fn embed_users_where(&self, org: &str, id: Option<&str>) -> Result<Vec<EmbedUser>> {
        // One user by primary key or (org, external id): each an index.
        let rows = match id {
            Some(id) => q!(fetch_all, &self.reads, &user_by_id(), org, id)?,
            None => q!(
                fetch_all,
                &self.reads,
                &format!("{USER_COLUMNS} WHERE org_id = $1 ORDER BY external_id"),
                org
            )?,
        };
        let mut users = Vec::with_capacity(rows.len());
        for r in &rows {
            users.push(EmbedUser {
                id: r.try_get(0).map_err(db)?,
                org_id: r.try_get(1).map_err(db)?,
                external_id: r.try_get(2).map_err(db)?,
                attributes: parse(&r.try_get::<String, _>(3).map_err(db)?)?,
                groups: Vec::new(),
                created_at: r.try_get(4).map_err(db)?,
                updated_at: r.try_get(5).map_err(db)?,
            });
        }
        let members = match users.as_slice() {
            [one] => q!(fetch_all, &self.reads, MEMBERSHIPS_OF_USER, org, &one.id)?,
            _ => q!(
                fetch_all,
                &self.reads,
                "SELECT embed_user_id, group_id FROM memberships WHERE org_id = $1 ORDER BY group_id",
                org
            )?,
        };
        for r in &members {
            let user: String = r.try_get(0).map_err(db)?;
            if let Some(u) = users.iter_mut().find(|u| u.id == user) {
                u.groups.push(r.try_get(1).map_err(db)?);
            }
        }
        Ok(users)
    }

    /// Deletes an embed user of `org` (and its sessions).
    pub async fn delete_embed_user(&self, org: &str, id: &str) -> Result<()> {
        let done = q!(
            execute,
            &self.pool,
            "DELETE FROM embed_users WHERE org_id = $1 AND (id = $2 OR external_id = $2)",
            org,
            id
        )?;
        found(done.rows_affected(), "embed user")
    }

    /// Every grant the groups of embed user `user` (record id) hold.
    pub async fn grants_of(&self, org: &str, user: &str) -> Result<Vec<GroupGrant>> {
        q!(fetch_all, &self.reads, &grants_of_user(), org, user)?
            .iter()
            .map(|r| grant_row(r, 0))
            .collect()
    }

    // ---- sessions --------------------------------------------------------

    /// Creates a session.
    pub async fn insert_session(&self, s: &Session) -> Result<()> {
        let datasets = s.datasets.as_ref().map(json).transpose()?;
        q!(
            execute,
            &self.pool,
            "INSERT INTO sessions (id, org_id, embed_user_id, datasets, parameters, created_at, expires_at, generation) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &s.id,
            &s.org_id,
            &s.embed_user_id,
            datasets,
            json(&s.parameters)?,
            s.created_at,
            s.expires_at,
            s.generation
        )?;
        Ok(())
    }

    /// Renews a session: its scope, expiry and generation, only if it is
    /// still the same user's, not revoked, and at generation `from` (no
    /// renewal raced it). Anything else is a conflict.
    pub async fn renew_session(&self, s: &Session, from: i64) -> Result<()> {
        let datasets = s.datasets.as_ref().map(json).transpose()?;
        let done = q!(
            execute,
            &self.pool,
            "UPDATE sessions SET datasets = $1, parameters = $2, expires_at = $3, generation = $4 \
             WHERE org_id = $5 AND id = $6 AND embed_user_id = $7 AND revoked_at IS NULL AND generation = $8",
            datasets,
            json(&s.parameters)?,
            s.expires_at,
            s.generation,
            &s.org_id,
            &s.id,
            &s.embed_user_id,
            from
        )?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(Error::Conflict(
                "the session changed meanwhile (revoked or renewed); try again".into(),
            ))
        }
    }

    /// The sessions of `org` (`id`: just that one).
    pub async fn sessions(&self, org: &str, id: Option<&str>) -> Result<Vec<Session>> {
        let rows = match id {
            // The request path: one session by primary key.
            Some(id) => q!(fetch_all, &self.reads, &session_by_id(), org, id)?,
            None => q!(
                fetch_all,
                &self.reads,
                &format!("{SESSION_COLUMNS} WHERE org_id = $1 ORDER BY created_at, id"),
                org
            )?,
        };
        rows.iter()
            .map(|r| {
                Ok(Session {
                    id: r.try_get(0).map_err(db)?,
                    org_id: r.try_get(1).map_err(db)?,
                    embed_user_id: r.try_get(2).map_err(db)?,
                    datasets: r
                        .try_get::<Option<String>, _>(3)
                        .map_err(db)?
                        .map(|t| parse(&t))
                        .transpose()?,
                    parameters: parse(&r.try_get::<String, _>(4).map_err(db)?)?,
                    created_at: r.try_get(5).map_err(db)?,
                    expires_at: r.try_get(6).map_err(db)?,
                    revoked_at: r.try_get(7).map_err(db)?,
                    generation: r.try_get(8).map_err(db)?,
                })
            })
            .collect()
    }

    /// One session of `org`.
    pub async fn session(&self, org: &str, id: &str) -> Result<Session> {
        self.sessions(org, Some(id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound("session".into()))
    }

    /// `org`'s version: it changes whenever something a request's cached
    /// reads depend on changes (`None`: no such org).
    pub async fn org_version(&self, org: &str) -> Result<Option<i64>> {
        let row = q!(
            fetch_optional,
            &self.reads,
            "SELECT version FROM org_versions WHERE org_id = $1",
            org
        )?;
        row.map(|r| r.try_get::<i64, _>(0).map_err(db)).transpose()
    }

    /// Deletes sessions that expired before `before` (their tokens expired
    /// with them): the number deleted.
    pub async fn purge_sessions(&self, before: i64) -> Result<u64> {
        let done = q!(
            execute,
            &self.pool,
            "DELETE FROM sessions WHERE expires_at < $1",
            before
        )?;
        Ok(done.rows_affected())
    }

    /// Revokes a session of `org`.
    pub async fn revoke_session(&self, org: &str, id: &str) -> Result<()> {
        let done = q!(
            execute,
            &self.pool,
            "UPDATE sessions SET revoked_at = $1 WHERE org_id = $2 AND id = $3 AND revoked_at IS NULL",
            now(),
            org,
            id
        )?;
        found(done.rows_affected(), "session")
    }

    // ---- keys at rest ----------------------------------------------------

    /// The newest signing key of `alg`: (id, sealed material).
    pub async fn signing_key(&self, alg: &str) -> Result<Option<(String, String)>> {
        let row = q!(
            fetch_optional,
            &self.pool,
            "SELECT id, sealed FROM signing_keys WHERE alg = $1 ORDER BY created_at DESC, id DESC",
            alg
        )?;
        row.map(|r| Ok((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?)))
            .transpose()
    }

    /// Stores a sealed signing key.
    pub async fn insert_signing_key(&self, id: &str, alg: &str, sealed: &str) -> Result<()> {
        q!(
            execute,
            &self.pool,
            "INSERT INTO signing_keys (id, alg, sealed, created_at) VALUES ($1, $2, $3, $4)",
            id,
            alg,
            sealed,
            now()
        )?;
        Ok(())
    }

    /// Sets the master key's check value once; returns the one stored (which
    /// is `check` on a new store).
    pub async fn init_key_check(&self, check: &str) -> Result<String> {
        let mut tx = self.begin().await?;
        let stored = meta_in(&mut tx, "key_check").await?;
        let out = match stored {
            Some(s) => s,
            None => {
                set_meta_in(&mut tx, "key_check", check).await?;
                check.to_owned()
            }
        };
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    /// Every sealed value: (table, id, associated data, sealed text).
    pub async fn sealed_values(
        &self,
        tx: &mut Tx,
    ) -> Result<Vec<(&'static str, String, String, String)>> {
        let mut out = Vec::new();
        for r in q!(
            fetch_all,
            &mut **tx,
            "SELECT org_id, id, sealed_credential FROM datasources WHERE sealed_credential IS NOT NULL"
        )? {
            let (org, id): (String, String) =
                (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?);
            let aad = super::crypto::credential_aad(&org, &id);
            out.push(("datasources", id, aad, r.try_get(2).map_err(db)?));
        }
        for r in q!(fetch_all, &mut **tx, "SELECT id, sealed FROM signing_keys")? {
            let id: String = r.try_get(0).map_err(db)?;
            let aad = super::crypto::signing_key_aad(&id);
            out.push(("signing_keys", id, aad, r.try_get(1).map_err(db)?));
        }
        Ok(out)
    }

    /// Replaces one sealed value inside `tx` (key rotation).
    pub async fn reseal(&self, tx: &mut Tx, table: &str, id: &str, sealed: &str) -> Result<()> {
        let sql = match table {
            "datasources" => "UPDATE datasources SET sealed_credential = $1 WHERE id = $2",
            "signing_keys" => "UPDATE signing_keys SET sealed = $1 WHERE id = $2",
            "meta" => "UPDATE meta SET value = $1 WHERE key = $2",
            other => return Err(Error::Internal(format!("no sealed values in `{other}`"))),
        };
        q!(execute, &mut **tx, sql, sealed, id)?;
        Ok(())
    }

    /// The pool, for the audit log.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
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
                audit: Arc::default(),
            })
        })
    }
}

/// A datasource's record; whether it has a credential, never the credential.
const DATASOURCE_COLUMNS: &str = "id, org_id, name, kind, connector, settings, accept_write, created_at, \
     CASE WHEN sealed_credential IS NULL THEN 0 ELSE 1 END";
// ---- the request path ----------------------------------------------------
// Every statement a request runs is here, each by primary key or by an index
// led by the org, so one org's size never slows another's requests;
// `Store::request_path_plans` shows the database's plans (a test checks them).

const SESSION_COLUMNS: &str = "SELECT id, org_id, embed_user_id, datasets, parameters, created_at, \
                               expires_at, revoked_at, generation FROM sessions";
const USER_COLUMNS: &str =
    "SELECT id, org_id, external_id, attributes, created_at, updated_at FROM embed_users";
const MEMBERSHIPS_OF_USER: &str = "SELECT embed_user_id, group_id FROM memberships \
                                   WHERE org_id = $1 AND embed_user_id = $2 ORDER BY group_id";
const DATASET_BY_ID: &str = "SELECT id, org_id, datasource_id, name, created_at, privacy \
                             FROM datasets WHERE org_id = $1 AND id = $2";

fn session_by_id() -> String {
    format!("{SESSION_COLUMNS} WHERE id = $2 AND org_id = $1")
}

fn user_by_id() -> String {
    format!(
        "{USER_COLUMNS} WHERE org_id = $1 AND id = $2 UNION \
         {USER_COLUMNS} WHERE org_id = $1 AND external_id = $2"
    )
}

fn datasource_by_id() -> String {
    format!(
        "SELECT {DATASOURCE_COLUMNS}, sealed_credential, revision FROM datasources \
         WHERE org_id = $1 AND (id = $2 OR name = $2)"
    )
}

fn grants_of_user() -> String {
    format!(
        "SELECT {GRANT_COLUMNS} FROM grants JOIN memberships \
         ON memberships.group_id = grants.group_id AND memberships.org_id = grants.org_id \
         WHERE grants.org_id = $1 AND memberships.embed_user_id = $2 ORDER BY grants.group_id"
    )
}

impl Store {
    /// The database's plan for each statement of the request path, with
    /// sequential scans discouraged on Postgres (so a plan that still scans
    /// has no usable index): (name, plan text).
    pub async fn request_path_plans(&self) -> Result<Vec<(&'static str, String)>> {
        let two_ids: &[&str] = &["org_x", "id_x"];
        let statements: Vec<(&'static str, String)> = vec![
            ("session by id", session_by_id()),
            ("embed user by id", user_by_id()),
            ("memberships of a user", MEMBERSHIPS_OF_USER.into()),
            ("grants of a user", grants_of_user()),
            ("dataset by id", DATASET_BY_ID.into()),
            ("datasource by id or name", datasource_by_id()),
        ];
        let mut plans = Vec::new();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let explain = match self.kind {
            StoreKind::Sqlite => "EXPLAIN QUERY PLAN",
            StoreKind::Postgres => {
                q!(execute, &mut *tx, "SET LOCAL enable_seqscan = off")?;
                "EXPLAIN"
            }
        };
        for (name, sql) in statements {
            let text = format!("{explain} {sql}");
            let mut query = sqlx::query(&text).persistent(false);
            for p in two_ids {
                query = query.bind(*p);
            }
            let rows = query.fetch_all(&mut *tx).await.map_err(db)?;
            let column = match self.kind {
                StoreKind::Sqlite => 3,
                StoreKind::Postgres => 0,
            };
            let lines = rows
                .iter()
                .map(|r| r.try_get::<String, _>(column).map_err(db))
                .collect::<Result<Vec<_>>>()?;
            plans.push((name, lines.join("\n")));
        }
        tx.rollback().await.map_err(db)?;
        Ok(plans)
    }
}

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

fn org_row(r: &AnyRow) -> Result<Organization> {
    Ok(Organization {
        id: r.try_get(0).map_err(db)?,
        name: r.try_get(1).map_err(db)?,
        created_at: r.try_get(2).map_err(db)?,
    })
}

fn api_key_row(r: &AnyRow) -> Result<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        id: r.try_get(0).map_err(db)?,
        org_id: r.try_get(1).map_err(db)?,
        name: r.try_get(2).map_err(db)?,
        created_at: r.try_get(3).map_err(db)?,
        revoked_at: r.try_get(4).map_err(db)?,
    })
}

fn datasource_row(r: &AnyRow) -> Result<Datasource> {
    let kind: String = r.try_get(3).map_err(db)?;
    Ok(Datasource {
        id: r.try_get(0).map_err(db)?,
        org_id: r.try_get(1).map_err(db)?,
        name: r.try_get(2).map_err(db)?,
        kind: DatasourceKind::parse(&kind)
            .ok_or_else(|| Error::Internal(format!("stored datasource kind `{kind}`")))?,
        connector: r.try_get(4).map_err(db)?,
        settings: parse(&r.try_get::<String, _>(5).map_err(db)?)?,
        accept_write_privileges: r.try_get::<i64, _>(6).map_err(db)? != 0,
        has_credential: r.try_get::<i64, _>(8).map_err(db)? != 0,
        created_at: r.try_get(7).map_err(db)?,
        warnings: Vec::new(),
    }
    .checked())
}

fn dataset_row(r: &AnyRow) -> Result<Dataset> {
    Ok(Dataset {
        id: r.try_get(0).map_err(db)?,
        org_id: r.try_get(1).map_err(db)?,
        datasource_id: r.try_get(2).map_err(db)?,
        name: r.try_get(3).map_err(db)?,
        created_at: r.try_get(4).map_err(db)?,
        privacy: r
            .try_get::<Option<String>, _>(5)
            .map_err(db)?
            .map(|t| parse(&t))
            .transpose()?,
    })
}

fn group_row(r: &AnyRow) -> Result<Group> {
    Ok(Group {
        id: r.try_get(0).map_err(db)?,
        org_id: r.try_get(1).map_err(db)?,
        name: r.try_get(2).map_err(db)?,
        grants: Vec::new(),
        created_at: r.try_get(3).map_err(db)?,
    })
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
