//! `silo.toml`: datasources (credentials by reference: env or file), datasets
//! with their row-filter policies, embed users with attributes, limits.
//! Unknown keys are errors naming the key and line.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::SecretString;
use serde::Deserialize;

use crate::capability::files::FilesConfig;
use crate::capability::http::HttpConfig;
use crate::capability::mongodb::MongoConfig;
use crate::capability::mysql::MysqlConfig;
use crate::capability::postgres::PostgresConfig;
use silo_core::error::{Error, Result};
use silo_core::limits::Limits;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiloConfig {
    /// Limits for every fetch.
    #[serde(default)]
    pub limits: Limits,
    /// Where compiled connectors are cached, owner-only (default:
    /// `$XDG_CACHE_HOME/silo/compiled` or `~/.cache/silo/compiled`).
    pub cache_dir: Option<PathBuf>,
    /// Datasources by name.
    pub datasources: BTreeMap<String, DatasourceConfig>,
    /// Datasets (governed tables) by name: `table` or `schema.table`.
    #[serde(default)]
    pub datasets: BTreeMap<String, DatasetConfig>,
    /// Embed users by id.
    #[serde(default)]
    pub users: BTreeMap<String, UserConfig>,
    /// Where its datasources may connect: everywhere for an operator's own
    /// file; the control plane's policy for datasources orgs register.
    #[serde(skip, default = "crate::capability::net::NetPolicy::operator")]
    pub net: crate::capability::net::NetPolicy,
    /// What audit fingerprints are keyed with (the control plane's, from its
    /// master key; else this process's own).
    #[serde(skip)]
    pub fingerprints: silo_core::fingerprint::FingerprintKey,
}

/// `[datasources.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasourceConfig {
    /// A built-in connector's name (`postgres`) or a path to a component.
    pub connector: Option<String>,
    /// The component's SHA-256 (its manifest's `sha256`): a file that
    /// differs is refused, so a swapped component never runs.
    pub connector_sha256: Option<String>,
    /// Postgres connection settings.
    pub postgres: Option<PostgresConfig>,
    /// MySQL / MariaDB connection settings.
    pub mysql: Option<MysqlConfig>,
    /// MongoDB connection settings.
    pub mongodb: Option<MongoConfig>,
    /// Uploaded files.
    pub files: Option<FilesConfig>,
    /// A JSON or REST API.
    pub http: Option<HttpConfig>,
    /// Register the credential even though it can write (the registration
    /// check names what it holds; this override is logged as an audit event).
    #[serde(default)]
    pub accept_write_privileges: bool,
    /// The password, when the control-plane store supplies it (decrypted
    /// from its record); never read from a file.
    #[serde(skip)]
    pub password: Option<SecretString>,
}

/// `[datasets.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// The datasource holding the table.
    pub datasource: String,
    /// Rules, each a conjunction (`a = 1 and b = {{user.b}}`), ORed together.
    #[serde(default)]
    pub row_filter: Vec<String>,
    /// Every embed user sees every row. Exclusive with `row_filter`.
    #[serde(default)]
    pub all_rows: bool,
    /// What of its metadata may go to an LLM (default: shape of text,
    /// statistics of numbers and dates, k = 10).
    #[serde(default)]
    pub privacy: Option<silo_metadata::PrivacyPolicy>,
}

/// `[users.<id>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Attributes the row filters refer to as `{{user.<name>}}`.
    #[serde(default)]
    pub attributes: BTreeMap<String, toml::Value>,
}

