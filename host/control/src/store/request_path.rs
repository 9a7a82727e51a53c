//! The request path: every statement a request runs, each by primary key or
//! by an index led by the org, and `Store::request_path_plans`, their plans.

use sqlx::Row;

use silo_core::error::Result;

use super::{DATASOURCE_COLUMNS, GRANT_COLUMNS, Store, StoreKind, db};

// Every statement a request runs is here, each by primary key or by an index
// led by the org, so one org's size never slows another's requests;
// `Store::request_path_plans` shows the database's plans (a test checks them).

pub(super) const SESSION_COLUMNS: &str = "SELECT id, org_id, embed_user_id, datasets, parameters, created_at, \
                               expires_at, revoked_at, generation FROM sessions";
pub(super) const USER_COLUMNS: &str =
    "SELECT id, org_id, external_id, attributes, created_at, updated_at FROM embed_users";
pub(super) const MEMBERSHIPS_OF_USER: &str = "SELECT embed_user_id, group_id FROM memberships \
                                   WHERE org_id = $1 AND embed_user_id = $2 ORDER BY group_id";
pub(super) const DATASET_BY_ID: &str = "SELECT id, org_id, datasource_id, name, created_at, privacy \
                             FROM datasets WHERE org_id = $1 AND id = $2";

pub(super) fn session_by_id() -> String {
    format!("{SESSION_COLUMNS} WHERE id = $2 AND org_id = $1")
}

pub(super) fn user_by_id() -> String {
    format!(
        "{USER_COLUMNS} WHERE org_id = $1 AND id = $2 UNION \
         {USER_COLUMNS} WHERE org_id = $1 AND external_id = $2"
    )
}

pub(super) fn datasource_by_id() -> String {
    format!(
        "SELECT {DATASOURCE_COLUMNS}, sealed_credential, revision FROM datasources \
         WHERE org_id = $1 AND (id = $2 OR name = $2)"
    )
}

pub(super) fn grants_of_user() -> String {
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
