//! The engines: one sandboxed [`Silo`] per datasource, built from its stored
//! record and rebuilt when its revision changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::SecretString;

use silo_core::error::{Error, Result};
use silo_engine::capability::files::FilesConfig;
use silo_engine::config::{DatasetConfig, DatasourceConfig, SiloConfig};
use silo_engine::silo::Silo;

use crate::ControlPlane;
use crate::connectors::REGISTRY_PREFIX;
use crate::crypto;
use crate::model::{Dataset, Datasource, DatasourceKind};

impl ControlPlane {
    /// The registry serving one datasource and its revision, rebuilt when
    /// its datasets change.
    pub(crate) async fn engine(
        &self,
        org: &str,
        version: Option<i64>,
        datasource: &str,
    ) -> Result<(Arc<Silo>, i64)> {
        let read = self
            .caches
            .datasources
            .get_or_load(org, datasource, version, async {
                Ok(Arc::new(self.store.datasource(org, datasource).await?))
            })
            .await?;
        let (ds, sealed, revision) = (&read.0, read.1.clone(), read.2);
        if let Some((rev, silo)) = self
            .engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ds.id)
            && *rev == revision
        {
            return Ok((silo.clone(), revision));
        }
        let datasets = self.store.datasets(org, Some(&ds.id)).await?;
        let config = self.engine_config(ds, sealed, &datasets)?;
        let runtime = self.runtime.clone();
        let silo = tokio::task::spawn_blocking(move || Silo::with_runtime(runtime, &config))
            .await
            .map_err(|e| Error::Internal(format!("loading a connector: {e}")))??;
        let silo = Arc::new(silo);
        self.engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ds.id.clone(), (revision, silo.clone()));
        Ok((silo, revision))
    }

    /// The one-datasource configuration a stored datasource runs with; its
    /// name is its id, its credential unsealed only here.
    pub(crate) fn engine_config(
        &self,
        ds: &Datasource,
        sealed: Option<String>,
        datasets: &[Dataset],
    ) -> Result<SiloConfig> {
        let password = sealed
            .map(|s| {
                let bytes = self
                    .key
                    .open(&crypto::credential_aad(&ds.org_id, &ds.id), &s)?;
                std::str::from_utf8(&bytes)
                    .map(|p| SecretString::from(p.to_owned()))
                    .map_err(|_| Error::Internal("a stored credential is not text".into()))
            })
            .transpose()?;
        let bad = |e: serde_json::Error| {
            Error::Internal(format!("stored settings of datasource {}: {e}", ds.id))
        };
        // A registered connector is loaded by digest and checked against it.
        let (connector, connector_sha256) = match ds.connector.strip_prefix(REGISTRY_PREFIX) {
            Some(sha) => (
                self.connectors_dir()
                    .join(format!("{sha}.wasm"))
                    .display()
                    .to_string(),
                Some(sha.to_owned()),
            ),
            None => (ds.connector.clone(), None),
        };
        let mut c = DatasourceConfig {
            connector: Some(connector),
            connector_sha256,
            postgres: None,
            mysql: None,
            mongodb: None,
            files: None,
            http: None,
            accept_write_privileges: ds.accept_write_privileges,
            password,
        };
        match ds.kind {
            DatasourceKind::Postgres => {
                c.postgres = Some(serde_json::from_value(ds.settings.clone()).map_err(bad)?)
            }
            DatasourceKind::Mysql => {
                c.mysql = Some(serde_json::from_value(ds.settings.clone()).map_err(bad)?)
            }
            DatasourceKind::Mongodb => {
                c.mongodb = Some(serde_json::from_value(ds.settings.clone()).map_err(bad)?)
            }
            DatasourceKind::Http => {
                c.http = Some(serde_json::from_value(ds.settings.clone()).map_err(bad)?)
            }
            DatasourceKind::Files => {
                // Bootstrapped from silo.toml: the operator's directory;
                // from the API: the host's data directory, this org only.
                c.files = Some(if ds.settings.get("data_dir").is_some() {
                    serde_json::from_value(ds.settings.clone()).map_err(bad)?
                } else {
                    FilesConfig {
                        data_dir: self.data_dir.clone(),
                        org: ds.org_id.clone(),
                    }
                });
            }
        }
        Ok(SiloConfig {
            limits: *self.runtime.limits(),
            cache_dir: None,
            datasources: BTreeMap::from([(ds.id.clone(), c)]),
            datasets: datasets
                .iter()
                .map(|d| {
                    (
                        d.name.clone(),
                        DatasetConfig {
                            datasource: ds.id.clone(),
                            row_filter: Vec::new(),
                            all_rows: false,
                            privacy: None,
                        },
                    )
                })
                .collect(),
            users: BTreeMap::new(),
            net: self.net.clone(),
            fingerprints: self.fingerprints.clone(),
        })
    }
}
