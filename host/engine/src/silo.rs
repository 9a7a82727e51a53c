//! The registry (datasources, datasets, users) and the fetch pipeline:
//! resolve the user's filter, grant the connector a filtered capability, run
//! it in a fresh instance, and release only rows that pass re-verification.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use silo_types::{Dataset, RowFilter, Value};
use wasmtime::component::ResourceAny;

use crate::bindings::WitErrors;
use crate::bindings::exports::silo::connector::connector::FetchOutput;
use crate::bindings::silo::connector::types as wit;
use crate::capability::files::Preopens;
use crate::capability::http::{RequestLog, RequestRecord};
use crate::capability::{Backend, DocumentGrant, FetchShare, Grant, RowSource, SqlGrant};
use crate::config::SiloConfig;
use crate::runtime::{Instance, Loaded, Runtime};
use silo_core::batch::Batch;
use silo_core::error::{Error, Result};
use silo_core::limits::BATCH_ROWS;
use silo_metadata::PrivacyPolicy;
use silo_policy::Verifier;
use silo_policy::rule::{Attributes, Policy, attribute_values};
use silo_policy::sql::GovernedTable;

/// Connectors compiled into the `silo` binary, by name.
pub const BUILTIN_CONNECTORS: &[(&str, &[u8])] = &[
    ("postgres", crate::builtin::POSTGRES),
    ("mysql", crate::builtin::MYSQL),
    ("mongodb", crate::builtin::MONGODB),
    ("files", crate::builtin::FILES),
    ("http-json", crate::builtin::HTTP_JSON),
];

/// A row as the host hands it out.
pub type Row = Vec<Value>;

struct Datasource {
    name: String,
    connector: Loaded,
    backend: Backend,
    schema: String,
    described: Mutex<Option<Arc<Vec<Dataset>>>>,
}

struct DatasetEntry {
    datasource: String,
    schema: String,
    table: String,
    policy: Policy,
    privacy: PrivacyPolicy,
}

/// What one user may read of one dataset: which rows, and which columns.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetAccess {
    /// The rows.
    pub filter: RowFilter,
    /// The columns the user's grants allow; `None`: every column.
    pub columns: Option<Vec<String>>,
}

impl DatasetAccess {
    /// Every column of the rows `filter` admits.
    pub fn rows(filter: RowFilter) -> DatasetAccess {
        DatasetAccess {
            filter,
            columns: None,
        }
    }
}

/// What the caller asks for.
#[derive(Debug, Clone, Default)]
pub struct FetchSpec {
    /// Dataset name.
    pub dataset: String,
    /// Columns to return (default: all the connector describes).
    pub columns: Option<Vec<String>>,
    /// Most rows wanted.
    pub limit: Option<u64>,
}

/// A loaded configuration: everything a fetch needs.
pub struct Silo {
    runtime: Arc<Runtime>,
    datasources: BTreeMap<String, Datasource>,
    datasets: BTreeMap<String, DatasetEntry>,
    users: BTreeMap<String, Attributes>,
    fingerprints: silo_core::fingerprint::FingerprintKey,
}

impl Silo {
    /// Builds the runtime, loads each datasource's connector and opens pools.
    pub fn new(config: &SiloConfig) -> Result<Silo> {
        Silo::with_runtime(Arc::new(Silo::runtime_for(config)?), config)
    }

    /// The runtime [`Silo::new`] builds for `config`: its limits and cache.
    pub fn runtime_for(config: &SiloConfig) -> Result<Runtime> {
        let cache_dir = config.cache_dir.clone().or_else(default_cache_dir);
        Runtime::new(config.limits, cache_dir, crate::capability::ALL)
    }