impl SiloConfig {
    /// Reads and parses a file; relative paths inside it are relative to it.
    pub fn load(path: &Path) -> Result<SiloConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let mut config = SiloConfig::parse(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(dir) = &mut config.cache_dir {
            *dir = base.join(&*dir);
        }
        for ds in config.datasources.values_mut() {
            if let Some(c) = &mut ds.connector
                && c.ends_with(".wasm")
            {
                *c = base.join(&*c).display().to_string();
            }
            let files = [
                ds.postgres.as_mut().and_then(|p| p.password_file.as_mut()),
                ds.mysql.as_mut().and_then(|m| m.password_file.as_mut()),
                ds.mongodb.as_mut().and_then(|m| m.password_file.as_mut()),
                ds.http.as_mut().and_then(|h| h.token_file.as_mut()),
            ];
            for file in files.into_iter().flatten() {
                *file = base.join(&*file);
            }
            if let Some(f) = &mut ds.files {
                f.data_dir = base.join(&f.data_dir);
            }
        }
        Ok(config)
    }

    /// Parses text; errors carry toml's line, column and key.
    pub fn parse(text: &str) -> Result<SiloConfig> {
        let config: SiloConfig = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if !(1..=silo_core::limits::MAX_INSTANCES).contains(&self.limits.instances) {
            return Err(Error::Config(format!(
                "limits.instances must be from 1 to {}",
                silo_core::limits::MAX_INSTANCES
            )));
        }
        for (name, ds) in &self.datasources {
            let kinds = [
                ds.postgres.is_some(),
                ds.mysql.is_some(),
                ds.mongodb.is_some(),
                ds.files.is_some(),
                ds.http.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(one_kind_error(name));
            }
        }
        for (name, d) in &self.datasets {
            if !self.datasources.contains_key(&d.datasource) {
                return Err(Error::Config(format!(
                    "dataset `{name}` names unknown datasource `{}`",
                    d.datasource
                )));
            }
            if d.all_rows && !d.row_filter.is_empty() {
                return Err(Error::Config(format!(
                    "dataset `{name}` sets both all_rows and row_filter"
                )));
            }
            silo_policy::rule::Policy::parse(&d.row_filter)
                .map_err(|e| Error::Config(format!("dataset `{name}`: {e}")))?;
        }
        for (id, u) in &self.users {
            for (k, v) in &u.attributes {
                silo_policy::rule::attribute_values(v)
                    .map_err(|e| Error::Config(format!("user `{id}` attribute `{k}`: {e}")))?;
            }
        }
        Ok(())
    }
}

/// A datasource must say which database it is, exactly once.
pub fn one_kind_error(name: &str) -> Error {
    Error::Config(format!(
        "datasource `{name}` needs exactly one of [datasources.{name}.postgres], \
         [datasources.{name}.mysql], [datasources.{name}.mongodb], [datasources.{name}.files] \
         or [datasources.{name}.http]"
    ))
}

/// Reads a secret from the environment or a file, as the config names it.
pub fn read_secret(env: Option<&str>, file: Option<&Path>) -> Result<Option<SecretString>> {
    match (env, file) {
        (Some(_), Some(_)) => Err(Error::Config(
            "give the secret by environment variable or by file, not both".into(),
        )),
        (Some(var), None) => std::env::var(var)
            .map(|v| Some(SecretString::from(v)))
            .map_err(|_| {
                Error::Config(format!(
                    "environment variable `{var}`, named for a secret, is not set"
                ))
            }),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|v| {
                Some(SecretString::from(
                    v.lines().next().unwrap_or_default().to_owned(),
                ))
            })
            .map_err(|e| Error::Config(format!("secret file {}: {e}", path.display()))),
        (None, None) => Ok(None),
    }
}

