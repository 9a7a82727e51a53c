//! Metadata and summaries of a dataset as a session sees it, cached sealed
//! in the store per filter, columns, policy and datasource revision.

use std::time::Instant;

use zeroize::Zeroizing;

use silo_core::error::{Error, Result};
use silo_metadata::Payload;
use silo_metadata::llm::{Summarizer, Summary};

use crate::audit::{self, AuditEvent};
use crate::embed::Plan;
use crate::store::now;
use crate::{ControlPlane, EmbedPrincipal, append_logged, error_code};

/// How long cached metadata and summaries serve before they are computed
/// again from the database (a changed policy, filter or dataset set is a
/// miss at once).
pub const METADATA_TTL: i64 = 15 * 60;

impl ControlPlane {
    /// The metadata payload of a dataset as the session sees it: profiled
    /// from the rows it may read, through the dataset's privacy policy.
    /// Cached (sealed) per filter, columns, policy and dataset revision.
    pub async fn embed_metadata(&self, e: &EmbedPrincipal, dataset: &str) -> Result<Payload> {
        let plan = self.plan(e, dataset, None).await?;
        self.metadata_of(e, &plan).await
    }

    /// A summary of [`ControlPlane::embed_metadata`] from the LLM endpoint
    /// (or the built-in summarizer). Only the payload is sent; a failed
    /// call caches nothing.
    pub async fn embed_summary(&self, e: &EmbedPrincipal, dataset: &str) -> Result<Summary> {
        let plan = self.plan(e, dataset, None).await?;
        let payload = self.metadata_of(e, &plan).await?;
        let key = self.cache_key(&plan, "summary")?;
        if let Some(hit) = self
            .cache_get::<Summary>(&e.org, &plan.dataset.id, &key)
            .await?
        {
            return Ok(hit);
        }
        let started = Instant::now();
        let result = self.summarizer.summarize(&payload).await;
        let e_ = AuditEvent {
            outcome: result.as_ref().err().map_or("ok", error_code).into(),
            duration_ms: Some(started.elapsed().as_millis() as i64),
            detail: result.as_ref().ok().map(|s| s.source.clone()),
            ..e.event("summarize", &plan.dataset.id)
        };
        append_logged(&self.store, &e_).await;
        let summary = result?;
        self.cache_put(&e.org, &plan.dataset.id, &key, &summary)
            .await?;
        Ok(summary)
    }

    async fn metadata_of(&self, e: &EmbedPrincipal, plan: &Plan) -> Result<Payload> {
        let key = self.cache_key(plan, "metadata")?;
        if let Some(hit) = self
            .cache_get::<Payload>(&e.org, &plan.dataset.id, &key)
            .await?
        {
            return Ok(hit);
        }
        let policy = plan.dataset.privacy.clone().unwrap_or_default();
        let limit = self.runtime.limits().max_rows;
        let started = Instant::now();
        let mut audit = self.pending_audit(
            AuditEvent {
                filter_fingerprint: Some(audit::fingerprint(&self.fingerprints, &plan.filter()?)),
                ..e.event("profile", &plan.dataset.id)
            },
            started,
        );
        let profiled = match plan.run(Some(limit)).await {
            Ok(fetch) => {
                silo_engine::silo::profile(&plan.silo, fetch, &plan.dataset.name, &policy).await
            }
            Err(err) => Err(err),
        };
        let profile = match profiled {
            Ok(p) => p,
            Err(err) => {
                audit.record(0, 0, error_code(&err)).await;
                return Err(err);
            }
        };
        if let Some(ev) = audit.event.as_mut() {
            ev.rows = Some(profile.rows() as i64);
        }
        let rows = profile.rows();
        audit.record(rows, 0, "ok").await;
        let payload = profile.payload(&policy);
        self.cache_put(&e.org, &plan.dataset.id, &key, &payload)
            .await?;
        Ok(payload)
    }

    /// What a cached value was computed from: the enforced filter, the
    /// columns, the privacy policy, the datasource's revision, and for
    /// summaries the summarizer.
    fn cache_key(&self, plan: &Plan, kind: &str) -> Result<String> {
        use sha2::Digest;
        let policy = plan.dataset.privacy.clone().unwrap_or_default();
        let source = match (&self.summarizer, kind) {
            (Summarizer::Llm(c), "summary") => c.model().to_owned(),
            (_, "summary") => "builtin".to_owned(),
            _ => String::new(),
        };
        let material = serde_json::to_vec(&(
            kind,
            audit::fingerprint(&self.fingerprints, &plan.filter()?),
            &plan.columns,
            policy.fingerprint(),
            plan.revision,
            source,
        ))
        .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(format!(
            "{kind}:{}",
            hex::encode(sha2::Sha256::digest(material))
        ))
    }

    async fn cache_get<T: serde::de::DeserializeOwned>(
        &self,
        org: &str,
        dataset: &str,
        key: &str,
    ) -> Result<Option<T>> {
        let Some((sealed, at)) = self.store.cached(org, dataset, key).await? else {
            return Ok(None);
        };
        if now() - at > METADATA_TTL {
            return Ok(None);
        }
        let plain = self.key.open(&metadata_aad(org, dataset, key), &sealed)?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|e| Error::Internal(format!("a cached metadata record: {e}")))
    }

    async fn cache_put<T: serde::Serialize>(
        &self,
        org: &str,
        dataset: &str,
        key: &str,
        value: &T,
    ) -> Result<()> {
        let plain =
            Zeroizing::new(serde_json::to_vec(value).map_err(|e| Error::Internal(e.to_string()))?);
        let sealed = self.key.seal(&metadata_aad(org, dataset, key), &plain)?;
        self.store.put_cached(org, dataset, key, &sealed).await
    }

    /// Opens a cache entry as stored (tests check what is at rest).
    pub fn open_cached(
        &self,
        org: &str,
        dataset: &str,
        key: &str,
        sealed: &str,
    ) -> Result<Vec<u8>> {
        Ok(self
            .key
            .open(&metadata_aad(org, dataset, key), sealed)?
            .to_vec())
    }
}

fn metadata_aad(org: &str, dataset: &str, key: &str) -> String {
    format!("silo/metadata/{org}/{dataset}/{key}")
}
