//! Sessions, each org's version, and the purge of expired sessions.

use sqlx::Row;

use silo_core::error::{Error, Result};

use crate::model::Session;

use super::request_path::{SESSION_COLUMNS, session_by_id};
use super::{Store, db, found, json, now, parse};

impl Store {
    /// Creates a session.
    pub async fn insert_session(&self, s: &Session) -> Result<()> {
        let datasets = s.datasets.as_ref().map(json).transpose()?;
        q!(
            execute,
            &self.pool,
            "INSERT INTO sessions (id, org_id, embed_user_id, datasets, parameters, created_at, expires_at, generation) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &s.id,
            &s.org_id,
            &s.embed_user_id,
            datasets,
            json(&s.parameters)?,
            s.created_at,
            s.expires_at,
            s.generation
        )?;
        Ok(())
    }

    /// Renews a session: its scope, expiry and generation, only if it is
    /// still the same user's, not revoked, and at generation `from` (no
    /// renewal raced it). Anything else is a conflict.
    pub async fn renew_session(&self, s: &Session, from: i64) -> Result<()> {
        let datasets = s.datasets.as_ref().map(json).transpose()?;
        let done = q!(
            execute,
            &self.pool,
            "UPDATE sessions SET datasets = $1, parameters = $2, expires_at = $3, generation = $4 \
             WHERE org_id = $5 AND id = $6 AND embed_user_id = $7 AND revoked_at IS NULL AND generation = $8",
            datasets,
            json(&s.parameters)?,
            s.expires_at,
            s.generation,
            &s.org_id,
            &s.id,
            &s.embed_user_id,
            from
        )?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(Error::Conflict(
                "the session changed meanwhile (revoked or renewed); try again".into(),
            ))
        }
    }

    /// The sessions of `org` (`id`: just that one).
    pub async fn sessions(&self, org: &str, id: Option<&str>) -> Result<Vec<Session>> {
        let rows = match id {
            // The request path: one session by primary key.
            Some(id) => q!(fetch_all, &self.reads, &session_by_id(), org, id)?,
            None => q!(
                fetch_all,
                &self.reads,
                &format!("{SESSION_COLUMNS} WHERE org_id = $1 ORDER BY created_at, id"),
                org
            )?,
        };
        rows.iter()
            .map(|r| {
                Ok(Session {
                    id: r.try_get(0).map_err(db)?,
                    org_id: r.try_get(1).map_err(db)?,
                    embed_user_id: r.try_get(2).map_err(db)?,
                    datasets: r
                        .try_get::<Option<String>, _>(3)
                        .map_err(db)?
                        .map(|t| parse(&t))
                        .transpose()?,
                    parameters: parse(&r.try_get::<String, _>(4).map_err(db)?)?,
                    created_at: r.try_get(5).map_err(db)?,
                    expires_at: r.try_get(6).map_err(db)?,
                    revoked_at: r.try_get(7).map_err(db)?,
                    generation: r.try_get(8).map_err(db)?,
                })
            })
            .collect()
    }

    /// One session of `org`.
    pub async fn session(&self, org: &str, id: &str) -> Result<Session> {
        self.sessions(org, Some(id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound("session".into()))
    }

    /// `org`'s version: it changes whenever something a request's cached
    /// reads depend on changes (`None`: no such org).
    pub async fn org_version(&self, org: &str) -> Result<Option<i64>> {
        if let Some(local) = &self.local {
            return local.org_version(org);
        }
        let row = q!(
            fetch_optional,
            &self.reads,
            "SELECT version FROM org_versions WHERE org_id = $1",
            org
        )?;
        row.map(|r| r.try_get::<i64, _>(0).map_err(db)).transpose()
    }

    /// Deletes sessions that expired before `before` (their tokens expired
    /// with them): the number deleted.
    pub async fn purge_sessions(&self, before: i64) -> Result<u64> {
        let done = q!(
            execute,
            &self.pool,
            "DELETE FROM sessions WHERE expires_at < $1",
            before
        )?;
        Ok(done.rows_affected())
    }

    /// Revokes a session of `org`.
    pub async fn revoke_session(&self, org: &str, id: &str) -> Result<()> {
        let done = q!(
            execute,
            &self.pool,
            "UPDATE sessions SET revoked_at = $1 WHERE org_id = $2 AND id = $3 AND revoked_at IS NULL",
            now(),
            org,
            id
        )?;
        found(done.rows_affected(), "session")
    }
}
