//! The connector registry: an org's own connector components, checked and
//! stored by digest, and how a datasource names one.

use std::path::PathBuf;

use silo_core::error::{Error, Result};

use crate::model::{self, DatasourceKind};
use crate::store::now;
use crate::{ControlPlane, Principal, tokens, valid_name};

/// How a datasource names a registered connector: by its digest.
pub(crate) const REGISTRY_PREFIX: &str = "registry:";

/// Largest component accepted by the registry.
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;

impl ControlPlane {
    pub(crate) fn connectors_dir(&self) -> PathBuf {
        self.data_dir
            .parent()
            .unwrap_or(&self.data_dir)
            .join("connectors")
    }

    /// Registers version `version` of connector `name` for `p`'s org: the
    /// component is checked as the host would load it (its kind is the one
    /// capability it imports) and stored by digest. Datasources pick it up
    /// when created with it or switched to it, without a restart.
    pub async fn register_connector(
        &self,
        p: &Principal,
        name: &str,
        version: &str,
        wasm: &[u8],
    ) -> Result<model::ConnectorInfo> {
        let org = Self::org_of(p)?;
        valid_name("a connector name", name)?;
        valid_name("a connector version", version)?;
        if wasm.len() > MAX_COMPONENT_BYTES {
            return Err(Error::Limit(format!(
                "a component may be at most {} MiB",
                MAX_COMPONENT_BYTES >> 20
            )));
        }
        let runtime = self.runtime.clone();
        let bytes = wasm.to_vec();
        let found = tokio::task::spawn_blocking(move || runtime.inspect(&bytes, None))
            .await
            .map_err(|e| Error::Internal(format!("inspecting a component: {e}")))?
            // A component the host would refuse is the caller's to fix.
            .map_err(|e| match e {
                Error::Connector(m) => Error::Config(m),
                other => other,
            })?;
        let kind = found.kind.ok_or_else(|| {
            Error::Config(
                "the component imports no datasource capability (silo:connector/sql, document, \
                 files or http)"
                    .into(),
            )
        })?;
        let dir = self.connectors_dir();
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        let io = |e: std::io::Error| Error::Internal(format!("storing a component: {e}"));
        b.create(&dir).map_err(io)?;
        let path = dir.join(format!("{}.wasm", found.digest));
        if !path.exists() {
            let staged = dir.join(format!(".{}.tmp", tokens::new_id("c")?));
            std::fs::write(&staged, wasm)
                .and_then(|()| std::fs::rename(&staged, &path))
                .map_err(io)?;
        }
        let info = model::ConnectorInfo {
            org_id: org.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            kind: kind.interface().to_owned(),
            sha256: found.digest,
            created_at: now(),
        };
        self.store.insert_connector(&info).await?;
        self.audit(
            p,
            "connector.register",
            Some(&format!("{name}@{version}")),
            Some(format!("sha256 {}", info.sha256)),
        )
        .await;
        Ok(info)
    }

    /// The connector versions of `p`'s org.
    pub async fn connectors(&self, p: &Principal) -> Result<Vec<model::ConnectorInfo>> {
        self.store.connectors(Self::org_of(p)?).await
    }

    /// `name` or `name@version` of `org`'s registry, as a datasource stores
    /// it; the connector's kind must be the datasource's.
    pub(crate) async fn resolve_connector(
        &self,
        org: &str,
        spec: &str,
        kind: DatasourceKind,
    ) -> Result<String> {
        let (name, version) = match spec.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (spec, None),
        };
        let found = self
            .store
            .connectors(org)
            .await?
            .into_iter()
            .find(|c| c.name == name && version.is_none_or(|v| v == c.version))
            .ok_or_else(|| Error::NotFound(format!("connector `{spec}`")))?;
        let wanted = kind.capability().interface();
        if found.kind != wanted {
            return Err(Error::Config(format!(
                "connector `{spec}` is a {} connector; a {} datasource needs a {wanted} one",
                found.kind,
                kind.name()
            )));
        }
        Ok(format!("{REGISTRY_PREFIX}{}", found.sha256))
    }
}