    /// Like [`Silo::new`], on a runtime shared with other registries (the
    /// server keeps one per datasource on one engine). `config.limits` and
    /// `cache_dir` are the runtime's, not read here.
    pub fn with_runtime(runtime: Arc<Runtime>, config: &SiloConfig) -> Result<Silo> {
        let mut datasources = BTreeMap::new();
        for (name, ds) in &config.datasources {
            let (backend, builtin) = crate::config::connect(name, ds, &config.limits, &config.net)?;
            let schema = backend.default_schema().to_owned();
            let wasm = connector_bytes(ds.connector.as_deref().unwrap_or(builtin))?;
            if let Some(pinned) = &ds.connector_sha256 {
                use sha2::Digest;
                let digest = hex::encode(sha2::Sha256::digest(&wasm));
                if !digest.eq_ignore_ascii_case(pinned.trim()) {
                    return Err(Error::Config(format!(
                        "datasource `{name}`: the connector's sha256 is {digest}, not the pinned \
                         {pinned}; rebuild it or update connector_sha256 from its manifest"
                    )));
                }
            }
            let connector = runtime.load(&wasm, backend.kind())?;
            datasources.insert(
                name.clone(),
                Datasource {
                    name: name.clone(),
                    connector,
                    backend,
                    schema,
                    described: Mutex::default(),
                },
            );
        }
        let mut datasets = BTreeMap::new();
        for (name, d) in &config.datasets {
            let schema = datasources
                .get(&d.datasource)
                .map(|s| s.schema.clone())
                .unwrap_or_default();
            let (schema, table) = match name.split_once('.') {
                Some((s, t)) => (s.to_owned(), t.to_owned()),
                None => (schema, name.clone()),
            };
            let policy = if d.all_rows {
                Policy::AllRows
            } else {
                Policy::parse(&d.row_filter).map_err(Error::Config)?
            };
            datasets.insert(
                name.clone(),
                DatasetEntry {
                    datasource: d.datasource.clone(),
                    schema,
                    table,
                    policy,
                    privacy: d.privacy.clone().unwrap_or_default(),
                },
            );
        }
        let mut users = BTreeMap::new();
        for (id, u) in &config.users {
            let attrs = u
                .attributes
                .iter()
                .map(|(k, v)| {
                    attribute_values(v)
                        .map(|v| (k.clone(), v))
                        .map_err(Error::Config)
                })
                .collect::<Result<Attributes>>()?;
            users.insert(id.clone(), attrs);
        }
        Ok(Silo {
            runtime,
            datasources,
            datasets,
            users,
            fingerprints: config.fingerprints.clone(),
        })
    }

    /// [`Silo::new`], then the registration check on every datasource: a
    /// credential that can write is refused unless its datasource sets
    /// `accept_write_privileges`.
    pub async fn open(config: &SiloConfig) -> Result<Silo> {
        let silo = Silo::new(config)?;
        silo.check_read_only(config).await?;
        Ok(silo)
    }

    /// The registration check on every datasource of `config`: refuses a
    /// credential that can write unless `accept_write_privileges` is set.
    pub async fn check_read_only(&self, config: &SiloConfig) -> Result<()> {
        for (name, ds) in &self.datasources {
            let accept = config
                .datasources
                .get(name)
                .is_some_and(|c| c.accept_write_privileges);
            crate::capability::registration::check_read_only(name, &ds.backend, accept).await?;
        }
        Ok(())
    }

    /// The runtime (limits, loaded connectors).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The row filter `user` gets on `dataset`.
    pub fn filter_for(&self, user: &str, dataset: &str) -> Result<RowFilter> {
        let attrs = self
            .users
            .get(user)
            .ok_or_else(|| Error::NotFound(format!("embed user `{user}`")))?;
        let entry = self
            .datasets
            .get(dataset)
            .ok_or_else(|| Error::NotFound(format!("dataset `{dataset}`")))?;
        entry
            .policy
            .resolve(attrs)
            .map_err(|e| Error::Policy(format!("dataset `{dataset}` for user `{user}`: {e}")))
    }

    /// The privacy policy of `dataset`'s metadata.
    pub fn privacy(&self, dataset: &str) -> Result<&PrivacyPolicy> {
        self.datasets
            .get(dataset)
            .map(|e| &e.privacy)
            .ok_or_else(|| Error::NotFound(format!("dataset `{dataset}`")))
    }

