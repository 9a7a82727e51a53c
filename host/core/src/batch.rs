//! A batch of rows stored flat: one vector of cells, row after row.
//!
//! Rows stream from a database cursor to the caller a batch at a time. A
//! vector per row would cost an allocation and a free for every row, which
//! is most of the host's own per-row work on a fast fetch; here a batch
//! costs one, and the row filter, byte count and projection walk contiguous
//! memory.
use silo_types::Value;

use crate::error::Error;

/// Rows of `width` cells each, laid out one after another.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    width: usize,
    rows: usize,
    cells: Vec<Value>,
}

/// A row that does not have as many cells as the batch has columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WidthMismatch {
    /// The row's index in what was converted (0-based).
    pub row: usize,
    /// How many cells it had.
    pub cells: usize,
}

/// A driver's decoded row that does not fit its own columns is a host bug.
impl From<WidthMismatch> for Error {
    fn from(m: WidthMismatch) -> Error {
        Error::Internal(format!(
            "row {} decoded to {} cells, not one per column",
            m.row + 1,
            m.cells
        ))
    }
}

impl Batch {
    /// An empty batch of rows with `width` cells, with room for `rows` rows.
    pub fn with_capacity(width: usize, rows: usize) -> Batch {
        Batch {
            width,
            rows: 0,
            cells: Vec::with_capacity(width.saturating_mul(rows)),
        }
    }

    /// Flattens `rows`, each of which must have exactly `width` cells.
    pub fn from_rows(width: usize, rows: Vec<Vec<Value>>) -> Result<Batch, WidthMismatch> {
        Batch::convert(width, rows, |v| v)
    }

    /// Flattens `rows`, converting each cell; each row must have `width` cells.
    pub fn convert<T>(
        width: usize,
        rows: Vec<Vec<T>>,
        mut cell: impl FnMut(T) -> Value,
    ) -> Result<Batch, WidthMismatch> {
        let mut batch = Batch::with_capacity(width, rows.len());
        for (i, row) in rows.into_iter().enumerate() {
            if row.len() != width {
                return Err(WidthMismatch {
                    row: i,
                    cells: row.len(),
                });
            }
            batch.cells.extend(row.into_iter().map(&mut cell));
            batch.rows += 1;
        }
        Ok(batch)
    }

    /// Cells per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether the batch holds no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Every cell, row after row.
    pub fn cells(&self) -> &[Value] {
        &self.cells
    }

    /// Row `i`, if there is one.
    pub fn row(&self, i: usize) -> Option<&[Value]> {
        if i >= self.rows {
            return None;
        }
        self.cells.get(i * self.width..(i + 1) * self.width)
    }

    /// The rows in order.
    pub fn iter(&self) -> Rows<'_> {
        Rows {
            batch: self,
            next: 0,
        }
    }

    /// Appends one row from cells that may fail to decode. On an error the
    /// batch is left as it was; a row with the wrong number of cells is a
    /// [`WidthMismatch`].
    pub fn try_push_row<E: From<WidthMismatch>>(
        &mut self,
        cells: impl IntoIterator<Item = Result<Value, E>>,
    ) -> Result<(), E> {
        let start = self.cells.len();
        for cell in cells {
            match cell {
                Ok(v) => self.cells.push(v),
                Err(e) => {
                    self.cells.truncate(start);
                    return Err(e);
                }
            }
        }
        let pushed = self.cells.len() - start;
        if pushed != self.width {
            self.cells.truncate(start);
            return Err(WidthMismatch {
                row: self.rows,
                cells: pushed,
            }
            .into());
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends one row of nulls and lets `fill` set its cells.
    pub fn push_row_with(&mut self, fill: impl FnOnce(&mut [Value])) {
        let start = self.cells.len();
        self.cells.resize(start + self.width, Value::Null);
        fill(&mut self.cells[start..]);
        self.rows += 1;
    }

    /// Keeps the first `rows` rows.
    pub fn truncate(&mut self, rows: usize) {
        if rows < self.rows {
            self.rows = rows;
            self.cells.truncate(rows * self.width);
        }
    }

    /// Keeps the first `keep` cells of every row, in place.
    pub fn keep_columns(&mut self, keep: usize) {
        if keep >= self.width {
            return;
        }
        let width = self.width;
        let mut row = 0;
        self.cells.retain(|_| {
            let kept = row % width < keep;
            row += 1;
            kept
        });
        self.width = keep;
    }

    /// Moves every row of `other` (of the same width) to the end of this one.
    /// Into an empty batch without room for them, the cells move without
    /// being copied.
    pub fn append(&mut self, other: &mut Batch) {
        debug_assert_eq!(self.width, other.width);
        if other.rows == 0 {
            return;
        }
        if self.cells.is_empty() && self.cells.capacity() < other.cells.len() {
            std::mem::swap(&mut self.cells, &mut other.cells);
        } else {
            self.cells.append(&mut other.cells);
        }
        self.rows += other.rows;
        other.rows = 0;
    }

    /// Splits off the rows from `at` on, which this batch no longer holds.
    pub fn split_off(&mut self, at: usize) -> Batch {
        let at = at.min(self.rows);
        let rest = Batch {
            width: self.width,
            rows: self.rows - at,
            cells: self.cells.split_off(at * self.width),
        };
        self.rows = at;
        rest
    }

    /// The rows as vectors of converted cells (for the guest's list of rows).
    pub fn into_rows_with<T>(self, mut cell: impl FnMut(Value) -> T) -> Vec<Vec<T>> {
        let width = self.width;
        let mut cells = self.cells.into_iter();
        (0..self.rows)
            .map(|_| cells.by_ref().take(width).map(&mut cell).collect())
            .collect()
    }
}

/// Borrowed rows of a [`Batch`].
pub struct Rows<'a> {
    batch: &'a Batch,
    next: usize,
}

