//! The interfaces every connector may import (types, row streams, log) and
//! the checks every capability's host functions share: the per-instance call
//! budget, handing a row source to the guest, and wording a refusal.
use silo_bindings::WitErrors;
use silo_bindings::rows::{HostRowStream, RowSource};
use silo_bindings::silo::connector::{log, streams, types};
use silo_core::error::{Error, Result};
use silo_core::limits::BATCH_ROWS;
use wasmtime::component::{HasSelf, Linker, Resource};

use crate::State;

/// Links the common interfaces.
pub(crate) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    types::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    streams::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    log::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
}

/// Statements one fetch may send, refused ones included. An open stream holds
/// a pooled connection and every refusal is logged, so this bounds both what
/// one fetch can take from the pool and how much log it can cause; real
/// connectors send one to three.
const MAX_QUERIES: usize = 16;
/// Longest statement a connector may send.
const MAX_STATEMENT_BYTES: usize = 64 << 10;
/// Most bind values a connector may send with one statement.
const MAX_PARAMS: usize = 1024;
/// Longest log line kept from a connector.
const MAX_LOG_LINE: usize = 1024;

impl State {
    /// Counts one capability call against this instance's budget and checks
    /// the size of what the connector sent, before any policy work.
    pub fn admit(&mut self, text_bytes: usize, values: usize) -> Result<()> {
        if !self.charge_query(MAX_QUERIES) {
            return Err(Error::Limit(format!(
                "at most {MAX_QUERIES} statements per fetch"
            )));
        }
        if text_bytes > MAX_STATEMENT_BYTES || values > MAX_PARAMS {
            return Err(Error::Limit(format!(
                "statements are limited to {MAX_STATEMENT_BYTES} bytes and {MAX_PARAMS} parameters"
            )));
        }
        Ok(())
    }

    /// Hands a row source to the guest as a `row-stream`, or reports why
    /// there is none.
    pub fn push_stream(
        &mut self,
        result: Result<Box<dyn RowSource>>,
    ) -> wasmtime::Result<Result<Resource<HostRowStream>, types::Error>> {
        match self.report(result) {
            Ok(source) => Ok(Ok(self.table().push(HostRowStream { source })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Logs a refused or failed call and words it for the connector.
    pub fn report<T>(&self, result: Result<T>) -> Result<T, types::Error> {
        result.map_err(|e| {
            tracing::info!(
                connector = self.connector(),
                fault = e.fault(),
                "call refused or failed: {e}"
            );
            e.to_wit()
        })
    }
}

impl types::Host for State {}
impl streams::Host for State {}

impl streams::HostRowStream for State {
    async fn columns(
        &mut self,
        stream: Resource<HostRowStream>,
    ) -> wasmtime::Result<Vec<types::Column>> {
        let s = self.table().get(&stream)?;
        Ok(s.source.columns().iter().cloned().map(Into::into).collect())
    }

    async fn next_batch(
        &mut self,
        stream: Resource<HostRowStream>,
        max_rows: u32,
    ) -> wasmtime::Result<Result<Option<Vec<types::Row>>, types::Error>> {
        let s = self.table().get_mut(&stream)?;
        let max = max_rows.clamp(1, BATCH_ROWS * 4) as usize;
        Ok(match s.source.next_batch(max).await {
            Ok(batch) => Ok(batch.map(|rows| rows.into_rows_with(Into::into))),
            Err(e) => Err(e.to_wit()),
        })
    }

    async fn drop(&mut self, stream: Resource<HostRowStream>) -> wasmtime::Result<()> {
        self.table().delete(stream)?;
        Ok(())
    }
}

impl log::Host for State {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let mut line = message;
        if line.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        if !self.charge_log(line.len()) {
            return Ok(());
        }
        let connector = self.connector().to_owned();
        match level {
            log::Level::Debug => tracing::debug!(connector, "{line}"),
            log::Level::Info => tracing::info!(connector, "{line}"),
            log::Level::Warn => tracing::warn!(connector, "{line}"),
            log::Level::Error => tracing::error!(connector, "{line}"),
        }
        Ok(())
    }
}
