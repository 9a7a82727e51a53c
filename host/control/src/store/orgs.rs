//! Organizations and API keys.

use sqlx::Row;
use sqlx::any::AnyRow;

use silo_core::error::{Error, Result};

use crate::model::{ApiKeyInfo, Organization};

use super::{Store, db, found, now};

impl Store {
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