impl<'a> Iterator for Rows<'a> {
    type Item = &'a [Value];

    fn next(&mut self) -> Option<&'a [Value]> {
        let row = self.batch.row(self.next)?;
        self.next += 1;
        Some(row)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.batch.rows - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Rows<'_> {}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a [Value];
    type IntoIter = Rows<'a>;

    fn into_iter(self) -> Rows<'a> {
        self.iter()
    }
}

/// Owned rows of a [`Batch`], one vector each.
pub struct IntoRows {
    width: usize,
    left: usize,
    cells: std::vec::IntoIter<Value>,
}

impl Iterator for IntoRows {
    type Item = Vec<Value>;

    fn next(&mut self) -> Option<Vec<Value>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(self.cells.by_ref().take(self.width).collect())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for IntoRows {}

impl IntoIterator for Batch {
    type Item = Vec<Value>;
    type IntoIter = IntoRows;

    fn into_iter(self) -> IntoRows {
        IntoRows {
            width: self.width,
            left: self.rows,
            cells: self.cells.into_iter(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_rows(rows: i64, width: i64) -> Vec<Vec<Value>> {
        (0..rows)
            .map(|r| (0..width).map(|c| Value::Int(r * 10 + c)).collect())
            .collect()
    }

    #[test]
    fn rows_round_trip_and_reject_a_ragged_row() {
        let rows = int_rows(3, 2);
        let batch = Batch::from_rows(2, rows.clone()).unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.iter().len(), 3);
        assert_eq!(batch.row(1), Some(&[Value::Int(10), Value::Int(11)][..]));
        assert_eq!(batch.row(3), None);
        assert_eq!(
            batch.iter().map(<[Value]>::to_vec).collect::<Vec<_>>(),
            rows
        );
        assert_eq!(batch.clone().into_iter().collect::<Vec<_>>(), rows);
        assert_eq!(batch.into_rows_with(|v| v), rows);

        let mut ragged = int_rows(3, 2);
        ragged[2].pop();
        assert_eq!(
            Batch::from_rows(2, ragged),
            Err(WidthMismatch { row: 2, cells: 1 })
        );
    }

    #[test]
    fn zero_width_rows_are_still_counted() {
        let batch = Batch::from_rows(0, vec![vec![]; 4]).unwrap();
        assert_eq!(batch.len(), 4);
        assert_eq!(batch.iter().filter(|r| r.is_empty()).count(), 4);
        assert_eq!(batch.into_iter().count(), 4);
    }

    #[test]
    fn a_failed_or_short_row_leaves_the_batch_whole() {
        let mut batch = Batch::with_capacity(2, 4);
        let ok: [Result<Value, Error>; 2] = [Ok(Value::Int(1)), Ok(Value::Int(2))];
        batch.try_push_row(ok).unwrap();
        let failing = [Ok(Value::Int(3)), Err(Error::Datasource("bad cell".into()))];
        assert!(matches!(
            batch.try_push_row(failing),
            Err(Error::Datasource(m)) if m == "bad cell"
        ));
        let short = [Ok::<_, Error>(Value::Int(3))];
        assert!(matches!(
            batch.try_push_row(short),
            Err(Error::Internal(m)) if m.contains("1 cells")
        ));
        assert_eq!(batch.cells(), &[Value::Int(1), Value::Int(2)]);
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn truncate_split_append_and_projection() {
        let mut batch = Batch::from_rows(3, int_rows(4, 3)).unwrap();
        let mut rest = batch.split_off(1);
        assert_eq!((batch.len(), rest.len()), (1, 3));
        // Appending into an empty batch, or appending nothing, keeps every row.
        let mut empty = Batch::with_capacity(3, 0);
        empty.append(&mut Batch::with_capacity(3, 8));
        assert!(empty.is_empty());
        let mut roomy = Batch::with_capacity(3, 8);
        roomy.append(&mut batch);
        assert_eq!((roomy.len(), batch.len()), (1, 0));
        batch.append(&mut roomy);
        rest.truncate(2);
        batch.append(&mut rest);
        assert!(rest.is_empty());
        batch.keep_columns(2);
        assert_eq!(batch.width(), 2);
        let kept: Vec<Vec<Value>> = batch.into_iter().collect();
        let expected: Vec<Vec<Value>> = int_rows(3, 2);
        assert_eq!(kept, expected);
    }
}
