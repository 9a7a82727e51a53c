//! The embed path: what a session may list, describe and fetch. Resolves a
//! session's grants ([`Access`]) into a [`Plan`], runs it, and audits it
//! ([`PendingAudit`]) when the fetch ends.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use silo_types::RowFilter;
use utoipa::ToSchema;

use silo_core::error::{Error, Result};
use silo_engine::silo::{DatasetAccess, Fetch, FetchSpec, Silo};
use silo_policy::rule::{Attributes, Policy};

use crate::audit::{self, AuditEvent};
use crate::datasets::ColumnInfo;
use crate::model::{Dataset, GroupGrant, Permission};
use crate::store::Store;
use crate::{ControlPlane, EmbedPrincipal, Principal, append_logged, attributes, error_code};

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
    pub(crate) event: Option<AuditEvent>,
    started: Instant,
    /// HTTP datasources: the requests made, listed in the record's detail.
    requests: Option<silo_engine::capability::http::RequestLog>,
    /// Rows and bytes handed to the client so far: what the record of a
    /// fetch cut short (the client left, the host shut down) says.
    released: (u64, u64),
    writing: Writing,
    /// Counts this record as to come until its first append: the audit
    /// writer holds a commit of others' records for it.
    expecting: Option<audit::Expecting>,
}

impl PendingAudit {
    /// Puts the fetch on record (`fetch.start`) before a streamed response
    /// releases its first byte. A fetch that cannot be put on record
    /// releases nothing: the error is `busy`, worth a retry.
    pub async fn begin(&mut self) -> Result<()> {
        self.expecting = None;
        let Some(event) = &self.event else {
            return Ok(());
        };
        let begun = AuditEvent {
            action: "fetch.start".into(),
            outcome: "started".into(),
            ..event.clone()
        };
        durable(&self.store, &begun).await
    }

    /// Writes the one record of a fetch whose whole response is known
    /// before any of it is released (a JSON body): its totals and outcome,
    /// durable before the caller releases the response, else an error and
    /// nothing is released.
    pub async fn commit(mut self, rows: u64, bytes: u64, outcome: &str) -> Result<()> {
        match self.finish(rows, bytes, outcome) {
            Some(e) => durable(&self.store, &e).await,
            None => Ok(()),
        }
    }

