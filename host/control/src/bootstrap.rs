//! Operator maintenance: seeding the store from a `silo.toml` and rotating
//! the master key.

use std::collections::BTreeSet;

use secrecy::SecretString;
use zeroize::Zeroizing;

use silo_core::error::{Error, Result};
use silo_engine::config::{DatasourceConfig, SiloConfig};

use crate::crypto::MasterKey;
use crate::model::{Datasource, DatasourceKind, GroupGrant, Organization, Permission};
use crate::store::{self, now};
use crate::{ControlPlane, DatasetInput, EmbedUserInput, GroupInput, Principal, tokens};

impl ControlPlane {
    /// Seeds the store from a `silo.toml`: the organization `org` (created
    /// if missing), its datasources (credentials read from their env or
    /// files, then sealed), datasets, one group `silo-toml` granting each
    /// dataset with its row filter, and the users as embed users in it.
    /// Records that exist (by name) are kept; the group and users are
    /// updated.
    pub async fn bootstrap(&self, config: &SiloConfig, org: &str) -> Result<Organization> {
        let p = Principal::Cli;
        let org = match self.store.org(org).await {
            Ok(o) => o,
            Err(Error::NotFound(_)) => self.create_org(&p, org).await?,
            Err(e) => return Err(e),
        };
        let p = Principal::Org {
            org: org.id.clone(),
            key: None,
        };
        let existing: BTreeSet<String> = self
            .store
            .datasources(&org.id)
            .await?
            .into_iter()
            .map(|d| d.name)
            .collect();
        for (name, dc) in &config.datasources {
            if existing.contains(name) {
                continue;
            }
            let (kind, settings, password) = bootstrap_settings(name, dc)?;
            let ds = Datasource {
                id: tokens::new_id("ds")?,
                org_id: org.id.clone(),
                name: name.clone(),
                kind,
                connector: dc
                    .connector
                    .clone()
                    .unwrap_or_else(|| kind.builtin_connector().to_owned()),
                settings,
                accept_write_privileges: dc.accept_write_privileges,
                has_credential: password.is_some(),
                created_at: now(),
                warnings: Vec::new(),
            };
            let password = password
                .map(|s| Zeroizing::new(secrecy::ExposeSecret::expose_secret(&s).to_owned()));
            self.register(&p, ds, password.as_ref().map(|s| s.as_str()))
                .await?;
        }
        let mut grants = Vec::new();
        for (name, d) in &config.datasets {
            let (ds, _, _) = self.store.datasource(&org.id, &d.datasource).await?;
            let found = self
                .store
                .datasets(&org.id, Some(&ds.id))
                .await?
                .into_iter()
                .find(|x| &x.name == name);
            let dataset = match found {
                Some(x) => x,
                None => {
                    self.create_dataset(
                        &p,
                        DatasetInput {
                            datasource: ds.id.clone(),
                            name: name.clone(),
                        },
                    )
                    .await?
                }
            };
            grants.push(GroupGrant {
                dataset_id: dataset.id,
                permission: Permission::Read,
                row_filter: d.row_filter.clone(),
                all_rows: d.all_rows,
                columns: None,
            });
        }
        let group = self
            .put_group(&p, "silo-toml", GroupInput { grants })
            .await?;
        for (id, u) in &config.users {
            let attributes = u
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect();
            self.put_embed_user(
                &p,
                id,
                EmbedUserInput {
                    attributes,
                    groups: vec![group.id.clone()],
                },
            )
            .await?;
        }
        Ok(org)
    }

    /// Re-seals every credential and signing key under `new`, in one
    /// transaction: either all of them move to the new key or none does.
    /// Returns how many values were re-sealed.
    pub async fn rotate_key(&self, new: &MasterKey) -> Result<usize> {
        let mut tx = self.store.begin().await?;
        let values = self.store.sealed_values(&mut tx).await?;
        for (table, id, aad, sealed) in &values {
            let plain = self.key.open(aad, sealed)?;
            self.store
                .reseal(&mut tx, table, id, &new.seal(aad, &plain)?)
                .await?;
        }
        self.store
            .reseal(&mut tx, "meta", "key_check", &new.check_value()?)
            .await?;
        self.store.clear_cache(&mut tx).await?;
        tx.commit().await.map_err(store::db)?;
        self.audit(
            &Principal::Cli,
            "keys.rotate",
            None,
            Some(format!("{} sealed values", values.len())),
        )
        .await;
        Ok(values.len())
    }
}

/// A silo.toml datasource as stored settings and its credential.
fn bootstrap_settings(
    name: &str,
    dc: &DatasourceConfig,
) -> Result<(DatasourceKind, serde_json::Value, Option<SecretString>)> {
    use silo_engine::config::read_secret;
    let enc = |e: serde_json::Error| Error::Internal(format!("settings: {e}"));
    if let Some(h) = &dc.http {
        if dc.postgres.is_some() || dc.mysql.is_some() || dc.mongodb.is_some() || dc.files.is_some()
        {
            return Err(silo_engine::config::one_kind_error(name));
        }
        let token = read_secret(h.token_env.as_deref(), h.token_file.as_deref())?;
        let mut h = h.clone();
        (h.token_env, h.token_file) = (None, None);
        return Ok((
            DatasourceKind::Http,
            serde_json::to_value(h).map_err(enc)?,
            token,
        ));
    }
    Ok(match (&dc.postgres, &dc.mysql, &dc.mongodb, &dc.files) {
        (Some(c), None, None, None) => {
            let password = read_secret(c.password_env.as_deref(), c.password_file.as_deref())?;
            let mut c = c.clone();
            (c.password_env, c.password_file) = (None, None);
            (
                DatasourceKind::Postgres,
                serde_json::to_value(c).map_err(enc)?,
                password,
            )
        }
        (None, Some(c), None, None) => {
            let password = read_secret(c.password_env.as_deref(), c.password_file.as_deref())?;
            let mut c = c.clone();
            (c.password_env, c.password_file) = (None, None);
            (
                DatasourceKind::Mysql,
                serde_json::to_value(c).map_err(enc)?,
                password,
            )
        }
        (None, None, Some(c), None) => {
            let password = read_secret(c.password_env.as_deref(), c.password_file.as_deref())?;
            let mut c = c.clone();
            (c.password_env, c.password_file) = (None, None);
            (
                DatasourceKind::Mongodb,
                serde_json::to_value(c).map_err(enc)?,
                password,
            )
        }
        (None, None, None, Some(c)) => (
            DatasourceKind::Files,
            serde_json::to_value(c).map_err(enc)?,
            None,
        ),
        _ => return Err(silo_engine::config::one_kind_error(name)),
    })
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(_) => J::Null,
    }
}
