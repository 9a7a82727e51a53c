//! Keys at rest: signing keys, the master key's check value, and the
//! sealed values a key rotation re-seals.

use sqlx::Row;

use silo_core::error::{Error, Result};

use super::{Store, Tx, db, meta_in, now, set_meta_in};

impl Store {
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
            let aad = crate::crypto::credential_aad(&org, &id);
            out.push(("datasources", id, aad, r.try_get(2).map_err(db)?));
        }
        for r in q!(fetch_all, &mut **tx, "SELECT id, sealed FROM signing_keys")? {
            let id: String = r.try_get(0).map_err(db)?;
            let aad = crate::crypto::signing_key_aad(&id);
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
}
