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
pub mod crypto;
pub mod model;
pub mod store;
pub mod tokens;
mod versions;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde::Deserialize;
use silo_types::RowFilter;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use silo_core::error::{Error, Result};
use silo_core::limits::Limits;
use silo_engine::capability::files::FilesConfig;
use silo_engine::config::{DatasetConfig, DatasourceConfig, SiloConfig};
use silo_engine::runtime::Runtime;
use silo_engine::silo::{DatasetAccess, Fetch, FetchSpec, Silo};
use silo_metadata::llm::{LlmConfig, Summarizer, Summary};
use silo_metadata::{Payload, PrivacyPolicy};
use silo_policy::rule::{Attributes, Policy, json_attribute_values};

use audit::AuditEvent;
use crypto::MasterKey;
use model::{
    ApiKeyInfo, Dataset, Datasource, DatasourceKind, EmbedUser, Group, GroupGrant, Organization,
    Permission, Session,
};
use store::{Store, now};
use tokens::{Signer, TokenAlg};

/// Session lifetime when the request names none: long enough for a page
/// view, short enough that a leaked token soon stops working.
pub const DEFAULT_SESSION_TTL: i64 = 15 * 60;
/// The longest session a backend can mint.
pub const MAX_SESSION_TTL: i64 = 24 * 60 * 60;
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
    /// The org's version when these were read (see [`Versioned`]).
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

/// `POST /v1/datasets`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetInput {
    /// The datasource (id or name).
    pub datasource: String,
    /// Table (`table` or `schema.table`), collection or upload name.
    pub name: String,
}

/// `PUT /v1/groups/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    /// The datasets it grants, replacing any earlier grants.
    #[serde(default)]
    pub grants: Vec<GroupGrant>,
}

/// `PUT /v1/embed-users/{external_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedUserInput {
    /// Attributes row filters refer to.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Groups (ids or names), replacing any earlier membership.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `POST /v1/sessions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionInput {
    /// Update this existing session (it gets a new token) instead of
    /// creating one.
    #[serde(default)]
    pub id: Option<String>,
    /// The embed user's external id.
    pub embed_user: String,
    /// Dataset ids this session may use (default: all its groups grant).
    #[serde(default)]
    pub datasets: Option<Vec<String>>,
    /// Values row filters may read as `{{user.<name>}}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Lifetime in seconds (default 900, at most 86400).
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

/// A session and the token that carries it (shown once).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct SessionToken {
    /// The session.
    pub session: Session,
    /// The signed token (`Authorization: Bearer …` on embed endpoints).
    pub token: String,
}

/// A dataset as an embed session sees it.
#[derive(Debug, Clone, serde::Serialize, ToSchema)]
pub struct EmbedDataset {
    /// `dset_…`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The widest permission the session's groups grant.
    pub permission: Permission,
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

/// A running embed fetch and its audit record, written when it ends.
pub struct EmbedFetch {
    /// The verified rows.
    pub fetch: Fetch,
    /// Records the outcome; if dropped unrecorded (client gone), records
    /// `cancelled`.
    pub audit: PendingAudit,
}

/// An audit record to be written when a fetch ends.
pub struct PendingAudit {
    store: Store,
    event: Option<AuditEvent>,
    started: Instant,
    /// HTTP datasources: the requests made, listed in the record's detail.
    requests: Option<silo_engine::capability::http::RequestLog>,
    /// Rows and bytes handed to the client so far: what the record of a
    /// fetch cut short (the client left, the host shut down) says.
    released: (u64, u64),
    writing: Writing,
}

impl PendingAudit {
    /// Writes the record with the fetch's totals and outcome.
    pub async fn record(mut self, rows: u64, bytes: u64, outcome: &str) {
        if let Some(e) = self.finish(rows, bytes, outcome) {
            append_logged(&self.store, &e).await;
        }
    }

    /// Notes `rows` more rows in `bytes` more bytes handed to the client.
    pub fn release(&mut self, rows: u64, bytes: u64) {
        self.released.0 += rows;
        self.released.1 += bytes;
    }

    /// What was handed to the client so far.
    pub fn released(&self) -> (u64, u64) {
        self.released
    }

