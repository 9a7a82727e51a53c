//! Rows a connector builds itself, streamed to the host batch by batch.
use crate::{Error, GuestBatches, Row};
use std::cell::RefCell;

type NextBatch = Box<dyn FnMut() -> Result<Option<Vec<Row>>, Error>>;

/// A pull-based batch source: the host calls `next` until it returns `None`.
///
/// Use it as the connector's `type Batches` and return
/// `FetchOutput::Produced(Batches::new(Producer::new(...)))`.
pub struct Producer(RefCell<NextBatch>);

impl Producer {
    /// Wraps a closure returning the next batch, or `None` when done.
    pub fn new(next: impl FnMut() -> Result<Option<Vec<Row>>, Error> + 'static) -> Self {
        Producer(RefCell::new(Box::new(next)))
    }

    /// Streams rows already in memory, `batch_size` at a time.
    pub fn from_rows(rows: Vec<Row>, batch_size: usize) -> Self {
        let mut rows = rows.into_iter();
        let size = batch_size.max(1);
        Producer::new(move || {
            let batch: Vec<Row> = rows.by_ref().take(size).collect();
            Ok((!batch.is_empty()).then_some(batch))
        })
    }
}

impl GuestBatches for Producer {
    fn next(&self) -> Result<Option<Vec<Row>>, Error> {
        // The component model never re-enters a resource method, so the
        // borrow cannot be held twice; fail politely rather than trap if it were.
        match self.0.try_borrow_mut() {
            Ok(mut next) => next(),
            Err(_) => Err(Error::Connector("batches.next re-entered".into())),
        }
    }
}
