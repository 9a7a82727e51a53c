//! Connector versions registered through the API, and which one a
//! datasource runs.

use sqlx::Row;

use silo_core::error::Result;

use crate::model::ConnectorInfo;

use super::{Store, bump_revision, db, found};

impl Store {
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
}
