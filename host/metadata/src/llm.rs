//! Summaries of a metadata payload: an OpenAI-compatible chat completions
//! endpoint (OpenAI, Azure OpenAI, vLLM, llama.cpp server, Ollama's `/v1`),
//! or, with none configured, a built-in deterministic summarizer so the
//! embedded default works offline. Only the [`Payload`] is ever sent.
use std::fmt::Write as _;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use utoipa::ToSchema;

use super::Payload;
use silo_core::error::{Error, Result};

/// The instructions sent with every payload.
pub const SYSTEM_PROMPT: &str = "You describe datasets for business users. You receive only \
metadata about one dataset as one user sees it (a JSON document, schema silo.metadata.v1): \
row count, the shape of the row filter, and per-column statistics. Write a short plain-language \
summary (at most 6 sentences): what the data seems to be about, its size, notable ranges, \
common categories and data-quality issues such as many nulls. Do not invent values that are \
not in the metadata.";

/// Attempts after the first when the endpoint is down, slow or overloaded.
pub const DEFAULT_RETRIES: u32 = 2;
/// Per-attempt deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// First backoff; doubled per attempt.
const BACKOFF: Duration = Duration::from_millis(200);
/// Largest response body accepted.
const MAX_RESPONSE: usize = 1 << 20;

/// Where summaries come from.
#[derive(Clone)]
pub struct LlmConfig {
    /// `https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`, …
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// Bearer token, if the endpoint needs one. Never logged.
    pub api_key: Option<SecretString>,
    /// Per-attempt deadline.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// A summary and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub struct Summary {
    /// The text.
    pub summary: String,
    /// `builtin` or `llm:<model>`.
    pub source: String,
}

/// Summarizes payloads.
#[derive(Debug)]
pub enum Summarizer {
    /// The deterministic built-in.
    Builtin,
    /// An OpenAI-compatible endpoint.
    Llm(LlmClient),
}

impl Summarizer {
    /// The built-in without a config, else a client for it.
    pub fn new(config: Option<LlmConfig>) -> Result<Summarizer> {
        Ok(match config {
            None => Summarizer::Builtin,
            Some(c) => Summarizer::Llm(LlmClient::new(c)?),
        })
    }

    /// Summarizes `payload`.
    pub async fn summarize(&self, payload: &Payload) -> Result<Summary> {
        match self {
            Summarizer::Builtin => Ok(Summary {
                summary: builtin(payload),
                source: "builtin".into(),
            }),
            Summarizer::Llm(c) => Ok(Summary {
                summary: c.complete(payload).await?,
                source: format!("llm:{}", c.config.model),
            }),
        }
    }
}

/// A chat completions client.
#[derive(Debug)]
pub struct LlmClient {
    config: LlmConfig,
    http: reqwest::Client,
}

