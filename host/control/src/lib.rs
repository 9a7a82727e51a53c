//! The control plane: organizations, groups, embed users, datasources,
//! datasets, sessions and API keys in a [`store::Store`]; credentials sealed
//! under the master key ([`crypto`]); API keys and session tokens
//! ([`tokens`]); the hash-chained [`audit`] log; and the embed fetch, which
//! resolves a session's row filters from its user's groups and runs the
//! same sandboxed fetch as the CLI.
//!
//! Every method that reads or changes a record takes the caller's
//! organization and finds records only within it: another organization's
//! id is simply not found.
#![deny(missing_docs)]

pub mod audit;
mod bootstrap;
mod cache;
mod connectors;
pub mod crypto;
mod datasets;
mod datasources;
mod embed;
mod engine;
mod groups;
mod metadata;
pub mod model;
mod orgs;
mod sessions;
pub mod store;
pub mod tokens;
mod users;
mod versions;

pub use connectors::MAX_COMPONENT_BYTES;
pub use datasets::{ColumnInfo, DatasetInput, UploadSummary};
pub use datasources::{Ceilings, DatasourceInput};
pub use embed::{EmbedDataset, EmbedFetch, Enforced, InFlight, PendingAudit, Writing};
pub use groups::GroupInput;
pub use metadata::METADATA_TTL;
pub use sessions::{DEFAULT_SESSION_TTL, MAX_SESSION_TTL, SessionInput, SessionToken};
pub use users::EmbedUserInput;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use silo_core::error::{Error, Result};
use silo_core::limits::Limits;
use silo_engine::runtime::Runtime;
use silo_engine::silo::Silo;
use silo_metadata::llm::{LlmConfig, Summarizer};
use silo_policy::rule::{Attributes, json_attribute_values};

use audit::AuditEvent;
use cache::Caches;
use crypto::MasterKey;
use model::{EmbedUser, Session};
use store::Store;
use tokens::{Signer, TokenAlg};

/// Longest name, id or attribute key accepted.
const MAX_NAME: usize = 128;

/// How to open the control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// `sqlite://<path>`, a bare path, or `postgres://…`.
    pub store: String,
    /// Root of uploads; a `files` datasource of an org reads `<data_dir>/<org>`.
    pub data_dir: PathBuf,
    /// The key everything at rest is sealed under.
    pub master_key: MasterKey,
    /// The session token algorithm.
    pub token_alg: TokenAlg,
    /// `iss` of session tokens.
    pub issuer: String,
    /// `aud` of session tokens.
    pub audience: String,
    /// Limits of every fetch.
    pub limits: Limits,
    /// Compiled-connector cache (default: the user cache directory).
    pub cache_dir: Option<PathBuf>,
    /// The LLM endpoint for summaries (default: the built-in summarizer).
    pub llm: Option<LlmConfig>,
    /// Where the datasources orgs register may connect (the operator's
    /// outbound address policy; `local` is `--allow-private-network`). The
    /// store's own database is added to what is refused.
    pub net: silo_engine::capability::net::NetPolicy,
    /// What an org may ask of the host in a datasource's settings.
    pub ceilings: Ceilings,
    /// Organizations whose keys may register a credential that can write
    /// (`accept_write_privileges`): the operator's decision, never an org's.
    pub write_orgs: Vec<String>,
    /// Largest upload accepted through the API.
    pub max_upload_bytes: u64,
}

impl ControlConfig {
    /// Defaults for a store and data directory.
    pub fn new(store: String, data_dir: PathBuf, master_key: MasterKey) -> ControlConfig {
        ControlConfig {
            store,
            data_dir,
            master_key,
            token_alg: TokenAlg::default(),
            issuer: "silo".into(),
            audience: "silo-embed".into(),
            limits: Limits::default(),
            cache_dir: None,
            llm: None,
            net: silo_engine::capability::net::NetPolicy::default(),
            ceilings: Ceilings::default(),
            write_orgs: Vec::new(),
            max_upload_bytes: silo_engine::capability::files::upload::DEFAULT_MAX_BYTES,
        }
    }
}

/// Who is calling a backend endpoint, from a verified API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An operator key: manages organizations and their keys.
    Admin {
        /// The key's id.
        key: String,
    },
    /// A customer's backend, for its one organization.
    Org {
        /// The organization.
        org: String,
        /// The key's id; `None` when the operator acts for the org from the
        /// command line (`--bootstrap`).
        key: Option<String>,
    },
    /// The local command line.
    Cli,
}

