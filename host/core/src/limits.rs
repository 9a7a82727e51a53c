//! Per-fetch limits. Every default denies more than a dashboard query needs, and
//! every one is configurable in `silo.toml` under `[limits]`.
use std::time::Duration;

use serde::Deserialize;

/// Guest linear memory. Forwarded rows never enter guest memory, so this only
/// has to hold a connector's own working set and the batches it builds.
pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;
/// Wall-clock budget for each call into a connector and for its queries.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows one fetch may return: far above what an analytics view renders, far
/// below what would exhaust the host.
pub const DEFAULT_MAX_ROWS: u64 = 1_000_000;
/// Bytes one fetch may return (cell payloads, as counted by the host).
pub const DEFAULT_MAX_BYTES: u64 = 512 << 20;
/// Datasource-side statement timeout.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-fetch deadline: from the start of a fetch to its last row, idle time
/// included, after which its statements are closed.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest row the host decodes (all its cells; so also the largest cell). A
/// larger row is refused as it arrives on the wire, before it is buffered.
pub const DEFAULT_MAX_ROW_BYTES: u64 = 16 << 20;
/// Cell bytes a row source gathers into one batch before handing it over, so
/// a batch stays small however wide its rows are.
pub const BATCH_BYTES: u64 = 4 << 20;
/// Rows per batch moved from a stream to the caller: amortises per-batch cost
/// while keeping a batch a few hundred KiB.
pub const BATCH_ROWS: u32 = 1024;
/// Connector instances live at once on a host (one per fetch or describe in
/// flight); more wait briefly, then are told the host is busy.
pub const DEFAULT_INSTANCES: u32 = 256;
/// Most instances an operator may configure (each reserves address space).
pub const MAX_INSTANCES: u32 = 4096;
/// Log bytes a connector may emit per fetch before further lines are dropped.
pub const LOG_BYTES: usize = 16 << 10;

/// The limits in force for a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Guest memory, in bytes.
    pub memory_bytes: usize,
    /// Wall clock per connector call, in milliseconds.
    #[serde(with = "millis", rename = "timeout_ms")]
    pub timeout: Duration,
    /// Rows per fetch.
    pub max_rows: u64,
    /// Bytes per fetch.
    pub max_bytes: u64,
    /// Datasource statement timeout, in milliseconds.
    #[serde(with = "millis", rename = "statement_timeout_ms")]
    pub statement_timeout: Duration,
    /// Whole fetch, idle time included, in milliseconds.
    #[serde(with = "millis", rename = "fetch_timeout_ms")]
    pub fetch_timeout: Duration,
    /// Largest row (and so cell) the host decodes, in bytes.
    pub max_row_bytes: u64,
    /// Connector instances live at once (1 to [`MAX_INSTANCES`]).
    pub instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            timeout: DEFAULT_TIMEOUT,
            max_rows: DEFAULT_MAX_ROWS,
            max_bytes: DEFAULT_MAX_BYTES,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            max_row_bytes: DEFAULT_MAX_ROW_BYTES,
            instances: DEFAULT_INSTANCES,
        }
    }
}

impl std::fmt::Display for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory {} MiB, {} ms per call, {} rows, {} MiB, statement timeout {} ms, \
             fetch timeout {} ms, rows up to {} MiB",
            self.memory_bytes >> 20,
            self.timeout.as_millis(),
            self.max_rows,
            self.max_bytes >> 20,
            self.statement_timeout.as_millis(),
            self.fetch_timeout.as_millis(),
            self.max_row_bytes >> 20
        )
    }
}

mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
