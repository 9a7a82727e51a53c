//! Embed users, their group memberships and the grants those give them.

use sqlx::Row;

use silo_core::error::{Error, Result};

use crate::model::{EmbedUser, GroupGrant};

use super::request_path::{MEMBERSHIPS_OF_USER, USER_COLUMNS, grants_of_user, user_by_id};
use super::{Store, db, existing, found, grant_row, json, parse};

impl Store {
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
}
