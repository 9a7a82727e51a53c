//! Datasources: registering one (its settings checked against the operator's
//! [`Ceilings`], its credential sealed and checked read-only), listing,
//! deleting, and switching its connector.

use std::path::PathBuf;

use serde::Deserialize;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use silo_core::error::{Error, Result};
use silo_engine::silo::Silo;

use crate::model::{Datasource, DatasourceKind};
use crate::store::now;
use crate::{ControlPlane, Principal, crypto, tokens, valid_name};

/// `POST /v1/datasources`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasourceInput {
    /// Unique within the organization.
    pub name: String,
    /// Which database.
    pub kind: DatasourceKind,
    /// Connection settings of that kind (host, port, database, user, …);
    /// `{}` for `files`.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    /// The password. Sealed at rest; never returned.
    #[serde(default)]
    pub password: Option<String>,
    /// Register even if the credential can write (audited).
    #[serde(default)]
    pub accept_write_privileges: bool,
    /// A registered connector, `name` (its newest version) or
    /// `name@version` (default: the built-in connector of the kind).
    #[serde(default)]
    pub connector: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl ControlPlane {
    /// Registers a datasource: checks its settings, connects with its
    /// credential and refuses one that can write (unless overridden, which
    /// is audited), then stores it with the credential sealed.
    pub async fn create_datasource(
        &self,
        p: &Principal,
        input: DatasourceInput,
    ) -> Result<Datasource> {
        let org = Self::org_of(p)?.to_owned();
        valid_name("a datasource name", &input.name)?;
        // Registering a credential that can write is the operator's call:
        // the command line acts as the operator; an org key needs the
        // operator's standing approval for its org.
        if input.accept_write_privileges
            && matches!(p, Principal::Org { key: Some(_), .. })
            && !self.write_orgs.contains(&org)
        {
            return Err(Error::Policy(
                "accept_write_privileges is the operator's decision: ask them to allow it \
                 for this organization (silo serve --accept-write-privileges ORG_ID)"
                    .into(),
            ));
        }
        let settings = api_settings(input.kind, input.settings, &self.ceilings)?;
        let password = Zeroizing::new(input.password);
        let ds = Datasource {
            id: tokens::new_id("ds")?,
            org_id: org.clone(),
            name: input.name,
            kind: input.kind,
            connector: match &input.connector {
                Some(spec) => self.resolve_connector(&org, spec, input.kind).await?,
                None => input.kind.builtin_connector().to_owned(),
            },
            settings,
            accept_write_privileges: input.accept_write_privileges,
            has_credential: password.is_some(),
            created_at: now(),
            warnings: Vec::new(),
        };
        self.register(p, ds, password.as_deref()).await
    }

    pub(crate) async fn register(
        &self,
        p: &Principal,
        ds: Datasource,
        password: Option<&str>,
    ) -> Result<Datasource> {
        let sealed = password
            .map(|pw| {
                self.key
                    .seal(&crypto::credential_aad(&ds.org_id, &ds.id), pw.as_bytes())
            })
            .transpose()?;
        // The registration check runs on exactly what will be stored, under
        // the name the caller knows.
        let mut config = self.engine_config(&ds, sealed.clone(), &[])?;
        config.datasources = std::mem::take(&mut config.datasources)
            .into_values()
            .map(|c| (ds.name.clone(), c))
            .collect();
        let runtime = self.runtime.clone();
        let silo = tokio::task::spawn_blocking(move || {
            Silo::with_runtime(runtime, &config).map(|s| (s, config))
        })
        .await
        .map_err(|e| Error::Internal(format!("loading a connector: {e}")))??;
        silo.0.check_read_only(&silo.1).await?;
        self.store.insert_datasource(&ds, sealed.as_deref()).await?;
        let detail = ds
            .accept_write_privileges
            .then(|| "registered with accept_write_privileges".to_owned());
        self.audit(p, "datasource.create", Some(&ds.id), detail)
            .await;
        let mut out = ds.checked();
        out.has_credential = sealed.is_some();
        Ok(out)
    }

    /// The datasources of `p`'s org.
    pub async fn datasources(&self, p: &Principal) -> Result<Vec<Datasource>> {
        self.store.datasources(Self::org_of(p)?).await
    }

    /// One datasource of `p`'s org (never its credential).
    pub async fn datasource(&self, p: &Principal, id: &str) -> Result<Datasource> {
        let (ds, _, _) = self.store.datasource(Self::org_of(p)?, id).await?;
        Ok(ds)
    }

    /// Deletes a datasource of `p`'s org with its datasets and grants.
    pub async fn delete_datasource(&self, p: &Principal, id: &str) -> Result<()> {
        let org = Self::org_of(p)?;
        let (ds, _, _) = self.store.datasource(org, id).await?;
        self.store.delete_datasource(org, &ds.id).await?;
        self.engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ds.id);
        self.audit(p, "datasource.delete", Some(&ds.id), None).await;
        Ok(())
    }

    /// Switches a datasource of `p`'s org to a registered connector (or,
    /// with `None`, back to the built-in one). The next request runs it.
    pub async fn set_datasource_connector(
        &self,
        p: &Principal,
        datasource: &str,
        connector: Option<&str>,
    ) -> Result<Datasource> {
        let org = Self::org_of(p)?;
        let (ds, _, _) = self.store.datasource(org, datasource).await?;
        let stored = match connector {
            Some(spec) => self.resolve_connector(org, spec, ds.kind).await?,
            None => ds.kind.builtin_connector().to_owned(),
        };
        self.store.set_connector(org, &ds.id, &stored).await?;
        self.audit(p, "datasource.connector", Some(&ds.id), Some(stored))
            .await;
        self.datasource(p, &ds.id).await
    }
}