impl Principal {
    fn actor(&self) -> String {
        match self {
            Principal::Admin { key } | Principal::Org { key: Some(key), .. } => {
                format!("api-key:{key}")
            }
            Principal::Org { key: None, .. } | Principal::Cli => "cli".into(),
        }
    }

    fn org(&self) -> Option<&str> {
        match self {
            Principal::Org { org, .. } => Some(org),
            _ => None,
        }
    }
}

/// An embed user's verified session.
#[derive(Debug, Clone)]
pub struct EmbedPrincipal {
    /// The organization, from the verified token.
    pub org: String,
    /// The session record (not revoked, not expired).
    pub session: Session,
    /// Its embed user.
    pub user: EmbedUser,
    /// The org's version when these were read (see [`cache::Versioned`]).
    version: Option<i64>,
}

impl EmbedPrincipal {
    /// An audit event of this session acting on `target`, outcome `ok`.
    fn event(&self, action: &str, target: &str) -> AuditEvent {
        AuditEvent {
            org_id: Some(self.org.clone()),
            actor: format!("session:{}", self.session.id),
            action: action.into(),
            target: Some(target.to_owned()),
            outcome: "ok".into(),
            ..AuditEvent::default()
        }
    }
}

async fn append_logged(store: &Store, e: &AuditEvent) {
    if let Err(err) = audit::append(store, e).await {
        tracing::error!(error = %err, action = %e.action, "writing an audit record failed");
    }
}

/// A stable, public code for an error (the API's `error.code`).
pub fn error_code(e: &Error) -> &'static str {
    match e {
        Error::Config(_) => "invalid_request",
        Error::NotFound(_) => "not_found",
        Error::Policy(_) => "forbidden",
        Error::Limit(_) => "limit_exceeded",
        Error::Busy(_) => "busy",
        Error::Connector(_) => "connector_failed",
        Error::Datasource(_) => "datasource_failed",
        Error::Unauthorized(_) => "unauthorized",
        Error::Conflict(_) => "conflict",
        Error::Internal(_) => "internal",
    }
}

type Engines = Mutex<HashMap<String, (i64, Arc<Silo>)>>;

/// The control plane of one host.
pub struct ControlPlane {
    store: Store,
    key: MasterKey,
    signer: Signer,
    runtime: Arc<Runtime>,
    engines: Engines,
    data_dir: PathBuf,
    summarizer: Summarizer,
    net: silo_engine::capability::net::NetPolicy,
    ceilings: Ceilings,
    write_orgs: Vec<String>,
    max_upload_bytes: u64,
    /// Audit fingerprints' key, derived from the master key.
    fingerprints: silo_core::fingerprint::FingerprintKey,
    /// Audit records written in the background.
    writing: Writing,
    /// Purges expired sessions while the control plane lives.
    _purge: sessions::Background,
    /// The request path's reads, per org version.
    caches: Caches,
    /// Org version reads, shared by requests that arrive together.
    versions: versions::VersionReads,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("store", &self.store)
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

fn valid_name(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{what} must be 1 to {MAX_NAME} letters, digits, `_`, `-` or `.`"
        )))
    }
}

fn attributes(map: &BTreeMap<String, serde_json::Value>) -> Result<Attributes> {
    map.iter()
        .map(|(k, v)| {
            valid_name("an attribute name", k)?;
            json_attribute_values(v)
                .map(|vals| (k.clone(), vals))
                .map_err(|e| Error::Config(format!("attribute `{k}`: {e}")))
        })
        .collect()
}

