//! Prometheus text exposition at `/metrics`: requests by route and status,
//! fetches by outcome, rows and bytes released. Counters only: no label ever
//! carries an id, a user or a value.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    fetches: Mutex<BTreeMap<String, u64>>,
    rows: AtomicU64,
    bytes: AtomicU64,
}

impl Metrics {
    /// Counts one finished fetch.
    pub fn fetch(&self, outcome: &str, rows: u64, bytes: u64) {
        *self
            .fetches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(outcome.to_owned())
            .or_default() += 1;
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP silo_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE silo_http_requests_total counter\n");
        for ((method, route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "silo_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP silo_fetches_total Embed fetches by outcome.\n");
        out.push_str("# TYPE silo_fetches_total counter\n");
        for (outcome, n) in self
            .fetches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "silo_fetches_total{{outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP silo_fetch_rows_total Rows released to embed users.\n\
             # TYPE silo_fetch_rows_total counter\nsilo_fetch_rows_total {}\n\
             # HELP silo_fetch_bytes_total Bytes released to embed users.\n\
             # TYPE silo_fetch_bytes_total counter\nsilo_fetch_bytes_total {}",
            self.rows.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed)
        );
        out
    }
}

/// Middleware: counts each request under its route template (never the
/// concrete path, which holds ids).
pub async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    *s.metrics
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((method, route, response.status().as_u16()))
        .or_default() += 1;
    response
}

/// `GET /metrics`.
pub async fn render(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}
