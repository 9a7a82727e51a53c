//! Datasources, with their sealed credentials.

use sqlx::Row;
use sqlx::any::AnyRow;

use silo_core::error::{Error, Result};

use crate::model::{Datasource, DatasourceKind};

use super::request_path::datasource_by_id;
use super::{DATASOURCE_COLUMNS, Store, db, found, json, parse};

impl Store {
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