/// Checks API-given settings for `kind`: the kind's own fields only, and no
/// way to make the host read its environment or files.
fn api_settings(
    kind: DatasourceKind,
    settings: serde_json::Value,
    ceilings: &Ceilings,
) -> Result<serde_json::Value> {
    use silo_engine::capability::{
        mongodb::MongoConfig, mysql::MysqlConfig, postgres::PostgresConfig,
    };
    check_bounds(kind, &settings, ceilings)?;
    let bad = |e: serde_json::Error| Error::Config(format!("settings: {e}"));
    let host_secret = |env: &Option<String>, file: &Option<PathBuf>| {
        if env.is_some() || file.is_some() {
            Err(Error::Config(
                "settings: password_env and password_file are for silo.toml; give `password`"
                    .into(),
            ))
        } else {
            Ok(())
        }
    };
    let normalized = match kind {
        DatasourceKind::Postgres => {
            let c: PostgresConfig = serde_json::from_value(settings).map_err(bad)?;
            host_secret(&c.password_env, &c.password_file)?;
            c.tls.check_api()?;
            serde_json::to_value(c)
        }
        DatasourceKind::Mysql => {
            let c: MysqlConfig = serde_json::from_value(settings).map_err(bad)?;
            host_secret(&c.password_env, &c.password_file)?;
            c.tls.check_api()?;
            serde_json::to_value(c)
        }
        DatasourceKind::Mongodb => {
            let c: MongoConfig = serde_json::from_value(settings).map_err(bad)?;
            host_secret(&c.password_env, &c.password_file)?;
            c.tls.check_api()?;
            serde_json::to_value(c)
        }
        DatasourceKind::Http => {
            let c: silo_engine::capability::http::HttpConfig =
                serde_json::from_value(settings).map_err(bad)?;
            if c.token_env.is_some() || c.token_file.is_some() {
                return Err(Error::Config(
                    "settings: token_env and token_file are for silo.toml; give the token as \
                     `password`"
                        .into(),
                ));
            }
            if c.allow_private_network {
                return Err(Error::Config(
                    "settings: allow_private_network is the operator's (silo.toml, or \
                     `silo serve --allow-private-network`)"
                        .into(),
                ));
            }
            serde_json::to_value(c)
        }
        DatasourceKind::Files => {
            if settings.as_object().is_none_or(|o| !o.is_empty()) {
                return Err(Error::Config(
                    "settings: a files datasource takes none; it reads this organization's uploads"
                        .into(),
                ));
            }
            Ok(settings)
        }
    };
    normalized.map_err(|e| Error::Internal(format!("settings: {e}")))
}

/// The numbers an org may put in a datasource's settings, each checked
/// against its range before anything is parsed or allocated from it: 422,
/// naming the field and the range.
fn check_bounds(kind: DatasourceKind, settings: &serde_json::Value, c: &Ceilings) -> Result<()> {
    let max_pool = c.pool_size as u64;
    let bounds: &[(&str, u64, u64)] = match kind {
        DatasourceKind::Postgres | DatasourceKind::Mysql | DatasourceKind::Mongodb => &[
            ("port", 1, 65535),
            ("pool_size", 1, max_pool),
            ("fetch_connections", 1, max_pool.saturating_sub(1).max(1)),
        ],
        DatasourceKind::Http => &[
            ("max_response_bytes", 1, c.http_response_bytes),
            ("max_requests", 1, c.http_requests as u64),
        ],
        DatasourceKind::Files => &[],
    };
    for (field, lo, hi) in bounds {
        let Some(value) = settings.get(*field) else {
            continue;
        };
        if !value.as_u64().is_some_and(|v| (*lo..=*hi).contains(&v)) {
            return Err(Error::Limit(format!(
                "settings: `{field}` must be a whole number from {lo} to {hi} (got {})",
                crate::audit::bounded_text(&value.to_string(), 40)
            )));
        }
    }
    let number = |f: &str| settings.get(f).and_then(serde_json::Value::as_u64);
    if let (Some(share), pool) = (number("fetch_connections"), number("pool_size")) {
        let pool = pool.unwrap_or(silo_engine::capability::postgres::DEFAULT_POOL_SIZE as u64);
        if share >= pool && pool > 1 {
            return Err(Error::Limit(format!(
                "settings: `fetch_connections` must be from 1 to {} (less than pool_size)",
                pool - 1
            )));
        }
    }
    Ok(())
}

/// Ceilings an operator sets on what an org may ask of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceilings {
    /// Largest `pool_size` of a database datasource.
    pub pool_size: usize,
    /// Largest `max_response_bytes` of an HTTP datasource.
    pub http_response_bytes: u64,
    /// Largest `max_requests` of an HTTP datasource.
    pub http_requests: usize,
}

impl Default for Ceilings {
    fn default() -> Ceilings {
        Ceilings {
            pool_size: 32,
            http_response_bytes: 64 << 20,
            http_requests: 256,
        }
    }
}