    /// The columns of `dataset` as its connector describes them.
    pub async fn dataset_columns(&self, dataset: &str) -> Result<Vec<silo_types::Column>> {
        let entry = self
            .datasets
            .get(dataset)
            .ok_or_else(|| Error::NotFound(format!("dataset `{dataset}`")))?;
        self.describe(&entry.datasource)
            .await?
            .iter()
            .find(|d| d.name == dataset)
            .map(|d| d.columns.clone())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "dataset `{dataset}` is not served by its connector"
                ))
            })
    }

    /// The datasets of `datasource` with their columns, as its connector
    /// describes them, restricted to the governed datasets in the config.
    pub async fn describe(&self, datasource: &str) -> Result<Arc<Vec<Dataset>>> {
        let ds = self
            .datasources
            .get(datasource)
            .ok_or_else(|| Error::NotFound(format!("datasource `{datasource}`")))?;
        if let Some(hit) = ds
            .described
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(hit);
        }
        // Describe sees the catalog, and governed tables only as empty.
        let grant = self.grant(ds, |_| DatasetAccess::rows(RowFilter::NoRows), None)?;
        let mut instance = self
            .runtime
            .instantiate(&ds.connector, &ds.name, Some(grant.into_runtime()))
            .await?;
        let found = instance
            .call(async |c, store| c.silo_connector_connector().call_describe(store).await)
            .await?
            .map_err(Error::from_wit)?;
        let prefix = format!("{}.", ds.schema);
        let mut out: Vec<Dataset> = found
            .into_iter()
            .map(Dataset::from)
            .filter_map(|mut d| {
                if let Some(short) = d.name.strip_prefix(&prefix) {
                    d.name = short.to_owned();
                }
                self.datasets
                    .get(&d.name)
                    .is_some_and(|e| e.datasource == ds.name)
                    .then_some(d)
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        let out = Arc::new(out);
        *ds.described.lock().unwrap_or_else(|p| p.into_inner()) = Some(out.clone());
        Ok(out)
    }

    /// Starts a fetch of `spec` as embed user `user` of the config.
    pub async fn fetch(&self, user: &str, spec: &FetchSpec) -> Result<Fetch> {
        self.fetch_with(
            &|dataset| self.filter_for(user, dataset).map(DatasetAccess::rows),
            spec,
        )
        .await
    }

    /// Starts a fetch of `spec` with the rows and columns `access` gives for
    /// each dataset (the control plane resolves them from a session's
    /// groups). The connector's other governed tables get theirs too, or no
    /// rows when `access` refuses them.
    pub async fn fetch_with(
        &self,
        access: &(dyn Fn(&str) -> Result<DatasetAccess> + Sync),
        spec: &FetchSpec,
    ) -> Result<Fetch> {
        let started = tokio::time::Instant::now();
        let fetched = access(&spec.dataset)?;
        let filter = fetched.filter.clone();
        filter.validate().map_err(Error::Policy)?;
        let entry = self
            .datasets
            .get(&spec.dataset)
            .ok_or_else(|| Error::NotFound(format!("dataset `{}`", spec.dataset)))?;
        let ds = self
            .datasources
            .get(&entry.datasource)
            .ok_or_else(|| Error::Internal("dataset without datasource".into()))?;
        let requested = match &spec.columns {
            Some(c) if !c.is_empty() => c.clone(),
            _ => self.columns_of(&ds.name, &spec.dataset).await?,
        };
        // The host adds the columns its filter reads, to re-check every row,
        // and removes them again before rows leave.
        let mut columns = requested.clone();
        for c in filter.columns() {
            if !columns.iter().any(|x| x == c) {
                columns.push(c.to_owned());
            }
        }
        let limits = *self.runtime.limits();
        let verifier = Verifier::new(&filter, &columns, requested.len(), &limits, spec.limit)?;
        // Inside the fence, only columns that exist and are granted; the
        // columns the connector describes are the ones that exist (a lie
        // only narrows the fence). Without a description, the request's.
        let described = match self.describe(&ds.name).await {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::debug!(datasource = %ds.name, "describe failed, fencing to the request's columns: {e}");
                None
            }
        };
        let described_columns = |name: &str| -> Vec<String> {
            described
                .as_ref()
                .and_then(|d| d.iter().find(|d| d.name == name))
                .map(|d| d.columns.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default()
        };
        // An HTTP connector receives raw response bodies, which the host
        // cannot strip of a column: a grant hiding one is refused, for the
        // fetched dataset with an error, for the others as no rows.
        let http = matches!(ds.backend, Backend::Http(_));
        let hides = |name: &str, granted: &DatasetAccess| {
            granted
                .columns
                .as_ref()
                .is_some_and(|g| described_columns(name).iter().any(|c| !g.contains(c)))
        };
        if http && hides(&spec.dataset, &fetched) {
            return Err(Error::Policy(format!(
                "a group hides columns of `{}`, an HTTP dataset: the connector reads the API's \
                 raw answers, so column grants cannot be enforced there; grant every column, \
                 or serve the hidden ones from another dataset",
                spec.dataset
            )));
        }
        let access = |name: &str| {
            let Ok(granted) = access(name) else {
                return DatasetAccess::rows(RowFilter::NoRows);
            };
            if http && hides(name, &granted) {
                return DatasetAccess::rows(RowFilter::NoRows);
            }
            let mut existing = described_columns(name);
            if name == spec.dataset {
                // What the caller asked for (a sampled description may miss
                // a rare field); the grants still decide.
                for c in &columns {
                    if !existing.contains(c) {
                        existing.push(c.clone());
                    }
                }
            }
            let mut fenced: Vec<String> = existing
                .into_iter()
                .filter(|c| granted.columns.as_ref().is_none_or(|g| g.contains(c)))
                .collect();
            if name == spec.dataset {
                // The filter's columns, for the re-check (removed before release).
                for c in granted.filter.columns() {
                    if !fenced.iter().any(|x| x == c) {
                        fenced.push(c.to_owned());
                    }
                }
            }
            DatasetAccess {
                filter: granted.filter,
                columns: Some(fenced),
            }
        };
        let grant = self.grant(ds, access, Some(&spec.dataset))?;
        let requests = match &grant {
            Grant::Http(g) => Some(g.log.clone()),
            _ => None,
        };
        let mut instance = self
            .runtime
            .instantiate(&ds.connector, &ds.name, Some(grant.into_runtime()))
            .await?;
        let request = wit::FetchRequest {
            dataset: spec.dataset.clone(),
            columns: columns.clone(),
            filter: filter.clone().into(),
            // Never ask for more than one row past the cap: enough to detect it.
            limit: Some(
                spec.limit
                    .unwrap_or(u64::MAX)
                    .min(limits.max_rows.saturating_add(1)),
            ),
        };
        let output = instance
            .call(async |c, store| {
                c.silo_connector_connector()
                    .call_fetch(store, &request)
                    .await
            })
            .await?
            .map_err(Error::from_wit)?;
        let source = match output {
            FetchOutput::Forward(stream) => {
                let stream = instance
                    .store_mut()
                    .data_mut()
                    .table()
                    .delete(stream)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                let names: Vec<&str> = stream
                    .source
                    .columns()
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                if names != columns {
                    return Err(Error::Connector(format!(
                        "connector returned columns {names:?}, the fetch asked for {columns:?}"
                    )));
                }
                // Rows now flow from the database to the caller; the instance is done.
                drop(instance);
                Source::Host(stream.source)
            }
            FetchOutput::Produced(batches) => Source::Guest { instance, batches },
        };
        let mut fetch = Fetch::new(
            source,
            verifier,
            requested,
            filter,
            started + limits.fetch_timeout,
            limits.fetch_timeout,
        );
        fetch.requests = requests;
        Ok(fetch)
    }

    async fn columns_of(&self, datasource: &str, dataset: &str) -> Result<Vec<String>> {
        let described = self.describe(datasource).await?;
        let d = described
            .iter()
            .find(|d| d.name == dataset)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "dataset `{dataset}` is not served by its connector"
                ))
            })?;
        Ok(d.columns.iter().map(|c| c.name.clone()).collect())
    }

    /// The capability an instance of `ds`'s connector gets: the governed
    /// tables, collections or partitions with `filter`'s rows for a fetch of
    /// `fetching`; when describing (`None`), the catalog (SQL), field
    /// sampling (documents) or the schema files (uploads).
    fn grant(
        &self,
        ds: &Datasource,
        access: impl Fn(&str) -> DatasetAccess,
        fetching: Option<&str>,
    ) -> Result<Grant> {
        let describing = fetching.is_none();
        let governed = || {
            self.datasets
                .iter()
                .filter(|(_, e)| e.datasource == ds.name)
        };
        let tables: Arc<[GovernedTable]> = governed()
            .map(|(name, e)| {
                let DatasetAccess { filter, columns } = access(name);
                GovernedTable {
                    schema: e.schema.clone(),
                    name: e.table.clone(),
                    filter,
                    columns,
                }
            })
            .collect();
        Ok(match &ds.backend {
            Backend::Sql(client) => Grant::Sql(SqlGrant {
                client: client.clone(),
                tables,
                readable: if describing { client.catalog() } else { &[] },
                share: FetchShare::new(client.fetch_share()),
            }),
            Backend::Document(client) => Grant::Document(DocumentGrant {
                client: client.clone(),
                collections: tables,
                describing,
                share: FetchShare::new(client.fetch_share()),
            }),
            // Describing, every dataset has no rows: no request is admitted.
            Backend::Http(client) => Grant::Http(crate::capability::http::HttpGrant {
                client: client.clone(),
                datasets: tables,
                log: RequestLog::new(self.fingerprints.clone()),
            }),
            Backend::Files(store) => Grant::Files(match fetching {
                None => Preopens::stored(
                    store
                        .schema_dirs(&governed().map(|(_, e)| e.table.clone()).collect::<Vec<_>>()),
                ),
                Some(dataset) => {
                    let table = self
                        .datasets
                        .get(dataset)
                        .map_or(dataset, |e| e.table.as_str());
                    let DatasetAccess { filter, columns } = access(dataset);
                    store.visible_partitions(table, &filter, columns.as_deref())?
                }
            }),
        })
    }
}

