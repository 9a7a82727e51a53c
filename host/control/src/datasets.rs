//! Datasets: the governed tables of a datasource, their privacy policies,
//! and uploads into the datasets of a `files` datasource.

use std::path::PathBuf;
use std::time::Instant;

use serde::Deserialize;
use utoipa::ToSchema;

use silo_core::error::{Error, Result};
use silo_metadata::PrivacyPolicy;

use crate::audit::AuditEvent;
use crate::model::{Dataset, Datasource, DatasourceKind};
use crate::store::now;
use crate::{ControlPlane, Principal, append_logged, error_code, tokens, valid_name};

/// `POST /v1/datasets`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetInput {
    /// The datasource (id or name).
    pub datasource: String,
    /// Table (`table` or `schema.table`), collection or upload name.
    pub name: String,
}

/// A column as an embed session may see it.
#[derive(Debug, Clone, serde::Serialize, ToSchema)]
pub struct ColumnInfo {
    /// Name.
    pub name: String,
    /// Type (`int`, `text`, `date`, …).
    pub kind: String,
    /// May hold nulls.
    pub nullable: bool,
}

/// What an upload stored.
#[derive(Debug, Clone, serde::Serialize, ToSchema)]
pub struct UploadSummary {
    /// Rows stored.
    pub rows: u64,
    /// Columns inferred.
    pub columns: Vec<ColumnInfo>,
    /// Partition directories written.
    pub partitions: Vec<String>,
}

impl ControlPlane {
    /// Adds a dataset (a governed table) to a datasource of `p`'s org.
    pub async fn create_dataset(&self, p: &Principal, input: DatasetInput) -> Result<Dataset> {
        let org = Self::org_of(p)?;
        valid_name("a dataset name", &input.name)?;
        let (ds, _, _) = self.store.datasource(org, &input.datasource).await?;
        let d = Dataset {
            id: tokens::new_id("dset")?,
            org_id: org.to_owned(),
            datasource_id: ds.id,
            name: input.name,
            privacy: None,
            created_at: now(),
        };
        self.store.insert_dataset(&d).await?;
        self.audit(p, "dataset.create", Some(&d.id), None).await;
        Ok(d)
    }

    /// The datasets of `p`'s org.
    pub async fn datasets(&self, p: &Principal) -> Result<Vec<Dataset>> {
        self.store.datasets(Self::org_of(p)?, None).await
    }

    /// Deletes a dataset of `p`'s org.
    pub async fn delete_dataset(&self, p: &Principal, id: &str) -> Result<()> {
        self.store.delete_dataset(Self::org_of(p)?, id).await?;
        self.audit(p, "dataset.delete", Some(id), None).await;
        Ok(())
    }

    /// Replaces the data of an upload dataset of `p`'s org with `file`
    /// (`.csv` or `.ndjson`), validated whole first, optionally split into
    /// one directory per value of `partition_by`. The datasource's registry
    /// and the dataset's cached metadata are refreshed: new data.
    pub async fn upload(
        &self,
        p: &Principal,
        dataset: &str,
        file: PathBuf,
        partition_by: Option<String>,
    ) -> Result<UploadSummary> {
        use silo_engine::capability::files::{FilesStore, upload};
        let org = Self::org_of(p)?;
        let (d, ds) = self.upload_target(p, dataset).await?;
        let config = self.engine_config(&ds, None, &[])?;
        let files = config
            .datasources
            .values()
            .find_map(|c| c.files.clone())
            .ok_or_else(|| Error::Internal("a files datasource without files settings".into()))?;
        let started = Instant::now();
        let name = d.name.clone();
        let grace = upload::retire_grace(self.limits());
        let max_bytes = self.max_upload_bytes;
        let store = FilesStore::new(&files)?;
        let writer = store.clone();
        let done = tokio::task::spawn_blocking(move || {
            upload::upload_with_grace(
                &writer,
                &upload::Upload {
                    dataset: &name,
                    file: &file,
                    partition_by: partition_by.as_deref(),
                    max_bytes,
                    max_partitions: upload::MAX_PARTITIONS,
                    progress: None,
                },
                grace,
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("upload task: {e}")))?;
        if done.is_ok() {
            // The replaced data goes once no fetch can still be reading it.
            let name = d.name.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let _ = tokio::task::spawn_blocking(move || {
                    silo_engine::capability::files::generations::sweep_dataset(&store, &name, grace)
                })
                .await;
            });
        }
        let e = AuditEvent {
            org_id: Some(org.to_owned()),
            actor: p.actor(),
            action: "dataset.upload".into(),
            target: Some(d.id.clone()),
            rows: done.as_ref().ok().map(|u| u.rows as i64),
            outcome: done.as_ref().err().map_or("ok", error_code).into(),
            duration_ms: Some(started.elapsed().as_millis() as i64),
            ..AuditEvent::default()
        };
        append_logged(&self.store, &e).await;
        let done = done?;
        self.store.new_data(org, &d.datasource_id, &d.id).await?;
        Ok(UploadSummary {
            rows: done.rows,
            columns: done
                .columns
                .iter()
                .map(|c| ColumnInfo {
                    name: c.name.clone(),
                    kind: silo_types::text::kind_name(c.kind).to_owned(),
                    nullable: c.nullable,
                })
                .collect(),
            partitions: done.partitions,
        })
    }

    /// The dataset an upload of `p` to `dataset` replaces, and its
    /// datasource: checked before a byte of the body is read, so a refused
    /// upload costs no disk and is answered at once.
    pub async fn upload_target(
        &self,
        p: &Principal,
        dataset: &str,
    ) -> Result<(Dataset, Datasource)> {
        let org = Self::org_of(p)?;
        let d = self.store.dataset(org, dataset).await?;
        let (ds, _, _) = self.store.datasource(org, &d.datasource_id).await?;
        if ds.kind != DatasourceKind::Files {
            return Err(Error::Config(
                "uploads go to a dataset of a `files` datasource".into(),
            ));
        }
        Ok((d, ds))
    }

    /// The largest upload the API accepts (`silo serve --max-upload-bytes`).
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// Where uploads (of every org) are staged before validation: one
    /// owner-only directory, random file names, removed after each upload
    /// (and at start, what a crash left).
    pub fn staging_dir(&self) -> PathBuf {
        self.data_dir.join(".incoming")
    }

    /// Sets (or resets, with `None`) the privacy policy of a dataset of
    /// `p`'s org; its cached metadata is dropped.
    pub async fn set_privacy(
        &self,
        p: &Principal,
        dataset: &str,
        policy: Option<PrivacyPolicy>,
    ) -> Result<Dataset> {
        let org = Self::org_of(p)?;
        let d = self.store.dataset(org, dataset).await?;
        if let Some(policy) = &policy {
            for c in policy.columns.keys().chain(&policy.exact_extremes) {
                valid_name("a column name", c)?;
            }
        }
        let text = policy
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.store.set_privacy(org, &d.id, text.as_deref()).await?;
        self.audit(p, "dataset.privacy", Some(&d.id), None).await;
        self.store.dataset(org, &d.id).await
    }
}
