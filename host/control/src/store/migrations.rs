//! The schema: [`MIGRATIONS`], applied in order by `Store::migrate` when
//! the store opens.

use silo_core::error::{Error, Result};

use super::{Store, StoreKind, db, meta_in, set_meta_in};

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

/// SQLite: the audit log refuses changes (created with the table, and again
/// when the table is rebuilt).
const AUDIT_NO_UPDATE: &str = "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit \
     BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END";
const AUDIT_NO_DELETE: &str = "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit \
     BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END";

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
        sqlite: &[AUDIT_NO_UPDATE, AUDIT_NO_DELETE],
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
    // SQLite: the audit log keyed by its sequence number as the rowid
    // (`INTEGER PRIMARY KEY`): an append then writes the table and the org
    // index, not a third b-tree for `seq` (one page fewer per commit). The
    // copy keeps every record and hash; dropping a table fires no trigger.
    Migration {
        shared: &[],
        sqlite: &[
            "CREATE TABLE audit_by_seq (seq INTEGER PRIMARY KEY, at BIGINT NOT NULL, org_id TEXT, \
             actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT, filter_fingerprint TEXT, \
             rows_ BIGINT, bytes BIGINT, outcome TEXT NOT NULL, duration_ms BIGINT, detail TEXT, \
             prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
            "INSERT INTO audit_by_seq SELECT seq, at, org_id, actor, action, target, \
             filter_fingerprint, rows_, bytes, outcome, duration_ms, detail, prev_hash, hash \
             FROM audit ORDER BY seq",
            "DROP TABLE audit",
            "ALTER TABLE audit_by_seq RENAME TO audit",
            "CREATE INDEX audit_by_org ON audit (org_id, seq)",
            AUDIT_NO_UPDATE,
            AUDIT_NO_DELETE,
        ],
        postgres: &[],
    },
];

impl Store {
    pub(super) async fn migrate(&self) -> Result<()> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{self, AuditEvent};

    /// A store made by the previous release (every migration but the last)
    /// with chained records opens with its log intact and still guarded.
    #[tokio::test]
    async fn an_older_sqlite_store_keeps_its_audit_chain_through_the_upgrade() {
        let dir = std::env::temp_dir().join(format!("silo-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();

        // Records chained by a current store: their hashes do not depend on
        // the schema.
        let current = Store::open(&dir.join("new.db").display().to_string())
            .await
            .unwrap();
        for action in ["a", "b", "c"] {
            let e = AuditEvent {
                actor: "cli".into(),
                action: action.into(),
                outcome: "ok".into(),
                org_id: Some("org_1".into()),
                ..AuditEvent::default()
            };
            audit::append(&current, &e).await.unwrap();
        }
        let records = audit::records(&current, None).await.unwrap();

        let old = dir.join("old.db");
        {
            let conn = rusqlite::Connection::open(&old).unwrap();
            conn.execute_batch("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                .unwrap();
            let previous = MIGRATIONS.len() - 1;
            for m in &MIGRATIONS[..previous] {
                for stmt in m.shared.iter().chain(m.sqlite) {
                    conn.execute_batch(stmt).unwrap();
                }
            }
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                [previous.to_string()],
            )
            .unwrap();
            for r in &records {
                let e = &r.event;
                conn.execute(
                    "INSERT INTO audit VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                    rusqlite::params![
                        r.seq, r.at, e.org_id, e.actor, e.action, e.target, e.filter_fingerprint,
                        e.rows, e.bytes, e.outcome, e.duration_ms, e.detail, r.prev_hash, r.hash
                    ],
                )
                .unwrap();
            }
        }

        let upgraded = Store::open(&old.display().to_string()).await.unwrap();
        assert_eq!(
            upgraded.meta("schema_version").await.unwrap(),
            Some(MIGRATIONS.len().to_string())
        );
        assert_eq!(audit::records(&upgraded, None).await.unwrap(), records);
        assert_eq!(audit::verify(&upgraded).await.unwrap().records, 3);
        // Still append-only, still indexed by org, and appends go on.
        for sql in ["UPDATE audit SET actor = 'x'", "DELETE FROM audit"] {
            let err = sqlx::query(sql).execute(upgraded.pool()).await.unwrap_err();
            assert!(err.to_string().contains("append-only"), "{err}");
        }
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit'",
        )
        .fetch_all(upgraded.pool())
        .await
        .unwrap();
        assert_eq!(indexes, vec!["audit_by_org".to_owned()]);
        let e = AuditEvent {
            actor: "cli".into(),
            action: "d".into(),
            outcome: "ok".into(),
            ..AuditEvent::default()
        };
        assert_eq!(audit::append(&upgraded, &e).await.unwrap().seq, 4);
        assert_eq!(audit::verify(&upgraded).await.unwrap().records, 4);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