/// Opens the SQL client a datasource's config names, and the built-in
/// connector that serves it unless the config names another.
pub fn connect(
    name: &str,
    ds: &DatasourceConfig,
    limits: &silo_core::limits::Limits,
    net: &crate::capability::net::NetPolicy,
) -> Result<(crate::capability::Backend, &'static str)> {
    let statement_timeout = limits.statement_timeout;
    // A password the store supplies wins over one the config file names.
    let secret = |env: Option<&str>, file: Option<&std::path::Path>| match &ds.password {
        Some(p) => Ok(Some(p.clone())),
        None => read_secret(env, file),
    };
    let others = usize::from(ds.postgres.is_some())
        + usize::from(ds.mysql.is_some())
        + usize::from(ds.mongodb.is_some());
    if let Some(f) = &ds.files {
        if others > 0 || ds.http.is_some() {
            return Err(one_kind_error(name));
        }
        return Ok((
            crate::capability::Backend::Files(Arc::new(crate::capability::files::FilesStore::new(
                f,
            )?)),
            "files",
        ));
    }
    if let Some(h) = &ds.http {
        if others > 0 {
            return Err(one_kind_error(name));
        }
        let token = secret(h.token_env.as_deref(), h.token_file.as_deref())?;
        let client =
            crate::capability::http::HttpClient::new(crate::capability::http::HttpSettings {
                config: h.clone(),
                token,
                timeout: statement_timeout,
                net: net.clone(),
            })?;
        return Ok((
            crate::capability::Backend::Http(Arc::new(client)),
            "http-json",
        ));
    }
    match (&ds.postgres, &ds.mysql, &ds.mongodb) {
        (Some(pg), None, None) => {
            let password = secret(pg.password_env.as_deref(), pg.password_file.as_deref())?;
            let settings = crate::capability::postgres::PgSettings {
                config: pg.clone(),
                password,
                statement_timeout,
                fetch_timeout: limits.fetch_timeout,
                max_row_bytes: limits.max_row_bytes,
                net: net.clone(),
            };
            Ok((
                crate::capability::Backend::Sql(Arc::new(
                    crate::capability::postgres::PgClient::new(settings)?,
                )),
                "postgres",
            ))
        }
        (None, Some(my), None) => {
            let password = secret(my.password_env.as_deref(), my.password_file.as_deref())?;
            Ok((
                crate::capability::Backend::Sql(Arc::new(crate::capability::mysql::MyClient::new(
                    my, password, limits, net,
                )?)),
                "mysql",
            ))
        }
        (None, None, Some(mongo)) => {
            let password = secret(
                mongo.password_env.as_deref(),
                mongo.password_file.as_deref(),
            )?;
            Ok((
                crate::capability::Backend::Document(Arc::new(
                    crate::capability::mongodb::MongoClient::new(mongo, password, limits, net)?,
                )),
                "mongodb",
            ))
        }
        _ => Err(one_kind_error(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[datasources.main]
connector = "postgres"
[datasources.main.postgres]
host = "127.0.0.1"
database = "test"
user = "reader"

[datasets.orders]
datasource = "main"
row_filter = ["tenant = {{user.tenant}}"]

[users.alice]
attributes = { tenant = "acme", regions = ["eu", "us"] }
"#;

    #[test]
    fn parses_a_good_file() {
        let c = SiloConfig::parse(GOOD).unwrap();
        assert_eq!(c.datasets["orders"].datasource, "main");
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = GOOD.replace("user = \"reader\"", "user = \"reader\"\npasword = \"x\"");
        let err = SiloConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("pasword"), "{err}");
        assert!(err.contains("line 8"), "{err}");
    }

    #[test]
    fn privacy_policy_parses_and_rejects_unknown_levels() {
        let text = GOOD.replace(
            "row_filter = [\"tenant = {{user.tenant}}\"]",
            "row_filter = [\"tenant = {{user.tenant}}\"]\n[datasets.orders.privacy]\n\
             columns = { region = \"categories\", customer = \"hidden\" }\nk = 12",
        );
        let c = SiloConfig::parse(&text).unwrap();
        let p = c.datasets["orders"].privacy.clone().unwrap();
        assert_eq!(p.k, 12);
        assert_eq!(p.columns["customer"], silo_metadata::Privacy::Hidden);
        let bad = text.replace("\"hidden\"", "\"secret\"");
        assert!(SiloConfig::parse(&bad).is_err());
    }

    #[test]
    fn bad_rule_names_dataset() {
        let text = GOOD.replace("tenant = {{user.tenant}}", "tenant == 1");
        let err = SiloConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("dataset `orders`"), "{err}");
    }
}