    /// Writes the record with the fetch's totals and outcome, after its
    /// rows were released (or none will be): a failure is only logged.
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
        self.expecting = None;
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

/// Appends `e`, durable on return; a failure is logged in full and reported
/// without the store's details.
async fn durable(store: &Store, e: &AuditEvent) -> Result<()> {
    match audit::append(store, e).await {
        Ok(_) => Ok(()),
        Err(err) => {
            tracing::error!(error = %err, action = %e.action, "writing an audit record failed");
            Err(Error::Busy(
                "the audit log cannot be written; nothing was released".into(),
            ))
        }
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

impl ControlPlane {
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
        // A record to come from the start, so that concurrent fetches'
        // records wait for this one to share a commit (audit::COMMIT_DELAY).
        let mut audit = self.pending_audit(e.event("fetch", dataset), Instant::now());
        let result = self.start_fetch(e, dataset, columns, limit).await;
        match result {
            Ok(fetch) => {
                // The caller puts the fetch on record before it releases a
                // byte: `begin` for a stream, `commit` for a whole body.
                if let Some(ev) = audit.event.as_mut() {
                    ev.filter_fingerprint =
                        Some(audit::fingerprint(&self.fingerprints, fetch.filter()));
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
    pub(crate) fn pending_audit(&self, event: AuditEvent, started: Instant) -> PendingAudit {
        PendingAudit {
            store: self.store.clone(),
            event: Some(event),
            started,
            requests: None,
            released: (0, 0),
            writing: self.writing.clone(),
            expecting: self.store.audit_queue().expect(),
        }
    }

    /// Waits (up to `limit`) until the audit records of fetches cut short
    /// are written: before a shutting-down host exits.
    pub async fn audits_written(&self, limit: Duration) {
        self.writing.idle(limit).await;
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

    /// A dataset of the session's org, cached per org version.
    async fn embed_dataset(&self, e: &EmbedPrincipal, id: &str) -> Result<Arc<Dataset>> {
        self.caches
            .datasets
            .get_or_load(&e.org, id, e.version, async {
                Ok(Arc::new(self.store.dataset(&e.org, id).await?))
            })
            .await
    }

    /// Resolves what a fetch of `dataset` by `e` may read: the dataset,
    /// its columns (default: those every granting group allows, so that
    /// every group's rows apply) and the groups' filters.
    pub(crate) async fn plan(
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
}

/// What the host enforces when a session reads a dataset, for the org's
/// backend and the operator console: the policy as resolved, never rows.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Enforced {
    /// The dataset id.
    pub dataset: String,
    /// The row filter every fetch runs under, with the user's values bound,
    /// in the `column op value` notation of `silo.toml`.
    pub filter: String,
    /// The columns a fetch without `columns` returns.
    pub columns: Vec<String>,
    /// The dataset's columns this session may not read.
    pub removed: Vec<String>,
    /// The limits every fetch runs under.
    pub limits: FetchLimits,
}

/// The limits a fetch runs under (the host's, the same for every fetch).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct FetchLimits {
    /// Rows per fetch.
    pub max_rows: u64,
    /// Bytes per fetch.
    pub max_bytes: u64,
    /// Largest row the host decodes, in bytes.
    pub max_row_bytes: u64,
    /// Wall clock per connector call, in milliseconds.
    pub timeout_ms: u64,
    /// The datasource's statement timeout, in milliseconds.
    pub statement_timeout_ms: u64,
    /// The whole fetch, idle time included, in milliseconds.
    pub fetch_timeout_ms: u64,
    /// Connector memory, in bytes.
    pub memory_bytes: u64,
}

impl From<&silo_core::limits::Limits> for FetchLimits {
    fn from(l: &silo_core::limits::Limits) -> FetchLimits {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        FetchLimits {
            max_rows: l.max_rows,
            max_bytes: l.max_bytes,
            max_row_bytes: l.max_row_bytes,
            timeout_ms: ms(l.timeout),
            statement_timeout_ms: ms(l.statement_timeout),
            fetch_timeout_ms: ms(l.fetch_timeout),
            memory_bytes: l.memory_bytes as u64,
        }
    }
}

impl ControlPlane {
    /// What a fetch of `dataset` by session `session` of the caller's org
    /// would enforce. Another org's session is not found.
    pub async fn enforced(&self, p: &Principal, session: &str, dataset: &str) -> Result<Enforced> {
        let org = Self::org_of(p)?.to_owned();
        let version = self.versions.read(&self.store, &org).await?;
        let session = self.store.session(&org, session).await?;
        let user = self.store.embed_user(&org, &session.embed_user_id).await?;
        let e = EmbedPrincipal {
            org,
            session,
            user,
            version,
        };
        let plan = self.plan(&e, dataset, None).await?;
        let filter = silo_core::display::filter_text(&plan.filter()?);
        let removed = plan
            .silo
            .dataset_columns(&plan.dataset.name)
            .await?
            .into_iter()
            .map(|c| c.name)
            .filter(|c| !plan.columns.contains(c))
            .collect();
        Ok(Enforced {
            dataset: plan.dataset.id.clone(),
            filter,
            columns: plan.columns.clone(),
            removed,
            limits: self.limits().into(),
        })
    }
}

/// A fetch resolved but not started.
pub(crate) struct Plan {
    pub(crate) silo: Arc<Silo>,
    pub(crate) revision: i64,
    pub(crate) dataset: Arc<Dataset>,
    pub(crate) columns: Vec<String>,
    access: Access,
    /// Dataset ids of the datasource by name (for the filters of joins).
    names: Arc<HashMap<String, String>>,
}

impl Plan {
    /// The filter of the dataset itself.
    pub(crate) fn filter(&self) -> Result<RowFilter> {
        Ok(self.access.dataset(&self.dataset.id, &self.columns)?.filter)
    }

    pub(crate) async fn run(&self, limit: Option<u64>) -> Result<Fetch> {
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