/// `$XDG_CACHE_HOME/silo/compiled`, else `~/.cache/silo/compiled`.
pub fn default_cache_dir() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))?;
    Some(base.join("silo").join("compiled"))
}

fn connector_bytes(spec: &str) -> Result<Vec<u8>> {
    if let Some((_, bytes)) = BUILTIN_CONNECTORS.iter().find(|(n, _)| *n == spec) {
        return Ok(bytes.to_vec());
    }
    std::fs::read(spec).map_err(|e| Error::Config(format!("connector `{spec}`: {e}")))
}

enum Source {
    Host(Box<dyn RowSource>),
    Guest {
        instance: Instance,
        batches: ResourceAny,
    },
}

/// A running fetch: batches of verified rows, in the caller's columns.
///
/// A fetch ends at its deadline (`fetch_timeout_ms`, counted from its start,
/// idle time included): a watchdog then drops its source, which closes the
/// statements and connections it holds even if nobody asks for another batch
/// (a stalled HTTP client, an abandoned stream).
pub struct Fetch {
    source: Arc<tokio::sync::Mutex<Option<Source>>>,
    watchdog: tokio::task::JoinHandle<()>,
    deadline: tokio::time::Instant,
    timeout: std::time::Duration,
    /// Whether the fetch ended on its own (finished or failed), rather than
    /// at its deadline.
    ended: bool,
    /// HTTP datasources: the requests the connector made.
    requests: Option<RequestLog>,
    verifier: Verifier,
    columns: Vec<String>,
    filter: RowFilter,
}

