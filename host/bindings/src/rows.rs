//! Rows from a driver: the [`RowSource`] every capability's client yields,
//! the per-fetch [`FetchShare`] of open statements, and the `row-stream`
//! resource a guest holds a handle to. Below the bindings and the runtime:
//! it knows neither.
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use silo_core::batch::Batch;
use silo_core::error::{Error, Result};
use silo_types::Column;

/// A host-side source of rows: a database cursor, or anything else that
/// yields rows without the guest in the loop.
#[async_trait]
pub trait RowSource: Send {
    /// The columns every row carries, in order.
    fn columns(&self) -> &[Column];
    /// Up to `max` rows, each as wide as [`RowSource::columns`], or `None`
    /// when finished.
    async fn next_batch(&mut self, max: usize) -> Result<Option<Batch>>;
}

/// Statements one fetch holds open at once against its datasource, bounded
/// by the datasource's `fetch_connections` so other fetches keep the rest of
/// the pool. A statement's permit lives as long as its row stream.
#[derive(Clone)]
pub struct FetchShare(Arc<tokio::sync::Semaphore>, usize);

impl FetchShare {
    /// A share of `n` open statements.
    pub fn new(n: usize) -> FetchShare {
        FetchShare(Arc::new(tokio::sync::Semaphore::new(n)), n)
    }

    /// A permit for one more open statement, or a limit error.
    pub fn take(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().map_err(|_| {
            Error::Limit(format!(
                "a fetch may hold {} statements open at once against this datasource; \
                 read or drop one first",
                self.1
            ))
        })
    }
}

/// A row source holding one of its fetch's [`FetchShare`] permits.
pub struct Permitted {
    source: Box<dyn RowSource>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Permitted {
    /// Runs `open` under a permit of `share`, and keeps the permit with the
    /// source it opens.
    pub async fn open<F>(share: &FetchShare, open: F) -> Result<Box<dyn RowSource>>
    where
        F: Future<Output = Result<Box<dyn RowSource>>>,
    {
        let permit = share.take()?;
        let source = open.await?;
        Ok(Box::new(Permitted {
            source,
            _permit: permit,
        }))
    }
}

#[async_trait]
impl RowSource for Permitted {
    fn columns(&self) -> &[Column] {
        self.source.columns()
    }

    async fn next_batch(&mut self, max: usize) -> Result<Option<Batch>> {
        self.source.next_batch(max).await
    }
}

/// The `row-stream` resource: a host row source the guest holds a handle to.
pub struct HostRowStream {
    /// Where the rows come from.
    pub source: Box<dyn RowSource>,
}
