//! Datasets: their records, privacy policies and new data.

use sqlx::Row;
use sqlx::any::AnyRow;

use silo_core::error::{Error, Result};

use crate::model::Dataset;

use super::request_path::DATASET_BY_ID;
use super::{Store, bump_revision, db, found, parse};

impl Store {
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