impl ControlPlane {
    /// Opens the store, refuses a master key that is not the store's (before
    /// changing anything), and loads or creates the token signing key.
    pub async fn open(config: ControlConfig) -> Result<ControlPlane> {
        let store = Store::open(&config.store).await?;
        let check = store
            .init_key_check(&config.master_key.check_value()?)
            .await?;
        if !config.master_key.matches(&check) {
            return Err(Error::Config(
                "the master key is not the one this control-plane store was sealed with; \
                 nothing was read or changed (give the right key in SILO_MASTER_KEY or \
                 --master-key-file)"
                    .into(),
            ));
        }
        let signer = load_signer(&store, &config).await?;
        let cache_dir = config
            .cache_dir
            .clone()
            .or_else(silo_engine::silo::default_cache_dir);
        let runtime = Arc::new(Runtime::new(
            config.limits,
            cache_dir,
            silo_engine::capability::ALL,
        )?);
        let net = store_protected(&store, &config.store, config.net.clone()).await?;
        let fingerprints = config.master_key.fingerprint_key();
        // What a crash or an interrupted upload left behind.
        let (data_dir, grace) = (
            config.data_dir.clone(),
            silo_engine::capability::files::upload::retire_grace(runtime.limits()),
        );
        let _ = tokio::task::spawn_blocking(move || {
            silo_engine::capability::files::upload::sweep_staging(&data_dir.join(".incoming"));
            silo_engine::capability::files::generations::sweep(&data_dir, grace);
        })
        .await;
        let purge = sessions::Background(tokio::spawn(sessions::purge_sessions(store.clone())));
        Ok(ControlPlane {
            _purge: purge,
            caches: Caches::default(),
            versions: versions::VersionReads::default(),
            store,
            key: config.master_key,
            signer,
            runtime,
            engines: Mutex::default(),
            data_dir: config.data_dir,
            summarizer: Summarizer::new(config.llm)?,
            net,
            ceilings: config.ceilings,
            write_orgs: config.write_orgs,
            max_upload_bytes: config.max_upload_bytes.max(1),
            fingerprints,
            writing: Writing::default(),
        })
    }

    /// The limits of every fetch.
    pub fn limits(&self) -> &Limits {
        self.runtime.limits()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The session token signer (its public key; tests sign hostile tokens).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    async fn audit(
        &self,
        p: &Principal,
        action: &str,
        target: Option<&str>,
        detail: Option<String>,
    ) {
        let org = p.org().map(str::to_owned);
        self.audit_in(org, p, action, target, detail).await;
    }

    /// Records a change in `org`, which an operator's action names itself.
    async fn audit_in(
        &self,
        org: Option<String>,
        p: &Principal,
        action: &str,
        target: Option<&str>,
        detail: Option<String>,
    ) {
        let e = AuditEvent {
            org_id: org,
            actor: p.actor(),
            action: action.into(),
            target: target.map(str::to_owned),
            outcome: "ok".into(),
            detail,
            ..AuditEvent::default()
        };
        append_logged(&self.store, &e).await;
    }

    fn org_of(p: &Principal) -> Result<&str> {
        p.org()
            .ok_or_else(|| Error::Unauthorized("an organization's API key is required".into()))
    }

    /// Whether this host can serve: its store answers, sealed with the
    /// master key it holds.
    pub async fn ready(&self) -> Result<()> {
        let check = self
            .store
            .meta("key_check")
            .await?
            .ok_or_else(|| Error::Internal("the store has no key check".into()))?;
        if !self.key.matches(&check) {
            return Err(Error::Internal(
                "the store is sealed with another key".into(),
            ));
        }
        Ok(())
    }
}

/// `net` with a Postgres store's own database refused: an org must never
/// point a datasource at the control plane's records, by any address.
async fn store_protected(
    store: &Store,
    url: &str,
    mut net: silo_engine::capability::net::NetPolicy,
) -> Result<silo_engine::capability::net::NetPolicy> {
    let Some((database, started)) = store.server_identity().await? else {
        return Ok(net);
    };
    let mut addrs = Vec::new();
    if let Ok(config) = url.parse::<tokio_postgres::Config>() {
        let port = config.get_ports().first().copied().unwrap_or(5432);
        for host in config.get_hosts() {
            if let tokio_postgres::config::Host::Tcp(h) = host
                && let Ok(found) = tokio::net::lookup_host((h.as_str(), port)).await
            {
                addrs.extend(found);
            }
        }
    }
    net.protected.push(silo_engine::capability::net::Protected {
        addrs,
        database,
        started: Some(started),
    });
    Ok(net)
}

async fn load_signer(store: &Store, config: &ControlConfig) -> Result<Signer> {
    let alg = config.token_alg;
    let (kid, material) = match store.signing_key(alg.name()).await? {
        Some((kid, sealed)) => {
            let material = config
                .master_key
                .open(&crypto::signing_key_aad(&kid), &sealed)?;
            (kid, material)
        }
        None => {
            let kid = tokens::new_id("sk")?;
            let material = alg.generate()?;
            let sealed = config
                .master_key
                .seal(&crypto::signing_key_aad(&kid), &material)?;
            store.insert_signing_key(&kid, alg.name(), &sealed).await?;
            (kid, material)
        }
    };
    Signer::new(
        alg,
        kid,
        &material,
        config.issuer.clone(),
        config.audience.clone(),
    )
}