    fn finish(&mut self, rows: u64, bytes: u64, outcome: &str) -> Option<AuditEvent> {
        let mut e = self.event.take()?;
        e.rows = Some(rows as i64);
        e.bytes = Some(bytes as i64);
        e.outcome = outcome.to_owned();
        e.duration_ms = Some(self.started.elapsed().as_millis() as i64);
        if let Some(log) = &self.requests {
            let requests = log.records();
            if !requests.is_empty() {
                e.detail = serde_json::to_string(&serde_json::json!({ "requests": requests })).ok();
            }
        }
        Some(e)
    }
}

impl Drop for PendingAudit {
    fn drop(&mut self) {
        let (rows, bytes) = self.released;
        if let Some(e) = self.finish(rows, bytes, "cancelled")
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let store = self.store.clone();
            let writing = self.writing.start();
            handle.spawn(async move {
                append_logged(&store, &e).await;
                drop(writing);
            });
        }
    }
}

/// Audit records being written in the background (a dropped fetch's), so a
/// shutdown can wait for them.
#[derive(Debug, Clone, Default)]
pub struct Writing(Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>);

/// One record in flight; done when dropped.
pub struct InFlight(Writing);

impl Writing {
    fn start(&self) -> InFlight {
        self.0.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Waits until none is in flight, or `limit` passes.
    pub async fn idle(&self, limit: Duration) {
        let wait = async {
            loop {
                let notified = self.0.1.notified();
                if self.0.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.0.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.0.1.notify_waiters();
    }
}

async fn append_logged(store: &Store, e: &AuditEvent) {
    if let Err(err) = audit::append(store, e).await {
        tracing::error!(error = %err, action = %e.action, "writing an audit record failed");
    }
}

/// How long cached metadata and summaries serve before they are computed
/// again from the database (a changed policy, filter or dataset set is a
/// miss at once).
pub const METADATA_TTL: i64 = 15 * 60;

/// How a datasource names a registered connector: by its digest.
const REGISTRY_PREFIX: &str = "registry:";

/// Largest component accepted by the registry.
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;

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
    _purge: Background,
    /// The request path's reads, per org version.
    caches: Caches,
    /// Org version reads, shared by requests that arrive together.
    versions: versions::VersionReads,
}

/// Reads cached per (org, key), each valid only while the org's version
/// (which the store bumps in the same transaction as any change to what is
/// cached) is the one it was read at: hosts sharing a store see a change,
/// revocation included, on the next request, each reading one number
/// instead of the session, user, memberships, grants, datasets and
/// datasource. A version counter rather than LISTEN/NOTIFY: a notification
/// arrives some time after the commit, the counter is read by the request
/// itself, and it works the same on SQLite.
struct Versioned<V>(Mutex<HashMap<(String, String), (i64, V)>>);

impl<V> Default for Versioned<V> {
    fn default() -> Self {
        Versioned(Mutex::new(HashMap::new()))
    }
}

/// Entries of one cache; past it the cache starts over.
const CACHE_ENTRIES: usize = 10_000;

impl<V: Clone> Versioned<V> {
    /// The value cached for `key` at `version`, if any.
    fn get(&self, org: &str, key: &str, version: Option<i64>) -> Option<V> {
        let version = version?;
        let map = self.0.lock().ok()?;
        map.get(&(org.to_owned(), key.to_owned()))
            .filter(|(v, _)| *v == version)
            .map(|(_, value)| value.clone())
    }

    /// Caches `value`, read after the org's version was `version`.
    fn put(&self, org: &str, key: &str, version: Option<i64>, value: V) {
        if let (Some(version), Ok(mut map)) = (version, self.0.lock()) {
            if map.len() >= CACHE_ENTRIES {
                map.clear();
            }
            map.insert((org.to_owned(), key.to_owned()), (version, value));
        }
    }

    /// The cached value at `version`, or `load`'s, cached.
    async fn get_or_load<F>(&self, org: &str, key: &str, version: Option<i64>, load: F) -> Result<V>
    where
        F: std::future::Future<Output = Result<V>>,
    {
        if let Some(v) = self.get(org, key, version) {
            return Ok(v);
        }
        let v = load.await?;
        self.put(org, key, version, v.clone());
        Ok(v)
    }
}

/// What the request path reads, cached per org version.
#[derive(Default)]
struct Caches {
    /// Per session id: the session and its user.
    sessions: Versioned<Arc<(Session, EmbedUser)>>,
    /// Per embed user id: its groups' grants.
    grants: Versioned<Arc<Vec<GroupGrant>>>,
    /// Per dataset id.
    datasets: Versioned<Arc<Dataset>>,
    /// Per datasource id: its record, sealed credential and revision.
    datasources: Versioned<Arc<(Datasource, Option<String>, i64)>>,
    /// Per datasource id: its datasets' ids by name.
    names: Versioned<Arc<HashMap<String, String>>>,
}

/// A background task that ends with its owner.
struct Background(tokio::task::JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often expired sessions are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// How long after expiry a session is kept (its record may still be looked
/// at; its tokens died at expiry).
const PURGE_AFTER_SECS: i64 = 3600;

/// Deletes sessions an hour past expiry, now and every ten minutes, so the
/// table holds live sessions, not history (the audit log keeps that).
async fn purge_sessions(store: Store) {
    let mut every = tokio::time::interval(PURGE_EVERY);
    loop {
        every.tick().await;
        match store.purge_sessions(store::now() - PURGE_AFTER_SECS).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "purged expired sessions"),
            Err(e) => tracing::warn!(error = %e, "purging expired sessions"),
        }
    }
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
        let runtime = Arc::new(Runtime::new(config.limits, cache_dir)?);
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
        let purge = Background(tokio::spawn(purge_sessions(store.clone())));
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

    // ---- operator ----------------------------------------------------------

    /// Creates an organization (operator only).
    pub async fn create_org(&self, p: &Principal, name: &str) -> Result<Organization> {
        if matches!(p, Principal::Org { .. }) {
            return Err(Error::Unauthorized("an operator key is required".into()));
        }
        valid_name("an organization name", name)?;
        let org = Organization {
            id: tokens::new_id("org")?,
            name: name.to_owned(),
            created_at: now(),
        };
        self.store.insert_org(&org).await?;
        self.audit_in(Some(org.id.clone()), p, "org.create", Some(&org.id), None)
            .await;
        Ok(org)
    }

    /// All organizations (operator only).
    pub async fn orgs(&self, p: &Principal) -> Result<Vec<Organization>> {
        if matches!(p, Principal::Org { .. }) {
            return Err(Error::Unauthorized("an operator key is required".into()));
        }
        self.store.orgs().await
    }

    /// Mints an API key for `org` (`None`: an operator key). The token is in
    /// the result once and stored only as a digest. Operators mint keys for
    /// any org; an org's key mints keys for its own org.
    pub async fn create_api_key(
        &self,
        p: &Principal,
        org: Option<&str>,
        name: &str,
    ) -> Result<(ApiKeyInfo, Zeroizing<String>)> {
        let org = match (p, org) {
            (Principal::Org { org: own, .. }, Some(o)) if o == own => Some(own.clone()),
            (Principal::Org { .. }, _) => return Err(Error::NotFound("organization".into())),
            (_, Some(o)) => Some(self.store.org(o).await?.id),
            (_, None) => None,
        };
        valid_name("a key name", name)?;
        let key = tokens::new_api_key()?;
        let info = ApiKeyInfo {
            id: key.id.clone(),
            org_id: org,
            name: name.to_owned(),
            created_at: now(),
            revoked_at: None,
        };
        self.store.insert_api_key(&info, &key.digest).await?;
        self.audit_in(
            info.org_id.clone(),
            p,
            "api_key.create",
            Some(&info.id),
            None,
        )
        .await;
        Ok((info, key.token))
    }

    /// Revokes a key; an org's key can revoke only its org's keys.
    pub async fn revoke_api_key(&self, p: &Principal, org: Option<&str>, id: &str) -> Result<()> {
        let org = match p {
            Principal::Org { org: own, .. } => Some(own.clone()),
            _ => match org {
                Some(o) => Some(self.store.org(o).await?.id),
                None => None,
            },
        };
        self.store.revoke_api_key(org.as_deref(), id).await?;
        self.audit_in(org, p, "api_key.revoke", Some(id), None)
            .await;
        Ok(())
    }

    /// The keys of `p`'s org (operators: of `org`, or the operator keys).
    pub async fn api_keys(&self, p: &Principal, org: Option<&str>) -> Result<Vec<ApiKeyInfo>> {
        match p {
            Principal::Org { org, .. } => self.store.api_keys(Some(org)).await,
            _ => match org {
                Some(o) => {
                    self.store
                        .api_keys(Some(&self.store.org(o).await?.id))
                        .await
                }
                None => self.store.api_keys(None).await,
            },
        }
    }

    /// Who holds `token` (an API key). Unknown, malformed and revoked keys
    /// are the same error.
    pub async fn authenticate_key(&self, token: &str) -> Result<Principal> {
        let refused = || Error::Unauthorized("the API key is not valid".into());
        let (id, secret) = tokens::parse_api_key(token).ok_or_else(refused)?;
        let (info, digest) = self.store.api_key(id).await?.ok_or_else(refused)?;
        if info.revoked_at.is_some() || !tokens::api_key_matches(secret, &digest) {
            return Err(refused());
        }
        Ok(match info.org_id {
            Some(org) => Principal::Org {
                org,
                key: Some(info.id),
            },
            None => Principal::Admin { key: info.id },
        })
    }

    // ---- datasources and datasets -------------------------------------------

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

    async fn register(
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

    // ---- groups and embed users ----------------------------------------------

    /// Creates or replaces the group `name` of `p`'s org.
    pub async fn put_group(&self, p: &Principal, name: &str, input: GroupInput) -> Result<Group> {
        let org = Self::org_of(p)?;
        valid_name("a group name", name)?;
        for g in &input.grants {
            if g.all_rows && !g.row_filter.is_empty() {
                return Err(Error::Config(format!(
                    "grant of `{}` sets both all_rows and row_filter",
                    g.dataset_id
                )));
            }
            Policy::parse(&g.row_filter)
                .map_err(|e| Error::Config(format!("grant of `{}`: {e}", g.dataset_id)))?;
            for c in g.columns.iter().flatten() {
                valid_name("a column name", c)?;
            }
            if g.columns.is_some() {
                // An HTTP connector reads the API's raw answers: the host
                // cannot take a column out of them.
                let d = self.store.dataset(org, &g.dataset_id).await?;
                let (ds, _, _) = self.store.datasource(org, &d.datasource_id).await?;
                if ds.kind == DatasourceKind::Http {
                    return Err(Error::Config(format!(
                        "grant of `{}`: column grants cannot be enforced on an HTTP dataset (its \
                         connector reads the API's raw answers); grant every column, or leave \
                         `columns` out",
                        g.dataset_id
                    )));
                }
            }
        }
        let group = Group {
            id: tokens::new_id("grp")?,
            org_id: org.to_owned(),
            name: name.to_owned(),
            grants: input.grants,
            created_at: now(),
        };
        let out = self.store.upsert_group(&group).await?;
        self.audit(p, "group.put", Some(&out.id), None).await;
        Ok(out)
    }

    /// The groups of `p`'s org.
    pub async fn groups(&self, p: &Principal) -> Result<Vec<Group>> {
        self.store.groups(Self::org_of(p)?).await
    }

    /// One group of `p`'s org.
    pub async fn group(&self, p: &Principal, id: &str) -> Result<Group> {
        self.store.group(Self::org_of(p)?, id).await
    }

    /// Deletes a group of `p`'s org.
    pub async fn delete_group(&self, p: &Principal, id: &str) -> Result<()> {
        let org = Self::org_of(p)?;
        let g = self.store.group(org, id).await?;
        self.store.delete_group(org, &g.id).await?;
        self.audit(p, "group.delete", Some(&g.id), None).await;
        Ok(())
    }

    /// Creates or updates the embed user `external_id` of `p`'s org.
    pub async fn put_embed_user(
        &self,
        p: &Principal,
        external_id: &str,
        input: EmbedUserInput,
    ) -> Result<EmbedUser> {
        let org = Self::org_of(p)?;
        // Lookups accept a record id too, so an external id may not look
        // like one.
        if external_id.is_empty()
            || external_id.len() > 256
            || external_id.chars().any(char::is_control)
            || external_id.starts_with("eu_")
        {
            return Err(Error::Config(
                "an embed user id must be 1 to 256 printable characters, not starting with `eu_`"
                    .into(),
            ));
        }
        attributes(&input.attributes)?;
        let mut groups = Vec::with_capacity(input.groups.len());
        for g in &input.groups {
            groups.push(self.store.group(org, g).await?.id);
        }
        let t = now();
        let user = EmbedUser {
            id: tokens::new_id("eu")?,
            org_id: org.to_owned(),
            external_id: external_id.to_owned(),
            attributes: input.attributes,
            groups,
            created_at: t,
            updated_at: t,
        };
        let out = self.store.upsert_embed_user(&user).await?;
        self.audit(p, "embed_user.put", Some(&out.id), None).await;
        Ok(out)
    }

    /// The embed users of `p`'s org.
    pub async fn embed_users(&self, p: &Principal) -> Result<Vec<EmbedUser>> {
        self.store.embed_users(Self::org_of(p)?).await
    }

    /// One embed user of `p`'s org.
    pub async fn embed_user(&self, p: &Principal, id: &str) -> Result<EmbedUser> {
        self.store.embed_user(Self::org_of(p)?, id).await
    }

    /// Deletes an embed user of `p`'s org and its sessions.
    pub async fn delete_embed_user(&self, p: &Principal, id: &str) -> Result<()> {
        let org = Self::org_of(p)?;
        let u = self.store.embed_user(org, id).await?;
        self.store.delete_embed_user(org, &u.id).await?;
        self.audit(p, "embed_user.delete", Some(&u.id), None).await;
        Ok(())
    }

    // ---- sessions --------------------------------------------------------

    /// Creates a session (or updates one of `p`'s org by id) and signs its
    /// token.
    pub async fn put_session(&self, p: &Principal, input: SessionInput) -> Result<SessionToken> {
        let org = Self::org_of(p)?;
        let user = self.store.embed_user(org, &input.embed_user).await?;
        let shadowed = input
            .parameters
            .keys()
            .find(|k| user.attributes.contains_key(*k));
        if let Some(k) = shadowed {
            return Err(Error::Config(format!(
                "parameter `{k}` would shadow the embed user's attribute"
            )));
        }
        attributes(&input.parameters)?;
        if let Some(ds) = &input.datasets {
            for d in ds {
                self.store.dataset(org, d).await?;
            }
        }
        let ttl = input.ttl_seconds.unwrap_or(DEFAULT_SESSION_TTL);
        if !(1..=MAX_SESSION_TTL).contains(&ttl) {
            return Err(Error::Config(format!(
                "ttl_seconds must be 1 to {MAX_SESSION_TTL}"
            )));
        }
        let t = now();
        let mut session = Session {
            id: String::new(),
            org_id: org.to_owned(),
            embed_user_id: user.id,
            datasets: input.datasets,
            parameters: input.parameters,
            created_at: t,
            expires_at: t + ttl,
            revoked_at: None,
            generation: 0,
        };
        let action = match &input.id {
            // Renewal: the same user's live session gets a new generation;
            // every token of the old one stops working.
            Some(id) => {
                let old = self.store.session(org, id).await?;
                if old.embed_user_id != session.embed_user_id {
                    return Err(Error::Conflict(
                        "this session belongs to another embed user; a session keeps its user \
                         for life: create a new one"
                            .into(),
                    ));
                }
                if old.revoked_at.is_some() {
                    return Err(Error::Conflict(
                        "this session was revoked, and stays revoked: create a new one".into(),
                    ));
                }
                session.id = old.id;
                session.created_at = old.created_at;
                session.generation = old.generation + 1;
                self.store.renew_session(&session, old.generation).await?;
                "session.renew"
            }
            None => {
                session.id = tokens::new_id("ses")?;
                self.store.insert_session(&session).await?;
                "session.create"
            }
        };
        let claims =
            self.signer
                .claims(org, &session.id, session.generation, t, session.expires_at);
        let token = self.signer.sign(&claims)?;
        self.audit(p, action, Some(&session.id), None).await;
        Ok(SessionToken { session, token })
    }

    /// The sessions of `p`'s org.
    pub async fn sessions(&self, p: &Principal) -> Result<Vec<Session>> {
        self.store.sessions(Self::org_of(p)?, None).await
    }

    /// Revokes a session of `p`'s org: its token fails from the next request.
    pub async fn revoke_session(&self, p: &Principal, id: &str) -> Result<()> {
        self.store.revoke_session(Self::org_of(p)?, id).await?;
        self.audit(p, "session.revoke", Some(id), None).await;
        Ok(())
    }

    /// Verifies a session token and loads its session and user. The
    /// organization comes from the verified claims only; a revoked, expired
    /// or unknown session is the same error as a bad signature.
    pub async fn authenticate_session(&self, token: &str) -> Result<EmbedPrincipal> {
        let claims = self.signer.verify(token)?;
        let refused = || Error::Unauthorized("the session token is not valid".into());
        // The version first: reads after it are at least as new, so a
        // change after it is seen by the next request.
        let version = self.versions.read(&self.store, &claims.org).await?;
        let read = self
            .caches
            .sessions
            .get_or_load(&claims.org, &claims.sub, version, async {
                let session = self.store.session(&claims.org, &claims.sub).await?;
                let user = self
                    .store
                    .embed_user(&claims.org, &session.embed_user_id)
                    .await?;
                Ok(Arc::new((session, user)))
            })
            .await;
        let (session, user) = match read {
            Ok(pair) => (pair.0.clone(), pair.1.clone()),
            Err(Error::NotFound(_)) => return Err(refused()),
            Err(e) => return Err(e),
        };
        // Checked on every request, cached or not: time moves on.
        if session.revoked_at.is_some()
            || session.expires_at <= now()
            || !claims.current_for(&session.id, session.generation)
        {
            return Err(refused());
        }
        Ok(EmbedPrincipal {
            org: claims.org,
            session,
            user,
            version,
        })
    }

    // ---- embed: describe and fetch -----------------------------------------

    async fn access(&self, e: &EmbedPrincipal) -> Result<Access> {
        let mut attrs = attributes(&e.user.attributes)?;
        // A parameter never overrides an attribute, even one the user got
        // after the session was minted.
        if let Some(k) = e
            .session
            .parameters
            .keys()
            .find(|k| e.user.attributes.contains_key(*k))
        {
            return Err(Error::Conflict(format!(
                "session parameter `{k}` now conflicts with the embed user's attribute `{k}`; \
                 mint a new session without it"
            )));
        }
        attrs.extend(attributes(&e.session.parameters)?);
        let session: Option<BTreeSet<String>> = e
            .session
            .datasets
            .as_ref()
            .map(|d| d.iter().cloned().collect());
        let all = self
            .caches
            .grants
            .get_or_load(&e.org, &e.user.id, e.version, async {
                Ok(Arc::new(self.store.grants_of(&e.org, &e.user.id).await?))
            })
            .await?;
        let grants = all
            .iter()
            .filter(|g| session.as_ref().is_none_or(|s| s.contains(&g.dataset_id)))
            .cloned()
            .collect();
        Ok(Access { attrs, grants })
    }

    /// The datasets a session may use.
    pub async fn embed_datasets(&self, e: &EmbedPrincipal) -> Result<Vec<EmbedDataset>> {
        let access = self.access(e).await?;
        let mut out = Vec::new();
        for d in self.store.datasets(&e.org, None).await? {
            let widest = access
                .grants
                .iter()
                .filter(|g| g.dataset_id == d.id)
                .map(|g| g.permission)
                .max_by_key(|p| *p == Permission::Read);
            if let Some(permission) = widest {
                out.push(EmbedDataset {
                    id: d.id,
                    name: d.name,
                    permission,
                });
            }
        }
        Ok(out)
    }

    /// The columns of a dataset the session may see.
    pub async fn embed_describe(
        &self,
        e: &EmbedPrincipal,
        dataset: &str,
    ) -> Result<Vec<ColumnInfo>> {
        let access = self.access(e).await?;
        let d = self.embed_dataset(e, dataset).await?;
        let grants: Vec<&GroupGrant> = access.of(&d.id, Permission::Describe);
        if grants.is_empty() {
            return Err(Error::NotFound("dataset".into()));
        }
        let (silo, _) = self.engine(&e.org, e.version, &d.datasource_id).await?;
        Ok(silo
            .dataset_columns(&d.name)
            .await?
            .iter()
            .filter(|c| grants.iter().any(|g| g.allows(&c.name)))
            .map(|c| ColumnInfo {
                name: c.name.clone(),
                kind: silo_types::text::kind_name(c.kind).to_owned(),
                nullable: c.nullable,
            })
            .collect())
    }

    /// Starts a fetch of a dataset as the session's embed user: the rows of
    /// every group that grants `read` and allows all the columns asked for
    /// (ORed), with the other governed tables of the datasource filtered the
    /// same way for joins. Failures before the first row are audited here;
    /// the rest when [`EmbedFetch::audit`] is recorded or dropped.
    pub async fn embed_fetch(
        &self,
        e: &EmbedPrincipal,
        dataset: &str,
        columns: Option<Vec<String>>,
        limit: Option<u64>,
    ) -> Result<EmbedFetch> {
        let started = Instant::now();
        let result = self.start_fetch(e, dataset, columns, limit).await;
        let mut audit = self.pending_audit(e.event("fetch", dataset), started);
        match result {
            Ok(fetch) => {
                if let Some(ev) = audit.event.as_mut() {
                    ev.filter_fingerprint =
                        Some(audit::fingerprint(&self.fingerprints, fetch.filter()));
                    // On record before a byte is released: a crash
                    // mid-stream still leaves a trace of the fetch.
                    let begun = AuditEvent {
                        action: "fetch.start".into(),
                        outcome: "started".into(),
                        ..ev.clone()
                    };
                    append_logged(&self.store, &begun).await;
                }
                audit.requests = fetch.request_log();
                Ok(EmbedFetch { fetch, audit })
            }
            Err(err) => {
                audit.record(0, 0, error_code(&err)).await;
                Err(err)
            }
        }
    }

    /// The audit record of an operation that began at `started`, written
    /// when recorded or dropped.
    fn pending_audit(&self, event: AuditEvent, started: Instant) -> PendingAudit {
        PendingAudit {
            store: self.store.clone(),
            event: Some(event),
            started,
            requests: None,
            released: (0, 0),
            writing: self.writing.clone(),
        }
    }

    /// Waits (up to `limit`) until the audit records of fetches cut short
    /// are written: before a shutting-down host exits.
    pub async fn audits_written(&self, limit: Duration) {
        self.writing.idle(limit).await;
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

    async fn start_fetch(
        &self,
        e: &EmbedPrincipal,
        dataset: &str,
        columns: Option<Vec<String>>,
        limit: Option<u64>,
    ) -> Result<Fetch> {
        self.plan(e, dataset, columns).await?.run(limit).await
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
        let d = self.store.dataset(org, dataset).await?;
        let (ds, _, _) = self.store.datasource(org, &d.datasource_id).await?;
        if ds.kind != DatasourceKind::Files {
            return Err(Error::Config(
                "uploads go to a dataset of a `files` datasource".into(),
            ));
        }
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

    fn connectors_dir(&self) -> PathBuf {
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
    async fn resolve_connector(
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

    /// Resolves what a fetch of `dataset` by `e` may read: the dataset,
    /// its columns (default: those every granting group allows, so that
    /// every group's rows apply) and the groups' filters.
    /// A dataset of the session's org, cached per org version.
    async fn embed_dataset(&self, e: &EmbedPrincipal, id: &str) -> Result<Arc<Dataset>> {
        self.caches
            .datasets
            .get_or_load(&e.org, id, e.version, async {
                Ok(Arc::new(self.store.dataset(&e.org, id).await?))
            })
            .await
    }

    async fn plan(
        &self,
        e: &EmbedPrincipal,
        dataset: &str,
        columns: Option<Vec<String>>,
    ) -> Result<Plan> {
        let access = self.access(e).await?;
        let d = self.embed_dataset(e, dataset).await?;
        if access.of(&d.id, Permission::Describe).is_empty() {
            return Err(Error::NotFound("dataset".into()));
        }
        let readers = access.of(&d.id, Permission::Read);
        if readers.is_empty() {
            return Err(Error::Policy(
                "the session may describe this dataset, not read it".into(),
            ));
        }
        let (silo, revision) = self.engine(&e.org, e.version, &d.datasource_id).await?;
        let columns = match columns.filter(|c| !c.is_empty()) {
            Some(c) => c,
            None => silo
                .dataset_columns(&d.name)
                .await?
                .iter()
                .filter(|c| readers.iter().all(|g| g.allows(&c.name)))
                .map(|c| c.name.clone())
                .collect(),
        };
        if columns.is_empty() {
            return Err(Error::Policy("no column of this dataset is granted".into()));
        }
        if !readers.iter().any(|g| columns.iter().all(|c| g.allows(c))) {
            let hidden: Vec<&str> = columns
                .iter()
                .filter(|c| !readers.iter().any(|g| g.allows(c)))
                .map(String::as_str)
                .collect();
            return Err(Error::Policy(if hidden.is_empty() {
                "no single group grants all these columns together; ask for fewer".into()
            } else {
                format!("the session may not read column(s) {}", hidden.join(", "))
            }));
        }
        let names = self
            .caches
            .names
            .get_or_load(&e.org, &d.datasource_id, e.version, async {
                Ok(Arc::new(
                    self.store
                        .datasets(&e.org, Some(&d.datasource_id))
                        .await?
                        .into_iter()
                        .map(|x| (x.name, x.id))
                        .collect(),
                ))
            })
            .await?;
        Ok(Plan {
            silo,
            revision,
            dataset: d,
            columns,
            access,
            names,
        })
    }

    /// The registry serving one datasource and its revision, rebuilt when
    /// its datasets change.
    async fn engine(
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
    fn engine_config(
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

    // ---- operator maintenance ------------------------------------------------

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

fn metadata_aad(org: &str, dataset: &str, key: &str) -> String {
    format!("silo/metadata/{org}/{dataset}/{key}")
}

/// A fetch resolved but not started.
struct Plan {
    silo: Arc<Silo>,
    revision: i64,
    dataset: Arc<Dataset>,
    columns: Vec<String>,
    access: Access,
    /// Dataset ids of the datasource by name (for the filters of joins).
    names: Arc<HashMap<String, String>>,
}

impl Plan {
    /// The filter of the dataset itself.
    fn filter(&self) -> Result<RowFilter> {
        Ok(self.access.dataset(&self.dataset.id, &self.columns)?.filter)
    }

    async fn run(&self, limit: Option<u64>) -> Result<Fetch> {
        let filters = |name: &str| -> Result<DatasetAccess> {
            let id = self
                .names
                .get(name)
                .ok_or_else(|| Error::NotFound("dataset".into()))?;
            let cols: &[String] = if *id == self.dataset.id {
                &self.columns
            } else {
                &[]
            };
            self.access.dataset(id, cols)
        };
        let spec = FetchSpec {
            dataset: self.dataset.name.clone(),
            columns: Some(self.columns.clone()),
            limit,
        };
        self.silo.fetch_with(&filters, &spec).await
    }
}

/// The grants that apply to one session, with its attributes.
struct Access {
    attrs: Attributes,
    grants: Vec<GroupGrant>,
}

impl GroupGrant {
    fn allows(&self, column: &str) -> bool {
        self.columns
            .as_ref()
            .is_none_or(|c| c.iter().any(|x| x == column))
    }
}

impl Access {
    /// Grants of `dataset` with at least `need`.
    fn of(&self, dataset: &str, need: Permission) -> Vec<&GroupGrant> {
        self.grants
            .iter()
            .filter(|g| {
                g.dataset_id == dataset && (need == Permission::Describe || g.permission == need)
            })
            .collect()
    }

    /// What a fetch may read of `dataset`: the OR of the row filters of the
    /// groups that grant `read` on it and allow all of `columns` (no such
    /// group, no rows), and the columns *every* one of those groups allows
    /// (a fence holds one column set for all its rows, so a column only some
    /// of them allow would show on the others' rows too).
    fn dataset(&self, dataset: &str, columns: &[String]) -> Result<DatasetAccess> {
        let mut any = Vec::new();
        let mut all_rows = false;
        let mut allowed: Option<Vec<String>> = None;
        for g in self.of(dataset, Permission::Read) {
            if !columns.iter().all(|c| g.allows(c)) {
                continue;
            }
            if let Some(cols) = &g.columns {
                allowed = Some(match allowed {
                    None => cols.clone(),
                    Some(mut a) => {
                        a.retain(|c| cols.contains(c));
                        a
                    }
                });
            }
            if all_rows || g.all_rows {
                all_rows = true;
                continue;
            }
            let policy = Policy::parse(&g.row_filter).map_err(Error::Config)?;
            match policy
                .resolve(&self.attrs)
                .map_err(|e| Error::Policy(format!("row filter: {e}")))?
            {
                RowFilter::AllRows => all_rows = true,
                RowFilter::AnyOf(c) => any.extend(c),
                RowFilter::NoRows => {}
            }
        }
        Ok(DatasetAccess {
            filter: if all_rows {
                RowFilter::AllRows
            } else {
                RowFilter::AnyOf(any)
            },
            columns: allowed,
        })
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
