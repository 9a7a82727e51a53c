//! Groups and the grants they hold.

use sqlx::Row;
use sqlx::any::AnyRow;

use silo_core::error::{Error, Result};

use crate::model::Group;

use super::{GRANT_COLUMNS, Store, db, existing, found, grant_row, json};

impl Store {
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
