//! The sealed metadata cache: profiles and summaries per dataset.

use sqlx::Row;

use silo_core::error::Result;

use super::{Store, Tx, db, now};

impl Store {
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
}
