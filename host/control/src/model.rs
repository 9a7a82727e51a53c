//! The control plane's records. Every one belongs to exactly one
//! organization (`org_id`), set when it is created and never changed.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A customer of the Silo deployment: the unit of tenancy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Organization {
    /// `org_…`.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// What an API key may call. Secrets are never part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyInfo {
    /// `key_…`.
    pub id: String,
    /// The organization it acts for; `None` for an operator (admin) key.
    pub org_id: Option<String>,
    /// A label.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, when revoked.
    pub revoked_at: Option<i64>,
}

/// The database kinds a datasource can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatasourceKind {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
    /// MongoDB.
    Mongodb,
    /// Uploaded files under the host's data directory.
    Files,
    /// A JSON or REST API, read with GET.
    Http,
}

impl DatasourceKind {
    /// The stored name, which is also the built-in connector's.
    pub fn name(self) -> &'static str {
        match self {
            DatasourceKind::Postgres => "postgres",
            DatasourceKind::Mysql => "mysql",
            DatasourceKind::Mongodb => "mongodb",
            DatasourceKind::Files => "files",
            DatasourceKind::Http => "http",
        }
    }

    /// The built-in connector a new datasource of this kind runs.
    pub fn builtin_connector(self) -> &'static str {
        match self {
            DatasourceKind::Http => "http-json",
            other => other.name(),
        }
    }

    /// The capability its connector is granted.
    pub fn capability(self) -> silo_engine::capability::Kind {
        use silo_engine::capability::Kind;
        match self {
            DatasourceKind::Postgres | DatasourceKind::Mysql => Kind::Sql,
            DatasourceKind::Mongodb => Kind::Document,
            DatasourceKind::Files => Kind::Files,
            DatasourceKind::Http => Kind::Http,
        }
    }

    /// The inverse of [`DatasourceKind::name`].
    pub fn parse(name: &str) -> Option<DatasourceKind> {
        [
            DatasourceKind::Postgres,
            DatasourceKind::Mysql,
            DatasourceKind::Mongodb,
            DatasourceKind::Files,
            DatasourceKind::Http,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// A registered database (or uploads area). Its credential is sealed in the
/// store and never part of this record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Datasource {
    /// `ds_…`.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// Unique within the organization.
    pub name: String,
    /// Which database.
    pub kind: DatasourceKind,
    /// The connector that serves it (a built-in's name).
    pub connector: String,
    /// Connection settings, without the password.
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    /// Registered although its credential can write (an audited override).
    pub accept_write_privileges: bool,
    /// Whether a sealed credential is stored (never the credential).
    pub has_credential: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// What about its settings weakens what it can serve, and why (an HTTP
    /// path that can bind no column to a user's rows); empty when nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Datasource {
    /// The warnings its settings call for (see [`Datasource::warnings`]).
    pub fn checked(mut self) -> Datasource {
        self.warnings = match self.kind {
            DatasourceKind::Http => serde_json::from_value::<
                silo_engine::capability::http::HttpConfig,
            >(self.settings.clone())
            .map(|c| c.warnings())
            .unwrap_or_default(),
            _ => Vec::new(),
        };
        self
    }
}

/// A governed table, collection or upload of a datasource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Dataset {
    /// `dset_…`.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// The datasource holding it.
    pub datasource_id: String,
    /// `table`, `schema.table`, a collection or an upload's name.
    pub name: String,
    /// What of its metadata may reach an LLM; `None`: the default policy.
    #[serde(default)]
    pub privacy: Option<silo_metadata::PrivacyPolicy>,
    /// Unix seconds.
    pub created_at: i64,
}

/// What a group may do with a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// See the dataset's columns (and, later, its metadata), not its rows.
    Describe,
    /// Describe, and fetch the rows the row filter admits.
    Read,
}

impl Permission {
    /// Stored name.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Describe => "describe",
            Permission::Read => "read",
        }
    }

    /// The inverse of [`Permission::name`].
    pub fn parse(s: &str) -> Option<Permission> {
        match s {
            "describe" => Some(Permission::Describe),
            "read" => Some(Permission::Read),
            _ => None,
        }
    }
}

/// One dataset a group grants, with the rows and columns it admits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupGrant {
    /// The dataset (of the group's organization).
    pub dataset_id: String,
    /// What members may do.
    pub permission: Permission,
    /// Rules, each a conjunction (`region = {{user.region}} and amount < 100`),
    /// ORed together; empty admits no rows unless `all_rows`.
    #[serde(default)]
    pub row_filter: Vec<String>,
    /// Every row (exclusive with `row_filter`).
    #[serde(default)]
    pub all_rows: bool,
    /// The columns members may see; `None` means all.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
}

/// Links embed users to datasets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Group {
    /// `grp_…`.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// Unique within the organization.
    pub name: String,
    /// Datasets granted.
    pub grants: Vec<GroupGrant>,
    /// Unix seconds.
    pub created_at: i64,
}

/// An end user of the customer's product, known by the customer's own id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbedUser {
    /// `eu_…`.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// The customer's id for this user, unique within the organization.
    pub external_id: String,
    /// Attributes row filters refer to as `{{user.<name>}}`.
    #[schema(value_type = Object)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Group ids.
    pub groups: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// A short-lived grant to one embed user, carried as a signed token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    /// `ses_…`: the token's `sub`.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// The embed user's record id.
    pub embed_user_id: String,
    /// The datasets this session may use (a subset of what the user's groups
    /// grant); `None` means all of them.
    pub datasets: Option<Vec<String>>,
    /// Extra values row filters may refer to as `{{user.<name>}}`; they may
    /// not shadow an attribute of the user.
    #[schema(value_type = Object)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Unix seconds, when revoked.
    pub revoked_at: Option<i64>,
    /// Which of its tokens is current: renewing makes a new generation, and
    /// a token of an older one is refused.
    pub generation: i64,
}

/// A connector version registered through the API. Its component is stored
/// by digest; a datasource using it loads exactly those bytes or fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectorInfo {
    /// Owning organization.
    pub org_id: String,
    /// Name.
    pub name: String,
    /// Version (unique per name).
    pub version: String,
    /// `sql`, `document` or `files`.
    pub kind: String,
    /// SHA-256 of the component.
    pub sha256: String,
    /// Unix seconds.
    pub created_at: i64,
}