impl Drop for Fetch {
    fn drop(&mut self) {
        self.watchdog.abort();
    }
}

impl Fetch {
    fn new(
        source: Source,
        verifier: Verifier,
        columns: Vec<String>,
        filter: RowFilter,
        deadline: tokio::time::Instant,
        timeout: std::time::Duration,
    ) -> Fetch {
        let source = Arc::new(tokio::sync::Mutex::new(Some(source)));
        let held = Arc::downgrade(&source);
        let watchdog = tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            if let Some(source) = held.upgrade() {
                let expired = source.lock().await.take();
                drop(expired);
            }
        });
        Fetch {
            source,
            watchdog,
            deadline,
            timeout,
            ended: false,
            requests: None,
            verifier,
            columns,
            filter,
        }
    }

    /// The columns of every row.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The filter the host enforced and verified.
    pub fn filter(&self) -> &RowFilter {
        &self.filter
    }

    /// Rows released so far.
    pub fn rows(&self) -> u64 {
        self.verifier.rows()
    }

    /// Bytes released so far.
    pub fn bytes(&self) -> u64 {
        self.verifier.bytes()
    }

    /// The HTTP requests the connector made so far (empty for other kinds),
    /// as the audit records them.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.requests
            .as_ref()
            .map(RequestLog::records)
            .unwrap_or_default()
    }

    /// A handle on the requests, for a record written when the fetch ends.
    pub fn request_log(&self) -> Option<RequestLog> {
        self.requests.clone()
    }

    /// The next verified batch, or `None` at the end. After an error the
    /// fetch is over: nothing more is released.
    pub async fn next_batch(&mut self) -> Result<Option<Batch>> {
        let source = self.source.clone();
        let mut source = source.lock().await;
        let expired = Error::Limit(format!(
            "the fetch exceeded its time limit of {} ms",
            self.timeout.as_millis()
        ));
        if source.is_none() {
            // Finished, failed, or ended by the watchdog.
            return if !self.ended && tokio::time::Instant::now() >= self.deadline {
                Err(expired)
            } else {
                Ok(None)
            };
        }
        let pulled = pull(&mut self.verifier, &mut source);
        let result = match tokio::time::timeout_at(self.deadline, pulled).await {
            Ok(result) => result,
            Err(_) => Err(expired),
        };
        if !matches!(result, Ok(Some(_))) {
            *source = None;
            self.ended = true;
        }
        result
    }

    /// All remaining rows, or the first error (and then no rows at all).
    pub async fn collect(mut self) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        while let Some(batch) = self.next_batch().await? {
            rows.extend(batch);
        }
        Ok(rows)
    }
}