impl LlmClient {
    /// A client for `config`.
    pub fn new(config: LlmConfig) -> Result<LlmClient> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| Error::Internal(format!("LLM client: {e}")))?;
        Ok(LlmClient { config, http })
    }

    /// The model asked.
    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// The request body for `payload`.
    pub fn request(&self, payload: &Payload) -> Result<serde_json::Value> {
        let metadata = serde_json::to_string_pretty(payload)
            .map_err(|e| Error::Internal(format!("encoding metadata: {e}")))?;
        Ok(serde_json::json!({
            "model": self.config.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": format!("Metadata:\n```json\n{metadata}\n```")},
            ],
        }))
    }

    async fn complete(&self, payload: &Payload) -> Result<String> {
        let body = self.request(payload)?;
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let mut attempt = 0;
        loop {
            match self.attempt(&url, &body).await {
                Ok(text) => return Ok(text),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Retry(e)) if attempt >= self.config.retries => return Err(e),
                Err(Attempt::Retry(e)) => {
                    tracing::debug!(error = %e, attempt, "LLM call failed; retrying");
                    tokio::time::sleep(BACKOFF * 2u32.pow(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(&self, url: &str, body: &serde_json::Value) -> Result<String, Attempt> {
        let unavailable = |why: &str| {
            Attempt::Retry(Error::Datasource(format!(
                "the LLM endpoint is unavailable ({why})"
            )))
        };
        let mut req = self.http.post(url).json(body);
        if let Some(key) = &self.config.api_key {
            req = req.bearer_auth(key.expose_secret());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(unavailable("timed out")),
            Err(e) => {
                tracing::warn!(error = %e, "LLM endpoint");
                return Err(unavailable("cannot connect"));
            }
        };
        let status = resp.status();
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(unavailable(&format!("HTTP {}", status.as_u16())));
        }
        if !status.is_success() {
            return Err(Attempt::Final(Error::Datasource(format!(
                "the LLM endpoint refused the request (HTTP {})",
                status.as_u16()
            ))));
        }
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => return Err(unavailable("timed out")),
            Err(_) => return Err(unavailable("the response broke off")),
        };
        let garbage = || {
            Attempt::Final(Error::Datasource(
                "the LLM endpoint returned an unusable response".into(),
            ))
        };
        if bytes.len() > MAX_RESPONSE {
            return Err(garbage());
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| garbage())?;
        v.pointer("/choices/0/message/content")
            .and_then(|c| c.as_str())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(garbage)
    }
}

enum Attempt {
    Retry(Error),
    Final(Error),
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// The built-in summary: the payload in sentences, deterministic.
pub fn builtin(p: &Payload) -> String {
    let mut out = String::new();
    let filtered = match p.filter.kind.as_str() {
        "all_rows" => "all rows".to_owned(),
        "no_rows" => "no rows".to_owned(),
        _ => {
            let mut cols: Vec<&str> = p
                .filter
                .conjunctions
                .iter()
                .flatten()
                .filter_map(|t| t.split_whitespace().next())
                .collect();
            cols.sort_unstable();
            cols.dedup();
            format!("rows filtered on {}", cols.join(", "))
        }
    };
    let _ = writeln!(
        out,
        "Dataset `{}`: {} rows visible to this session ({filtered}), {} columns described.",
        p.dataset,
        thousands(p.rows),
        p.columns.len()
    );
    for c in &p.columns {
        let _ = write!(out, "- {} ({})", c.name, c.kind);
        let mut parts = Vec::new();
        if c.nulls > 0 && c.count > 0 {
            parts.push(format!(
                "{}% empty",
                ((c.nulls as f64 / c.count as f64) * 100.0).round()
            ));
        }
        if let Some(n) = &c.numeric {
            let mid = n
                .quantiles
                .get("p50")
                .map(|m| format!(", typically {}", num(*m)));
            parts.push(format!(
                "from about {} to {}{}, mean {}",
                num(n.min),
                num(n.max),
                mid.unwrap_or_default(),
                num(n.mean)
            ));
        }
        if let Some(r) = &c.range {
            parts.push(format!("from {} to {}", r.min, r.max));
        }
        if let Some(t) = c.true_fraction {
            parts.push(format!("{}% true", (t * 100.0).round()));
        }
        if c.numeric.is_none() && c.range.is_none() {
            parts.push(match c.distinct_estimate {
                1 => "a single value".to_owned(),
                n => format!("about {} distinct values", thousands(n)),
            });
        }
        if let Some(l) = &c.length
            && c.numeric.is_none()
        {
            parts.push(if l.min == l.max {
                format!("{} characters", l.min)
            } else {
                format!("{}–{} characters", l.min, l.max)
            });
        }
        if let Some(cats) = c.categories.as_ref().filter(|c| !c.is_empty()) {
            let top: Vec<String> = cats
                .iter()
                .take(5)
                .map(|x| format!("{} ({})", x.value, thousands(x.count)))
                .collect();
            parts.push(format!("most common: {}", top.join(", ")));
        }
        let _ = writeln!(out, ": {}.", parts.join("; "));
    }
    if p.hidden_columns > 0 {
        let _ = writeln!(out, "{} column(s) hidden by policy.", p.hidden_columns);
    }
    out.trim_end().to_owned()
}
