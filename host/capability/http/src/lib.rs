//! The HTTP capability, in the same shape as the databases: typed config, a
//! client that holds the credential and the caps, and the generated-trait
//! impl. Every request goes through [`silo_policy::http`] first.
#![deny(missing_docs)]
mod client;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use client::{HttpClient, HttpSettings};

use silo_bindings::silo::connector::{http, types};
use silo_core::error::Error;
use silo_policy::sql::GovernedTable;

/// Largest response body by default: a page of JSON, far below guest memory.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 4 << 20;
/// Requests one fetch may make by default (pages included).
pub const DEFAULT_MAX_REQUESTS: usize = 32;

/// `[datasources.<name>.http]` in `silo.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `http(s)://host[:port]`: every request goes there and nowhere else.
    pub base_url: String,
    /// Path templates a connector may GET (and paths below them), each
    /// mapped to the governed dataset whose row filter binds requests under
    /// it. A `{column}` segment binds that filter column, as `bind_params`
    /// does for a query parameter: `"/v2/orgs/{org}/tickets" = "tickets"`.
    pub paths: BTreeMap<String, String>,
    /// Query parameters the host binds to filter columns (parameter →
    /// column): a request must carry them, with values the filter pins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bind_params: BTreeMap<String, String>,
    /// Header the host puts the API token in.
    #[serde(default = "default_token_header")]
    pub token_header: String,
    /// Text before the token in that header.
    #[serde(default = "default_token_prefix")]
    pub token_prefix: String,
    /// Environment variable holding the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// File holding the token (first line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Largest response body, in bytes; a larger one is cut with an error.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Requests per fetch.
    #[serde(default = "default_max_requests")]
    pub max_requests: usize,
    /// Non-secret settings for the connector (`http.settings`), as JSON.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub settings: serde_json::Value,
    /// Operator only (refused over the API): let the base URL's name
    /// resolve to a loopback, private or link-local address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_private_network: bool,
}

impl HttpConfig {
    /// Why some of its paths can never be bound to one user's rows (see
    /// [`silo_policy::http::Rules::unbindable`]), or why its paths are bad.
    pub fn warnings(&self) -> Vec<String> {
        match silo_policy::http::Rules::new(
            self.paths.clone().into_iter().collect(),
            self.bind_params.clone().into_iter().collect(),
        ) {
            Ok(rules) => rules.unbindable(),
            Err(e) => vec![e.0],
        }
    }
}

fn default_token_header() -> String {
    "authorization".into()
}

fn default_token_prefix() -> String {
    "Bearer ".into()
}

fn default_max_response_bytes() -> u64 {
    DEFAULT_MAX_RESPONSE_BYTES
}

fn default_max_requests() -> usize {
    DEFAULT_MAX_REQUESTS
}

/// What a fetch may do over HTTP: the client and the governed datasets with
/// this user's filters (all `NoRows` while describing).
#[derive(Clone)]
pub struct HttpGrant {
    /// The datasource's client.
    pub client: Arc<HttpClient>,
    /// Governed datasets with this user's filters.
    pub datasets: Arc<[GovernedTable]>,
    /// The requests this fetch made, for its audit record.
    pub log: RequestLog,
}

/// One request a connector asked for, as the audit records it: the template
/// it matched and a fingerprint of each value it bound (never the values),
/// and the answer's status, or why it was not sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// The path template (`None`: refused before any matched).
    pub template: Option<String>,
    /// Each bound filter column and a fingerprint of its value.
    pub bound: Vec<(String, String)>,
    /// The HTTP status, or `refused` / `failed`.
    pub status: String,
}

/// The requests of one fetch, shared by its instance and the fetch; bound
/// values kept as keyed fingerprints only.
#[derive(Debug, Clone, Default)]
pub struct RequestLog(
    Arc<Mutex<Vec<RequestRecord>>>,
    silo_core::fingerprint::FingerprintKey,
);

impl RequestLog {
    /// An empty log whose fingerprints are keyed with `key`.
    pub fn new(key: silo_core::fingerprint::FingerprintKey) -> RequestLog {
        RequestLog(Arc::default(), key)
    }

    /// A value's fingerprint for the audit: the first 16 hex digits of its
    /// keyed hash, enough to tell requests apart, not to test a guess.
    fn fingerprint(&self, value: &str) -> String {
        let mut digest = self.1.of(value.as_bytes());
        digest.truncate(16);
        digest
    }

    fn push(&self, record: RequestRecord) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
    }

    /// What was requested so far.
    pub fn records(&self) -> Vec<RequestRecord> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl silo_runtime::Grant for HttpGrant {}

silo_runtime::capability!(HttpCapability, Http, http, HttpHost);

impl http::Host for HttpHost<'_> {
    async fn settings(&mut self) -> wasmtime::Result<String> {
        Ok(match self.0.grant::<HttpGrant>() {
            Some(g) => g.client.settings_json().to_owned(),
            _ => "{}".to_owned(),
        })
    }

    async fn get(
        &mut self,
        path: String,
        query: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<http::Response, types::Error>> {
        let result = match self.0.grant::<HttpGrant>().cloned() {
            Some(grant) => {
                if self.0.charge_query(grant.client.max_requests()) {
                    let sent = grant.client.get(&path, &query, &grant.datasets).await;
                    grant.log.push(match &sent {
                        Ok((admitted, answer)) => RequestRecord {
                            template: Some(admitted.template.clone()),
                            bound: admitted
                                .bound
                                .iter()
                                .map(|(c, v)| (c.clone(), grant.log.fingerprint(v)))
                                .collect(),
                            status: answer.status.to_string(),
                        },
                        Err(e) => RequestRecord {
                            template: None,
                            bound: Vec::new(),
                            status: if matches!(e, Error::Policy(_)) {
                                "refused".into()
                            } else {
                                "failed".into()
                            },
                        },
                    });
                    sent.map(|(_, answer)| answer)
                } else {
                    Err(Error::Limit(format!(
                        "at most {} HTTP requests per fetch",
                        grant.client.max_requests()
                    )))
                }
            }
            _ => Err(Error::Policy(
                "this connector has no HTTP capability".into(),
            )),
        };
        Ok(self.0.report(result).map(|r| http::Response {
            status: r.status,
            content_type: r.content_type,
            body: r.body,
        }))
    }
}