/// One batch from `source`, verified.
async fn pull(verifier: &mut Verifier, source: &mut Option<Source>) -> Result<Option<Batch>> {
    if verifier.satisfied() {
        return Ok(None);
    }
    match source {
        None => Ok(None),
        Some(Source::Host(source)) => {
            let Some(mut batch) = source.next_batch(BATCH_ROWS as usize).await? else {
                return Ok(None);
            };
            verifier.check(&mut batch)?;
            Ok(Some(batch))
        }
        Some(Source::Guest { instance, batches }) => {
            let handle = *batches;
            instance
                .call(async |c, store| {
                    c.silo_connector_connector()
                        .batches()
                        .call_next(store, handle)
                        .await
                })
                .await?
                .map_err(Error::from_wit)?
                .map(|rows| verifier.admit(rows, Value::from))
                .transpose()
        }
    }
}

/// Profiles every row `fetch` releases (verified rows only), then drops
/// them: memory stays that of the sketches.
pub async fn profile(
    silo: &Silo,
    mut fetch: Fetch,
    dataset: &str,
    policy: &PrivacyPolicy,
) -> Result<silo_metadata::Profile> {
    let described = silo.dataset_columns(dataset).await?;
    let columns: Vec<(String, silo_types::ColumnType)> = fetch
        .columns()
        .iter()
        .map(|name| {
            let kind = described
                .iter()
                .find(|c| &c.name == name)
                .map_or(silo_types::ColumnType::Text, |c| c.kind);
            (name.clone(), kind)
        })
        .collect();
    let mut profiler = silo_metadata::Profiler::new(&columns, policy);
    while let Some(batch) = fetch.next_batch().await? {
        profiler.add(&batch);
    }
    Ok(profiler.finish(dataset, fetch.filter()))
}
